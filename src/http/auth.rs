//! Bearer-token authentication and roles for `/api/` routes. Tokens are compared in constant
//! time, and every configured token is compared on every request, so the time taken does not
//! reveal which token (or how many) a guess came close to. No token is ever logged.
//!
//! Failed authentications are limited per client address ([`failures`]): after a small burst
//! the address gets 429 on every route that needs a token, whatever token it sends (a request
//! without a token still gets its 401: it guesses nothing).

mod failures;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use utoipa::ToSchema;

use super::caller::{Caller, Via, ANONYMOUS};
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::config::{ApiToken, Role};
use failures::LogDecision;
pub use failures::{FailureLimiter, FailureReason};

/// The one `/api/` route that needs no token: the API's description is no secret (it is
/// generated from the code), and `/docs` must be able to load it before the user has typed a
/// token into "Authorize".
pub const OPEN_API_PATH: &str = "/api/v1/openapi.json";

/// Lets `/api/` requests in as a [`Caller`] when the API asks who is calling: the user a
/// trusted proxy names (`[http.proxy_identity]`), else a bearer token, else the console's
/// session cookie; 401 for none, 403 for a write with role `read`. Passes everything through
/// when neither tokens nor a proxy identity are configured. An address over its budget of
/// failed authentications gets 429 for any token it presents, even a valid one.
pub async fn require_token(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let open = path == OPEN_API_PATH
        // Signing out needs no credentials: an expired session must still be cleared.
        || (path == super::session::SESSION_PATH && request.method() == Method::DELETE);
    if !app.needs_identity() || !path.starts_with("/api/") || open {
        return next.run(request).await;
    }
    // Set for every connection by `serve`; absent only for a router driven in-process.
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    let caller = match identify(&app, request.headers(), client, path, Instant::now()).await {
        Ok(caller) => caller,
        Err(refusal) => return refusal,
    };
    // Signing in or out changes no job, nor does a simulation: a `read` token may do them.
    let signing = request.uri().path() == super::session::SESSION_PATH;
    let simulating = request.uri().path() == super::simulate::SIMULATE_PATH;
    if !signing && !simulating && !allows(caller.role, request.method()) {
        return ApiError::forbidden(&caller.name, request.method()).into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Who a request comes from, by the first credential it carries: a trusted proxy's user
/// header, an `Authorization` header, a session cookie; else the ready answer (401, 403, 429,
/// 503). A credential that is present but wrong is refused, never passed over for the next
/// one. Failed tokens are counted and limited per address ([`refused`]).
async fn identify(
    app: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    path: &str,
    now: Instant,
) -> Result<Caller, Response> {
    if let Some(proxy) = app.proxy_identity.as_deref() {
        if let Some(value) = headers.get(proxy.header.as_str()) {
            return proxy_caller(proxy, value, client).map_err(IntoResponse::into_response);
        }
    }
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials);
    if let Some(presented) = presented {
        // Over budget, a presented token is not looked at: a right guess answers as a wrong
        // one.
        if let Some(wait) = client.and_then(|ip| app.auth_failures.limited(ip, now)) {
            refused(app, client, path, FailureReason::Limited, now);
            return Err(too_many_failures(wait));
        }
        return match matching_token(&app.tokens, presented) {
            Some(token) => Ok(Caller {
                name: Arc::from(token.name.as_str()),
                role: token.role,
                via: Via::Token,
            }),
            None => {
                refused(app, client, path, FailureReason::Invalid, now);
                Err(ApiError::unauthorized().into_response())
            }
        };
    }
    match super::session::caller_of(app, headers).await {
        Ok(Some(caller)) => Ok(caller),
        // No token (a session cookie is 256 random bits: no guess to slow down): it reveals
        // nothing and gets its 401, which opens the console's sign-in.
        Ok(None) => {
            refused(app, client, path, FailureReason::Missing, now);
            Err(ApiError::unauthorized().into_response())
        }
        Err(e) => Err(e.into_response()),
    }
}

/// The user a trusted proxy names in its header, with the role the config gives that user.
fn proxy_caller(
    proxy: &crate::config::ProxyIdentity,
    value: &HeaderValue,
    client: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    if !client.is_some_and(|ip| proxy.trusts(ip)) {
        let from = client.map_or("an unknown address".to_string(), |ip| ip.to_string());
        tracing::warn!(header = %proxy.header, from = %from, "a user header from an address that is not a trusted proxy: refused");
        return Err(ApiError::forbidden_code(
            "untrusted_proxy",
            format!(
                "the {} header is taken only from the addresses in [http.proxy_identity] trusted_proxies; {from} is not one",
                proxy.header
            ),
        ));
    }
    let user = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|u| !u.is_empty() && !u.contains(|c: char| c.is_control()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_user",
                format!("the {} header names no user", proxy.header),
            )
        })?;
    let role = proxy.role_of(user).ok_or_else(|| {
        ApiError::forbidden_code(
            "no_role",
            format!("user {user:?} is in neither operate nor read of [http.proxy_identity]"),
        )
    })?;
    Ok(Caller {
        name: Arc::from(user),
        role,
        via: Via::Proxy,
    })
}

