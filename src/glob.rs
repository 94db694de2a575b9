//! Name patterns: glob lists (queues, functions) and exception patterns. A leaf: the registry
//! reads (which queues to supervise), the policies and the failure index all match with them.

use globset::{Glob, GlobMatcher};

/// A glob list such as `["default", "email*"]`, kept with its source text for explanations.
#[derive(Debug, Clone)]
pub struct GlobList {
    patterns: Vec<String>,
    matchers: Vec<GlobMatcher>,
}

impl GlobList {
    /// Compiles every pattern; the error names the first pattern that is not a valid glob.
    pub fn new(patterns: &[String]) -> Result<GlobList, String> {
        let matchers = patterns
            .iter()
            .map(|p| {
                Glob::new(p)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| format!("invalid glob {p:?}: {}", e.kind()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GlobList {
            patterns: patterns.to_vec(),
            matchers,
        })
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.matchers.iter().any(|m| m.is_match(text))
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// An exception pattern: bare (`ConnectionError`) matches the last dotted segment of the type,
/// dotted (`redis.exceptions.TimeoutError`) matches the whole type. Globs are allowed in both.
#[derive(Debug, Clone)]
pub struct ExceptionPattern {
    text: String,
    matcher: GlobMatcher,
    dotted: bool,
}

impl ExceptionPattern {
    pub fn new(pattern: &str) -> Result<ExceptionPattern, String> {
        let trimmed = pattern.trim();
        if trimmed.is_empty() {
            return Err("an exception pattern cannot be empty".into());
        }
        let matcher = Glob::new(trimmed)
            .map_err(|e| format!("invalid exception pattern {pattern:?}: {}", e.kind()))?
            .compile_matcher();
        Ok(ExceptionPattern {
            text: trimmed.to_string(),
            matcher,
            dotted: trimmed.contains('.'),
        })
    }

    pub fn is_match(&self, exc_type: &str) -> bool {
        if self.dotted {
            self.matcher.is_match(exc_type)
        } else {
            let bare = exc_type.rsplit('.').next().unwrap_or(exc_type);
            self.matcher.is_match(bare)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}
