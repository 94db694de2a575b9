//! Bulk actions: retry-all and clear, with a selection (queue, function glob, exception type,
//! failure time window) and `dry_run`. They run as tracked tasks in bounded batches under the
//! daemon's requeue rate limit, so 200,000 failed jobs neither block Redis nor hold a request
//! open: the request waits up to `wait_ms` (default 20 s) and otherwise answers 202 with a task
//! id to follow at `GET /api/v1/tasks/{task_id}`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::jobs::{selected_queues, Who};
use super::AppState;
use crate::actions::{Actor, Planned};
use crate::executor::{Author, Outcome, Write, WriteKind, Writer};
use crate::glob::{ExceptionPattern, GlobList};
use crate::metrics::Trigger;
use crate::rq::{decode, DecodeOutcome, JobFacts};

/// Ids listed in a dry run's answer.
pub const DRY_RUN_MAX_IDS: usize = 100;
/// Finished tasks remembered for `GET /api/v1/tasks/{id}`.
pub const TASKS_KEPT: usize = 100;
const DEFAULT_WAIT_MS: u64 = 20_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BulkParams {
    /// Only this queue (1 to 512 characters).
    #[param(min_length = 1, max_length = 512)]
    pub queue: Option<String>,
    /// Glob over the dotted function name, e.g. `app.workers.*`: `*` and `?` only (no `[...]`
    /// classes, `{a,b}` alternates or `\\` escapes, which are refused).
    #[param(pattern = r"^[^\[\]{}\\]*$")]
    pub function: Option<String>,
    /// Exception type, bare (`TimeoutError`) or dotted; `*` and `?` globs only. Not blank.
    #[param(pattern = r"^[^\[\]{}\\]*[^\s\[\]{}\\][^\[\]{}\\]*$")]
    pub exception: Option<String>,
    /// Only jobs that failed before this time: RFC 3339 (`2026-01-31T12:00:00Z`), unix seconds,
    /// or that long ago (`15m`, `1h`, `2d`).
    #[param(value_type = Option<FailureTime>, inline)]
    pub failed_before: Option<String>,
    /// Only jobs that failed after this time: RFC 3339 (`2026-01-31T12:00:00Z`), unix seconds,
    /// or that long ago (`15m`, `1h`, `2d`).
    #[param(value_type = Option<FailureTime>, inline)]
    pub failed_after: Option<String>,
    /// Answer what would be touched; write nothing.
    pub dry_run: Option<bool>,
    /// How long to wait for the task before answering 202 (0 to 30000 ms, default 20000).
    #[param(minimum = 0, maximum = 30000)]
    pub wait_ms: Option<u64>,
}

/// The schema of a failure time in a filter: RFC 3339, unix seconds within ±10^11, or a time
/// ago (`15m`; what `parse_time` takes). Only a schema: the parameter itself is read as text.
pub struct FailureTime;

impl utoipa::PartialSchema for FailureTime {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type,
        };
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(-99_999_999_999.0))
                    .maximum(Some(99_999_999_999.0)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]{1,5}[smhdw]$"))
                    .description(Some("that long ago: 15m, 1h, 2d")),
            )
            .into()
    }
}

impl ToSchema for FailureTime {}

/// The selection, validated.
#[derive(Debug, Clone)]
pub(super) struct Filter {
    queue: Option<String>,
    function: Option<GlobList>,
    exception: Option<ExceptionPattern>,
    before: Option<DateTime<Utc>>,
    after: Option<DateTime<Utc>>,
    /// The selection as a query string (`?queue=emails&exception=TimeoutError`, empty for
    /// everything), for the audit's "why": a bulk entry says what it selected.
    text: String,
}

impl Filter {
    fn from_params(p: &BulkParams) -> ApiResult<Filter> {
        Filter::parse(
            p.queue.as_deref(),
            p.function.as_deref(),
            p.exception.as_deref(),
            p.failed_before.as_deref(),
            p.failed_after.as_deref(),
        )
    }

