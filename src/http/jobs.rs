//! Single jobs and listings: list failed jobs, groups, retry one, delete one, status, explain.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiQuery, JobId, Who, JOB_ID_DESCRIPTION};
use super::indexed::{from_index, AnswerSource, Freshness};
use super::selection::{queue_selection, SelectionParams};
use super::AppState;
use crate::actions::{Actor, Planned};
use crate::executor::{Meaning, Outcome, WriteKind};
use crate::explain::{self, Explanation};
use crate::policy::{self, Action, Decision};
use crate::rq::failure;
use crate::rq::job::StreamFields;
use crate::rq::{decode, DecodeOutcome, JobFacts, Lookup, StoredJob};
use crate::state::Snapshot;

/// Failure texts longer than this are cut to their last part in listings (the end holds the
/// exception); `GET /api/v1/jobs/status/{id}` returns the whole text.
pub const LIST_EXC_INFO_MAX: usize = 256 * 1024;

/// What the listing takes beside its selection ([`SelectionParams`]): the page's shape.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Jobs to skip, 0 to 1000000000 (default 0).
    #[param(minimum = 0, maximum = 1_000_000_000)]
    pub offset: Option<u64>,
    /// Newest failure first (the default) or oldest first.
    #[param(inline)]
    pub order: Option<OrderParam>,
}

/// Newest or oldest failure first.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderParam {
    Newest,
    Oldest,
}

/// One failed job in a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedJob {
    pub job_id: String,
    pub queue: String,
    pub func_name: Option<String>,
    pub description: Option<String>,
    /// The failure text (traceback).
    pub exc_info: Option<String>,
    pub exc_info_truncated: bool,
    pub exc_type: Option<String>,
    pub failed_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub exhausted: bool,
    /// The policy that decides this job now (none when unmatched).
    pub policy: Option<String>,
    pub decision: Option<String>,
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Set when the stored job could not be decoded (it is left untouched).
    pub decode_error: Option<String>,
    /// Where the job stands (`undecodable` with `decode_error`).
    pub state: crate::index::State,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FailedList {
    /// Jobs the selection matches.
    pub total: u64,
    pub limit: u64,
    pub offset: u64,
    pub jobs: Vec<FailedJob>,
    /// Jobs left out because a fact the selection needs (function, exception type) is not
    /// read yet.
    pub unknown: u64,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// Lists failed jobs across failed registries (queues in name order, oldest expiry first).
#[utoipa::path(get, path = "/api/v1/jobs/failed", params(SelectionParams, ListParams), tag = "jobs",
    responses((status = 200, body = FailedList, links(
            ("Explain" = (operation_id = "explain_job", parameters(("job_id" = "$response.body#/jobs/0/job_id")))),
            ("Status" = (operation_id = "status", parameters(("job_id" = "$response.body#/jobs/0/job_id")))),
            ("Retry" = (operation_id = "retry_job", parameters(("job_id" = "$response.body#/jobs/0/job_id")))),
            ("Delete" = (operation_id = "delete_job", parameters(("job_id" = "$response.body#/jobs/0/job_id")))),
        )), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_failed(
    State(app): State<AppState>,
    ApiQuery(filters): ApiQuery<SelectionParams>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<Json<FailedList>> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 1000",
        ));
    }
    let offset = p.offset.unwrap_or(0);
    if offset > 1_000_000_000 {
        return Err(ApiError::bad_request(
            "invalid_offset",
            "offset must be at most 1000000000",
        ));
    }
    let query = filters.selection()?;
    let order = match p.order {
        Some(OrderParam::Oldest) => crate::index::Order::Oldest,
        _ => crate::index::Order::Newest,
    };
    let mut con = app.redis()?;
    let snap = app.daemon.snapshot();
    let now = Utc::now();
    // Rows whose job left its registry since the index last heard of it (requeued or deleted
    // by RQ, a dashboard, a script) are left out of the answer and dropped from the index
    // rather than shown as undecodable; the page is then asked for again, so that it is full
    // while the index holds more. See: issue 21, item 4.
    let mut round = 0;
    loop {
        round += 1;
        let asked = query.clone();
        let (page, freshness) = from_index(
            &app,
            &mut con,
            &snap,
            query.queue.as_deref(),
            move |index| index.page(&asked, order, offset as usize, limit as usize),
        )
        .await?;
        let (jobs, left) = read_page(&snap, &mut con, &page, now).await?;
        let again = !left.is_empty() && freshness.source == AnswerSource::Index;
        if again {
            let was = app
                .daemon
                .index
                .remove_all(left.iter().map(|(q, id)| (q.as_str(), id.as_str())));
            for ((queue, id), was) in left.iter().zip(was) {
                app.daemon.job_left(queue, id, was);
            }
        }
        if !again || round == PAGE_ROUNDS {
            return Ok(Json(FailedList {
                total: page.total.saturating_sub(left.len() as u64),
                limit,
                offset,
                jobs,
                unknown: page.unknown,
                freshness,
            }));
        }
    }
}

