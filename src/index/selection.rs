//! A selection of failed jobs: the one answer to "which failed jobs?" that the listing, the
//! groups, retry-all and clear share, so that a bulk action touches exactly the jobs the
//! listing shows for the same filters (see: issue 20).
//!
//! It lives with the index because the index is what answers it (compiled against the interned
//! names, see `FailureIndex::page`) and because one of its filters is the index's [`State`].
//! Pure: the filters' texts go in, a [`Selection`] or an [`Invalid`] (an error code and a
//! message the API answers with) comes out; the current time is a parameter. A filter added
//! later (a `q=` text search, say) is one more field here, in [`Typed`], in
//! [`Selection::matches`] and in the index's compiled test.

use chrono::{DateTime, TimeZone, Utc};

use super::invalid::Invalid;
use super::search::Needle;
use super::State;
use crate::glob::{ExceptionPattern, GlobList};
use crate::policy::Policy;
use crate::rq::JobFacts;

/// A selection of failed jobs; every field that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub queue: Option<String>,
    pub function: Option<GlobList>,
    pub exception: Option<ExceptionPattern>,
    /// Failed strictly before / after.
    pub failed_before: Option<DateTime<Utc>>,
    pub failed_after: Option<DateTime<Utc>>,
    /// The deciding policy's name.
    pub policy: Option<String>,
    pub state: Option<State>,
    /// A text search (see [`super::search`]).
    pub q: Option<Needle>,
}

/// A selection as a person typed it: each filter's text, as the query string carries it (the
/// state already read as one of the names of [`State`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Typed<'a> {
    pub queue: Option<&'a str>,
    pub function: Option<&'a str>,
    pub exception: Option<&'a str>,
    pub failed_before: Option<&'a str>,
    pub failed_after: Option<&'a str>,
    pub policy: Option<&'a str>,
    pub state: Option<State>,
    pub q: Option<&'a str>,
}

impl Selection {
    /// Whether it sets no filter at all (every failed job).
    pub fn is_everything(&self) -> bool {
        let Selection {
            queue,
            function,
            exception,
            failed_before,
            failed_after,
            policy,
            state,
            q,
        } = self;
        queue.is_none()
            && function.is_none()
            && exception.is_none()
            && failed_before.is_none()
            && failed_after.is_none()
            && policy.is_none()
            && state.is_none()
            && q.is_none()
    }

    /// The selection `typed` describes, times ago (`1h`) counted back from `now`. What the
    /// OpenAPI document declares is what is taken: a value it does not admit is refused, not
    /// read by a richer parser (see: issue 19).
    pub fn parse(typed: &Typed<'_>, now: DateTime<Utc>) -> Result<Selection, Invalid> {
        check_glob("invalid_function", "function", typed.function)?;
        check_glob("invalid_exception", "exception", typed.exception)?;
        if typed.exception.is_some_and(|e| e.trim().is_empty()) {
            return Err(Invalid::new(
                "invalid_exception",
                "exception cannot be blank",
            ));
        }
        let function = typed
            .function
            .map(|f| {
                GlobList::new(&[f.to_string()]).map_err(|e| Invalid::new("invalid_function", e))
            })
            .transpose()?;
        let exception = typed
            .exception
            .map(|e| ExceptionPattern::new(e).map_err(|m| Invalid::new("invalid_exception", m)))
            .transpose()?;
        let failed_before = typed
            .failed_before
            .map(|t| parse_time("failed_before", t, now))
            .transpose()?;
        let failed_after = typed
            .failed_after
            .map(|t| parse_time("failed_after", t, now))
            .transpose()?;
        check_name("invalid_policy", "policy", typed.policy)?;
        check_name("invalid_queue", "queue", typed.queue)?;
        let q = typed.q.map(Needle::parse).transpose()?;
        Ok(Selection {
            queue: typed.queue.map(str::to_string),
            function,
            exception,
            failed_before,
            failed_after,
            policy: typed.policy.map(str::to_string),
            state: typed.state,
            q,
        })
    }

