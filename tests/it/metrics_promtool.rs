//! `/metrics` of a real daemon: valid for `promtool check metrics` (Debian's `prometheus`
//! package, installed by `scripts/test.sh`), every family of the interface present, gauges equal
//! to what was seeded, counters exact after automatic and manual actions, and `redis_up`
//! following Redis.
//!
//! See: issue 3 (HTTP control surface and Prometheus metrics).

use crate::support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands;
use support::http::{metric, parse_metrics, Daemon, DaemonConfig, Sample};
use support::jobs::FailedJob;
use support::RedisServer;

/// `auto`: requeued at once. `trash`: purged at once. `default`: retried after a long backoff,
/// at most 5 times. Anything else (`loose`): unmatched.
const POLICIES: &str = r#"
[[policy]]
name = "retry-now"
queues = ["auto"]
action = "retry"
max_attempts = 3
backoff = { strategy = "fixed", delay = "0s" }

[[policy]]
name = "purge-now"
queues = ["trash"]
action = "purge"

[[policy]]
name = "slow-retry"
queues = ["default"]
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "1h" }
"#;

/// `promtool` from `$RQ_RETRYD_PROMTOOL` or `PATH`; a missing one is a failure, not a skip.
fn promtool() -> String {
    let tool = std::env::var("RQ_RETRYD_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let found = Command::new(&tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed: run ./scripts/test.sh, which installs Debian's prometheus package"
    );
    tool
}

