//! The command line, defined in one place with the docs next to each flag.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Automatic retry supervisor for RQ (Redis Queue) failed job registries.
#[derive(Debug, Parser)]
#[command(name = "rq-retryd", version, about, long_about = None)]
pub struct Cli {
    /// Config file (default: $RQ_RETRYD_CONFIG, else /etc/rq-retryd/config.toml when it exists,
    /// else the embedded defaults).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor daemon (the default).
    Run,
    /// One full scan pass: act on what is due, print a summary, exit.
    Once {
        /// Decide and report, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config and print the effective configuration and policy table.
    CheckConfig,
    /// Which policy matches this failed job, why, its attempts and next retry time.
    Explain {
        /// The RQ job id.
        job_id: String,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    /// The command to run; `run` when none is given.
    pub fn command(&self) -> &Command {
        self.command.as_ref().unwrap_or(&Command::Run)
    }
}
