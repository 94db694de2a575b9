//! Bulk actions: retry-all and clear, with a selection (the listing's filters: queue, function
//! glob, exception type, failure time window, policy, state) and `dry_run`. They touch exactly
//! the jobs the listing shows for the same filters (less the undecodable ones, never touched).
//! They run as tracked tasks in bounded batches under the daemon's requeue rate limit, so
//! 200,000 failed jobs neither block Redis nor hold a request open: the request waits up to
//! `wait_ms` (default 20 s) and otherwise answers 202 with a task id to follow at
//! `GET /api/v1/tasks/{task_id}`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use redis::aio::ConnectionManager;
use redis::RedisResult;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiQuery, Who};
use super::selection::{selected_queues, SelectionParams};
use super::AppState;
use crate::actions::Settled;
use crate::actions::{Actor, Planned};
use crate::executor::{Meaning, WriteKind};
use crate::index::{KnownMatch, Selection};
use crate::rq::registry::FailedIds;
use crate::rq::{decode, DecodeOutcome, JobFacts};
use crate::state::Snapshot;

/// Ids listed in a dry run's answer.
pub const DRY_RUN_MAX_IDS: usize = 100;
/// Finished tasks remembered for `GET /api/v1/tasks/{id}`.
pub const TASKS_KEPT: usize = 100;
const DEFAULT_WAIT_MS: u64 = 20_000;

/// What a bulk action takes beside its selection ([`SelectionParams`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BulkParams {
    /// Answer what would be touched; write nothing.
    pub dry_run: Option<bool>,
    /// How long to wait for the task before answering 202 (0 to 30000 ms, default 20000).
    #[param(minimum = 0, maximum = 30000)]
    pub wait_ms: Option<u64>,
}

/// Warnings a bulk task's answer lists at most (one per queue and condition).
const MAX_WARNINGS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkAction {
    Retry,
    Clear,
}

impl BulkAction {
    /// The action's name in its answer.
    fn name(self) -> &'static str {
        match self {
            BulkAction::Retry => "retry-all",
            BulkAction::Clear => "clear",
        }
    }

    /// The action's route, for the audit's "why".
    fn route(self) -> &'static str {
        match self {
            BulkAction::Retry => "POST /api/v1/jobs/failed/retry-all",
            BulkAction::Clear => "DELETE /api/v1/jobs/failed/clear",
        }
    }
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
    /// Matched jobs by state (`waiting`: in backoff, an automatic retry or purge will come),
    /// when a dry run is answered from the failure index; left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_state: Option<BTreeMap<String, u64>>,
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

impl BulkResult {
    /// A task just started, nothing counted yet.
    fn started(action: BulkAction, dry_run: bool) -> BulkResult {
        BulkResult {
            task_id: new_task_id(),
            action: action.name().into(),
            state: TaskState::Running,
            dry_run,
            matched_count: 0,
            requeued_count: (action == BulkAction::Retry).then_some(0),
            deleted_count: (action == BulkAction::Clear).then_some(0),
            conflicts: 0,
            refused: 0,
            skipped: 0,
            by_exception: BTreeMap::new(),
            by_state: None,
            job_ids: Vec::new(),
            job_ids_truncated: false,
            error: None,
            code: None,
            started_at: Utc::now(),
            finished_at: None,
            warnings: Vec::new(),
        }
    }
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
#[utoipa::path(post, path = "/api/v1/jobs/failed/retry-all", params(SelectionParams, BulkParams), tag = "bulk",
    responses((status = 200, body = BulkResult, description = "done; requeued_count says how many"), (status = 202, body = BulkResult, description = "still running; follow task_id"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody, description = "Redis unreachable; or the task was cut short part-way: the body is then the task's result, with `code` `interrupted`, `error`, and the counts of what was done")))]
pub async fn retry_all(
    State(app): State<AppState>,
    Who(who): Who,
    ApiQuery(filters): ApiQuery<SelectionParams>,
    ApiQuery(p): ApiQuery<BulkParams>,
) -> ApiResult<Response> {
    start(app, who, BulkAction::Retry, filters, p).await
}

