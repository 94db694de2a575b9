//! `run`: the daemon. Serves the HTTP API, scans every `scan_interval` (or at once when asked),
//! and between scans wakes up exactly when the earliest job in backoff becomes due, so backoff
//! ends are honoured to the second rather than to the next tick. SIGINT/SIGTERM finish the batch
//! in flight, drain HTTP requests, and exit 0.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::EXIT_RUNTIME;
use std::path::PathBuf;

use crate::config::Config;
use crate::connection::{self, connect_with_retry};
use crate::http::{self, AppState};
use crate::reload;
use crate::shutdown;
use crate::state::DaemonState;
use crate::supervisor::{notifications, Supervisor};
use crate::systemd;
use crate::telemetry::TelemetryGuard;

/// How long in-flight HTTP requests may take to finish after a shutdown signal.
const HTTP_GRACE: Duration = Duration::from_secs(5);
/// How often Redis is pinged for `rq_retryd_redis_up` between scans.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

pub async fn run(
    config: Arc<Config>,
    config_path: Option<PathBuf>,
    telemetry: Arc<TelemetryGuard>,
) -> u8 {
    let cancel = shutdown::on_signals();
    // Token files were read (and an unreadable or empty one refused) with the configuration,
    // the same check as `check-config`'s.
    let tokens = config.http.tokens.clone();
    let listener = match tokio::net::TcpListener::bind(config.http.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rq-retryd: cannot listen on {}: {e}", config.http.listen);
            return EXIT_RUNTIME;
        }
    };
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
    let state = DaemonState::new(config.clone());
    let http_task = tokio::spawn(http::serve(
        listener,
        AppState::new(state.clone(), tokens),
        cancel.clone(),
    ));
    tokio::spawn(reload::on_sighup(
        state.clone(),
        config_path,
        telemetry,
        cancel.clone(),
    ));
    systemd::ready();
    systemd::status("connecting to Redis");

    let Some((mut con, master)) = connect_with_retry(&config, &cancel).await else {
        info!("stopped before Redis was reachable");
        finish_http(http_task).await;
        return 0;
    };
    if let Some((host, port)) = &master {
        info!(master = %format!("{host}:{port}"), "connected to the master named by Sentinel");
    }
    // A too old Redis fails every scan the same way: say so once and stop. See: issue 11.
    if let Err(refused) = connection::require_supported_server(&mut con, &config).await {
        error!(error = %refused, "refusing to run against this Redis");
        eprintln!("rq-retryd: {refused}");
        cancel.cancel();
        finish_http(http_task).await;
        return EXIT_RUNTIME;
    }
    state.set_redis(con.clone(), master);
    state.metrics.set_redis_up(true);
    if let Err(e) = state.snapshot().executor.load_scripts(&mut con).await {
        warn!(error = %e, "cannot load scripts into Redis yet; they are loaded on first use");
    }
    tokio::spawn(watch_redis(state.clone(), cancel.clone()));
    if config.redis.sentinel.is_some() {
        tokio::spawn(follow_sentinel(state.clone(), cancel.clone()));
    }
    let beats = tokio::spawn(heartbeat(state.clone(), cancel.clone()));

    scan_loop(&state, &cancel).await;
    systemd::stopping();
    let _ = beats.await;
    release_lease(&state).await;
    finish_http(http_task).await;
    info!("rq-retryd stopped");
    0
}