    /// The selection from its query parameters (the listing takes the same ones).
    pub(super) fn parse(
        queue: Option<&str>,
        function: Option<&str>,
        exception: Option<&str>,
        failed_before: Option<&str>,
        failed_after: Option<&str>,
    ) -> ApiResult<Filter> {
        // What the OpenAPI document declares is what is taken: a value it does not admit is
        // refused, not read by a richer parser (see: issue 19).
        check_glob("invalid_function", "function", function)?;
        check_glob("invalid_exception", "exception", exception)?;
        if exception.is_some_and(|e| e.trim().is_empty()) {
            return Err(ApiError::bad_request(
                "invalid_exception",
                "exception cannot be blank",
            ));
        }
        let mut text = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("queue", queue),
            ("function", function),
            ("exception", exception),
            ("failed_before", failed_before),
            ("failed_after", failed_after),
        ] {
            if let Some(value) = value {
                text.append_pair(name, value);
            }
        }
        let text = text.finish();
        let function = function
            .map(|f| {
                GlobList::new(&[f.to_string()])
                    .map_err(|e| ApiError::bad_request("invalid_function", e))
            })
            .transpose()?;
        let exception = exception
            .map(|e| {
                ExceptionPattern::new(e).map_err(|m| ApiError::bad_request("invalid_exception", m))
            })
            .transpose()?;
        Ok(Filter {
            text: if text.is_empty() {
                text
            } else {
                format!("?{text}")
            },
            queue: queue.map(str::to_string),
            function,
            exception,
            before: failed_before
                .map(|t| parse_time("failed_before", t))
                .transpose()?,
            after: failed_after
                .map(|t| parse_time("failed_after", t))
                .transpose()?,
        })
    }

    /// The same selection as an index query.
    pub(super) fn query(&self) -> crate::index::Query {
        crate::index::Query {
            queue: self.queue.clone(),
            function: self.function.clone(),
            exception: self.exception.clone(),
            failed_before: self.before,
            failed_after: self.after,
            policy: None,
            state: None,
        }
    }

    fn matches(&self, f: &JobFacts) -> bool {
        self.function
            .as_ref()
            .is_none_or(|g| f.func_name.as_deref().is_some_and(|n| g.is_match(n)))
            && self
                .exception
                .as_ref()
                .is_none_or(|e| f.exc_type().is_some_and(|t| e.is_match(t)))
            && self.before.is_none_or(|t| f.failed_at < t)
            && self.after.is_none_or(|t| f.failed_at > t)
    }
}

/// 400 with `code` for a filter glob with `[`, `]`, `{`, `}` or `\\`: the API's filters take
/// `*` and `?` only, as the OpenAPI document declares (policies in the config file take the
/// full glob syntax).
fn check_glob(code: &'static str, what: &str, glob: Option<&str>) -> ApiResult<()> {
    match glob {
        Some(g) if g.contains(['[', ']', '{', '}', '\\']) => Err(ApiError::bad_request(
            code,
            format!("{what} takes `*` and `?` globs only, not `[`, `]`, `{{`, `}}` or `\\`"),
        )),
        _ => Ok(()),
    }
}

fn parse_time(name: &str, text: &str) -> ApiResult<DateTime<Utc>> {
    if let Some(ago) = relative_time(text.trim()) {
        return Ok(Utc::now() - ago);
    }
    if let Ok(secs) = text.trim().parse::<f64>() {
        if secs.is_finite() && secs.abs() < 1e11 {
            if let Some(t) = Utc.timestamp_millis_opt((secs * 1000.0) as i64).single() {
                return Ok(t);
            }
        }
    }
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_time",
                format!(
                    "{name} must be RFC 3339 (2026-01-31T12:00:00Z), unix seconds, or a time ago such as 15m, 1h, 2d (s, m, h, d or w, up to 5 digits)"
                ),
            )
        })
}

