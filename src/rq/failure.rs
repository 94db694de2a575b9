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
    memoized(Field::ExcString, encoded, decode_exc_string)
}

/// Decodes the legacy `exc_info` hash field: zlib-compressed text, or plain text (as RQ accepts).
pub fn from_exc_info(stored: &[u8]) -> Result<Failure, FailureTextError> {
    memoized(Field::ExcInfo, stored, decode_exc_info)
}

/// Which stored field a memo entry came from (the same bytes decode differently in each).
#[derive(Clone, Copy)]
enum Field {
    ExcString,
    ExcInfo,
}

/// Distinct failure texts remembered per thread and field, at most.
const MEMO_ENTRIES: usize = 64;
/// Stored texts longer than this are decoded every time, so the memo stays under about 2 MiB.
const MEMO_MAX_STORED: usize = 4096;

type Decoded = Result<Failure, FailureTextError>;

thread_local! {
    /// Recently decoded failure texts by their stored bytes. An outage leaves thousands of
    /// failed jobs whose tracebacks are byte for byte the same (same exception, same stack):
    /// each distinct one is base64-decoded, inflated and checked once, not once per job.
    static MEMO: std::cell::RefCell<[std::collections::HashMap<Box<[u8]>, Decoded>; 2]> =
        Default::default();
}

fn memoized(field: Field, stored: &[u8], decode: fn(&[u8]) -> Decoded) -> Decoded {
    if stored.len() > MEMO_MAX_STORED {
        return decode(stored);
    }
    MEMO.with(|memo| {
        let memo = &mut memo.borrow_mut()[field as usize];
        if let Some(hit) = memo.get(stored) {
            return hit.clone();
        }
        let decoded = decode(stored);
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(stored.into(), decoded.clone());
        decoded
    })
}

fn decode_exc_string(encoded: &[u8]) -> Decoded {
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

fn decode_exc_info(stored: &[u8]) -> Decoded {
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
    fn repeated_texts_decode_the_same_and_the_memo_stays_bounded() {
        use base64::Engine;
        use std::io::Write;
        let encode = |text: &str| {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(text.as_bytes()).unwrap();
            base64::engine::general_purpose::STANDARD.encode(z.finish().unwrap())
        };
        let tb = encode("Traceback (most recent call last):\nValueError: x\n");
        let first = from_exc_string(tb.as_bytes());
        assert_eq!(
            first.as_ref().unwrap().exc_type.as_deref(),
            Some("ValueError")
        );
        assert_eq!(from_exc_string(tb.as_bytes()), first);
        // The same bytes read as exc_info are not base64: the fields do not share entries.
        assert_ne!(from_exc_info(tb.as_bytes()), first);
        assert_eq!(from_exc_string(b"!!!"), Err(FailureTextError::NotBase64));
        assert_eq!(from_exc_string(b"!!!"), Err(FailureTextError::NotBase64));
        for i in 0..(3 * MEMO_ENTRIES) {
            let text = format!("Traceback\nKeyError: {i}\n");
            let decoded = from_exc_string(encode(&text).as_bytes()).unwrap();
            assert_eq!(decoded.text, text);
        }
        MEMO.with(|m| assert!(m.borrow().iter().all(|f| f.len() <= MEMO_ENTRIES)));
    }

    #[test]
    fn plain_exc_info_is_accepted_like_rq_does() {
        let f = from_exc_info(b"Traceback...\nValueError: bad").unwrap();
        assert_eq!(f.exc_type.as_deref(), Some("ValueError"));
    }
}