/// Runs `promtool check metrics` on `text`; panics with its output unless it passes.
fn promtool_check(text: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[track_caller]
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(samples, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

#[test]
fn metrics_pass_promtool_and_carry_every_family_with_exact_values() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    let mut con = redis.conn();
    FailedJob::new("a1").queue("auto").write(&mut con);
    FailedJob::new("t1").queue("trash").write(&mut con);
    FailedJob::new("d1").failed_secs_ago(60).write(&mut con);
    FailedJob::new("d2").failed_secs_ago(120).write(&mut con);
    FailedJob::new("d3")
        .failed_secs_ago(900)
        .attempts(5)
        .write(&mut con);
    FailedJob::new("c")
        .field("ended_at", b"yesterday")
        .write(&mut con);
    // Stopped by an operator (issue 21): counted apart, never acted on.
    FailedJob::new("s1")
        .queue("halted")
        .field("status", b"stopped")
        .field("ended_at", b"")
        .write(&mut con);
    FailedJob::new("l1").queue("loose").write(&mut con);
    FailedJob::new("l2")
        .queue("loose")
        .failed_secs_ago(400)
        .write(&mut con);

    // An automatic requeue and purge, then a manual requeue and purge, then a scan to refresh
    // the gauges.
    let first = daemon.scan();
    assert_eq!(first["report"]["requeued"], 1, "{first}");
    assert_eq!(first["report"]["purged"], 1, "{first}");
    daemon.post("/api/v1/jobs/failed/d1/retry").expect(200);
    daemon.delete("/api/v1/jobs/failed/l1").expect(200);
    daemon.scan();

    let response = daemon.get("/metrics");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        response.headers
    );
    let text = response.text();
    promtool_check(&text);
    let samples = parse_metrics(&text);

    for (family, kind) in [
        ("failed_jobs", "gauge"),
        ("waiting_jobs", "gauge"),
        ("exhausted_jobs", "gauge"),
        ("stopped_jobs", "gauge"),
        ("succeeded_jobs", "gauge"),
        ("oldest_failed_job_age_seconds", "gauge"),
        ("queued_jobs", "gauge"),
        ("requeued_total", "counter"),
        ("purged_total", "counter"),
        ("skipped_total", "counter"),
        ("skipped_jobs", "gauge"),
        ("scans_total", "counter"),
        ("scan_errors_total", "counter"),
        ("scan_duration_seconds", "histogram"),
        ("last_scan_timestamp_seconds", "gauge"),
        ("redis_up", "gauge"),
        ("paused", "gauge"),
        ("build_info", "gauge"),
        ("auth_failures_total", "counter"),
    ] {
        assert!(
            text.contains(&format!("# TYPE rq_retryd_{family} {kind}\n")),
            "no {kind} rq_retryd_{family}:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP rq_retryd_{family} ")),
            "no help for rq_retryd_{family}"
        );
    }

    // Gauges equal what is in Redis: default holds d2 (waiting), d3 (exhausted), c (corrupt);
    // loose holds l2; auto and trash are empty; d1 and a1 are queued.
    let g = |name: &str, queue: &str| value(&samples, name, &[("queue", queue)]);
    assert_eq!(g("rq_retryd_failed_jobs", "default"), 3.0);
    assert_eq!(g("rq_retryd_failed_jobs", "loose"), 1.0);
    assert_eq!(g("rq_retryd_failed_jobs", "auto"), 0.0);
    assert_eq!(g("rq_retryd_failed_jobs", "trash"), 0.0);
    assert_eq!(g("rq_retryd_waiting_jobs", "default"), 1.0);
    assert_eq!(g("rq_retryd_waiting_jobs", "loose"), 0.0);
    assert_eq!(g("rq_retryd_exhausted_jobs", "default"), 1.0);
    assert_eq!(g("rq_retryd_exhausted_jobs", "loose"), 0.0);
    assert_eq!(g("rq_retryd_stopped_jobs", "halted"), 1.0);
    assert_eq!(g("rq_retryd_stopped_jobs", "default"), 0.0);
    assert_eq!(g("rq_retryd_succeeded_jobs", "halted"), 0.0);
    assert_eq!(g("rq_retryd_queued_jobs", "default"), 1.0);
    assert_eq!(g("rq_retryd_queued_jobs", "auto"), 1.0);
    assert_eq!(g("rq_retryd_queued_jobs", "trash"), 0.0);
    let oldest_default = g("rq_retryd_oldest_failed_job_age_seconds", "default");
    assert!(
        (900.0..960.0).contains(&oldest_default),
        "d3 failed 900 s ago: {oldest_default}"
    );
    let oldest_loose = g("rq_retryd_oldest_failed_job_age_seconds", "loose");
    assert!((400.0..460.0).contains(&oldest_loose), "{oldest_loose}");

    // The gauges agree with the stats endpoint and with Redis.
    let stats = daemon.get("/api/v1/jobs/stats").expect(200);
    for queue in ["default", "loose", "auto", "trash"] {
        let in_redis: u64 = con.zcard(format!("rq:failed:{queue}")).unwrap();
        assert_eq!(
            g("rq_retryd_failed_jobs", queue),
            in_redis as f64,
            "{queue}"
        );
        assert_eq!(
            stats["queues"][queue]["failed"], in_redis,
            "{queue}: {stats}"
        );
        let queued: u64 = con.llen(format!("rq:queue:{queue}")).unwrap();
        assert_eq!(g("rq_retryd_queued_jobs", queue), queued as f64, "{queue}");
    }

    // Counters by queue, policy and trigger.
    let action = |name: &str, queue: &str, policy: &str, trigger: &str| {
        metric(
            &samples,
            name,
            &[("queue", queue), ("policy", policy), ("trigger", trigger)],
        )
    };
    assert_eq!(
        action("rq_retryd_requeued_total", "auto", "retry-now", "auto"),
        Some(1.0)
    );
    assert_eq!(
        action("rq_retryd_requeued_total", "default", "manual", "manual"),
        Some(1.0)
    );
    assert_eq!(
        action("rq_retryd_purged_total", "trash", "purge-now", "auto"),
        Some(1.0)
    );
    assert_eq!(
        action("rq_retryd_purged_total", "loose", "manual", "manual"),
        Some(1.0)
    );
    let requeues: f64 = samples
        .iter()
        .filter(|s| s.name == "rq_retryd_requeued_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(requeues, 2.0, "exactly one auto and one manual requeue");
    for s in samples.iter().filter(|s| s.name.starts_with("rq_retryd_")) {
        assert!(
            !s.labels.contains_key("job_id") && !s.labels.values().any(|v| v == "a1" || v == "d1"),
            "no job ids in labels: {s:?}"
        );
    }

    // Skips by reason: both scans see the corrupt job and the unmatched loose jobs, but the
    // counter counts each job once (see: issue 11); the gauge is what the last scan skipped.
    let scans = value(&samples, "rq_retryd_scans_total", &[]);
    assert!(scans >= 3.0, "startup scan + 2 requested: {scans}");
    let skipped = |name: &str, reason: &str| value(&samples, name, &[("reason", reason)]);
    assert_eq!(
        skipped("rq_retryd_skipped_total", "decode_error"),
        1.0,
        "c, skipped by the 2 scans after it was written, is one skipped job"
    );
    assert_eq!(
        skipped("rq_retryd_skipped_total", "unmatched"),
        2.0,
        "l1 and l2 in the first scan (l2 again in the second is no news)"
    );
    assert_eq!(skipped("rq_retryd_skipped_jobs", "decode_error"), 1.0, "c");
    assert_eq!(skipped("rq_retryd_skipped_jobs", "unmatched"), 1.0, "l2");

    assert_eq!(value(&samples, "rq_retryd_scan_errors_total", &[]), 0.0);
    assert_eq!(
        value(&samples, "rq_retryd_scan_duration_seconds_count", &[]),
        scans
    );
    assert_eq!(
        value(
            &samples,
            "rq_retryd_scan_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        scans
    );
    let last = value(&samples, "rq_retryd_last_scan_timestamp_seconds", &[]);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - 60.0..=now + 1.0).contains(&last), "{last} vs {now}");
    assert_eq!(value(&samples, "rq_retryd_redis_up", &[]), 1.0);
    assert_eq!(value(&samples, "rq_retryd_paused", &[]), 0.0);
    assert_eq!(
        value(
            &samples,
            "rq_retryd_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                // build.rs: the git commit of this build (issue 14).
                ("commit", env!("RQ_RETRYD_GIT_COMMIT"))
            ]
        ),
        1.0
    );

    // Paused shows in the gauge, and the exposition stays valid.
    daemon.post("/api/v1/supervisor/pause").expect(200);
    let text = daemon.get("/metrics").text();
    promtool_check(&text);
    assert_eq!(value(&parse_metrics(&text), "rq_retryd_paused", &[]), 1.0);
}

#[test]
fn redis_up_drops_to_0_within_10_seconds_of_losing_redis() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    let up = |d: &Daemon| {
        value(
            &parse_metrics(&d.get("/metrics").text()),
            "rq_retryd_redis_up",
            &[],
        )
    };
    assert_eq!(up(&daemon), 1.0);

    let mut con = redis.conn();
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut con);
    let killed = Instant::now();
    // Only /metrics is read: /readyz would update the gauge itself and hide a stale watcher.
    loop {
        if up(&daemon) == 0.0 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "rq_retryd_redis_up still 1 after 10 s without Redis"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A scan without Redis is counted as an error, and the exposition stays valid.
    daemon.post("/api/v1/supervisor/scan").expect(202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = daemon.get("/metrics").text();
        let samples = parse_metrics(&text);
        if value(&samples, "rq_retryd_scan_errors_total", &[]) >= 1.0 {
            promtool_check(&text);
            assert_eq!(value(&samples, "rq_retryd_redis_up", &[]), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "the failed scan was not counted");
        std::thread::sleep(Duration::from_millis(100));
    }
}
