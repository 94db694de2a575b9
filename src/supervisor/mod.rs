//! The scan loop: read every failed registry in windows, decide per job, act through the
//! executor, and remember decisions that need no write so that re-scans and backoff timers cost
//! little (see [`FactsCache`]).

mod cache;
mod due;
mod newest;
pub mod notifications;
mod plan;
mod reconcile;
pub mod schedule;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use redis::aio::ConnectionLike;
use redis::RedisResult;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use cache::{CacheEntry, DueJob, DuePlan, FactsCache, SkipMemory, Verdict};
pub use plan::Plan;
pub use reconcile::{Reconciled, RECONCILE_LEAF};

use crate::actions::{Actor, Decided, Planned, Settled};
use crate::executor::{Author, Meaning, Outcome, Write, WriteKind};
use crate::index::{Observation, State};
use crate::metrics::Metrics;
use crate::policy::{decide, reads_for, Decision};
use crate::report::ScanReport;
use crate::rq::registry::{anchors_of, Anchors};
use crate::rq::{decode, DecodeOutcome, RegistryScan};
use crate::skip::SkipReason;
use crate::state::{DaemonState, Snapshot};

/// Batches of one failed registry in flight at once during a scan. It also bounds how late a
/// circuit breaker opens: a batch passes the breaker's gate before the batches ahead of it
/// have reported their requeues (tests/it/circuit_breaker.rs: at most 3 batches of a storm).
pub const PARALLEL_BATCHES: usize = 3;
/// Registry ids listed per ZRANGE WITHSCORES: about 1 ms of Redis time (5,000 took about
/// 4 ms, and a host stall during one reached 19 ms in the bench).
pub const LIST_WINDOW: usize = 2000;
/// Registry ids a scan takes at once, listed in ZRANGEs of [`LIST_WINDOW`] (one after the
/// other, so no single command holds Redis longer): enough for [`PARALLEL_BATCHES`] batches
/// to stay in flight, since the batches of one window finish before the next is listed. With
/// 2,000 ids a window held two batches of 1,000, and Redis and the scan waited on each other
/// (docs/benchmarks.md, session 6).
pub const SCAN_WINDOW: usize = 3 * LIST_WINDOW;
/// How long the daemon reuses one SCAN for `rq:failed:*` keys. `rq:queues` is read on every
/// scan and names every queue RQ enqueued to; the SCAN only adds registries whose queue left
/// that set, and walks the whole keyspace to find them (at 200,000 failed jobs, about 400,000
/// keys: more Redis time than the rest of a re-scan).
pub const REGISTRY_SCAN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// How much of a registry a pass covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every entry (the periodic scan).
    Full,
    /// From the highest score down, until a window holds nothing new (a notified failure).
    NewestOnly,
}

/// What one batch decided without writing, per job: (id, failed at, verdict, and for a waiting
/// or held job the write it gets when due).
pub type BatchVerdicts = Vec<(String, DateTime<Utc>, Verdict, Option<Plan>)>;

/// What one batch saw, decided and did.
#[derive(Debug, Default)]
pub struct Batch {
    pub report: ScanReport,
    pub verdicts: BatchVerdicts,
}

/// The failures of one listed window that must be read (new, or due), with the registry
/// score that names each one's failure (`scores[i]` is `ids[i]`'s).
#[derive(Debug, Default)]
struct Unread {
    ids: Vec<String>,
    scores: Vec<f64>,
}

/// One batch of a window's unread failures: the ids, shared by the pass's claims and the
/// batch's read, and their registry scores in the same order.
type UnreadBatch = (Arc<[String]>, Vec<f64>);

impl Unread {
    /// The window in batches of `size`. Each id has one owner from here on: cloned per job
    /// for the claims, the batches and a score map, the ids were three allocations a job in a
    /// first build (docs/benchmarks.md, session 22).
    fn into_batches(self, size: usize) -> Vec<UnreadBatch> {
        let size = size.max(1);
        let mut batches = Vec::with_capacity(self.ids.len().div_ceil(size));
        let mut scores = self.scores.into_iter();
        let mut ids = self.ids.into_iter();
        loop {
            let chunk: Arc<[String]> = ids.by_ref().take(size).collect();
            if chunk.is_empty() {
                return batches;
            }
            let chunk_scores = scores.by_ref().take(chunk.len()).collect();
            batches.push((chunk, chunk_scores));
        }
    }
}

/// Lists the next window of a failed registry: up to [`window_of`] entries after `anchors`
/// (the previous window's last entries; from the start when there are none), in ZRANGEs of
/// [`LIST_WINDOW`].
async fn list_window<C: ConnectionLike + Send>(
    con: &mut C,
    snap: &Snapshot,
    queue: &str,
    anchors: &Anchors,
    pass: Pass,
) -> RedisResult<Vec<(Vec<u8>, f64)>> {
    let newest = pass == Pass::NewestOnly;
    let mut page: Vec<(Vec<u8>, f64)> = Vec::new();
    while page.len() < window_of(pass) {
        // Each part resumes after the last listed entry still there (the previous window's,
        // for the first part), at its rank now and in the same atomic step: entries removed
        // meanwhile shift nothing, so none is skipped (and dropped from the index by
        // `end_scan`). When removals overtook the listing, it resumes by the last score.
        let part = if page.is_empty() {
            snap.registry
                .failed_window_after(con, queue, anchors, LIST_WINDOW, newest)
                .await?
        } else {
            let after = anchors_of(&page);
            snap.registry
                .failed_window_after(con, queue, &after, LIST_WINDOW, newest)
                .await?
        };
        let short = part.len() < LIST_WINDOW;
        page.extend(part);
        if short {
            break;
        }
    }
    Ok(page)
}

/// The ids a window of a pass takes: [`SCAN_WINDOW`], or for a newest-first pass
/// [`LIST_WINDOW`] (see [`newest`]).
fn window_of(pass: Pass) -> usize {
    match pass {
        Pass::Full => SCAN_WINDOW,
        Pass::NewestOnly => LIST_WINDOW,
    }
}

