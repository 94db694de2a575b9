//! Extractors whose rejections are API errors (JSON, 400) rather than axum's plain text, and
//! [`Who`], the caller as logs and the audit name them.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Query parameters; a malformed query string is a 400 naming the problem.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Who made a request, for logs and the audit trail: the name of the token it came with and
/// the client's address (`ops-alice@10.0.0.5`), or the address alone when the API needs no
/// token. The address is the IP without the port: an ephemeral port names no one, and two
/// actions of one person would otherwise read as two people.
pub struct Who(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(
                || "unknown".to_string(),
                |ConnectInfo(a)| a.ip().to_string(),
            );
        Ok(Who(match parts.extensions.get::<super::caller::Caller>() {
            Some(caller) => format!("{}@{addr}", caller.name),
            None => addr,
        }))
    }
}

/// A job id from the path, percent-decoded. Any id the listing can show is taken: RQ 2.x makes
/// ids of letters, digits, `_` and `-` of any length, and RQ 1.x (or a script) any text at all,
/// spaces, `/`, `%` and `:` included; every one of them is a Redis key. So only what cannot name
/// a job in `GET /api/v1/jobs/failed` is refused: the empty id and text that is not UTF-8 once
/// decoded (the listing shows UTF-8 ids only). Names such as `clear` are ids like any other:
/// which route a path reaches is the router's business, and under `/api/v1/failed-jobs/` no id
/// can reach a bulk route (see: issue 19). The length is bounded by the server's limit on the
/// request line (hyper answers 414 beyond about 64 KiB).
pub struct JobId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_job_id", e.body_text()))?;
        validate_job_id(&id)?;
        Ok(JobId(id))
    }
}

/// What the OpenAPI document says of the `job_id` path parameter of the original single-job
/// routes under `/api/v1/jobs/failed/` (kept next to the rule).
pub const JOB_ID_DESCRIPTION: &str = "RQ job id, percent-encoded, of any length the request line allows. Prefer the routes under /api/v1/failed-jobs/, which take every id: here DELETE cannot reach a job named clear, groups or retry-all (those paths are the bulk routes')";

pub fn validate_job_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_job_id",
            "a job id cannot be empty",
        ));
    }
    Ok(())
}
