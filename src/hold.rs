//! `hold_when`: whether the queue a retry policy requeues into can take a job now. A queue no
//! live RQ worker listens to, or one already longer than the policy allows, holds its due
//! requeues back (state `held`) until that clears. See: issue 21.
//!
//! Pure judgement ([`hold_reason`]) over what one small read per queue establishes
//! ([`QueueWorld`], read by [`WorldCache`] at most once a second per queue): the queue's
//! length (LLEN) and how many of the workers RQ registered for it (`rq:workers:<q>`) are alive,
//! i.e. still have their `rq:worker:<name>` hash, which expires when the heartbeat stops.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::RedisResult;

use crate::policy::HoldWhen;
use crate::rq::Keys;

/// How long one read of a queue's workers and length answers for it.
pub const WORLD_TTL: Duration = Duration::from_secs(1);

/// How often a held job is looked at again (the due-time pass re-decides it).
pub const RECHECK: Duration = Duration::from_secs(1);

/// What one read established about a target queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueWorld {
    /// Workers registered for the queue whose key still exists (their heartbeat keeps it).
    pub live_workers: u64,
    /// Jobs in the queue list.
    pub length: u64,
}

/// Why a requeue into a queue is held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldReason {
    NoWorkers {
        queue: String,
    },
    QueueTooLong {
        queue: String,
        length: u64,
        limit: u64,
    },
}

impl HoldReason {
    /// The `reason` label of `rq_retryd_held_jobs` and the code in JSON answers.
    pub fn name(&self) -> &'static str {
        match self {
            HoldReason::NoWorkers { .. } => "no_workers",
            HoldReason::QueueTooLong { .. } => "queue_longer_than",
        }
    }
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldReason::NoWorkers { queue } => {
                write!(f, "no live RQ worker listens to queue {queue}")
            }
            HoldReason::QueueTooLong {
                queue,
                length,
                limit,
            } => write!(
                f,
                "queue {queue} holds {} job{}, more than {}",
                grouped(*length),
                if *length == 1 { "" } else { "s" },
                grouped(*limit)
            ),
        }
    }
}

/// `12034` as `12,034`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Whether `hold` holds a requeue into `queue` back, seen as `world`: no live worker is
/// checked first (a queue nobody serves grows anyway).
pub fn hold_reason(hold: &HoldWhen, queue: &str, world: QueueWorld) -> Option<HoldReason> {
    if hold.no_workers && world.live_workers == 0 {
        return Some(HoldReason::NoWorkers {
            queue: queue.to_string(),
        });
    }
    match hold.queue_longer_than {
        Some(limit) if world.length > limit => Some(HoldReason::QueueTooLong {
            queue: queue.to_string(),
            length: world.length,
            limit,
        }),
        _ => None,
    }
}

/// Reads each queue's world: one pipeline of SMEMBERS `rq:workers:<q>` and LLEN `rq:queue:<q>`
/// per queue, then, for the queues with registered workers, one EXISTS over their keys.
pub async fn read_worlds<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &Keys,
    queues: &[&str],
) -> RedisResult<HashMap<String, QueueWorld>> {
    let mut out = HashMap::new();
    if queues.is_empty() {
        return Ok(out);
    }
    let mut pipe = redis::pipe();
    for q in queues {
        pipe.cmd("SMEMBERS")
            .arg(keys.workers_of(q))
            .cmd("LLEN")
            .arg(keys.queue(q));
    }
    let replies: Vec<redis::Value> = pipe.query_async(con).await?;
    let mut members: Vec<(&str, Vec<Vec<u8>>)> = Vec::new();
    for (q, pair) in queues.iter().zip(replies.chunks(2)) {
        let workers: Vec<Vec<u8>> = redis::from_redis_value(pair[0].clone()).unwrap_or_default();
        let length: u64 = redis::from_redis_value(pair[1].clone()).unwrap_or(0);
        out.insert(
            q.to_string(),
            QueueWorld {
                live_workers: 0,
                length,
            },
        );
        if !workers.is_empty() {
            members.push((q, workers));
        }
    }
    if !members.is_empty() {
        let mut pipe = redis::pipe();
        for (_, workers) in &members {
            pipe.cmd("EXISTS").arg(workers);
        }
        let alive: Vec<u64> = pipe.query_async(con).await?;
        for ((q, _), n) in members.iter().zip(alive) {
            if let Some(w) = out.get_mut(*q) {
                w.live_workers = n;
            }
        }
    }
    Ok(out)
}

