//! `once`: one full scan pass, act on what is due, print a summary.

use std::fmt::Write as _;
use std::sync::Arc;

use tracing::error;

use super::{EXIT_REFUSED, EXIT_RUNTIME};
use crate::config::Config;
use crate::connection::{connect, require_supported_server};
use crate::report::ScanReport;
use crate::shutdown;
use crate::state::DaemonState;
use crate::supervisor::Supervisor;

pub async fn once(config: Arc<Config>, dry_run: bool, json: bool) -> u8 {
    let cancel = shutdown::on_signals();
    let mut con = match connect(&config).await {
        Ok(con) => con,
        Err(e) => {
            error!(redis = %config.redacted_redis_url(), error = %e, "cannot reach Redis");
            eprintln!(
                "rq-retryd: cannot reach Redis at {}: {e}",
                config.redacted_redis_url()
            );
            return EXIT_RUNTIME;
        }
    };
    if let Err(refused) = require_supported_server(&mut con, &config).await {
        eprintln!("rq-retryd: {refused}");
        return EXIT_RUNTIME;
    }
    let state = DaemonState::new(config.clone());
    let supervisor = Supervisor::unleased(state.clone());
    if !dry_run && !config.supervisor.dry_run {
        if let Err(e) = state.snapshot().executor.load_scripts(&mut con).await {
            eprintln!("rq-retryd: cannot load scripts into Redis: {e}");
            return EXIT_RUNTIME;
        }
    }
    match supervisor.scan(&mut con, dry_run, &cancel).await {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("report serializes")
                );
            } else {
                print!("{}", summary(&report));
            }
            if report.refused > 0 {
                eprintln!(
                    "rq-retryd: {} writes were refused and left their jobs as they were (see the log); exit {EXIT_REFUSED}",
                    report.refused
                );
                EXIT_REFUSED
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("rq-retryd: scan failed: {e}");
            EXIT_RUNTIME
        }
    }
}

/// The human summary of one pass.
pub fn summary(r: &ScanReport) -> String {
    let mut out = String::new();
    let verb = if r.dry_run {
        "dry run: would have "
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "scanned {} failed jobs in {} queues in {} ms",
        r.scanned,
        r.queues.len(),
        r.duration_ms
    );
    let _ = writeln!(
        out,
        "{verb}requeued {}, purged {}, exhausted {}",
        r.requeued, r.purged, r.exhausted
    );
    let next = r
        .next_due_at
        .map(|t| format!(" (next due {})", t.to_rfc3339()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "waiting {}{next}, ignored {}, unmatched {}, conflicts {}",
        r.waiting, r.ignored, r.unmatched, r.conflicts
    );
    if r.stopped + r.succeeded > 0 {
        let _ = writeln!(
            out,
            "left to the operator: stopped {}, succeeded {} (never retried automatically)",
            r.stopped, r.succeeded
        );
    }
    if r.refused > 0 {
        let _ = writeln!(out, "refused {} (jobs left as they were)", r.refused);
    }
    if r.skipped > 0 {
        let reasons: Vec<String> = r
            .skipped_by_reason
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "skipped {} ({})", r.skipped, reasons.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // See: issue 21. Jobs never retried automatically are named in the human summary.
    #[test]
    fn the_summary_names_stopped_and_succeeded_jobs_only_when_there_are_some() {
        let none = summary(&ScanReport::default());
        assert!(!none.contains("left to the operator"), "{none}");
        let some = summary(&ScanReport {
            stopped: 2,
            succeeded: 1,
            ..ScanReport::default()
        });
        assert!(
            some.contains(
                "left to the operator: stopped 2, succeeded 1 (never retried automatically)"
            ),
            "{some}"
        );
    }
}