async fn scan_loop(state: &Arc<DaemonState>, cancel: &CancellationToken) {
    let supervisor = Arc::new(Supervisor::new(state.clone()));
    let (notified_tx, mut notified) = tokio::sync::mpsc::channel::<String>(NOTIFY_BACKLOG);
    let (removed_tx, removed) = tokio::sync::mpsc::channel::<String>(NOTIFY_BACKLOG);
    tokio::spawn(notifications::listen(
        state.clone(),
        notified_tx.clone(),
        removed_tx,
        cancel.clone(),
    ));
    tokio::spawn(reconcile_loop(
        supervisor.clone(),
        removed,
        notified_tx,
        cancel.clone(),
    ));
    let mut next_scan = Instant::now();
    let watchdog_every = systemd::watchdog_interval();
    loop {
        systemd::watchdog();
        // A standby only observes: it keeps its index for the HTTP API with a full pass at
        // start and then every STANDBY_RESCAN, with the notified passes and with the other
        // instances' index events; it scans at once when it becomes active (the heartbeat
        // wakes it with `scan_now`, which also cuts an observing pass short).
        let active = state.is_active();
        let next_ping = watchdog_every.map(|d| Instant::now() + d);
        let next_due = supervisor
            .next_due()
            .filter(|_| active)
            .map(|due| Instant::now() + wake_delay(due, Utc::now()));
        let next_scan_at = Some(next_scan);
        // A standby also looks again at every beat interval: waking up must not hang on one
        // notification alone (a lease that ran out locally and was then renewed is the case
        // the heartbeat's own wake-up missed once).
        let recheck_at =
            (!active).then(|| Instant::now() + state.config().supervisor.lease_ttl / 3);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = sleep_until_opt(next_ping) => {}
            _ = sleep_until_opt(recheck_at) => {}
            _ = state.scan_now.notified() => next_scan = Instant::now(),
            _ = sleep_until_opt(next_scan_at) => {
                let Some(mut con) = state.redis() else { continue };
                if !state.is_active() {
                    next_scan = observe(state, &supervisor, &mut con, cancel).await;
                    continue;
                }
                // A scan asked for before this one begins (the lease taken, a reload, a
                // request) is answered by it: a request stored meanwhile must not run a second.
                let _ = futures::FutureExt::now_or_never(state.scan_now.notified());
                match supervisor.scan(&mut con, false, cancel).await {
                    Ok(report) => {
                        info!(
                            scanned = report.scanned, requeued = report.requeued, purged = report.purged,
                            exhausted = report.exhausted, waiting = report.waiting, unmatched = report.unmatched,
                            skipped = report.skipped, conflicts = report.conflicts, duration_ms = report.duration_ms,
                            remembered = supervisor.cached_failures(),
                            "scan finished"
                        );
                        systemd::status(&format!(
                            "last scan {}: {} failed, {} requeued, {} purged, {} waiting, {} skipped",
                            Utc::now().format("%H:%M:%S"), report.scanned, report.requeued, report.purged, report.waiting, report.skipped
                        ));
                    }
                    Err(e) => error!(error = %e, "scan failed; retrying at the next tick"),
                }
                next_scan = Instant::now() + state.config().supervisor.scan_interval;
            }
            Some(queue) = notified.recv() => {
                // Let a burst of failures land, then look at each notified queue once.
                tokio::time::sleep(NOTIFY_DEBOUNCE).await;
                let mut queues = vec![queue];
                while let Ok(q) = notified.try_recv() {
                    if !queues.contains(&q) {
                        queues.push(q);
                    }
                }
                let observe = !state.is_active();
                let Some(mut con) = state.redis() else { continue };
                match supervisor.scan_queues(&mut con, &queues, observe, cancel).await {
                    Ok(report) if report.requeued + report.purged > 0 => info!(
                        queues = ?queues, requeued = report.requeued, purged = report.purged, "acted on notified failures"
                    ),
                    Ok(_) => {}
                    Err(e) => error!(error = %e, "acting on notified failures failed; the next scan retries them"),
                }
            }
            _ = sleep_until_opt(next_due) => {
                let due = supervisor.take_due(Utc::now());
                let Some(mut con) = state.redis() else { continue };
                if let Err(e) = supervisor.process_due(&mut con, due).await {
                    error!(error = %e, "acting on due jobs failed; the next scan retries them");
                }
            }
        }
    }
}

