//! `GET /api/v1/audit`: who did what, filtered by who, action, queue, job id and time, paged
//! with a cursor through the whole capped stream (issue 22, item 4). The stream is filtered in
//! memory (`audit::mirror`): each request reads from Redis only what was appended since the
//! previous one, and the page's entries.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::selection::FailureTime;
use super::AppState;
use crate::audit::filter::{AuditFilter, StreamId};
use crate::audit::mirror::ReadError;
use crate::audit::{audit_key, AuditAction, AuditEntry};
use crate::index::parse_time;

/// The most entries one page holds.
pub const AUDIT_LIMIT_MAX: u64 = 1000;
/// The most characters a text filter (`who`, `queue`, `job_id`) may have.
pub const AUDIT_TEXT_MAX: usize = 1024;

/// The audit's filters and paging, as query parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Entries to return, newest first (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// The next (older) page: the `next_cursor` of the answer before.
    #[param(pattern = r"^[0-9]{1,19}-[0-9]{1,19}$")]
    pub cursor: Option<String>,
    /// Who acted, any part of it, case-insensitive: a token's name (`ops-alice`), a client
    /// address, or `supervisor` (1 to 1024 characters).
    #[param(min_length = 1, max_length = 1024)]
    pub who: Option<String>,
    /// `true`: only people's actions; the supervisor's automatic entries are left out.
    pub people_only: Option<bool>,
    /// Only this kind of action.
    #[param(inline)]
    pub action: Option<AuditAction>,
    /// Only actions on this queue, or requeues to it (exact name, 1 to 1024 characters).
    #[param(min_length = 1, max_length = 1024)]
    pub queue: Option<String>,
    /// Only entries that list this job id (exact, any id, 1 to 1024 characters).
    #[param(min_length = 1, max_length = 1024)]
    pub job_id: Option<String>,
    /// Written at or after this time: RFC 3339 (`2026-01-31T12:00:00Z`), unix seconds, or that
    /// long ago (`15m`, `1h`, `1d`).
    #[param(value_type = Option<FailureTime>, inline)]
    pub since: Option<String>,
    /// Written at or before this time (the same forms as `since`).
    #[param(value_type = Option<FailureTime>, inline)]
    pub until: Option<String>,
}

/// One page of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    /// The matching entries, newest first. An entry's time for `since`/`until` is when it was
    /// written (its id); a folded entry of the supervisor's spans `at` to `last_at`.
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; null when this is the last.
    pub next_cursor: Option<String>,
    /// How many entries the filter looked at for this page.
    pub searched: usize,
    /// How many entries the stream holds (it keeps about the newest 10,000).
    pub stream_len: usize,
}

impl AuditParams {
    /// The filter these parameters describe; 400 naming the parameter that is refused.
    fn filter(&self) -> ApiResult<AuditFilter> {
        let now = Utc::now();
        let time = |name: &str, text: &Option<String>| -> ApiResult<Option<u64>> {
            text.as_deref()
                .map(|t| {
                    parse_time(name, t, now)
                        .map(|t| t.timestamp_millis().max(0) as u64)
                        .map_err(|e| ApiError::bad_request(e.code, e.message))
                })
                .transpose()
        };
        Ok(AuditFilter {
            who: text("who", &self.who)?,
            people_only: self.people_only.unwrap_or(false),
            action: self.action,
            queue: text("queue", &self.queue)?,
            job_id: text("job_id", &self.job_id)?,
            since_ms: time("since", &self.since)?,
            until_ms: time("until", &self.until)?,
        })
    }

    fn limit(&self) -> ApiResult<usize> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=AUDIT_LIMIT_MAX).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                "limit must be between 1 and 1000",
            ));
        }
        Ok(limit as usize)
    }

    fn cursor(&self) -> ApiResult<Option<StreamId>> {
        self.cursor
            .as_deref()
            .map(|c| {
                StreamId::parse(c).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_cursor",
                        "cursor must be the next_cursor of an earlier answer (<ms>-<seq>)",
                    )
                })
            })
            .transpose()
    }
}

/// A text filter: 1 to [`AUDIT_TEXT_MAX`] characters when given.
fn text(name: &str, value: &Option<String>) -> ApiResult<Option<String>> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > AUDIT_TEXT_MAX => {
            Err(ApiError::bad_request(
                "invalid_filter",
                format!("{name} must have 1 to {AUDIT_TEXT_MAX} characters"),
            ))
        }
        _ => Ok(value.clone()),
    }
}

/// Manual and automatic actions, newest first, filtered and paged through the whole stream.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditParams), tag = "supervisor",
    responses((status = 200, body = AuditLog), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<AuditLog>> {
    let (filter, limit, cursor) = (p.filter()?, p.limit()?, p.cursor()?);
    let mut con = app.redis()?;
    let key = audit_key(&app.daemon.config().redis.key_prefix);
    let page = app
        .audit
        .page(&mut con, &key, &filter, cursor, limit)
        .await
        .map_err(|e| match e {
            ReadError::NotAStream => {
                ApiError::conflict("corrupt_audit", "the audit key is not a stream")
            }
            ReadError::Redis(e) => ApiError::from(e),
        })?;
    Ok(Json(AuditLog {
        entries: page.entries,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
        searched: page.searched,
        stream_len: page.stream_len,
    }))
}