/// One batch as read: each entry's raw data and decoding, and the ids among the undecodable
/// ones that were no longer in the registry when checked.
struct ReadBatch {
    raws: Vec<crate::rq::RawJob>,
    decoded: Vec<DecodeOutcome>,
    moved: HashSet<String>,
}

/// The supervisor: decides and acts on failed jobs with the state's current config snapshot.
pub struct Supervisor {
    state: Arc<DaemonState>,
    /// Whether automatic writes go out under this instance's lease (the daemon with leader
    /// election on) or without one (`once`, or leader election off).
    leased: bool,
    cache: Mutex<FactsCache>,
    /// Which jobs are skipped and why, so each skip is counted once (lock after `cache`).
    skips: Mutex<SkipMemory>,
    /// Whether the scans feed the state's failure index (the daemon; not `once`), and so read
    /// every failure's function and text once.
    indexing: bool,
    /// What the registries hold beyond the index, per queue, as last reconciled.
    settled: Mutex<reconcile::Settled>,
    /// The highest registry score listed per queue: how far a notified pass lists.
    newest: newest::Newest,
    /// Told when a remembered job starts to wait: the due pass may have to wake sooner.
    due_changed: tokio::sync::Notify,
}

/// A pass's claims on the failures it acts on (see [`FactsCache::claim_for_scan`]), released
/// when dropped: when the pass is done, and also when it fails half-way.
struct Claimed<'a> {
    cache: &'a Mutex<FactsCache>,
    ids: Vec<Arc<[String]>>,
    due: bool,
}

impl<'a> Claimed<'a> {
    fn scan(cache: &'a Mutex<FactsCache>, batches: &[UnreadBatch]) -> Claimed<'a> {
        Claimed {
            cache,
            ids: batches.iter().map(|(ids, _)| Arc::clone(ids)).collect(),
            due: false,
        }
    }
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let ids = self
            .ids
            .iter()
            .flat_map(|ids| ids.iter())
            .map(String::as_str);
        if self.due {
            cache.release_due(ids);
        } else {
            cache.release_scan(ids);
        }
    }
}

impl Supervisor {
    /// The daemon's supervisor: with leader election on, its automatic writes only go through
    /// while this instance holds the lease.
    pub fn new(state: Arc<DaemonState>) -> Supervisor {
        let leased = state.config().supervisor.leader_election;
        Supervisor::with_lease(state, leased, true)
    }

    /// A supervisor whose writes do not depend on a lease (`once`); the shared pause still
    /// holds them back.
    pub fn unleased(state: Arc<DaemonState>) -> Supervisor {
        Supervisor::with_lease(state, false, false)
    }

    fn with_lease(state: Arc<DaemonState>, leased: bool, indexing: bool) -> Supervisor {
        Supervisor {
            leased,
            indexing,
            state,
            cache: Mutex::new(FactsCache::default()),
            skips: Mutex::new(SkipMemory::default()),
            settled: Mutex::new(Default::default()),
            newest: Default::default(),
            due_changed: Default::default(),
        }
    }

    pub fn state(&self) -> &Arc<DaemonState> {
        &self.state
    }

    /// Failures remembered between scans.
    pub fn cached_failures(&self) -> usize {
        self.cache.lock().expect("cache lock").len()
    }

