//! When the supervisor looks at the failed registries: a full scan every `scan_interval` (or at
//! once when asked); on a task of its own ([`notified_loop`]), a quick pass over the queues
//! whose failures were notified, so a new failure is acted on at once even while a long full
//! scan runs (the first one over five million jobs takes a minute or more); and, on another
//! ([`due_loop`]), a wake-up exactly when the earliest job in backoff becomes due, so backoff
//! ends are honoured to the second rather than to the next tick, whatever the scans are doing.
//! Passes that run at once never act on one failure both: each claims what it reads. A standby only observes, to keep its index for the HTTP API. Beside the scans,
//! [`reconcile_loop`] keeps the index in step with what others remove from the registries.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::{notifications, Supervisor};
use crate::report::ScanReport;
use crate::state::DaemonState;
use crate::systemd;

/// Notified queues waiting for a quick pass (more are dropped: a pass covers them anyway).
const NOTIFY_BACKLOG: usize = 1024;
/// How long a quick pass waits for more notifications to arrive.
const NOTIFY_DEBOUNCE: Duration = Duration::from_millis(50);
/// The granularity of backoff timers.
const DUE_TICK: Duration = Duration::from_millis(250);
/// How often the failed registries' counts are compared with the index's.
const SIZE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a notified removal waits for more to arrive before its queue is reconciled.
const REMOVAL_DEBOUNCE: Duration = Duration::from_millis(20);
/// How often a standby re-reads every registry for its index. Between passes the notified
/// passes add new failures and the active instance's index events remove what it wrote, so
/// this only repairs what those missed (a lost message, a job deleted by someone else);
/// it is slow so that standbys add little Redis load (issue 11's 1.3x).
const STANDBY_RESCAN: Duration = Duration::from_secs(300);

/// How often a standby's due loop looks whether the instance became active.
const DUE_STANDBY_RECHECK: Duration = Duration::from_secs(1);

/// Runs the scans until `cancel` fires; the notification listener, [`notified_loop`],
/// [`reconcile_loop`] and [`due_loop`] run beside it on `tasks` (they stop at the same
/// cancel). Returns after the passes in flight, the notified and the due pass's included.
pub async fn run(state: &Arc<DaemonState>, cancel: &CancellationToken, tasks: &TaskTracker) {
    let supervisor = Arc::new(Supervisor::new(state.clone()));
    let (notified_tx, notified) = mpsc::channel::<String>(NOTIFY_BACKLOG);
    let (removed_tx, removed) = mpsc::channel::<String>(NOTIFY_BACKLOG);
    let pending = Arc::new(notifications::Pending::default());
    tasks.spawn(notifications::listen(
        state.clone(),
        notified_tx.clone(),
        pending.clone(),
        removed_tx,
        cancel.clone(),
    ));
    tasks.spawn(reconcile_loop(
        supervisor.clone(),
        removed,
        notified_tx,
        cancel.clone(),
    ));
    let due = tasks.spawn(due_loop(supervisor.clone(), cancel.clone()));
    let notified = tasks.spawn(notified_loop(
        supervisor.clone(),
        notified,
        pending,
        cancel.clone(),
    ));
    let mut next_scan = Instant::now();
    // The term the last full scan ran in: an activation it already answered (the beat that
    // made this instance active wakes the loop only after the scan could begin) needs no other.
    let mut scanned_term = None;
    let watchdog_every = systemd::watchdog_interval();
    loop {
        systemd::watchdog();
        // A standby only observes: it keeps its index for the HTTP API with a full pass at
        // start and then every STANDBY_RESCAN, with the notified passes and with the other
        // instances' index events; it scans at once when it becomes active (the heartbeat
        // wakes it with `activated`, which also cuts an observing pass short).
        let active = state.is_active();
        let next_ping = watchdog_every.map(|d| Instant::now() + d);
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
            _ = state.activated.notified() => {
                if state.active_term().is_some_and(|term| Some(term) != scanned_term) {
                    next_scan = Instant::now();
                }
            }
            _ = tokio::time::sleep_until(next_scan) => {
                next_scan = scheduled_pass(state, &supervisor, &mut scanned_term, cancel)
                    .await
                    .unwrap_or(next_scan);
            }
        }
    }
    // Shutdown waits for the notified and the due pass in flight too (the lease is given up
    // after this).
    let _ = notified.await;
    let _ = due.await;
}