/// A time ago as a person types it in a filter (issue 22, "relative times"): up to five digits
/// and one unit, `s`, `m`, `h`, `d` or `w` (`15m`, `1h`, `2d`); `None` for anything else.
fn relative_time(text: &str) -> Option<chrono::Duration> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    match unit {
        "s" => Some(chrono::Duration::seconds(n)),
        "m" => Some(chrono::Duration::minutes(n)),
        "h" => Some(chrono::Duration::hours(n)),
        "d" => Some(chrono::Duration::days(n)),
        "w" => Some(chrono::Duration::weeks(n)),
        _ => None,
    }
}

/// Warnings a bulk task's answer lists at most (one per queue and condition).
const MAX_WARNINGS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkAction {
    Retry,
    Clear,
}

/// A bulk task's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Running,
    Done,
    Failed,
}

/// Where a bulk task stands; also the final answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkResult {
    pub task_id: String,
    /// `retry-all` or `clear`.
    pub action: String,
    pub state: TaskState,
    pub dry_run: bool,
    /// Jobs that matched the selection (so far).
    pub matched_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requeued_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_count: Option<u64>,
    /// Jobs moved or changed by someone else meanwhile (left to them).
    pub conflicts: u64,
    /// Jobs whose write was refused before any change (a key of the wrong type, say): left
    /// exactly as they were; the log names the key.
    pub refused: u64,
    /// Entries skipped because they could not be decoded (never touched).
    pub skipped: u64,
    /// Matched jobs by exception type.
    pub by_exception: BTreeMap<String, u64>,
    /// Matched job ids (dry run only, at most 100).
    pub job_ids: Vec<String>,
    pub job_ids_truncated: bool,
    pub error: Option<String>,
    /// Set when the task stopped part-way (`interrupted`: Redis failed under it): with
    /// `error`, the answer is also an API error, and the counts say what was done before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// For `retry-all`: conditions under which the matched jobs' policies' `hold_when` would
    /// have held automatic requeues back (no live RQ worker, queue too long), one per queue
    /// and condition (at most 100). The jobs are requeued anyway. A dry run answered from the
    /// failure index carries none (it reads no job).
    /// Left out when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::hold::Warning>,
}

/// Bulk tasks, newest last; finished ones are dropped beyond [`TASKS_KEPT`].
#[derive(Debug, Default)]
pub struct Tasks {
    tasks: Mutex<VecDeque<Arc<Mutex<BulkResult>>>>,
}

impl Tasks {
    fn add(&self, task: Arc<Mutex<BulkResult>>) {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        tasks.push_back(task);
        while tasks.len() > TASKS_KEPT {
            let finished = tasks
                .iter()
                .position(|t| t.lock().expect("task lock").state != TaskState::Running);
            match finished {
                Some(i) => {
                    tasks.remove(i);
                }
                None => break,
            }
        }
    }

    fn get(&self, id: &str) -> Option<BulkResult> {
        let tasks = self.tasks.lock().expect("tasks lock");
        tasks
            .iter()
            .map(|t| t.lock().expect("task lock").clone())
            .find(|t| t.task_id == id)
    }
}

/// Requeues every failed job in the selection (manual: attempts are not counted).
#[utoipa::path(post, path = "/api/v1/jobs/failed/retry-all", params(BulkParams), tag = "bulk",
    responses((status = 200, body = BulkResult, description = "done; requeued_count says how many"), (status = 202, body = BulkResult, description = "still running; follow task_id"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody, description = "Redis unreachable; or the task was cut short part-way: the body is then the task's result, with `code` `interrupted`, `error`, and the counts of what was done")))]
pub async fn retry_all(
    State(app): State<AppState>,
    Who(who): Who,
    ApiQuery(p): ApiQuery<BulkParams>,
) -> ApiResult<Response> {
    start(app, who, BulkAction::Retry, p).await
}

/// Deletes every failed job in the selection (undecodable jobs are never deleted).
#[utoipa::path(delete, path = "/api/v1/jobs/failed/clear", params(BulkParams), tag = "bulk",
    responses((status = 200, body = BulkResult, description = "done; deleted_count says how many"), (status = 202, body = BulkResult, description = "still running; follow task_id"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody, description = "Redis unreachable; or the task was cut short part-way: the body is then the task's result, with `code` `interrupted`, `error`, and the counts of what was done")))]
