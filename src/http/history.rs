//! One job's history (`GET /api/v1/failed-jobs/{job_id}/history`): every run RQ recorded in
//! its results stream, interleaved with rq-retryd's and operators' actions on it from the audit,
//! newest first. The history is of the job, not of its failed entry: it answers as well after
//! the job was requeued and succeeded or failed again. See: issue 22, item 3.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::{RedisResult, Value};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::JobId;
use super::AppState;
use crate::audit::filter::AuditFilter;
use crate::audit::mirror::{Page, ReadError};
use crate::audit::AuditEntry;
use crate::rq::exception::{final_exception, ExceptionLine};
use crate::rq::failure::from_exc_info;
use crate::rq::job::{parse_rq_timestamp, StreamFields};
use crate::rq::runs::{run_of, stream_time, Run, RunOutcome};
use crate::rq::Keys;

/// Results entries read at most (RQ keeps 10; a stream someone else filled costs no more).
pub const MAX_RUNS: usize = 50;
/// Audit entries naming the job listed at most (the newest).
pub const MAX_ACTIONS: usize = 500;
/// A message longer than this is cut (at its end) and marked `message_truncated`; the whole
/// traceback stays in `GET /api/v1/jobs/status/{job_id}`.
pub const MESSAGE_MAX: usize = 64 * 1024;

/// What happened to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A run that raised (RQ's result type 2).
    FailedRun,
    SucceededRun,
    /// A run stopped on purpose (`rq job stop`).
    StoppedRun,
    /// A failed run RQ's own `Retry` scheduled again.
    RetriedRun,
    /// A failed run with RQ's own `Retry` used up.
    RetriesExceededRun,
    /// A results entry whose type cannot be read (see `unreadable`).
    UnreadableRun,
    /// rq-retryd requeued it by policy.
    Requeue,
    /// An operator requeued it through the API or the console.
    OperatorRetry,
    /// rq-retryd purged it by policy.
    Purge,
    /// An operator deleted it.
    OperatorDelete,
    /// rq-retryd marked its failure exhausted (`max_attempts` used up).
    MarkedExhausted,
    /// An audit entry of an action this version does not know (see `action`).
    OtherAction,
}

/// Where an event was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    /// RQ's results stream `rq:results:<id>`.
    Results,
    /// The job hash (`status`, `ended_at`, `exc_info`): a failure with no results entry, as
    /// RQ before 1.12 (or on Redis before 5) records it, or once its results expired.
    JobHash,
    /// rq-retryd's audit stream.
    Audit,
}

/// One event of a job's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEvent {
    /// When it happened, by the Redis clock (the stream entry's time; for a `job_hash` event,
    /// RQ's `ended_at`). `null` only when unreadable.
    pub at: Option<DateTime<Utc>>,
    pub kind: EventKind,
    pub source: EventSource,
    /// The results or audit stream entry id.
    pub entry_id: Option<String>,
    /// The worker that ran it (RQ 2.x), or who acted (`supervisor`, `token@address`).
    pub who: Option<String>,
    /// For an action: the policy, or the API route of an operator's action.
    pub why: Option<String>,
    /// For an action: the audit's action name (`requeue`, `purge`, `mark_exhausted`, ...).
    pub action: Option<String>,
    /// For an action: the failed registry's queue.
    pub queue: Option<String>,
    /// For a requeue: the queue it went to.
    pub to_queue: Option<String>,
    /// For an action: how many jobs the action touched in all (this one among them).
    pub count: Option<u64>,
    /// For a failed run: the final exception's type (`ValueError`).
    pub exc_type: Option<String>,
    /// For a failed run: the final exception's whole message.
    pub message: Option<String>,
    pub message_truncated: bool,
    /// What of the stored event could not be read, if anything.
    pub unreadable: Option<String>,
}

/// A job's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobHistory {
    pub job_id: String,
    /// RQ's status now (`failed`, `queued`, `finished`, ...); `null` when the job hash is gone.
    pub status: Option<String>,
    /// The job's queue (`origin`); `null` when the job hash is gone.
    pub queue: Option<String>,
    /// Newest first.
    pub events: Vec<HistoryEvent>,
    /// Audit entries searched for this job (the whole capped stream, unless more than
    /// [`MAX_ACTIONS`] name it).
    pub audit_searched: u64,
    /// More audit entries named the job than are listed; the oldest were left out.
    pub audit_truncated: bool,
    /// What could not be read (a key of the wrong type), for people.
    pub notes: Vec<String>,
}

