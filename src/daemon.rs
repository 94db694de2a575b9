//! The whole daemon as one library call. [`run`] serves the HTTP API on the listener it is
//! given, connects to Redis, beats on the switchboard and scans on schedule until the token it
//! is given is cancelled; then it finishes the batch in flight, gives the lease up and lets
//! requests and bulk tasks in flight finish (within [`SHUTDOWN_GRACE`]) before it returns.
//!
//! What belongs to a process stays with the caller (`commands::run`): the config file, the
//! signals (SIGINT/SIGTERM cancel the token, SIGHUP reloads through the same [`DaemonState`]),
//! telemetry and systemd's READY. So tests start the daemon in-process on port 0 and stop it
//! by cancelling the token (tests/support/daemon.rs).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::connection::{self, UnsupportedRedis};
use crate::http::{self, AppState};
use crate::state::DaemonState;
use crate::supervisor::schedule;
use crate::systemd;

/// How long HTTP requests and bulk tasks in flight may take to finish once shutdown has begun
/// (together; the HTTP server stops accepting at the cancel).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the daemon on `listener` with `state` until `cancel` fires, then shuts down in order:
/// the scan loop finishes its batch (systemd STOPPING), the heartbeat stops, the lease is
/// released, HTTP requests and bulk tasks in flight finish within [`SHUTDOWN_GRACE`].
///
/// Returns `Ok` after a cancel (also one before Redis was ever reached), and an error when
/// this Redis is refused (older than [`connection::MIN_REDIS_VERSION`]); the HTTP server has
/// stopped either way. `cancel` itself is only read: a refusal stops the daemon without
/// cancelling the caller's token.
pub async fn run(
    listener: TcpListener,
    state: Arc<DaemonState>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let cancel = cancel.child_token();
    let tasks = TaskTracker::new();
    let config = state.config();
    announce(&config, &listener);
    let app = AppState::new(state.clone(), config.http.tokens.clone());
    let bulk = app.bulk_tasks.clone();
    let audit = app.audit.clone();
    let http = tasks.spawn(http::serve(listener, app, cancel.clone()));
    systemd::status("connecting to Redis");
    let outcome = match reach_redis(&state, &cancel).await {
        Ok(true) => {
            if let Some(con) = state.redis() {
                let key = crate::audit::audit_key(&config.redis.key_prefix);
                tasks.spawn(crate::audit::warm::warm(audit, con, key, cancel.clone()));
            }
            supervise(&state, &cancel, &tasks).await;
            Ok(true)
        }
        Ok(false) => {
            info!("stopped before Redis was reachable");
            Ok(false)
        }
        Err(refused) => {
            error!(error = %refused, "refusing to run against this Redis");
            cancel.cancel();
            Err(refused)
        }
    };
    drain(http, &bulk, &tasks).await;
    if outcome? {
        info!("rq-retryd stopped");
    }
    Ok(())
}

/// Logs what starts, and warns about an unverified TLS certificate.
fn announce(config: &Config, listener: &TcpListener) {
    let tokens = &config.http.tokens;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(
        redis = %config.redacted_redis_url(),
        http = %local,
        auth = !tokens.is_empty(),
        tokens = tokens.len(),
        policies = config.policies.len(),
        scan_interval_ms = config.supervisor.scan_interval.as_millis() as u64,
        dry_run = config.supervisor.dry_run,
        "rq-retryd starting"
    );
    if config.redis.url.ends_with("#insecure") {
        warn!("the Redis server's TLS certificate is not verified (ssl_cert_reqs=none or #insecure in the URL)");
    }
}

/// Connects (retrying until `cancel` fires: then `Ok(false)`), refuses a too old server, and
/// installs the connection with the scripts loaded.
async fn reach_redis(
    state: &DaemonState,
    cancel: &CancellationToken,
) -> Result<bool, UnsupportedRedis> {
    let config = state.config();
    let Some((mut con, master)) = connection::connect_with_retry(&config, cancel).await else {
        return Ok(false);
    };
    if let Some((host, port)) = &master {
        info!(master = %format!("{host}:{port}"), "connected to the master named by Sentinel");
    }
    // A too old Redis fails every scan the same way: say so once and stop. See: issue 11.
    connection::require_supported_server(&mut con, &config).await?;
    state.set_redis(con.clone(), master);
    state.metrics.set_redis_up(true);
    if let Err(e) = state.snapshot().executor.load_scripts(&mut con).await {
        warn!(error = %e, "cannot load scripts into Redis yet; they are loaded on first use");
    }
    Ok(true)
}

