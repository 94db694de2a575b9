//! How long `POST /api/v1/policies/simulate` takes at a given index size, in memory only (no
//! Redis, no HTTP): a 10-policy candidate file against 10 running policies over N indexed
//! failures. `cargo run --release --example simulate_scale -- 1000000`. Prints the median of
//! 7 runs. Issue 22's target: at most 1 s at a million failed jobs.

use std::time::Instant;

use chrono::{TimeZone, Utc};
use rq_retryd::config::parse_policy_file;
use rq_retryd::index::Observation;
use rq_retryd::policy::{self, Policy};
use rq_retryd::rq::{Failure, JobFacts, Reads};
use rq_retryd::simulate::{over_index, GroupLabel};

/// Ten running policies: queue, function and exception matchers; retry, purge and ignore.
const RUNNING: &str = r#"
[[policy]]
name = "smtp"
queues = ["emails"]
exceptions = ["SMTPServerDisconnected", "ConnectionError"]
max_attempts = 5
backoff = { strategy = "exponential", initial = "30s", multiplier = 2.0, max = "1h", jitter = 0.1 }
[[policy]]
name = "billing-timeouts"
functions = ["app.tasks.bill"]
exceptions = ["TimeoutError"]
max_attempts = 3
backoff = { strategy = "fixed", delay = "10m" }
[[policy]]
name = "reports"
queues = ["reports"]
functions = ["app.reports.*"]
max_attempts = 2
backoff = { strategy = "linear", initial = "5m", step = "5m" }
[[policy]]
name = "bad-input"
exceptions = ["ValueError", "KeyError"]
action = "purge"
purge_after = "7d"
[[policy]]
name = "sync-ignore"
functions = ["app.sync.*"]
exceptions = ["PermissionError"]
action = "ignore"
[[policy]]
name = "sync"
functions = ["app.sync.*"]
max_attempts = 10
backoff = { strategy = "fixed", delay = "1m" }
[[policy]]
name = "network"
exceptions = ["ConnectionError", "TimeoutError"]
max_attempts = 5
backoff = { strategy = "fixed", delay = "2m" }
[[policy]]
name = "old-purge"
queues = ["archive"]
action = "purge"
purge_after = "30d"
[[policy]]
name = "default-send"
queues = ["default"]
functions = ["app.tasks.send"]
max_attempts = 4
[[policy]]
name = "catch-all"
queues = ["default", "emails", "reports"]
action = "ignore"
"#;

fn candidate() -> String {
    RUNNING
        // A faster backoff for the emails, a shorter purge, and the billing timeouts purged
        // instead of retried (its exceptions and action change).
        .replace("initial = \"30s\", multiplier = 2.0", "initial = \"10s\", multiplier = 2.0")
        .replace("purge_after = \"7d\"", "purge_after = \"1d\"")
        .replace(
            "exceptions = [\"TimeoutError\"]\nmax_attempts = 3\nbackoff = { strategy = \"fixed\", delay = \"10m\" }",
            "exceptions = [\"TimeoutError\", \"ValueError\"]\naction = \"purge\"",
        )
}

fn policies(text: &str) -> Vec<Policy> {
    parse_policy_file(text, "bench").unwrap().policies
}

pub mod common;

use common::{EXCEPTIONS, FUNCTIONS, QUEUES};

fn main() {
    let n = common::size();
    let running = policies(RUNNING);
    let candidate = policies(&candidate());
    assert_eq!((running.len(), candidate.len()), (10, 10));
    let now = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    // Four queues, six exception types and four functions, each in runs of the one before, so
    // that the ten policies' matchers see every combination; decided by the running policies.
    let index = common::build(n, |index, i, id| {
        let queue = QUEUES[i % 4];
        let exception = EXCEPTIONS[(i / 4) % 6];
        let facts = JobFacts {
            job_id: id.to_string(),
            queue: queue.to_string(),
            origin: queue.to_string(),
            status: Some("failed".into()),
            func_name: Some(FUNCTIONS[(i / 24) % 4].to_string()),
            description: None,
            failed_at: now - common::offset(i, 172_800_000),
            failed_at_from: Default::default(),
            attempts: (i % 4) as u32,
            exhausted: false,
            last_policy: None,
            requeued_at: None,
            succeeded_at: None,
            failure: Some(Failure::from_text(format!("Traceback\n{exception}: boom"))),
            cas: Default::default(),
            reads: Reads::ALL,
            created_at: None,
            meta: None,
        };
        let e = policy::decide(&running, &facts, now);
        index.observe(&Observation::decided(
            &facts,
            1e10 + i as f64,
            e.policy.map(|p| p.name.as_str()),
            &e.decision,
        ));
    });
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..7 {
        let t = Instant::now();
        let report = over_index(&index, &running, &candidate, now).report(
            GroupLabel::clone,
            &candidate,
            now,
            "index",
        );
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        last = Some(report);
    }
    times.sort_by(f64::total_cmp);
    let r = last.unwrap();
    println!(
        "simulate (10 running, 10 candidate policies): median {:.0} ms, min {:.0}, max {:.0} over 7 runs",
        times[3], times[0], times[6]
    );
    println!(
        "jobs {} groups {} changed jobs {} in {} groups, uncertain {}",
        r.jobs,
        r.groups.len(),
        r.changed_jobs,
        r.changed_groups,
        r.uncertain
    );
}
