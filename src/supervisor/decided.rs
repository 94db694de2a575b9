//! Requeues the script decides (issue 24, item 1): when a queue's deciding policy matches
//! every job of the queue and requeues at once, a batch's ids go to the requeue_due script
//! without a read first (see `executor/scripts/requeue_due.lua`); the jobs it leaves to the
//! client are read and decided as before. Only for a pass that does not feed the failure
//! index (`once`): the daemon's scans read every failure for the index anyway.

use redis::aio::ConnectionLike;
use redis::RedisResult;

use super::{note_age, Batch, Supervisor};
use crate::actions::Actor;
use crate::executor::DuePolicy;
use crate::policy::{reads_for, Action, Backoff, Policy};
use crate::rq::Reads;
use crate::state::Snapshot;

/// The policy the requeue_due script can decide for on `queue`: the first policy that applies
/// to the queue, when it matches every job there (nothing but `queues`) and is a retry that
/// requeues at once (a backoff of zero for every attempt, no max_age, no hold_when, no
/// requeue_to; its circuit breaker is asked per batch, see [`Supervisor::script_decides`]).
/// `None` for any other.
pub(super) fn due_policy<'p>(policies: &'p [Policy], queue: &str) -> Option<DuePolicy<'p>> {
    if reads_for(policies, queue) != Reads::DECISION {
        return None;
    }
    let policy = policies
        .iter()
        .find(|p| p.matcher.queues.as_ref().is_none_or(|q| q.is_match(queue)))?;
    let m = &policy.matcher;
    if m.functions.is_some()
        || m.exceptions.is_some()
        || m.error_pattern.is_some()
        || m.meta.is_some()
    {
        return None;
    }
    let Action::Retry(spec) = &policy.action else {
        return None;
    };
    let simple = spec.max_age.is_none()
        && spec.hold_when.is_none()
        && spec.requeue_to.is_none()
        && spec.max_attempts > 0
        && always_zero(&spec.backoff);
    simple.then_some(DuePolicy {
        name: &policy.name,
        max_attempts: spec.max_attempts,
        at_front: spec.at_front,
    })
}

/// Whether `backoff` waits zero for every attempt (whatever its jitter: a share of zero). Not
/// an exponential one from zero: zero times an overflowing power is no number, which
/// `Backoff::delay` makes its longest delay.
fn always_zero(backoff: &Backoff) -> bool {
    match backoff {
        Backoff::Fixed { delay, .. } => delay.is_zero(),
        Backoff::Linear { initial, step, .. } => initial.is_zero() && step.is_zero(),
        Backoff::Exponential { .. } => false,
    }
}

impl Supervisor {
    /// The policy the script decides for in this batch of `queue`, if this pass may let it:
    /// a pass that writes (not a dry run, not a standby's, not paused) and keeps no index, and
    /// a policy whose circuit breaker is not open.
    pub(super) fn script_decides<'s>(
        &self,
        snap: &'s Snapshot,
        queue: &str,
        batch: &Batch,
    ) -> Option<DuePolicy<'s>> {
        if self.indexing || batch.report.dry_run || batch.report.observe || self.state.is_paused() {
            return None;
        }
        let policy = due_policy(&snap.config.policies, queue)?;
        // An open circuit breaker holds the policy's requeues back: the client's path counts
        // them so (`hold_back`). Asked once per batch, as that path does.
        let allowed = self
            .state
            .breakers
            .lock()
            .expect("breakers lock")
            .allows(policy.name, chrono::Utc::now());
        allowed.then_some(policy)
    }

    /// Sends `ids` to the requeue_due script for `policy` and counts what it requeued in
    /// `batch` as the client's own decisions and writes would be counted. Returns the ids it
    /// left to the client.
    pub(super) async fn requeue_decided<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        queue: &str,
        ids: &[String],
        policy: &DuePolicy<'_>,
        batch: &mut Batch,
    ) -> RedisResult<Vec<String>> {
        let actor = Actor::supervisor(&self.state.instance, self.leased, None);
        let (settled, left) = actor
            .requeue_due(con, snap, &self.state.metrics, queue, ids, policy)
            .await?;
        let now = chrono::Utc::now();
        for s in &settled {
            batch.report.scanned += 1;
            note_age(&mut batch.report, queue, s.write.failed_at, now);
        }
        self.count_written(snap, &settled, batch);
        Ok(left)
    }
}
