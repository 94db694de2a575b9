//! The router in-process (`tower::ServiceExt::oneshot`): status codes and JSON shapes of the
//! cases that need no socket: the auth layer, the body limit, unknown routes and methods, and
//! the 503 answers before Redis was ever reached. With a Redis, the same router answers the
//! job routes (the end-to-end flows are in `tests/http_api.rs`).
//!
//! See: issue 3 (HTTP control surface).

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use rq_retryd::http::{router, AppState};
use rq_retryd::state::DaemonState;
use support::jobs::FailedJob;
use support::RedisServer;

fn config(redis_url: &str) -> Arc<rq_retryd::config::Config> {
    let text = format!(
        "[redis]\nurl = \"{redis_url}\"\n\n[[policy]]\nname = \"hands-off\"\naction = \"ignore\"\n"
    );
    Arc::new(rq_retryd::config::parse(&text, "test.toml").expect("valid config"))
}

/// A router whose daemon never reached Redis.
fn offline(token: Option<&str>) -> axum::Router {
    let state = DaemonState::new(config("redis://127.0.0.1:1/0"));
    router(AppState::new(state, token.map(str::to_string)))
}

/// A router connected to `redis`.
async fn online(redis: &RedisServer, token: Option<&str>) -> axum::Router {
    let config = config(&redis.url());
    let con = rq_retryd::connection::connect(&config)
        .await
        .expect("connect to the test redis");
    let state = DaemonState::new(config);
    state.set_redis(con, None);
    router(AppState::new(state, token.map(str::to_string)))
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

fn req(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap()
}

#[track_caller]
fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(
        got.1["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        got.1
    );
    assert_eq!(
        got.1.as_object().unwrap().len(),
        2,
        "only error and code: {}",
        got.1
    );
}

#[tokio::test]
async fn before_redis_is_reached_api_routes_and_readyz_answer_503() {
    let app = offline(None);
    for (method, uri) in [
        ("GET", "/readyz"),
        ("GET", "/api/v1/jobs/failed"),
        ("GET", "/api/v1/jobs/failed/groups"),
        ("GET", "/api/v1/jobs/stats"),
        ("GET", "/api/v1/jobs/status/j1"),
        ("GET", "/api/v1/jobs/failed/j1/explain"),
        ("POST", "/api/v1/jobs/failed/j1/retry"),
        ("DELETE", "/api/v1/jobs/failed/j1"),
        ("POST", "/api/v1/jobs/failed/retry-all"),
        ("DELETE", "/api/v1/jobs/failed/clear"),
        ("GET", "/api/v1/audit"),
    ] {
        assert_error(
            &send(&app, req(method, uri)).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "redis_unavailable",
        );
    }
    assert_eq!(
        send(&app, req("GET", "/healthz")).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let (status, state) = send(&app, req("GET", "/api/v1/supervisor")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["redis_connected"], false);
    assert_eq!(state["last_scan"], Value::Null);
    let (status, _) = send(&app, req("GET", "/api/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_token_is_checked_on_api_routes_only() {
    let app = offline(Some("s3cret"));
    assert_error(
        &send(&app, req("GET", "/api/v1/policies")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let wrong = Request::builder()
        .uri("/api/v1/policies")
        .header("Authorization", "Bearer s3cret-not")
        .body(Body::empty())
        .unwrap();
    assert_error(
        &send(&app, wrong).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let right = Request::builder()
        .uri("/api/v1/policies")
        .header("Authorization", "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&app, right).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["policies"][0]["name"], "hands-off");
    assert_eq!(body["policies"][0]["action"], "ignore");
    for uri in ["/healthz", "/metrics"] {
        assert_eq!(send(&app, req("GET", uri)).await.0, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_large_bodies_are_json_errors() {
    let app = offline(None);
    assert_error(
        &send(&app, req("GET", "/api/v1/nothing")).await,
        StatusCode::NOT_FOUND,
        "no_route",
    );
    assert_error(
        &send(&app, req("PUT", "/api/v1/jobs/stats")).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let large = Request::builder()
        .method("POST")
        .uri("/api/v1/jobs/failed/retry-all")
        .header("Content-Length", (64 * 1024 + 1).to_string())
        .body(Body::from(vec![b'x'; 64 * 1024 + 1]))
        .unwrap();
    assert_error(
        &send(&app, large).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_the_router_lists_retries_and_refuses_bad_input() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    FailedJob::new("j1").write(&mut con);
    FailedJob::new("j2").queue("emails").write(&mut con);
    let app = online(&redis, None).await;

    let (status, list) = send(&app, req("GET", "/api/v1/jobs/failed?limit=1")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 2);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    assert_error(
        &send(&app, req("GET", "/api/v1/jobs/failed?limit=0")).await,
        StatusCode::BAD_REQUEST,
        "invalid_limit",
    );
    assert_error(
        &send(
            &app,
            req("POST", "/api/v1/jobs/failed/retry-all?function=%5B"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_function",
    );
    assert_error(
        &send(&app, req("POST", "/api/v1/jobs/failed/nope/retry")).await,
        StatusCode::NOT_FOUND,
        "not_in_failed_registry",
    );
    assert_eq!(
        send(&app, req("POST", "/api/v1/jobs/failed/j1/retry")).await,
        (
            StatusCode::OK,
            json!({"job_id": "j1", "queue": "default", "status": "queued"})
        )
    );
    let (status, result) = send(&app, req("DELETE", "/api/v1/jobs/failed/clear")).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["deleted_count"], 1);
    // The audit trail names the caller; in-process there is no socket address.
    let (_, audit) = send(&app, req("GET", "/api/v1/audit")).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2, "{audit}");
}