    /// Whether a job read whole is in the selection, its policy and state as `policies` decide
    /// it at `now` (what the index would record for it). `held` is found only by the
    /// supervisor's write path (it depends on the target queue's workers), so a job read here
    /// is never `held`: it is `due`.
    pub fn matches(&self, f: &JobFacts, policies: &[Policy], now: DateTime<Utc>) -> bool {
        let by_facts = self.queue.as_deref().is_none_or(|q| q == f.queue)
            && self
                .function
                .as_ref()
                .is_none_or(|g| f.func_name.as_deref().is_some_and(|n| g.is_match(n)))
            && self
                .exception
                .as_ref()
                .is_none_or(|e| f.exc_type().is_some_and(|t| e.is_match(t)))
            && self.failed_before.is_none_or(|t| f.failed_at < t)
            && self.failed_after.is_none_or(|t| f.failed_at > t)
            && self.q.as_ref().is_none_or(|q| q.finds_in(f));
        if !by_facts || (self.policy.is_none() && self.state.is_none()) {
            return by_facts;
        }
        let evaluation = crate::policy::decide(policies, f, now);
        self.policy
            .as_deref()
            .is_none_or(|p| evaluation.policy.is_some_and(|e| e.name == p))
            && self
                .state
                .is_none_or(|s| s == State::of(&evaluation.decision).0)
    }
}

/// Refuses a filter glob with `[`, `]`, `{`, `}` or `\\`: the API's filters take `*` and `?`
/// only, as the OpenAPI document declares (policies in the config file take the full glob
/// syntax).
fn check_glob(code: &'static str, what: &str, glob: Option<&str>) -> Result<(), Invalid> {
    match glob {
        Some(g) if g.contains(['[', ']', '{', '}', '\\']) => Err(Invalid::new(
            code,
            format!("{what} takes `*` and `?` globs only, not `[`, `]`, `{{`, `}}` or `\\`"),
        )),
        _ => Ok(()),
    }
}

/// Refuses a queue or policy name (`what`) the API does not take.
fn check_name(code: &'static str, what: &str, name: Option<&str>) -> Result<(), Invalid> {
    match name {
        // Characters, not bytes: what the OpenAPI document's maxLength counts.
        Some(n) if n.is_empty() || n.chars().count() > 512 => Err(Invalid::new(
            code,
            format!("{what} must have 1 to 512 characters"),
        )),
        _ => Ok(()),
    }
}

/// A failure time filter (`name`): RFC 3339, unix seconds within ±10^11, or a time ago before
/// `now`.
pub fn parse_time(name: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Invalid> {
    if let Some(ago) = relative_time(text.trim()) {
        return Ok(now - ago);
    }
    if let Ok(secs) = text.trim().parse::<f64>() {
        if secs.is_finite() && secs.abs() < 1e11 {
            if let Some(t) = Utc.timestamp_millis_opt((secs * 1000.0) as i64).single() {
                return Ok(t);
            }
        }
    }
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Invalid::new(
                "invalid_time",
                format!(
                    "{name} must be RFC 3339 (2026-01-31T12:00:00Z), unix seconds, or a time ago such as 15m, 1h, 2d (s, m, h, d or w, up to 5 digits)"
                ),
            )
        })
}