    /// The earliest time a remembered job's backoff ends.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.cache.lock().expect("cache lock").next_due()
    }

    /// Waits until a remembered job is due sooner than every other (the due pass's wake-up).
    pub async fn due_changed(&self) {
        self.due_changed.notified().await
    }

    /// Failures claimed by a pass (in flight, or just written by the due pass).
    pub fn claimed(&self) -> usize {
        self.cache.lock().expect("cache lock").claimed()
    }

    /// Acts on the remembered jobs due at or before `now` (see [`Supervisor::process_due`]):
    /// each is claimed meanwhile, so that a scan running beside this pass leaves it alone.
    /// Returns how many were due, and what was done.
    pub async fn due_pass<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        now: DateTime<Utc>,
    ) -> RedisResult<(usize, ScanReport)> {
        let due = self.cache.lock().expect("cache lock").take_due(now);
        if due.is_empty() {
            return Ok((0, ScanReport::default()));
        }
        let _claims = Claimed {
            cache: &self.cache,
            ids: vec![due.iter().map(|d| d.job_id.to_string()).collect()],
            due: true,
        };
        let taken = due.len();
        Ok((taken, self.process_due(con, due).await?))
    }

    /// One full pass over every supervised failed registry. Stops between windows and batches
    /// when `cancel` fires (the batch in flight completes). Updates the metrics, the last-scan
    /// record and the remembered verdicts when the pass completes.
    pub async fn scan<C: ConnectionLike + Clone + Send + Sync>(
        &self,
        con: &mut C,
        force_dry_run: bool,
        cancel: &CancellationToken,
    ) -> RedisResult<ScanReport> {
        self.full_pass(con, force_dry_run, false, cancel).await
    }

    /// A standby's full pass: reads, decides and indexes like [`Supervisor::scan`], so that
    /// its HTTP API answers from its own index, but writes nothing and leaves the metrics and
    /// the last-scan record to the active instance.
    pub async fn observe<C: ConnectionLike + Clone + Send + Sync>(
        &self,
        con: &mut C,
        cancel: &CancellationToken,
    ) -> RedisResult<ScanReport> {
        self.full_pass(con, false, true, cancel).await
    }

    async fn full_pass<C: ConnectionLike + Clone + Send + Sync>(
        &self,
        con: &mut C,
        force_dry_run: bool,
        observe: bool,
        cancel: &CancellationToken,
    ) -> RedisResult<ScanReport> {
        let started = Instant::now();
        let snap = self.state.snapshot();
        let mut report = ScanReport {
            started_at: Some(Utc::now()),
            dry_run: force_dry_run || snap.config.supervisor.dry_run,
            observe,
            ..ScanReport::default()
        };
        self.cache
            .lock()
            .expect("cache lock")
            .begin_scan(snap.generation);
        self.skips.lock().expect("skips lock").begin_scan();
        let result = self.scan_all(con, &snap, &mut report, cancel).await;
        if result.is_ok() && !cancel.is_cancelled() {
            self.end_full_pass(&report);
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        if observe {
            return result.map(|()| report);
        }
        self.publish_pass(result, report, started, cancel)
    }

    /// Every supervised failed registry, one after the other, then each queue's length.
    async fn scan_all<C: ConnectionLike + Clone + Send + Sync>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        report: &mut ScanReport,
        cancel: &CancellationToken,
    ) -> RedisResult<()> {
        let queues = self.readable_queues(con, snap, report).await?;
        for queue in &queues {
            self.scan_queue(con, snap, queue, report, cancel, Pass::Full)
                .await?;
        }
        let lengths = snap.registry.queue_lengths(con, &queues).await?;
        for (queue, len) in queues.iter().zip(lengths) {
            if len.is_none() {
                warn!(queue = %queue, key = %snap.registry.keys().queue(queue), reason = "wrong_type", "queue key is not a list; its jobs cannot be requeued until it is fixed");
            }
            report.queue_mut(queue).queued = len.unwrap_or(0);
        }
        report.queues = queues;
        Ok(())
    }

    /// The supervised queues whose failed registry can be read. A failed registry that is not
    /// a sorted set cannot be read (and is not RQ's): it is reported and left alone, and every
    /// other queue is scanned as usual. Sizes the decision memory and the index for the pass.
    async fn readable_queues<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        report: &mut ScanReport,
    ) -> RedisResult<Vec<String>> {
        let found = self.discover_queues(con, snap).await?;
        let sizes = snap.registry.registry_sizes(con, &found).await?;
        let mut queues = Vec::with_capacity(found.len());
        for (queue, size) in found.into_iter().zip(&sizes) {
            if size.is_some() {
                queues.push(queue);
            } else {
                error!(queue = %queue, key = %snap.registry.keys().failed(&queue), reason = SkipReason::WrongType.label(), "failed registry is not a sorted set; queue skipped, nothing touched");
                // Not a job: remembered under the queue with an empty id, so counted once.
                self.skip_member(&queue, b"", 0.0, SkipReason::WrongType, report);
            }
        }
        let total = sizes.iter().flatten().sum::<u64>() as usize;
        self.cache.lock().expect("cache lock").reserve_total(total);
        if self.indexing {
            self.state.index.begin_scan(total);
        }
        Ok(queues)
    }

    /// After a full pass that saw everything: forgets what it no longer saw (remembered
    /// verdicts, skips, index entries) and gives freed memory back.
    fn end_full_pass(&self, report: &ScanReport) {
        self.cache.lock().expect("cache lock").end_scan();
        self.skips.lock().expect("skips lock").end_scan();
        if self.indexing {
            self.state.index.end_scan(&report.queues, Utc::now());
        }
        crate::memory::give_back();
    }

    /// The metrics and the last-scan record of a full pass of the active instance.
    fn publish_pass(
        &self,
        result: RedisResult<()>,
        report: ScanReport,
        started: Instant,
        cancel: &CancellationToken,
    ) -> RedisResult<ScanReport> {
        let metrics = &self.state.metrics;
        if let Err(e) = result {
            metrics.scan_failed();
            if crate::connection::is_unreachable(&e) {
                metrics.set_redis_up(false);
            }
            return Err(e);
        }
        metrics.set_redis_up(true);
        metrics.scan_finished(
            started.elapsed().as_secs_f64(),
            Utc::now().timestamp_millis() as f64 / 1000.0,
            &report.per_queue,
        );
        for (reason, n) in &report.newly_skipped {
            metrics.skipped(*reason, *n);
        }
        if !cancel.is_cancelled() {
            metrics.set_skipped_jobs(&report.skipped_by_reason);
        }
        self.state.held.publish(metrics);
        self.state.record_scan(report.clone());
        Ok(report)
    }

    /// The supervised queues: `rq:queues` as of now, plus the failed registries found by a
    /// SCAN at most [`REGISTRY_SCAN_INTERVAL`] old.
    async fn discover_queues<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
    ) -> RedisResult<Vec<String>> {
        let scan = RegistryScan::Reuse {
            found: &self.state.found_registries,
            max_age: REGISTRY_SCAN_INTERVAL,
        };
        snap.registry
            .discover_queues(con, &snap.config.supervisor.queues, scan)
            .await
    }

    /// A quick pass over the named queues only (a notified new failure): new failures are read
    /// and acted on, remembered ones are counted from memory. Gauges and the last-scan record
    /// are left to full scans.
    /// With `observe` (a standby), the new failures are read, decided and indexed only.
    pub async fn scan_queues<C: ConnectionLike + Clone + Send + Sync>(
        &self,
        con: &mut C,
        queues: &[String],
        observe: bool,
        cancel: &CancellationToken,
    ) -> RedisResult<ScanReport> {
        let snap = self.state.snapshot();
        let mut report = ScanReport {
            dry_run: snap.config.supervisor.dry_run,
            observe,
            ..ScanReport::default()
        };
        // Forward only: a notified pass runs beside the full scan, which may have begun under
        // a newer config than this pass's snapshot.
        self.cache
            .lock()
            .expect("cache lock")
            .align_forward(snap.generation);
        for queue in queues
            .iter()
            .filter(|q| snap.config.supervisor.queues.is_match(q))
        {
            self.scan_queue(con, &snap, queue, &mut report, cancel, Pass::NewestOnly)
                .await?;
        }
        if !observe {
            for (reason, n) in &report.newly_skipped {
                self.state.metrics.skipped(*reason, *n);
            }
        }
        Ok(report)
    }

    /// One failed registry, in windows of [`SCAN_WINDOW`] ids by rank. Failures remembered from
    /// an earlier scan with an unchanged score are counted from memory; only new or due ones are
    /// read, [`PARALLEL_BATCHES`] batches at a time so decoding overlaps Redis work. Each window
    /// resumes after the previous one's last entry (`list_window`), so none is skipped.
    async fn scan_queue<C: ConnectionLike + Clone + Send + Sync>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        queue: &str,
        report: &mut ScanReport,
        cancel: &CancellationToken,
        pass: Pass,
    ) -> RedisResult<()> {
        let mut anchors = Anchors::default();
        let (window, newest_before) = (window_of(pass), self.newest.get(queue));
        while !cancel.is_cancelled() {
            crate::systemd::watchdog();
            // Before the listing is asked for: a claim another pass gave up after this instant
            // may have been written after the listing was taken.
            let listed_at = std::time::Instant::now();
            let page = list_window(con, snap, queue, &anchors, pass).await?;
            let listed = page.len();
            let lowest = page.last().map(|(_, score)| *score);
            self.newest.note(queue, &page);
            anchors = anchors_of(&page);
            let unread = self.sort_window(queue, page, listed_at, report);
            let read = unread.ids.len();
            let batches = unread.into_batches(snap.config.supervisor.batch_size);
            let _claims = Claimed::scan(&self.cache, &batches);
            self.read_window(con, snap, queue, batches, report, cancel)
                .await?;
            // A newest-first pass stops at the first window with nothing new that reaches below
            // the newest second listed before (`newest`): new failures get the highest scores
            // (failure time + failure_ttl), and full scans catch the rest.
            let more = pass == Pass::Full || newest::goes_on(read, lowest, newest_before);
            if listed < window || !more {
                break;
            }
        }
        Ok(())
    }

    /// Counts one listed window: expired and invalid entries are skipped, failures remembered
    /// with an unchanged score (and not due) are counted from memory, and the rest are
    /// returned to be read.
    fn sort_window(
        &self,
        queue: &str,
        page: Vec<(Vec<u8>, f64)>,
        listed: std::time::Instant,
        report: &mut ScanReport,
    ) -> Unread {
        let now = Utc::now();
        let now_unix = now.timestamp_millis() as f64 / 1000.0;
        let mut unread = Unread::default();
        // Counted here and added once: an entry per job took an owned key, one allocation
        // per job listed.
        let mut listed_failed = 0;
        let mut cache = self.cache.lock().expect("cache lock");
        for (member, score) in page {
            if score < now_unix {
                self.skip_member(queue, &member, score, SkipReason::Expired, report);
                continue;
            }
            let id = match String::from_utf8(member) {
                Ok(id) => id,
                Err(e) => {
                    let member = e.as_bytes();
                    self.skip_member(queue, member, score, SkipReason::InvalidId, report);
                    continue;
                }
            };
            listed_failed += 1;
            let hit = cache
                .hit(queue, &id, score)
                .filter(|e| {
                    !matches!(e.verdict, Verdict::Waiting { due } | Verdict::Held { due } if due <= now)
                })
                // The index must hold it too, or it is read again (for the index).
                .filter(|_| !self.indexing || self.state.index.still_there(queue, &id, score));
            match hit {
                Some(entry) => {
                    report.scanned += 1;
                    note_age(report, queue, entry.failed_at, now);
                    count_verdict(report, queue, entry.verdict);
                }
                // The due pass or another scan is acting on this failure (on its own task),
                // or did after this listing: it is not read twice. Still there for the index
                // until that pass says.
                None if !cache.claim_for_scan(&id, score, listed) => {
                    report.scanned += 1;
                    if self.indexing {
                        self.state.index.still_there(queue, &id, score);
                    }
                }
                None => {
                    unread.scores.push(score);
                    unread.ids.push(id);
                }
            }
        }
        if listed_failed > 0 {
            report.queue_mut(queue).failed += listed_failed;
        }
        unread
    }

    /// Reads, decides and acts on a window's unread failures, [`PARALLEL_BATCHES`] batches
    /// at a time, and remembers what they decided.
    async fn read_window<C: ConnectionLike + Clone + Send + Sync>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        queue: &str,
        unread: Vec<UnreadBatch>,
        report: &mut ScanReport,
        cancel: &CancellationToken,
    ) -> RedisResult<()> {
        let queue_name: Arc<str> = Arc::from(queue);
        let (dry_run, observe) = (report.dry_run, report.observe);
        // Owned batches: a stream over borrowed chunks makes the future not provably `Send`
        // (closures over a higher-ranked lifetime), and `daemon::run` must be spawnable.
        let mut batches = futures::stream::iter(unread)
            .take_while(|_| std::future::ready(!cancel.is_cancelled()))
            .map(|(ids, scores)| {
                let mut con = con.clone();
                async move {
                    let batch = self
                        .process(&mut con, snap, queue, &ids, dry_run, observe)
                        .await;
                    (batch, ids, scores)
                }
            })
            .buffered(PARALLEL_BATCHES);
        while let Some((batch, ids, scores)) = batches.next().await {
            let mut batch = batch?;
            let scores: HashMap<&str, f64> = ids.iter().map(String::as_str).zip(scores).collect();
            let score_of = |id: &str| scores.get(id).copied();
            self.settle_skips(queue, &mut batch.report, score_of);
            report.absorb(&batch.report);
            self.remember_verdicts(snap, &queue_name, batch.verdicts, score_of);
        }
        Ok(())
    }

    /// Remembers what a batch decided without writing, each by its failure's registry score
    /// (`score_of`), unless the config changed since `snap` (those verdicts are stale), and
    /// wakes the due pass when one of them is due sooner than every job it waited for.
    fn remember_verdicts(
        &self,
        snap: &Snapshot,
        queue: &Arc<str>,
        verdicts: BatchVerdicts,
        score_of: impl Fn(&str) -> Option<f64>,
    ) {
        let sooner = {
            let mut cache = self.cache.lock().expect("cache lock");
            if cache.generation() != snap.generation {
                return;
            }
            let before = cache.next_due();
            for (id, failed_at, verdict, plan) in verdicts {
                if let Some(score) = score_of(&id) {
                    cache.remember(queue, &id, score, failed_at, verdict, plan);
                }
            }
            let after = cache.next_due();
            after.is_some() && (before.is_none() || after < before)
        };
        if sooner {
            self.due_changed.notify_one();
        }
    }

    /// Reads, decides and acts on the given ids of one failed registry (one batch): reads and
    /// decodes them, decides each (and indexes it), holds back what must not be written now,
    /// and writes the rest through the one write path ([`Actor`]).
    pub async fn process<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        queue: &str,
        ids: &[String],
        dry_run: bool,
        observe: bool,
    ) -> RedisResult<Batch> {
        let mut batch = Batch {
            report: ScanReport {
                dry_run,
                observe,
                ..ScanReport::default()
            },
            ..Batch::default()
        };
        let read = self.read_batch(con, snap, queue, ids).await?;
        let mut writes = self.decide_batch(snap, queue, &read, &mut batch);
        // Held first, so that a dry run, a pause or a standby's index counts them as held, not
        // as due (the check only reads).
        let left = self
            .hold_for_target(con, snap, &mut writes, &mut batch)
            .await?;
        // A standby decided for its index; the active instance writes.
        if observe || !left || !self.hold_back(&mut batch.report, &mut writes) {
            return Ok(batch);
        }
        self.write_batch(con, snap, writes, &mut batch).await?;
        Ok(batch)
    }

    /// One batch's jobs as read and decoded, and which of the undecodable ones left the
    /// registry meanwhile (requeued or deleted by someone else: no decode error).
    async fn read_batch<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        queue: &str,
        ids: &[String],
    ) -> RedisResult<ReadBatch> {
        let reads = if self.indexing {
            // Each failure is read once (the decision memory saves re-reads), so the index
            // knows every job's function and exception type. `meta` only when a policy asks
            // for it (a policy that may delete reads everything): the index keeps none of it,
            // and decoding it for every job was 5 % of a first build's instructions
            // (docs/benchmarks.md, session 22).
            crate::rq::Reads {
                meta: reads_for(&snap.config.policies, queue).meta,
                ..crate::rq::Reads::ALL
            }
        } else {
            reads_for(&snap.config.policies, queue)
        };
        let raws = snap.registry.read_jobs_with(con, queue, ids, reads).await?;
        let decoded: Vec<DecodeOutcome> = raws.iter().map(decode).collect();
        let suspects: Vec<String> = raws
            .iter()
            .zip(&decoded)
            .filter(|(_, d)| !matches!(d, DecodeOutcome::Job(_)))
            .map(|(r, _)| r.job_id.clone())
            .collect();
        let moved = if suspects.is_empty() {
            Default::default()
        } else {
            snap.registry.moved_meanwhile(con, queue, &suspects).await?
        };
        Ok(ReadBatch {
            raws,
            decoded,
            moved,
        })
    }

    /// Decides every job read (indexing each), counts and collects the decisions that need
    /// no write, and returns the writes the others need.
    fn decide_batch(
        &self,
        snap: &Snapshot,
        queue: &str,
        read: &ReadBatch,
        batch: &mut Batch,
    ) -> Vec<(Write, Decision)> {
        let now = Utc::now();
        let mut writes: Vec<(Write, Decision)> = Vec::new();
        let ReadBatch {
            raws,
            decoded,
            moved,
        } = read;
        for (raw, outcome) in raws.iter().zip(decoded) {
            let report = &mut batch.report;
            report.scanned += 1;
            if raw.score.is_none() || moved.contains(&raw.job_id) {
                // It left the registry between the listing and this read (requeued or
                // deleted by someone else): not a decode error, not an orphan, and no longer
                // a failure to list. See: issue 21, item 4.
                self.left_meanwhile(queue, raw, report);
                continue;
            }
            match outcome {
                DecodeOutcome::Job(facts) => {
                    writes.extend(self.decide_job(snap, queue, raw, facts, now, batch));
                }
                undecodable => self.skip_undecodable(queue, raw, undecodable, report),
            }
        }
        writes
    }

    /// Decides one decoded job (and indexes it): the write it needs now, or none, when the
    /// decision is only counted and remembered.
    fn decide_job(
        &self,
        snap: &Snapshot,
        queue: &str,
        raw: &crate::rq::RawJob,
        facts: &crate::rq::JobFacts,
        now: DateTime<Utc>,
        batch: &mut Batch,
    ) -> Option<(Write, Decision)> {
        note_age(&mut batch.report, queue, facts.failed_at, now);
        let evaluation = decide(&snap.config.policies, facts, now);
        let policy = evaluation.policy;
        let decision = evaluation.decision;
        if self.indexing {
            self.index_decided(raw, facts, policy.map(|p| p.name.as_str()), &decision);
        }
        let kind = match Step::of(&decision) {
            Step::Write(kind) => kind,
            // A decision without a write: counted and remembered.
            Step::Settle(verdict) => {
                count_verdict(&mut batch.report, queue, verdict);
                if verdict == Verdict::Unmatched {
                    // Decided now, not remembered from an earlier scan: news for the counter.
                    batch.report.new_skip(SkipReason::Unmatched);
                }
                let plan = self.plan_due_write(snap, policy, facts, &decision);
                batch
                    .verdicts
                    .push((facts.job_id.clone(), facts.failed_at, verdict, plan));
                return None;
            }
        };
        let name = policy.map_or("", |p| p.name.as_str());
        let mut write = Write::of(facts, Author::Policy(name.to_string()), kind);
        if let (WriteKind::Requeue { .. }, Some(crate::policy::Action::Retry(spec))) =
            (kind, policy.map(|p| &p.action))
        {
            write = write.to_queue(spec.target_queue(facts));
        }
        Some((write, decision))
    }

    /// Counts a job that left the registry between the listing and the read (a conflict) and
    /// forgets it.
    fn left_meanwhile(&self, queue: &str, raw: &crate::rq::RawJob, report: &mut ScanReport) {
        debug!(job_id = %raw.job_id, queue, "requeued or deleted by someone else meanwhile");
        report.conflicts += 1;
        if self.indexing {
            let was = self.state.index.remove_all([(queue, raw.job_id.as_str())]);
            self.state
                .job_left(queue, &raw.job_id, was.into_iter().next().flatten());
        }
        self.cache.lock().expect("cache lock").forget(&raw.job_id);
    }

    /// Counts a job still in its registry that did not decode: an orphan, or corrupt
    /// (at WARN once per failure); the index lists it as undecodable. Never acted on.
    fn skip_undecodable(
        &self,
        queue: &str,
        raw: &crate::rq::RawJob,
        outcome: &DecodeOutcome,
        report: &mut ScanReport,
    ) {
        match outcome {
            DecodeOutcome::Job(_) => {}
            DecodeOutcome::Orphan => {
                debug!(job_id = %raw.job_id, queue, "registry entry without a job hash; skipped");
                report.skip(SkipReason::Orphan, &raw.job_id);
                if self.indexing {
                    self.index_undecodable(raw);
                }
            }
            DecodeOutcome::Corrupt(reason) => {
                // Once per failure at WARN: a corrupt job stays corrupt, and every scan
                // reads it again.
                let known = raw.score.is_some_and(|score| {
                    self.skips.lock().expect("skips lock").knows(
                        queue,
                        raw.job_id.as_bytes(),
                        score,
                        SkipReason::DecodeError,
                    )
                });
                if known {
                    debug!(job_id = %raw.job_id, queue, %reason, "cannot decode failed job; skipped, left untouched");
                } else {
                    warn!(job_id = %raw.job_id, queue, %reason, "cannot decode failed job; skipped, left untouched");
                }
                report.skip(SkipReason::DecodeError, &raw.job_id);
                if self.indexing {
                    self.index_undecodable(raw);
                }
            }
        }
    }

    /// Takes out of `writes` what must not be written now: everything in a dry run or while
    /// paused (logged, counted), and requeues of a policy whose circuit breaker is open.
    /// Returns whether anything is left to write.
    fn hold_back(&self, report: &mut ScanReport, writes: &mut Vec<(Write, Decision)>) -> bool {
        if writes.is_empty() {
            return false;
        }
        if report.dry_run || self.state.is_paused() {
            for (write, decision) in writes.iter() {
                let counted = if report.dry_run {
                    count_planned(report, &write.kind)
                } else {
                    "paused: not acting"
                };
                info!(job_id = %write.job_id, queue = %write.queue, policy = %write.author.name(), decision = decision.name(), dry_run = report.dry_run, "{counted}");
                if !report.dry_run {
                    report.skip(SkipReason::Paused, &write.job_id);
                }
            }
            return false;
        }
        // Retry storms: a policy whose circuit breaker is open does not requeue for now.
        {
            let mut breakers = self.state.breakers.lock().expect("breakers lock");
            let now = Utc::now();
            writes.retain(|(w, _)| {
                let held = matches!(w.kind, WriteKind::Requeue { .. })
                    && !breakers.allows(w.author.name(), now);
                if held {
                    report.skip(SkipReason::CircuitOpen, &w.job_id);
                }
                !held
            });
            self.state
                .metrics
                .set_open_circuits(breakers.open().iter().map(|c| c.policy.as_str()));
        }
        !writes.is_empty()
    }

    /// Takes out of `writes` the requeues whose policy's `hold_when` holds them back: their
    /// target queue has no live RQ worker, or is longer than allowed (one small read per
    /// target queue, at most once a second). They become `held` (index, gauge) and are
    /// decided again about a second later, so they go as soon as the queue can take them.
    /// Returns whether anything is left to write. See: issue 21.
    async fn hold_for_target<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        writes: &mut Vec<(Write, Decision)>,
        batch: &mut Batch,
    ) -> RedisResult<bool> {
        let mut targets: Vec<&str> = Vec::new();
        for (w, _) in writes.iter() {
            if hold_when_of(snap, w).is_some() && !targets.contains(&w.origin.as_str()) {
                targets.push(&w.origin);
            }
        }
        if targets.is_empty() {
            return Ok(!writes.is_empty());
        }
        let worlds = self
            .state
            .worlds
            .get(con, snap.registry.keys(), &targets)
            .await;
        match worlds {
            Ok(worlds) => self.hold_where_needed(snap, writes, &worlds, batch),
            // Unknown whether the queues can take them (e.g. the ACL denies reading
            // rq:workers:*): these requeues wait for a later pass; the batch's other writes go.
            Err(e) => {
                warn!(error = %e, queues = ?targets, "cannot read the target queues' workers and lengths for hold_when; their requeues wait");
                writes.retain(|(w, _)| {
                    let unknown = hold_when_of(snap, w).is_some();
                    if unknown {
                        batch.report.skip(SkipReason::HoldUnknown, &w.job_id);
                    }
                    !unknown
                });
            }
        }
        Ok(!writes.is_empty())
    }

    /// Takes out of `writes` the requeues whose target queue (as `worlds` says it is) their
    /// policy's `hold_when` holds them back from, and marks them held; releases the others.
    fn hold_where_needed(
        &self,
        snap: &Snapshot,
        writes: &mut Vec<(Write, Decision)>,
        worlds: &HashMap<String, crate::hold::QueueWorld>,
        batch: &mut Batch,
    ) {
        let recheck =
            Utc::now() + chrono::Duration::from_std(crate::hold::RECHECK).unwrap_or_default();
        let mut held: Vec<(String, String)> = Vec::new();
        writes.retain(|(w, _)| {
            let reason = hold_when_of(snap, w).and_then(|hold| {
                let world = worlds.get(&w.origin).copied().unwrap_or_default();
                crate::hold::hold_reason(&hold, &w.origin, world)
            });
            match reason {
                Some(reason) => {
                    debug!(job_id = %w.job_id, queue = %w.queue, to_queue = %w.origin, policy = %w.author.name(), "held: {reason}");
                    self.state.held.hold(&w.queue, &w.job_id, reason.name());
                    batch.verdicts.push((
                        w.job_id.clone(),
                        w.failed_at,
                        Verdict::Held { due: recheck },
                        Plan::of(&snap.config.policies, w),
                    ));
                    held.push((w.queue.clone(), w.job_id.clone()));
                    false
                }
                None => {
                    self.state.held.release(&w.queue, &w.job_id);
                    true
                }
            }
        });
        if self.indexing && !held.is_empty() {
            self.state
                .index
                .mark_held_all(held.iter().map(|(q, id)| (q.as_str(), id.as_str())));
        }
        batch.report.held += held.len() as u64;
        self.state.held.publish(&self.state.metrics);
    }

    /// Writes through the one write path and counts each outcome; feeds the breakers.
    async fn write_batch<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        writes: Vec<(Write, Decision)>,
        batch: &mut Batch,
    ) -> RedisResult<()> {
        let settled = self.act_on(con, snap, writes).await?;
        self.count_written(snap, &settled, batch);
        Ok(())
    }

    /// Writes through the one write path (the executor's scripts, the index kept, the other
    /// instances told), counting nothing yet.
    async fn act_on<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        writes: Vec<(Write, Decision)>,
    ) -> RedisResult<Vec<Settled>> {
        let index = self.indexing.then_some(&self.state.index);
        let actor = Actor::supervisor(&self.state.instance, self.leased, index);
        let planned = writes
            .into_iter()
            .map(|(write, decision)| Planned::decided(write, decision))
            .collect();
        actor.act(con, snap, &self.state.metrics, planned).await
    }

    /// Counts what the writes did in the batch (a job left to the operator is remembered and
    /// settled in the index) and feeds the breakers.
    fn count_written(&self, snap: &Snapshot, settled: &[Settled], batch: &mut Batch) {
        let metrics = &self.state.metrics;
        let mut tally = BreakerTally::default();
        let mut left: Vec<(&str, &str, State)> = Vec::new();
        for s in settled {
            tally.note(metrics, s);
            if let Some(verdict) = count_settled(s, batch) {
                if self.indexing {
                    left.push((&s.write.queue, &s.write.job_id, verdict.state()));
                }
            }
        }
        if !left.is_empty() {
            self.state.index.settle_all(left);
        }
        self.feed_breakers(snap, &tally.requeued, &tally.failed_again);
    }

    /// Puts what a read and a decision established about one failure into the index.
    fn index_decided(
        &self,
        raw: &crate::rq::RawJob,
        facts: &crate::rq::JobFacts,
        policy: Option<&str>,
        decision: &Decision,
    ) {
        if let Some(score) = raw.score {
            self.index_observed(&Observation::decided(facts, score, policy, decision));
        }
    }

    /// Lists a job that cannot be decoded (see [`Observation::undecodable`]).
    fn index_undecodable(&self, raw: &crate::rq::RawJob) {
        if let Some(score) = raw.score {
            self.index_observed(&Observation::undecodable(&raw.queue, &raw.job_id, score));
        }
    }

    /// Indexes one failure, and counts it in `failures_seen_total` when it is new to the index
    /// and happened since this instance started: the failures already there when it started
    /// are its baseline, not a burst (a restart must not look like a failure storm). See:
    /// issue 22, item 2.
    fn index_observed(&self, o: &Observation<'_>) {
        let new = self.state.index.observe(o);
        let counted = new && o.failed_at >= self.state.started_at;
        self.state.metrics.failure_seen(o.queue, counted);
    }

    /// Tells each retry policy's breaker what this batch did.
    fn feed_breakers(
        &self,
        snap: &Snapshot,
        requeued: &HashMap<&str, usize>,
        failed_again: &HashMap<&str, usize>,
    ) {
        let mut breakers = self.state.breakers.lock().expect("breakers lock");
        let now = Utc::now();
        for policy in &snap.config.policies {
            let crate::policy::Action::Retry(spec) = &policy.action else {
                continue;
            };
            let Some(breaker) = &spec.circuit_breaker else {
                continue;
            };
            let r = requeued.get(policy.name.as_str()).copied().unwrap_or(0);
            let f = failed_again.get(policy.name.as_str()).copied().unwrap_or(0);
            if r + f > 0 {
                breakers.record(&policy.name, breaker, r, f, now);
            }
        }
        self.state
            .metrics
            .set_open_circuits(breakers.open().iter().map(|c| c.policy.as_str()));
    }
}

