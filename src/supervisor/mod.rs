//! The scan loop: read every failed registry in batches, decide per job, act through the
//! executor, and wake up again at the next scan tick or when a job's backoff ends.

mod rate;
mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use redis::aio::ConnectionLike;
use redis::RedisResult;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use rate::RequeueLimiter;
pub use report::ScanReport;

use crate::audit::{self, AuditRecord};
use crate::executor::{Outcome, Write, WriteKind};
use crate::metrics::Trigger;
use crate::policy::{decide, Decision};
use crate::rq::{decode, DecodeOutcome, JobFacts};
use crate::state::{DaemonState, Snapshot};

/// Batches of one failed registry in flight at once during a scan.
pub const PARALLEL_BATCHES: usize = 3;

/// A failed job waiting for its backoff (or `purge_after`) to end.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DueJob {
    pub queue: String,
    pub job_id: String,
}

/// Jobs keyed by the time they become due; rebuilt by every full scan.
pub type DueTimers = BTreeMap<DateTime<Utc>, Vec<DueJob>>;

/// The supervisor: decides and acts on failed jobs with the state's current config snapshot.
pub struct Supervisor {
    state: Arc<DaemonState>,
}

impl Supervisor {
    pub fn new(state: Arc<DaemonState>) -> Supervisor {
        Supervisor { state }
    }

    pub fn state(&self) -> &Arc<DaemonState> {
        &self.state
    }

    /// One full pass over every supervised failed registry. Stops between batches when
    /// `cancel` fires (the batch in flight completes). `timers` receives every waiting job.
    /// Updates the metrics and the last-scan record when the pass completes.
    pub async fn scan<C: ConnectionLike + Clone + Send + Sync>(
        &self,
        con: &mut C,
        force_dry_run: bool,
        cancel: &CancellationToken,
        mut timers: Option<&mut DueTimers>,
    ) -> RedisResult<ScanReport> {
        let started = Instant::now();
        let snap = self.state.snapshot();
        let config = &snap.config;
        let mut report = ScanReport {
            dry_run: force_dry_run || config.supervisor.dry_run,
            ..ScanReport::default()
        };
        let result = async {
            let queues = snap
                .registry
                .discover_queues(con, &config.supervisor.queues)
                .await?;
            for queue in &queues {
                let now = Utc::now();
                let ids = snap
                    .registry
                    .failed_ids(
                        con,
                        queue,
                        now.timestamp_millis() as f64 / 1000.0,
                        config.supervisor.batch_size,
                    )
                    .await?;
                report.per_queue.entry(queue.clone()).or_default().failed = ids.live.len() as u64;
                for _ in 0..ids.expired {
                    report.skip("expired");
                }
                for _ in 0..ids.invalid {
                    report.skip("invalid_id");
                }
                // Batches run PARALLEL_BATCHES at a time on the multiplexed connection, so the
                // client decodes one batch while Redis executes another.
                let chunks: Vec<&[String]> =
                    ids.live.chunks(config.supervisor.batch_size).collect();
                let dry_run = report.dry_run;
                let mut batches = futures::stream::iter(chunks)
                    .take_while(|_| std::future::ready(!cancel.is_cancelled()))
                    .map(|chunk| {
                        let mut con = con.clone();
                        let snap = &snap;
                        async move {
                            crate::systemd::watchdog();
                            let mut part = ScanReport {
                                dry_run,
                                ..ScanReport::default()
                            };
                            let mut due = DueTimers::new();
                            self.process(&mut con, snap, queue, chunk, &mut part, Some(&mut due))
                                .await?;
                            Ok::<_, redis::RedisError>((part, due))
                        }
                    })
                    .buffered(PARALLEL_BATCHES);
                while let Some(batch) = batches.next().await {
                    let (part, due) = batch?;
                    report.absorb(&part);
                    if let Some(timers) = timers.as_deref_mut() {
                        for (at, jobs) in due {
                            timers.entry(at).or_default().extend(jobs);
                        }
                    }
                }
            }
            let lengths = snap.registry.queue_lengths(con, &queues).await?;
            for (queue, len) in queues.iter().zip(lengths) {
                report.per_queue.entry(queue.clone()).or_default().queued = len;
            }
            report.queues = queues;
            Ok::<(), redis::RedisError>(())
        }
        .await;
        report.duration_ms = started.elapsed().as_millis() as u64;
        let metrics = &self.state.metrics;
        match result {
            Ok(()) => {
                metrics.set_redis_up(true);
                metrics.scan_finished(
                    started.elapsed().as_secs_f64(),
                    Utc::now().timestamp_millis() as f64 / 1000.0,
                    &report.per_queue,
                );
                for (reason, n) in &report.skipped_by_reason {
                    metrics.skipped(reason, *n);
                }
                self.state.record_scan(report.clone());
                Ok(report)
            }
            Err(e) => {
                metrics.scan_failed();
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                {
                    metrics.set_redis_up(false);
                }
                Err(e)
            }
        }
    }

