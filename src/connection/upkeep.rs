//! Keeping the daemon's connection current while it runs: following a Sentinel failover to the
//! new master, and keeping `rq_retryd_redis_up` true to whether Redis answers.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::state::DaemonState;

/// How often the sentinels are asked for the current master.
const SENTINEL_POLL: Duration = Duration::from_secs(1);
/// How often Redis is pinged for `rq_retryd_redis_up` between scans.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How long that ping may take before Redis counts as down.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// With Sentinel: asks the sentinels for the master every [`SENTINEL_POLL`] and, after a
/// failover, connects to the new master and makes every task use it. Returns when `cancel`
/// fires.
pub async fn follow_sentinel(state: Arc<DaemonState>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(SENTINEL_POLL) => {}
        }
        let config = state.config();
        let current = state.master();
        match super::sentinel_master(&config).await {
            Ok(Some(master)) if Some(&master) != current.as_ref() => {
                warn!(from = ?current, to = %format!("{}:{}", master.0, master.1), "Sentinel names a new master: following the failover");
                match super::connect_tracking(&config).await {
                    Ok((mut con, reached)) => {
                        if let Err(e) = state.snapshot().executor.load_scripts(&mut con).await {
                            warn!(error = %e, "cannot load scripts into the new master yet");
                        }
                        state.set_redis(con, reached);
                    }
                    Err(e) => warn!(error = %e, "cannot reach the new master yet; retrying"),
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "no sentinel answered; keeping the current master"),
        }
    }
}

/// Keeps `rq_retryd_redis_up` current between scans: a PING every [`HEALTH_INTERVAL`] unless
/// a beat answered within it. Returns when `cancel` fires.
pub async fn watch_redis(state: Arc<DaemonState>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
        // A beat that answered within the interval already showed Redis up: no extra PING
        // (standbys' Redis load is mostly their beats and these pings).
        if state
            .since_redis_answered()
            .is_some_and(|ago| ago < HEALTH_INTERVAL)
        {
            continue;
        }
        let ping = tokio::time::timeout(PING_TIMEOUT, ping(&state)).await;
        state.metrics.set_redis_up(matches!(ping, Ok(Ok(_))));
    }
}

async fn ping(state: &DaemonState) -> redis::RedisResult<String> {
    let Some(mut con) = state.redis() else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "not connected",
        )));
    };
    redis::cmd("PING").query_async::<String>(&mut con).await
}
