//! Bearer-token authentication and roles for `/api/` routes. Tokens are compared in constant
//! time, and every configured token is compared on every request, so the time taken does not
//! reveal which token (or how many) a guess came close to. No token is ever logged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::error::ApiError;
use super::AppState;
use crate::config::{ApiToken, Role};

/// Who a request was let in as, put into the request's extensions by [`require_token`] for
/// handlers (the audit's "who", `whoami`) to read. Absent when the API asks nobody (no token
/// and no proxy identity configured).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name, or the user a trusted proxy named.
    pub name: Arc<str>,
    pub role: Role,
    pub via: Via,
}

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer <token>`.
    Token,
    /// The console's session cookie (`session.rs`).
    Session,
    /// The user header of a trusted reverse proxy (`[http.proxy_identity]`).
    Proxy,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Token => "token",
            Via::Session => "session",
            Via::Proxy => "proxy",
        }
    }
}

/// The name of everyone when the API asks nobody who they are.
pub const ANONYMOUS: &str = "anonymous";

/// The one `/api/` route that needs no token: the API's description is no secret (it is
/// generated from the code), and `/docs` must be able to load it before the user has typed a
/// token into "Authorize".
pub const OPEN_API_PATH: &str = "/api/v1/openapi.json";

/// Lets `/api/` requests in as a [`Caller`] when the API asks who is calling: the user a
/// trusted proxy names (`[http.proxy_identity]`), else a bearer token, else the console's
/// session cookie; 401 for none, 403 for a write with role `read`. Passes everything through
/// when neither tokens nor a proxy identity are configured.
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
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    let caller = match identify(&app, request.headers(), peer).await {
        Ok(Some(caller)) => caller,
        Ok(None) => return ApiError::unauthorized().into_response(),
        Err(refusal) => return refusal.into_response(),
    };
    // Signing in or out changes no job: a `read` token may do it.
    let signing = request.uri().path() == super::session::SESSION_PATH;
    if !signing && !allows(caller.role, request.method()) {
        return ApiError::forbidden(&caller.name, request.method()).into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Who `request` comes from, by the first credential it carries: a trusted proxy's user
/// header, an `Authorization` header, a session cookie. A credential that is present but
/// wrong is refused, never passed over for the next one.
async fn identify(
    app: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Option<Caller>, ApiError> {
    if let Some(proxy) = app.proxy_identity.as_deref() {
        if let Some(value) = headers.get(proxy.header.as_str()) {
            if !peer.is_some_and(|ip| proxy.trusts(ip)) {
                let from = peer.map_or("an unknown address".to_string(), |ip| ip.to_string());
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
                    format!(
                        "user {user:?} is in neither operate nor read of [http.proxy_identity]"
                    ),
                )
            })?;
            return Ok(Some(Caller {
                name: Arc::from(user),
                role,
                via: Via::Proxy,
            }));
        }
    }
    if let Some(header) = headers.get(AUTHORIZATION) {
        let presented = header.to_str().ok().and_then(bearer_credentials);
        return Ok(presented
            .and_then(|p| matching_token(&app.tokens, p))
            .map(|token| Caller {
                name: Arc::from(token.name.as_str()),
                role: token.role,
                via: Via::Token,
            }));
    }
    super::session::caller_of(app, headers).await
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
