//! The guard in front of every route (issue 19: "no web page can act, no rebinding can read").
//! It runs before auth and every handler, and refuses three kinds of request a browser can be
//! made to send on a page the operator visits:
//!
//! - **DNS rebinding** (421 `host_not_allowed`): a page of `evil.example` whose name is made to
//!   resolve to 127.0.0.1 is same-origin with itself, so the browser lets it read the answers;
//!   only its `Host` header gives it away. A request must name a local host (a loopback address,
//!   `localhost` or a name under it), the listen address (any IP literal when listening on
//!   `0.0.0.0` or `::`), or an entry of `http.allowed_hosts`. The port is not compared: a
//!   rebound name reaches the daemon on its own port anyway, and proxies and port mappings change
//!   it. On a non-loopback listen `/healthz`, `/readyz` and `/metrics` take any `Host`, as
//!   probes and scrapers address the daemon by whatever name their discovery gives it; those
//!   answers are open to the network there anyway and hold no job data.
//! - **Cross-site writes** (403 `cross_site`): any method but GET and HEAD whose `Origin` is
//!   neither the request's own (http or https, of the host the request names) nor in
//!   `http.allowed_origins` (`Origin: null` included), or whose `Sec-Fetch-Site` is not
//!   `same-origin` or `none` (unless its `Origin` is an allowed one).
//! - **Forms from browsers that say nothing** (415 `form_body`): a write with neither header
//!   whose body is a form (`application/x-www-form-urlencoded`, `multipart/form-data`,
//!   `text/plain`, the types a cross-site form can send without asking). The API reads no body;
//!   `curl -X POST` sends none and passes, and so do clients that send neither header.
//!
//! On the way out it adds what protects the answers themselves: `X-Content-Type-Options:
//! nosniff` on every answer, `Cache-Control: no-store` on every answer that does not say how it
//! may be cached (every JSON answer), and on HTML pages a `Content-Security-Policy` with
//! `frame-ancestors 'none'` and `X-Frame-Options: DENY` (no framing, so no clickjacking).

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

use super::error::ApiError;
use super::AppState;
use crate::config::{AllowedHost, Host, HttpSettings, Origin};

/// The routes that probes and scrapers call, which take any `Host` on a non-loopback listen.
const PROBE_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The body types an HTML form (or a `fetch` without a CORS preflight) can send to another site.
const FORM_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

/// What the guard compares a request with: the current config's `[http]` (a reload applies to
/// the next request).
pub struct Rules<'c> {
    pub listen: SocketAddr,
    pub allowed_hosts: &'c [AllowedHost],
    pub allowed_origins: &'c [Origin],
}

impl<'c> Rules<'c> {
    pub fn of(http: &'c HttpSettings) -> Rules<'c> {
        Rules {
            listen: http.listen,
            allowed_hosts: &http.allowed_hosts,
            allowed_origins: &http.allowed_origins,
        }
    }
}

/// Why a request was refused; nothing of the daemon's data is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request names a host this daemon does not answer for (421 `host_not_allowed`).
    HostNotAllowed(String),
    /// A write sent by a page of another origin (403 `cross_site`).
    CrossSite(String),
    /// A write with a form body and no header saying where it comes from (415 `form_body`).
    FormBody(String),
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let (status, code, message) = match refusal {
            Refusal::HostNotAllowed(m) => (StatusCode::MISDIRECTED_REQUEST, "host_not_allowed", m),
            Refusal::CrossSite(m) => (StatusCode::FORBIDDEN, "cross_site", m),
            Refusal::FormBody(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "form_body", m),
        };
        ApiError {
            status,
            code,
            message,
        }
    }
}

/// The middleware: refuses what [`check`] refuses before anything else runs, and adds the
/// security headers to every answer, refusals included.
pub async fn protect(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let config = app.daemon.config();
    let verdict = check(
        &Rules::of(&config.http),
        request.method(),
        request.uri(),
        request.headers(),
    );
    let response = match verdict {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::info!(reason = ?refusal, "refused a request");
            ApiError::from(refusal).into_response()
        }
    };
    with_security_headers(response)
}

