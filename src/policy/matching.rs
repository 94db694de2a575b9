//! Which jobs a policy applies to. All fields must hold (AND); within a list any element may
//! match (OR); a field that is not set matches everything.

use std::fmt;

use regex::Regex;

pub use crate::glob::{ExceptionPattern, GlobList};
use crate::rq::JobFacts;

/// The match half of a policy.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub queues: Option<GlobList>,
    pub functions: Option<GlobList>,
    pub exceptions: Option<Vec<ExceptionPattern>>,
    pub error_pattern: Option<Regex>,
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
