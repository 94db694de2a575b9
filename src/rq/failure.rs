//! The failure text of a job and the exception type in it.

use base64::Engine;

use super::payload::{inflate, Inflated};

/// The traceback of the newest failure and the exception type taken from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub text: String,
    /// The exception type ([`exception_type`]), e.g. `redis.exceptions.TimeoutError`, or for a
    /// text RQ writes itself its documented name, e.g. `AbandonedJobError`.
    pub exc_type: Option<String>,
    /// Where [`exception_line`] is in `text` (byte range), found once with the type: the index
    /// asks for it for every failure it lists, and finding it again cost the first build a
    /// twentieth of the daemon's work (docs/benchmarks.md, session 21).
    line: Option<(usize, usize)>,
}

impl Failure {
    pub fn from_text(text: String) -> Failure {
        let line = exception_line(&text).map(|l| {
            let start = l.as_ptr() as usize - text.as_ptr() as usize;
            (start, start + l.len())
        });
        let exc_type = type_of(&text, line.map(|(start, end)| &text[start..end]));
        Failure {
            text,
            exc_type,
            line,
        }
    }

    /// The text's [`exception_line`]. (Read with `get`: `text` is public, and a text changed
    /// after `from_text` must give no line rather than a panic.)
    pub fn exception_line(&self) -> Option<&str> {
        self.line.and_then(|(start, end)| self.text.get(start..end))
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
    /// hashbrown's default hasher (foldhash) rather than SipHash: hashing each job's stored
    /// text (hundreds of bytes) with SipHash was about 1 % of a first build's instructions
    /// (docs/benchmarks.md, session 22), and a map that never holds more than
    /// [`MEMO_ENTRIES`] entries cannot be flooded into long probe chains.
    static MEMO: std::cell::RefCell<[hashbrown::HashMap<Box<[u8]>, Decoded>; 2]> =
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

/// The type of a job whose work horse died without raising (killed by a signal, the OOM killer,
/// `os._exit`): RQ's worker writes `Work-horse terminated unexpectedly; waitpid returned 9 (signal
/// 9); `. Not a Python class; the signal stays in the failure text.
pub const WORK_HORSE_TERMINATED: &str = "rq.WorkHorseTerminated";
/// The type of a job stopped on purpose (`send_stop_job_command`): RQ writes `Job stopped by user,
/// work-horse terminated.`. Not a Python class.
pub const JOB_STOPPED: &str = "rq.JobStopped";
/// The type of a job RQ (>= 1.15) failed because it sat in the intermediate queue too long: RQ
/// writes `Job was stuck in intermediate queue.`. Not a Python class.
pub const JOB_STUCK_IN_INTERMEDIATE_QUEUE: &str = "rq.JobStuckInIntermediateQueue";

/// The exception type in a failure text, the name policies, groups and `explain` use.
///
/// RQ stores two kinds of text. Most are Python tracebacks, whose type is read off the exception
/// line (`type_of_line`). A few are sentences RQ writes itself when no exception was raised in
/// the job: those get a fixed, documented type ([`rq_sentence_type`]) instead of the sentence up
/// to its first `:`, which held a date and an hour and matched no policy (issue 21).
pub fn exception_type(text: &str) -> Option<String> {
    type_of(text, exception_line(text))
}

/// The type of `text` whose [`exception_line`] is `line`: RQ's own sentence's, else the
/// line's.
fn type_of(text: &str, line: Option<&str>) -> Option<String> {
    rq_sentence_type(text).or_else(|| type_of_line(line?))
}

/// The type of a one-line failure text written by RQ itself (RQ 1.16 and 2.12), `None` for
/// anything else:
/// - `Moved to FailedJobRegistry, due to AbandonedJobError, at <time>` (`StartedJobRegistry`
///   cleanup of a job whose worker vanished) → the name after `due to`, here `AbandonedJobError`;
/// - `Work-horse terminated unexpectedly; …` → [`WORK_HORSE_TERMINATED`];
/// - `Job stopped by user, work-horse terminated.` → [`JOB_STOPPED`];
/// - `Job was stuck in intermediate queue.` → [`JOB_STUCK_IN_INTERMEDIATE_QUEUE`].
///
/// Only a text of one line counts: RQ's sentences are one line, and a traceback can never be.
pub fn rq_sentence_type(text: &str) -> Option<String> {
    let line = text.trim();
    if line.contains('\n') {
        return None;
    }
    if let Some(rest) = line.strip_prefix("Moved to ") {
        let (_, after) = rest.split_once(", due to ")?;
        let name = after.split([',', ' ']).next().unwrap_or_default();
        return is_python_type_name(name).then(|| name.to_string());
    }
    let fixed = if line.starts_with("Work-horse terminated unexpectedly") {
        WORK_HORSE_TERMINATED
    } else if line.starts_with("Job stopped by user") {
        JOB_STOPPED
    } else if line.starts_with("Job was stuck in intermediate queue") {
        JOB_STUCK_IN_INTERMEDIATE_QUEUE
    } else {
        return None;
    };
    Some(fixed.to_string())
}

/// A dotted Python name such as `AbandonedJobError` or `rq.exceptions.AbandonedJobError`.
fn is_python_type_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// The exception type in a Python traceback, the text before the first `:` of its exception line
/// ([`exception_line`]).
///
/// The exception line is the first line after the frames of the last `Traceback (most recent
/// call last):` (chained exceptions print the one raised last at the end). Reading it there, not
/// off the last line, keeps messages of several lines (`psycopg2` `DETAIL:` lines) and notes out
/// of the type. An exception group ends in its box of sub-exceptions; its type is the group's own
/// (`ExceptionGroup`), what was raised. A text without a traceback header (a hand-written
/// `exc_info`) keeps the plain rule: its last non-empty line up to its first `:`.
fn type_of_line(line: &str) -> Option<String> {
    let head = line.split(':').next().unwrap_or(line).trim();
    (!head.is_empty()).then(|| head.to_string())
}

/// The exception line of a failure text, trimmed: the line a traceback's type is read
/// off (`ValueError: card_declined for order 42`), or for a text without a traceback header
/// (RQ's own one-line sentences, a hand-written `exc_info`) its last non-empty line. What a
/// `q=` search looks through besides the function, description and id (issue 22, item 1).
pub fn exception_line(text: &str) -> Option<&str> {
    // Only headers at the left margin start a top-level section; those inside a group's box
    // (`    | Traceback …`) belong to its sub-exceptions.
    const HEADER: &str = "Traceback (most recent call last):";
    const GROUP_HEADER: &str = "  + Exception Group Traceback (most recent call last):";
    let lines: Vec<&str> = text.lines().collect();
    let last_header = lines
        .iter()
        .rposition(|l| l.starts_with(HEADER) || l.starts_with(GROUP_HEADER));
    let found = last_header.and_then(|at| {
        let section = &lines[at + 1..];
        if lines[at].starts_with(GROUP_HEADER) {
            // The group's own frames and exception line are prefixed `  | `, its sub-exceptions
            // are indented further: the first `  | ` line not indented past that is the group's.
            section.iter().find_map(|l| {
                let rest = l.strip_prefix("  | ")?;
                (!rest.is_empty() && !rest.starts_with(char::is_whitespace)).then_some(rest)
            })
        } else {
            section
                .iter()
                .find(|l| !l.trim().is_empty() && !l.starts_with(char::is_whitespace))
                .copied()
        }
    });
    let line = match found {
        Some(l) => l,
        None => lines.iter().rev().find(|l| !l.trim().is_empty())?,
    };
    Some(line.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every failure text RQ 1.16 and 2.12 write, and tracebacks in each shape Python prints,
    /// with the type a policy sees. See: issue 21.
    const TEXTS_AND_TYPES: &[(&str, Option<&str>)] = &[
        // StartedJobRegistry.cleanup, RQ 2.12 (now() is UTC with an offset) and 1.16.
        (
            "Moved to FailedJobRegistry, due to AbandonedJobError, at 2026-12-03 04:12:33.123456+00:00",
            Some("AbandonedJobError"),
        ),
        (
            "Moved to FailedJobRegistry, due to AbandonedJobError, at 2026-12-03 04:12:33.123456",
            Some("AbandonedJobError"),
        ),
        (
            "Moved to FailedJobRegistry, due to rq.exceptions.AbandonedJobError, at 2026-12-03 04:12",
            Some("rq.exceptions.AbandonedJobError"),
        ),
        // Worker.monitor_work_horse: killed by a signal, or exited with a status.
        (
            "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ",
            Some(WORK_HORSE_TERMINATED),
        ),
        (
            "Work-horse terminated unexpectedly; waitpid returned 256; ",
            Some(WORK_HORSE_TERMINATED),
        ),
        (
            "Job stopped by user, work-horse terminated.",
            Some(JOB_STOPPED),
        ),
        (
            "Job was stuck in intermediate queue.",
            Some(JOB_STUCK_IN_INTERMEDIATE_QUEUE),
        ),
        // A job timeout is a real traceback from the horse.
        (
            "Traceback (most recent call last):\n  File \"/rq/worker/base.py\", line 1, in perform_job\n    rv = job.perform()\n  File \"/app/tasks.py\", line 3, in slow\n    time.sleep(10)\n  File \"/rq/timeouts.py\", line 63, in handle_death_penalty\n    raise self._exception(\nrq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (1 seconds)\n",
            Some("rq.timeouts.JobTimeoutException"),
        ),
        // A message with colons, a bare exception, a message of several lines, a note.
        (
            "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad value: 3\n",
            Some("ValueError"),
        ),
        (
            "Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyboardInterrupt\n",
            Some("KeyboardInterrupt"),
        ),
        (
            "Traceback (most recent call last):\n  File \"x.py\", line 1\npsycopg2.errors.UniqueViolation: duplicate key\nDETAIL:  Key (id)=(1) already exists.\n",
            Some("psycopg2.errors.UniqueViolation"),
        ),
        (
            "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: x\nwhile reading row 7\n",
            Some("ValueError"),
        ),
        // Chained: the exception raised last ends the text.
        (
            "Traceback (most recent call last):\n  File \"<stdin>\", line 15, in c\nKeyError: 'x'\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n  File \"<stdin>\", line 3, in show\n  File \"<stdin>\", line 17, in c\nRuntimeError: bad value: 3\n",
            Some("RuntimeError"),
        ),
        (
            "  + Exception Group Traceback (most recent call last):\n  |   File \"<stdin>\", line 25, in e\n  | ExceptionGroup: eg (1 sub-exception)\n  +-+---------------- 1 ----------------\n    | ValueError: v\n    +------------------------------------\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"<stdin>\", line 3, in show\n  File \"<stdin>\", line 27, in e\nKeyError: 'k'\n",
            Some("KeyError"),
        ),
        // Exception groups (Python 3.11) end in a box of sub-exceptions: the group's type.
        (
            "  + Exception Group Traceback (most recent call last):\n  |   File \"<stdin>\", line 3, in show\n  |   File \"<stdin>\", line 7, in g\n  | ExceptionGroup: boom (2 sub-exceptions)\n  +-+---------------- 1 ----------------\n    | ValueError: a: 1\n    +---------------- 2 ----------------\n    | KeyError: 'b'\n    +------------------------------------\n",
            Some("ExceptionGroup"),
        ),
        (
            "Traceback (most recent call last):\n  File \"<stdin>\", line 20, in d\nZeroDivisionError: division by zero\n\nDuring handling of the above exception, another exception occurred:\n\n  + Exception Group Traceback (most recent call last):\n  |   File \"<stdin>\", line 3, in show\n  | ExceptionGroup: eg (1 sub-exception)\n  +-+---------------- 1 ----------------\n    | ValueError: v\n    +------------------------------------\n",
            Some("ExceptionGroup"),
        ),
        (
            "  + Exception Group Traceback (most recent call last):\n  |   File \"<stdin>\", line 6, in g\n  | app.BatchErrors: outer (2 sub-exceptions)\n  +-+---------------- 1 ----------------\n    | Traceback (most recent call last):\n    |   File \"<stdin>\", line 3, in r\n    | ValueError: a:1\n    | line2\n    +---------------- 2 ----------------\n    | Exception Group Traceback (most recent call last):\n    |   File \"<stdin>\", line 3, in r\n    | ExceptionGroup: inner (1 sub-exception)\n    +-+---------------- 1 ----------------\n      | Traceback (most recent call last):\n      |   File \"<stdin>\", line 3, in r\n      | KeyError: 'k'\n      +------------------------------------\n",
            Some("app.BatchErrors"),
        ),
        // Texts that are neither: the last non-empty line up to its first `:`, or nothing.
        ("KeyError", Some("KeyError")),
        ("ValueError: bad", Some("ValueError")),
        ("Moved to FailedJobRegistry at 04:12", Some("Moved to FailedJobRegistry at 04")),
        ("", None),
        ("\n \n\t", None),
        (":", None),
    ];

    #[test]
    fn every_text_rq_writes_has_a_stable_exception_type() {
        for (text, expected) in TEXTS_AND_TYPES {
            assert_eq!(exception_type(text).as_deref(), *expected, "text: {text:?}");
            // A failure read once holds the same type and exception line.
            let failure = Failure::from_text(text.to_string());
            assert_eq!(failure.exc_type.as_deref(), *expected, "text: {text:?}");
            assert_eq!(
                failure.exception_line(),
                exception_line(text),
                "text: {text:?}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever the date and hour, an abandoned job has one type (groups do not split).
        #[test]
        fn an_abandoned_job_has_one_type_at_any_time(stamp in "[0-9 :.+-]{0,40}") {
            let text = format!("Moved to FailedJobRegistry, due to AbandonedJobError, at {stamp}");
            proptest::prop_assert_eq!(exception_type(&text), Some("AbandonedJobError".to_string()));
        }

        /// The signal and status stay in the text, never in the type.
        #[test]
        fn a_killed_work_horse_has_one_type_for_any_status(status in 0i32..100_000, signal in 1i32..65) {
            for text in [
                format!("Work-horse terminated unexpectedly; waitpid returned {status} (signal {signal}); "),
                format!("Work-horse terminated unexpectedly; waitpid returned {status}; "),
            ] {
                proptest::prop_assert_eq!(exception_type(&text), Some(WORK_HORSE_TERMINATED.to_string()));
            }
        }

        /// A traceback's type is the name before the exception line's first `:`, whatever the
        /// message, its colons and its further lines.
        #[test]
        fn a_traceback_type_ignores_the_message(
            name in "[A-Za-z_][A-Za-z0-9_]{0,8}(\\.[A-Za-z_][A-Za-z0-9_]{0,8}){0,3}",
            message in "[^\r\n\u{b}\u{c}\u{1c}-\u{1e}\u{85}\u{2028}\u{2029}]{0,40}",
            more in proptest::collection::vec("[a-zA-Z:  ]{0,20}", 0..3),
        ) {
            let text = format!(
                "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n    f()\n{name}: {message}\n{}",
                more.join("\n")
            );
            proptest::prop_assert_eq!(exception_type(&text), Some(name));
        }

        /// Any text: no panic, and a type is one trimmed, non-empty line.
        #[test]
        fn any_text_gives_no_type_or_one_trimmed_line(text in "(?s).{0,200}") {
            if let Some(t) = exception_type(&text) {
                proptest::prop_assert!(!t.is_empty() && t.trim() == t && !t.contains('\n'));
            }
        }
    }

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