pub async fn clear(
    State(app): State<AppState>,
    Who(who): Who,
    ApiQuery(p): ApiQuery<BulkParams>,
) -> ApiResult<Response> {
    start(app, who, BulkAction::Clear, p).await
}

/// A bulk task's progress or result.
#[utoipa::path(get, path = "/api/v1/tasks/{task_id}", params(("task_id" = String, Path, description = "from a 202 answer")), tag = "bulk",
    responses((status = 200, body = BulkResult), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn task(
    State(app): State<AppState>,
    Path(task_id): Path<String>,
) -> ApiResult<Json<BulkResult>> {
    app.tasks
        .get(&task_id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no_such_task", format!("no task {task_id:?}")))
}

async fn start(
    app: AppState,
    who: String,
    action: BulkAction,
    p: BulkParams,
) -> ApiResult<Response> {
    let filter = Filter::from_params(&p)?;
    let wait = p.wait_ms.unwrap_or(DEFAULT_WAIT_MS);
    if wait > 30_000 {
        return Err(ApiError::bad_request(
            "invalid_wait",
            "wait_ms must be between 0 and 30000",
        ));
    }
    let mut con = app.redis()?;
    let snap = app.daemon.snapshot();
    let queues = selected_queues(&app.daemon, &mut con, &snap, filter.queue.as_deref()).await?;
    let dry_run = p.dry_run.unwrap_or(false);
    let result = Arc::new(Mutex::new(BulkResult {
        task_id: new_task_id(),
        action: match action {
            BulkAction::Retry => "retry-all",
            BulkAction::Clear => "clear",
        }
        .into(),
        state: TaskState::Running,
        dry_run,
        matched_count: 0,
        requeued_count: (action == BulkAction::Retry).then_some(0),
        deleted_count: (action == BulkAction::Clear).then_some(0),
        conflicts: 0,
        refused: 0,
        skipped: 0,
        by_exception: BTreeMap::new(),
        job_ids: Vec::new(),
        job_ids_truncated: false,
        error: None,
        code: None,
        started_at: Utc::now(),
        finished_at: None,
        warnings: Vec::new(),
    }));
    app.tasks.add(result.clone());
    let progress = result.clone();
    let task_app = app.clone();
    let handle = tokio::spawn(async move {
        let outcome = run(
            &task_app, &who, action, &filter, &queues, dry_run, &progress,
        )
        .await;
        let mut r = progress.lock().expect("task lock");
        r.finished_at = Some(Utc::now());
        match outcome {
            Ok(()) => r.state = TaskState::Done,
            Err(e) => {
                r.state = TaskState::Failed;
                r.error = Some(format!(
                    "interrupted: {e}; the counts say what was done before (task {})",
                    r.task_id
                ));
                r.code = Some("interrupted");
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_millis(wait), handle).await;
    let snapshot = result.lock().expect("task lock").clone();
    let status = if snapshot.state == TaskState::Running {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    // Cut short by Redis: an error (503, with `error` and `code`), and still the whole
    // result, so the caller knows how many jobs were requeued or deleted before it stopped.
    let status = if snapshot.state == TaskState::Failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    Ok((status, Json(snapshot)).into_response())
}

fn new_task_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}-{}",
        Utc::now().timestamp_millis(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Batches of a bulk action read ahead of the one being written.
const BULK_READ_AHEAD: usize = 2;

async fn run(
    app: &AppState,
    who: &str,
    action: BulkAction,
    filter: &Filter,
    queues: &[String],
    dry_run: bool,
    progress: &Mutex<BulkResult>,
) -> redis::RedisResult<()> {
    let mut con = app
        .daemon
        .redis()
        .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "Redis not reached yet")))?;
    let snap = app.daemon.snapshot();
    let route = match action {
        BulkAction::Retry => "POST /api/v1/jobs/failed/retry-all",
        BulkAction::Clear => "DELETE /api/v1/jobs/failed/clear",
    };
    let why = format!("{route}{}", filter.text);
    let route = why.as_str();
    let query = filter.query();
    let covered = queues
        .iter()
        .all(|q| snap.config.supervisor.queues.is_match(q));
    // A dry run is answered from the index when the scans have built it: nothing is read
    // from Redis (it is as fresh as the index's `as_of`).
    if dry_run && covered {
        let (daemon, q) = (app.daemon.clone(), query.clone());
        let tally = tokio::task::spawn_blocking(move || {
            daemon
                .index
                .read()
                .map(|index| index.tally(&q, DRY_RUN_MAX_IDS))
        })
        .await
        .ok()
        .flatten();
        if let Some(tally) = tally.filter(|t| t.unknown == 0) {
            let mut r = progress.lock().expect("task lock");
            r.matched_count = tally.matched;
            r.skipped = tally.undecodable;
            r.by_exception = tally.by_exception;
            r.job_ids_truncated = tally.matched > tally.sample.len() as u64;
            r.job_ids = tally.sample;
            return Ok(());
        }
    }
    let batch = snap.config.supervisor.batch_size;
    for queue in queues {
        // The registry as it is now, so that an action misses no failure newer than the
        // index; of those ids, only the ones the selection may match are read.
        let listed = snap
            .registry
            .live_failed_ids(&mut con, queue, batch)
            .await?;
        let split = if covered {
            let (daemon, query, queue) = (app.daemon.clone(), query.clone(), queue.clone());
            tokio::task::spawn_blocking(move || {
                daemon
                    .index
                    .read()
                    .map(|index| index.to_read(&query, &queue, &listed.live, &listed.scores))
                    .ok_or(listed.live)
            })
            .await
            .map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Io, "index query failed", e.to_string()))
            })?
        } else {
            Err(listed.live)
        };
        let (known, mut check) = match split {
            Ok(split) => {
                progress.lock().expect("task lock").skipped += split.undecodable;
                (split.matches, split.check)
            }
            Err(all) => (Vec::new(), all),
        };
        // Jobs the index matched as they are now (same score: the same failure) need only what
        // the write compares: the facts the selection looked at are the index's.
        // The next batches are read while one is written (on a clone of the multiplexed
        // connection): one batch at a time, Redis idled between the read and the write round
        // trips. Reading ahead is safe, the writes compare what was read.
        let reader = con.clone();
        let registry = &snap.registry;
        // (Owned ids per batch: a closure over borrowed chunks is not Send enough for the
        // spawned task.)
        let batches: Vec<Vec<String>> = known
            .chunks(batch)
            .map(|chunk| chunk.iter().map(|k| k.id.clone()).collect())
            .collect();
        let mut reads = futures::stream::iter(batches)
            .map(|ids| {
                let mut con = reader.clone();
                async move {
                    registry
                        .read_jobs_with(&mut con, queue, &ids, crate::rq::Reads::DECISION)
                        .await
                }
            })
            .buffered(BULK_READ_AHEAD);
        let mut chunks = known.chunks(batch);
        while let Some(read) = reads.next().await {
            let raws = read?;
            let chunk = chunks.next().expect("one chunk per batch read");
            let mut selected = Vec::with_capacity(chunk.len());
            for (raw, k) in raws.iter().zip(chunk) {
                match decode(raw) {
                    DecodeOutcome::Job(f) if raw.score == Some(k.score) => {
                        selected.push((f, k.exception.clone()))
                    }
                    // Failed again, moved or changed since the index saw it: read it whole.
                    _ => check.push(k.id.clone()),
                }
            }
            settle(
                app, who, route, action, dry_run, &mut con, &snap, progress, 0, selected,
            )
            .await?;
        }
        for chunk in check.chunks(batch) {
            let mut selected = Vec::new();
            let mut undecodable: Vec<String> = Vec::new();
            for raw in snap.registry.read_jobs(&mut con, queue, chunk).await? {
                match decode(&raw) {
                    DecodeOutcome::Job(f) if filter.matches(&f) => {
                        let exception = f.exc_type().unwrap_or("(unknown)").to_string();
                        selected.push((f, exception))
                    }
                    DecodeOutcome::Job(_) => {}
                    DecodeOutcome::Orphan | DecodeOutcome::Corrupt(_) => {
                        undecodable.push(raw.job_id)
                    }
                }
            }
            // Jobs requeued or deleted by someone else between listing and reading are not
            // undecodable: they are simply gone.
            let skipped = if undecodable.is_empty() {
                0
            } else {
                let moved = snap
                    .registry
                    .moved_meanwhile(&mut con, queue, &undecodable)
                    .await?;
                (undecodable.len() - moved.len()) as u64
            };
            settle(
                app, who, route, action, dry_run, &mut con, &snap, progress, skipped, selected,
            )
            .await?;
        }
    }
    Ok(())
}

