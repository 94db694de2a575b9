//! `run`: the daemon as a process. Binds the configured listener, turns SIGINT/SIGTERM into
//! the cancel token and SIGHUP into reloads, tells systemd it is ready, and hands over to
//! [`crate::daemon::run`], which finishes the batch in flight, drains HTTP requests and bulk
//! tasks, and returns: exit 0 then, 1 when the listener cannot be bound or Redis is refused.

use std::path::PathBuf;
use std::sync::Arc;

use super::EXIT_RUNTIME;
use crate::config::Config;
use crate::daemon;
use crate::reload;
use crate::shutdown;
use crate::state::DaemonState;
use crate::systemd;
use crate::telemetry::TelemetryGuard;

pub async fn run(
    config: Arc<Config>,
    config_path: Option<PathBuf>,
    telemetry: Arc<TelemetryGuard>,
) -> u8 {
    let cancel = shutdown::on_signals();
    let listener = match tokio::net::TcpListener::bind(config.http.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rq-retryd: cannot listen on {}: {e}", config.http.listen);
            return EXIT_RUNTIME;
        }
    };
    let state = DaemonState::new(config);
    tokio::spawn(reload::on_sighup(
        state.clone(),
        config_path,
        telemetry,
        cancel.clone(),
    ));
    // Config loaded and the listener bound: requests queue until the server takes them, and
    // Redis is reached (or retried) from here on.
    systemd::ready();
    match daemon::run(listener, state, cancel).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rq-retryd: {e:#}");
            EXIT_RUNTIME
        }
    }
}
