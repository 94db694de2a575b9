//! API errors: one JSON shape, `{"error": "...", "code": "..."}`, with the status codes of the
//! interface (400, 401, 403, 404, 405, 409, 413, 503). Bad input is never a 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// A stable machine-readable code, e.g. `invalid_limit`, `not_found`, `redis_unavailable`.
    pub code: String,
}

/// An error answered to an API client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or invalid bearer token".into(),
        }
    }

    /// A `read` token on a request that could change state.
    pub fn forbidden(token: &str, method: &axum::http::Method) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!(
                "token {token:?} has role read, which allows GET only; {method} needs role operate"
            ),
        }
    }

    /// 403 with its own `code`: the caller is known, and refused for this reason.
    pub fn forbidden_code(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code,
            message: message.into(),
        }
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: format!("request body over {limit} bytes"),
        }
    }

    /// A request that took longer than the server allows (its work was dropped).
    pub fn timeout(limit: std::time::Duration) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "timeout",
            message: format!(
                "the request took over {}",
                humantime::format_duration(limit)
            ),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "redis_unavailable",
            message: message.into(),
        }
    }

    /// The failure index is still being built by this instance's first full pass (503).
    pub fn index_building(waited: std::time::Duration) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "index_building",
            message: format!(
                "the failure index is still being built by this instance's first full scan (waited {}); ask again in a few seconds",
                humantime::format_duration(waited)
            ),
        }
    }
}

/// Redis failures: the connection is down or slow (503). A command error about one job (e.g. a
/// key of the wrong type) is answered by the handler that knows the job, not here.
impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> ApiError {
        if crate::rq::registry::is_wrong_type(&e) {
            // Data, not an outage: a key holds another type than RQ gives it.
            return ApiError::conflict(
                "wrong_type",
                format!("a key holds another type than RQ gives it: {e}"),
            );
        }
        ApiError::unavailable(format!("Redis error: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_string(),
        };
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
