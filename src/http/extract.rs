//! Extractors whose rejections are API errors (JSON, 400) rather than axum's plain text.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Longest job id accepted in a path (RQ ids are UUIDs; custom ids are short too).
pub const MAX_JOB_ID_LEN: usize = 256;

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

/// A job id from the path, validated: non-empty, at most 256 bytes, no control characters or
/// whitespace. `clear` is reserved by the route `DELETE /api/v1/jobs/failed/clear`.
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

pub fn validate_job_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_JOB_ID_LEN {
        return Err(ApiError::bad_request(
            "invalid_job_id",
            format!("a job id has 1 to {MAX_JOB_ID_LEN} bytes"),
        ));
    }
    if id == "clear" {
        return Err(ApiError::bad_request(
            "invalid_job_id",
            "\"clear\" is reserved (DELETE /api/v1/jobs/failed/clear) and is not a valid job id",
        ));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::bad_request(
            "invalid_job_id",
            "a job id cannot contain whitespace or control characters",
        ));
    }
    Ok(())
}