/// Keeps this instance's index in step with what others remove from the failed registries
/// (see `supervisor::reconcile`), on active and standby instances alike: a notified removal is
/// looked at within [`REMOVAL_DEBOUNCE`], and every [`SIZE_CHECK_INTERVAL`] one pipelined
/// ZCOUNT per indexed queue finds the registries whose count changed (notifications off, or a
/// message lost). One queue is reconciled at a time, each at most once per round: removals
/// notified meanwhile are coalesced. Members the index does not know found on the way are
/// handed to the notified pass (`notified`).
async fn reconcile_loop(
    supervisor: Arc<Supervisor>,
    mut removed: tokio::sync::mpsc::Receiver<String>,
    notified: tokio::sync::mpsc::Sender<String>,
    cancel: CancellationToken,
) {
    let state = supervisor.state().clone();
    let mut tick = tokio::time::interval(SIZE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut queues: Vec<String> = Vec::new();
        let trigger = tokio::select! {
            _ = cancel.cancelled() => return,
            Some(queue) = removed.recv() => {
                // Let a burst of removals (a bulk requeue, RQ's cleanup) land first.
                tokio::time::sleep(REMOVAL_DEBOUNCE).await;
                queues.push(queue);
                while let Ok(q) = removed.try_recv() {
                    if !queues.contains(&q) {
                        queues.push(q);
                    }
                }
                "notification"
            }
            _ = tick.tick() => {
                let Some(mut con) = state.redis() else { continue };
                match supervisor.changed_registries(&mut con).await {
                    Ok(changed) => queues = changed,
                    Err(e) => debug!(error = %e, "size check of the failed registries failed; retrying at the next"),
                }
                "size_check"
            }
        };
        let Some(mut con) = state.redis() else {
            continue;
        };
        for queue in queues {
            let started = Instant::now();
            match supervisor.reconcile(&mut con, &queue).await {
                Ok(done) => {
                    state.metrics.reconciled(trigger);
                    if done.dropped > 0 {
                        info!(
                            queue,
                            trigger,
                            dropped = done.dropped,
                            commands = done.commands,
                            duration_ms = started.elapsed().as_millis() as u64,
                            "index: dropped failed jobs that others removed from the registry"
                        );
                    }
                    if done.unknown > 0 {
                        let _ = notified.try_send(queue);
                    }
                }
                Err(e) => {
                    debug!(queue, error = %e, "reconciling the index with a failed registry failed; the next check retries")
                }
            }
        }
    }
}

/// How often the failed registries' counts are compared with the index's.
const SIZE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a notified removal waits for more to arrive before its queue is reconciled.
const REMOVAL_DEBOUNCE: Duration = Duration::from_millis(20);

/// A standby's observing full pass (see `scan_loop`); returns when the next one is due: at
/// once when the instance became active meanwhile (the pass is cut short), else after
/// [`STANDBY_RESCAN`] (or `scan_interval`, if longer).
async fn observe<C: redis::aio::ConnectionLike + Clone + Send + Sync>(
    state: &Arc<DaemonState>,
    supervisor: &Supervisor,
    con: &mut C,
    cancel: &CancellationToken,
) -> Instant {
    let pass_cancel = cancel.child_token();
    let pass = supervisor.observe(con, &pass_cancel);
    tokio::pin!(pass);
    let mut woken = false;
    let result = tokio::select! {
        r = &mut pass => r,
        _ = state.scan_now.notified() => {
            woken = true;
            pass_cancel.cancel();
            pass.await
        }
    };
    match result {
        Ok(report) if !woken => debug!(
            scanned = report.scanned,
            duration_ms = report.duration_ms,
            "standby: index pass finished"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "standby: index pass failed; retrying at the next one"),
    }
    if woken {
        Instant::now()
    } else {
        Instant::now() + STANDBY_RESCAN.max(state.config().supervisor.scan_interval)
    }
}

/// How often a standby re-reads every registry for its index. Between passes the notified
/// passes add new failures and the active instance's index events remove what it wrote, so
/// this only repairs what those missed (a lost message, a job deleted by someone else);
/// it is slow so that standbys add little Redis load (issue 11's 1.3x).
const STANDBY_RESCAN: Duration = Duration::from_secs(300);

/// How long to sleep until `due`, rounded up to the next [`DUE_TICK`] so that jobs due within
/// the same tick are handled in one pass (at most four passes a second, each well within a
/// second of the jobs' due times).
fn wake_delay(due: chrono::DateTime<Utc>, now: chrono::DateTime<Utc>) -> Duration {
    let wait = (due - now).to_std().unwrap_or(Duration::ZERO);
    let tick = DUE_TICK.as_millis() as u64;
    let ms = (wait.as_millis() as u64).div_ceil(tick) * tick;
    Duration::from_millis(ms.max(1))
}

/// Notified queues waiting for a quick pass (more are dropped: a pass covers them anyway).
const NOTIFY_BACKLOG: usize = 1024;
/// How long a quick pass waits for more notifications to arrive.
const NOTIFY_DEBOUNCE: Duration = Duration::from_millis(50);