/// A time ago as a person types it in a filter (issue 22, "relative times"): up to five digits
/// and one unit, `s`, `m`, `h`, `d` or `w` (`15m`, `1h`, `2d`); `None` for anything else.
fn relative_time(text: &str) -> Option<chrono::Duration> {
    // A byte index into text that is not ASCII may fall inside a character (a 400, not a
    // panic: schemathesis sent `ö5+󌒯􆿞`).
    if !text.is_ascii() {
        return None;
    }
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    match unit {
        "s" => Some(chrono::Duration::seconds(n)),
        "m" => Some(chrono::Duration::minutes(n)),
        "h" => Some(chrono::Duration::hours(n)),
        "d" => Some(chrono::Duration::days(n)),
        "w" => Some(chrono::Duration::weeks(n)),
        _ => None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-31T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn refusal(typed: Typed<'_>) -> Option<&'static str> {
        Selection::parse(&typed, now()).err().map(|e| e.code)
    }

    #[test]
    fn times_ago_count_back_from_now() {
        let typed = Typed {
            failed_after: Some("1h"),
            failed_before: Some("15m"),
            ..Typed::default()
        };
        let s = Selection::parse(&typed, now()).unwrap();
        assert_eq!(s.failed_after, Some(now() - chrono::Duration::hours(1)));
        assert_eq!(s.failed_before, Some(now() - chrono::Duration::minutes(15)));
        for text in ["2w", "30s", "2d", "99999m"] {
            assert!(relative_time(text).is_some(), "{text}");
        }
        for text in [
            "",
            "h",
            "1y",
            "123456m",
            "-1h",
            "1.5h",
            "1 h",
            "1ö",
            "ö",
            "5\u{106fde}",
        ] {
            assert!(relative_time(text).is_none(), "{text}");
        }
    }

    /// See: schemathesis (CI, session 10) sent `failed_after=ö5+󌒯􆿞`, and the daemon's handler
    /// panicked slicing inside a character: any text is a time or a 400, never a panic.
    #[test]
    fn a_time_that_is_not_ascii_is_refused_not_a_panic() {
        for text in [
            "ö5+\u{10c4af}\u{106fde}",
            "1\u{e9}",
            "\u{1f600}h",
            "15m\u{301}",
        ] {
            let typed = Typed {
                failed_after: Some(text),
                ..Typed::default()
            };
            let refused = Selection::parse(&typed, now()).unwrap_err();
            assert_eq!(refused.code, "invalid_time", "{text:?}");
        }
    }

    #[test]
    fn rfc3339_and_unix_seconds_are_taken_and_anything_else_refused() {
        for text in ["2026-01-31T12:00:00Z", "1769860800", "1769860800.5"] {
            let typed = Typed {
                failed_before: Some(text),
                ..Typed::default()
            };
            assert!(Selection::parse(&typed, now()).is_ok(), "{text}");
        }
        let typed = Typed {
            failed_after: Some("yesterday"),
            ..Typed::default()
        };
        let refused = Selection::parse(&typed, now()).unwrap_err();
        assert_eq!(refused.code, "invalid_time");
        assert!(
            refused.message.starts_with("failed_after must be"),
            "{refused:?}"
        );
    }

    #[test]
    fn each_filter_is_refused_with_its_own_code() {
        let long = "q".repeat(513);
        let cases = [
            (
                Typed {
                    function: Some("app.{a,b}"),
                    ..Typed::default()
                },
                "invalid_function",
            ),
            (
                Typed {
                    exception: Some("[ValueError]"),
                    ..Typed::default()
                },
                "invalid_exception",
            ),
            (
                Typed {
                    exception: Some(" "),
                    ..Typed::default()
                },
                "invalid_exception",
            ),
            (
                Typed {
                    policy: Some(""),
                    ..Typed::default()
                },
                "invalid_policy",
            ),
            (
                Typed {
                    queue: Some(&long),
                    ..Typed::default()
                },
                "invalid_queue",
            ),
        ];
        for (typed, code) in cases {
            assert_eq!(refusal(typed), Some(code), "{typed:?}");
        }
        assert_eq!(refusal(Typed::default()), None);
    }

    /// A failed job of `queue` whose failure text ends in `last_line` (also the search tests').
    pub(in crate::index) fn job(queue: &str, last_line: &str) -> JobFacts {
        use crate::rq::{CasToken, Failure, Meta, Reads};
        JobFacts {
            job_id: "j".into(),
            queue: queue.into(),
            origin: queue.into(),
            status: Some("failed".into()),
            func_name: Some("app.tasks.work".into()),
            description: None,
            failed_at: now() - chrono::Duration::minutes(5),
            failed_at_from: crate::rq::job::FailedAt::EndedAt,
            attempts: 0,
            exhausted: false,
            last_policy: None,
            requeued_at: None,
            succeeded_at: None,
            failure: Some(Failure::from_text(format!(
                "Traceback (most recent call last):\n{last_line}\n"
            ))),
            cas: CasToken::default(),
            reads: Reads::ALL,
            created_at: None,
            meta: Some(Meta::Read(vec![])),
        }
    }

    #[test]
    fn a_job_read_whole_is_matched_by_the_policy_and_state_the_policies_give_it_now() {
        let policies = crate::config::parse(
            "[[policy]]\nname = \"slow\"\nqueues = [\"default\"]\nbackoff = { strategy = \"fixed\", delay = \"1h\" }\n",
            "t.toml",
        )
        .unwrap()
        .policies;
        let waiting = job("default", "ValueError: x");
        let unmatched = job("emails", "ValueError: x");
        let select = |policy: Option<&str>, state: Option<State>| Selection {
            policy: policy.map(str::to_string),
            state,
            ..Selection::default()
        };
        let cases = [
            (select(Some("slow"), None), true, false),
            (select(Some("other"), None), false, false),
            (select(None, Some(State::Waiting)), true, false),
            (select(None, Some(State::Unmatched)), false, true),
            (select(Some("slow"), Some(State::Due)), false, false),
            (select(None, Some(State::Held)), false, false),
            (Selection::default(), true, true),
        ];
        for (selection, default, emails) in cases {
            assert_eq!(
                selection.matches(&waiting, &policies, now()),
                default,
                "{selection:?}"
            );
            assert_eq!(
                selection.matches(&unmatched, &policies, now()),
                emails,
                "{selection:?}"
            );
        }
        let emails_only = Selection {
            queue: Some("emails".into()),
            ..Selection::default()
        };
        assert!(!emails_only.matches(&waiting, &policies, now()));
        assert!(emails_only.matches(&unmatched, &policies, now()));
    }
}
