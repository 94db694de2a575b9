//! The trend of failures: `GET /api/v1/jobs/timeline`, how many failed jobs of a selection
//! failed in each minute of the last hour and each hour of the last day (issue 22, item 2).
//!
//! Answered from the failure index like the listing (see `index::trend`), with the listing's
//! own selection, so that a bar's count is what the listing shows for the same filters and that
//! minute. Only failed jobs still in a failed registry are counted: one requeued or deleted
//! since leaves its bar (`rq_retryd_failures_seen_total` counts every new failure).
//!
//! It lives under `/api/v1/jobs/` rather than `/api/v1/jobs/failed/`, where a new fixed path
//! would take a job id from `DELETE /api/v1/jobs/failed/{job_id}` (as `groups` does).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::indexed::{from_index, Freshness};
use super::selection::SelectionParams;
use super::AppState;
use crate::index::{Buckets, Timeline};

/// Failures counted in consecutive buckets of equal length.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// When the first bucket begins: a whole minute or hour, UTC. Bucket `i` holds the failures
    /// from `start + i × step_seconds` up to, not including, the next one's start.
    pub start: DateTime<Utc>,
    /// 60 (minutes) or 3600 (hours).
    pub step_seconds: u32,
    /// Failed jobs per bucket, oldest first; the last bucket is the current, partial one.
    pub counts: Vec<u64>,
}

impl From<Buckets> for Series {
    fn from(b: Buckets) -> Series {
        Series {
            start: b.start,
            step_seconds: b.step_seconds,
            counts: b.counts,
        }
    }
}

/// When a selection's failed jobs failed (their `ended_at`, as the listing's `failed_at`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineAnswer {
    /// Failed jobs the selection matches: the listing's `total` for the same filters, and the
    /// sum of `hours`, `earlier` and `later`.
    pub total: u64,
    /// Jobs left out because a fact the selection needs (function, exception type) is not
    /// read yet.
    pub unknown: u64,
    /// The last 60 minutes (60 buckets of one minute), the current minute last.
    pub minutes: Series,
    /// The last 24 hours (24 buckets of one hour), the current hour last.
    pub hours: Series,
    /// Matched failures before the first hour.
    pub earlier: u64,
    /// Matched failures dated after the current hour (a worker's clock ahead of this host's).
    pub later: u64,
    #[serde(flatten)]
    pub freshness: Freshness,
}

impl TimelineAnswer {
    fn new(t: Timeline, freshness: Freshness) -> TimelineAnswer {
        TimelineAnswer {
            total: t.total,
            unknown: t.unknown,
            minutes: t.minutes.into(),
            hours: t.hours.into(),
            earlier: t.earlier,
            later: t.later,
            freshness,
        }
    }
}

/// Failures per minute over the last hour and per hour over the last day, of the failed jobs
/// the selection matches (the listing's filters), from the failure index. Only jobs still in a
/// failed registry are counted: a job requeued or deleted leaves its bucket.
#[utoipa::path(get, path = "/api/v1/jobs/timeline", params(SelectionParams), tag = "jobs",
    responses((status = 200, body = TimelineAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn timeline(
    State(app): State<AppState>,
    ApiQuery(filters): ApiQuery<SelectionParams>,
) -> ApiResult<Json<TimelineAnswer>> {
    let query = filters.selection()?;
    let mut con = app.redis()?;
    let snap = app.daemon.snapshot();
    let now = Utc::now();
    let queue = query.queue.clone();
    let (timeline, freshness) = from_index(&app, &mut con, &snap, queue.as_deref(), move |index| {
        index.timeline(&query, now)
    })
    .await?;
    Ok(Json(TimelineAnswer::new(timeline, freshness)))
}
