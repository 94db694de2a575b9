//! Bulk tasks as every instance sees them, and how an operator stops one.
//!
//! The instance that runs a task (its owner) keeps it in memory and writes it to Redis
//! (`<prefix>:retryd:task:<id>`, a hash kept a day) when it starts, after every written batch,
//! once a second and when it ends. Beside it the owner renews a beat
//! (`<prefix>:retryd:task:<id>:alive`, [`ALIVE_TTL`]): a task that says `running` without a
//! beat belonged to an instance that stopped, and is answered `interrupted` with the counts it
//! last wrote, never `running`. So any instance answers `GET /api/v1/tasks/{id}`, and any
//! instance takes `DELETE /api/v1/tasks/{id}`: it sets a flag in the hash that the owner reads
//! at its next beat; the owner stops between two batches and the jobs it has not written yet
//! stay where they were. A dry run writes nothing to Redis, its task included: only the
//! instance that runs it answers for it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Who;
use super::AppState;
use crate::limiter::RequeueLimiter;
use crate::rq::Keys;

/// Finished tasks this instance keeps in memory (Redis keeps every task a day).
pub const TASKS_KEPT: usize = 100;
/// How long a task stays readable in Redis after its last write.
pub const TASK_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the owner's beat lasts unless renewed: a task whose instance stopped reads as
/// interrupted at most this long after.
pub const ALIVE_TTL: Duration = Duration::from_secs(10);
/// How often the owner renews its beat, writes its counts and looks for a cancel request.
pub const BEAT: Duration = Duration::from_secs(1);
/// How long `DELETE /api/v1/tasks/{id}` waits for the task to stop before answering 202.
const CANCEL_WAIT: Duration = Duration::from_secs(3);
/// The longest task id there is (`<ms>-<n>-<8 hex>`); longer ones are not looked up.
const TASK_ID_MAX: usize = 64;

/// Where a bulk task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Running,
    Done,
    /// Redis failed under it (with `code` `interrupted` and `error`).
    Failed,
    /// Stopped by `DELETE /api/v1/tasks/{id}`: what it had not written stays as it was.
    Cancelled,
    /// Its instance stopped while it ran: the counts are the last it wrote.
    Interrupted,
}

impl TaskState {
    /// The name in the answer and in Redis.
    fn name(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Interrupted => "interrupted",
        }
    }
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
    /// Writes sent to Redis whose answers never came: Redis or the connection failed while a
    /// batch ran (the task then ends `failed`). Each of them was done or not; its audit entry
    /// says which. Counted in `done`, but neither in the requeued or deleted count nor in
    /// `conflicts` or `refused`.
    pub in_doubt: u64,
    /// Jobs the task expects to go through: the failure index's count when it started (null
    /// when the index could not tell), never less than `matched_count`; once done, the
    /// matched count.
    pub total: Option<u64>,
    /// Matched jobs gone through so far: requeued or deleted, conflicts, refused and in doubt
    /// (on a dry run, matched).
    pub done: u64,
    /// Writes per second this task paces itself to (`rate`), under the global limit; null:
    /// only the global limit.
    pub rate: Option<u32>,
    /// Why, as given with the action (`reason`); also in the audit's "why".
    pub reason: Option<String>,
    /// Who started it (token name and client address).
    pub who: String,
    /// The instance that runs (or ran) it.
    pub instance: String,
    /// Who asked to cancel it, when someone did.
    pub cancel_requested_by: Option<String>,
    /// Matched jobs by exception type.
    pub by_exception: std::collections::BTreeMap<String, u64>,
    /// Matched jobs by state (`waiting`: in backoff, an automatic retry or purge will come),
    /// when a dry run is answered from the failure index; left out otherwise.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "by_state_by_name"
    )]
    pub by_state: Option<std::collections::BTreeMap<crate::index::State, u64>>,
    /// Matched job ids (dry run only, at most 100).
    pub job_ids: Vec<String>,
    pub job_ids_truncated: bool,
    pub error: Option<String>,
    /// Set when the task stopped part-way (`interrupted`: Redis failed under it): with
    /// `error`, the answer is also an API error, and the counts say what was done before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    pub started_at: DateTime<Utc>,
    /// When its owner last wrote its counts.
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// For `retry-all`: conditions under which the matched jobs' policies' `hold_when` would
    /// have held automatic requeues back (no live RQ worker, queue too long), one per queue
    /// and condition (at most 100). The jobs are requeued anyway. A dry run answered from the
    /// failure index carries none (it reads no job).
    /// Left out when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::hold::Warning>,
}

