//! The supervisor's switches and the operator's overview: state, pause/resume/scan, policies,
//! health, readiness and metrics (the audit trail is `http::audit`).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::extract::Who;
use super::AppState;
use crate::audit::{self, AuditAction, AuditRecord};
use crate::breaker::OpenCircuit;
use crate::policy::{Action, Policy};
use crate::state::LastScan;

/// The supervisor's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct SupervisorState {
    /// Automatic writes are stopped on every instance sharing this Redis (manual actions
    /// still work).
    pub paused: bool,
    /// Who paused (token name and client address) and when (RFC 3339); null unless paused.
    pub paused_by: Option<String>,
    pub paused_at: Option<String>,
    /// Why, as given with the pause (`reason`); null unless paused with one.
    pub paused_reason: Option<String>,
    pub dry_run: bool,
    pub redis_connected: bool,
    pub started_at: DateTime<Utc>,
    pub scan_interval_seconds: f64,
    pub policies: usize,
    /// This instance's name (`host:pid:random`), which is also its lease token.
    pub instance: String,
    /// Whether this instance does the automatic scans and writes (it holds the lease, or
    /// leader election is off).
    pub active: bool,
    /// The instance that holds the lease now (null when none does, e.g. during a takeover).
    pub active_instance: Option<String>,
    /// Whether instances elect one active instance (`supervisor.leader_election`).
    pub leader_election: bool,
    pub lease_ttl_seconds: f64,
    /// Retry policies whose circuit breaker holds requeues back, and until when.
    pub open_circuits: Vec<OpenCircuit>,
    /// The last completed scan with its counts by decision (none before the first).
    #[schema(value_type = Option<Object>)]
    pub last_scan: Option<LastScan>,
    /// When this instance's failure index was last complete (the end of its last full pass:
    /// a scan, or a standby's observing pass); null until its first one. Until then the job
    /// listings wait for it, or answer 503 `index_building`.
    pub index_as_of: Option<DateTime<Utc>>,
    /// The global requeue limit (`supervisor.max_requeues_per_second`): the most a bulk
    /// retry's `rate` may ask for, which the console's replay form says and checks.
    pub max_requeues_per_second: u32,
}

/// The state, with the switchboard read from Redis now when it answers (so every instance
/// tells the same), else as of this instance's last beat.
async fn state_of(app: &AppState) -> SupervisorState {
    let config = app.daemon.config();
    let mut shared = app.daemon.shared();
    if let Some(mut con) = app.daemon.redis() {
        let read = app.daemon.snapshot().switchboard.read(&mut con).await;
        if let Ok(fresh) = read {
            shared = fresh;
        }
    }
    SupervisorState {
        paused: shared.switches.holds_writes(),
        paused_by: shared.switches.paused_by,
        paused_at: shared.switches.paused_at,
        paused_reason: shared.switches.paused_reason,
        dry_run: config.supervisor.dry_run,
        redis_connected: app.daemon.redis().is_some(),
        started_at: app.daemon.started_at,
        scan_interval_seconds: config.supervisor.scan_interval.as_secs_f64(),
        policies: config.policies.len(),
        instance: app.daemon.instance.clone(),
        active: app.daemon.is_active(),
        active_instance: shared.lease.holder,
        leader_election: config.supervisor.leader_election,
        lease_ttl_seconds: config.supervisor.lease_ttl.as_secs_f64(),
        open_circuits: app.daemon.breakers.lock().expect("breakers lock").open(),
        last_scan: app.daemon.last_scan(),
        index_as_of: app.daemon.index.as_of(),
        max_requeues_per_second: config.supervisor.max_requeues_per_second,
    }
}

/// Supervisor state: paused (for every instance) and by whom, which instance is active, dry
/// run, last scan time, duration and counts by decision.
#[utoipa::path(get, path = "/api/v1/supervisor", tag = "supervisor", responses((status = 200, body = SupervisorState), (status = 401, body = ErrorBody)))]
pub async fn supervisor(State(app): State<AppState>) -> Json<SupervisorState> {
    Json(state_of(&app).await)
}

