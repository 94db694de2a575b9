//! The selection's query parameters, declared once for every route that selects failed jobs:
//! the listing, retry-all and clear take [`SelectionParams`] (and their own paging or task
//! parameters beside it), so a filter the listing takes is one a bulk action takes, with the
//! same meaning and the same refusals (see: issue 20). The OpenAPI document lists them from
//! here, and so does the check that refuses an undeclared parameter (`params.rs`).
//!
//! The selection itself, and how its texts are read, is `index::Selection` (pure); this is the
//! HTTP shell around it, and which queues a selection reads.

use chrono::Utc;
use redis::aio::ConnectionManager;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use crate::index::{Invalid, Selection, State, Typed};
use crate::rq::RegistryScan;
use crate::state::{DaemonState, Snapshot};

/// The filters of a selection of failed jobs, as query parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SelectionParams {
    /// Only this queue (1 to 512 characters).
    #[param(min_length = 1, max_length = 512)]
    pub queue: Option<String>,
    /// Glob over the dotted function name, e.g. `app.workers.*`: `*` and `?` only (no `[...]`
    /// classes, `{a,b}` alternates or `\\` escapes, which are refused).
    #[param(pattern = r"^[^\[\]{}\\]*$")]
    pub function: Option<String>,
    /// Exception type, bare (`TimeoutError`) or dotted; `*` and `?` globs only. Not blank.
    #[param(pattern = r"^[^\[\]{}\\]*[^\s\[\]{}\\][^\[\]{}\\]*$")]
    pub exception: Option<String>,
    /// Only jobs that failed before this time: RFC 3339 (`2026-01-31T12:00:00Z`), unix seconds,
    /// or that long ago (`15m`, `1h`, `2d`).
    #[param(value_type = Option<FailureTime>, inline)]
    pub failed_before: Option<String>,
    /// Only jobs that failed after this time: RFC 3339 (`2026-01-31T12:00:00Z`), unix seconds,
    /// or that long ago (`15m`, `1h`, `2d`).
    #[param(value_type = Option<FailureTime>, inline)]
    pub failed_after: Option<String>,
    /// Only jobs this policy decides (1 to 512 characters).
    #[param(min_length = 1, max_length = 512)]
    pub policy: Option<String>,
    /// Only jobs in this state.
    #[param(inline)]
    pub state: Option<State>,
    /// Text search, case-insensitive: only jobs whose exception type or exception line,
    /// function, description (with its arguments) or id holds this text. Of the exception line
    /// and the description the first 200 bytes (lowercased) are searched; tracebacks are not.
    /// 1 to 200 characters, not blank, no control characters (else 400 `invalid_q`).
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub q: Option<String>,
}

impl SelectionParams {
    /// The selection these parameters describe; 400 with the filter's code when one is
    /// refused.
    pub fn selection(&self) -> ApiResult<Selection> {
        Selection::parse(&self.typed(), Utc::now()).map_err(refused)
    }

    fn typed(&self) -> Typed<'_> {
        Typed {
            queue: self.queue.as_deref(),
            function: self.function.as_deref(),
            exception: self.exception.as_deref(),
            failed_before: self.failed_before.as_deref(),
            failed_after: self.failed_after.as_deref(),
            policy: self.policy.as_deref(),
            state: self.state,
            q: self.q.as_deref(),
        }
    }

    /// The selection as a query string as it was typed (`?queue=emails&exception=TimeoutError`,
    /// empty for everything), for the audit's "why": a bulk entry says what it selected.
    pub fn as_query(&self) -> String {
        let mut text = url::form_urlencoded::Serializer::new(String::new());
        let state = self.state.map(State::name);
        for (name, value) in [
            ("queue", self.queue.as_deref()),
            ("function", self.function.as_deref()),
            ("exception", self.exception.as_deref()),
            ("failed_before", self.failed_before.as_deref()),
            ("failed_after", self.failed_after.as_deref()),
            ("policy", self.policy.as_deref()),
            ("state", state),
            ("q", self.q.as_deref()),
        ] {
            if let Some(value) = value {
                text.append_pair(name, value);
            }
        }
        let text = text.finish();
        if text.is_empty() {
            text
        } else {
            format!("?{text}")
        }
    }
}

/// The selection of one queue (or of every queue), maybe searched (`q`): what `groups`
/// selects.
pub fn queue_selection(queue: Option<&str>, q: Option<&str>) -> ApiResult<Selection> {
    let typed = Typed {
        queue,
        q,
        ..Typed::default()
    };
    Selection::parse(&typed, Utc::now()).map_err(refused)
}

fn refused(invalid: Invalid) -> ApiError {
    ApiError::bad_request(invalid.code, invalid.message)
}

/// The schema of a failure time in a filter: RFC 3339, unix seconds within ±10^11, or a time
/// ago (`15m`; what `index::Selection::parse` takes). Only a schema: the parameter itself is
/// read as text.
pub struct FailureTime;

impl utoipa::PartialSchema for FailureTime {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type,
        };
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(-99_999_999_999.0))
                    .maximum(Some(99_999_999_999.0)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]{1,5}[smhdw]$"))
                    .description(Some("that long ago: 15m, 1h, 2d")),
            )
            .into()
    }
}

impl ToSchema for FailureTime {}

/// The queue a selection names (validated by `Selection::parse`), or every queue that has a
/// failed registry or is known to RQ.
pub async fn selected_queues(
    daemon: &DaemonState,
    con: &mut ConnectionManager,
    snap: &Snapshot,
    queue: Option<&str>,
) -> ApiResult<Vec<String>> {
    match queue {
        Some(q) => Ok(vec![q.to_string()]),
        None => {
            let everything = crate::glob::GlobList::new(&["*".to_string()]).expect("static glob");
            let found = &daemon.found_registries;
            // rq:queues now, plus the registries the daemon's scans found (they SCAN for
            // them at most every few minutes): no request walks the keyspace, unless no scan
            // of this instance has looked for failed registries yet (a standby).
            let scan = if !found.scanned() && daemon.index.as_of().is_none() {
                RegistryScan::Now
            } else {
                RegistryScan::Remembered(found)
            };
            Ok(snap
                .registry
                .discover_queues(con, &everything, scan)
                .await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_text_names_every_filter_as_typed() {
        let params = SelectionParams {
            queue: Some("emails".into()),
            failed_after: Some("1h".into()),
            policy: Some("slow lane".into()),
            state: Some(State::Due),
            ..SelectionParams::default()
        };
        assert_eq!(
            params.as_query(),
            "?queue=emails&failed_after=1h&policy=slow+lane&state=due"
        );
        assert_eq!(SelectionParams::default().as_query(), "");
    }
}
