//! Bulk actions: retry-all and clear, with a selection (the listing's filters: queue, function
//! glob, exception type, failure time window, policy, state) and `dry_run`. They touch exactly
//! the jobs the listing shows for the same filters (less the undecodable ones, never touched).
//! They run as tracked tasks in bounded batches under the daemon's requeue rate limit, so
//! 200,000 failed jobs neither block Redis nor hold a request open: the request waits up to
//! `wait_ms` (default 20 s) and otherwise answers 202 with a task id to follow at
//! `GET /api/v1/tasks/{task_id}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use redis::RedisResult;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiQuery, Who};
use super::selection::{selected_queues, SelectionParams};
use super::tasks::{self, new_task_id, BulkResult, Task, TaskState};
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
    /// Writes per second for this task (1 to `supervisor.max_requeues_per_second`), under the
    /// global limit as well; default: the global limit alone. A task with a rate writes one
    /// second's worth at a time, so a cancel stops it within about a second.
    #[param(value_type = Option<u32>, minimum = 1)]
    pub rate: Option<String>,
    /// Why (1 to 500 characters, no control characters): kept with the task and written to
    /// the audit's "why" (`api: <reason>; <route and selection>`).
    #[param(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub reason: Option<String>,
}

/// Gives every `rate` parameter of the OpenAPI document `doc` this daemon's global limit as its
/// maximum: the limit is configuration, which the annotations cannot know, and a client that
/// reads the document should not meet a 400 for a rate it declares valid.
pub fn declare_rate_limit(doc: &mut serde_json::Value, limit: u32) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let parameters = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("parameters")?.as_array_mut())
        .flatten();
    for parameter in parameters {
        if parameter["name"] == "rate" && parameter["in"] == "query" {
            parameter["schema"]["maximum"] = limit.into();
        }
    }
}

/// A bulk task's own rate and reason, as checked.
#[derive(Debug, Clone, Default)]
struct Control {
    rate: Option<u32>,
    reason: Option<String>,
}

impl BulkParams {
    /// The rate (1 to `limit`, the global requeue limit) and the reason, or 400
    /// `invalid_rate`/`invalid_reason`.
    fn control(&self, limit: u32) -> ApiResult<Control> {
        let reason = super::reason::checked(self.reason.as_deref())?.map(str::to_string);
        let rate = match self.rate.as_deref() {
            None => None,
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=limit).contains(&n) => Some(n),
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_rate",
                        format!("rate must be a whole number of writes per second from 1 to {limit} (supervisor.max_requeues_per_second)"),
                    ))
                }
            },
        };
        Ok(Control { rate, reason })
    }
}

impl Control {
    /// The audit's "why" for `route` (the route and the selection): the reason first, when
    /// one was given.
    fn why(&self, route: String) -> String {
        match &self.reason {
            Some(reason) => format!("api: {reason}; {route}"),
            None => route,
        }
    }
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

/// A task just started, nothing counted yet.
fn started(
    action: BulkAction,
    dry_run: bool,
    who: &str,
    control: &Control,
    instance: &str,
) -> BulkResult {
    let now = Utc::now();
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
        in_doubt: 0,
        skipped: 0,
        total: None,
        done: 0,
        rate: control.rate,
        reason: control.reason.clone(),
        who: who.to_string(),
        instance: instance.to_string(),
        cancel_requested_by: None,
        by_exception: BTreeMap::new(),
        by_state: None,
        job_ids: Vec::new(),
        job_ids_truncated: false,
        error: None,
        code: None,
        started_at: now,
        updated_at: now,
        finished_at: None,
        warnings: Vec::new(),
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
    let snap = app.daemon.snapshot();
    let control = p.control(snap.config.supervisor.max_requeues_per_second)?;
    let mut con = app.redis()?;
    let queues = selected_queues(&app.daemon, &mut con, &snap, selection.queue.as_deref()).await?;
    let dry_run = p.dry_run.unwrap_or(false);
    let task = Arc::new(Task::new(started(
        action,
        dry_run,
        &who,
        &control,
        &app.daemon.instance,
    )));
    app.tasks.add(task.clone());
    if !dry_run {
        // In Redis before the answer names it, so that every instance knows the id it gives.
        tasks::flush(&app, snap.registry.keys(), &task).await;
    }
    let bulk = BulkTask {
        app: app.clone(),
        who,
        why: control.why(format!("{}{}", action.route(), filters.as_query())),
        action,
        dry_run,
        selection,
        snap,
        task: task.clone(),
    };
    let handle = app.bulk_tasks.spawn(async move {
        tasks::run_owned(&bulk.app, &bulk.task, bulk.run(&queues)).await;
    });
    let _ = tokio::time::timeout(Duration::from_millis(wait), handle).await;
    let snapshot = task.snapshot();
    let status = match snapshot.state {
        TaskState::Running => StatusCode::ACCEPTED,
        // Cut short by Redis: an error (503, with `error` and `code`), and still the whole
        // result, so the caller knows how many jobs were requeued or deleted before it stopped.
        TaskState::Failed | TaskState::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
        TaskState::Done | TaskState::Cancelled => StatusCode::OK,
    };
    Ok((status, Json(snapshot)).into_response())
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
    task: Arc<Task>,
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
        let tally = match covered {
            true => self.index_tally().await,
            false => None,
        };
        match tally {
            Some(tally) if self.dry_run && tally.unknown == 0 => {
                self.answer_from_index(tally);
                return Ok(());
            }
            // What the progress counts towards; the index may know of a job not read yet.
            tally => {
                self.task.progress.lock().expect("task lock").total =
                    tally.map(|t| t.matched + t.unknown)
            }
        }
        for queue in queues {
            if self.task.cancelled() {
                break;
            }
            self.run_queue(&mut con, queue, covered).await?;
        }
        Ok(())
    }