/// The job's history: its runs from RQ's results stream and the actions on it from the audit,
/// newest first. Takes any id; 404 only when neither the job, nor a result, nor an audit entry
/// naming it exists. An audit entry lists every job of its action (`job_ids_json`), so each is
/// found; only entries written before that (at most 100 ids listed) may miss one.
#[utoipa::path(get, path = "/api/v1/failed-jobs/{job_id}/history", params(("job_id" = String, Path, description = super::jobs::ANY_JOB_ID, min_length = 1)), tag = "jobs",
    responses((status = 200, body = JobHistory), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn history(
    State(app): State<AppState>,
    JobId(job_id): JobId,
) -> ApiResult<Json<JobHistory>> {
    let mut con = app.redis()?;
    let keys = Keys::new(&app.daemon.config().redis.key_prefix);
    let stored = read_stored(&mut con, &keys, &job_id).await?;
    let mut notes = stored.notes.clone();
    // The entries naming this job, from the audit's in-memory summary (`audit::mirror`, the
    // same one `GET /api/v1/audit?job_id=` answers from).
    let named = AuditFilter {
        job_id: Some(job_id.clone()),
        ..AuditFilter::default()
    };
    let mentions = match app
        .audit
        .page(&mut con, &keys.retryd_audit(), &named, None, MAX_ACTIONS)
        .await
    {
        Ok(page) => page,
        Err(ReadError::NotAStream) => {
            notes.push("the audit key is not a stream: no actions shown".into());
            Page::default()
        }
        Err(ReadError::Redis(e)) => return Err(e.into()),
    };
    if !stored.hash_exists && stored.runs.is_empty() && mentions.entries.is_empty() {
        return Err(ApiError::not_found(
            "no_such_job",
            format!("job {job_id} has no hash, no results and no audit entry"),
        ));
    }
    let mut events: Vec<HistoryEvent> = stored.runs.iter().map(run_event).collect();
    if stored.runs.is_empty() {
        events.extend(hash_failure(&stored));
    }
    events.extend(mentions.entries.iter().map(audit_event));
    // Newest first; events of one instant keep the order above (runs before actions).
    events.sort_by_key(|e| std::cmp::Reverse(e.at));
    Ok(Json(JobHistory {
        job_id,
        status: stored.status,
        queue: stored.origin,
        events,
        audit_searched: mentions.searched as u64,
        audit_truncated: mentions.next_cursor.is_some(),
        notes,
    }))
}

/// What RQ keeps about the job: its hash's fields the history needs, and its runs.
#[derive(Debug, Default)]
struct Stored {
    hash_exists: bool,
    status: Option<String>,
    origin: Option<String>,
    ended_at: Option<String>,
    exc_info: Option<Vec<u8>>,
    /// Newest first.
    runs: Vec<Run>,
    notes: Vec<String>,
}

/// The hash fields [`read_stored`] asks for, in order.
const FIELDS: [&str; 4] = ["status", "origin", "ended_at", "exc_info"];

/// Reads the job hash and its newest [`MAX_RUNS`] results in one pipelined round trip. A key
/// of the wrong type is a note, not an error.
async fn read_stored(
    con: &mut ConnectionManager,
    keys: &Keys,
    job_id: &str,
) -> RedisResult<Stored> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe.cmd("EXISTS").arg(keys.job(job_id));
    pipe.cmd("HMGET").arg(keys.job(job_id)).arg(&FIELDS[..]);
    pipe.cmd("XREVRANGE")
        .arg(keys.results(job_id))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(MAX_RUNS);
    let replies: Vec<RedisResult<Value>> = pipe.query_async(con).await?;
    let mut replies = replies.into_iter();
    let mut stored = Stored {
        hash_exists: matches!(replies.next(), Some(Ok(Value::Int(n))) if n > 0),
        ..Stored::default()
    };
    match replies.next() {
        Some(Ok(value)) => {
            let fields: Vec<Option<Vec<u8>>> = redis::from_redis_value(value).unwrap_or_default();
            let text = |i: usize| {
                fields
                    .get(i)
                    .cloned()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .filter(|s| !s.is_empty())
            };
            stored.status = text(0);
            stored.origin = text(1);
            stored.ended_at = text(2);
            stored.exc_info = fields.get(3).cloned().flatten().filter(|b| !b.is_empty());
        }
        _ => stored
            .notes
            .push("the job key is not a hash: RQ's fields cannot be read".into()),
    }
    match replies.next() {
        Some(Ok(value)) => match redis::from_redis_value::<Vec<(String, StreamFields)>>(value) {
            Ok(entries) => stored.runs = entries.iter().map(|(id, f)| run_of(id, f)).collect(),
            Err(_) => stored
                .notes
                .push("the results stream's entries are malformed".into()),
        },
        _ => stored
            .notes
            .push("the results key is not a stream: RQ's runs cannot be read".into()),
    }
    Ok(stored)
}

