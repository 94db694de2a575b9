//! The policy engine: pure code. Job facts and a clock go in, a [`Decision`] comes out.
//!
//! Policies are evaluated in order and the first that matches decides; [`evaluate`] also keeps
//! why every earlier policy did not match, which is what `explain` prints.

mod backoff;
mod matching;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use backoff::{Backoff, MAX_DELAY};
pub use matching::{Matcher, MetaFound, MetaPattern, Mismatch};

use crate::rq::{JobFacts, Reads};

/// One `[[policy]]` from the config, compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub matcher: Matcher,
    pub action: Action,
}

/// What a policy does with the jobs it matches.
#[derive(Debug, Clone)]
pub enum Action {
    Retry(RetrySpec),
    /// Delete the job once it has been failed for `after`.
    Purge {
        after: Duration,
    },
    /// Leave the job where it is (and stop evaluating later policies).
    Ignore,
}

/// The parameters of a retry policy.
#[derive(Debug, Clone)]
pub struct RetrySpec {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub at_front: bool,
    pub on_exhausted: OnExhausted,
    /// When most requeues fail again, stop requeueing for a while (`None`: never).
    pub circuit_breaker: Option<BreakerSpec>,
    /// Give up once the job is this old since RQ created it (`created_at`), whatever attempts
    /// remain (`None`: no limit). See [`exhaustion`].
    pub max_age: Option<Duration>,
    /// Requeue into this queue instead of the job's origin (`origin` follows), e.g. a slow
    /// lane for retries (`None`: the job's origin).
    pub requeue_to: Option<String>,
    /// When not to requeue automatically into the target queue (`None`: always requeue).
    pub hold_when: Option<HoldWhen>,
}

/// A retry policy's `hold_when`: conditions of the target queue under which a due requeue is
/// held (state `held`) until they clear. Operators' manual retries only warn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HoldWhen {
    /// Hold while no live RQ worker listens to the target queue.
    pub no_workers: bool,
    /// Hold while the target queue holds more than this many jobs.
    pub queue_longer_than: Option<u64>,
}

impl HoldWhen {
    /// As `check-config` and the policies API show it: `no_workers|queue_longer_than=N`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.no_workers {
            parts.push("no_workers".to_string());
        }
        if let Some(n) = self.queue_longer_than {
            parts.push(format!("queue_longer_than={n}"));
        }
        parts.join("|")
    }
}

impl RetrySpec {
    /// The queue a requeue of `job` under this policy goes to.
    pub fn target_queue<'a>(&'a self, job: &'a JobFacts) -> &'a str {
        self.requeue_to.as_deref().unwrap_or(&job.origin)
    }
}

/// A retry policy's circuit breaker: open when at least `min_requeues` requeues happened in
/// `window` and the share of them that failed again reaches `threshold`; stay open `cool_down`.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSpec {
    pub window: Duration,
    pub threshold: f64,
    pub min_requeues: usize,
    pub cool_down: Duration,
}

impl Default for BreakerSpec {
    /// 90% of at least 20 requeues failing again within 10 minutes opens it for 10 minutes.
    fn default() -> BreakerSpec {
        BreakerSpec {
            window: Duration::from_secs(600),
            threshold: 0.9,
            min_requeues: 20,
            cool_down: Duration::from_secs(600),
        }
    }
}

/// What happens when a job has used up `max_attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExhausted {
    /// Leave it in the failed registry, marked `retryd_exhausted = "1"`.
    Keep,
    /// Delete it.
    Purge,
}

impl Action {
    /// Whether a job this action decides on may be deleted (now or when it is used up).
    pub fn may_delete(&self) -> bool {
        match self {
            Action::Purge { .. } => true,
            Action::Retry(spec) => spec.on_exhausted == OnExhausted::Purge,
            Action::Ignore => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Retry(_) => "retry",
            Action::Purge { .. } => "purge",
            Action::Ignore => "ignore",
        }
    }
}

