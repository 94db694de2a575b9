//! The OpenAPI document, generated from the handlers' annotations (never written by hand).

use axum::extract::State;
use axum::Json;
use utoipa::OpenApi;

use super::{
    audit, auth, bulk, control, docs, error, history, jobs, session, simulate, stats, tasks,
    traceback_search, trend, AppState,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "rq-retryd", description = "Automatic retry supervisor for RQ failed job registries.\n\n\
Every request must name a host the daemon answers for (a loopback address, `localhost`, the listen \
address, or one of `http.allowed_hosts`), else it is answered 421 `host_not_allowed`. A POST or \
DELETE sent by a page of another origin (an `Origin` other than the daemon's own or one of \
`http.allowed_origins`, or `Sec-Fetch-Site` other than `same-origin`/`none`) is answered 403 \
`cross_site`; one with a form or text body and neither header, 415 `form_body`. Clients that send \
neither header and no body (curl -X POST) are not affected."),
    paths(
        jobs::list_failed, jobs::groups, jobs::retry_job, jobs::delete_job, jobs::explain_job,
        jobs::retry_one, jobs::delete_one, jobs::explain, jobs::status,
        bulk::retry_all, bulk::clear, tasks::task, tasks::cancel,
        stats::stats,
        session::sign_in, session::sign_out,
        control::supervisor, control::pause, control::resume, control::scan_now, control::policies, audit::list,
        control::healthz, control::readyz, control::metrics, document, docs::page,
        auth::whoami,
        trend::timeline,
        traceback_search::traceback_search,
        simulate::simulate, simulate::running_file,
        history::history,
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document, as true for this daemon as the annotations allow: with tokens configured,
/// every operation that needs one declares 401 (and 403 when a `read` token cannot send it);
/// with none, no operation claims to need a token.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health", security(()), responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn document(State(app): State<AppState>) -> Json<serde_json::Value> {
    let doc = for_daemon(app.needs_identity());
    let mut value = serde_json::to_value(doc).unwrap_or_default();
    camel_case_links(&mut value);
    bulk::declare_rate_limit(
        &mut value,
        app.daemon.config().supervisor.max_requeues_per_second,
    );
    Json(value)
}

/// utoipa 5.5 writes a link's `operationId`, `operationRef` and `requestBody` in snake case
/// (its `Link` lacks a serde rename), which makes every link invalid: the links let a client
/// (and schemathesis' stateful phase) follow a listed job to its retry, delete and explain.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(|l| l.as_object_mut()) else {
            continue;
        };
        for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(v) = link.remove(snake) {
                    link.insert(camel.to_string(), v);
                }
            }
        }
    }
}

/// The document for a daemon with (`auth`) or without tokens.
pub fn for_daemon(auth: bool) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::HttpMethod;
    let mut doc = ApiDoc::openapi();
    if !auth {
        doc.security = None;
    }
    let error = |description: &str| {
        utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, operation) in [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
        ] {
            let Some(operation) = operation else { continue };
            let open = operation.security.as_ref().is_some_and(|s| {
                s.iter()
                    .all(|r| *r == utoipa::openapi::security::SecurityRequirement::default())
            });
            let responses = &mut operation.responses.responses;
            // Any request with a declared body over the limit, on any route; any request that
            // outlasts the time limit (and, where Redis is used, Redis being unreachable).
            responses.insert("413".into(), error("request body over 64 KiB").into());
            // The guard in front of every route (issue 19).
            responses.insert(
                "421".into(),
                error("host_not_allowed: the Host names no host this daemon answers for").into(),
            );
            if method != HttpMethod::Get {
                responses.insert(
                    "403".into(),
                    error("cross_site: sent by a page of another origin").into(),
                );
                responses.insert(
                    "415".into(),
                    error("form_body: a form or text body with no Origin or Sec-Fetch-Site").into(),
                );
            }
            responses
                .entry("503".into())
                .or_insert_with(|| error("the request took over 60 s").into());
            if open {
                continue;
            }
            if auth {
                responses.insert(
                    "401".into(),
                    error("missing or unknown bearer token").into(),
                );
                responses.insert(
                    "429".into(),
                    error("too many failed authentications from this client address (too_many_auth_failures; see Retry-After)").into(),
                );
                // A simulation writes nothing: a `read` token may send it.
                if method != HttpMethod::Get && path != simulate::SIMULATE_PATH {
                    responses.insert(
                        "403".into(),
                        error(
                            "forbidden: the token has role read, which may only GET; or \
                             cross_site: sent by a page of another origin",
                        )
                        .into(),
                    );
                }
            } else {
                responses.remove("401");
            }
        }
    }
    doc
}
