//! The commands behind the CLI. Each returns an exit code: 0 ok, 1 runtime failure, 2 bad
//! config or usage (reported before anything starts), 3 (`once`) some writes were refused.

mod check_config;
mod explain;
mod generate;
mod once;
mod run;
mod simulate;

pub use check_config::render_config;
pub use generate::{completions, man_page};

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{Cli, Command};
use crate::config::{self, Config};
use crate::telemetry;

/// Exit code for a runtime failure (e.g. Redis unreachable for `once`).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code for an invalid config or usage.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code of `once` when the pass completed but Redis refused some writes (a key of the
/// wrong type, say): those jobs were left exactly as they were, and a cron job or systemd timer
/// running `once` should notice. The summary still prints.
pub const EXIT_REFUSED: u8 = 3;

/// Generates docs without a config, or loads the config, installs logging, builds the runtime and runs the chosen command.
pub fn main(cli: Cli) -> ExitCode {
    // Generated from the CLI alone: no config to load, so it works on any build machine.
    if let Command::Generate { what } = cli.command() {
        return ExitCode::from(generate::generate(what));
    }
    // rustls needs one process-wide crypto provider for rediss:// connections.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match config::load(cli.config.as_deref()) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            eprintln!("{e}");
            eprintln!("rq-retryd: invalid configuration; nothing started");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::CheckConfig { simulate: None, .. } = cli.command() {
        print!("{}", render_config(&config));
        for warning in config::loose_secret_files(&config) {
            eprintln!("rq-retryd: warning: {warning}");
        }
        return ExitCode::SUCCESS;
    }
    let telemetry = match telemetry::init(&config.logging) {
        Ok(guard) => Arc::new(guard),
        Err(e) => {
            eprintln!("rq-retryd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::Run = cli.command() {
        for warning in config::loose_secret_files(&config) {
            tracing::warn!("{warning}");
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rq-retryd: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let code = runtime.block_on(dispatch(&cli, config, telemetry.clone()));
    drop(runtime);
    drop(telemetry);
    ExitCode::from(code)
}

async fn dispatch(cli: &Cli, config: Arc<Config>, telemetry: Arc<telemetry::TelemetryGuard>) -> u8 {
    match cli.command() {
        Command::Run => run::run(config, cli.config.clone(), telemetry).await,
        Command::Once { dry_run, json } => once::once(config, *dry_run, *json).await,
        Command::Explain { job_id, json } => explain::explain(config, job_id, *json).await,
        Command::CheckConfig {
            simulate: Some(file),
            json,
        } => simulate::simulate(config, file, *json).await,
        Command::CheckConfig { simulate: None, .. } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Generate { .. } => unreachable!("handled before the config is loaded"),
    }
}
