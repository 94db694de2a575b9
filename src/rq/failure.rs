//! The failure text of a job and the exception type in it.

use base64::Engine;

use super::payload::{inflate, Inflated};

/// The traceback of the newest failure and the exception type taken from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub text: String,
    /// The last non-empty line up to its first `:`, e.g. `redis.exceptions.TimeoutError`.
    pub exc_type: Option<String>,
}

impl Failure {
    pub fn from_text(text: String) -> Failure {
        let exc_type = exception_type(&text);
        Failure { text, exc_type }
    }
}

/// Why a stored failure text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureTextError {
    #[error("exc_string is not valid base64")]
    NotBase64,
    #[error("{0} is not valid zlib data")]
    BadZlib(&'static str),
    #[error("{0} inflates to more than 16 MiB")]
    TooLarge(&'static str),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
}

/// Decodes `exc_string` from a results stream entry: base64(zlib(utf-8 traceback)).
pub fn from_exc_string(encoded: &[u8]) -> Result<Failure, FailureTextError> {
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .map_err(|_| FailureTextError::NotBase64)?;
    let raw = match inflate(&compressed) {
        Inflated::Data(d) => d,
        Inflated::TooLarge => return Err(FailureTextError::TooLarge("exc_string")),
        Inflated::NotZlib => return Err(FailureTextError::BadZlib("exc_string")),
    };
    let text = String::from_utf8(raw).map_err(|_| FailureTextError::NotUtf8("exc_string"))?;
    Ok(Failure::from_text(text))
}

/// Decodes the legacy `exc_info` hash field: zlib-compressed text, or plain text (as RQ accepts).
pub fn from_exc_info(stored: &[u8]) -> Result<Failure, FailureTextError> {
    let raw = match inflate(stored) {
        Inflated::Data(d) => d,
        Inflated::TooLarge => return Err(FailureTextError::TooLarge("exc_info")),
        Inflated::NotZlib => stored.to_vec(),
    };
    let text = String::from_utf8(raw).map_err(|_| FailureTextError::NotUtf8("exc_info"))?;
    Ok(Failure::from_text(text))
}

/// The exception type in a Python traceback: the last non-empty line up to its first `:`.
pub fn exception_type(traceback: &str) -> Option<String> {
    let last = traceback
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())?;
    let head = last.split(':').next().unwrap_or(last).trim();
    (!head.is_empty()).then(|| head.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_type_is_the_last_line_up_to_the_colon() {
        let tb = "Traceback (most recent call last):\n  File \"x.py\", line 1\nredis.exceptions.TimeoutError: Timeout reading: x\n\n";
        assert_eq!(
            exception_type(tb).as_deref(),
            Some("redis.exceptions.TimeoutError")
        );
        assert_eq!(exception_type("KeyError").as_deref(), Some("KeyError"));
        assert_eq!(exception_type("\n \n"), None);
    }

    #[test]
    fn corrupt_exc_strings_are_typed_errors() {
        assert_eq!(from_exc_string(b"!!!"), Err(FailureTextError::NotBase64));
        assert_eq!(
            from_exc_string(b"aGVsbG8="),
            Err(FailureTextError::BadZlib("exc_string"))
        );
    }

    #[test]
    fn plain_exc_info_is_accepted_like_rq_does() {
        let f = from_exc_info(b"Traceback...\nValueError: bad").unwrap();
        assert_eq!(f.exc_type.as_deref(), Some("ValueError"));
    }
}