/// With Redis reached: keeps the connection current, beats, and scans until `cancel` fires;
/// then stops beating and gives the lease up.
async fn supervise(state: &Arc<DaemonState>, cancel: &CancellationToken, tasks: &TaskTracker) {
    tasks.spawn(connection::watch_redis(state.clone(), cancel.clone()));
    if state.config().redis.sentinel.is_some() {
        tasks.spawn(connection::follow_sentinel(state.clone(), cancel.clone()));
    }
    let beats = tasks.spawn(heartbeat(state.clone(), cancel.clone()));
    schedule::run(state, cancel, tasks).await;
    systemd::stopping();
    let _ = beats.await;
    release_lease(state).await;
}

/// Beats on the switchboard every third of the lease time (see
/// [`crate::switchboard::Lease::beat`]) and keeps the metrics and the scan loop in step: wakes
/// the scan loop when this instance becomes active or a scan was asked for on any instance.
async fn heartbeat(state: Arc<DaemonState>, cancel: CancellationToken) {
    loop {
        let config = state.config();
        let ttl = config.supervisor.lease_ttl;
        let elect = config.supervisor.leader_election;
        if let Some(mut con) = state.redis() {
            let snap = state.snapshot();
            match state
                .lease
                .beat(&snap.switchboard, &mut con, elect, ttl)
                .await
            {
                Ok(change) => {
                    state.redis_answered();
                    state.metrics.set_paused(state.is_paused());
                    // With leader election off every instance does the automatic work: each
                    // counts as active, so the no-active-instance alert stays meaningful.
                    state.metrics.set_leader(state.is_active());
                    if change.became_active {
                        state.activated.notify_one();
                    } else if change.stopped_being_active {
                        // Its index stays: as a standby it keeps observing.
                        state.metrics.forget_scan_gauges();
                    }
                    if change.scan_requested && state.is_active() {
                        state.scan_now.notify_one();
                    }
                }
                Err(e) => {
                    // The beat is the most frequent contact with Redis, and the health check
                    // skips its PING while beats answer: a failed beat says Redis is down.
                    if connection::is_unreachable(&e) {
                        state.metrics.set_redis_up(false);
                    }
                    if elect && state.lease.forget_if_lapsed(ttl) {
                        state.metrics.set_leader(false);
                    }
                    warn!(error = %e, "heartbeat failed; retrying");
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ttl / 3) => {}
        }
    }
}

/// Gives the lease up on shutdown, so a standby takes over at its next beat.
async fn release_lease(state: &DaemonState) {
    if !state.config().supervisor.leader_election {
        return;
    }
    let Some(mut con) = state.redis() else { return };
    state
        .lease
        .release(&state.snapshot().switchboard, &mut con)
        .await;
    state.metrics.set_leader(false);
}

/// Lets what still runs finish, all within one [`SHUTDOWN_GRACE`]: the HTTP requests in
/// flight, then the bulk tasks (a request may be waiting for one), then the daemon's own tasks
/// (every one stops at the cancel). Whatever is left after the grace ends with the runtime.
async fn drain(http: JoinHandle<std::io::Result<()>>, bulk: &TaskTracker, tasks: &TaskTracker) {
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    match tokio::time::timeout_at(deadline, http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => error!(error = %e, "HTTP server failed"),
        Ok(Err(e)) => error!(error = %e, "HTTP server task panicked"),
        Err(_) => warn!("HTTP requests still in flight after the grace period; closing"),
    }
    if !closed_by(bulk, deadline).await {
        warn!(
            tasks = bulk.len(),
            "bulk tasks still running after the grace period; they stop here (each task's counts say what it did)"
        );
    }
    if !closed_by(tasks, deadline).await {
        debug!(
            tasks = tasks.len(),
            "tasks still running after the grace period"
        );
    }
}

/// Closes `tracker` to new tasks and waits for those running until `deadline`; whether they
/// all finished by then.
async fn closed_by(tracker: &TaskTracker, deadline: Instant) -> bool {
    tracker.close();
    tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    /// `run` can be handed to `tokio::spawn`: its future is `Send` (a test or an embedding
    /// program runs the daemon as one task among others).
    #[test]
    fn the_daemon_future_is_send() {
        fn send<T: Send>(_: &T) {}
        let config =
            crate::config::parse("[redis]\nurl = \"redis://127.0.0.1:1/0\"\n", "test.toml")
                .expect("valid config");
        let state = crate::state::DaemonState::new(std::sync::Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let run = super::run(listener, state, tokio_util::sync::CancellationToken::new());
        send(&run);
    }
}
