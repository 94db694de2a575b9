//! Answers from the failure index: the one place that decides whether a question about failed
//! jobs is answered from this instance's index or from Redis read now, and waits for the index
//! while it is being built. Shared by the listing and groups (`jobs`), the timeline (`trend`)
//! and the traceback search, so that none of those handler modules imports another.

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::selection::selected_queues;
use super::AppState;
use crate::policy;
use crate::rq::{decode, DecodeOutcome};
use crate::state::Snapshot;

/// Where an answer comes from: the daemon's failure index (complete as of the end of its last
/// full scan, and kept current by notifications and by every instance's writes), or Redis,
/// read for this request (a queue outside `supervisor.queues`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Freshness {
    pub source: AnswerSource,
    /// When the index was last complete (for `redis`: now).
    pub as_of: DateTime<Utc>,
}

/// Which of the two an answer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerSource {
    /// The daemon's failure index.
    Index,
    /// Redis, read for this request.
    Redis,
}

/// Answers `question` from this instance's failure index when `queue` is supervised (all
/// queues, when `None`); else from an index of that one queue built from Redis now. Before the
/// instance's first full pass has built the index (the active instance's first scan, a
/// standby's first observing pass), waits up to [`INDEX_WAIT`] for it, then answers 503
/// `index_building`: no request reads every registry from Redis.
pub async fn from_index<R, Q>(
    app: &AppState,
    con: &mut ConnectionManager,
    snap: &Snapshot,
    queue: Option<&str>,
    question: Q,
) -> ApiResult<(R, Freshness)>
where
    R: Send + 'static,
    Q: Fn(&crate::index::FailureIndex) -> R + Send + 'static,
{
    let covered = queue.is_none_or(|q| snap.config.supervisor.queues.is_match(q));
    if !covered {
        let as_of = Utc::now();
        let index = index_from_redis(&app.daemon, con, snap, queue).await?;
        let freshness = Freshness {
            source: AnswerSource::Redis,
            as_of,
        };
        return Ok((question(&index), freshness));
    }
    // Answers from memory still need Redis for the page's jobs, and say so when it is down.
    let _: () = redis::cmd("PING").query_async(con).await?;
    wait_for_index(app).await?;
    // A question costs milliseconds of CPU at a million jobs: off the runtime's threads, so
    // that concurrent answers never hold up the scans, the heartbeat or /healthz.
    let daemon = app.daemon.clone();
    let answered = tokio::task::spawn_blocking(move || {
        daemon
            .index
            .read()
            .map(|reading| (question(&reading), reading.as_of))
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("the index query failed: {e}")))?;
    // Once built, an index stays built (a lost lease keeps it: standbys observe).
    let (answer, as_of) = answered.ok_or_else(|| ApiError::index_building(INDEX_WAIT))?;
    let freshness = Freshness {
        source: AnswerSource::Index,
        as_of,
    };
    Ok((answer, freshness))
}

/// Waits up to [`INDEX_WAIT`] for this instance's first full pass to build the index, then
/// answers 503 `index_building`: the one wait of every answer from the index (the listings,
/// the timeline, the search and simulate).
pub async fn wait_for_index(app: &AppState) -> ApiResult<()> {
    let waiting = std::time::Instant::now();
    while app.daemon.index.as_of().is_none() {
        if waiting.elapsed() >= INDEX_WAIT {
            return Err(ApiError::index_building(INDEX_WAIT));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// How long a request waits for the first full pass to build the index (at a million failed
/// jobs it takes about 15–30 s; at ordinary sizes well under a second).
pub const INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and decides every live failed job of `queue` (or of every queue) into a new index:
/// what the API answers from for a queue the daemon does not supervise.
async fn index_from_redis(
    daemon: &crate::state::DaemonState,
    con: &mut ConnectionManager,
    snap: &Snapshot,
    queue: Option<&str>,
) -> ApiResult<crate::index::FailureIndex> {
    let queues = selected_queues(daemon, con, snap, queue).await?;
    let batch = snap.config.supervisor.batch_size;
    let now = Utc::now();
    let mut index = crate::index::FailureIndex::default();
    for queue in &queues {
        let ids = snap.registry.live_failed_ids(con, queue, batch).await?;
        for chunk in ids.live.chunks(batch) {
            for raw in snap.registry.read_jobs(con, queue, chunk).await? {
                let Some(score) = raw.score else { continue };
                match decode(&raw) {
                    DecodeOutcome::Job(f) => {
                        let evaluation = policy::decide(&snap.config.policies, &f, now);
                        let policy = evaluation.policy.map(|p| p.name.as_str());
                        index.observe(&crate::index::Observation::decided(
                            &f,
                            score,
                            policy,
                            &evaluation.decision,
                        ));
                    }
                    // Listed so that an operator sees them; never acted on.
                    DecodeOutcome::Corrupt(_) | DecodeOutcome::Orphan => {
                        index.observe(&crate::index::Observation::undecodable(
                            &raw.queue,
                            &raw.job_id,
                            score,
                        ));
                    }
                }
            }
        }
    }
    Ok(index)
}
