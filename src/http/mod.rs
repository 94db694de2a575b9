//! The HTTP control surface: the operator's hands (retry, delete, pause) and eyes (failed jobs,
//! groups, stats, audit, metrics). Every write goes through the executor's atomic scripts, like
//! the daemon's own actions. No GET changes state.

mod audit;
mod auth;
mod bulk;
mod caller;
mod control;
mod docs;
mod error;
mod extract;
mod guard;
mod history;
mod indexed;
mod jobs;
mod openapi;
mod params;
mod reason;
mod selection;
mod session;
mod simulate;
mod stats;
mod tasks;
mod traceback_search;
mod trend;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::bearer_credentials;
pub use caller::{Caller, Via};
pub use docs::SWAGGER_UI_VERSION;
pub use error::{ApiError, ErrorBody};

use crate::config::{ApiToken, ProxyIdentity};
use crate::state::DaemonState;

/// Largest request body accepted; the API takes its input in the query string.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a request may take before it is answered with an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub daemon: Arc<DaemonState>,
    /// The tokens read at start (a change needs a restart); empty: no token needed.
    pub tokens: Arc<[ApiToken]>,
    /// `[http.proxy_identity]` as read at start (a change needs a restart, like the tokens).
    pub proxy_identity: Option<Arc<ProxyIdentity>>,
    /// How long a browser session lasts (`http.session_ttl`, read at start).
    pub session_ttl: Duration,
    pub tasks: Arc<tasks::Tasks>,
    /// The bulk actions still running: `daemon::run` waits for them on shutdown.
    pub bulk_tasks: TaskTracker,
    /// Failed authentications per client address (429 after a burst).
    pub auth_failures: Arc<auth::FailureLimiter>,
    /// The one bound on what every traceback search together reads from Redis.
    pub traceback_reads: Arc<crate::limiter::RequeueLimiter>,
    /// The audit stream summarized in memory, for its filters (`audit::mirror`).
    pub audit: Arc<crate::audit::mirror::AuditMirror>,
}

impl AppState {
    /// The state for `daemon` with `tokens`; the proxy identity and the session lifetime come
    /// from the daemon's configuration as it is now.
    pub fn new(daemon: Arc<DaemonState>, tokens: Vec<ApiToken>) -> AppState {
        let http = daemon.snapshot().config.http.clone();
        AppState {
            daemon,
            tokens: tokens.into(),
            proxy_identity: http.proxy_identity.map(Arc::new),
            session_ttl: http.session_ttl,
            tasks: Arc::new(tasks::Tasks::default()),
            bulk_tasks: TaskTracker::new(),
            auth_failures: Arc::new(auth::FailureLimiter::default()),
            traceback_reads: Arc::new(crate::limiter::RequeueLimiter::new(
                traceback_search::READS_PER_SECOND,
            )),
            audit: Arc::default(),
        }
    }

    /// Whether `/api/` asks who is calling (tokens or a proxy identity are configured).
    pub fn needs_identity(&self) -> bool {
        !self.tokens.is_empty() || self.proxy_identity.is_some()
    }

    /// The Redis connection, or 503 while the daemon has not reached Redis yet.
    pub fn redis(&self) -> Result<ConnectionManager, ApiError> {
        self.daemon
            .redis()
            .ok_or_else(|| ApiError::unavailable("Redis has not been reached yet"))
    }
}

