//! Why a filter's text is refused. Its own module so that the two parsers that refuse texts,
//! [`super::selection`] and [`super::search`], both depend on it instead of on each other.

/// Why a filter's text is refused: the API's error code and a message naming the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

impl Invalid {
    pub(super) fn new(code: &'static str, message: impl Into<String>) -> Invalid {
        Invalid {
            code,
            message: message.into(),
        }
    }
}
