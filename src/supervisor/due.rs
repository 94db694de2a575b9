//! Jobs whose wait ended (a retry's backoff, a purge's `purge_after`, a held requeue's
//! recheck). A job remembered with its write ([`Plan`]) is written at once, without being read
//! again: the script checks the same facts before its first write. The others, and a planned
//! job whose write found it changed or gone, are read and decided again, as every due job was
//! before (issue 24, item 2).

use std::collections::BTreeMap;
use std::sync::Arc;

use redis::aio::ConnectionLike;
use redis::RedisResult;

use super::{Batch, DueJob, DuePlan, Plan, Supervisor};
use crate::executor::{Author, Meaning, Write, WriteKind};
use crate::index::State;
use crate::policy::{Action, Decision, Policy};
use crate::report::ScanReport;
use crate::rq::JobFacts;
use crate::state::Snapshot;

/// Due jobs with a usable plan, by queue: (id, plan).
type PlannedByQueue = BTreeMap<Arc<str>, Vec<(Box<str>, DuePlan)>>;

impl Supervisor {
    /// Acts on jobs whose wait has ended: writes the planned ones, re-reads and decides again
    /// the rest (a job that changed meanwhile is handled by its current state), and remembers
    /// what still waits.
    pub(super) async fn process_due<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        due: Vec<DueJob>,
    ) -> RedisResult<ScanReport> {
        let snap = self.state.snapshot();
        let mut report = ScanReport {
            dry_run: snap.config.supervisor.dry_run,
            ..ScanReport::default()
        };
        // Forward only: this pass runs beside the scans (see `FactsCache::align_forward`).
        self.cache
            .lock()
            .expect("cache lock")
            .align_forward(snap.generation);
        // While paused nothing is written: the read path counts and logs it as it always has.
        let read_all = report.dry_run || self.state.is_paused();
        let (planned, mut unplanned) = split_planned(&snap, due, read_all);
        for (queue, jobs) in planned {
            for chunk in jobs.chunks(snap.config.supervisor.batch_size) {
                let again = self
                    .write_planned(con, &snap, &queue, chunk, &mut report)
                    .await?;
                unplanned.extend(again);
            }
        }
        self.reread_due(con, &snap, unplanned, &mut report).await?;
        for (reason, n) in &report.newly_skipped {
            self.state.metrics.skipped(*reason, *n);
        }
        self.state.held.publish(&self.state.metrics);
        Ok(report)
    }

    /// Writes one batch of planned due jobs of `queue` as `process` writes what it decided:
    /// marked due in the index, held back where `hold_when`, the pause, a dry run or a breaker
    /// say so, and counted. Returns the jobs to read and decide again: those whose plan no
    /// longer fits the config, and those the write found changed or gone (nothing written).
    async fn write_planned<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        queue: &Arc<str>,
        jobs: &[(Box<str>, DuePlan)],
        report: &mut ScanReport,
    ) -> RedisResult<Vec<DueJob>> {
        let policies = &snap.config.policies;
        let mut again = Vec::new();
        let mut writes = Vec::with_capacity(jobs.len());
        for (id, due) in jobs {
            match due.plan.write(policies, queue, id, due.failed_at) {
                Some(write) => writes.push(write),
                None => again.push(unplanned(queue, id)),
            }
        }
        let mut batch = Batch {
            report: ScanReport {
                dry_run: report.dry_run,
                ..ScanReport::default()
            },
            ..Batch::default()
        };
        batch.report.scanned += writes.len() as u64;
        if self.indexing && !writes.is_empty() {
            let due = writes
                .iter()
                .map(|(w, _)| (&*w.queue, &*w.job_id, State::Due));
            self.state.index.settle_all(due);
        }
        let left = self
            .hold_for_target(con, snap, &mut writes, &mut batch)
            .await?;
        if left && self.hold_back(&mut batch.report, &mut writes) {
            let settled = self.act_on(con, snap, writes).await?;
            let (kept, changed): (Vec<_>, Vec<_>) = settled
                .into_iter()
                .partition(|s| !matches!(s.meaning(), Meaning::Gone | Meaning::Conflict));
            again.extend(changed.iter().map(|s| unplanned(queue, &s.write.job_id)));
            self.count_written(snap, &kept, &mut batch);
        }
        let score_of = |id: &str| jobs.iter().find(|(j, _)| &**j == id).map(|(_, d)| d.score);
        self.settle_skips(queue, &mut batch.report, score_of);
        report.absorb(&batch.report);
        self.remember_verdicts(snap, queue, batch.verdicts, score_of);
        Ok(again)
    }

    /// Reads and decides the due jobs again, as a scan does, in batches per queue.
    async fn reread_due<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        due: Vec<DueJob>,
        report: &mut ScanReport,
    ) -> RedisResult<()> {
        let mut by_queue: BTreeMap<Arc<str>, Vec<String>> = BTreeMap::new();
        for job in due {
            by_queue
                .entry(job.queue)
                .or_default()
                .push(job.job_id.into());
        }
        for (queue, ids) in by_queue {
            for chunk in ids.chunks(snap.config.supervisor.batch_size) {
                self.reread_chunk(con, snap, &queue, chunk, report).await?;
            }
        }
        Ok(())
    }

    /// One batch of [`Supervisor::reread_due`]: only ids still in the registry are read.
    async fn reread_chunk<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        queue: &Arc<str>,
        chunk: &[String],
        report: &mut ScanReport,
    ) -> RedisResult<()> {
        // Only ids still in the registry, with the score that names their failure.
        let scores = snap.registry.scores(con, queue, chunk).await?;
        let present: Vec<(String, f64)> = chunk
            .iter()
            .zip(&scores)
            .filter_map(|(id, s)| s.map(|s| (id.clone(), s)))
            .collect();
        // A held job that left the registry meanwhile is held no more.
        for (id, score) in chunk.iter().zip(&scores) {
            if score.is_none() {
                self.state.held.release(queue, id);
            }
        }
        let ids: Vec<String> = present.iter().map(|(id, _)| id.clone()).collect();
        let mut batch = self
            .process(con, snap, queue, &ids, report.dry_run, false)
            .await?;
        let score_of = |id: &str| present.iter().find(|(p, _)| p == id).map(|(_, s)| *s);
        self.settle_skips(queue, &mut batch.report, score_of);
        report.absorb(&batch.report);
        self.remember_verdicts(snap, queue, batch.verdicts, score_of);
        Ok(())
    }

    /// The write a job that now waits (`decision`, by `policy`) gets when it falls due, as a
    /// plan to remember with its verdict; `None` for every other decision, and when no plan
    /// can say it (it is then read again when due).
    pub(super) fn plan_due_write(
        &self,
        snap: &Snapshot,
        policy: Option<&Policy>,
        facts: &JobFacts,
        decision: &Decision,
    ) -> Option<Plan> {
        let policy = policy?;
        let kind = match (decision, &policy.action) {
            (Decision::RequeueAt { attempt, .. }, Action::Retry(spec)) => WriteKind::Requeue {
                attempt: Some(*attempt),
                at_front: spec.at_front,
            },
            (Decision::PurgeAt { .. }, Action::Purge { .. }) => WriteKind::Purge,
            _ => return None,
        };
        let mut write = Write::of(facts, Author::Policy(policy.name.clone()), kind);
        if let Action::Retry(spec) = &policy.action {
            write = write.to_queue(spec.target_queue(facts));
        }
        Plan::of(&snap.config.policies, &write)
    }
}

/// The due jobs whose plan can be written now (by queue), and the rest. No plan is used when
/// `read_all` (a dry run or the pause: the read path logs what it would do) nor under another
/// config than the plan's.
fn split_planned(
    snap: &Snapshot,
    due: Vec<DueJob>,
    read_all: bool,
) -> (PlannedByQueue, Vec<DueJob>) {
    let mut planned = PlannedByQueue::new();
    let mut rest = Vec::new();
    for job in due {
        match job.planned {
            Some(p) if !read_all && p.generation == snap.generation => {
                planned.entry(job.queue).or_default().push((job.job_id, p));
            }
            _ => rest.push(job),
        }
    }
    (planned, rest)
}

/// A due job to be read and decided again.
fn unplanned(queue: &Arc<str>, id: &str) -> DueJob {
    DueJob {
        queue: queue.clone(),
        job_id: id.into(),
        planned: None,
    }
}
