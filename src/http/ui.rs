//! The operator console at `/ui/` (`GET /` redirects there): a few server-served pages with a
//! little vanilla JavaScript, in the manner of Sidekiq's Web UI and Flower. Everything is
//! embedded in the binary (`assets/ui/`), so it works offline and loads nothing from another
//! host; there is no build step.
//!
//! Why the pages are static shells that fetch the JSON API, rather than HTML rendered with
//! the data: every read and write then passes the same identity and role checks as any other
//! client, and the audit names the caller. Signing in exchanges the token for a session cookie
//! (`session.rs`: HttpOnly, SameSite=Strict, kept in Redis as a digest) that serves every tab
//! of the browser until sign-out or expiry; writes from other sites are refused whatever
//! cookie rides along (`guard.rs`). The pages themselves hold no data, need no token and are
//! the same for everyone, like `/docs`; the auth layer only guards `/api/`. Job data is put
//! into the page with `textContent` only, and the Content-Security-Policy allows no inline
//! script, so a traceback holding `<script>` stays text.
//!
//! All URLs in the pages are relative (`assets/…`, `jobs`, `../api/v1/…`), so the console also
//! works behind a reverse proxy that mounts the daemon under a prefix. Pages are one level
//! below `/ui/` (`/ui/job?id=…`, not `/ui/jobs/<id>`) for that reason.

use axum::body::Body;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiError;

/// This host's scripts, styles, images and API only. No inline script or style (the pages
/// have none), no plugins, no frames; forms may only submit here (the jobs page's filter is a
/// plain GET form).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const LAYOUT: &str = include_str!("../../assets/ui/layout.html");

/// One page: its path under `/ui/`, the name of its script (and of its `data-page`), its
/// title and the body that goes into the layout.
struct Page {
    path: &'static str,
    name: &'static str,
    title: &'static str,
    body: &'static str,
}

const PAGES: &[Page] = &[
    Page {
        path: "/ui/",
        name: "overview",
        title: "Overview",
        body: include_str!("../../assets/ui/overview.html"),
    },
    Page {
        path: "/ui/jobs",
        name: "jobs",
        title: "Failed jobs",
        body: include_str!("../../assets/ui/jobs.html"),
    },
    Page {
        path: "/ui/job",
        name: "job",
        title: "Job",
        body: include_str!("../../assets/ui/job.html"),
    },
    Page {
        path: "/ui/policies",
        name: "policies",
        title: "Policies",
        body: include_str!("../../assets/ui/policies.html"),
    },
    Page {
        path: "/ui/simulate",
        name: "simulate",
        title: "Simulate",
        body: include_str!("../../assets/ui/simulate.html"),
    },
    Page {
        path: "/ui/audit",
        name: "audit",
        title: "Audit",
        body: include_str!("../../assets/ui/audit.html"),
    },
];

/// The files under `/ui/assets/<ASSET_VERSION>/`: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/ui/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/ui/console.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/ui/overview.js"),
    ),
    (
        "jobs.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/ui/jobs.js"),
    ),
    (
        "job.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/ui/job.js"),
    ),
    (
        "policies.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/ui/policies.js"),
    ),
    (
        "simulate.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/ui/simulate.js"),
    ),
    (
        "audit.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/ui/audit.js"),
    ),
    (
        "search.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/ui/search.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../assets/ui/favicon.svg"),
    ),
];

/// A digest of every embedded file, the path segment the pages load their assets under: a
/// build with other assets serves them under another URL, so they can be cached for good
/// (like `/docs`'s versioned Swagger UI) and a browser never mixes old and new files.
pub const ASSET_VERSION: u64 = assets_digest();

/// FNV-1a over the layout, the page bodies and the assets, at compile time.
const fn assets_digest() -> u64 {
    const fn feed(mut hash: u64, bytes: &[u8]) -> u64 {
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        hash
    }
    let mut hash = feed(0xcbf2_9ce4_8422_2325, LAYOUT.as_bytes());
    let mut i = 0;
    while i < PAGES.len() {
        hash = feed(hash, PAGES[i].body.as_bytes());
        i += 1;
    }
    let mut i = 0;
    while i < ASSETS.len() {
        hash = feed(hash, ASSETS[i].2);
        i += 1;
    }
    hash
}

fn version() -> String {
    format!("{ASSET_VERSION:016x}")
}

/// The console's routes. They take no state: the pages hold no data.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/", get(to_console))
        .route("/ui", get(to_console))
        .route("/ui/assets/{version}/{file}", get(asset));
    for page in PAGES {
        router = router.route(page.path, get(move || async move { render(page) }));
    }
    router
}

