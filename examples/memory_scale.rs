//! Where the daemon's memory per failed job goes, in memory only (no Redis, no HTTP):
//! `cargo run --release --example memory_scale -- 5000000`. Fills the two structures that hold
//! one entry per failed job, the failure index (with its search texts) and the decision
//! memory, as a first full scan over that many failures would (each sized up front from the
//! registries' total, as the scan does), and prints the resident memory each one added.
//!
//! The texts are shaped like `tests/python/seed_failed_jobs.py`'s (the benchmarks' seeded
//! jobs): an exception line of 30-60 bytes from five, and a description with the job's own
//! argument. The end-to-end figure (a real scan of a seeded Redis) is `bench/first_build.sh`'s.

use chrono::{Duration, TimeZone, Utc};
use rq_retryd::index::{FailureIndex, Known, Observation, SearchText, State};
use rq_retryd::supervisor::{FactsCache, Verdict};

pub mod common;

use common::status_kib;

const SEEDED: [(&str, &str, &str); 5] = [
    (
        "app.workers.reports.render_report",
        "ConnectionError",
        "ConnectionError: upstream reporting API timed out after 30s",
    ),
    (
        "app.workers.emails.send_welcome",
        "smtplib.SMTPServerDisconnected",
        "smtplib.SMTPServerDisconnected: Connection unexpectedly closed",
    ),
    (
        "app.workers.billing.charge_card",
        "ValueError",
        "ValueError: card number failed Luhn check",
    ),
    (
        "app.workers.sync.pull_orders",
        "TimeoutError",
        "TimeoutError: read timed out",
    ),
    ("app.workers.images.resize", "KeyError", "KeyError: 'width'"),
];

fn rss_mib() -> f64 {
    status_kib("VmRSS") as f64 / 1024.0
}

fn main() {
    let n = common::size();
    let queues: Vec<String> = (0..10).map(|q| format!("q{q}")).collect();
    let t0 = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    let start = rss_mib();

    let mut index = FailureIndex::default();
    index.reserve_total(n);
    let mut description = String::new();
    for i in 0..n {
        let (function, exception, line) = SEEDED[i % SEEDED.len()];
        let id = common::job_id(i);
        description.clear();
        description.push_str(&format!(
            "{function}({}, tenant='acme')",
            (i * 7919) % 1_000_000
        ));
        let failed_at = t0 + common::offset(i, 86_400_000);
        index.observe(&Observation {
            queue: &queues[i % queues.len()],
            job_id: &id,
            score: 1e10 + i as f64,
            failed_at,
            function: Known::Is(function),
            exception: Known::Is(exception),
            attempts: 0,
            exhausted: false,
            policy: Some("wait-a-month"),
            state: State::Waiting,
            next_due: Some(failed_at + Duration::days(30)),
            text: Known::Is(SearchText {
                exception_line: Some(line),
                description: Some(&description),
            }),
        });
    }
    let after_index = rss_mib();
    let texts = index.search_text_bytes() as f64 / 1048576.0;

    let mut cache = FactsCache::default();
    cache.begin_scan(1);
    cache.reserve_total(n);
    let arcs: Vec<std::sync::Arc<str>> = queues.iter().map(|q| q.as_str().into()).collect();
    for i in 0..n {
        let failed_at = t0 + common::offset(i, 86_400_000);
        cache.remember(
            &arcs[i % arcs.len()],
            &common::job_id(i),
            1e10 + i as f64,
            failed_at,
            Verdict::Waiting {
                due: failed_at + Duration::days(30),
            },
            None,
        );
    }
    let after_cache = rss_mib();

    let per_job = |mib: f64| mib * 1048576.0 / n as f64;
    let index_mib = after_index - start;
    let cache_mib = after_cache - after_index;
    println!(
        "failure index: {index_mib:.0} MiB ({:.0} B a job), of which search texts {texts:.0} MiB ({:.0} B a job)",
        per_job(index_mib),
        per_job(texts)
    );
    println!(
        "decision memory: {cache_mib:.0} MiB ({:.0} B a job)",
        per_job(cache_mib)
    );
    println!(
        "both: {:.0} MiB ({:.0} B a job); VmHWM {:.0} MiB",
        index_mib + cache_mib,
        per_job(index_mib + cache_mib),
        status_kib("VmHWM") as f64 / 1024.0
    );
    std::hint::black_box((&index, &cache));
}
