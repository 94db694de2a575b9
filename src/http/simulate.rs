//! `POST /api/v1/policies/simulate`: what a candidate policy file would do with the failed
//! jobs of now, against the running policies, answered from the failure index. Nothing is
//! written, so any role that may read may ask (it is a POST only because it takes a file);
//! the cross-site guard applies to it as to every POST. See: issue 22, item 5.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::indexed::{wait_for_index, INDEX_WAIT};
use super::AppState;
use crate::config::{parse_policy_file, ConfigError};
use crate::policy::{Action, Policy};
use crate::simulate::{hold_targets, over_index_held, GroupLabel, QueueWorlds, Report};

/// Simulations running in this process: one at a time (see [`answer`]).
static SIMULATIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The path, which a `read` token may POST to.
pub const SIMULATE_PATH: &str = "/api/v1/policies/simulate";

/// A candidate file that does not pass the config's checks: every problem, located.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidPolicyFile {
    /// Every problem as `check-config` prints it, one per line (`candidate:LINE:COL: key: message`).
    pub error: String,
    /// `invalid_policy_file`; the other 400s of the route (`invalid_body`,
    /// `unknown_parameter`) have the plain error shape, without `problems`.
    pub code: String,
    #[serde(default)]
    pub problems: Vec<Problem>,
}

/// One problem of a candidate file.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// 1-based; null when the problem has no place in the file.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The dotted key, e.g. `policy[2].backoff.delay`.
    pub key: Option<String>,
    pub message: String,
}

impl IntoResponse for InvalidPolicyFile {
    fn into_response(self) -> Response {
        (axum::http::StatusCode::BAD_REQUEST, Json(self)).into_response()
    }
}

impl From<ConfigError> for InvalidPolicyFile {
    fn from(e: ConfigError) -> InvalidPolicyFile {
        InvalidPolicyFile {
            error: e.to_string(),
            code: "invalid_policy_file".to_string(),
            problems: e
                .problems
                .into_iter()
                .map(|p| Problem {
                    line: p.position.map(|(line, _)| line),
                    column: p.position.map(|(_, column)| column),
                    key: p.key,
                    message: p.message,
                })
                .collect(),
        }
    }
}

/// What a candidate policy file (TOML, sent as `application/toml` or any type but a form's: `[[policy]]` tables, or a whole config file of which
/// only the policies are simulated) would do with every failed job the daemon's index holds,
/// by group, against the running policies. Writes nothing; any role may ask.
#[utoipa::path(post, path = "/api/v1/policies/simulate", tag = "supervisor",
    request_body(content = Option<String>, content_type = "application/toml",
        description = "A policy file: `[[policy]]` tables as in the config (a whole config file is accepted; its other sections are ignored and named in `ignored_sections`). At most 64 KiB."),
    responses((status = 200, body = Report), (status = 400, body = InvalidPolicyFile, description = "invalid_policy_file: the file's problems, located; or invalid_body: not UTF-8"),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn simulate(State(app): State<AppState>, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return ApiError::bad_request("invalid_body", "the policy file is not UTF-8 text")
            .into_response();
    };
    let file = match parse_policy_file(text, "candidate") {
        Ok(file) => file,
        Err(e) => return InvalidPolicyFile::from(e).into_response(),
    };
    match answer(&app, file).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The simulation over the index, once the index is built (waiting for it like the listings).
async fn answer(app: &AppState, file: crate::config::PolicyFile) -> Result<Report, ApiError> {
    wait_for_index(app).await?;
    // One simulation at a time: each is a pass over every indexed job (a few hundred ms of
    // CPU at a million, spread over the cores), and a read token must not be able to pin
    // every core with them.
    let _turn = SIMULATIONS
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("simulations are closed"))?;
    let daemon = app.daemon.clone();
    let config = daemon.config();
    let worlds = hold_worlds(app, &config.policies, &file.policies).await;
    // A pass over every indexed job: off the runtime's threads, like the index's other answers.
    let report = tokio::task::spawn_blocking(move || {
        let reading = daemon.index.read()?;
        let now = Utc::now();
        let policies = (&config.policies[..], &file.policies[..]);
        let tally = over_index_held(&reading, policies, &worlds, now);
        let mut report = tally.report(GroupLabel::clone, &file.policies, now, "index");
        report.ignored_sections = file.ignored_sections;
        report.index_as_of = Some(reading.as_of);
        Some(report)
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("the simulation failed: {e}")))?;
    report.ok_or_else(|| ApiError::index_building(INDEX_WAIT))
}

/// The target queues of the running and candidate policies with `hold_when`, read once
/// through the daemon's shared cache (as the supervisor and explain read them). Unread when
/// Redis does not answer: the jobs a `hold_when` may hold are then counted as uncertain.
async fn hold_worlds(app: &AppState, running: &[Policy], candidate: &[Policy]) -> QueueWorlds {
    let holds = |p: &Policy| matches!(&p.action, Action::Retry(s) if s.hold_when.is_some());
    if !running.iter().chain(candidate).any(holds) {
        return QueueWorlds::Read(Default::default());
    }
    let daemon = app.daemon.clone();
    let queues = tokio::task::spawn_blocking(move || daemon.index.queue_spans())
        .await
        .unwrap_or_default();
    let queues: Vec<String> = queues.into_iter().map(|s| s.queue).collect();
    let targets = hold_targets(running.iter().chain(candidate), &queues);
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let Ok(mut con) = app.redis() else {
        return QueueWorlds::Unread;
    };
    let keys = app.daemon.snapshot().registry.keys().clone();
    match app.daemon.worlds.get(&mut con, &keys, &targets).await {
        Ok(worlds) => QueueWorlds::Read(worlds),
        Err(e) => {
            tracing::warn!(error = %e, "simulate: cannot read the target queues for hold_when; those jobs are uncertain");
            QueueWorlds::Unread
        }
    }
}

/// The running policies as a policy file (TOML), to edit and simulate: parsing it gives the
/// running policies again.
#[utoipa::path(get, path = "/api/v1/policies/file", tag = "supervisor",
    responses((status = 200, content_type = "application/toml", body = String, description = "`[[policy]]` tables of the running policies"),
        (status = 401, body = ErrorBody)))]
pub async fn running_file(State(app): State<AppState>) -> Response {
    let text = crate::simulate::policy_file(&app.daemon.config().policies);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/toml; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
