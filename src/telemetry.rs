//! The tracing subscriber: text or JSON, to stderr (journald picks it up) or to rotated files.
//!
//! In the text format every message and field value is written with its control characters
//! escaped ([`EscapedFields`]): queue names and job ids come from Redis and routes from
//! requests, and a raw newline in one would forge whole log lines. The JSON format is escaped
//! by serde already.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::Dispatch;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation as RollingRotation};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings, Rotation};

/// Replaces the active log filter with a new directive.
type FilterSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Keeps the non-blocking writer alive (dropping it flushes what is buffered) and lets a reload
/// change the log filter without restarting.
pub struct TelemetryGuard {
    _guard: Option<WorkerGuard>,
    set_filter: FilterSetter,
}

impl TelemetryGuard {
    /// Replaces the level or filter directive (SIGHUP reload). `RUST_LOG`, when set, still wins.
    pub fn set_level(&self, directive: &str) -> Result<(), String> {
        if std::env::var("RUST_LOG").is_ok_and(|v| !v.is_empty()) {
            return Ok(());
        }
        (self.set_filter)(directive)
    }
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TelemetryGuard")
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured level.
pub fn init(settings: &LoggingSettings) -> anyhow::Result<TelemetryGuard> {
    let directive = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => directive,
        _ => settings.level.clone(),
    };
    let (writer, guard) = match &settings.directory {
        None => (BoxMakeWriter::new(std::io::stderr), None),
        Some(dir) => {
            let rotation = match settings.rotation {
                Rotation::Never => RollingRotation::NEVER,
                Rotation::Hourly => RollingRotation::HOURLY,
                Rotation::Daily => RollingRotation::DAILY,
            };
            let appender = RollingFileAppender::builder()
                .rotation(rotation)
                .filename_prefix("rq-retryd")
                .filename_suffix("log")
                .max_log_files(settings.max_files)
                .build(dir)?;
            let (non_blocking, guard) = tracing_appender::non_blocking(appender);
            (BoxMakeWriter::new(non_blocking), Some(guard))
        }
    };
    let (dispatch, mut telemetry) = subscriber(settings, &directive, writer)?;
    dispatch
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install log subscriber: {e}"))?;
    telemetry._guard = guard;
    Ok(telemetry)
}

/// The subscriber [`init`] installs, not installed: `settings`' format, `directive` as the
/// filter, writing to `writer`. An embedding program (the tests' in-process daemons) makes it
/// the default of the threads that run one daemon, so that each daemon has a log of its own.
pub fn subscriber(
    settings: &LoggingSettings,
    directive: &str,
    writer: BoxMakeWriter,
) -> anyhow::Result<(Dispatch, TelemetryGuard)> {
    let filter = EnvFilter::try_new(directive)?;
    let (dispatch, set_filter): (Dispatch, FilterSetter) = match settings.format {
        LogFormat::Text => {
            let builder = tracing_subscriber::fmt()
                .with_writer(writer)
                .with_target(false)
                .with_ansi(false)
                .fmt_fields(EscapedFields)
                .with_env_filter(filter)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            let set_filter = Box::new(move |d: &str| {
                let filter = EnvFilter::try_new(d).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            });
            (Dispatch::new(builder.finish()), set_filter)
        }
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_writer(writer)
                .with_target(false)
                .with_env_filter(filter)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            let set_filter = Box::new(move |d: &str| {
                let filter = EnvFilter::try_new(d).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            });
            (Dispatch::new(builder.finish()), set_filter)
        }
    };
    Ok((
        dispatch,
        TelemetryGuard {
            _guard: None,
            set_filter,
        },
    ))
}

/// The text format's field formatter: like tracing-subscriber's default (the message, then
/// `name=value` pairs separated by spaces; strings quoted), with every control character of the
/// message and the values escaped (`\n`, `\r`, `\t`, `\u{1b}`), so that one event is always
/// one line whatever text it carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // Fields of `log` records bridged into tracing are metadata, not values.
        if name.starts_with("log.") {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = (|| {
            self.writer.write_str(separator)?;
            if name != "message" {
                write!(self.writer, "{}=", name.strip_prefix("r#").unwrap_or(name))?;
            }
            write!(Escaping(&mut self.writer), "{value}")
        })();
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

/// A writer that passes text through with control characters escaped: `\n`, `\r`, `\t`, and
/// `\u{..}` for the other C0 and C1 controls, DEL and the Unicode line and paragraph
/// separators.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut clean = 0;
        for (i, c) in text.char_indices() {
            let escaped = match c {
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                _ => None,
            };
            if escaped.is_none() && !c.is_control() && !matches!(c, '\u{2028}' | '\u{2029}') {
                continue;
            }
            self.0.write_str(&text[clean..i])?;
            match escaped {
                Some(e) => self.0.write_str(e)?,
                None => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            clean = i + c.len_utf8();
        }
        self.0.write_str(&text[clean..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Everything `log` writes through a text subscriber with [`EscapedFields`].
    fn text_log(log: impl FnOnce()) -> String {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || SharedBuffer(sink.clone()))
            .with_target(false)
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = buffer.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// See: issue 19 ("text logs escape control characters").
    #[test]
    fn a_job_id_with_a_newline_cannot_forge_a_log_line() {
        let job_id = "a\nINFO forged line";
        let queue = "q\r\u{1b}[31mred\u{85}\u{2028}";
        let log = text_log(|| {
            tracing::info!(job_id = %job_id, queue, debugged = ?job_id, "requeued {job_id}\tnow");
        });
        assert_eq!(log.lines().count(), 1, "one event, one line: {log:?}");
        assert!(
            log.contains(r#"requeued a\nINFO forged line\tnow job_id=a\nINFO forged line queue="q\r\u{1b}[31mred\u{85}\u{2028}" debugged="a\nINFO forged line""#),
            "{log}"
        );
        assert!(!log.contains('\u{1b}') && !log.contains('\r'), "{log:?}");
    }

    #[test]
    fn plain_fields_read_as_before() {
        let log = text_log(|| tracing::warn!(count = 3, name = "x y", ok = true, "plain message"));
        assert!(
            log.trim_end()
                .ends_with(r#"WARN plain message count=3 name="x y" ok=true"#),
            "{log}"
        );
    }
}