/// Decides whether a request may reach the routes. Pure: the request's parts in, a verdict out.
pub fn check(
    rules: &Rules,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let named = named_host(uri, headers)?;
    let probe = PROBE_PATHS.contains(&uri.path()) && !rules.listen.ip().is_loopback();
    if !probe {
        let (host, _) = named.as_ref().ok_or_else(|| {
            Refusal::HostNotAllowed("the request names no host (no Host header)".into())
        })?;
        if !host_allowed(rules, host) {
            return Err(Refusal::HostNotAllowed(format!(
                "this daemon does not answer for host {host}; a name it should answer for \
                 belongs in http.allowed_hosts"
            )));
        }
    }
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(());
    }
    let origin = header_text(headers, &ORIGIN)?;
    let fetch_site = header_text(headers, &HeaderName::from_static("sec-fetch-site"))?;
    let mut trusted = false;
    if let Some(origin) = origin {
        let parsed = Origin::parse(origin).map_err(|_| {
            Refusal::CrossSite(format!(
                "a write from a page of origin {origin:?} (an opaque or unreadable origin)"
            ))
        })?;
        trusted = rules.allowed_origins.contains(&parsed);
        let own = named
            .as_ref()
            .is_some_and(|(host, port)| parsed.is_served_by(host, *port));
        if !own && !trusted {
            return Err(Refusal::CrossSite(format!(
                "a write from a page of {parsed}, which is not this daemon's origin nor in \
                 http.allowed_origins"
            )));
        }
    }
    if let Some(site) = fetch_site {
        let same = ["same-origin", "none"]
            .iter()
            .any(|s| site.eq_ignore_ascii_case(s));
        if !same && !trusted {
            return Err(Refusal::CrossSite(format!(
                "a write from a page of another origin (Sec-Fetch-Site: {site})"
            )));
        }
    }
    if origin.is_none() && fetch_site.is_none() && is_form(headers) {
        return Err(Refusal::FormBody(
            "a write with a form or text body and no Origin or Sec-Fetch-Site header is what an \
             HTML form sends; the API reads no body: give the parameters in the query string \
             and send no body (curl -X POST, not -d)"
                .into(),
        ));
    }
    Ok(())
}

/// The host (and port) the request is addressed to: the authority of an absolute-form target
/// (which takes precedence over `Host`, RFC 9112 §3.2.2), else the one `Host` header. When both
/// are present they must name the same host, so that no check reads one and a route the other.
fn named_host(uri: &Uri, headers: &HeaderMap) -> Result<Option<(Host, Option<u16>)>, Refusal> {
    let mut hosts = headers.get_all(HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => {
            return Err(Refusal::HostNotAllowed(
                "the request has more than one Host header".into(),
            ))
        }
        (Some(value), None) => Some(parse_host(value.to_str().unwrap_or("\u{fffd}"))?),
        (None, None) => None,
    };
    match uri.authority() {
        Some(authority) => {
            let target = parse_host(authority.as_str())?;
            if header.as_ref().is_some_and(|h| *h != target) {
                return Err(Refusal::HostNotAllowed(
                    "the request's Host header names another host than its target".into(),
                ));
            }
            Ok(Some(target))
        }
        None => Ok(header),
    }
}

fn parse_host(text: &str) -> Result<(Host, Option<u16>), Refusal> {
    // An authority may carry `user@`, which no browser sends; it is not a host of ours.
    Host::parse_with_port(text).map_err(|_| {
        Refusal::HostNotAllowed(format!(
            "the request names a host that cannot be read ({:?})",
            text.chars().take(100).collect::<String>()
        ))
    })
}

/// Whether the daemon answers for `host` (see the module's documentation).
pub fn host_allowed(rules: &Rules, host: &Host) -> bool {
    let listen = rules.listen.ip().to_canonical();
    host.is_local()
        || match host {
            Host::Ip(ip) => *ip == listen || listen.is_unspecified(),
            Host::Name(_) => false,
        }
        || rules.allowed_hosts.iter().any(|a| a.matches(host))
}

