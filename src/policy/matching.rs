//! Which jobs a policy applies to. All fields must hold (AND); within a list any element may
//! match (OR); a field that is not set matches everything.

use std::fmt;

use regex::Regex;

use crate::glob::{ExceptionPattern, GlobList};
use crate::rq::{JobFacts, Meta, MetaValue};

/// The match half of a policy.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub queues: Option<GlobList>,
    pub functions: Option<GlobList>,
    pub exceptions: Option<Vec<ExceptionPattern>>,
    pub error_pattern: Option<Regex>,
    /// `meta = { key = "glob", ... }`: every key must be set in the job's `meta` and its
    /// value match the glob (see [`crate::rq::meta`] for how values compare).
    pub meta: Option<Vec<MetaPattern>>,
}

/// One `key = "glob"` of a policy's `meta`.
#[derive(Debug, Clone)]
pub struct MetaPattern {
    pub key: String,
    pub value: GlobList,
}

/// What a job's `meta` held where a `meta` pattern looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaFound {
    /// The key is not set (or meta is empty).
    Missing,
    /// A value that is compared, and did not match.
    Value(String),
    /// A value of a type no pattern matches (`float`, `list`, ...).
    NotComparable(&'static str),
    /// The whole `meta` field could not be read; why.
    Unreadable(String),
}

/// Why a policy did not match a job: the first field that failed, with what was compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    Queue {
        queue: String,
        patterns: Vec<String>,
    },
    Function {
        function: Option<String>,
        patterns: Vec<String>,
    },
    Exception {
        exc_type: Option<String>,
        patterns: Vec<String>,
    },
    ErrorPattern {
        pattern: String,
        has_text: bool,
    },
    Meta {
        key: String,
        pattern: String,
        found: MetaFound,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Queue { queue, patterns } => {
                write!(f, "queue {queue:?} matches none of {patterns:?}")
            }
            Mismatch::Function {
                function: Some(func),
                patterns,
            } => {
                write!(f, "function {func:?} matches none of {patterns:?}")
            }
            Mismatch::Function {
                function: None,
                patterns,
            } => {
                write!(
                    f,
                    "function name unknown, policy requires one of {patterns:?}"
                )
            }
            Mismatch::Exception {
                exc_type: Some(t),
                patterns,
            } => {
                write!(f, "exception {t:?} matches none of {patterns:?}")
            }
            Mismatch::Exception {
                exc_type: None,
                patterns,
            } => {
                write!(
                    f,
                    "no exception type recorded, policy requires one of {patterns:?}"
                )
            }
            Mismatch::ErrorPattern {
                pattern,
                has_text: true,
            } => {
                write!(f, "traceback does not match error_pattern {pattern:?}")
            }
            Mismatch::ErrorPattern {
                pattern,
                has_text: false,
            } => {
                write!(
                    f,
                    "no failure text recorded, policy requires error_pattern {pattern:?}"
                )
            }
            Mismatch::Meta {
                key,
                pattern,
                found,
            } => match found {
                MetaFound::Missing => {
                    write!(f, "meta has no {key:?}, policy requires {key} = {pattern:?}")
                }
                MetaFound::Value(value) => {
                    write!(f, "meta {key} = {value:?} does not match {pattern:?}")
                }
                MetaFound::NotComparable(kind) => write!(
                    f,
                    "meta {key} is a {kind}, which no pattern matches (only strings, integers, booleans and None compare); policy requires {key} = {pattern:?}"
                ),
                MetaFound::Unreadable(why) => write!(
                    f,
                    "meta unreadable ({why}), policy requires {key} = {pattern:?}"
                ),
            },
        }
    }
}

impl Matcher {
    /// `Ok(())` when every configured field matches the job, else the first field that did not.
    pub fn check(&self, job: &JobFacts) -> Result<(), Mismatch> {
        if let Some(queues) = &self.queues {
            if !queues.is_match(&job.queue) {
                return Err(Mismatch::Queue {
                    queue: job.queue.clone(),
                    patterns: queues.patterns().to_vec(),
                });
            }
        }
        if let Some(functions) = &self.functions {
            debug_assert!(
                job.reads.function,
                "a function matcher on facts read without it"
            );
            let hit = job
                .func_name
                .as_deref()
                .is_some_and(|f| functions.is_match(f));
            if !hit {
                return Err(Mismatch::Function {
                    function: job.func_name.clone(),
                    patterns: functions.patterns().to_vec(),
                });
            }
        }
        if let Some(exceptions) = &self.exceptions {
            debug_assert!(
                job.reads.failure,
                "an exception matcher on facts read without it"
            );
            let exc_type = job.exc_type();
            let hit = exc_type.is_some_and(|t| exceptions.iter().any(|p| p.is_match(t)));
            if !hit {
                return Err(Mismatch::Exception {
                    exc_type: exc_type.map(str::to_string),
                    patterns: exceptions.iter().map(|p| p.as_str().to_string()).collect(),
                });
            }
        }
        if let Some(pattern) = &self.error_pattern {
            debug_assert!(
                job.reads.failure,
                "an error_pattern on facts read without it"
            );
            let text = job.failure.as_ref().map(|f| f.text.as_str());
            if !text.is_some_and(|t| pattern.is_match(t)) {
                return Err(Mismatch::ErrorPattern {
                    pattern: pattern.as_str().to_string(),
                    has_text: text.is_some(),
                });
            }
        }
        if let Some(patterns) = &self.meta {
            debug_assert!(job.reads.meta, "a meta matcher on facts read without it");
            for p in patterns {
                let found = match job.meta.as_ref() {
                    None => MetaFound::Unreadable("not read".to_string()),
                    Some(Meta::Unreadable(why)) => MetaFound::Unreadable(why.clone()),
                    Some(meta) => match meta.get(&p.key) {
                        None => MetaFound::Missing,
                        Some(MetaValue::Text(t)) if p.value.is_match(t) => continue,
                        Some(MetaValue::Text(t)) => MetaFound::Value(t.clone()),
                        Some(MetaValue::Other(kind)) => MetaFound::NotComparable(kind),
                    },
                };
                return Err(Mismatch::Meta {
                    key: p.key.clone(),
                    pattern: p.value.patterns().join(", "),
                    found,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_exception_names_match_dotted_types_and_dotted_names_match_exactly() {
        let bare = ExceptionPattern::new("TimeoutError").unwrap();
        assert!(bare.is_match("TimeoutError"));
        assert!(bare.is_match("redis.exceptions.TimeoutError"));
        assert!(!bare.is_match("TimeoutErrorX"));
        let dotted = ExceptionPattern::new("redis.exceptions.TimeoutError").unwrap();
        assert!(dotted.is_match("redis.exceptions.TimeoutError"));
        assert!(!dotted.is_match("TimeoutError"));
        assert!(!dotted.is_match("other.exceptions.TimeoutError"));
    }

    #[test]
    fn function_globs_cross_dots() {
        let g = GlobList::new(&["app.workers.*".to_string()]).unwrap();
        assert!(g.is_match("app.workers.reports.render_report"));
        assert!(!g.is_match("app.web.views"));
    }
}
