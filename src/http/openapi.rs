//! The OpenAPI document, generated from the handlers' annotations (never written by hand).

use axum::Json;
use utoipa::OpenApi;

use super::{bulk, control, docs, error, jobs, stats};

#[derive(OpenApi)]
#[openapi(
    info(title = "rq-retryd", description = "Automatic retry supervisor for RQ failed job registries"),
    paths(
        jobs::list_failed, jobs::groups, jobs::retry_one, jobs::delete_one, jobs::explain, jobs::status,
        bulk::retry_all, bulk::clear, bulk::task,
        stats::stats,
        control::supervisor, control::pause, control::resume, control::scan_now, control::policies, control::audit,
        control::healthz, control::readyz, control::metrics, document, docs::page,
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

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health", security(()), responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
