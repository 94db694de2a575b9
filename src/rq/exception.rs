//! The exception a failure text ends with: its type and its whole message, as a person reads
//! them at the bottom of a Python traceback (pure).
//!
//! [`super::failure::exception_type`] gives the type that policies match; this gives the line a
//! job page leads with. On a chained traceback that is the exception raised last (the final
//! `ValueError: ...` at the bottom), and a message of several lines (`DETAIL:` lines, notes)
//! is kept whole.

use super::failure::{exception_type, rq_sentence_type};

/// The final exception of a failure text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionLine {
    /// e.g. `ValueError`, `redis.exceptions.TimeoutError`, or RQ's documented name for a
    /// sentence of its own (`rq.WorkHorseTerminated`).
    pub exc_type: Option<String>,
    /// Everything after `Type: ` to the end of the exception's section; for an RQ sentence, the
    /// sentence; empty for a bare `KeyboardInterrupt`.
    pub message: String,
}

/// Headers that start a traceback section at the left margin.
const HEADERS: [&str; 2] = [
    "Traceback (most recent call last):",
    "  + Exception Group Traceback (most recent call last):",
];

/// The final exception of `text`: the exception line of its last traceback section and the
/// lines of message that follow it, or for a text that is no traceback, its last line.
pub fn final_exception(text: &str) -> ExceptionLine {
    let exc_type = exception_type(text);
    if rq_sentence_type(text).is_some() {
        return ExceptionLine {
            exc_type,
            message: text.trim().to_string(),
        };
    }
    let lines: Vec<&str> = text.lines().collect();
    let section_start = lines
        .iter()
        .rposition(|l| HEADERS.iter().any(|h| l.starts_with(h)))
        .map_or(0, |at| at + 1);
    let message = exc_type
        .as_deref()
        .and_then(|t| message_after(&lines[section_start..], t))
        .unwrap_or_else(|| last_line(&lines));
    ExceptionLine { exc_type, message }
}

/// The message of the exception line that starts with `exc_type` (after a group's `  | `
/// margin), with the lines that continue it up to the section's end.
fn message_after(section: &[&str], exc_type: &str) -> Option<String> {
    let unboxed = |l: &str| l.strip_prefix("  | ").unwrap_or(l).to_string();
    let at = section.iter().position(|l| {
        let l = unboxed(l);
        l.starts_with(exc_type) && !l.starts_with(char::is_whitespace)
    })?;
    let first = unboxed(section[at]);
    let head = first[exc_type.len()..]
        .strip_prefix(':')
        .unwrap_or(&first[exc_type.len()..]);
    let mut message = vec![head.trim_start().to_string()];
    // A message of several lines runs to the end of the section: a blank line, or a group's
    // box of sub-exceptions (`  +-+---`), ends it.
    for line in &section[at + 1..] {
        if line.trim().is_empty() || line.trim_start().starts_with('+') {
            break;
        }
        message.push(unboxed(line));
    }
    Some(message.join("\n").trim_end().to_string())
}

fn last_line(lines: &[&str]) -> String {
    let line = lines
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or("", |l| l.trim());
    match line.split_once(':') {
        Some((_, rest)) => rest.trim().to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: Option<&str>, m: &str) -> ExceptionLine {
        ExceptionLine {
            exc_type: t.map(str::to_string),
            message: m.to_string(),
        }
    }

    /// Each shape Python and RQ print, with what the job page must lead with. See: issue 22,
    /// item 3.
    #[test]
    fn the_final_exception_is_read_whole_from_every_shape_of_failure_text() {
        let cases: &[(&str, ExceptionLine)] = &[
            (
                "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad value: 3\n",
                line(Some("ValueError"), "bad value: 3"),
            ),
            (
                "Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyboardInterrupt\n",
                line(Some("KeyboardInterrupt"), ""),
            ),
            (
                "Traceback (most recent call last):\n  File \"x.py\", line 1\npsycopg2.errors.UniqueViolation: duplicate key\nDETAIL:  Key (id)=(1) already exists.\n",
                line(
                    Some("psycopg2.errors.UniqueViolation"),
                    "duplicate key\nDETAIL:  Key (id)=(1) already exists.",
                ),
            ),
            // Chained: the first exception's line is not the one shown.
            (
                "Traceback (most recent call last):\n  File \"a.py\", line 15, in c\nKeyError: 'x'\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n  File \"a.py\", line 17, in c\nValueError: order 42: card_declined\n",
                line(Some("ValueError"), "order 42: card_declined"),
            ),
            (
                "  + Exception Group Traceback (most recent call last):\n  |   File \"<stdin>\", line 7, in g\n  | ExceptionGroup: boom (2 sub-exceptions)\n  +-+---------------- 1 ----------------\n    | ValueError: a: 1\n    +------------------------------------\n",
                line(Some("ExceptionGroup"), "boom (2 sub-exceptions)"),
            ),
            (
                "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ",
                line(
                    Some("rq.WorkHorseTerminated"),
                    "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9);",
                ),
            ),
            ("ValueError: bad", line(Some("ValueError"), "bad")),
            ("", line(None, "")),
        ];
        for (text, want) in cases {
            assert_eq!(&final_exception(text), want, "{text:?}");
        }
    }

    #[test]
    fn a_message_that_repeats_its_type_name_keeps_it() {
        let text = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: ValueError: twice\n";
        assert_eq!(
            final_exception(text),
            line(Some("ValueError"), "ValueError: twice")
        );
    }
}