/// Counts one batch of selected jobs (with their exception type) and, unless a dry run, acts
/// on them through the one write path.
#[allow(clippy::too_many_arguments)]
async fn settle(
    app: &AppState,
    who: &str,
    route: &str,
    action: BulkAction,
    dry_run: bool,
    con: &mut redis::aio::ConnectionManager,
    snap: &crate::state::Snapshot,
    progress: &Mutex<BulkResult>,
    skipped: u64,
    selected: Vec<(Box<JobFacts>, String)>,
) -> redis::RedisResult<()> {
    {
        let mut r = progress.lock().expect("task lock");
        r.skipped += skipped;
        r.matched_count += selected.len() as u64;
        for (f, exception) in &selected {
            *r.by_exception.entry(exception.clone()).or_default() += 1;
            if dry_run {
                if r.job_ids.len() < DRY_RUN_MAX_IDS {
                    r.job_ids.push(f.job_id.clone());
                } else {
                    r.job_ids_truncated = true;
                }
            }
        }
    }
    if action == BulkAction::Retry && !selected.is_empty() {
        let jobs: Vec<&JobFacts> = selected.iter().map(|(f, _)| &**f).collect();
        let found = crate::hold::manual_warnings(
            con,
            &app.daemon.worlds,
            snap.registry.keys(),
            &snap.config.policies,
            &jobs,
        )
        .await?;
        let mut r = progress.lock().expect("task lock");
        for w in found {
            if r.warnings.len() < MAX_WARNINGS && !r.warnings.contains(&w) {
                r.warnings.push(w);
            }
        }
    }
    if dry_run || selected.is_empty() {
        return Ok(());
    }
    let kind = match action {
        BulkAction::Retry => WriteKind::Requeue {
            attempt: None,
            at_front: false,
        },
        BulkAction::Clear => WriteKind::Purge,
    };
    let planned: Vec<Planned> = selected
        .iter()
        .map(|(f, _)| Planned {
            write: Write::of(f, Author::Operator, kind),
            decision: "manual",
        })
        .collect();
    let actor = Actor {
        who,
        route: Some(route),
        trigger: Trigger::Manual,
        writer: Writer::Manual,
        index: Some(&app.daemon.index),
        instance: &app.daemon.instance,
    };
    let outcomes = actor.act(con, snap, &app.daemon.metrics, &planned).await?;
    // An operator's write ends a hold at once (the gauge follows).
    for ((f, _), outcome) in selected.iter().zip(&outcomes) {
        if matches!(outcome, Outcome::Requeued | Outcome::Purged) {
            app.daemon.held.release(&f.queue, &f.job_id);
        }
    }
    app.daemon.held.publish(&app.daemon.metrics);
    let done = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Requeued | Outcome::Purged))
        .count() as u64;
    let refused = outcomes.iter().filter(|o| o.is_refused()).count() as u64;
    let conflicts = outcomes.len() as u64 - done - refused;
    let mut r = progress.lock().expect("task lock");
    r.conflicts += conflicts;
    r.refused += refused;
    match action {
        BulkAction::Retry => *r.requeued_count.get_or_insert(0) += done,
        BulkAction::Clear => *r.deleted_count.get_or_insert(0) += done,
    }
    Ok(())
}
