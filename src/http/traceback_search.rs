//! Searching whole tracebacks (issue 22, item 1): `GET /api/v1/jobs/traceback-search`.
//!
//! `q=` on the listing searches what the failure index keeps in memory (exception line,
//! function, description, id). Whole tracebacks are too large to keep for a million jobs, so a
//! search through them reads them from Redis: this route walks the selection (the listing's
//! filters, `q` included, newest failure first, as the index orders them) from `from`, reads at
//! most `budget` jobs' failure texts per request, and answers the jobs whose text holds `text`
//! (case-insensitive, as `q`), how many
//! it looked through (`searched`, `searched_through` of `of`) and where the next request goes on
//! (`next`). Reads of every request together go through one token bucket of
//! [`READS_PER_SECOND`] jobs a second, so however many people search, Redis sees at most that
//! many HMGET + XREVRANGE pairs a second from it. It writes nothing.
//!
//! Its answers are a search, not a selection: bulk actions take the in-memory `q` (exact); a
//! job found here is acted on from its own page or row.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::indexed::{from_index, Freshness};
use super::selection::SelectionParams;
use super::AppState;
use crate::index::{Listed, Needle, Order};
use crate::rq::{decode, DecodeOutcome, Reads};

/// Jobs' failure texts read per second by every traceback search together, at most.
pub const READS_PER_SECOND: u32 = 2_000;
/// Jobs read in one pipelined round trip.
const BATCH: usize = 100;
/// Bytes of the matching line an answer shows, at most.
const LINE_MAX: usize = 300;

/// What the route takes beside its selection: where to go on, and how much to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TracebackParams {
    /// What to look for in the whole failure text, case-insensitive: 1 to 200 characters, not
    /// blank, no control characters (else 400 `invalid_text`).
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub text: String,
    /// Jobs of the selection already searched (the previous answer's `next`), 0 to 1000000000.
    #[param(minimum = 0, maximum = 1_000_000_000)]
    pub from: Option<u64>,
    /// Jobs this request reads at most, 1 to 1000 (default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub budget: Option<u64>,
}

/// A job whose whole failure text holds the search.
#[derive(Debug, Serialize, ToSchema)]
pub struct TracebackHit {
    pub job_id: String,
    pub queue: String,
    pub exc_type: Option<String>,
    pub failed_at: chrono::DateTime<chrono::Utc>,
    /// The first line of the failure text that holds the search, trimmed (at most 300 bytes).
    pub line: String,
}

/// One stretch of a traceback search.
#[derive(Debug, Serialize, ToSchema)]
pub struct TracebackHits {
    pub jobs: Vec<TracebackHit>,
    /// Jobs whose failure text this request read.
    pub searched: u64,
    /// How far through the selection the search now is (`from` + `searched`).
    pub searched_through: u64,
    /// Jobs in the selection (what a search through all of it reads).
    pub of: u64,
    /// `from` for the next request; null once the selection is read through.
    pub next: Option<u64>,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// Searches whole failure texts, a bounded stretch of the selection per request.
#[utoipa::path(get, path = "/api/v1/jobs/traceback-search", params(SelectionParams, TracebackParams), tag = "jobs",
    responses((status = 200, body = TracebackHits), (status = 400, body = ErrorBody, description = "`text` refused (`invalid_text`), or a bad filter or budget"),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn traceback_search(
    State(app): State<AppState>,
    ApiQuery(filters): ApiQuery<SelectionParams>,
    ApiQuery(p): ApiQuery<TracebackParams>,
) -> ApiResult<Json<TracebackHits>> {
    let selection = filters.selection()?;
    let needle = Needle::parse_as("text", "invalid_text", &p.text)
        .map_err(|i| ApiError::bad_request(i.code, i.message))?;
    let from = p.from.unwrap_or(0).min(1_000_000_000) as usize;
    let budget = p.budget.unwrap_or(500);
    if !(1..=1000).contains(&budget) {
        return Err(ApiError::bad_request(
            "invalid_budget",
            "budget must be between 1 and 1000",
        ));
    }
    let mut con = app.redis()?;
    let snap = app.daemon.snapshot();
    let queue = selection.queue.clone();
    let (page, freshness) = from_index(&app, &mut con, &snap, queue.as_deref(), move |index| {
        index.page(&selection, Order::Newest, from, budget as usize)
    })
    .await?;
    let mut jobs = Vec::new();
    for chunk in page.jobs.chunks(BATCH) {
        app.traceback_reads.acquire(chunk.len() as u32).await;
        jobs.extend(read_hits(&snap, &mut con, chunk, needle.as_str()).await?);
    }
    let searched = page.jobs.len() as u64;
    let through = from as u64 + searched;
    Ok(Json(TracebackHits {
        jobs,
        searched,
        searched_through: through,
        of: page.total,
        next: (through < page.total).then_some(through),
        freshness,
    }))
}

/// Reads one batch's failure texts (one pipelined round trip per queue) and answers those
/// that hold `needle` (lowercased), in the batch's order.
async fn read_hits(
    snap: &crate::state::Snapshot,
    con: &mut redis::aio::ConnectionManager,
    chunk: &[Listed],
    needle: &str,
) -> ApiResult<Vec<TracebackHit>> {
    let mut by_queue: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for job in chunk {
        by_queue
            .entry(&job.queue)
            .or_default()
            .push(job.job_id.clone());
    }
    let reads = Reads {
        function: false,
        failure: true,
        meta: false,
    };
    let mut found: BTreeMap<(String, String), TracebackHit> = BTreeMap::new();
    for (queue, ids) in by_queue {
        for raw in snap
            .registry
            .read_jobs_with(con, queue, &ids, reads)
            .await?
        {
            let DecodeOutcome::Job(f) = decode(&raw) else {
                continue;
            };
            let Some(line) = f.failure_text().and_then(|t| matching_line(t, needle)) else {
                continue;
            };
            let hit = TracebackHit {
                job_id: f.job_id.clone(),
                queue: f.queue.clone(),
                exc_type: f.exc_type().map(str::to_string),
                failed_at: f.failed_at,
                line,
            };
            found.insert((f.queue.clone(), f.job_id.clone()), hit);
        }
    }
    Ok(chunk
        .iter()
        .filter_map(|j| found.remove(&(j.queue.clone(), j.job_id.clone())))
        .collect())
}

/// The first line of `text` that holds `needle` (lowercased as the index lowercases), trimmed
/// and cut to [`LINE_MAX`] bytes on a character boundary.
fn matching_line(text: &str, needle: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| crate::index::search::lower(l).contains(needle))?
        .trim();
    let mut end = line.len().min(LINE_MAX);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    Some(line[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_holding_the_search_is_shown_cut_on_a_character() {
        let text = format!(
            "Traceback (most recent call last):\n  File \"pay.py\", line 3\n    raise Declined('CARD_DECLINED')\nDeclined: {}",
            "é".repeat(400)
        );
        assert_eq!(
            matching_line(&text, "card_declined").as_deref(),
            Some("raise Declined('CARD_DECLINED')")
        );
        let long = matching_line(&text, "declined: é").unwrap();
        assert!(long.len() <= LINE_MAX && long.starts_with("Declined: é"));
        assert_eq!(matching_line(&text, "nowhere"), None);
    }
}
