//! One path from a decision to a write, for the scan loop and the HTTP handlers alike: the
//! requeue rate limit, the executor (through the gate of the shared switches and the lease; each
//! script call appends its own audit entry in the same atomic step as its writes, attributed to
//! this actor), then per outcome the metrics and one log line. What differs between the
//! callers — how they count, what they answer — stays with them; what must not differ (a write
//! that is logged, counted and audited exactly as it happened) is here once.

use chrono::Utc;
use redis::aio::ConnectionLike;
use redis::RedisResult;
use tracing::{error, info, warn};

use crate::executor::{Attribution, Author, Meaning, Outcome, Write, WriteKind, Writer};
use crate::index::events::IndexEvent;
use crate::index::LiveIndex;
use crate::metrics::{Metrics, StateGauge, Trigger};
use crate::policy::Decision;
use crate::rq::JobFacts;
use crate::state::Snapshot;

/// Who acts, and why, for the log and the audit trail. Built by [`Actor::operator`] or
/// [`Actor::supervisor`], so that who acts and what the gate is told always agree.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// `supervisor`, or the operator (token name and client address).
    who: &'a str,
    /// Why, in the audit: the route of a manual action; `None` for automatic writes, whose
    /// why is each write's policy.
    route: Option<&'a str>,
    /// What the write scripts' gate is told about the writer; it also says whether this is a
    /// manual action ([`Writer::Manual`]) for the metrics and the log.
    writer: Writer<'a>,
    /// The failure index to keep current (read-your-writes), if this process keeps one.
    index: Option<&'a LiveIndex>,
    /// This instance's name, which the other instances' indexes learn the writes under
    /// ([`IndexEvent`]).
    instance: &'a str,
}

/// The decision a write carries out: a policy's, or an operator's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// What a policy decided for the job (the scan loop).
    ByPolicy(Decision),
    /// An operator's action through the API.
    ByOperator,
}

impl Decided {
    /// The decision's name in the log: the policy decision's, or `manual`.
    pub fn name(&self) -> &'static str {
        match self {
            Decided::ByPolicy(decision) => decision.name(),
            Decided::ByOperator => crate::config::MANUAL,
        }
    }
}

/// A write and the decision it carries out, for the log.
#[derive(Debug, Clone)]
pub struct Planned {
    pub write: Write,
    pub decision: Decided,
}

impl Planned {
    /// An operator's write of `kind` on the failure `facts` describes.
    pub fn manual(facts: &JobFacts, kind: WriteKind) -> Planned {
        Planned {
            write: Write::of(facts, Author::Operator, kind),
            decision: Decided::ByOperator,
        }
    }

    /// A write that carries out a policy's `decision`.
    pub fn decided(write: Write, decision: Decision) -> Planned {
        Planned {
            write,
            decision: Decided::ByPolicy(decision),
        }
    }
}

/// A planned write and what came of it, together, so that callers need not zip lists.
#[derive(Debug, Clone)]
pub struct Settled {
    pub write: Write,
    pub decision: Decided,
    pub outcome: Outcome,
}

impl Settled {
    /// What the outcome means to the caller.
    pub fn meaning(&self) -> Meaning {
        self.outcome.meaning()
    }

    /// Whether the job left its failed registry (by this write or before it): the index
    /// drops it.
    fn left_registry(&self) -> bool {
        match self.meaning() {
            Meaning::Done => !matches!(self.write.kind, WriteKind::MarkExhausted),
            Meaning::Gone => true,
            _ => false,
        }
    }

    /// Whether the job is marked exhausted now (by this write or before it).
    fn marked_exhausted(&self) -> bool {
        self.meaning() == Meaning::Done && matches!(self.write.kind, WriteKind::MarkExhausted)
    }
}