/// Longest route written to a log line: the path is the client's.
const MAX_LOGGED_ROUTE: usize = 120;

/// Counts a refused request, spends from its address's budget, and logs it (at most one line
/// per address per minute, which counts the ones in between). Never the token.
fn refused(
    app: &AppState,
    client: Option<std::net::IpAddr>,
    path: &str,
    reason: FailureReason,
    now: Instant,
) {
    app.daemon.metrics.auth_failed(reason.as_str());
    let Some(ip) = client else { return };
    if let LogDecision::Log { earlier } = app.auth_failures.record(ip, reason, now) {
        let mut end = path.len().min(MAX_LOGGED_ROUTE);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        tracing::warn!(
            address = %ip,
            route = &path[..end],
            reason = reason.as_str(),
            earlier_unlogged = earlier,
            "authentication failed (further failures from this address are logged at most once a minute, with their count)"
        );
    }
}

/// 429 `{"code": "too_many_auth_failures"}` with `Retry-After` in whole seconds (rounded up).
fn too_many_failures(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "too_many_auth_failures",
        message: format!(
            "too many failed authentications from this address; try again in {seconds} s"
        ),
    }
    .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// Who the API takes the caller for.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// The token's name (`[[http.tokens]]` `name`, or `auth_token`); `anonymous` when the
    /// daemon has no token.
    pub name: String,
    /// `read` (every GET) or `operate` (everything); `operate` when the daemon has no token.
    #[schema(value_type = String, example = "read")]
    pub role: &'static str,
    /// How the caller was identified: `token` (a bearer token), `session` (the console's
    /// session cookie), `proxy` (a trusted proxy's user header), or `none` (the API asks
    /// nobody).
    #[schema(value_type = String, example = "session")]
    pub via: &'static str,
}

/// The caller's token name and role, so that a client (the console) can show who is signed in
/// and offer only what the role may do, instead of learning it from a 403.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth", responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(caller: Option<Extension<Caller>>) -> Json<WhoAmI> {
    // No `Caller`: the middleware let the request in without a token, which it only does
    // when no token is configured.
    Json(match caller {
        Some(Extension(caller)) => WhoAmI {
            name: caller.name.to_string(),
            role: caller.role.as_str(),
            via: caller.via.as_str(),
        },
        None => WhoAmI {
            name: ANONYMOUS.to_string(),
            role: Role::Operate.as_str(),
            via: "none",
        },
    })
}

/// The credentials of an `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 7235 §2.1: `bearer` and `BEARER` are `Bearer`), and any amount of
/// whitespace may separate it from the token.
pub fn bearer_credentials(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim_start().split_once([' ', '\t'])?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The configured token equal to `presented`, comparing with every token in constant time
/// (a match does not end the loop early).
fn matching_token<'t>(tokens: &'t [ApiToken], presented: &str) -> Option<&'t ApiToken> {
    // 0 = none; i + 1 = tokens[i].
    let mut found = 0u64;
    for (i, token) in tokens.iter().enumerate() {
        let equal = presented.as_bytes().ct_eq(token.secret.as_bytes());
        found.conditional_assign(&(i as u64 + 1), equal);
    }
    (found > 0).then(|| &tokens[found as usize - 1])
}

/// Whether `role` may send a request with `method`: `read` only what cannot change state.
pub fn allows(role: Role, method: &Method) -> bool {
    match role {
        Role::Operate => true,
        Role::Read => matches!(*method, Method::GET | Method::HEAD),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenSource;

    fn token(name: &str, role: Role, secret: &str) -> ApiToken {
        ApiToken {
            name: name.into(),
            role,
            secret: secret.into(),
            source: TokenSource::Inline,
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_needs_a_token() {
        for header in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "BeArEr   abc  ",
            "Bearer\tabc",
        ] {
            assert_eq!(bearer_credentials(header), Some("abc"), "{header:?}");
        }
        for header in [
            "Bearer",
            "Bearer ",
            "Basic abc",
            "Bearerabc",
            "Token abc",
            "",
        ] {
            assert_eq!(bearer_credentials(header), None, "{header:?}");
        }
    }

    #[test]
    fn the_matching_token_is_found_wherever_it_is_in_the_list() {
        let tokens = [
            token("a", Role::Read, "secret-a"),
            token("b", Role::Operate, "secret-b"),
            token("c", Role::Read, "secret-c"),
        ];
        for (secret, name) in [("secret-a", "a"), ("secret-b", "b"), ("secret-c", "c")] {
            assert_eq!(matching_token(&tokens, secret).unwrap().name, name);
        }
        for wrong in ["secret-", "secret-d", "secret-aa", ""] {
            assert!(matching_token(&tokens, wrong).is_none(), "{wrong:?}");
        }
    }

    #[test]
    fn a_read_token_may_only_read() {
        assert!(allows(Role::Read, &Method::GET));
        assert!(allows(Role::Read, &Method::HEAD));
        for method in [Method::POST, Method::DELETE, Method::PUT, Method::PATCH] {
            assert!(!allows(Role::Read, &method), "{method}");
            assert!(allows(Role::Operate, &method), "{method}");
        }
    }
}
