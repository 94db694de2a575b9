//! The write a waiting job gets when its wait ends, remembered with its verdict so that the
//! due-time pass writes without reading the job again. In a failure storm that re-read (an
//! HMGET, an XREVRANGE and two ZMSCOREs per due job) was about 1.5 of the daemon's 11 Redis
//! commands per failure (issue 24, item 2).
//!
//! Not reading loses nothing: the write script checks, before its first write, the same facts
//! the read would have decided on (still in the failed registry; origin, `ended_at` and
//! `retryd_attempts` unchanged: the compare-and-set), and a policy's requeue also checks
//! whether RQ marks the job stopped or its last run succeeded. A job the write finds changed
//! or gone is read and decided again at once (`Supervisor::process_due`), as it was before.
//!
//! Three bytes per remembered job, so the decision memory's entry stays 32 bytes (issue 24,
//! item 3 wants one small entry per job). What three bytes cannot describe gets no plan and
//! is read at due time as before: a failure without `ended_at` (two of them cannot be told
//! apart by the compare-and-set), an `origin` other than the registry's queue, more than 254
//! attempts, a policy beyond the 256th, a retry policy with `max_age` (which may give the
//! job up by the time it is due) and one with `hold_when` (a held job must be found gone from
//! its registry before it is held again, which only the read does).

use chrono::{DateTime, Utc};

use crate::executor::{Author, Write, WriteKind};
use crate::policy::{Action, Decision, Policy};
use crate::rq::job::{format_rq_timestamp, is_rq_timestamp_of};
use crate::rq::CasToken;

/// Which write a plan makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlanKind {
    /// A retry policy's requeue (the next attempt).
    Requeue,
    /// A purge policy's delete once `purge_after` has passed.
    Purge,
}

/// What a waiting job's due write needs beyond what the decision memory holds anyway (queue,
/// id, failure time): the rest is the config's, which the memory is only valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    kind: PlanKind,
    /// The deciding policy's position in the config's policies.
    policy: u8,
    /// `retryd_attempts` as read; [`UNSET`] when the job had none.
    attempts: u8,
}

/// `retryd_attempts` was not set (the compare expects the field absent, not "0").
const UNSET: u8 = u8::MAX;

impl Plan {
    /// The plan that makes `write` (the write a waiting job will need, or a held one's), if
    /// three bytes can describe it exactly: rebuilding it gives the same write.
    pub fn of(policies: &[Policy], write: &Write) -> Option<Plan> {
        let Author::Policy(name) = &write.author else {
            return None;
        };
        let position = policies.iter().position(|p| &p.name == name)?;
        let policy = u8::try_from(position).ok()?;
        let cas = &write.cas;
        if cas.origin != write.queue || cas.ended_at.is_empty() {
            return None;
        }
        if !is_rq_timestamp_of(&cas.ended_at, write.failed_at) {
            return None;
        }
        let attempts = match cas.attempts.as_str() {
            "" => UNSET,
            text => text.parse::<u8>().ok().filter(|n| *n != UNSET)?,
        };
        let plan = Plan {
            kind: match write.kind {
                WriteKind::Requeue { .. } => PlanKind::Requeue,
                WriteKind::Purge => PlanKind::Purge,
                WriteKind::MarkExhausted => return None,
            },
            policy,
            attempts,
        };
        let (rebuilt, _) = plan.write(policies, &write.queue, &write.job_id, write.failed_at)?;
        let same = rebuilt.origin == write.origin
            && rebuilt.cas == write.cas
            && rebuilt.kind == write.kind;
        same.then_some(plan)
    }

    /// The write (and the decision it carries out) for the job `job_id` of `queue`'s failed
    /// registry, which failed at `failed_at`, under `policies` (the config the plan was made
    /// under). `None` when the policy no longer fits the plan.
    pub fn write(
        self,
        policies: &[Policy],
        queue: &str,
        job_id: &str,
        failed_at: DateTime<Utc>,
    ) -> Option<(Write, Decision)> {
        let policy = policies.get(usize::from(self.policy))?;
        let (kind, decision, origin) = match (self.kind, &policy.action) {
            (PlanKind::Requeue, Action::Retry(spec))
                if spec.max_age.is_none() && spec.hold_when.is_none() =>
            {
                let attempt = u32::from(self.attempts_read()) + 1;
                let kind = WriteKind::Requeue {
                    attempt: Some(attempt),
                    at_front: spec.at_front,
                };
                let decision = Decision::RequeueNow {
                    attempt,
                    at_front: spec.at_front,
                };
                (kind, decision, spec.requeue_to.as_deref().unwrap_or(queue))
            }
            (PlanKind::Purge, Action::Purge { .. }) => (
                WriteKind::Purge,
                Decision::PurgeNow { exhausted: false },
                queue,
            ),
            _ => return None,
        };
        let write = Write {
            job_id: job_id.to_string(),
            queue: queue.to_string(),
            origin: origin.to_string(),
            cas: CasToken {
                origin: queue.to_string(),
                ended_at: format_rq_timestamp(failed_at),
                attempts: match self.attempts {
                    UNSET => String::new(),
                    n => n.to_string(),
                },
            },
            failed_at,
            author: Author::Policy(policy.name.clone()),
            kind,
        };
        Some((write, decision))
    }

    /// The attempts made so far (none when the field was unset).
    fn attempts_read(self) -> u8 {
        if self.attempts == UNSET {
            0
        } else {
            self.attempts
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
