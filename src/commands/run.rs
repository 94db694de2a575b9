//! `run`: the daemon. Scans every `scan_interval`, and between scans wakes up exactly when the
//! earliest job in backoff becomes due, so backoff ends are honoured to the second rather than to
//! the next tick. SIGINT/SIGTERM finish the batch in flight and exit 0.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tracing::{error, info};

use crate::config::Config;
use crate::connection::connect_with_retry;
use crate::shutdown;
use crate::state::DaemonState;
use crate::supervisor::{take_due, DueTimers, Supervisor};

pub async fn run(config: Arc<Config>) -> u8 {
    let cancel = shutdown::on_signals();
    info!(
        redis = %config.redacted_redis_url(),
        policies = config.policies.len(),
        scan_interval_ms = config.supervisor.scan_interval.as_millis() as u64,
        dry_run = config.supervisor.dry_run,
        "rq-retryd starting"
    );
    let Some(mut con) = connect_with_retry(&config, &cancel).await else {
        info!("stopped before Redis was reachable");
        return 0;
    };
    let state = DaemonState::new(config.clone());
    let supervisor = Supervisor::new(state.clone());
    if let Err(e) = state.snapshot().executor.load_scripts(&mut con).await {
        error!(error = %e, "cannot load scripts into Redis; they will be loaded on first use");
    }
    let mut timers = DueTimers::new();
    let mut next_scan = Instant::now();
    loop {
        let next_due = timers.keys().next().map(|due| {
            let wait = (*due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            Instant::now() + wait
        });
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(next_scan) => {
                let mut fresh = DueTimers::new();
                match supervisor.scan(&mut con, false, &cancel, Some(&mut fresh)).await {
                    Ok(report) => {
                        info!(
                            scanned = report.scanned, requeued = report.requeued, purged = report.purged,
                            exhausted = report.exhausted, waiting = report.waiting, unmatched = report.unmatched,
                            skipped = report.skipped, conflicts = report.conflicts, duration_ms = report.duration_ms,
                            "scan finished"
                        );
                        timers = fresh;
                    }
                    Err(e) => error!(error = %e, "scan failed; retrying at the next tick"),
                }
                next_scan = Instant::now() + config.supervisor.scan_interval;
            }
            _ = sleep_until_opt(next_due) => {
                let due = take_due(&mut timers, Utc::now());
                if let Err(e) = supervisor.process_due(&mut con, due, &mut timers).await {
                    error!(error = %e, "acting on due jobs failed; the next scan retries them");
                }
            }
        }
    }
    info!("rq-retryd stopped");
    0
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending::<()>().await,
    }
}