/// Looks at the notified queues as notifications arrive, until `cancel` fires (the pass in
/// flight completes). Its own task, so that a new failure is not left waiting for a full scan
/// to end (issue 24, item 4).
async fn notified_loop(
    supervisor: Arc<Supervisor>,
    mut notified: mpsc::Receiver<String>,
    pending: Arc<notifications::Pending>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            queue = notified.recv() => match queue {
                Some(queue) => notified_pass(&supervisor, &mut notified, &pending, queue, &cancel).await,
                None => return,
            },
        }
    }
}

/// Acts on the jobs whose backoff ended, when it ends, until `cancel` fires (the pass in
/// flight completes). Its own task, so that a due job never waits for a notified pass or a
/// full scan: during a storm those run back to back for seconds (issue 24, item 4). A scan and
/// a due pass never act on the same failure: each claims what it reads or writes
/// (`FactsCache::claim_for_scan`). A standby does not act; it looks every
/// [`DUE_STANDBY_RECHECK`] whether it became active.
async fn due_loop(supervisor: Arc<Supervisor>, cancel: CancellationToken) {
    let state = supervisor.state().clone();
    // At most one pass a DUE_TICK: a due job a scan is reading stays due in the memory
    // until the scan is done with it, and without Redis nothing is taken.
    let mut not_before = Instant::now();
    loop {
        let active = state.is_active();
        let next_due = supervisor
            .next_due()
            .filter(|_| active)
            .map(|due| not_before.max(Instant::now() + wake_delay(due, Utc::now())));
        let recheck_at = (!active).then(|| Instant::now() + DUE_STANDBY_RECHECK);
        // In this order: a due time that came is never put off by a wake-up.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = sleep_until_opt(next_due) => {
                not_before = Instant::now() + DUE_TICK;
                if state.is_active() {
                    due_pass(&supervisor).await;
                }
            }
            // A scan remembered a job due sooner than every other.
            _ = supervisor.due_changed() => {}
            _ = sleep_until_opt(recheck_at) => {}
        }
    }
}

/// The pass on schedule: a full scan when active (noting its term in `scanned_term`), an
/// observing pass when standing by. Returns when the next one is due (`None` without a
/// connection: the pass is still due).
async fn scheduled_pass(
    state: &Arc<DaemonState>,
    supervisor: &Supervisor,
    scanned_term: &mut Option<u64>,
    cancel: &CancellationToken,
) -> Option<Instant> {
    let mut con = state.redis()?;
    let Some(term) = state.active_term() else {
        return Some(observe(state, supervisor, &mut con, cancel).await);
    };
    *scanned_term = Some(term);
    // A scan asked for before this one begins (a reload, a request) is answered by it: a
    // request stored meanwhile must not run a second. The activation is answered by the term.
    let _ = futures::FutureExt::now_or_never(state.scan_now.notified());
    match supervisor.scan(&mut con, false, cancel).await {
        Ok(report) => report_scan(&report, supervisor.cached_failures()),
        Err(e) => error!(error = %e, "scan failed; retrying at the next tick"),
    }
    Some(Instant::now() + state.config().supervisor.scan_interval)
}

/// Says how a scan went, in the log and in `systemctl status`.
fn report_scan(report: &ScanReport, remembered: usize) {
    info!(
        scanned = report.scanned,
        requeued = report.requeued,
        purged = report.purged,
        exhausted = report.exhausted,
        waiting = report.waiting,
        unmatched = report.unmatched,
        skipped = report.skipped,
        conflicts = report.conflicts,
        duration_ms = report.duration_ms,
        remembered,
        "scan finished"
    );
    systemd::status(&format!(
        "last scan {}: {} failed, {} requeued, {} purged, {} waiting, {} skipped",
        Utc::now().format("%H:%M:%S"),
        report.scanned,
        report.requeued,
        report.purged,
        report.waiting,
        report.skipped
    ));
}

/// Looks at each notified queue once (`first`, and what else arrives within
/// [`NOTIFY_DEBOUNCE`]): acting when active, only observing when standing by.
async fn notified_pass(
    supervisor: &Supervisor,
    notified: &mut mpsc::Receiver<String>,
    pending: &notifications::Pending,
    first: String,
    cancel: &CancellationToken,
) {
    let state = supervisor.state();
    // Let a burst of failures land, then look at each notified queue once.
    tokio::time::sleep(NOTIFY_DEBOUNCE).await;
    let queues = with_pending(notified, first);
    for queue in &queues {
        pending.take(queue);
    }
    let observe = !state.is_active();
    let Some(mut con) = state.redis() else { return };
    let started = Instant::now();
    let result = supervisor
        .scan_queues(&mut con, &queues, observe, cancel)
        .await;
    if let Ok(report) = &result {
        debug!(
            queues = queues.len(),
            scanned = report.scanned,
            duration_ms = started.elapsed().as_millis() as u64,
            "notified pass finished"
        );
    }
    match result {
        Ok(report) if report.requeued + report.purged > 0 => info!(
            queues = ?queues, requeued = report.requeued, purged = report.purged, "acted on notified failures"
        ),
        Ok(_) => {}
        Err(e) => {
            error!(error = %e, "acting on notified failures failed; the next scan retries them")
        }
    }
}