/// The whole router, with auth, body limit and timeout applied.
pub fn router(app: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/jobs/failed", get(jobs::list_failed))
        .route("/api/v1/jobs/failed/groups", get(jobs::groups))
        .route("/api/v1/jobs/failed/retry-all", post(bulk::retry_all))
        .route("/api/v1/jobs/failed/clear", delete(bulk::clear))
        .route("/api/v1/jobs/failed/{job_id}", delete(jobs::delete_one))
        .route("/api/v1/jobs/failed/{job_id}/retry", post(jobs::retry_one))
        .route("/api/v1/jobs/failed/{job_id}/explain", get(jobs::explain))
        // One job, whatever its id: nothing else lives under /api/v1/failed-jobs/, so no id
        // (`clear`, `groups`, `retry-all`) can reach a bulk route. See: issue 19.
        .route("/api/v1/failed-jobs/{job_id}", delete(jobs::delete_job))
        .route("/api/v1/failed-jobs/{job_id}/retry", post(jobs::retry_job))
        .route(
            "/api/v1/failed-jobs/{job_id}/explain",
            get(jobs::explain_job),
        )
        .route(
            "/api/v1/failed-jobs/{job_id}/history",
            get(history::history),
        )
        .route("/api/v1/jobs/status/{job_id}", get(jobs::status))
        .route("/api/v1/jobs/stats", get(stats::stats))
        .route("/api/v1/jobs/timeline", get(trend::timeline))
        .route(
            "/api/v1/jobs/traceback-search",
            get(traceback_search::traceback_search),
        )
        .route(
            "/api/v1/tasks/{task_id}",
            get(tasks::task).delete(tasks::cancel),
        )
        .route("/api/v1/supervisor", get(control::supervisor))
        .route("/api/v1/supervisor/pause", post(control::pause))
        .route("/api/v1/supervisor/resume", post(control::resume))
        .route("/api/v1/supervisor/scan", post(control::scan_now))
        .route(
            session::SESSION_PATH,
            post(session::sign_in).delete(session::sign_out),
        )
        .route("/api/v1/policies", get(control::policies))
        .route(simulate::SIMULATE_PATH, post(simulate::simulate))
        .route("/api/v1/policies/file", get(simulate::running_file))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/whoami", get(auth::whoami))
        .route("/healthz", get(control::healthz))
        .route("/readyz", get(control::readyz))
        .route("/metrics", get(control::metrics))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(params::Declared::from_document(&openapi::for_daemon(false))),
            params::refuse_undeclared,
        ))
        .merge(docs::routes())
        .merge(ui::routes());
    api.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ))
        .layer(middleware::from_fn(reject_large_bodies))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(time_limit))
        .layer(middleware::from_fn_with_state(app.clone(), guard::protect))
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no_route", "no such endpoint; see /api/v1/openapi.json")
}

async fn method_not_allowed() -> Response {
    let mut response =
        ApiError::bad_request("method_not_allowed", "method not allowed for this endpoint")
            .into_response();
    *response.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Answers 503 `{"code": "timeout"}` to a request still running after [`REQUEST_TIMEOUT`]
/// (dropping its handler), in the error shape the OpenAPI document declares for every 503.
async fn time_limit(request: Request, next: Next) -> Response {
    within(REQUEST_TIMEOUT, request, next).await
}

async fn within(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout(limit).into_response(),
    }
}

/// The body length a request declares (`Content-Length`), if it declares one.
fn declared_body_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Answers 413 before reading a body whose declared length is over the limit.
async fn reject_large_bodies(request: Request, next: Next) -> Response {
    if declared_body_length(request.headers()).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::too_large(MAX_BODY_BYTES).into_response();
    }
    next.run(request).await
}

/// Serves the API on `listener` until `cancel` fires, then lets requests in flight finish.
/// Connections are served by hyper directly (HTTP/1.1) so that a client that does not finish
/// sending its request headers within [`HEADER_READ_TIMEOUT`] is disconnected (slowloris).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: AppState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let router = router(app);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service =
            router
                .clone()
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(remote));
                    request
                });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_request_over_the_time_limit_gets_a_json_503() {
        let limit = Duration::from_millis(50);
        let slow = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "too late"
                }),
            )
            .layer(middleware::from_fn(move |request, next| {
                within(limit, request, next)
            }));
        let request = Request::builder()
            .uri("/slow")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = slow.oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "timeout", "{body}");
    }
}