/// The queues' worlds, each read at most once per [`WORLD_TTL`] (shared by every batch and
/// every operator's retry of this process).
#[derive(Debug, Default)]
pub struct WorldCache {
    read: Mutex<HashMap<String, (Instant, QueueWorld)>>,
}

impl WorldCache {
    /// The world of each of `queues`, reading those not read within [`WORLD_TTL`].
    pub async fn get<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        keys: &Keys,
        queues: &[&str],
    ) -> RedisResult<HashMap<String, QueueWorld>> {
        let mut known = HashMap::new();
        let mut stale: Vec<&str> = Vec::new();
        {
            let read = self.read.lock().expect("world cache lock");
            for q in queues {
                match read.get(*q) {
                    Some((at, w)) if at.elapsed() < WORLD_TTL => {
                        known.insert(q.to_string(), *w);
                    }
                    _ if !stale.contains(q) => stale.push(q),
                    _ => {}
                }
            }
        }
        if stale.is_empty() {
            return Ok(known);
        }
        let fresh = read_worlds(con, keys, &stale).await?;
        let now = Instant::now();
        let mut read = self.read.lock().expect("world cache lock");
        read.retain(|_, (at, _)| at.elapsed() < WORLD_TTL);
        for (q, w) in fresh {
            read.insert(q.clone(), (now, w));
            known.insert(q, w);
        }
        Ok(known)
    }
}

/// A condition an operator's retry met, in its answer: the retry goes ahead (operators are
/// never held back), and the answer says why the job may not run soon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Warning {
    /// `no_workers` or `queue_longer_than`.
    pub code: &'static str,
    /// The queue the job went (or would go) to.
    pub queue: String,
    /// E.g. `no live RQ worker listens to queue slow`.
    pub message: String,
}

impl From<&HoldReason> for Warning {
    fn from(reason: &HoldReason) -> Warning {
        let queue = match reason {
            HoldReason::NoWorkers { queue } | HoldReason::QueueTooLong { queue, .. } => queue,
        };
        Warning {
            code: reason.name(),
            queue: queue.clone(),
            message: reason.to_string(),
        }
    }
}

/// What an operator's retry of `jobs` would be held for, were it automatic: for each job
/// whose deciding retry policy has a `hold_when`, that policy's conditions on the job's
/// origin (a manual retry goes to the origin, never to `requeue_to`). A job read without the
/// facts its policies match on (a bulk action's fast path) gets the conditions of every policy
/// of its queue that has one. Nothing is read when no policy has a `hold_when`; else one read
/// per queue (cached for a second); at most one warning per queue and condition.
pub async fn manual_warnings<C: ConnectionLike + Send>(
    con: &mut C,
    worlds: &WorldCache,
    keys: &Keys,
    policies: &[crate::policy::Policy],
    jobs: &[&crate::rq::JobFacts],
) -> RedisResult<Vec<Warning>> {
    use crate::policy::Action;
    let hold_of = |p: &crate::policy::Policy| match &p.action {
        Action::Retry(spec) => spec.hold_when,
        _ => None,
    };
    if !policies.iter().any(|p| hold_of(p).is_some()) {
        return Ok(Vec::new());
    }
    let now = chrono::Utc::now();
    let mut holds: Vec<(String, HoldWhen)> = Vec::new();
    for job in jobs {
        let need = crate::policy::reads_for(policies, &job.queue);
        let found: Vec<HoldWhen> =
            if (!need.function || job.reads.function) && (!need.failure || job.reads.failure) {
                crate::policy::decide(policies, job, now)
                    .policy
                    .and_then(hold_of)
                    .into_iter()
                    .collect()
            } else {
                // Read without what the policies match on (a bulk action reads only what its
                // selection needs): every policy of the job's queue that may hold it.
                policies
                    .iter()
                    .filter(|p| {
                        p.matcher
                            .queues
                            .as_ref()
                            .is_none_or(|q| q.is_match(&job.queue))
                    })
                    .filter_map(hold_of)
                    .collect()
            };
        for hold in found {
            merge(&mut holds, &job.origin, hold);
        }
    }
    if holds.is_empty() {
        return Ok(Vec::new());
    }
    let queues: Vec<&str> = holds.iter().map(|(q, _)| q.as_str()).collect();
    let read = worlds.get(con, keys, &queues).await?;
    let mut out = Vec::new();
    for (queue, hold) in &holds {
        let world = read.get(queue).copied().unwrap_or_default();
        let only_workers = HoldWhen {
            no_workers: hold.no_workers,
            queue_longer_than: None,
        };
        let only_length = HoldWhen {
            no_workers: false,
            queue_longer_than: hold.queue_longer_than,
        };
        for h in [only_workers, only_length] {
            if let Some(reason) = hold_reason(&h, queue, world) {
                out.push(Warning::from(&reason));
            }
        }
    }
    Ok(out)
}