impl Supervisor {
    /// A registry entry skipped before it is read (`expired`, `invalid_id`): counted in the
    /// pass, and as news when this failure was not skipped for that reason already.
    fn skip_member(
        &self,
        queue: &str,
        member: &[u8],
        score: f64,
        reason: SkipReason,
        report: &mut ScanReport,
    ) {
        report.count_skip(reason);
        if self
            .skips
            .lock()
            .expect("skips lock")
            .note(queue, member, score, reason)
        {
            report.new_skip(reason);
        }
    }

    /// Settles which of a batch's skips are news, by each job's registry score (`score_of`);
    /// a skip whose score is unknown counts as news.
    fn settle_skips(
        &self,
        queue: &str,
        report: &mut ScanReport,
        score_of: impl Fn(&str) -> Option<f64>,
    ) {
        if report.skipped_jobs.is_empty() {
            return;
        }
        let mut skips = self.skips.lock().expect("skips lock");
        for (id, reason) in std::mem::take(&mut report.skipped_jobs) {
            let news = match score_of(&id) {
                Some(score) => skips.note(queue, id.as_bytes(), score, reason),
                None => true,
            };
            if news {
                report.new_skip(reason);
            }
        }
    }
}

/// Counts one write's outcome in the batch. Returns the verdict of a job the requeue found
/// stopped or succeeded (remembered, so it is not read and refused again every scan).
fn count_settled(s: &Settled, batch: &mut Batch) -> Option<Verdict> {
    let (write, report) = (&s.write, &mut batch.report);
    match (s.meaning(), &s.outcome) {
        (Meaning::Done, Outcome::Requeued) => {
            report.requeued += 1;
        }
        (Meaning::Done, Outcome::Purged) => {
            report.purged += 1;
        }
        (Meaning::Done, _) => {
            report.exhausted += 1;
            report.queue_mut(&write.queue).exhausted += 1;
        }
        // A registry entry without a job hash is an orphan, as when the scan reads one.
        (Meaning::Gone, Outcome::JobMissing) => report.skip(SkipReason::Orphan, &write.job_id),
        (Meaning::Gone | Meaning::Conflict, _) => report.conflicts += 1,
        // The gate: another instance paused everything, or this one lost its lease since the
        // batch began. Nothing was written; the next pass decides again.
        (Meaning::HeldBack, Outcome::Paused) => report.skip(SkipReason::Paused, &write.job_id),
        (Meaning::HeldBack, _) => report.skip(SkipReason::NotActive, &write.job_id),
        (Meaning::Refused, Outcome::Refused(refusal)) => {
            report.refuse(refusal.reason.skip_reason(), &write.job_id)
        }
        (Meaning::Refused, _) => report.refuse(SkipReason::WriteError, &write.job_id),
        // The requeue script found what the scan's reads did not show (the results are not
        // read to decide): the job is left to the operator.
        (Meaning::LeftToOperator, outcome) => {
            let verdict = if *outcome == Outcome::Stopped {
                Verdict::Stopped
            } else {
                Verdict::Succeeded
            };
            count_verdict(report, &write.queue, verdict);
            batch
                .verdicts
                .push((write.job_id.clone(), write.failed_at, verdict, None));
            return Some(verdict);
        }
    }
    None
}