    /// Reads, decides and acts on the given ids of one failed registry (one batch).
    pub async fn process<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        queue: &str,
        ids: &[String],
        report: &mut ScanReport,
        mut timers: Option<&mut DueTimers>,
    ) -> RedisResult<()> {
        let raws = snap.registry.read_jobs(con, queue, ids).await?;
        let now = Utc::now();
        let mut writes: Vec<(Write, Decision)> = Vec::new();
        for raw in &raws {
            report.scanned += 1;
            let facts = match decode(raw) {
                DecodeOutcome::Job(facts) => facts,
                DecodeOutcome::Orphan => {
                    debug!(job_id = %raw.job_id, queue, "registry entry without a job hash; skipped");
                    report.skip("orphan");
                    continue;
                }
                DecodeOutcome::Corrupt(reason) => {
                    warn!(job_id = %raw.job_id, queue, %reason, "cannot decode failed job; skipped, left untouched");
                    report.skip("decode_error");
                    continue;
                }
            };
            let gauges = report.per_queue.entry(queue.to_string()).or_default();
            let age = (now - facts.failed_at).num_seconds().max(0) as u64;
            gauges.oldest_failed_age_seconds = gauges.oldest_failed_age_seconds.max(age);
            let evaluation = decide(&snap.config.policies, &facts, now);
            let policy = evaluation.policy.map_or("", |p| p.name.as_str());
            let decision = evaluation.decision;
            let kind = match &decision {
                Decision::RequeueNow { attempt, at_front } => WriteKind::Requeue {
                    attempt: Some(*attempt),
                    at_front: *at_front,
                },
                Decision::PurgeNow { .. } => WriteKind::Purge,
                Decision::MarkExhausted => WriteKind::MarkExhausted,
                Decision::RequeueAt { due, .. } | Decision::PurgeAt { due } => {
                    report.note_due(*due);
                    report
                        .per_queue
                        .entry(queue.to_string())
                        .or_default()
                        .waiting += 1;
                    if let Some(timers) = timers.as_deref_mut() {
                        timers.entry(*due).or_default().push(DueJob {
                            queue: queue.to_string(),
                            job_id: facts.job_id.clone(),
                        });
                    }
                    continue;
                }
                Decision::Exhausted => {
                    report.exhausted += 1;
                    report
                        .per_queue
                        .entry(queue.to_string())
                        .or_default()
                        .exhausted += 1;
                    continue;
                }
                Decision::Ignore => {
                    report.ignored += 1;
                    continue;
                }
                Decision::Unmatched => {
                    report.unmatched += 1;
                    report.skip("unmatched");
                    continue;
                }
            };
            writes.push((write_for(&facts, policy, kind), decision));
        }
        if writes.is_empty() {
            return Ok(());
        }
        if report.dry_run || self.state.is_paused() {
            for (write, decision) in &writes {
                let counted = if report.dry_run {
                    count_planned(report, &write.kind)
                } else {
                    "paused: not acting"
                };
                info!(job_id = %write.job_id, queue = %write.queue, policy = %write.policy, decision = decision.name(), dry_run = report.dry_run, "{counted}");
                if !report.dry_run {
                    report.skip("paused");
                }
            }
            return Ok(());
        }
        let requeues = writes
            .iter()
            .filter(|(w, _)| matches!(w.kind, WriteKind::Requeue { .. }))
            .count() as u32;
        snap.limiter.acquire(requeues).await;
        let batch: Vec<Write> = writes.iter().map(|(w, _)| w.clone()).collect();
        let outcomes = snap.executor.apply(con, &batch, Utc::now()).await?;
        let metrics = &self.state.metrics;
        for ((write, decision), outcome) in writes.iter().zip(&outcomes) {
            let attempt = match write.kind {
                WriteKind::Requeue { attempt, .. } => attempt,
                _ => None,
            };
            let retried_before = match (decision, outcome) {
                (Decision::RequeueNow { attempt, .. }, Outcome::Requeued) => *attempt >= 2,
                (Decision::MarkExhausted, Outcome::MarkedExhausted) => true,
                (Decision::PurgeNow { exhausted: true }, Outcome::Purged) => true,
                _ => false,
            };
            if retried_before {
                metrics.retry_failed_again(&write.queue, &write.policy);
            }
            match outcome {
                Outcome::Requeued => {
                    report.requeued += 1;
                    metrics.requeued(&write.queue, &write.policy, Trigger::Auto);
                }
                Outcome::Purged => {
                    report.purged += 1;
                    metrics.purged(&write.queue, &write.policy, Trigger::Auto);
                }
                Outcome::MarkedExhausted | Outcome::AlreadyExhausted => {
                    report.exhausted += 1;
                    report
                        .per_queue
                        .entry(write.queue.clone())
                        .or_default()
                        .exhausted += 1;
                }
                Outcome::NotInRegistry | Outcome::Changed => report.conflicts += 1,
                Outcome::JobMissing => report.skip("orphan"),
                Outcome::Error(message) => {
                    error!(job_id = %write.job_id, queue = %write.queue, error = %message, "write refused by Redis; job left as it was");
                    report.skip("write_error");
                    continue;
                }
            }
            info!(
                job_id = %write.job_id,
                queue = %write.queue,
                origin = %write.origin,
                policy = %write.policy,
                attempt,
                decision = decision.name(),
                outcome = outcome.name(),
                "action"
            );
        }
        self.audit(con, snap, queue, &writes, &outcomes).await;
        Ok(())
    }

    /// One audit entry per (action, policy) for the writes of a batch that changed something.
    async fn audit<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        queue: &str,
        writes: &[(Write, Decision)],
        outcomes: &[Outcome],
    ) {
        let mut groups: BTreeMap<(&'static str, &str), Vec<String>> = BTreeMap::new();
        for ((write, _), outcome) in writes.iter().zip(outcomes) {
            if let Some(action) = outcome.action() {
                groups
                    .entry((action, write.policy.as_str()))
                    .or_default()
                    .push(write.job_id.clone());
            }
        }
        for ((action, policy), job_ids) in groups {
            let record = AuditRecord {
                who: "supervisor",
                action,
                why: policy,
                queue,
                job_ids: &job_ids,
            };
            if let Err(e) = audit::append(con, &snap.config.redis.key_prefix, &record).await {
                warn!(error = %e, "cannot append to the audit stream");
            }
        }
    }

    /// Acts on the jobs whose due time has come: re-reads them and decides again, so a job that
    /// changed meanwhile is handled by its current state.
    pub async fn process_due<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        due: Vec<DueJob>,
        timers: &mut DueTimers,
    ) -> RedisResult<ScanReport> {
        let snap = self.state.snapshot();
        let mut report = ScanReport {
            dry_run: snap.config.supervisor.dry_run,
            ..ScanReport::default()
        };
        let mut by_queue: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for job in due {
            by_queue.entry(job.queue).or_default().push(job.job_id);
        }
        for (queue, ids) in by_queue {
            for chunk in ids.chunks(snap.config.supervisor.batch_size) {
                self.process(con, &snap, &queue, chunk, &mut report, Some(timers))
                    .await?;
            }
        }
        for (reason, n) in &report.skipped_by_reason {
            self.state.metrics.skipped(reason, *n);
        }
        Ok(report)
    }
}

fn write_for(facts: &JobFacts, policy: &str, kind: WriteKind) -> Write {
    Write {
        job_id: facts.job_id.clone(),
        queue: facts.queue.clone(),
        origin: facts.origin.clone(),
        cas: facts.cas.clone(),
        policy: policy.to_string(),
        kind,
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

/// Takes every timer entry due at or before `now`.
pub fn take_due(timers: &mut DueTimers, now: DateTime<Utc>) -> Vec<DueJob> {
    let later = timers.split_off(&(now + chrono::Duration::nanoseconds(1)));
    let due = std::mem::replace(timers, later);
    due.into_values().flatten().collect()
}