/// Acts on the jobs whose backoff ended.
async fn due_pass(supervisor: &Supervisor) {
    let started = Instant::now();
    let now = Utc::now();
    // How long after the earliest due time the pass began (at most a DUE_TICK when on time).
    let late_ms = supervisor
        .next_due()
        .map_or(0, |due| (now - due).num_milliseconds().max(0));
    let Some(mut con) = supervisor.state().redis() else {
        return;
    };
    match supervisor.due_pass(&mut con, now).await {
        Ok((0, _)) => {}
        Ok((taken, report)) => debug!(
            taken,
            late_ms,
            requeued = report.requeued,
            purged = report.purged,
            conflicts = report.conflicts,
            duration_ms = started.elapsed().as_millis() as u64,
            "due pass finished"
        ),
        Err(e) => error!(error = %e, "acting on due jobs failed; the next scan retries them"),
    }
}

/// `first` and every queue already waiting in `channel`, each once.
fn with_pending(channel: &mut mpsc::Receiver<String>, first: String) -> Vec<String> {
    let mut queues = vec![first];
    while let Ok(q) = channel.try_recv() {
        if !queues.contains(&q) {
            queues.push(q);
        }
    }
    queues
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
    mut removed: mpsc::Receiver<String>,
    notified: mpsc::Sender<String>,
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
                queues = with_pending(&mut removed, queue);
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
        for queue in queues {
            reconcile_one(&supervisor, &queue, trigger, &notified).await;
        }
    }
}

/// Reconciles the index with `queue`'s registry once (see [`reconcile_loop`]).
async fn reconcile_one(
    supervisor: &Supervisor,
    queue: &str,
    trigger: &'static str,
    notified: &mpsc::Sender<String>,
) {
    let state = supervisor.state();
    let Some(mut con) = state.redis() else { return };
    let started = Instant::now();
    match supervisor.reconcile(&mut con, queue).await {
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
                let _ = notified.try_send(queue.to_string());
            }
        }
        Err(e) => {
            debug!(queue, error = %e, "reconciling the index with a failed registry failed; the next check retries")
        }
    }
}

/// A standby's observing full pass (see [`run`]); returns when the next one is due: at once
/// when the instance became active meanwhile (the pass is cut short), else after
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
        () = wake_from_standby(state) => {
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

/// Returns when a standby's observing pass should give way: the instance became active, or a
/// scan was asked for.
async fn wake_from_standby(state: &DaemonState) {
    tokio::select! {
        _ = state.activated.notified() => {}
        _ = state.scan_now.notified() => {}
    }
}

/// How long to sleep until `due`, rounded up to the next [`DUE_TICK`] so that jobs due within
/// the same tick are handled in one pass (at most four passes a second, each well within a
/// second of the jobs' due times).
fn wake_delay(due: chrono::DateTime<Utc>, now: chrono::DateTime<Utc>) -> Duration {
    let wait = (due - now).to_std().unwrap_or(Duration::ZERO);
    let tick = DUE_TICK.as_millis() as u64;
    let ms = (wait.as_millis() as u64).div_ceil(tick) * tick;
    Duration::from_millis(ms.max(1))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_time_is_rounded_up_to_the_next_quarter_second_and_never_to_zero() {
        let now = Utc::now();
        let ms = |n: i64| now + chrono::Duration::milliseconds(n);
        assert_eq!(wake_delay(ms(1), now), Duration::from_millis(250));
        assert_eq!(wake_delay(ms(250), now), Duration::from_millis(250));
        assert_eq!(wake_delay(ms(251), now), Duration::from_millis(500));
        assert_eq!(wake_delay(ms(0), now), Duration::from_millis(1));
        assert_eq!(
            wake_delay(ms(-5_000), now),
            Duration::from_millis(1),
            "overdue"
        );
    }
}