/// A header's text, `None` when absent; a header sent twice or not readable as text is a
/// request no browser makes, refused as cross-site rather than guessed at.
fn header_text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, Refusal> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| Refusal::CrossSite(format!("the {name} header is not readable text"))),
        (Some(_), Some(_)) => Err(Refusal::CrossSite(format!(
            "the request has more than one {name} header"
        ))),
    }
}

/// Whether the body is declared as one of the [`FORM_TYPES`].
fn is_form(headers: &HeaderMap) -> bool {
    headers.get_all(CONTENT_TYPE).iter().any(|value| {
        let text = String::from_utf8_lossy(value.as_bytes());
        let media = text.split(';').next().unwrap_or("").trim();
        FORM_TYPES.iter().any(|t| media.eq_ignore_ascii_case(t))
    })
}

/// Adds the headers that keep an answer from being sniffed, cached or framed; a header a route
/// set itself (the console's own policy, an asset's long caching) is kept, and a
/// `Content-Security-Policy` without `frame-ancestors` gets it.
pub fn with_security_headers(mut response: Response) -> Response {
    let html = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let headers = response.headers_mut();
    headers
        .entry(HeaderName::from_static("x-content-type-options"))
        .or_insert(HeaderValue::from_static("nosniff"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if html {
        let csp = HeaderName::from_static("content-security-policy");
        let framed = match headers.get(&csp).and_then(|v| v.to_str().ok()) {
            Some(policy) if policy.contains("frame-ancestors") => None,
            Some(policy) => Some(format!("{policy}; frame-ancestors 'none'")),
            None => Some("frame-ancestors 'none'".to_string()),
        };
        if let Some(value) = framed.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(csp, value);
        }
        headers
            .entry(HeaderName::from_static("x-frame-options"))
            .or_insert(HeaderValue::from_static("DENY"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules<'c>(listen: &str, hosts: &'c [AllowedHost], origins: &'c [Origin]) -> Rules<'c> {
        Rules {
            listen: listen.parse().unwrap(),
            allowed_hosts: hosts,
            allowed_origins: origins,
        }
    }

    /// Header names and values, as a test writes them.
    type Headers<'a> = &'a [(&'a str, &'a str)];

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn verdict(
        rules: &Rules,
        method: &str,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> Result<(), Refusal> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        check(rules, &method, &path.parse().unwrap(), &headers(pairs))
    }

    fn code(result: Result<(), Refusal>) -> &'static str {
        match result {
            Ok(()) => "ok",
            Err(refusal) => ApiError::from(refusal).code,
        }
    }

    #[test]
    fn a_loopback_listen_answers_local_hosts_and_listed_names_only() {
        let listed = [
            AllowedHost::parse("rq.example.com").unwrap(),
            AllowedHost::parse("*.ops.example").unwrap(),
        ];
        let r = rules("127.0.0.1:9732", &listed, &[]);
        for host in [
            "127.0.0.1:9732",
            "127.0.0.1",
            "127.0.0.2:1",
            "[::1]:9732",
            "localhost:9732",
            "LOCALHOST",
            "localhost.:9732",
            "console.localhost:9732",
            "rq.example.com:443",
            "RQ.EXAMPLE.COM.",
            "a.ops.example:9732",
        ] {
            assert_eq!(
                code(verdict(&r, "GET", "/api/v1/jobs/failed", &[("host", host)])),
                "ok",
                "{host}"
            );
        }
        for host in [
            "evil.example:9732",
            "evil.example",
            "localhost.evil.example:9732",
            "ops.example",
            "10.0.0.5:9732",
            "0.0.0.0:9732",
            "[::]:9732",
            "127.0.0.1:nope",
            "",
            "a b",
        ] {
            for path in [
                "/api/v1/jobs/failed",
                "/ui/",
                "/healthz",
                "/metrics",
                "/api/v1/openapi.json",
            ] {
                assert_eq!(
                    code(verdict(&r, "GET", path, &[("host", host)])),
                    "host_not_allowed",
                    "{host} {path}"
                );
            }
        }
        assert_eq!(
            code(verdict(&r, "GET", "/healthz", &[])),
            "host_not_allowed",
            "no Host"
        );
        assert_eq!(
            code(verdict(
                &r,
                "GET",
                "/healthz",
                &[("host", "127.0.0.1"), ("host", "evil.example")]
            )),
            "host_not_allowed",
            "two Hosts"
        );
    }

    #[test]
    fn an_absolute_target_is_checked_as_the_host_it_names() {
        let r = rules("127.0.0.1:9732", &[], &[]);
        let evil = "http://evil.example:9732/api/v1/jobs/failed";
        assert_eq!(code(verdict(&r, "GET", evil, &[])), "host_not_allowed");
        assert_eq!(
            code(verdict(&r, "GET", evil, &[("host", "127.0.0.1:9732")])),
            "host_not_allowed"
        );
        let local = "http://127.0.0.1:9732/api/v1/jobs/failed";
        assert_eq!(code(verdict(&r, "GET", local, &[])), "ok");
        assert_eq!(
            code(verdict(&r, "GET", local, &[("host", "evil.example")])),
            "host_not_allowed"
        );
    }

    #[test]
    fn an_unspecified_listen_answers_any_ip_literal_and_probes_answer_any_host() {
        let r = rules("0.0.0.0:9732", &[], &[]);
        for host in [
            "10.1.2.3:9732",
            "192.168.0.7",
            "[fd00::1]:9732",
            "127.0.0.1:9732",
        ] {
            assert_eq!(
                code(verdict(&r, "GET", "/api/v1/jobs/failed", &[("host", host)])),
                "ok",
                "{host}"
            );
        }
        assert_eq!(
            code(verdict(
                &r,
                "GET",
                "/api/v1/jobs/failed",
                &[("host", "rq-retryd.svc:9732")]
            )),
            "host_not_allowed"
        );
        for path in PROBE_PATHS {
            assert_eq!(
                code(verdict(&r, "GET", path, &[("host", "rq-retryd.svc:9732")])),
                "ok",
                "{path}"
            );
            assert_eq!(
                code(verdict(&r, "GET", path, &[])),
                "ok",
                "{path} without Host"
            );
        }
        let one_ip = rules("10.1.2.3:9732", &[], &[]);
        assert_eq!(
            code(verdict(
                &one_ip,
                "GET",
                "/ui/",
                &[("host", "10.1.2.3:9732")]
            )),
            "ok"
        );
        assert_eq!(
            code(verdict(
                &one_ip,
                "GET",
                "/ui/",
                &[("host", "10.1.2.4:9732")]
            )),
            "host_not_allowed"
        );
    }

    #[test]
    fn a_write_from_another_origin_is_refused_and_from_its_own_is_not() {
        let r = rules("127.0.0.1:9732", &[], &[]);
        let host = ("host", "127.0.0.1:9732");
        let path = "/api/v1/supervisor/pause";
        let cases: &[(&str, Headers, &str)] = &[
            ("curl -X POST", &[host], "ok"),
            (
                "curl with a JSON body",
                &[host, ("content-type", "application/json")],
                "ok",
            ),
            (
                "own origin",
                &[
                    host,
                    ("origin", "http://127.0.0.1:9732"),
                    ("sec-fetch-site", "same-origin"),
                ],
                "ok",
            ),
            (
                "own origin over https",
                &[host, ("origin", "https://127.0.0.1:9732")],
                "ok",
            ),
            (
                "own origin, form body",
                &[
                    host,
                    ("origin", "http://127.0.0.1:9732"),
                    ("content-type", "text/plain"),
                ],
                "ok",
            ),
            (
                "typed by the user",
                &[host, ("sec-fetch-site", "none")],
                "ok",
            ),
            (
                "same-origin only",
                &[
                    host,
                    ("sec-fetch-site", "same-origin"),
                    ("content-type", "multipart/form-data; boundary=x"),
                ],
                "ok",
            ),
            (
                "evil origin",
                &[host, ("origin", "http://evil.example")],
                "cross_site",
            ),
            (
                "evil origin, own fetch site",
                &[
                    host,
                    ("origin", "http://evil.example"),
                    ("sec-fetch-site", "same-origin"),
                ],
                "cross_site",
            ),
            (
                "other port, same site",
                &[
                    host,
                    ("origin", "http://127.0.0.1:8000"),
                    ("sec-fetch-site", "same-site"),
                ],
                "cross_site",
            ),
            (
                "localhost is another origin",
                &[host, ("origin", "http://localhost:9732")],
                "cross_site",
            ),
            ("null origin", &[host, ("origin", "null")], "cross_site"),
            (
                "cross-site fetch only",
                &[host, ("sec-fetch-site", "cross-site")],
                "cross_site",
            ),
            (
                "same-site fetch only",
                &[host, ("sec-fetch-site", "same-site")],
                "cross_site",
            ),
            (
                "own origin, cross-site fetch",
                &[
                    host,
                    ("origin", "http://127.0.0.1:9732"),
                    ("sec-fetch-site", "cross-site"),
                ],
                "cross_site",
            ),
            (
                "two origins",
                &[
                    host,
                    ("origin", "http://127.0.0.1:9732"),
                    ("origin", "http://evil.example"),
                ],
                "cross_site",
            ),
            (
                "an old browser's form",
                &[host, ("content-type", "application/x-www-form-urlencoded")],
                "form_body",
            ),
            (
                "an old browser's text",
                &[host, ("content-type", "Text/Plain; charset=utf-8")],
                "form_body",
            ),
        ];
        for (what, pairs, expected) in cases {
            for method in ["POST", "DELETE", "PUT", "PATCH", "OPTIONS"] {
                assert_eq!(
                    code(verdict(&r, method, path, pairs)),
                    *expected,
                    "{what} ({method})"
                );
            }
            for method in ["GET", "HEAD"] {
                assert_eq!(
                    code(verdict(&r, method, path, pairs)),
                    "ok",
                    "{what} ({method}) reads"
                );
            }
        }
    }

    #[test]
    fn an_allowed_origin_may_write_from_another_site() {
        let origins = [Origin::parse("https://ops.example.com").unwrap()];
        let hosts = [AllowedHost::parse("rq.internal").unwrap()];
        let r = rules("127.0.0.1:9732", &hosts, &origins);
        let path = "/api/v1/jobs/failed/retry-all";
        let proxied = [
            ("host", "rq.internal"),
            ("origin", "https://OPS.example.com:443"),
            ("sec-fetch-site", "same-site"),
        ];
        assert_eq!(code(verdict(&r, "POST", path, &proxied)), "ok");
        let other = [
            ("host", "rq.internal"),
            ("origin", "https://evil.example.com"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert_eq!(code(verdict(&r, "POST", path, &other)), "cross_site");
        let own = [
            ("host", "rq.internal"),
            ("origin", "https://rq.internal"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(code(verdict(&r, "POST", path, &own)), "ok");
    }

    #[test]
    fn answers_get_nosniff_and_no_store_and_pages_cannot_be_framed() {
        let json = with_security_headers(ApiError::not_found("x", "y").into_response());
        assert_eq!(json.headers()["x-content-type-options"], "nosniff");
        assert_eq!(json.headers()[CACHE_CONTROL], "no-store");
        assert!(json.headers().get("x-frame-options").is_none());

        let mut page = "<p>hi</p>".into_response();
        page.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        page.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        page.headers_mut().insert(
            "content-security-policy",
            HeaderValue::from_static("default-src 'self'"),
        );
        let page = with_security_headers(page);
        assert_eq!(
            page.headers()[CACHE_CONTROL],
            "no-cache",
            "a route's own caching is kept"
        );
        assert_eq!(
            page.headers()["content-security-policy"],
            "default-src 'self'; frame-ancestors 'none'"
        );
        assert_eq!(page.headers()["x-frame-options"], "DENY");

        let mut strict = "<p>hi</p>".into_response();
        strict
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        strict.headers_mut().insert(
            "content-security-policy",
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
        let strict = with_security_headers(strict);
        assert_eq!(
            strict
                .headers()
                .get_all("content-security-policy")
                .iter()
                .count(),
            1
        );
        assert_eq!(
            strict.headers()["content-security-policy"],
            "frame-ancestors 'none'"
        );
    }
}
