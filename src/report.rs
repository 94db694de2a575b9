//! What one scan pass saw and did: the `once` summary and the source of later metrics.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::metrics::QueueGauges;
use crate::skip::SkipReason;

/// Counts for one pass. In a dry run the action counts say what would have been done.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ScanReport {
    /// When the pass began (a full scan's; `None` for other passes).
    pub started_at: Option<DateTime<Utc>>,
    pub dry_run: bool,
    /// A standby's pass: it decides and indexes, and neither writes nor counts (the active
    /// instance does both).
    #[serde(skip)]
    pub observe: bool,
    /// Registry entries looked at (live, i.e. not expired).
    pub scanned: u64,
    pub requeued: u64,
    pub purged: u64,
    /// Jobs whose `max_attempts` is used up (marked now or before).
    pub exhausted: u64,
    /// Jobs in backoff (or waiting for `purge_after`).
    pub waiting: u64,
    pub ignored: u64,
    pub unmatched: u64,
    /// Jobs RQ marks stopped, left to the operator (never retried automatically).
    pub stopped: u64,
    /// Jobs whose last run succeeded (RQ's results), left to the operator.
    pub succeeded: u64,
    /// Entries skipped without a decision; see `skipped_by_reason`.
    pub skipped: u64,
    /// Writes that found the job changed or moved by someone else (safe no-ops).
    pub conflicts: u64,
    /// Writes refused before any change (a key of the wrong type, a ttl EXPIRE cannot take,
    /// a command the Redis user may not run, or Redis refusing the call): those jobs are
    /// exactly as they were. Also counted in `skipped_by_reason` (`wrong_type`, `invalid_ttl`,
    /// `forbidden_by_acl`, `write_error`); `once` exits with code 3 when this is not 0.
    pub refused: u64,
    pub skipped_by_reason: BTreeMap<SkipReason, u64>,
    /// Of the skips above, those that are events: the job was not skipped for that reason
    /// before (its failure is new, or it was skipped for another reason or not at all). The
    /// source of `skipped_total`, which must not grow by the whole skipped backlog on every
    /// scan. See: issue 11.
    #[serde(skip)]
    pub newly_skipped: BTreeMap<SkipReason, u64>,
    /// (job id, reason) of each [`skip`](Self::skip) of a batch, until the pass, which knows
    /// each job's registry score, settles which of them are new (`Supervisor::settle_skips`).
    #[serde(skip)]
    pub skipped_jobs: Vec<(String, SkipReason)>,
    pub queues: Vec<String>,
    /// Per-queue figures (the metrics gauges).
    pub per_queue: BTreeMap<String, QueueGauges>,
    /// The earliest time a waiting job becomes due.
    pub next_due_at: Option<DateTime<Utc>>,
    pub duration_ms: u64,
    /// Due requeues a retry policy's `hold_when` held back (the target queue has no live
    /// worker or is too long); decided again about a second later. See: issue 21.
    pub held: u64,
}

impl ScanReport {
    /// `queue`'s figures, added at zero when absent. The name is copied only then: a copy per
    /// job counted was an allocation per job in a first build (docs/benchmarks.md, session 22).
    pub fn queue_mut(&mut self, queue: &str) -> &mut QueueGauges {
        if !self.per_queue.contains_key(queue) {
            self.per_queue
                .insert(queue.to_string(), QueueGauges::default());
        }
        self.per_queue.get_mut(queue).expect("inserted above")
    }

    /// Job `job_id` is skipped for `reason` in this pass. Whether that is news (for the
    /// counter) is settled later, by the pass that knows the job's failure (its score).
    pub fn skip(&mut self, reason: SkipReason, job_id: &str) {
        self.count_skip(reason);
        self.skipped_jobs.push((job_id.to_string(), reason));
    }

    /// A skip seen in this pass, counted in `skipped_by_reason` only (the caller settles
    /// whether it is new, or knows it is not).
    pub fn count_skip(&mut self, reason: SkipReason) {
        self.skipped += 1;
        *self.skipped_by_reason.entry(reason).or_default() += 1;
    }

    /// A skip that is an event (see `newly_skipped`).
    pub fn new_skip(&mut self, reason: SkipReason) {
        *self.newly_skipped.entry(reason).or_default() += 1;
    }

    /// A write refused before any change, for `reason`: skipped, and counted as refused.
    pub fn refuse(&mut self, reason: SkipReason, job_id: &str) {
        self.refused += 1;
        self.skip(reason, job_id);
    }

    pub fn note_due(&mut self, due: DateTime<Utc>) {
        self.waiting += 1;
        self.next_due_at = Some(self.next_due_at.map_or(due, |d| d.min(due)));
    }

    /// Adds another batch's or pass's counts, per-queue figures and earliest due time.
    pub fn absorb(&mut self, other: &ScanReport) {
        self.scanned += other.scanned;
        self.requeued += other.requeued;
        self.purged += other.purged;
        self.exhausted += other.exhausted;
        self.waiting += other.waiting;
        self.ignored += other.ignored;
        self.unmatched += other.unmatched;
        self.stopped += other.stopped;
        self.succeeded += other.succeeded;
        self.skipped += other.skipped;
        self.conflicts += other.conflicts;
        self.refused += other.refused;
        self.held += other.held;
        for (reason, n) in &other.skipped_by_reason {
            *self.skipped_by_reason.entry(*reason).or_default() += n;
        }
        for (reason, n) in &other.newly_skipped {
            *self.newly_skipped.entry(*reason).or_default() += n;
        }
        self.skipped_jobs.extend(other.skipped_jobs.iter().cloned());
        for (queue, g) in &other.per_queue {
            let mine = self.queue_mut(queue);
            mine.failed += g.failed;
            mine.waiting += g.waiting;
            mine.exhausted += g.exhausted;
            mine.stopped += g.stopped;
            mine.succeeded += g.succeeded;
            mine.queued += g.queued;
            mine.oldest_failed_age_seconds = mine
                .oldest_failed_age_seconds
                .max(g.oldest_failed_age_seconds);
        }
        if let Some(due) = other.next_due_at {
            self.next_due_at = Some(self.next_due_at.map_or(due, |d| d.min(due)));
        }
    }
}
