//! What others remove is seen at once: a failed job requeued or deleted by RQ's CLI or API,
//! rq-dashboard, django-rq or a script leaves this instance's index (its listing, counts,
//! groups and dry-run counts) within a second, without walking the registry.
//!
//! Two triggers name the queues to look at: a keyspace notification of a removal from a failed
//! registry (`zrem`, `zremrangebyscore`, … see `notifications::removal_queue_of`), and, every
//! second, one pipelined `ZCOUNT` per indexed queue over the index's score range for it, which
//! differs from the index's count when something left that the index still holds (and also
//! works without notifications). Looking at a queue ([`Supervisor::reconcile`]) bisects the
//! score ranges whose counts differ (see [`crate::index::bisect`]) and reads only the small
//! ranges where the difference is, then drops the entries no longer there from the index and
//! the verdict memory. It runs on every instance: standbys keep their own index.
//!
//! See: issue 21, item 4.

use std::collections::HashMap;

use redis::aio::ConnectionLike;
use redis::RedisResult;

use super::{Supervisor, LIST_WINDOW};
use crate::index::bisect::Bisect;

/// Ranges of at most this many index entries are read exactly rather than halved: one read of
/// a few hundred members costs about what two more rounds of ZCOUNTs would.
pub const RECONCILE_LEAF: usize = 256;

/// What one reconcile of one queue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Index entries dropped (the job left the registry, or failed again since).
    pub dropped: usize,
    /// Registry members of the ranges read that the index does not hold as they are (new
    /// failures, for a pass over the queue to read).
    pub unknown: usize,
    /// Redis commands sent, and in how many round trips.
    pub commands: usize,
    pub round_trips: usize,
}

/// For each indexed queue, the registry's count over the index's score range minus the index's
/// count, as last settled: a registry may hold members the index never will (entries already
/// expired when scanned, ids that are not UTF-8), so only a change of the difference is news.
#[derive(Debug, Default)]
pub struct Settled(HashMap<String, i64>);

impl Supervisor {
    /// The queues whose registry count over the index's score range changed against the
    /// index's count since they were last settled: one pipelined ZCOUNT per indexed queue.
    pub async fn changed_registries<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
    ) -> RedisResult<Vec<String>> {
        let spans = self.state.index.queue_spans();
        let asks: Vec<(String, f64, f64)> = spans
            .iter()
            .map(|s| (s.queue.clone(), s.lo, s.hi))
            .collect();
        let snap = self.state.snapshot();
        let counts = snap.registry.count_by_score_each(con, &asks).await?;
        let mut settled = self.settled.lock().expect("settled lock");
        settled.0.retain(|q, _| spans.iter().any(|s| &s.queue == q));
        Ok(spans
            .into_iter()
            .zip(counts)
            .filter_map(|(span, count)| {
                // A registry of the wrong type is reported by the scans.
                let excess = count? as i64 - span.indexed as i64;
                (excess != settled.0.get(&span.queue).copied().unwrap_or(0)).then_some(span.queue)
            })
            .collect())
    }

    /// Drops from the index (and the verdict memory) the queue's failures that are no longer in
    /// its registry, reading only the score ranges where the registry's and the index's counts
    /// differ.
    pub async fn reconcile<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
    ) -> RedisResult<Reconciled> {
        let snap = self.state.snapshot();
        let mut out = Reconciled::default();
        let mut bisect = Bisect::new(self.state.index.scores_of(queue), RECONCILE_LEAF);
        while !bisect.is_done() {
            let ranges: Vec<(f64, f64)> = bisect.asking().iter().map(|s| (s.lo, s.hi)).collect();
            let counts = snap.registry.count_by_score(con, queue, &ranges).await?;
            out.commands += ranges.len();
            out.round_trips += 1;
            bisect.answer(&counts);
        }
        let mut present: Vec<(Vec<u8>, f64)> = Vec::new();
        for leaf in bisect.leaves() {
            let members = snap
                .registry
                .failed_by_score(con, queue, (leaf.lo, leaf.hi), LIST_WINDOW)
                .await?;
            out.commands += 1 + members.len() / LIST_WINDOW;
            out.round_trips += 1 + members.len() / LIST_WINDOW;
            present.extend(members);
        }
        let mut ranges: Vec<(f64, f64)> = bisect
            .leaves()
            .iter()
            .chain(bisect.empty())
            .map(|s| (s.lo, s.hi))
            .collect();
        ranges.sort_by(|a, b| a.0.total_cmp(&b.0));
        let dropped = if ranges.is_empty() {
            Default::default()
        } else {
            self.state.index.drop_absent(queue, &ranges, &present)
        };
        if !dropped.gone.is_empty() {
            let mut cache = self.cache.lock().expect("cache lock");
            for (id, _, _) in &dropped.gone {
                cache.forget(id);
            }
        }
        for (id, _, was) in &dropped.gone {
            self.state.job_left(queue, id, Some(*was));
        }
        out.dropped = dropped.gone.len();
        out.unknown = dropped.unknown;
        if let Some(total) = bisect.registry_total() {
            let left = bisect.indexed() as i64 - out.dropped as i64;
            self.settled
                .lock()
                .expect("settled lock")
                .0
                .insert(queue.to_string(), total as i64 - left);
        }
        Ok(out)
    }
}
