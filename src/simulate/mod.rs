//! What-if before reload (issue 22, item 5): what a candidate policy file would do with
//! today's backlog, against what the running policies do, without writing anything.
//!
//! Pure. Two sources feed one [`Tally`]: the daemon's failure index ([`over_index`], what
//! `POST /api/v1/policies/simulate` answers from) and jobs read whole from Redis
//! ([`Tally::add_facts`], what `check-config --simulate` reads). The index holds what the scans
//! read, not everything a policy can match on (no traceback, no `meta`, no `created_at`), so a
//! job whose candidate decision depends on a fact it does not hold is counted as uncertain,
//! with the fact ([`Unknown`]), never guessed. What the running decisions of the scans
//! establish is used, though: a candidate policy that matches like a running one matches the
//! same jobs (the index records which running policy decided each job), and one that is the
//! same policy decides the same.

mod file;
mod held;
mod over_index;
mod report;

pub use file::policy_file;
pub use held::{hold_targets, QueueWorlds};
pub use over_index::{over_index, over_index_held};
pub use report::{GroupDiff, Move, PolicyTally, Report};

use std::collections::HashMap;
use std::hash::Hash;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::policy::{self, Decision, Policy};
use crate::rq::JobFacts;

/// What a policy file does with one failed job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Requeued now.
    RetryNow,
    /// Requeued when its backoff ends.
    Wait,
    /// `max_attempts` or `max_age` used up: marked exhausted and kept.
    Exhaust,
    /// Deleted now (a purge policy, or `on_exhausted = "purge"`).
    Purge,
    /// Deleted once `purge_after` has passed.
    PurgeLater,
    /// An `ignore` policy matches.
    Ignore,
    /// No policy matches.
    Unmatched,
    /// RQ marks it stopped: never retried automatically.
    Stopped,
    /// Its last run succeeded: never retried automatically.
    Succeeded,
    /// Due, but held back by its policy's `hold_when` (running policies only: the daemon
    /// knows the target queue's condition).
    Held,
    /// Cannot be decoded: never acted on, whatever the policies.
    Undecodable,
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::RetryNow,
        Outcome::Wait,
        Outcome::Exhaust,
        Outcome::Purge,
        Outcome::PurgeLater,
        Outcome::Ignore,
        Outcome::Unmatched,
        Outcome::Stopped,
        Outcome::Succeeded,
        Outcome::Held,
        Outcome::Undecodable,
    ];

    /// What a decision does to the job.
    pub fn of(decision: &Decision) -> Outcome {
        match decision {
            Decision::RequeueNow { .. } => Outcome::RetryNow,
            Decision::RequeueAt { .. } => Outcome::Wait,
            Decision::PurgeNow { .. } => Outcome::Purge,
            Decision::PurgeAt { .. } => Outcome::PurgeLater,
            Decision::MarkExhausted | Decision::Exhausted => Outcome::Exhaust,
            Decision::Ignore => Outcome::Ignore,
            Decision::Unmatched => Outcome::Unmatched,
            Decision::Stopped => Outcome::Stopped,
            Decision::Succeeded { .. } => Outcome::Succeeded,
        }
    }

    /// As JSON and the CLI name it.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::RetryNow => "retry_now",
            Outcome::Wait => "wait",
            Outcome::Exhaust => "exhaust",
            Outcome::Purge => "purge",
            Outcome::PurgeLater => "purge_later",
            Outcome::Ignore => "ignore",
            Outcome::Unmatched => "unmatched",
            Outcome::Stopped => "stopped",
            Outcome::Succeeded => "succeeded",
            Outcome::Held => "held",
            Outcome::Undecodable => "undecodable",
        }
    }
}

/// A fact the candidate's decision on a job depends on that the failure index does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    /// The function name was not read (no running policy needed it).
    Function,
    /// The exception type was not read (no running policy needed it).
    Exception,
    /// An `error_pattern` looks into the traceback, which the index does not keep.
    Traceback,
    /// A `meta` pattern looks into `job.meta`, which the index does not keep.
    Meta,
    /// A `max_age` counts from `created_at`, which the index does not keep.
    CreatedAt,
    /// Whether RQ marks the job stopped or its last run succeeded (a retry policy, or none,
    /// leaves those to the operator) was not established by a running purge or ignore policy.
    RqStatus,
    /// Whether the policy's `hold_when` holds the due requeue back: the target queue's
    /// workers and length were not read.
    Hold,
}

impl Unknown {
    pub const ALL: [Unknown; 7] = [
        Unknown::Function,
        Unknown::Exception,
        Unknown::Traceback,
        Unknown::Meta,
        Unknown::CreatedAt,
        Unknown::RqStatus,
        Unknown::Hold,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Unknown::Function => "function",
            Unknown::Exception => "exception",
            Unknown::Traceback => "traceback",
            Unknown::Meta => "meta",
            Unknown::CreatedAt => "created_at",
            Unknown::RqStatus => "rq_status",
            Unknown::Hold => "hold",
        }
    }
}

/// What the candidate file does with one job: an outcome under one of its policies (`None`:
/// no policy), or not known because of a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Decided {
        outcome: Outcome,
        policy: Option<usize>,
    },
    Uncertain(Unknown),
}

/// A group's names as the answer shows them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupLabel {
    pub queue: String,
    /// `None`: none, or not known (then `known` is false).
    pub function: Option<String>,
    pub exception: Option<String>,
    pub known: bool,
}

