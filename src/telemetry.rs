//! The tracing subscriber: text or JSON, to stderr (journald picks it up) or to rotated files.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation as RollingRotation};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings, Rotation};

/// Keeps the non-blocking writer alive; dropping it flushes what is buffered.
pub struct TelemetryGuard {
    _guard: Option<WorkerGuard>,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured level.
pub fn init(settings: &LoggingSettings) -> anyhow::Result<TelemetryGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(directive)?,
        _ => EnvFilter::try_new(&settings.level)?,
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let result = match settings.format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install log subscriber: {e}"))?;
    Ok(TelemetryGuard { _guard: guard })
}