/// `GET /` and `GET /ui`: to `/ui/`. The target is relative (`ui/` resolves to `/ui/` from
/// both), so that it stays right behind a proxy that mounts the daemon under a prefix.
async fn to_console() -> Response {
    let mut response = StatusCode::FOUND.into_response();
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static("ui/"));
    response
}

fn render(page: &Page) -> Response {
    let html = LAYOUT
        .replace("{{TITLE}}", page.title)
        .replace("{{PAGE}}", page.name)
        .replace("{{VERSION}}", &version())
        .replace("{{BODY}}", page.body);
    // The page names the current asset version, so it must be fetched again each time.
    with_headers("text/html; charset=utf-8", Body::from(html), "no-cache")
}

async fn asset(Path((wanted, file)): Path<(String, String)>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) if wanted == version() => with_headers(
            content_type,
            Body::from(*bytes),
            "public, max-age=31536000, immutable",
        ),
        _ => ApiError::not_found("no_route", "no such file of the console").into_response(),
    }
}

fn with_headers(content_type: &'static str, body: Body, cache: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let response = routes::<()>().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    /// Whether `html` has an inline event handler attribute (` onclick=` and the like).
    fn has_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_lowercase())
                    .len();
            name > 0 && rest[name..].starts_with('=')
        })
    }

    /// The `src`/`href` values of a page.
    fn referenced(html: &str) -> Vec<String> {
        let mut out = Vec::new();
        for attr in ["src=\"", "href=\""] {
            let mut rest = html;
            while let Some(i) = rest.find(attr) {
                rest = &rest[i + attr.len()..];
                let end = rest.find('"').unwrap();
                out.push(rest[..end].to_string());
            }
        }
        out
    }

    #[tokio::test]
    async fn the_root_and_ui_without_a_slash_redirect_to_the_console_relatively() {
        for uri in ["/", "/ui"] {
            let (status, headers, _) = get(uri).await;
            assert_eq!(status, StatusCode::FOUND, "{uri}");
            assert_eq!(headers[LOCATION], "ui/", "{uri}");
        }
    }

    #[tokio::test]
    async fn every_page_is_html_with_a_strict_csp_and_loads_only_its_own_assets() {
        for page in PAGES {
            let (status, headers, html) = get(page.path).await;
            assert_eq!(status, StatusCode::OK, "{}", page.path);
            assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
            assert_eq!(headers[CACHE_CONTROL], "no-cache");
            let csp = headers["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("default-src 'self'"), "{csp}");
            assert!(csp.contains("script-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe") && !csp.contains("http"), "{csp}");
            assert!(!html.contains("{{"), "unfilled template in {}", page.path);
            assert!(
                !html.contains("<script>") && !html.contains("style=") && !has_handler(&html),
                "no inline script, style or handler in {}",
                page.path
            );
            assert!(
                !html.contains("//"),
                "names no other host: {}: {html}",
                page.path
            );
            let urls = referenced(&html);
            let scripts: Vec<&String> = urls.iter().filter(|u| u.ends_with(".js")).collect();
            assert_eq!(
                scripts.len(),
                3,
                "the shared script, the search box's and the page's: {urls:?}"
            );
            assert!(
                urls.contains(&format!("assets/{}/search.js", version())),
                "every page has the search box (issue 22, item 1): {urls:?}"
            );
            for url in urls.iter().filter(|u| u.starts_with("assets/")) {
                let (status, headers, body) = get(&format!("/ui/{url}")).await;
                assert_eq!(status, StatusCode::OK, "{url}");
                assert!(headers[CACHE_CONTROL]
                    .to_str()
                    .unwrap()
                    .contains("immutable"));
                assert_eq!(headers["x-content-type-options"], "nosniff");
                assert!(!body.is_empty(), "{url}");
            }
            assert!(
                urls.iter()
                    .any(|u| u == &format!("assets/{}/{}.js", version(), page.name)),
                "{}: {urls:?}",
                page.path
            );
        }
    }

    #[tokio::test]
    async fn an_asset_of_another_version_or_an_unknown_file_is_a_json_404() {
        for uri in [
            "/ui/assets/0000000000000000/console.js".to_string(),
            format!("/ui/assets/{}/nothing.js", version()),
            format!("/ui/assets/{}/layout.html", version()),
        ] {
            let (status, headers, body) = get(&uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(headers[CONTENT_TYPE], "application/json", "{uri}");
            assert!(body.contains("\"no_route\""), "{body}");
        }
    }

    /// The scripts put job data into the page as text only: no `innerHTML`, `outerHTML`,
    /// `insertAdjacentHTML`, `document.write` or `eval` anywhere in them.
    #[test]
    fn no_script_parses_text_as_html() {
        for (name, _, bytes) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            let text = std::str::from_utf8(bytes).unwrap();
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!text.contains(sink), "{name} uses {sink}");
            }
        }
    }
}