/// Adds `hold` for `queue` to `holds`: the conditions of every policy, the strictest limit.
fn merge(holds: &mut Vec<(String, HoldWhen)>, queue: &str, hold: HoldWhen) {
    match holds.iter_mut().find(|(q, _)| q == queue) {
        Some((_, merged)) => {
            merged.no_workers |= hold.no_workers;
            merged.queue_longer_than = match (merged.queue_longer_than, hold.queue_longer_than) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        None => holds.push((queue.to_string(), hold)),
    }
}

/// How long a held job counts in the gauge without being decided again: held jobs are
/// re-decided about every [`RECHECK`], so one not seen for this long left the registry (or this
/// instance stopped writing).
const HELD_STALE: Duration = Duration::from_secs(5);

/// The jobs held back now, by failed registry queue and id, with the reason's name: what
/// `rq_retryd_held_jobs{queue,reason}` counts.
#[derive(Debug, Default)]
pub struct HeldJobs {
    jobs: Mutex<HashMap<HeldKey, (&'static str, Instant)>>,
}

/// A held job: its failed registry's queue and its id.
type HeldKey = (String, String);

impl HeldJobs {
    /// Notes `job_id` of `queue`'s failed registry as held for `reason` now.
    pub fn hold(&self, queue: &str, job_id: &str, reason: &'static str) {
        self.jobs.lock().expect("held lock").insert(
            (queue.to_string(), job_id.to_string()),
            (reason, Instant::now()),
        );
    }

    /// Notes that the job is not held (any more).
    pub fn release(&self, queue: &str, job_id: &str) {
        let mut jobs = self.jobs.lock().expect("held lock");
        if !jobs.is_empty() {
            jobs.remove(&(queue.to_string(), job_id.to_string()));
        }
    }

    /// Sets `rq_retryd_held_jobs` to what is held now.
    pub fn publish(&self, metrics: &crate::metrics::Metrics) {
        let counts = self.counts();
        metrics.set_held(counts.iter().map(|(q, r, n)| (q.as_str(), *r, *n)));
    }

    /// Held jobs per (queue, reason), after forgetting those not decided again lately.
    pub fn counts(&self) -> Vec<(String, &'static str, u64)> {
        let mut jobs = self.jobs.lock().expect("held lock");
        jobs.retain(|_, (_, at)| at.elapsed() < HELD_STALE);
        let mut counts: HashMap<(&str, &'static str), u64> = HashMap::new();
        for ((queue, _), (reason, _)) in jobs.iter() {
            *counts.entry((queue.as_str(), *reason)).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|((q, r), n)| (q.to_string(), r, n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(live_workers: u64, length: u64) -> QueueWorld {
        QueueWorld {
            live_workers,
            length,
        }
    }

    #[test]
    fn a_queue_without_live_workers_holds_when_no_workers_is_set() {
        let hold = HoldWhen {
            no_workers: true,
            queue_longer_than: None,
        };
        let reason = hold_reason(&hold, "slow", world(0, 0)).expect("held");
        assert_eq!(reason.name(), "no_workers");
        assert_eq!(
            reason.to_string(),
            "no live RQ worker listens to queue slow"
        );
        assert_eq!(hold_reason(&hold, "slow", world(1, 1_000_000)), None);
    }

    #[test]
    fn a_queue_longer_than_the_limit_holds_and_one_at_the_limit_does_not() {
        let hold = HoldWhen {
            no_workers: false,
            queue_longer_than: Some(10_000),
        };
        assert_eq!(hold_reason(&hold, "emails", world(0, 10_000)), None);
        let reason = hold_reason(&hold, "emails", world(0, 12_034)).expect("held");
        assert_eq!(reason.name(), "queue_longer_than");
        assert_eq!(
            reason.to_string(),
            "queue emails holds 12,034 jobs, more than 10,000"
        );
        let strict = HoldWhen {
            no_workers: false,
            queue_longer_than: Some(0),
        };
        let one = hold_reason(&strict, "emails", world(0, 1)).expect("held");
        assert_eq!(one.to_string(), "queue emails holds 1 job, more than 0");
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