/// The decision for one failed job at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Requeue now; `attempt` is the attempt number this requeue becomes (1 for the first).
    RequeueNow { attempt: u32, at_front: bool },
    /// Requeue when the backoff ends.
    RequeueAt { due: DateTime<Utc>, attempt: u32 },
    /// Delete now; `exhausted` when it is `on_exhausted = "purge"` rather than a purge policy.
    PurgeNow { exhausted: bool },
    /// Delete once `purge_after` has passed.
    PurgeAt { due: DateTime<Utc> },
    /// `max_attempts` is used up and the job is not marked yet: mark it `retryd_exhausted`.
    MarkExhausted,
    /// Used up and already marked: nothing to do.
    Exhausted,
    /// An `ignore` policy matched.
    Ignore,
    /// No policy matched: the job is left alone.
    Unmatched,
    /// RQ marks the job stopped (an operator stopped it): never retried automatically, left
    /// to the operator. What a retry policy (or none) decides; purge and ignore policies
    /// apply as to any job.
    Stopped,
    /// The job's last run succeeded (RQ's results; rq/rq#2424): never retried automatically,
    /// left to the operator. Decided like [`Decision::Stopped`].
    Succeeded { at: DateTime<Utc> },
}

impl Decision {
    /// A stable lowercase name, used in logs, JSON and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::RequeueNow { .. } => "requeue_now",
            Decision::RequeueAt { .. } => "wait",
            Decision::PurgeNow { .. } => "purge",
            Decision::PurgeAt { .. } => "wait_purge",
            Decision::MarkExhausted => "mark_exhausted",
            Decision::Exhausted => "exhausted",
            Decision::Ignore => "ignore",
            Decision::Unmatched => "unmatched",
            Decision::Stopped => "stopped",
            Decision::Succeeded { .. } => "succeeded",
        }
    }

    /// When the job next needs attention, if that is in the future.
    pub fn due(&self) -> Option<DateTime<Utc>> {
        match self {
            Decision::RequeueAt { due, .. } | Decision::PurgeAt { due } => Some(*due),
            _ => None,
        }
    }
}

/// A decision together with the policy that made it and why earlier policies did not match.
#[derive(Debug, Clone)]
pub struct Evaluation<'p> {
    pub decision: Decision,
    pub policy: Option<&'p Policy>,
    pub misses: Vec<(&'p str, Mismatch)>,
}

/// What a scan of `queue`'s failed registry must read for [`decide`] to see everything the
/// policies can look at: the function only if a policy that may be reached matches on it, the
/// failure text only if one matches on the exception or the traceback, `meta` only if one
/// matches on it. Evaluation never gets
/// past a policy that matches every job of the queue, so nothing after it counts. Decisions on
/// facts read this way equal decisions on everything (a property test checks it); tracebacks,
/// often the biggest part of a failed job, are then not read at all for queue-wide retries.
/// A policy that may delete reads everything: a job is only ever deleted once all of it
/// decoded, so a corrupt one stays for someone to look at.
pub fn reads_for(policies: &[Policy], queue: &str) -> Reads {
    let mut reads = Reads::DECISION;
    for policy in policies {
        let m = &policy.matcher;
        if m.queues.as_ref().is_some_and(|q| !q.is_match(queue)) {
            continue;
        }
        if policy.action.may_delete() {
            return Reads::ALL;
        }
        let on_failure = m.exceptions.is_some() || m.error_pattern.is_some();
        reads.function |= m.functions.is_some();
        reads.failure |= on_failure;
        reads.meta |= m.meta.is_some();
        if m.functions.is_none() && !on_failure && m.meta.is_none() {
            break;
        }
    }
    reads
}

/// Decides what to do with `job` at `now`: the first matching policy wins.
pub fn decide<'p>(policies: &'p [Policy], job: &JobFacts, now: DateTime<Utc>) -> Evaluation<'p> {
    evaluate(policies, job, now, false)
}

/// Like [`decide`], and keeps every mismatch on the way (for `explain`).
pub fn explain<'p>(policies: &'p [Policy], job: &JobFacts, now: DateTime<Utc>) -> Evaluation<'p> {
    evaluate(policies, job, now, true)
}

