//! The tracing subscriber: text or JSON, to stderr (journald picks it up) or to rotated files.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation as RollingRotation};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
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
    let set_filter: FilterSetter = match settings.format {
        LogFormat::Text => {
            let builder = tracing_subscriber::fmt()
                .with_writer(writer)
                .with_target(false)
                .with_ansi(false)
                .with_env_filter(filter)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder
                .try_init()
                .map_err(|e| anyhow::anyhow!("cannot install log subscriber: {e}"))?;
            Box::new(move |d: &str| {
                let filter = EnvFilter::try_new(d).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            })
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
            builder
                .try_init()
                .map_err(|e| anyhow::anyhow!("cannot install log subscriber: {e}"))?;
            Box::new(move |d: &str| {
                let filter = EnvFilter::try_new(d).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            })
        }
    };
    Ok(TelemetryGuard {
        _guard: guard,
        set_filter,
    })
}
