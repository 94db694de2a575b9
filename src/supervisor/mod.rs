//! The scan loop: read every failed registry in batches, decide per job, act through the
//! executor, and wake up again at the next scan tick or when a job's backoff ends.

mod rate;
mod report;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use redis::RedisResult;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use rate::RequeueLimiter;
pub use report::ScanReport;

use crate::config::Config;
use crate::executor::{Executor, Outcome, Write, WriteKind};
use crate::policy::{decide, Decision};
use crate::rq::{decode, DecodeOutcome, JobFacts, Keys, Registry};

/// State shared with whoever controls the supervisor (signals now, the HTTP API later).
#[derive(Debug, Default)]
pub struct Control {
    paused: AtomicBool,
}

impl Control {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }
}

/// A failed job waiting for its backoff (or `purge_after`) to end.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DueJob {
    pub queue: String,
    pub job_id: String,
}

/// Jobs keyed by the time they become due; rebuilt by every full scan.
pub type DueTimers = BTreeMap<DateTime<Utc>, Vec<DueJob>>;

/// One supervisor: a config snapshot, the readers and the writer.
pub struct Supervisor {
    config: Arc<Config>,
    registry: Registry,
    executor: Executor,
    limiter: RequeueLimiter,
    control: Arc<Control>,
}

impl Supervisor {
    pub fn new(config: Arc<Config>, control: Arc<Control>) -> Supervisor {
        let keys = Keys::new(&config.redis.key_prefix);
        Supervisor {
            limiter: RequeueLimiter::new(config.supervisor.max_requeues_per_second),
            registry: Registry::new(keys.clone()),
            executor: Executor::new(keys),
            config,
            control,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn dry_run(&self, forced: bool) -> bool {
        forced || self.config.supervisor.dry_run
    }

    /// One full pass over every supervised failed registry. Stops between batches when
    /// `cancel` fires (the batch in flight completes). `timers` receives every waiting job.
    pub async fn scan<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        force_dry_run: bool,
        cancel: &CancellationToken,
        mut timers: Option<&mut DueTimers>,
    ) -> RedisResult<ScanReport> {
        let started = Instant::now();
        let mut report = ScanReport {
            dry_run: self.dry_run(force_dry_run),
            ..ScanReport::default()
        };
        let queues = self
            .registry
            .discover_queues(con, &self.config.supervisor.queues)
            .await?;
        for queue in &queues {
            let now = Utc::now();
            let ids = self
                .registry
                .failed_ids(
                    con,
                    queue,
                    now.timestamp_millis() as f64 / 1000.0,
                    self.config.supervisor.batch_size,
                )
                .await?;
            for _ in 0..ids.expired {
                report.skip("expired");
            }
            for _ in 0..ids.invalid {
                report.skip("invalid_id");
            }
            for chunk in ids.live.chunks(self.config.supervisor.batch_size) {
                if cancel.is_cancelled() {
                    break;
                }
                self.process(con, queue, chunk, &mut report, timers.as_deref_mut())
                    .await?;
            }
        }
        report.queues = queues;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Reads, decides and acts on the given ids of one failed registry (one batch).
    pub async fn process<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        ids: &[String],
        report: &mut ScanReport,
        mut timers: Option<&mut DueTimers>,
    ) -> RedisResult<()> {
        let raws = self.registry.read_jobs(con, queue, ids).await?;
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
            let evaluation = decide(&self.config.policies, &facts, now);
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
        if report.dry_run || self.control.is_paused() {
            for (write, decision) in &writes {
                let counted = if report.dry_run {
                    count_planned(report, &write.kind)
                } else {
                    "paused"
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
        self.limiter.acquire(requeues).await;
        let batch: Vec<Write> = writes.iter().map(|(w, _)| w.clone()).collect();
        let outcomes = self.executor.apply(con, &batch, Utc::now()).await?;
        for ((write, decision), outcome) in writes.iter().zip(&outcomes) {
            let attempt = match write.kind {
                WriteKind::Requeue { attempt, .. } => attempt,
                _ => None,
            };
            match outcome {
                Outcome::Requeued => report.requeued += 1,
                Outcome::Purged => report.purged += 1,
                Outcome::MarkedExhausted | Outcome::AlreadyExhausted => report.exhausted += 1,
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
        Ok(())
    }

    /// Acts on the jobs whose due time has come: re-reads them and decides again, so a job that
    /// changed meanwhile is handled by its current state.
    pub async fn process_due<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        due: Vec<DueJob>,
        timers: &mut DueTimers,
    ) -> RedisResult<ScanReport> {
        let mut report = ScanReport {
            dry_run: self.dry_run(false),
            ..ScanReport::default()
        };
        let mut by_queue: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for job in due {
            by_queue.entry(job.queue).or_default().push(job.job_id);
        }
        for (queue, ids) in by_queue {
            for chunk in ids.chunks(self.config.supervisor.batch_size) {
                self.process(con, &queue, chunk, &mut report, Some(timers))
                    .await?;
            }
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