/// A task this instance runs: its counts, its cancel switch and its own pace.
#[derive(Debug)]
pub struct Task {
    pub progress: Mutex<BulkResult>,
    cancel: CancellationToken,
    /// The task's own rate (`rate`), besides the global one every requeue waits for.
    rate: Option<u32>,
    pace: Option<RequeueLimiter>,
    /// Set when the instance shuts down under the task: it ends `interrupted`, not cancelled.
    shut_down: std::sync::atomic::AtomicBool,
}

impl Task {
    pub fn new(result: BulkResult) -> Task {
        Task {
            rate: result.rate,
            pace: result.rate.map(RequeueLimiter::new),
            progress: Mutex::new(result),
            cancel: CancellationToken::new(),
            shut_down: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The counts as they are now.
    pub fn snapshot(&self) -> BulkResult {
        self.progress.lock().expect("task lock").clone()
    }

    /// How many writes go out together: one second's worth at the task's rate (so it stops
    /// within a second of a cancel), else all of `len`.
    pub fn batch(&self, len: usize) -> usize {
        self.rate.map_or(len, |rate| rate as usize).max(1)
    }

    /// Waits until `n` more writes may go out at the task's rate; false once it is cancelled
    /// (then nothing more may be written).
    pub async fn admit(&self, n: usize) -> bool {
        if let Some(pace) = &self.pace {
            tokio::select! {
                _ = self.cancel.cancelled() => return false,
                _ = pace.acquire(n as u32) => {}
            }
        }
        !self.cancelled()
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Stops the task at its next batch; the first `who` to ask is kept.
    fn cancel_by(&self, who: &str) {
        let mut r = self.progress.lock().expect("task lock");
        if r.state == TaskState::Running && r.cancel_requested_by.is_none() {
            r.cancel_requested_by = Some(who.to_string());
        }
        drop(r);
        self.cancel.cancel();
    }

    /// Stops the task at its next batch because its instance shuts down.
    fn shut_down(&self) {
        self.shut_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.cancel.cancel();
    }

    /// Ends the task: done, cancelled (a cancel was asked and it stopped), interrupted (its
    /// instance shut down), or failed with `error` (its counts say what was done before).
    pub fn finish(&self, outcome: RedisResult<()>) {
        let mut r = self.progress.lock().expect("task lock");
        let now = Utc::now();
        r.finished_at = Some(now);
        r.updated_at = now;
        match outcome {
            Ok(()) if self.shut_down.load(std::sync::atomic::Ordering::Relaxed) => {
                r.state = TaskState::Interrupted;
                r.error = Some(format!(
                    "interrupted: its instance ({}) stopped; the counts say what was done before",
                    r.instance
                ));
            }
            Ok(()) if self.cancel.is_cancelled() => r.state = TaskState::Cancelled,
            Ok(()) => {
                r.state = TaskState::Done;
                r.total = Some(r.matched_count);
            }
            Err(e) => {
                r.state = TaskState::Failed;
                let doubt = match r.in_doubt {
                    0 => String::new(),
                    n => format!(
                        "; {n} writes were sent and not answered: each was done or not, the audit says which"
                    ),
                };
                r.error = Some(format!(
                    "interrupted: {e}; the counts say what was done before (task {}){doubt}",
                    r.task_id
                ));
                r.code = Some("interrupted");
            }
        }
    }
}

/// Bulk tasks this instance ran, newest last; finished ones are dropped beyond [`TASKS_KEPT`].
#[derive(Debug, Default)]
pub struct Tasks {
    tasks: Mutex<VecDeque<Arc<Task>>>,
}

impl Tasks {
    pub fn add(&self, task: Arc<Task>) {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        tasks.push_back(task);
        while tasks.len() > TASKS_KEPT {
            let finished = tasks
                .iter()
                .position(|t| t.snapshot().state != TaskState::Running);
            match finished {
                Some(i) => {
                    tasks.remove(i);
                }
                None => break,
            }
        }
    }

    fn get(&self, id: &str) -> Option<Arc<Task>> {
        let tasks = self.tasks.lock().expect("tasks lock");
        tasks
            .iter()
            .find(|t| t.progress.lock().expect("task lock").task_id == id)
            .cloned()
    }
}

/// A dry run's `by_state` as [`crate::index::counts_by_name`] sends it (left out when none).
fn by_state_by_name<S: serde::Serializer>(
    counts: &Option<std::collections::BTreeMap<crate::index::State, u64>>,
    to: S,
) -> Result<S::Ok, S::Error> {
    match counts {
        Some(counts) => crate::index::counts_by_name(counts, to),
        None => to.serialize_none(),
    }
}

/// A new task id, unique among instances: `<unix ms>-<n>-<8 random hex digits>`.
pub fn new_task_id() -> String {
    use ring::rand::SecureRandom;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut random = [0u8; 4];
    // A failed random source leaves zeros: the counter and the time still tell this
    // instance's tasks apart.
    let _ = ring::rand::SystemRandom::new().fill(&mut random);
    format!(
        "{}-{}-{:08x}",
        Utc::now().timestamp_millis(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        u32::from_be_bytes(random)
    )
}

/// Whether `id` can be a task id at all (so that no other key is ever read as a task).
fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= TASK_ID_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Writes the task's counts to Redis and renews (or, once it ended, drops) the owner's beat;
/// returns who asked to cancel it, if anyone did.
async fn save<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &Keys,
    result: &BulkResult,
) -> RedisResult<Option<String>> {
    let (key, alive) = (
        keys.retryd_task(&result.task_id),
        keys.retryd_task_alive(&result.task_id),
    );
    let json = serde_json::to_string(result).expect("a task encodes");
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hset_multiple(
            &key,
            &[
                ("state", result.state.name()),
                ("owner", &result.instance),
                ("updated_at", &result.updated_at.to_rfc3339()),
                ("result", &json),
            ],
        )
        .ignore()
        .expire(&key, TASK_TTL.as_secs() as i64)
        .ignore();
    if result.state == TaskState::Running {
        pipe.pset_ex(&alive, &result.instance, ALIVE_TTL.as_millis() as u64)
            .ignore();
    } else {
        pipe.del(&alive).ignore();
    }
    pipe.hget(&key, "cancel_requested_by");
    let (asked,): (Option<String>,) = pipe.query_async(con).await?;
    Ok(asked)
}

/// Runs `work` as `task`'s owner: the task is in Redis before the first write, its counts
/// follow once a second (with the beat and a look for a cancel request) and once more when
/// it ends. A dry run writes nothing, not even its task: only this instance knows it.
pub async fn run_owned<F>(app: &AppState, task: &Task, work: F)
where
    F: Future<Output = RedisResult<()>>,
{
    if task.snapshot().dry_run {
        task.finish(work.await);
        return;
    }
    let keys = app.daemon.snapshot().registry.keys().clone();
    tokio::pin!(work);
    let outcome = tokio::select! {
        outcome = &mut work => outcome,
        never = keep(app, &keys, task) => match never {},
    };
    task.finish(outcome);
    flush(app, &keys, task).await;
}

/// Writes the task's counts now; a Redis failure is only logged (the task's own writes meet
/// it too and end the task).
pub async fn flush(app: &AppState, keys: &Keys, task: &Task) {
    let Some(mut con) = app.daemon.redis() else {
        return;
    };
    let snapshot = {
        let mut r = task.progress.lock().expect("task lock");
        r.updated_at = Utc::now();
        r.clone()
    };
    match save(&mut con, keys, &snapshot).await {
        Ok(Some(who)) => task.cancel_by(&who),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(task = %snapshot.task_id, error = %e, "cannot write a bulk task's progress to Redis")
        }
    }
}

/// The owner's beat: every [`BEAT`], the counts, the beat and a look for a cancel request.
/// Once the daemon shuts down (it closes the bulk task tracker before it waits for the tasks)
/// the task stops at its next batch and ends `interrupted`, with its counts, at once.
async fn keep(app: &AppState, keys: &Keys, task: &Task) -> std::convert::Infallible {
    loop {
        if app.bulk_tasks.is_closed() {
            task.shut_down();
        }
        flush(app, keys, task).await;
        tokio::time::sleep(BEAT).await;
    }
}

/// A task as Redis holds it, for an instance that does not run it.
struct Stored {
    answer: serde_json::Value,
    state: TaskState,
}

/// The task `id` from Redis, `interrupted` when it says running and its owner's beat is gone.
async fn load<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &Keys,
    id: &str,
) -> RedisResult<Option<Stored>> {
    let key = keys.retryd_task(id);
    type Fields = (Option<String>, Option<String>, Option<String>);
    let ((state, result, asked), alive): (Fields, bool) = redis::pipe()
        .cmd("HMGET")
        .arg(&key)
        .arg("state")
        .arg("result")
        .arg("cancel_requested_by")
        .exists(keys.retryd_task_alive(id))
        .query_async(con)
        .await?;
    let Some(mut answer) = result.and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
    else {
        return Ok(None);
    };
    let state = state
        .and_then(|s| serde_json::from_value(serde_json::Value::String(s)).ok())
        .unwrap_or(TaskState::Interrupted);
    let state = match state {
        TaskState::Running if !alive => TaskState::Interrupted,
        other => other,
    };
    answer["state"] = state.name().into();
    if let (Some(who), true) = (asked, answer["cancel_requested_by"].is_null()) {
        answer["cancel_requested_by"] = who.into();
    }
    Ok(Some(Stored { answer, state }))
}

fn no_such_task(id: &str) -> ApiError {
    ApiError::not_found("no_such_task", format!("no task {id:?}"))
}

/// The task `id` as this instance knows it (it runs it) or as Redis holds it.
async fn find(app: &AppState, id: &str) -> ApiResult<Stored> {
    if let Some(task) = app.tasks.get(id) {
        let r = task.snapshot();
        return Ok(Stored {
            state: r.state,
            answer: serde_json::to_value(r).expect("a task encodes"),
        });
    }
    if !plausible_id(id) {
        return Err(no_such_task(id));
    }
    let mut con = app.redis()?;
    let keys = app.daemon.snapshot().registry.keys().clone();
    load(&mut con, &keys, id)
        .await?
        .ok_or_else(|| no_such_task(id))
}

/// A bulk task's progress or result, from whichever instance runs or ran it; a task whose
/// instance stopped is `interrupted`, with the counts it last wrote.
#[utoipa::path(get, path = "/api/v1/tasks/{task_id}", params(("task_id" = String, Path, description = "from a 202 answer")), tag = "bulk",
    responses((status = 200, body = BulkResult), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn task(
    State(app): State<AppState>,
    Path(task_id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(find(&app, &task_id).await?.answer))
}

/// What a cancel request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    NoSuchTask,
    /// Running: asked to stop.
    Running,
    Finished,
    Interrupted,
}

/// Sets the cancel flag of a running task in Redis (cancel.lua); what it found, and the
/// task's state then.
async fn ask_cancel<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &Keys,
    id: &str,
    who: &str,
) -> RedisResult<(Found, String)> {
    static SCRIPT: std::sync::LazyLock<Script> =
        std::sync::LazyLock::new(|| Script::new(include_str!("tasks/cancel.lua")));
    let (code, state): (i64, String) = SCRIPT
        .key(keys.retryd_task(id))
        .key(keys.retryd_task_alive(id))
        .arg(who)
        .arg(Utc::now().to_rfc3339())
        .invoke_async(con)
        .await?;
    let asked = match code {
        1 => Found::Running,
        2 => Found::Finished,
        3 => Found::Interrupted,
        _ => Found::NoSuchTask,
    };
    Ok((asked, state))
}