/// What a batch's writes tell each retry policy's circuit breaker, by policy: its requeues,
/// and its automatic retries that failed again.
#[derive(Debug, Default)]
struct BreakerTally<'a> {
    requeued: HashMap<&'a str, usize>,
    failed_again: HashMap<&'a str, usize>,
}

impl<'a> BreakerTally<'a> {
    /// Counts one write (and the failed-again metric).
    fn note(&mut self, metrics: &Metrics, s: &'a Settled) {
        let policy = s.write.author.name();
        if retried_before(&s.decision, &s.outcome) {
            metrics.retry_failed_again(&s.write.queue, policy);
            *self.failed_again.entry(policy).or_default() += 1;
        }
        if s.outcome == Outcome::Requeued {
            *self.requeued.entry(policy).or_default() += 1;
        }
    }
}

/// Whether this write settles a job an automatic retry had requeued before, which then failed
/// again: a requeue from attempt 2 on, or giving the job up once its attempts are used up.
fn retried_before(decision: &Decided, outcome: &Outcome) -> bool {
    let Decided::ByPolicy(decision) = decision else {
        return false;
    };
    match (decision, outcome) {
        (Decision::RequeueNow { attempt, .. }, Outcome::Requeued) => *attempt >= 2,
        (Decision::MarkExhausted, Outcome::MarkedExhausted) => true,
        (Decision::PurgeNow { exhausted: true }, Outcome::Purged) => true,
        _ => false,
    }
}