fn evaluate<'p>(
    policies: &'p [Policy],
    job: &JobFacts,
    now: DateTime<Utc>,
    keep_misses: bool,
) -> Evaluation<'p> {
    let mut misses = Vec::new();
    for policy in policies {
        match policy.matcher.check(job) {
            Ok(()) => {
                let decision = apply(&policy.action, job, now);
                return Evaluation {
                    decision,
                    policy: Some(policy),
                    misses,
                };
            }
            Err(miss) if keep_misses => misses.push((policy.name.as_str(), miss)),
            Err(_) => {}
        }
    }
    Evaluation {
        decision: left_to_operator(job).unwrap_or(Decision::Unmatched),
        policy: None,
        misses,
    }
}

/// What a job that must never be retried automatically gets instead of a retry policy's
/// decision (or none): it was stopped by an operator, or its last run succeeded. `None` for
/// every other job. See: issue 21, items 2 and 6.
fn left_to_operator(job: &JobFacts) -> Option<Decision> {
    if job.stopped() {
        return Some(Decision::Stopped);
    }
    job.succeeded_at.map(|at| Decision::Succeeded { at })
}

/// What `action` decides for `job` at `now`, once its policy matched (the what-if of a
/// candidate policy file applies actions to what the failure index knows).
pub fn apply(action: &Action, job: &JobFacts, now: DateTime<Utc>) -> Decision {
    match action {
        Action::Ignore => Decision::Ignore,
        Action::Purge { after } => {
            let due = add(job.failed_at, *after);
            if due <= now {
                Decision::PurgeNow { exhausted: false }
            } else {
                Decision::PurgeAt { due }
            }
        }
        Action::Retry(spec) => {
            // Neither requeued, nor marked exhausted, nor purged on_exhausted.
            if let Some(decision) = left_to_operator(job) {
                return decision;
            }
            if exhaustion(spec, job, now).is_some() {
                return match (spec.on_exhausted, job.exhausted) {
                    (OnExhausted::Purge, _) => Decision::PurgeNow { exhausted: true },
                    (OnExhausted::Keep, true) => Decision::Exhausted,
                    (OnExhausted::Keep, false) => Decision::MarkExhausted,
                };
            }
            let attempt = job.attempts + 1;
            let due = next_retry_at(spec, job);
            if due <= now {
                Decision::RequeueNow {
                    attempt,
                    at_front: spec.at_front,
                }
            } else {
                Decision::RequeueAt { due, attempt }
            }
        }
    }
}

/// Why a retry policy gives a job up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhaustion {
    /// `max_attempts` requeues have been made.
    Attempts,
    /// The job is `max_age` old: `created_at + max_age` (`deadline`) has passed.
    MaxAge { deadline: DateTime<Utc> },
    /// The next retry would be due after the deadline (`created_at + max_age`), so it is given
    /// up as soon as that is known rather than kept waiting for a retry that cannot happen.
    NextRetryTooLate {
        deadline: DateTime<Utc>,
        due: DateTime<Utc>,
    },
}

/// Whether `spec` gives `job` up at `now`, and why. `max_age` counts from RQ's `created_at`;
/// a job without a readable one is never given up because of `max_age` (explain says so).
pub fn exhaustion(spec: &RetrySpec, job: &JobFacts, now: DateTime<Utc>) -> Option<Exhaustion> {
    if job.attempts >= spec.max_attempts {
        return Some(Exhaustion::Attempts);
    }
    let deadline = add(job.created_at?, spec.max_age?);
    if now >= deadline {
        return Some(Exhaustion::MaxAge { deadline });
    }
    let due = next_retry_at(spec, job);
    (due > deadline).then_some(Exhaustion::NextRetryTooLate { deadline, due })
}

/// When the next automatic requeue of this failure is due: `ended_at + delay(retryd_attempts)`.
pub fn next_retry_at(spec: &RetrySpec, job: &JobFacts) -> DateTime<Utc> {
    add(job.failed_at, spec.backoff.delay(&job.job_id, job.attempts))
}

fn add(at: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    let delta = chrono::Duration::from_std(delay.min(MAX_DELAY)).unwrap_or(chrono::Duration::MAX);
    at.checked_add_signed(delta)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests;