fn event(kind: EventKind, source: EventSource) -> HistoryEvent {
    HistoryEvent {
        at: None,
        kind,
        source,
        entry_id: None,
        who: None,
        why: None,
        action: None,
        queue: None,
        to_queue: None,
        count: None,
        exc_type: None,
        message: None,
        message_truncated: false,
        unreadable: None,
    }
}

fn run_event(run: &Run) -> HistoryEvent {
    let kind = match run.outcome {
        Some(RunOutcome::Failed) => EventKind::FailedRun,
        Some(RunOutcome::Succeeded) => EventKind::SucceededRun,
        Some(RunOutcome::Stopped) => EventKind::StoppedRun,
        Some(RunOutcome::Retried) => EventKind::RetriedRun,
        Some(RunOutcome::RetriesExceeded) => EventKind::RetriesExceededRun,
        None => EventKind::UnreadableRun,
    };
    let mut e = event(kind, EventSource::Results);
    e.at = run.at;
    e.entry_id = Some(run.entry_id.clone());
    e.who = run.worker_name.clone().filter(|w| !w.is_empty());
    if let Some(exception) = &run.exception {
        with_exception(&mut e, exception);
    }
    if !run.unreadable.is_empty() {
        let reasons: Vec<String> = run.unreadable.iter().map(ToString::to_string).collect();
        e.unreadable = Some(reasons.join("; "));
    }
    e
}

fn with_exception(e: &mut HistoryEvent, exception: &ExceptionLine) {
    e.exc_type = exception.exc_type.clone();
    let (message, cut) = cut_message(&exception.message);
    e.message = Some(message);
    e.message_truncated = cut;
}

/// `message` cut to [`MESSAGE_MAX`] bytes at a character boundary, and whether it was cut.
fn cut_message(message: &str) -> (String, bool) {
    if message.len() <= MESSAGE_MAX {
        return (message.to_string(), false);
    }
    let mut end = MESSAGE_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    (message[..end].to_string(), true)
}

/// The failure the job hash records when no results entry does (RQ < 1.12, Redis < 5, or the
/// results expired): only while the job is failed.
fn hash_failure(stored: &Stored) -> Option<HistoryEvent> {
    if stored.status.as_deref() != Some("failed") {
        return None;
    }
    let mut e = event(EventKind::FailedRun, EventSource::JobHash);
    e.at = stored.ended_at.as_deref().and_then(parse_rq_timestamp);
    if e.at.is_none() {
        e.unreadable = Some("the job hash has no readable ended_at".into());
    }
    match stored.exc_info.as_deref().map(from_exc_info) {
        Some(Ok(failure)) => with_exception(&mut e, &final_exception(&failure.text)),
        Some(Err(reason)) => e.unreadable = Some(format!("its exc_info cannot be read: {reason}")),
        None => {}
    }
    Some(e)
}