/// The sums of one group while jobs are added.
#[derive(Debug, Clone, Default)]
struct GroupSums {
    jobs: u64,
    running: [u64; Outcome::ALL.len()],
    candidate: [u64; Outcome::ALL.len()],
    uncertain: [u64; Unknown::ALL.len()],
    /// (running, candidate) → jobs, for the jobs whose outcome changes.
    moves: Counts<(Outcome, Outcome)>,
    /// (candidate policy index (`None`: no policy), its outcome) → jobs.
    policies: Counts<(Option<usize>, Outcome)>,
}

/// A few keys' counts, found by a scan: a group's jobs fall on a handful of (policy, outcome)
/// and (running, candidate) pairs, and a map's lookup per job was most of a what-if's time
/// at 5M (with SipHash, then with foldhash).
#[derive(Debug, Clone)]
struct Counts<K>(Vec<(K, u64)>);

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts(Vec::new())
    }
}

impl<K: PartialEq> Counts<K> {
    fn add(&mut self, key: K, n: u64) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, count)) => *count += n,
            None => self.0.push((key, n)),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &u64)> {
        self.0.iter().map(|(k, n)| (k, n))
    }
}

/// Jobs added one by one, summed per group (`K`: how the source names a group).
#[derive(Debug)]
pub struct Tally<K> {
    groups: HashMap<K, GroupSums>,
}

impl<K: Hash + Eq> Default for Tally<K> {
    fn default() -> Self {
        Tally {
            groups: HashMap::new(),
        }
    }
}

impl GroupSums {
    /// Adds another part's sums of the same group.
    fn merge(&mut self, other: GroupSums) {
        self.jobs += other.jobs;
        let add = |sums: &mut [u64], more: &[u64]| {
            for (sum, n) in sums.iter_mut().zip(more) {
                *sum += n;
            }
        };
        add(&mut self.running, &other.running);
        add(&mut self.candidate, &other.candidate);
        add(&mut self.uncertain, &other.uncertain);
        for (key, n) in other.moves.0 {
            self.moves.add(key, n);
        }
        for (key, n) in other.policies.0 {
            self.policies.add(key, n);
        }
    }

    /// One job: what the running policies do with it and what the candidate does.
    fn add(&mut self, running: Outcome, candidate: Verdict) {
        self.jobs += 1;
        self.running[running as usize] += 1;
        match candidate {
            Verdict::Decided { outcome, policy } => {
                self.candidate[outcome as usize] += 1;
                self.policies.add((policy, outcome), 1);
                if outcome != running {
                    self.moves.add((running, outcome), 1);
                }
            }
            Verdict::Uncertain(fact) => self.uncertain[fact as usize] += 1,
        }
    }
}

impl<K: Hash + Eq> Tally<K> {
    /// Adds another tally's groups (of the same source).
    pub fn merge(&mut self, other: Tally<K>) {
        for (key, sums) in other.groups {
            self.groups.entry(key).or_default().merge(sums);
        }
    }

    /// One job of group `key`: what the running policies do with it and what the candidate
    /// does.
    pub fn add(&mut self, key: K, running: Outcome, candidate: Verdict) {
        self.groups.entry(key).or_default().add(running, candidate);
    }

    /// Adds one group's sums gathered elsewhere.
    fn add_sums(&mut self, key: K, sums: GroupSums) {
        self.groups.entry(key).or_default().merge(sums);
    }
}

impl Tally<GroupLabel> {
    /// One job read whole (every fact known): both files decide it exactly, a due requeue
    /// held back when its policy's `hold_when` holds in `worlds`.
    pub fn add_facts(
        &mut self,
        job: &JobFacts,
        (running, candidate): (&[Policy], &[Policy]),
        worlds: &QueueWorlds,
        now: DateTime<Utc>,
    ) {
        let label = GroupLabel {
            queue: job.queue.clone(),
            function: job.func_name.clone(),
            exception: job.exc_type().map(str::to_string),
            known: true,
        };
        let was = policy::decide(running, job, now);
        let was = match held(&was, &job.origin, worlds) {
            Ok(outcome) => outcome,
            Err(_) => Outcome::of(&was.decision),
        };
        let evaluation = policy::decide(candidate, job, now);
        let policy = evaluation
            .policy
            .and_then(|p| candidate.iter().position(|c| std::ptr::eq(c, p)));
        let verdict = match held(&evaluation, &job.origin, worlds) {
            Ok(outcome) => Verdict::Decided { outcome, policy },
            Err(fact) => Verdict::Uncertain(fact),
        };
        self.add(label, was, verdict);
    }

    /// A job that cannot be decoded: undecodable under any policies.
    pub fn add_undecodable(&mut self, queue: &str) {
        let label = GroupLabel {
            queue: queue.to_string(),
            function: None,
            exception: None,
            known: false,
        };
        let verdict = Verdict::Decided {
            outcome: Outcome::Undecodable,
            policy: None,
        };
        self.add(label, Outcome::Undecodable, verdict);
    }
}

/// The outcome of `evaluation` for a job of queue `origin`: `held` instead of `retry_now` when
/// the deciding policy's `hold_when` holds in `worlds`.
fn held(
    evaluation: &policy::Evaluation<'_>,
    origin: &str,
    worlds: &QueueWorlds,
) -> Result<Outcome, Unknown> {
    match (Outcome::of(&evaluation.decision), evaluation.policy) {
        (Outcome::RetryNow, Some(p)) if worlds.holds(&p.action, origin)? => Ok(Outcome::Held),
        (outcome, _) => Ok(outcome),
    }
}

#[cfg(test)]
mod tests;