/// The `hold_when` of the retry policy behind `w`, when `w` is a policy's requeue.
fn hold_when_of(snap: &Snapshot, w: &Write) -> Option<crate::policy::HoldWhen> {
    if !matches!(w.kind, WriteKind::Requeue { .. }) {
        return None;
    }
    let Author::Policy(name) = &w.author else {
        return None;
    };
    snap.config
        .policies
        .iter()
        .find(|p| &p.name == name)
        .and_then(|p| match &p.action {
            crate::policy::Action::Retry(spec) => spec.hold_when,
            _ => None,
        })
}

/// What a decision asks of the scan now: a write, or only to count and remember a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Write(WriteKind),
    Settle(Verdict),
}

impl Step {
    fn of(decision: &Decision) -> Step {
        match decision {
            Decision::RequeueNow { attempt, at_front } => Step::Write(WriteKind::Requeue {
                attempt: Some(*attempt),
                at_front: *at_front,
            }),
            Decision::PurgeNow { .. } => Step::Write(WriteKind::Purge),
            Decision::MarkExhausted => Step::Write(WriteKind::MarkExhausted),
            Decision::RequeueAt { due, .. } | Decision::PurgeAt { due } => {
                Step::Settle(Verdict::Waiting { due: *due })
            }
            Decision::Exhausted => Step::Settle(Verdict::Exhausted),
            Decision::Ignore => Step::Settle(Verdict::Ignored),
            Decision::Unmatched => Step::Settle(Verdict::Unmatched),
            Decision::Stopped => Step::Settle(Verdict::Stopped),
            Decision::Succeeded { .. } => Step::Settle(Verdict::Succeeded),
        }
    }
}