fn audit_event(entry: &AuditEntry) -> HistoryEvent {
    let automatic = crate::audit::AUTOMATIC_WHO.contains(&entry.who.as_str());
    let kind = match entry.action.as_str() {
        "requeue" if automatic => EventKind::Requeue,
        "requeue" => EventKind::OperatorRetry,
        "purge" if automatic => EventKind::Purge,
        "purge" => EventKind::OperatorDelete,
        "mark_exhausted" => EventKind::MarkedExhausted,
        _ => EventKind::OtherAction,
    };
    let mut e = event(kind, EventSource::Audit);
    // The entry id's time is Redis's clock, as the results' are: the two interleave truly.
    e.at = stream_time(&entry.id).or_else(|| {
        DateTime::parse_from_rfc3339(&entry.at)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    });
    e.entry_id = Some(entry.id.clone());
    e.who = Some(entry.who.clone());
    e.why = Some(entry.why.clone());
    e.action = Some(entry.action.clone());
    e.queue = Some(entry.queue.clone());
    e.to_queue = entry.to_queue.clone();
    e.count = Some(entry.count);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, pairs: &[(&str, &str)]) -> AuditEntry {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        AuditEntry {
            id: id.to_string(),
            at: get("at").unwrap_or_default(),
            who: get("who").unwrap_or_default(),
            action: get("action").unwrap_or_default(),
            why: get("why").unwrap_or_default(),
            queue: get("queue").unwrap_or_default(),
            count: get("count").and_then(|c| c.parse().ok()).unwrap_or(0),
            job_ids: Vec::new(),
            to_queue: get("to_queue"),
            last_at: None,
        }
    }

    #[test]
    fn audit_actions_read_as_automatic_or_an_operators() {
        let kind = |who: &str, action: &str| {
            audit_event(&entry("1-0", &[("who", who), ("action", action)])).kind
        };
        assert_eq!(kind("supervisor", "requeue"), EventKind::Requeue);
        assert_eq!(kind("ops@10.0.0.5", "requeue"), EventKind::OperatorRetry);
        assert_eq!(kind("127.0.0.1", "purge"), EventKind::OperatorDelete);
        assert_eq!(kind("supervisor", "purge"), EventKind::Purge);
        assert_eq!(
            kind("supervisor", "mark_exhausted"),
            EventKind::MarkedExhausted
        );
        assert_eq!(kind("supervisor", "teleport"), EventKind::OtherAction);
    }

    #[test]
    fn an_audit_event_is_timed_by_its_entry_id_and_carries_the_entry() {
        let e = audit_event(&entry(
            "1764770000123-4",
            &[
                ("at", "2000-01-01T00:00:00+00:00"),
                ("who", "supervisor"),
                ("action", "requeue"),
                ("why", "transient"),
                ("queue", "default"),
                ("count", "3"),
                ("to_queue", "retry"),
            ],
        ));
        assert_eq!(e.at.unwrap().timestamp_millis(), 1_764_770_000_123);
        assert_eq!(e.why.as_deref(), Some("transient"));
        assert_eq!(e.count, Some(3));
        assert_eq!(e.to_queue.as_deref(), Some("retry"));
        let by_at = audit_event(&entry("no-time", &[("at", "2000-01-01T00:00:00+00:00")]));
        assert_eq!(by_at.at.unwrap().timestamp(), 946_684_800);
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MESSAGE_MAX);
        let (cut, was_cut) = cut_message(&long);
        assert!(was_cut && cut.len() <= MESSAGE_MAX && cut.chars().all(|c| c == 'é'));
        assert_eq!(cut_message("short"), ("short".to_string(), false));
    }

    #[test]
    fn a_failed_job_without_results_shows_the_failure_its_hash_records() {
        let stored = Stored {
            hash_exists: true,
            status: Some("failed".into()),
            ended_at: Some("2026-12-03T10:00:00.000000Z".into()),
            exc_info: Some(b"Traceback (most recent call last):\nValueError: boom\n".to_vec()),
            ..Stored::default()
        };
        let e = hash_failure(&stored).unwrap();
        assert_eq!(e.kind, EventKind::FailedRun);
        assert_eq!(e.source, EventSource::JobHash);
        assert_eq!(e.exc_type.as_deref(), Some("ValueError"));
        assert_eq!(e.message.as_deref(), Some("boom"));
        let queued = Stored {
            status: Some("queued".into()),
            ..Stored::default()
        };
        assert!(hash_failure(&queued).is_none());
    }
}
