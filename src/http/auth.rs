//! Bearer-token authentication for `/api/` routes, compared in constant time. The token is
//! never logged.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// Rejects `/api/` requests without the configured token (401); passes everything through when
/// no token is configured.
pub async fn require_token(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = app.token.as_deref() else {
        return next.run(request).await;
    };
    if !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
            next.run(request).await
        }
        _ => ApiError::unauthorized().into_response(),
    }
}