impl<'a> Actor<'a> {
    /// An operator's action through the API, by `who` on `route`: passes the gate whatever
    /// the pause switch and the lease say, and keeps this process's `index` current.
    pub fn operator(
        who: &'a str,
        route: &'a str,
        index: &'a LiveIndex,
        instance: &'a str,
    ) -> Actor<'a> {
        Actor {
            who,
            route: Some(route),
            writer: Writer::Manual,
            index: Some(index),
            instance,
        }
    }

    /// The scan loop's automatic writes: under this instance's lease when `leased` (the
    /// lease token is the instance's name), else stopped only by the pause switch.
    pub fn supervisor(instance: &'a str, leased: bool, index: Option<&'a LiveIndex>) -> Actor<'a> {
        Actor {
            who: "supervisor",
            route: None,
            writer: if leased {
                Writer::Leader(instance)
            } else {
                Writer::Automatic
            },
            index,
            instance,
        }
    }

    /// Manual for an operator's action, automatic for the scan loop's (the metrics' label).
    fn trigger(&self) -> Trigger {
        match self.writer {
            Writer::Manual => Trigger::Manual,
            Writer::Automatic | Writer::Leader(_) => Trigger::Auto,
        }
    }

    /// Performs `planned` (audited as this actor, by the scripts themselves) and returns each
    /// write with its outcome, in order, after counting and logging them.
    pub async fn act<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        metrics: &Metrics,
        planned: Vec<Planned>,
    ) -> RedisResult<Vec<Settled>> {
        let requeues = planned
            .iter()
            .filter(|p| matches!(p.write.kind, WriteKind::Requeue { .. }))
            .count() as u32;
        snap.limiter.acquire(requeues).await;
        let writes: Vec<Write> = planned.iter().map(|p| p.write.clone()).collect();
        let by = Attribution {
            who: self.who,
            route: self.route,
        };
        let outcomes = snap
            .executor
            .apply_attributed(con, &writes, Utc::now(), self.writer, by)
            .await?;
        let settled: Vec<Settled> = planned
            .into_iter()
            .zip(outcomes)
            .map(|(p, outcome)| Settled {
                write: p.write,
                decision: p.decision,
                outcome,
            })
            .collect();
        for s in &settled {
            self.record(metrics, s);
        }
        self.keep_index(metrics, &settled);
        let pair = |w: &Write| (w.queue.clone(), w.job_id.clone(), w.failed_at);
        let event = IndexEvent {
            from: self.instance.to_string(),
            gone: settled
                .iter()
                .filter(|s| s.left_registry())
                .map(|s| pair(&s.write))
                .collect(),
            exhausted: settled
                .iter()
                .filter(|s| s.marked_exhausted())
                .map(|s| pair(&s.write))
                .collect(),
        };
        self.announce(con, snap, &event).await;
        Ok(settled)
    }

    /// Keeps this process's index current with what the writes did (read-your-writes); for
    /// an operator's action, the per-queue gauges too (the scans' own writes are counted by
    /// the scan that makes them).
    fn keep_index(&self, metrics: &Metrics, settled: &[Settled]) {
        let Some(index) = self.index else { return };
        let gone: Vec<&Settled> = settled.iter().filter(|s| s.left_registry()).collect();
        let was = index.remove_all(
            gone.iter()
                .map(|s| (s.write.queue.as_str(), s.write.job_id.as_str())),
        );
        if self.trigger() == Trigger::Manual {
            for (s, state) in gone.iter().zip(was) {
                let Some(state) = state else { continue };
                let requeued_to =
                    matches!(s.outcome, Outcome::Requeued).then_some(s.write.origin.as_str());
                metrics.job_left_registry(&s.write.queue, StateGauge::of(state), requeued_to);
            }
        }
        index.mark_exhausted_all(
            settled
                .iter()
                .filter(|s| s.marked_exhausted())
                .map(|s| (s.write.queue.as_str(), s.write.job_id.as_str())),
        );
    }

    /// Tells the other instances' indexes what this batch took out of the failed registries
    /// (one PUBLISH; nothing when the batch changed nothing). A lost message is repaired by
    /// their next full scan, so a failure here is only logged.
    async fn announce<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        event: &IndexEvent,
    ) {
        if event.is_empty() {
            return;
        }
        let payload = match serde_json::to_vec(event) {
            Ok(p) => p,
            Err(e) => return warn!(error = %e, "cannot encode the index event"),
        };
        let sent: RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(snap.registry.keys().retryd_index_events())
            .arg(payload)
            .query_async(con)
            .await;
        if let Err(e) = sent {
            warn!(error = %e, "cannot announce written jobs to the other instances; their next full scan catches up");
        }
    }

    /// The metrics and the log line of one outcome.
    fn record(&self, metrics: &Metrics, s: &Settled) {
        let (w, outcome, decision) = (&s.write, &s.outcome, s.decision.name());
        let trigger = self.trigger();
        match outcome {
            Outcome::Requeued => metrics.requeued(&w.queue, w.author.name(), trigger),
            Outcome::Purged => metrics.purged(&w.queue, w.author.name(), trigger),
            Outcome::Refused(refusal) => {
                error!(job_id = %w.job_id, queue = %w.queue, key = %refusal.key, reason = refusal.reason.name(), decision, who = self.who, "write refused before any change: {refusal}; job left exactly as it was");
                return;
            }
            Outcome::Error(message) => {
                error!(job_id = %w.job_id, queue = %w.queue, error = %message, decision, who = self.who, "write refused by Redis before any change; job left exactly as it was");
                return;
            }
            // The gate held an automatic write back: the caller counts it, the next pass decides
            // again; one line per job here would flood the log during a pause.
            Outcome::Paused | Outcome::NotActive => return,
            _ => {}
        }
        let attempt = match w.kind {
            WriteKind::Requeue { attempt, .. } => attempt,
            _ => None,
        };
        let message = match trigger {
            Trigger::Auto => "action",
            Trigger::Manual => "manual action",
        };
        info!(
            job_id = %w.job_id,
            queue = %w.queue,
            origin = %w.origin,
            policy = %w.author.name(),
            attempt,
            decision,
            outcome = outcome.name(),
            trigger = trigger.as_str(),
            who = self.who,
            route = self.route,
            "{message}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rq::CasToken;

    fn settled(kind: WriteKind, outcome: Outcome) -> Settled {
        let write = Write {
            job_id: "j".into(),
            queue: "default".into(),
            origin: "default".into(),
            cas: CasToken {
                origin: "default".into(),
                ended_at: String::new(),
                attempts: String::new(),
            },
            failed_at: Utc::now(),
            author: Author::Operator,
            kind,
        };
        Settled {
            write,
            decision: Decided::ByOperator,
            outcome,
        }
    }

    #[test]
    fn an_operator_acts_manually_and_the_supervisor_automatically() {
        let index = LiveIndex::default();
        let operator = Actor::operator("ops@127.0.0.1", "/retry", &index, "a");
        assert_eq!(operator.writer, Writer::Manual);
        assert_eq!(operator.trigger(), Trigger::Manual);
        let leased = Actor::supervisor("a", true, None);
        assert_eq!(leased.writer, Writer::Leader("a"));
        assert_eq!(leased.trigger(), Trigger::Auto);
        let unleased = Actor::supervisor("a", false, None);
        assert_eq!(unleased.writer, Writer::Automatic);
        assert_eq!(unleased.trigger(), Trigger::Auto);
        assert_eq!(Decided::ByOperator.name(), "manual");
        assert_eq!(Trigger::Manual.as_str(), "manual");
    }

    #[test]
    fn the_index_drops_jobs_that_left_and_marks_jobs_exhausted() {
        let requeue = WriteKind::Requeue {
            attempt: None,
            at_front: false,
        };
        let left = [
            (requeue, Outcome::Requeued),
            (WriteKind::Purge, Outcome::Purged),
            (requeue, Outcome::NotInRegistry),
            (WriteKind::Purge, Outcome::JobMissing),
        ];
        for (kind, outcome) in left {
            let s = settled(kind, outcome);
            assert!(s.left_registry() && !s.marked_exhausted(), "{s:?}");
        }
        for outcome in [Outcome::MarkedExhausted, Outcome::AlreadyExhausted] {
            let s = settled(WriteKind::MarkExhausted, outcome);
            assert!(s.marked_exhausted() && !s.left_registry(), "{s:?}");
        }
        let stays = [Outcome::Changed, Outcome::Paused, Outcome::Stopped];
        for outcome in stays {
            let s = settled(requeue, outcome);
            assert!(!s.left_registry() && !s.marked_exhausted(), "{s:?}");
        }
    }
}