/// How many times a listing asks the index for its page again after finding rows gone.
const PAGE_ROUNDS: usize = 4;

/// Reads a page's jobs from Redis (one pipelined read per queue on the page), in the page's
/// order, and the (queue, id) of the rows no longer in their registry (no score at the read).
async fn read_page(
    snap: &Snapshot,
    con: &mut ConnectionManager,
    page: &crate::index::Page,
    now: DateTime<Utc>,
) -> ApiResult<(Vec<FailedJob>, Vec<(String, String)>)> {
    let mut by_queue: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for job in &page.jobs {
        by_queue
            .entry(&job.queue)
            .or_default()
            .push(job.job_id.clone());
    }
    let mut read: std::collections::HashMap<(String, String), FailedJob> = Default::default();
    let mut left: Vec<(String, String)> = Vec::new();
    // The queues' reads at once (a newest-first page over ten queues took ten round trips).
    let reads = by_queue.iter().map(|(queue, ids)| {
        let mut con = con.clone();
        async move { snap.registry.read_jobs(&mut con, queue, ids).await }
    });
    for raws in futures::future::try_join_all(reads).await? {
        for raw in raws {
            if raw.score.is_none() {
                left.push((raw.queue, raw.job_id));
                continue;
            }
            read.insert(
                (raw.queue.clone(), raw.job_id.clone()),
                listing_entry(snap, &raw, now),
            );
        }
    }
    let jobs = page
        .jobs
        .iter()
        .filter_map(|j| {
            let mut entry = read.remove(&(j.queue.clone(), j.job_id.clone()))?;
            // Whether a due requeue is held depends on the target queue, which only the
            // supervisor's write path reads: the index says so.
            if j.state == crate::index::State::Held && entry.state == crate::index::State::Due {
                entry.state = crate::index::State::Held;
            }
            Some(entry)
        })
        .collect();
    Ok((jobs, left))
}

fn listing_entry(snap: &Snapshot, raw: &crate::rq::RawJob, now: DateTime<Utc>) -> FailedJob {
    let mut entry = FailedJob {
        job_id: raw.job_id.clone(),
        queue: raw.queue.clone(),
        func_name: None,
        description: None,
        exc_info: None,
        exc_info_truncated: false,
        exc_type: None,
        failed_at: None,
        attempts: 0,
        exhausted: false,
        policy: None,
        decision: None,
        next_retry_at: None,
        decode_error: None,
        state: crate::index::State::Undecodable,
    };
    match decode(raw) {
        DecodeOutcome::Job(f) => {
            let evaluation = policy::decide(&snap.config.policies, &f, now);
            entry.next_retry_at = next_retry(&evaluation.decision, evaluation.policy, &f);
            entry.policy = evaluation.policy.map(|p| p.name.clone());
            entry.decision = Some(evaluation.decision.name().to_string());
            entry.state = crate::index::State::of(&evaluation.decision).0;
            let text = f.failure_text().map(|t| tail_bytes(t, LIST_EXC_INFO_MAX));
            entry.exc_info_truncated = text.as_ref().is_some_and(|(_, cut)| *cut);
            entry.exc_info = text.map(|(t, _)| t);
            entry.exc_type = f.exc_type().map(str::to_string);
            entry.func_name = f.func_name;
            entry.description = f.description;
            entry.failed_at = Some(f.failed_at);
            entry.attempts = f.attempts;
            entry.exhausted = f.exhausted;
        }
        DecodeOutcome::Orphan => {
            entry.decode_error = Some("registry entry without a job hash".into());
        }
        DecodeOutcome::Corrupt(reason) => {
            entry.decode_error = Some(reason.to_string());
        }
    }
    entry
}

