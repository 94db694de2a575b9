//! A job's runs as RQ recorded them in its results stream `rq:results:<id>` (pure).
//!
//! RQ (>= 1.12 on Redis >= 5) appends one entry per run that ended (MAXLEN 10): `type` (1
//! successful, 2 failed, 3 stopped, 4 retried by RQ's own `Retry`, 5 its retries exceeded; RQ
//! 1.16 knows 1–3), `exc_string` = base64(zlib(utf-8 traceback)), and in RQ 2.x `worker_name`.
//! The run's time is the entry id's milliseconds, as RQ's `Result.restore` reads it. Anything
//! else in the stream (a script's garbage, a field RQ never writes) still gives a run, marked
//! with what could not be read: reading a history never fails on data.

use chrono::{DateTime, Utc};

use super::exception::{final_exception, ExceptionLine};
use super::failure::{from_exc_string, FailureTextError};
use super::job::StreamFields;

/// How a run ended, by RQ's `Result.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Failed,
    Stopped,
    /// Failed, and RQ's own `Retry` scheduled it again.
    Retried,
    /// Failed with RQ's own `Retry` used up.
    RetriesExceeded,
}

impl RunOutcome {
    fn from_code(code: &[u8]) -> Option<RunOutcome> {
        Some(match code {
            b"1" => RunOutcome::Succeeded,
            b"2" => RunOutcome::Failed,
            b"3" => RunOutcome::Stopped,
            b"4" => RunOutcome::Retried,
            b"5" => RunOutcome::RetriesExceeded,
            _ => return None,
        })
    }
}

/// What of a results entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("the entry has no type")]
    NoType,
    #[error("the entry's type {0:?} is not one RQ writes")]
    UnknownType(String),
    #[error("the entry id {0:?} names no time")]
    NoTime(String),
    #[error("its failure text cannot be read: {0}")]
    FailureText(FailureTextError),
}

/// One run of a job, as its results stream entry tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The stream entry id (`<ms>-<seq>`).
    pub entry_id: String,
    /// When RQ recorded the run's end; `None` only for an id that names no time.
    pub at: Option<DateTime<Utc>>,
    /// `None` when the type is missing or unknown (see `unreadable`).
    pub outcome: Option<RunOutcome>,
    /// The worker that ran it (RQ 2.x writes it; empty for a registry cleanup's entry).
    pub worker_name: Option<String>,
    /// The exception the run ended with, when the entry carries a readable failure text.
    pub exception: Option<ExceptionLine>,
    /// What could not be read, if anything.
    pub unreadable: Vec<Unreadable>,
}

/// Reads one results stream entry (`entry_id`, its fields).
pub fn run_of(entry_id: &str, fields: &StreamFields) -> Run {
    let field = |name: &[u8]| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    };
    let mut unreadable = Vec::new();
    let at = stream_time(entry_id);
    if at.is_none() {
        unreadable.push(Unreadable::NoTime(entry_id.to_string()));
    }
    let outcome = match field(b"type") {
        None => {
            unreadable.push(Unreadable::NoType);
            None
        }
        Some(code) => RunOutcome::from_code(code.trim_ascii()).or_else(|| {
            let shown = String::from_utf8_lossy(&code[..code.len().min(32)]).into_owned();
            unreadable.push(Unreadable::UnknownType(shown));
            None
        }),
    };
    let exception = match field(b"exc_string").filter(|s| !s.is_empty()) {
        None => None,
        Some(encoded) => match from_exc_string(encoded) {
            Ok(failure) => Some(final_exception(&failure.text)),
            Err(e) => {
                unreadable.push(Unreadable::FailureText(e));
                None
            }
        },
    };
    Run {
        entry_id: entry_id.to_string(),
        at,
        outcome,
        worker_name: field(b"worker_name").map(|w| String::from_utf8_lossy(w).into_owned()),
        exception,
        unreadable,
    }
}

/// The time a stream entry id (`<ms>-<seq>`) names.
pub fn stream_time(id: &str) -> Option<DateTime<Utc>> {
    let (ms, seq) = id.split_once('-')?;
    seq.parse::<u64>().ok()?;
    DateTime::from_timestamp_millis(ms.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::io::Write;

    fn exc_string(text: &str) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(text.as_bytes()).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(z.finish().unwrap())
            .into_bytes()
    }

    fn fields(pairs: &[(&str, &[u8])]) -> StreamFields {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn a_failed_run_reads_its_time_worker_and_final_exception() {
        let text = "Traceback (most recent call last):\n  File \"t.py\", line 1\nValueError: card_declined\n";
        let run = run_of(
            "1764770000123-0",
            &fields(&[
                ("type", b"2"),
                ("worker_name", b"w1"),
                ("exc_string", &exc_string(text)),
            ]),
        );
        assert_eq!(run.outcome, Some(RunOutcome::Failed));
        assert_eq!(run.at.unwrap().timestamp_millis(), 1_764_770_000_123);
        assert_eq!(run.worker_name.as_deref(), Some("w1"));
        let exception = run.exception.unwrap();
        assert_eq!(exception.exc_type.as_deref(), Some("ValueError"));
        assert_eq!(exception.message, "card_declined");
        assert!(run.unreadable.is_empty());
    }

    #[test]
    fn a_success_of_rq_1_16_has_no_worker_and_no_exception() {
        let run = run_of("1764770000123-1", &fields(&[("type", b"1")]));
        assert_eq!(run.outcome, Some(RunOutcome::Succeeded));
        assert_eq!(run.worker_name, None);
        assert_eq!(run.exception, None);
        assert!(run.unreadable.is_empty());
    }

    #[test]
    fn garbage_gives_a_run_that_says_what_could_not_be_read() {
        let run = run_of(
            "1764770000123-0",
            &fields(&[("type", b"9\xff"), ("exc_string", b"%%% not base64")]),
        );
        assert_eq!(run.outcome, None);
        assert_eq!(run.exception, None);
        assert_eq!(
            run.unreadable,
            vec![
                Unreadable::UnknownType("9\u{fffd}".into()),
                Unreadable::FailureText(FailureTextError::NotBase64)
            ]
        );
        let bare = run_of("1764770000123-0", &Vec::new());
        assert_eq!(bare.unreadable, vec![Unreadable::NoType]);
        let zlib_garbage = run_of(
            "1-0",
            &fields(&[("type", b"2"), ("exc_string", b"aGVsbG8=")]),
        );
        assert_eq!(
            zlib_garbage.unreadable,
            vec![Unreadable::FailureText(FailureTextError::BadZlib(
                "exc_string"
            ))]
        );
    }

    #[test]
    fn an_entry_id_that_names_no_time_is_said_so() {
        let run = run_of("later", &fields(&[("type", b"2")]));
        assert_eq!(run.at, None);
        assert_eq!(run.unreadable, vec![Unreadable::NoTime("later".into())]);
    }
}