async fn record_switch(app: &AppState, who: &str, action: AuditAction, reason: Option<&str>) {
    info!(who, action = action.name(), reason, "supervisor switch");
    if let Some(mut con) = app.daemon.redis() {
        let prefix = app.daemon.config().redis.key_prefix.clone();
        let why = reason.map_or_else(|| "api".to_string(), |r| format!("api: {r}"));
        let record = AuditRecord {
            who,
            action,
            why: &why,
            queue: "",
            job_ids: &[],
        };
        if let Err(e) = audit::append(&mut con, &prefix, &record).await {
            tracing::warn!(error = %e, "cannot append to the audit stream");
        }
    }
}

/// Writes the shared pause switch; 503 when Redis cannot take it (a pause that only this
/// process knew of would leave the other instances writing).
async fn switch(
    app: &AppState,
    paused: bool,
    who: &str,
    reason: Option<&str>,
) -> ApiResult<Json<SupervisorState>> {
    let mut con = app.redis()?;
    app.daemon
        .snapshot()
        .switchboard
        .set_paused(&mut con, paused, who, reason)
        .await?;
    app.daemon.set_paused(paused);
    let action = if paused {
        AuditAction::Pause
    } else {
        AuditAction::Resume
    };
    record_switch(app, who, action, reason).await;
    Ok(Json(state_of(app).await))
}

/// A pause's parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PauseParams {
    /// Why (1 to 500 characters, no control characters): shown with "paused by" and written to
    /// the audit.
    #[param(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub reason: Option<String>,
}

/// Stops automatic actions on every instance sharing this Redis, before their next write
/// (scans still run and report); manual actions still work.
#[utoipa::path(post, path = "/api/v1/supervisor/pause", params(PauseParams), tag = "supervisor", responses((status = 200, body = SupervisorState), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn pause(
    State(app): State<AppState>,
    Who(who): Who,
    ApiQuery(p): ApiQuery<PauseParams>,
) -> ApiResult<Json<SupervisorState>> {
    let reason = super::reason::checked(p.reason.as_deref())?;
    switch(&app, true, &who, reason).await
}