fn next_retry(
    decision: &Decision,
    policy: Option<&policy::Policy>,
    f: &JobFacts,
) -> Option<DateTime<Utc>> {
    match (decision, policy.map(|p| &p.action)) {
        (Decision::RequeueNow { .. } | Decision::RequeueAt { .. }, Some(Action::Retry(spec))) => {
            Some(policy::next_retry_at(spec, f))
        }
        _ => None,
    }
}

/// The last `max` bytes of `text` (on a char boundary), and whether it was cut.
fn tail_bytes(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_string(), false);
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    (text[start..].to_string(), true)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupParams {
    /// Only this queue (1 to 512 characters).
    #[param(min_length = 1, max_length = 512)]
    pub queue: Option<String>,
    /// Only the jobs this text search finds (as the listing's `q`): the groups of what a
    /// search shows.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub q: Option<String>,
}

/// Failed jobs that share a queue, function and exception type.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailureGroup {
    pub queue: String,
    pub func_name: Option<String>,
    pub exc_type: Option<String>,
    pub count: u64,
    pub oldest_failed_at: DateTime<Utc>,
    pub newest_failed_at: DateTime<Utc>,
    /// The policy that handles most jobs of the group (none when unmatched).
    pub policy: Option<String>,
    /// How many jobs of the group each policy handles (`(unmatched)` for none).
    pub policies: BTreeMap<String, u64>,
    /// `queue|function|exception` (empty for none), for the console's `data-group`.
    pub key: String,
    /// The earliest next automatic action among the group's waiting jobs.
    pub next_due: Option<DateTime<Utc>>,
    /// The group's jobs by state (never `undecodable`: those are in no group).
    #[serde(serialize_with = "crate::index::counts_by_name")]
    pub by_state: BTreeMap<crate::index::State, u64>,
    /// False while the function or exception type of some of its jobs is not read yet.
    pub known: bool,
    /// Its jobs that failed in the last 15 minutes (or are dated after now); the window begins
    /// on a whole second, 15 minutes before the start of the current one.
    pub last_15m: u64,
    /// Its jobs that failed in the 15 minutes before those: with `last_15m`, whether the group
    /// is rising.
    pub prev_15m: u64,
    /// Its first failure is within the last 15 minutes: the group appeared since.
    pub new: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FailureGroups {
    /// Failed jobs looked at.
    pub total: u64,
    /// Jobs that could not be decoded (not in any group).
    pub undecodable: u64,
    pub groups: Vec<FailureGroup>,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// What is failing: counts by queue, function and exception type, largest group first.
#[utoipa::path(get, path = "/api/v1/jobs/failed/groups", params(GroupParams), tag = "jobs",
    responses((status = 200, body = FailureGroups), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn groups(
    State(app): State<AppState>,
    ApiQuery(p): ApiQuery<GroupParams>,
) -> ApiResult<Json<FailureGroups>> {
    let selection = queue_selection(p.queue.as_deref(), p.q.as_deref())?;
    let mut con = app.redis()?;
    let snap = app.daemon.snapshot();
    let queue = selection.queue.clone();
    let searched = selection.clone();
    let ((total, undecodable, groups), freshness) = from_index(
        &app,
        &mut con,
        &snap,
        selection.queue.as_deref(),
        move |index| {
            let mut total = 0;
            let mut undecodable = 0;
            let mut groups = Vec::new();
            // Without a search, the groups are the queue's whole groups: their counts need no
            // filter, and one pass (or none, when the index has not changed) gives both.
            let (all, recent) = match searched.q {
                Some(_) => (
                    index.groups_matching(&searched),
                    index.recent(&searched, Utc::now()),
                ),
                None => index.groups_and_recent(Utc::now()),
            };
            for g in all {
                if queue.as_ref().is_some_and(|q| *q != g.queue) {
                    continue;
                }
                total += g.count;
                let broken = g
                    .by_state
                    .get(&crate::index::State::Undecodable)
                    .copied()
                    .unwrap_or(0);
                undecodable += broken;
                if g.count > broken {
                    let trend = recent.of(&g);
                    groups.push(group_answer(g, broken, trend));
                }
            }
            (total, undecodable, groups)
        },
    )
    .await?;
    Ok(Json(FailureGroups {
        total,
        undecodable,
        groups,
        freshness,
    }))
}

/// One index group as the API shows it, without its `broken` undecodable jobs.
fn group_answer(g: crate::index::Group, broken: u64, trend: crate::index::Recent) -> FailureGroup {
    let policies = g
        .policies
        .into_iter()
        .map(|(p, n)| (p.unwrap_or_else(|| "(unmatched)".to_string()), n))
        .map(|(p, n)| {
            // Undecodable jobs have no policy: they are not counted under (unmatched).
            let n = if p == "(unmatched)" {
                n - broken.min(n)
            } else {
                n
            };
            (p, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    FailureGroup {
        key: format!(
            "{}|{}|{}",
            g.queue,
            g.function.as_deref().unwrap_or(""),
            g.exception.as_deref().unwrap_or("")
        ),
        queue: g.queue,
        func_name: g.function,
        exc_type: g.exception,
        count: g.count - broken,
        oldest_failed_at: g.first_failed_at,
        newest_failed_at: g.last_failed_at,
        policy: g.policy,
        policies,
        next_due: g.next_due,
        by_state: g
            .by_state
            .into_iter()
            .filter(|(s, _)| *s != crate::index::State::Undecodable)
            .collect(),
        known: g.known,
        last_15m: trend.last_15m,
        prev_15m: trend.prev_15m,
        new: trend.new,
    }
}

/// Finds a job in a failed registry and decodes it; 404 / 409 when that is not possible.
async fn failed_job(
    con: &mut ConnectionManager,
    snap: &Snapshot,
    job_id: &str,
) -> ApiResult<JobFacts> {
    match snap.registry.lookup(con, job_id).await? {
        Lookup::Failed(f) => Ok(*f),
        Lookup::NotFailed => Err(ApiError::not_found(
            "not_in_failed_registry",
            format!("job {job_id} is not in a failed registry"),
        )),
        Lookup::Moved { .. } => Err(ApiError::not_found(
            "not_in_failed_registry",
            format!("job {job_id} was moved or deleted meanwhile"),
        )),
        Lookup::Orphan { queue } => Err(ApiError::not_found(
            "job_missing",
            format!("job {job_id} is in failed registry {queue:?} but its hash is gone"),
        )),
        Lookup::Corrupt { reason, .. } => Err(ApiError::conflict(
            "corrupt_job",
            format!("job {job_id} cannot be decoded ({reason}); it is left untouched"),
        )),
    }
}

/// Runs one manual write and maps its outcome to the API's answers.
async fn manual_write(
    app: &AppState,
    con: &mut ConnectionManager,
    snap: &Snapshot,
    who: &str,
    route: &str,
    f: &JobFacts,
    kind: WriteKind,
) -> ApiResult<()> {
    let actor = Actor::operator(who, route, &app.daemon.index, &app.daemon.instance);
    let planned = vec![Planned::manual(f, kind)];
    let outcome = actor
        .act(con, snap, &app.daemon.metrics, planned)
        .await?
        .remove(0)
        .outcome;
    match outcome.meaning() {
        Meaning::Done => {
            // An operator's write ends a hold at once (the gauge follows).
            app.daemon.held.release(&f.queue, &f.job_id);
            app.daemon.held.publish(&app.daemon.metrics);
            Ok(())
        }
        Meaning::Gone => Err(ApiError::not_found(
            "not_in_failed_registry",
            format!("job {} was moved or deleted meanwhile", f.job_id),
        )),
        Meaning::Conflict => Err(ApiError::conflict(
            "job_changed",
            format!(
                "job {} changed meanwhile (retried or failed again); try again",
                f.job_id
            ),
        )),
        Meaning::Refused => Err(refused(&f.job_id, &outcome)),
        // Manual writes pass the gate whatever the switches and the lease say, and are never
        // refused as stopped or succeeded (that is for policies' requeues).
        Meaning::HeldBack | Meaning::LeftToOperator => Err(ApiError::conflict(
            "write_refused",
            format!("job {} left as it was: {}", f.job_id, outcome.name()),
        )),
    }
}

/// The 409 answer to a refused manual write: `forbidden_by_acl` names a permission to grant,
/// every other refusal is `write_refused`.
fn refused(job_id: &str, outcome: &Outcome) -> ApiError {
    match outcome {
        Outcome::Refused(refusal) => ApiError::conflict(
            refusal.reason.error_code(),
            format!("job {job_id} left as it was: {refusal}"),
        ),
        Outcome::Error(e) => ApiError::conflict(
            "write_refused",
            format!("job {job_id} left as it was: Redis refused the write: {e}"),
        ),
        other => ApiError::conflict(
            "write_refused",
            format!("job {job_id} left as it was: {}", other.name()),
        ),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetryResult {
    pub job_id: String,
    pub queue: String,
    /// `queued`; on a dry run the job's status now (`failed`: nothing was written).
    pub status: String,
    /// True when nothing was written (`dry_run=true`): the job would be requeued.
    pub dry_run: bool,
    /// Conditions under which the deciding policy's `hold_when` would have held an automatic
    /// requeue back (no live RQ worker, queue too long). The retry is done anyway.
    /// Left out when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::hold::Warning>,
}

/// `dry_run` on a single-job action: answer what would happen, write nothing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SingleParams {
    /// Check that the job can be acted on and answer as if it were; write nothing.
    pub dry_run: Option<bool>,
}

/// The path parameter of the single-job routes under `/api/v1/failed-jobs/`.
pub(super) const ANY_JOB_ID: &str = "RQ job id, percent-encoded: any non-empty text (`clear`, `groups`, `%`, `/`, spaces, non-ASCII included)";

/// Requeues one failed job now (does not count as an automatic attempt). Takes any id.
#[utoipa::path(post, path = "/api/v1/failed-jobs/{job_id}/retry", params(("job_id" = String, Path, description = ANY_JOB_ID, min_length = 1), SingleParams), tag = "jobs",
    responses((status = 200, body = RetryResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn retry_job(
    State(app): State<AppState>,
    Who(who): Who,
    JobId(job_id): JobId,
    ApiQuery(p): ApiQuery<SingleParams>,
) -> ApiResult<Json<RetryResult>> {
    retry(
        &app,
        &who,
        "POST /api/v1/failed-jobs/{job_id}/retry",
        job_id,
        p,
    )
    .await
}

/// Requeues one failed job now, as `POST /api/v1/failed-jobs/{job_id}/retry` does (the
/// original route, kept as it was documented).
#[utoipa::path(post, path = "/api/v1/jobs/failed/{job_id}/retry", params(("job_id" = String, Path, description = JOB_ID_DESCRIPTION, min_length = 1), SingleParams), tag = "jobs",
    responses((status = 200, body = RetryResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn retry_one(
    State(app): State<AppState>,
    Who(who): Who,
    JobId(job_id): JobId,
    ApiQuery(p): ApiQuery<SingleParams>,
) -> ApiResult<Json<RetryResult>> {
    retry(
        &app,
        &who,
        "POST /api/v1/jobs/failed/{job_id}/retry",
        job_id,
        p,
    )
    .await
}

async fn retry(
    app: &AppState,
    who: &str,
    route: &str,
    job_id: String,
    p: SingleParams,
) -> ApiResult<Json<RetryResult>> {
    let mut con = app.redis()?;
    let snap = app.daemon.snapshot();
    let f = failed_job(&mut con, &snap, &job_id).await?;
    let dry_run = p.dry_run.unwrap_or(false);
    let warnings = crate::hold::manual_warnings(
        &mut con,
        &app.daemon.worlds,
        snap.registry.keys(),
        &snap.config.policies,
        &[&f],
    )
    .await?;
    if !dry_run {
        let kind = WriteKind::Requeue {
            attempt: None,
            at_front: false,
        };
        manual_write(app, &mut con, &snap, who, route, &f, kind).await?;
    }
    Ok(Json(RetryResult {
        job_id,
        queue: f.origin,
        status: if dry_run { "failed" } else { "queued" }.into(),
        dry_run,
        warnings,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteResult {
    pub job_id: String,
    /// False on a dry run (nothing was written).
    pub deleted: bool,
    /// True when nothing was written (`dry_run=true`): the job would be deleted.
    pub dry_run: bool,
}

/// Deletes one failed job: its registry entry, hash, dependency sets and results. Takes any
/// id.
#[utoipa::path(delete, path = "/api/v1/failed-jobs/{job_id}", params(("job_id" = String, Path, description = ANY_JOB_ID, min_length = 1), SingleParams), tag = "jobs",
    responses((status = 200, body = DeleteResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_job(
    State(app): State<AppState>,
    Who(who): Who,
    JobId(job_id): JobId,
    ApiQuery(p): ApiQuery<SingleParams>,
) -> ApiResult<Json<DeleteResult>> {
    delete(&app, &who, "DELETE /api/v1/failed-jobs/{job_id}", job_id, p).await
}

/// Deletes one failed job, as `DELETE /api/v1/failed-jobs/{job_id}` does (the original route,
/// kept as it was documented). A job whose id is `clear`, `groups` or `retry-all` cannot be
/// reached here: those paths are the bulk routes'.
#[utoipa::path(delete, path = "/api/v1/jobs/failed/{job_id}", params(("job_id" = String, Path, description = JOB_ID_DESCRIPTION, pattern = r"^(?!(clear|groups|retry-all)$)[\s\S]+$"), SingleParams), tag = "jobs",
    responses((status = 200, body = DeleteResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_one(
    State(app): State<AppState>,
    Who(who): Who,
    JobId(job_id): JobId,
    ApiQuery(p): ApiQuery<SingleParams>,
) -> ApiResult<Json<DeleteResult>> {
    delete(&app, &who, "DELETE /api/v1/jobs/failed/{job_id}", job_id, p).await
}

async fn delete(
    app: &AppState,
    who: &str,
    route: &str,
    job_id: String,
    p: SingleParams,
) -> ApiResult<Json<DeleteResult>> {
    let mut con = app.redis()?;
    let snap = app.daemon.snapshot();
    let f = failed_job(&mut con, &snap, &job_id).await?;
    let dry_run = p.dry_run.unwrap_or(false);
    if !dry_run {
        manual_write(app, &mut con, &snap, who, route, &f, WriteKind::Purge).await?;
    }
    Ok(Json(DeleteResult {
        job_id,
        deleted: !dry_run,
        dry_run,
    }))
}

/// Which policy decides this failed job, why the others do not, and when it is retried.
/// Takes any id.
#[utoipa::path(get, path = "/api/v1/failed-jobs/{job_id}/explain", params(("job_id" = String, Path, description = ANY_JOB_ID, min_length = 1)), tag = "jobs",
    responses((status = 200, body = Object, description = "the explanation"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn explain_job(
    State(app): State<AppState>,
    JobId(job_id): JobId,
) -> ApiResult<Json<Explanation>> {
    explanation(&app, &job_id).await
}

/// Which policy decides this failed job, as `GET /api/v1/failed-jobs/{job_id}/explain`
/// answers (the original route, kept as it was documented).
#[utoipa::path(get, path = "/api/v1/jobs/failed/{job_id}/explain", params(("job_id" = String, Path, description = JOB_ID_DESCRIPTION, min_length = 1)), tag = "jobs",
    responses((status = 200, body = Object, description = "the explanation"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn explain(
    State(app): State<AppState>,
    JobId(job_id): JobId,
) -> ApiResult<Json<Explanation>> {
    explanation(&app, &job_id).await
}

async fn explanation(app: &AppState, job_id: &str) -> ApiResult<Json<Explanation>> {
    let mut con = app.redis()?;
    let snap = app.daemon.snapshot();
    let f = failed_job(&mut con, &snap, job_id).await?;
    let mut e = explain::explain(&snap.config.policies, &f, Utc::now());
    if let Some((hold, target)) = explain::pending_hold(&snap.config.policies, &e) {
        let worlds = app
            .daemon
            .worlds
            .get(&mut con, snap.registry.keys(), &[target.as_str()])
            .await?;
        let world = worlds.get(&target).copied().unwrap_or_default();
        explain::hold(&mut e, &hold, &target, world);
    }
    Ok(Json(e))
}

/// Any job's state, not only failed ones.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobStatus {
    pub job_id: String,
    pub status: Option<String>,
    pub queue: Option<String>,
    pub enqueued_at: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub attempts: u32,
    /// The newest failure text, when there is one.
    pub exc_info: Option<String>,
    /// The failed registry holding the job, if any.
    pub failed_registry: Option<String>,
    /// rq-retryd marked this failure exhausted (`max_attempts` used up). Only while the job is
    /// failed: after RQ itself (or rq-dashboard) requeued it, the mark left in the hash
    /// describes a failure that is over.
    pub exhausted: bool,
    /// The call with its arguments, as RQ describes it (`description`).
    pub description: Option<String>,
}

/// The hash fields a status answer shows, in the order [`job_status`] reads them.
const STATUS_FIELDS: [&str; 9] = [
    "status",
    "origin",
    "enqueued_at",
    "started_at",
    "ended_at",
    "retryd_attempts",
    "exc_info",
    "retryd_exhausted",
    "description",
];

/// The status of any job.
#[utoipa::path(get, path = "/api/v1/jobs/status/{job_id}", params(("job_id" = String, Path, description = ANY_JOB_ID, min_length = 1)), tag = "jobs",
    responses((status = 200, body = JobStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn status(
    State(app): State<AppState>,
    JobId(job_id): JobId,
) -> ApiResult<Json<JobStatus>> {
    let mut con = app.redis()?;
    let snap = app.daemon.snapshot();
    let stored = snap
        .registry
        .read_job(&mut con, &job_id, &STATUS_FIELDS)
        .await?;
    let (fields, newest_result) = match stored {
        StoredJob::Missing => {
            return Err(ApiError::not_found(
                "no_such_job",
                format!("job {job_id} does not exist"),
            ))
        }
        StoredJob::NotAHash => {
            return Err(ApiError::conflict(
                "corrupt_job",
                format!("job {job_id} is not a hash"),
            ))
        }
        StoredJob::Hash {
            fields,
            newest_result,
        } => (fields, newest_result),
    };
    let failed_registry = snap.registry.find_failed(&mut con, &job_id).await?;
    Ok(Json(job_status(
        job_id,
        &fields,
        &newest_result,
        failed_registry,
    )))
}

/// A job's status from its [`STATUS_FIELDS`], its newest result and the failed registry
/// holding it.
fn job_status(
    job_id: String,
    fields: &[Option<Vec<u8>>],
    newest_result: &StreamFields,
    failed_registry: Option<String>,
) -> JobStatus {
    let get = |i: usize| {
        fields
            .get(i)
            .cloned()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .filter(|s| !s.is_empty())
    };
    let exc_info = newest_result
        .iter()
        .find(|(k, _)| k == b"exc_string")
        .and_then(|(_, v)| failure::from_exc_string(v).ok())
        .or_else(|| {
            fields
                .get(6)
                .cloned()
                .flatten()
                .filter(|b| !b.is_empty())
                .and_then(|b| failure::from_exc_info(&b).ok())
        })
        .map(|f| f.text);
    let status = get(0);
    // See: issue 11: the mark stays in the hash when someone else requeues the job.
    let exhausted = get(7).as_deref() == Some("1")
        && status.as_deref() == Some("failed")
        && failed_registry.is_some();
    JobStatus {
        job_id,
        status,
        queue: get(1),
        enqueued_at: get(2),
        started_at: get(3),
        ended_at: get(4),
        attempts: get(5).and_then(|a| a.parse().ok()).unwrap_or(0),
        exc_info,
        failed_registry,
        exhausted,
        description: get(8),
    }
}