/// Deletes every failed job in the selection (undecodable jobs are never deleted).
#[utoipa::path(delete, path = "/api/v1/jobs/failed/clear", params(SelectionParams, BulkParams), tag = "bulk",
    responses((status = 200, body = BulkResult, description = "done; deleted_count says how many"), (status = 202, body = BulkResult, description = "still running; follow task_id"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody, description = "Redis unreachable; or the task was cut short part-way: the body is then the task's result, with `code` `interrupted`, `error`, and the counts of what was done")))]
pub async fn clear(
    State(app): State<AppState>,
    Who(who): Who,
    ApiQuery(filters): ApiQuery<SelectionParams>,
    ApiQuery(p): ApiQuery<BulkParams>,
) -> ApiResult<Response> {
    start(app, who, BulkAction::Clear, filters, p).await
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
    filters: SelectionParams,
    p: BulkParams,
) -> ApiResult<Response> {
    let selection = filters.selection()?;
    let wait = p.wait_ms.unwrap_or(DEFAULT_WAIT_MS);
    if wait > 30_000 {
        return Err(ApiError::bad_request(
            "invalid_wait",
            "wait_ms must be between 0 and 30000",
        ));
    }
    let mut con = app.redis()?;
    let snap = app.daemon.snapshot();
    let queues = selected_queues(&app.daemon, &mut con, &snap, selection.queue.as_deref()).await?;
    let dry_run = p.dry_run.unwrap_or(false);
    let result = Arc::new(Mutex::new(BulkResult::started(action, dry_run)));
    app.tasks.add(result.clone());
    let progress = result.clone();
    let task = BulkTask {
        app: app.clone(),
        who,
        why: format!("{}{}", action.route(), filters.as_query()),
        action,
        dry_run,
        selection,
        snap,
        progress: progress.clone(),
    };
    let handle = app.bulk_tasks.spawn(async move {
        let outcome = task.run(&queues).await;
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

/// A selected job and its exception type (as the index or the read knows it).
type Selected = (Box<JobFacts>, String);

/// One bulk action on one selection, as its steps share it: who asked, why, and where it
/// counts its progress.
struct BulkTask {
    app: AppState,
    who: String,
    /// The route and the selection as typed (`POST /api/v1/jobs/failed/retry-all?queue=x`):
    /// the audit's "why".
    why: String,
    action: BulkAction,
    dry_run: bool,
    selection: Selection,
    snap: Arc<Snapshot>,
    progress: Arc<Mutex<BulkResult>>,
}

impl BulkTask {
    /// Runs the action over `queues`: a dry run from the index when it can answer it, else
    /// queue by queue from the registries as they are now.
    async fn run(&self, queues: &[String]) -> RedisResult<()> {
        let mut con = self.app.daemon.redis().ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Io, "Redis not reached yet"))
        })?;
        let covered = queues
            .iter()
            .all(|q| self.snap.config.supervisor.queues.is_match(q));
        // A dry run is answered from the index when the scans have built it: nothing is read
        // from Redis (it is as fresh as the index's `as_of`).
        if self.dry_run && covered && self.tally_from_index().await {
            return Ok(());
        }
        for queue in queues {
            self.run_queue(&mut con, queue, covered).await?;
        }
        Ok(())
    }

    /// Answers a dry run from the index; false when it cannot (not built yet, or a job the
    /// selection may match has a fact not read yet).
    async fn tally_from_index(&self) -> bool {
        let (daemon, selection) = (self.app.daemon.clone(), self.selection.clone());
        let tally = tokio::task::spawn_blocking(move || {
            daemon
                .index
                .read()
                .map(|index| index.tally(&selection, DRY_RUN_MAX_IDS))
        })
        .await
        .ok()
        .flatten();
        let Some(tally) = tally.filter(|t| t.unknown == 0) else {
            return false;
        };
        let mut r = self.progress.lock().expect("task lock");
        r.matched_count = tally.matched;
        r.skipped = tally.undecodable;
        r.by_exception = tally.by_exception;
        r.by_state = Some(
            tally
                .by_state
                .into_iter()
                .map(|(state, n)| (state.name().to_string(), n))
                .collect(),
        );
        r.job_ids_truncated = tally.matched > tally.sample.len() as u64;
        r.job_ids = tally.sample;
        true
    }

    /// One queue's failed registry as it is now, so that an action misses no failure newer
    /// than the index: the jobs the index matches are settled on a light read, the others are
    /// read whole and matched.
    async fn run_queue(
        &self,
        con: &mut ConnectionManager,
        queue: &str,
        covered: bool,
    ) -> RedisResult<()> {
        let batch = self.snap.config.supervisor.batch_size;
        let listed = self
            .snap
            .registry
            .live_failed_ids(con, queue, batch)
            .await?;
        let (known, check) = self.split(queue, listed, covered).await?;
        let check = self.settle_known(con, queue, &known, check).await?;
        self.settle_checked(con, queue, &check).await
    }

    /// Of a registry's ids, only the ones the selection may match are read: the jobs the index
    /// matches as they are now, and the ids to read whole (all of them when the index does not
    /// cover the queue). Undecodable jobs the index knows are counted as skipped.
    async fn split(
        &self,
        queue: &str,
        listed: FailedIds,
        covered: bool,
    ) -> RedisResult<(Vec<KnownMatch>, Vec<String>)> {
        let split = if covered {
            let (daemon, selection, queue) = (
                self.app.daemon.clone(),
                self.selection.clone(),
                queue.to_string(),
            );
            tokio::task::spawn_blocking(move || {
                daemon
                    .index
                    .read()
                    .map(|index| index.to_read(&selection, &queue, &listed.live, &listed.scores))
                    .ok_or(listed.live)
            })
            .await
            .map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Io, "index query failed", e.to_string()))
            })?
        } else {
            Err(listed.live)
        };
        Ok(match split {
            Ok(split) => {
                self.progress.lock().expect("task lock").skipped += split.undecodable;
                (split.matches, split.check)
            }
            Err(all) => (Vec::new(), all),
        })
    }

    /// Settles the jobs the index matched as they are now (same score: the same failure): they
    /// need only what the write compares, since the facts the selection looked at are the
    /// index's. Returns `check` with the ones found changed since (to be read whole).
    async fn settle_known(
        &self,
        con: &mut ConnectionManager,
        queue: &str,
        known: &[KnownMatch],
        mut check: Vec<String>,
    ) -> RedisResult<Vec<String>> {
        let batch = self.snap.config.supervisor.batch_size;
        // The next batches are read while one is written (on a clone of the multiplexed
        // connection): one batch at a time, Redis idled between the read and the write round
        // trips. Reading ahead is safe, the writes compare what was read.
        let reader = con.clone();
        let registry = &self.snap.registry;
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
            self.settle(con, 0, selected).await?;
        }
        Ok(check)
    }

    /// Reads `check` whole, batch by batch, and settles the jobs the selection matches, as
    /// the policies decide them now.
    async fn settle_checked(
        &self,
        con: &mut ConnectionManager,
        queue: &str,
        check: &[String],
    ) -> RedisResult<()> {
        let policies = &self.snap.config.policies;
        for chunk in check.chunks(self.snap.config.supervisor.batch_size) {
            let now = Utc::now();
            let mut selected = Vec::new();
            let mut undecodable: Vec<String> = Vec::new();
            for raw in self.snap.registry.read_jobs(con, queue, chunk).await? {
                match decode(&raw) {
                    DecodeOutcome::Job(f) if self.selection.matches(&f, policies, now) => {
                        let exception = f.exc_type().unwrap_or("(unknown)").to_string();
                        selected.push((f, exception))
                    }
                    DecodeOutcome::Job(_) => {}
                    DecodeOutcome::Orphan | DecodeOutcome::Corrupt(_) => {
                        undecodable.push(raw.job_id)
                    }
                }
            }
            let skipped = self.still_undecodable(con, queue, &undecodable).await?;
            self.settle(con, skipped, selected).await?;
        }
        Ok(())
    }

    /// How many of the `undecodable` jobs read are still in the registry: jobs requeued or
    /// deleted by someone else between listing and reading are not undecodable, they are
    /// simply gone.
    async fn still_undecodable(
        &self,
        con: &mut ConnectionManager,
        queue: &str,
        undecodable: &[String],
    ) -> RedisResult<u64> {
        if undecodable.is_empty() {
            return Ok(0);
        }
        let moved = self
            .snap
            .registry
            .moved_meanwhile(con, queue, undecodable)
            .await?;
        Ok((undecodable.len() - moved.len()) as u64)
    }

    /// Counts one batch of selected jobs (with their exception type) and, unless a dry run,
    /// acts on them through the one write path.
    async fn settle(
        &self,
        con: &mut ConnectionManager,
        skipped: u64,
        selected: Vec<Selected>,
    ) -> RedisResult<()> {
        self.count(skipped, &selected);
        if self.action == BulkAction::Retry && !selected.is_empty() {
            self.warn(con, &selected).await?;
        }
        if self.dry_run || selected.is_empty() {
            return Ok(());
        }
        let outcomes = self.write(con, &selected).await?;
        self.record(&outcomes);
        Ok(())
    }

    /// Adds a batch to the matched and skipped counts (and, on a dry run, its ids).
    fn count(&self, skipped: u64, selected: &[Selected]) {
        let mut r = self.progress.lock().expect("task lock");
        r.skipped += skipped;
        r.matched_count += selected.len() as u64;
        for (f, exception) in selected {
            *r.by_exception.entry(exception.clone()).or_default() += 1;
            if self.dry_run {
                if r.job_ids.len() < DRY_RUN_MAX_IDS {
                    r.job_ids.push(f.job_id.clone());
                } else {
                    r.job_ids_truncated = true;
                }
            }
        }
    }

    /// Notes the conditions under which the batch's policies' `hold_when` would have held an
    /// automatic requeue back (the jobs are requeued anyway).
    async fn warn(&self, con: &mut ConnectionManager, selected: &[Selected]) -> RedisResult<()> {
        let jobs: Vec<&JobFacts> = selected.iter().map(|(f, _)| &**f).collect();
        let found = crate::hold::manual_warnings(
            con,
            &self.app.daemon.worlds,
            self.snap.registry.keys(),
            &self.snap.config.policies,
            &jobs,
        )
        .await?;
        let mut r = self.progress.lock().expect("task lock");
        for w in found {
            if r.warnings.len() < MAX_WARNINGS && !r.warnings.contains(&w) {
                r.warnings.push(w);
            }
        }
        Ok(())
    }

    /// Requeues or purges the batch through the one write path; an operator's write ends a
    /// hold at once (the gauge follows).
    async fn write(
        &self,
        con: &mut ConnectionManager,
        selected: &[Selected],
    ) -> RedisResult<Vec<Settled>> {
        let daemon = &self.app.daemon;
        let kind = match self.action {
            BulkAction::Retry => WriteKind::Requeue {
                attempt: None,
                at_front: false,
            },
            BulkAction::Clear => WriteKind::Purge,
        };
        let planned: Vec<Planned> = selected
            .iter()
            .map(|(f, _)| Planned::manual(f, kind))
            .collect();
        let actor = Actor::operator(&self.who, &self.why, &daemon.index, &daemon.instance);
        let settled = actor.act(con, &self.snap, &daemon.metrics, planned).await?;
        for s in &settled {
            if s.meaning() == Meaning::Done {
                daemon.held.release(&s.write.queue, &s.write.job_id);
            }
        }
        daemon.held.publish(&daemon.metrics);
        Ok(settled)
    }

    /// Adds a batch's outcomes to the counts: done, refused before any change, and conflicts
    /// (everything else is answered as a conflict, left to whoever moved the job; a manual
    /// write never meets the pause, the lease or the stopped/succeeded check).
    fn record(&self, settled: &[Settled]) {
        let (mut done, mut refused, mut conflicts) = (0, 0, 0);
        for s in settled {
            match s.meaning() {
                Meaning::Done => done += 1,
                Meaning::Refused => refused += 1,
                Meaning::Gone | Meaning::Conflict | Meaning::HeldBack | Meaning::LeftToOperator => {
                    conflicts += 1
                }
            }
        }
        let mut r = self.progress.lock().expect("task lock");
        r.conflicts += conflicts;
        r.refused += refused;
        match self.action {
            BulkAction::Retry => *r.requeued_count.get_or_insert(0) += done,
            BulkAction::Clear => *r.deleted_count.get_or_insert(0) += done,
        }
    }
}