/// The granularity of backoff timers.
const DUE_TICK: Duration = Duration::from_millis(250);

/// Beats on the switchboard every third of the lease time: takes the lease when it is free,
/// renews it while it is this instance's, and keeps this instance's view of the shared
/// switches current. Wakes the scan loop when this instance becomes active or a scan was asked
/// for on any instance.
async fn heartbeat(state: Arc<DaemonState>, cancel: CancellationToken) {
    loop {
        let config = state.config();
        let ttl = config.supervisor.lease_ttl;
        let token = config
            .supervisor
            .leader_election
            .then_some(state.instance.as_str());
        if let Some(mut con) = state.redis() {
            let sent = std::time::Instant::now();
            let snap = state.snapshot();
            let beat = tokio::time::timeout(
                BEAT_TIMEOUT.min(ttl / 2),
                snap.switchboard.beat(&mut con, token, ttl),
            )
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "heartbeat timed out",
                )))
            });
            match beat {
                Ok(beat) => {
                    state.redis_answered();
                    if beat.lease.corrupt {
                        error!(key = %snap.registry.keys().retryd_lease(), "the lease key is not a string: no instance can be active until it is deleted");
                    }
                    if beat.switches.corrupt {
                        error!(key = %snap.registry.keys().retryd_switches(), "the switches key is not a hash: automatic writes are held back until it is deleted");
                    }
                    let holder = beat.lease.holder.clone();
                    let change = state.absorb_beat(beat, sent);
                    if change.became_active {
                        info!(instance = %state.instance, "this instance holds the lease: it does the automatic scans and writes");
                        state.scan_now.notify_one();
                    } else if change.stopped_being_active {
                        warn!(instance = %state.instance, active = ?holder, "this instance lost the lease: standing by");
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
                    if crate::connection::is_unreachable(&e) {
                        state.metrics.set_redis_up(false);
                    }
                    if !state.is_active() && token.is_some() {
                        // The lease ran out without a renewal reaching Redis.
                        state.drop_lease();
                    }
                    warn!(error = %e, "heartbeat failed; retrying");
                }
            }
        }
        let every = ttl / 3;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// How long one beat may take before it counts as failed (a hung Redis must not hold the
/// renewal past the lease).
const BEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// Gives the lease up on shutdown, so a standby takes over at its next beat.
async fn release_lease(state: &DaemonState) {
    if !state.config().supervisor.leader_election {
        return;
    }
    let Some(mut con) = state.redis() else { return };
    let snap = state.snapshot();
    let release = snap.switchboard.release(&mut con, &state.instance);
    match tokio::time::timeout(Duration::from_secs(2), release).await {
        Ok(Ok(true)) => info!(instance = %state.instance, "lease released"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => warn!(error = %e, "cannot release the lease; it runs out by itself"),
        Err(_) => warn!("releasing the lease timed out; it runs out by itself"),
    }
    state.drop_lease();
}

/// With Sentinel: asks the sentinels for the master every [`SENTINEL_POLL`] and, after a
/// failover, connects to the new master and makes every task use it.
async fn follow_sentinel(state: Arc<DaemonState>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(SENTINEL_POLL) => {}
        }
        let config = state.config();
        let current = state.master();
        match connection::sentinel_master(&config).await {
            Ok(Some(master)) if Some(&master) != current.as_ref() => {
                warn!(from = ?current, to = %format!("{}:{}", master.0, master.1), "Sentinel names a new master: following the failover");
                match connection::connect_tracking(&config).await {
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

/// How often the sentinels are asked for the current master.
const SENTINEL_POLL: Duration = Duration::from_secs(1);

/// Keeps `rq_retryd_redis_up` current between scans.
async fn watch_redis(state: Arc<DaemonState>, cancel: CancellationToken) {
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
        let ping = tokio::time::timeout(Duration::from_secs(2), ping(&state)).await;
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

async fn finish_http(task: tokio::task::JoinHandle<std::io::Result<()>>) {
    match tokio::time::timeout(HTTP_GRACE, task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => error!(error = %e, "HTTP server failed"),
        Ok(Err(e)) => error!(error = %e, "HTTP server task panicked"),
        Err(_) => warn!("HTTP requests still in flight after the grace period; closing"),
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending::<()>().await,
    }
}