fn count_planned(report: &mut ScanReport, kind: &WriteKind) -> &'static str {
    match kind {
        WriteKind::Requeue { .. } => {
            report.requeued += 1;
            "would requeue"
        }
        WriteKind::Purge => {
            report.purged += 1;
            "would purge"
        }
        WriteKind::MarkExhausted => {
            report.exhausted += 1;
            "would mark exhausted"
        }
    }
}

/// Counts a decision that needs no write, by kind and per queue.
fn count_verdict(report: &mut ScanReport, queue: &str, verdict: Verdict) {
    match verdict {
        Verdict::Waiting { due } => {
            report.note_due(due);
            report.queue_mut(queue).waiting += 1;
        }
        Verdict::Exhausted => {
            report.exhausted += 1;
            report.queue_mut(queue).exhausted += 1;
        }
        Verdict::Ignored => report.ignored += 1,
        // Counted by the held_jobs gauge, which the hold itself keeps.
        Verdict::Held { .. } => report.held += 1,
        Verdict::Unmatched => {
            report.unmatched += 1;
            report.count_skip(SkipReason::Unmatched);
        }
        Verdict::Stopped => {
            report.stopped += 1;
            report.queue_mut(queue).stopped += 1;
        }
        Verdict::Succeeded => {
            report.succeeded += 1;
            report.queue_mut(queue).succeeded += 1;
        }
    }
}

/// Keeps the oldest failure age per queue (the `oldest_failed_job_age_seconds` gauge).
fn note_age(report: &mut ScanReport, queue: &str, failed_at: DateTime<Utc>, now: DateTime<Utc>) {
    let gauges = report.queue_mut(queue);
    let age = (now - failed_at).num_seconds().max(0) as u64;
    gauges.oldest_failed_age_seconds = gauges.oldest_failed_age_seconds.max(age);
}