/// Resumes automatic actions on every instance.
#[utoipa::path(post, path = "/api/v1/supervisor/resume", tag = "supervisor", responses((status = 200, body = SupervisorState), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn resume(
    State(app): State<AppState>,
    Who(who): Who,
) -> ApiResult<Json<SupervisorState>> {
    switch(&app, false, &who, None).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScanRequested {
    pub scan_requested: bool,
}

/// Starts a scan now instead of at the next tick.
#[utoipa::path(post, path = "/api/v1/supervisor/scan", tag = "supervisor", responses((status = 202, body = ScanRequested), (status = 401, body = ErrorBody)))]
pub async fn scan_now(
    State(app): State<AppState>,
    Who(who): Who,
) -> (StatusCode, Json<ScanRequested>) {
    info!(who, "scan requested");
    // This instance scans now if it is the active one; the active instance, wherever it runs,
    // sees the request at its next beat.
    app.daemon.scan_now.notify_one();
    if let Some(mut con) = app.daemon.redis() {
        if let Err(e) = app
            .daemon
            .snapshot()
            .switchboard
            .request_scan(&mut con)
            .await
        {
            tracing::warn!(error = %e, "cannot pass the scan request to the other instances");
        }
    }
    (
        StatusCode::ACCEPTED,
        Json(ScanRequested {
            scan_requested: true,
        }),
    )
}

/// One policy as configured.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    pub name: String,
    pub action: String,
    pub queues: Option<Vec<String>>,
    pub functions: Option<Vec<String>>,
    pub exceptions: Option<Vec<String>>,
    pub error_pattern: Option<String>,
    pub max_attempts: Option<u32>,
    pub backoff: Option<String>,
    pub at_front: Option<bool>,
    pub on_exhausted: Option<String>,
    pub purge_after_seconds: Option<f64>,
    /// Retry policies: the job is given up once this old since RQ created it.
    pub max_age_seconds: Option<f64>,
    /// `meta = { key = "glob" }`: every key's value must match its glob.
    pub meta: Option<std::collections::BTreeMap<String, String>>,
    /// The queue a retry policy requeues into instead of the job's origin.
    pub requeue_to: Option<String>,
    /// When a retry policy holds requeues back (`no_workers|queue_longer_than=N`).
    pub hold_when: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Policies {
    /// In evaluation order: the first that matches decides.
    pub policies: Vec<PolicyView>,
}

fn view(p: &Policy) -> PolicyView {
    let m = &p.matcher;
    let retry = match &p.action {
        Action::Retry(s) => Some(s),
        _ => None,
    };
    let (max_attempts, backoff, at_front, on_exhausted, purge_after) = match &p.action {
        Action::Retry(s) => (
            Some(s.max_attempts),
            Some(s.backoff.describe()),
            Some(s.at_front),
            Some(format!("{:?}", s.on_exhausted).to_lowercase()),
            None,
        ),
        Action::Purge { after } => (None, None, None, None, Some(after.as_secs_f64())),
        Action::Ignore => (None, None, None, None, None),
    };
    PolicyView {
        name: p.name.clone(),
        action: p.action.kind().to_string(),
        queues: m.queues.as_ref().map(|g| g.patterns().to_vec()),
        functions: m.functions.as_ref().map(|g| g.patterns().to_vec()),
        exceptions: m
            .exceptions
            .as_ref()
            .map(|e| e.iter().map(|x| x.as_str().to_string()).collect()),
        error_pattern: m.error_pattern.as_ref().map(|r| r.as_str().to_string()),
        max_attempts,
        backoff,
        at_front,
        on_exhausted,
        purge_after_seconds: purge_after,
        max_age_seconds: match &p.action {
            Action::Retry(s) => s.max_age.map(|a| a.as_secs_f64()),
            _ => None,
        },
        meta: m.meta.as_ref().map(|patterns| {
            patterns
                .iter()
                .map(|p| (p.key.clone(), p.value.patterns().join(", ")))
                .collect()
        }),
        requeue_to: retry.and_then(|s| s.requeue_to.clone()),
        hold_when: retry.and_then(|s| s.hold_when.map(|h| h.describe())),
    }
}

/// The policies in evaluation order.
#[utoipa::path(get, path = "/api/v1/policies", tag = "supervisor", responses((status = 200, body = Policies), (status = 401, body = ErrorBody)))]
pub async fn policies(State(app): State<AppState>) -> Json<Policies> {
    Json(Policies {
        policies: app.daemon.config().policies.iter().map(view).collect(),
    })
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "ok")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready when Redis answers PING within a second; 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses((status = 200, description = "ready"), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(app): State<AppState>) -> Response {
    let Some(mut con) = app.daemon.redis() else {
        app.daemon.metrics.set_redis_up(false);
        return ApiError::unavailable("Redis has not been reached yet").into_response();
    };
    let ping = tokio::time::timeout(
        Duration::from_secs(1),
        redis::cmd("PING").query_async::<String>(&mut con),
    )
    .await;
    let up = matches!(ping, Ok(Ok(_)));
    app.daemon.metrics.set_redis_up(up);
    if up {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::unavailable("Redis does not answer").into_response()
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()), responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.daemon.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod policy_view_tests {
    /// Issue 21: the policies API shows `max_age` (seconds) and the `meta` globs by key.
    #[test]
    fn a_policy_view_carries_max_age_and_meta() {
        let config = crate::config::parse(
            "[[policy]]\nname = \"acme\"\nmax_age = \"2d\"\nmeta = { tenant = \"acme-*\" }\n[[policy]]\nname = \"rest\"\n",
            "t.toml",
        )
        .unwrap();
        let json = |i: usize| serde_json::to_value(super::view(&config.policies[i])).unwrap();
        assert_eq!(json(0)["max_age_seconds"], 172_800.0);
        assert_eq!(json(0)["meta"], serde_json::json!({"tenant": "acme-*"}));
        assert_eq!(json(1)["max_age_seconds"], serde_json::Value::Null);
        assert_eq!(json(1)["meta"], serde_json::Value::Null);
    }
}
