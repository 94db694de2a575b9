//! Browser sessions: a person signs in once with a token and every tab of that browser is
//! signed in until they sign out or the session expires (`http.session_ttl`).
//!
//! `POST /api/v1/session` with `Authorization: Bearer <token>` answers a cookie holding 32
//! random bytes: `HttpOnly` (no script reads it, so a traceback that slipped past the
//! console's escaping could not steal it), `SameSite=Strict` (no other site's page sends it),
//! `Secure` when the page came over TLS, `Path=/`. Every write still passes the cross-site
//! checks of `guard.rs`, so the cookie reopens no CSRF hole. Redis keeps only the SHA-256 of
//! the cookie, with the token's name and role, and expires it with the session, so every
//! instance behind a load balancer knows it and a restart keeps it; a session whose token is
//! no longer configured (or has another role now) is refused.

use axum::extract::State;
use axum::http::header::{COOKIE, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::caller::{Caller, Via};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::AppState;
use crate::config::{Origin, Role, Scheme};

/// The cookie's name.
pub const COOKIE_NAME: &str = "rq_retryd_session";
/// The route that signs in (POST) and out (DELETE).
pub const SESSION_PATH: &str = "/api/v1/session";

/// What Redis keeps of a session.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    name: String,
    role: Role,
}

/// A session, as the sign-in answers it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionAnswer {
    /// The token's name (or `anonymous` when the API needs no token; no cookie is set then).
    pub name: String,
    /// `read` or `operate`.
    pub role: String,
    /// When the cookie stops working (none without a cookie).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Signs this browser in with the bearer token of the request: answers a session cookie
/// that serves every tab until sign-out or `http.session_ttl`.
#[utoipa::path(post, path = "/api/v1/session", tag = "session",
    responses((status = 200, body = SessionAnswer, headers(("Set-Cookie" = String, description = "the session cookie (HttpOnly; SameSite=Strict)"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn sign_in(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some(Extension(caller)) = caller else {
        // Nothing to sign in to: the API asks nobody who they are.
        return Ok(Json(SessionAnswer {
            name: super::caller::ANONYMOUS.into(),
            role: Role::Operate.as_str().into(),
            expires_at: None,
        })
        .into_response());
    };
    if caller.via != Via::Token {
        return Err(ApiError::bad_request(
            "token_required",
            "sign in with Authorization: Bearer <token> (a session or a proxy's user is signed in already)",
        ));
    }
    let ttl = app.session_ttl;
    let secret = new_secret()?;
    let stored = serde_json::to_string(&Stored {
        name: caller.name.to_string(),
        role: caller.role,
    })
    .map_err(|e| ApiError::unavailable(format!("cannot encode the session: {e}")))?;
    let mut con = app.redis()?;
    let key = app
        .daemon
        .snapshot()
        .registry
        .keys()
        .retryd_session(&digest(&secret));
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(stored)
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query_async(&mut con)
        .await?;
    let secure = if came_over_tls(&headers) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE_NAME}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs()
    );
    let expires_at = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
    tracing::info!(who = %caller.name, role = caller.role.as_str(), "signed in: a browser session until {expires_at}");
    let mut response = Json(SessionAnswer {
        name: caller.name.to_string(),
        role: caller.role.as_str().into(),
        expires_at: Some(expires_at),
    })
    .into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex and ASCII"),
    );
    Ok(response)
}

/// Signs this browser out: forgets the session of its cookie (on every instance) and clears
/// the cookie. Needs no credentials, so that an expired session can still be cleared.
#[utoipa::path(delete, path = "/api/v1/session", tag = "session", security(()),
    responses((status = 200, body = Object, description = "{\"signed_out\": true}"), (status = 503, body = ErrorBody)))]
pub async fn sign_out(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let secrets = cookie_values(&headers);
    if !secrets.is_empty() {
        let mut con = app.redis()?;
        let keys = app.daemon.snapshot().registry.keys().clone();
        for secret in secrets {
            let _: i64 = con.del(keys.retryd_session(&digest(secret))).await?;
        }
    }
    let mut response = Json(serde_json::json!({"signed_out": true})).into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static(
            "rq_retryd_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}

/// The caller a request's session cookie names, if any of its session cookies is a live
/// session of a token still configured with the same role.
pub async fn caller_of(app: &AppState, headers: &HeaderMap) -> ApiResult<Option<Caller>> {
    let secrets = cookie_values(headers);
    if secrets.is_empty() {
        return Ok(None);
    }
    let mut con = app.redis()?;
    let keys = app.daemon.snapshot().registry.keys().clone();
    for secret in secrets {
        let stored: Option<String> = con.get(keys.retryd_session(&digest(secret))).await?;
        let Some(stored) = stored.and_then(|s| serde_json::from_str::<Stored>(&s).ok()) else {
            continue;
        };
        let still = app
            .tokens
            .iter()
            .any(|t| t.name == stored.name && t.role == stored.role);
        if still {
            return Ok(Some(Caller {
                name: stored.name.into(),
                role: stored.role,
                via: Via::Session,
            }));
        }
    }
    Ok(None)
}

/// The values of every `rq_retryd_session` cookie the request carries that can be one of
/// ours (64 hex digits); others are ignored, they name no session.
fn cookie_values(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim())
        .filter(|value| value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

/// 32 random bytes from the operating system, as hex.
fn new_secret() -> ApiResult<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::unavailable("the system's random source failed"))?;
    Ok(hex(&bytes))
}

/// The SHA-256 of a session secret, as hex: what Redis keeps.
fn digest(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the browser's page came over TLS (a reverse proxy terminates it: the daemon itself
/// serves plain HTTP): its `Origin` is `https://…`, or the proxy says `X-Forwarded-Proto:
/// https`. A `Secure` cookie would never come back over plain HTTP.
fn came_over_tls(headers: &HeaderMap) -> bool {
    let origin = headers
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(|o| Origin::parse(o).ok())
        .is_some_and(|o| o.scheme == Scheme::Https);
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    origin || forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_session_cookies_are_read() {
        let good = "ab".repeat(32);
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE_NAME}={good}; x=y")).unwrap(),
        );
        headers.append(
            COOKIE,
            HeaderValue::from_str(&format!("{COOKIE_NAME}=short; {COOKIE_NAME}=")).unwrap(),
        );
        assert_eq!(cookie_values(&headers), vec![good.as_str()]);
    }

    #[test]
    fn a_secret_is_64_hex_digits_and_redis_keeps_another_value() {
        let secret = new_secret().unwrap();
        assert_eq!(secret.len(), 64);
        assert_ne!(secret, new_secret().unwrap());
        assert_eq!(digest(&secret).len(), 64);
        assert_ne!(digest(&secret), secret);
    }
}
