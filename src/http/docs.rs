//! `GET /docs`: the interactive API explorer, Swagger UI rendering `/api/v1/openapi.json`.
//!
//! Everything the page needs is embedded in the binary (vendored from the `swagger-ui-dist`
//! package, see `assets/swagger-ui/README.md`), so it works offline and, with its
//! Content-Security-Policy, cannot load anything from another host. The page is static and
//! needs no token; the API calls made from it carry the token typed into "Authorize" (the
//! document's bearer scheme), checked like any other request.

use axum::body::Body;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiError;
use super::AppState;

/// The vendored Swagger UI release; also the path segment of its assets, so that they can be
/// cached for good and a new release is fetched under a new URL.
pub const SWAGGER_UI_VERSION: &str = "5.35.0";

/// Only this host's scripts, styles and API; images also as `data:` URIs (the stylesheet's
/// icons). No inline script or style (Swagger UI 5.35.0 needs neither: checked in headless
/// Chromium, which reports every violation, with operations expanded), no frames, no forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE: &str = include_str!("../../assets/docs/index.html");
const INIT_JS: &str = include_str!("../../assets/docs/init.js");

/// One embedded file: its name under `/docs/swagger-ui/<version>/`, content type and bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    ),
    (
        "LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/LICENSE"),
    ),
    (
        "NOTICE",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/NOTICE"),
    ),
    (
        "swagger-ui-bundle.js.LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js.LICENSE.txt"),
    ),
];

/// The routes of the explorer.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/docs", get(page))
        .route("/docs/init.js", get(init_js))
        .route("/docs/swagger-ui/{version}/{file}", get(asset))
}

/// The explorer's page.
#[utoipa::path(get, path = "/docs", tag = "health", security(()),
    responses((status = 200, description = "Swagger UI for this document (HTML)", content_type = "text/html")))]
pub async fn page() -> Response {
    let html = PAGE.replace("{{VERSION}}", SWAGGER_UI_VERSION);
    static_file("text/html; charset=utf-8", Body::from(html), "no-cache")
}

async fn init_js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        Body::from(INIT_JS),
        "no-cache",
    )
}

async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    let found = ASSETS.iter().find(|(name, _, _)| *name == file);
    match found {
        Some((_, content_type, bytes)) if version == SWAGGER_UI_VERSION => static_file(
            content_type,
            Body::from(*bytes),
            // The URL names the version: what it serves never changes.
            "public, max-age=31536000, immutable",
        ),
        _ => ApiError::not_found("no_route", "no such file of the API explorer").into_response(),
    }
}

fn static_file(content_type: &'static str, body: Body, cache: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    response
}