    /// The index's count of the selection (with a sample of ids for a dry run); none while
    /// the index is not built.
    async fn index_tally(&self) -> Option<crate::index::Tally> {
        let (daemon, selection) = (self.app.daemon.clone(), self.selection.clone());
        let sample = if self.dry_run { DRY_RUN_MAX_IDS } else { 0 };
        tokio::task::spawn_blocking(move || {
            daemon
                .index
                .read()
                .map(|index| index.tally(&selection, sample))
        })
        .await
        .ok()
        .flatten()
    }

    /// Answers a dry run from the index's `tally` (nothing unknown in it).
    fn answer_from_index(&self, tally: crate::index::Tally) {
        let mut r = self.task.progress.lock().expect("task lock");
        r.done = tally.matched;
        r.matched_count = tally.matched;
        r.skipped = tally.undecodable;
        r.by_exception = tally.by_exception;
        r.by_state = Some(tally.by_state);
        r.job_ids_truncated = tally.matched > tally.sample.len() as u64;
        r.job_ids = tally.sample;
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
                self.task.progress.lock().expect("task lock").skipped += split.undecodable;
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
            if self.task.cancelled() {
                break;
            }
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
            if self.task.cancelled() {
                break;
            }
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
        for batch in selected.chunks(self.task.batch(selected.len())) {
            // A cancel stops here: the rest of the selection stays as it is.
            if !self.task.admit(batch.len()).await {
                break;
            }
            let outcomes = match self.write(con, batch).await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    self.in_doubt(batch.len());
                    return Err(e);
                }
            };
            self.record(&outcomes);
            tasks::flush(&self.app, self.snap.registry.keys(), &self.task).await;
        }
        Ok(())
    }

    /// Adds a batch to the matched and skipped counts (and, on a dry run, its ids).
    fn count(&self, skipped: u64, selected: &[Selected]) {
        let mut r = self.task.progress.lock().expect("task lock");
        r.skipped += skipped;
        r.matched_count += selected.len() as u64;
        r.total = r.total.map(|t| t.max(r.matched_count));
        if self.dry_run {
            r.done += selected.len() as u64;
        }
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
        let mut r = self.task.progress.lock().expect("task lock");
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

    /// Counts a batch whose write failed part-way: its script calls went out in one pipeline,
    /// and those Redis ran before it failed are never answered, so none of the batch can be
    /// counted as done or not done.
    fn in_doubt(&self, n: usize) {
        let mut r = self.task.progress.lock().expect("task lock");
        r.in_doubt += n as u64;
        r.done += n as u64;
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
        let mut r = self.task.progress.lock().expect("task lock");
        r.conflicts += conflicts;
        r.refused += refused;
        r.done += settled.len() as u64;
        match self.action {
            BulkAction::Retry => *r.requeued_count.get_or_insert(0) += done,
            BulkAction::Clear => *r.deleted_count.get_or_insert(0) += done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rate: Option<&str>, reason: Option<&str>) -> BulkParams {
        BulkParams {
            dry_run: None,
            wait_ms: None,
            rate: rate.map(str::to_string),
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn a_rate_is_a_whole_number_from_1_to_the_global_limit() {
        for ok in ["1", "200"] {
            let control = params(Some(ok), None).control(200).unwrap();
            assert_eq!(control.rate, Some(ok.parse().unwrap()));
        }
        assert_eq!(params(None, None).control(200).unwrap().rate, None);
        for bad in ["0", "201", "-1", "1.5", "", " 5", "abc", "4294967296"] {
            let e = params(Some(bad), None).control(200).unwrap_err();
            assert_eq!(e.code, "invalid_rate", "{bad:?}");
            assert!(e.message.contains("200"), "names the limit: {}", e.message);
        }
    }

    #[test]
    fn a_reason_leads_the_audits_why_and_a_bad_one_is_refused() {
        let control = params(None, Some("INC-7")).control(10).unwrap();
        assert_eq!(
            control.why("POST /r?queue=q".into()),
            "api: INC-7; POST /r?queue=q"
        );
        let none = params(None, None).control(10).unwrap();
        assert_eq!(none.why("POST /r".into()), "POST /r");
        let e = params(None, Some("a\nb")).control(10).unwrap_err();
        assert_eq!(e.code, "invalid_reason");
    }

    #[test]
    fn every_rate_parameter_of_the_document_gets_the_limit_as_its_maximum() {
        let mut doc = serde_json::json!({"paths": {
            "/a": {"post": {"parameters": [
                {"name": "rate", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                {"name": "queue", "in": "query", "schema": {"type": "string"}}]}},
            "/b": {"delete": {"parameters": [
                {"name": "rate", "in": "query", "schema": {"type": "integer"}}]}}}});
        declare_rate_limit(&mut doc, 300);
        assert_eq!(
            doc["paths"]["/a"]["post"]["parameters"][0]["schema"]["maximum"],
            300
        );
        assert_eq!(
            doc["paths"]["/b"]["delete"]["parameters"][0]["schema"]["maximum"],
            300
        );
        assert!(doc["paths"]["/a"]["post"]["parameters"][1]["schema"]["maximum"].is_null());
    }
}