/// Cancels a running bulk task, on whichever instance it runs: it stops before its next
/// batch, and the jobs it has not requeued or deleted yet stay in their failed registries.
/// 200 with the task once it has stopped (state `cancelled`, or `done` when it finished
/// first); 202 while it is still stopping (follow it at `GET /api/v1/tasks/{task_id}`); 409
/// when it had finished or was interrupted already.
#[utoipa::path(delete, path = "/api/v1/tasks/{task_id}", params(("task_id" = String, Path, description = "from a 202 answer")), tag = "bulk",
    responses((status = 200, body = BulkResult, description = "stopped; the counts say what it did"), (status = 202, body = BulkResult, description = "asked to stop; still stopping"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "`task_finished`: it had finished, been cancelled or been interrupted already"), (status = 503, body = ErrorBody)))]
pub async fn cancel(
    State(app): State<AppState>,
    Who(who): Who,
    Path(task_id): Path<String>,
) -> ApiResult<Response> {
    let local = app.tasks.get(&task_id);
    if local.is_none() && !plausible_id(&task_id) {
        return Err(no_such_task(&task_id));
    }
    // Read before asking: this instance's task follows the request written below and may
    // have stopped by the time the answer comes back, which is this cancel, not an earlier one.
    let local_running = local
        .as_ref()
        .is_some_and(|t| t.snapshot().state == TaskState::Running);
    let keys = app.daemon.snapshot().registry.keys().clone();
    let asked = match (app.redis(), &local) {
        (Ok(mut con), _) => Some(ask_cancel(&mut con, &keys, &task_id, &who).await?),
        // Redis is away: a task of this instance is still stopped here.
        (Err(_), Some(_)) => None,
        (Err(e), None) => return Err(e),
    };
    match asked {
        Some((Found::Finished, state)) if !local_running => return Err(finished(&task_id, &state)),
        Some((Found::Interrupted, state)) => return Err(finished(&task_id, &state)),
        Some((Found::NoSuchTask, _)) if local.is_none() => return Err(no_such_task(&task_id)),
        _ => {}
    }
    if let Some(task) = &local {
        if !local_running {
            return Err(finished(&task_id, task.snapshot().state.name()));
        }
        task.cancel_by(&who);
    }
    tracing::info!(task = %task_id, who, "bulk task cancel requested");
    let stopped = stopped_within(&app, &task_id, CANCEL_WAIT).await?;
    let status = if stopped.state == TaskState::Running {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stopped.answer)).into_response())
}

fn finished(id: &str, state: &str) -> ApiError {
    ApiError::conflict(
        "task_finished",
        format!("task {id:?} is not running (it is {state}): there is nothing to cancel"),
    )
}

/// The task once it is no longer running, or as it is after `wait`.
async fn stopped_within(app: &AppState, id: &str, wait: Duration) -> ApiResult<Stored> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let found = find(app, id).await?;
        if found.state != TaskState::Running || tokio::time::Instant::now() >= deadline {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_plausible_and_other_keys_are_not() {
        let id = new_task_id();
        assert!(plausible_id(&id), "{id}");
        assert_ne!(id, new_task_id());
        for other in ["", "1:alive", "../x", "clear%2F", "é", &"1".repeat(65)] {
            assert!(!plausible_id(other), "{other:?}");
        }
    }
}
