//! Unknown input is refused, never ignored: a query parameter that the route does not declare
//! (`exeption=`, `DRY_RUN=true`, `dry-run=true`) is a 400 `unknown_parameter` naming it, and a
//! body sent to a route that takes none is a 400 `unexpected_body`, before any handler runs.
//! Ignoring them turned a typo into "delete everything" (see: issue 19).
//!
//! What each route takes is read from the OpenAPI document, which is generated from the
//! handlers' own parameter types: the check and the document cannot drift apart.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::TRANSFER_ENCODING;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::OpenApi;

use super::error::ApiError;

/// What each documented operation takes: its query parameters and whether it reads a body.
#[derive(Debug, Default)]
pub struct Declared {
    operations: HashMap<(Method, String), Takes>,
}

#[derive(Debug, Default)]
struct Takes {
    query: BTreeSet<String>,
    body: bool,
}

impl Declared {
    /// Every operation of `doc`, by method and path template (`/api/v1/jobs/failed/{job_id}`,
    /// the same template axum's router matches).
    pub fn from_document(doc: &OpenApi) -> Declared {
        let mut operations = HashMap::new();
        for (path, item) in &doc.paths.paths {
            for (method, operation) in [
                (Method::GET, item.get.as_ref()),
                (Method::POST, item.post.as_ref()),
                (Method::DELETE, item.delete.as_ref()),
                (Method::PUT, item.put.as_ref()),
                (Method::PATCH, item.patch.as_ref()),
            ] {
                if let Some(operation) = operation {
                    operations.insert((method, path.clone()), Takes::of(operation));
                }
            }
        }
        Declared { operations }
    }

    /// The refusal for a request to `path` (a route template) with `method` and `query`, if
    /// any. Routes the document does not describe (the console's static pages) are not
    /// checked here.
    fn check(&self, method: &Method, path: &str, query: &str, has_body: bool) -> Option<ApiError> {
        let method = if method == Method::HEAD {
            Method::GET
        } else {
            method.clone()
        };
        let takes = self.operations.get(&(method.clone(), path.to_string()))?;
        for (name, _) in url::form_urlencoded::parse(query.as_bytes()) {
            if !takes.query.contains(name.as_ref()) {
                let known = if takes.query.is_empty() {
                    "it takes none".to_string()
                } else {
                    let names: Vec<&str> = takes.query.iter().map(String::as_str).collect();
                    format!("it takes {}", names.join(", "))
                };
                return Some(ApiError::bad_request(
                    "unknown_parameter",
                    format!("unknown query parameter {name:?} for {method} {path}; {known}"),
                ));
            }
        }
        if has_body && !takes.body {
            return Some(ApiError::bad_request(
                "unexpected_body",
                format!("{method} {path} takes no request body (its input is the query string)"),
            ));
        }
        None
    }
}

impl Takes {
    fn of(operation: &Operation) -> Takes {
        let query = operation
            .parameters
            .iter()
            .flatten()
            .filter(|p| p.parameter_in == ParameterIn::Query)
            .map(|p| p.name.clone())
            .collect();
        Takes {
            query,
            body: operation.request_body.is_some(),
        }
    }
}

/// Middleware (a route layer: it runs after routing, so the matched template is known):
/// refuses a request whose query or body its route does not declare.
pub async fn refuse_undeclared(
    State(declared): State<Arc<Declared>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(path) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
    else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let has_body = super::declared_body_length(headers).is_some_and(|n| n > 0)
        || headers.contains_key(TRANSFER_ENCODING);
    let query = request.uri().query().unwrap_or("");
    match declared.check(request.method(), &path, query, has_body) {
        Some(refusal) => refusal.into_response(),
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Declared {
        Declared::from_document(&super::super::openapi::for_daemon(false))
    }

    fn refusal(method: Method, path: &str, query: &str) -> Option<String> {
        declared()
            .check(&method, path, query, false)
            .map(|e| e.code.to_string())
    }

    #[test]
    fn a_misspelt_filter_on_a_bulk_delete_is_refused() {
        // See: issue 19 (`clear?exeption=ValueError` matched all 319 jobs).
        let clear = "/api/v1/jobs/failed/clear";
        for query in [
            "exeption=ValueError",
            "DRY_RUN=true",
            "dry-run=true",
            "queue=default&dryrun=1",
        ] {
            assert_eq!(
                refusal(Method::DELETE, clear, query).as_deref(),
                Some("unknown_parameter"),
                "{query}"
            );
        }
        for query in ["", "exception=ValueError&dry_run=true", "queue=a%20b"] {
            assert_eq!(refusal(Method::DELETE, clear, query), None, "{query}");
        }
    }

    #[test]
    fn routes_that_take_no_parameters_refuse_any() {
        assert_eq!(
            refusal(Method::POST, "/api/v1/supervisor/pause", "force=1").as_deref(),
            Some("unknown_parameter")
        );
        assert_eq!(refusal(Method::POST, "/api/v1/supervisor/pause", ""), None);
        assert_eq!(
            refusal(Method::HEAD, "/healthz", "x=1").as_deref(),
            Some("unknown_parameter")
        );
    }

    #[test]
    fn a_body_on_a_route_that_takes_none_is_refused() {
        let refused = declared().check(&Method::POST, "/api/v1/jobs/failed/retry-all", "", true);
        assert_eq!(
            refused.map(|e| e.code.to_string()).as_deref(),
            Some("unexpected_body")
        );
    }

    #[test]
    fn undocumented_routes_are_left_to_their_handlers() {
        assert_eq!(refusal(Method::GET, "/ui/jobs", "queue=x&anything=1"), None);
    }
}
