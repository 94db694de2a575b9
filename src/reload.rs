//! SIGHUP: re-read and validate the configuration; apply policies, queues, intervals, limits
//! and the log level without dropping the HTTP listener. An invalid new file is logged and the
//! running configuration kept.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::state::DaemonState;
use crate::systemd;
use crate::telemetry::TelemetryGuard;

/// Reloads on every SIGHUP until `cancel` fires.
#[cfg(unix)]
pub async fn on_sighup(
    state: Arc<DaemonState>,
    path: Option<PathBuf>,
    telemetry: Arc<TelemetryGuard>,
    cancel: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install the SIGHUP handler; reload is unavailable");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        reload(&state, path.as_deref(), &telemetry);
    }
}

#[cfg(not(unix))]
pub async fn on_sighup(
    _state: Arc<DaemonState>,
    _path: Option<PathBuf>,
    _telemetry: Arc<TelemetryGuard>,
    cancel: CancellationToken,
) {
    cancel.cancelled().await;
}

/// One reload: load, validate, swap; returns whether the new configuration was applied.
pub fn reload(
    state: &DaemonState,
    path: Option<&std::path::Path>,
    telemetry: &TelemetryGuard,
) -> bool {
    systemd::reloading();
    let applied = match config::load(path) {
        Ok(new) => {
            let old = state.config();
            warn_about_restart_only_changes(&old, &new);
            if let Err(e) = telemetry.set_level(&new.logging.level) {
                warn!(error = %e, "cannot apply the new log level; keeping the old one");
            }
            let policies = new.policies.len();
            state.replace_config(Arc::new(new));
            state.scan_now.notify_one();
            info!(policies, "configuration reloaded");
            true
        }
        Err(e) => {
            error!(error = %e.to_string().replace('\n', "; "), "reload refused: the new configuration is invalid; keeping the running one");
            false
        }
    };
    systemd::ready();
    applied
}

fn warn_about_restart_only_changes(old: &Config, new: &Config) {
    if old.redis.url != new.redis.url {
        warn!("redis.url changed: it takes effect after a restart");
    }
    if old.http.listen != new.http.listen {
        warn!("http.listen changed: it takes effect after a restart");
    }
    if old.http.tokens != new.http.tokens {
        warn!("the HTTP auth tokens changed: they take effect after a restart");
    }
    if old.logging.format != new.logging.format || old.logging.directory != new.logging.directory {
        warn!("logging format/directory changed: they take effect after a restart");
    }
}
