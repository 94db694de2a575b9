//! Queue statistics, counted the way RQ counts them (`Queue.count`, registries' `count` after
//! their cleanup), without changing anything.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::selection::selected_queues;
use super::AppState;

/// One queue's counts.
#[derive(Debug, Serialize, ToSchema, Default, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub queued: u64,
    pub started: u64,
    pub failed: u64,
    pub finished: u64,
    pub deferred: u64,
    pub scheduled: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Failed jobs over all queues.
    pub failed_count: u64,
    pub queues: BTreeMap<String, QueueStats>,
}

/// Per-queue counts: queued (list length), started, failed, finished (live entries, as after
/// RQ's cleanup), deferred and scheduled (all entries).
#[utoipa::path(get, path = "/api/v1/jobs/stats", tag = "jobs",
    responses((status = 200, body = Stats), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn stats(State(app): State<AppState>) -> ApiResult<Json<Stats>> {
    let mut con = app.redis()?;
    let snap = app.daemon.snapshot();
    let queues = selected_queues(&app.daemon, &mut con, &snap, None).await?;
    if queues.is_empty() {
        return Ok(Json(Stats {
            failed_count: 0,
            queues: BTreeMap::new(),
        }));
    }
    let now_unix = Utc::now().timestamp_millis() as f64 / 1000.0;
    let counts = snap
        .registry
        .queue_counts(&mut con, &queues, now_unix)
        .await?;
    let mut out = BTreeMap::new();
    let mut failed_count = 0;
    for (q, c) in queues.into_iter().zip(counts) {
        failed_count += c.failed;
        out.insert(
            q,
            QueueStats {
                queued: c.queued,
                started: c.started,
                failed: c.failed,
                finished: c.finished,
                deferred: c.deferred,
                scheduled: c.scheduled,
            },
        );
    }
    Ok(Json(Stats {
        failed_count,
        queues: out,
    }))
}
