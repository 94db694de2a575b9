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

use crate::executor::{Attribution, Outcome, Write, WriteKind, Writer};
use crate::index::events::IndexEvent;
use crate::index::LiveIndex;
use crate::metrics::{Metrics, StateGauge, Trigger};
use crate::state::Snapshot;

/// Who acts, and why, for the log and the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// `supervisor`, or the operator (token name and client address).
    pub who: &'a str,
    /// Why, in the audit: the route of a manual action; `None` for automatic writes, whose
    /// why is each write's policy.
    pub route: Option<&'a str>,
    pub trigger: Trigger,
    /// What the write scripts' gate is told about the writer.
    pub writer: Writer<'a>,
    /// The failure index to keep current (read-your-writes), if this process keeps one.
    pub index: Option<&'a LiveIndex>,
    /// This instance's name, which the other instances' indexes learn the writes under
    /// ([`IndexEvent`]).
    pub instance: &'a str,
}

/// A write and the decision it carries out (`manual` for an operator's action), for the log.
#[derive(Debug, Clone)]
pub struct Planned {
    pub write: Write,
    pub decision: &'static str,
}

impl Actor<'_> {
    /// Performs `planned` (audited as this actor, by the scripts themselves) and returns one
    /// outcome per write, in order, after counting and logging them.
    pub async fn act<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        snap: &Snapshot,
        metrics: &Metrics,
        planned: &[Planned],
    ) -> RedisResult<Vec<Outcome>> {
        let requeues = planned
            .iter()
            .filter(|p| matches!(p.write.kind, WriteKind::Requeue { .. }))
            .count() as u32;
        snap.limiter.acquire(requeues).await;
        let writes: Vec<Write> = planned.iter().map(|p| p.write.clone()).collect();
        let outcomes = snap
            .executor
            .apply_attributed(
                con,
                &writes,
                Utc::now(),
                self.writer,
                Attribution {
                    who: self.who,
                    route: self.route,
                },
            )
            .await?;
        for (p, outcome) in planned.iter().zip(&outcomes) {
            self.record(metrics, p, outcome);
        }
        let gone: Vec<(&Write, &Outcome)> = writes
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| {
                matches!(
                    o,
                    Outcome::Requeued
                        | Outcome::Purged
                        | Outcome::JobMissing
                        | Outcome::NotInRegistry
                )
            })
            .collect();
        let marked: Vec<&Write> = writes
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| matches!(o, Outcome::MarkedExhausted | Outcome::AlreadyExhausted))
            .map(|(w, _)| w)
            .collect();
        if let Some(index) = self.index {
            let was = index.remove_all(
                gone.iter()
                    .map(|(w, _)| (w.queue.as_str(), w.job_id.as_str())),
            );
            // The gauges follow an operator's action at once (the scans' own writes are
            // counted by the scan that makes them).
            if self.trigger == Trigger::Manual {
                for ((w, outcome), state) in gone.iter().zip(was) {
                    let Some(state) = state else { continue };
                    let requeued_to =
                        matches!(outcome, Outcome::Requeued).then_some(w.origin.as_str());
                    metrics.job_left_registry(&w.queue, StateGauge::of(state), requeued_to);
                }
            }
            index.mark_exhausted_all(marked.iter().map(|w| (w.queue.as_str(), w.job_id.as_str())));
        }
        let pair = |w: &Write| (w.queue.clone(), w.job_id.clone(), w.failed_at);
        let event = IndexEvent {
            from: self.instance.to_string(),
            gone: gone.iter().map(|(w, _)| pair(w)).collect(),
            exhausted: marked.iter().map(|w| pair(w)).collect(),
        };
        self.announce(con, snap, &event).await;
        Ok(outcomes)
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
    fn record(&self, metrics: &Metrics, p: &Planned, outcome: &Outcome) {
        let w = &p.write;
        match outcome {
            Outcome::Requeued => metrics.requeued(&w.queue, w.author.name(), self.trigger),
            Outcome::Purged => metrics.purged(&w.queue, w.author.name(), self.trigger),
            Outcome::Refused(refusal) => {
                error!(job_id = %w.job_id, queue = %w.queue, key = %refusal.key, reason = refusal.reason.name(), decision = p.decision, who = self.who, "write refused before any change: {refusal}; job left exactly as it was");
                return;
            }
            Outcome::Error(message) => {
                error!(job_id = %w.job_id, queue = %w.queue, error = %message, decision = p.decision, who = self.who, "write refused by Redis before any change; job left exactly as it was");
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
        let message = match self.trigger {
            Trigger::Auto => "action",
            Trigger::Manual => "manual action",
        };
        info!(
            job_id = %w.job_id,
            queue = %w.queue,
            origin = %w.origin,
            policy = %w.author.name(),
            attempt,
            decision = p.decision,
            outcome = outcome.name(),
            trigger = self.trigger.as_str(),
            who = self.who,
            route = self.route,
            "{message}"
        );
    }
}
