//! The HTTP API's stats (against RQ's own counts), audit trail, read-only GETs, overview endpoints
//! and the supervisor's pause / resume / scan, against a real `redis-server`, with a real `rq-
//! retryd run` on a free loopback port driven over real sockets; failed jobs written byte for byte
//! as RQ leaves them (`support::jobs`) or by real RQ (`support::rq`). Each test owns its Redis and
//! its daemon.
//!
//! See: issue 3 (HTTP control surface and Prometheus metrics); split by resource in issue 12.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::{json, Value};

use support::api::*;
use support::http::{metric, parse_metrics, HANDS_OFF};
use support::jobs::{snapshot, FailedJob};
use support::rq::{JobSpec, Rq};

// ---------------------------------------------------------------------------------------------
// Stats against RQ's own counts

mod rq2 {
    #[test]
    fn stats_equal_what_rq_itself_counts() {
        super::stats_equal_what_rq_itself_counts(&super::Rq::rq2());
    }
}

mod rq1 {
    #[test]
    fn stats_equal_what_rq_itself_counts() {
        super::stats_equal_what_rq_itself_counts(&super::Rq::rq1());
    }
}

/// Seeds with RQ's own code: the seed script (failed jobs on three queues), real workers
/// (finished and failed jobs), a job left queued, a deferred one, a scheduled one and one
/// running in a real worker; then compares `GET /api/v1/jobs/stats` with `Queue.count` and every
/// registry's `count` as RQ computes them.
fn stats_equal_what_rq_itself_counts(rq: &Rq) {
    let (redis, daemon) = start(HANDS_OFF);
    let url = redis.url();
    rq.seed_failed_jobs(&url, 40, &["default", "emails", "reports"]);
    for _ in 0..3 {
        rq.enqueue(&url, &JobSpec::new("work", "tasks.ok"));
    }
    for _ in 0..2 {
        rq.enqueue(&url, &JobSpec::new("work", "tasks.always_fail"));
    }
    rq.burst_worker(&url, &["work"]);
    let blocker = rq.enqueue(&url, &JobSpec::new("hold", "tasks.ok"));
    rq.ctl(
        &url,
        &[
            "enqueue",
            "--queue",
            "dep",
            "--func",
            "tasks.ok",
            "--depends-on",
            &blocker,
        ],
    );
    rq.enqueue(&url, &JobSpec::new("dep", "tasks.ok"));
    rq.ctl(
        &url,
        &[
            "enqueue",
            "--queue",
            "later",
            "--func",
            "tasks.ok",
            "--in-seconds",
            "3600",
        ],
    );
    rq.enqueue(&url, &JobSpec::new("later", "tasks.ok"));

    // One job running in a real worker (sleeping), so `started` is not trivially 0.
    rq.enqueue(&url, &JobSpec::new("slow", "time.sleep").args(json!([60])));
    let worker = support::http::rq_worker_in_background(rq, &url, "slow");
    let rq_counts = |rq: &Rq| rq.ctl_json(&url, &["stats"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = rq_counts(rq);
        if now["queues"]["slow"]["started"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow job never started: {now}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let expected = rq_counts(rq);
    let got = daemon.get("/api/v1/jobs/stats").expect(200);
    let again = rq_counts(rq);
    drop(worker);
    assert_eq!(expected, again, "RQ's counts moved during the comparison");
    assert_eq!(got, expected, "rq-retryd vs RQ {}", rq.version);

    // Not vacuous: every column is non-zero somewhere.
    let queues = expected["queues"].as_object().unwrap();
    for column in [
        "queued",
        "started",
        "failed",
        "finished",
        "deferred",
        "scheduled",
    ] {
        assert!(
            queues.values().any(|q| q[column].as_u64().unwrap() > 0),
            "no queue has {column} > 0: {expected}"
        );
    }
    assert_eq!(expected["failed_count"], 42, "40 seeded + 2 real failures");
    assert_eq!(queues["work"]["finished"], 3);
    assert_eq!(queues["work"]["failed"], 2);
}

/// The snippet from issue 3, with the standard library's urllib instead of `requests`
/// (unchanged otherwise): `stats['failed_count']` and `result['requeued_count']`.
#[test]
fn the_issue_python_snippet_works_unchanged() {
    let (redis, daemon) = start(HANDS_OFF);
    let rq = Rq::rq2();
    rq.seed_failed_jobs(&redis.url(), 25, &["default", "emails"]);
    let snippet = r#"
import json, sys, urllib.request

BASE = sys.argv[1]

def call(method, path):
    req = urllib.request.Request(BASE + path, method=method)
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)

stats = call("GET", "/api/v1/jobs/stats")
print(stats['failed_count'])
result = call("POST", "/api/v1/jobs/failed/retry-all")
print(result['requeued_count'])
print(call("GET", "/api/v1/jobs/stats")['failed_count'])
"#;
    let out = std::process::Command::new(support::http::venv_of(&rq).join("bin").join("python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg("-c")
        .arg(snippet)
        .arg(daemon.base_url())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "snippet failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed.lines().collect::<Vec<_>>(), ["25", "25", "0"]);
    let queued: u64 = rq.queued_ids(&redis.url(), "default").len() as u64
        + rq.queued_ids(&redis.url(), "emails").len() as u64;
    assert_eq!(queued, 25, "RQ sees all 25 queued");
}

// ---------------------------------------------------------------------------------------------
// Audit, read-only GETs, overview endpoints

/// Requeues `auto` jobs at once; leaves everything else alone.
const AUTO_AND_HANDS_OFF: &str = r#"
[[policy]]
name = "retry-now"
queues = ["auto"]
action = "retry"
max_attempts = 3
backoff = { strategy = "fixed", delay = "0s" }

[[policy]]
name = "hands-off"
action = "ignore"
"#;

#[test]
fn manual_and_automatic_actions_are_in_the_audit_trail() {
    let (redis, daemon) = start(AUTO_AND_HANDS_OFF);
    let mut con = redis.conn();
    FailedJob::new("au1").queue("auto").write(&mut con);
    FailedJob::new("m1").write(&mut con);
    FailedJob::new("m2").write(&mut con);
    FailedJob::new("k1").queue("bulkq").write(&mut con);
    FailedJob::new("k2").queue("bulkq").write(&mut con);

    daemon.scan();
    assert_eq!(queue_ids(&mut con, "auto"), strings(&["au1"]));
    daemon.post("/api/v1/jobs/failed/m1/retry").expect(200);
    daemon.delete("/api/v1/jobs/failed/m2").expect(200);
    daemon.post("/api/v1/supervisor/pause").expect(200);
    daemon.post("/api/v1/supervisor/resume").expect(200);
    daemon
        .post("/api/v1/jobs/failed/retry-all?queue=bulkq")
        .expect(200);

    let audit = daemon.get("/api/v1/audit").expect(200);
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 6, "{audit}");
    // The client's address without its ephemeral port (see: issue 19).
    let client = |e: &Value| e["who"] == "127.0.0.1";
    // Newest first.
    let bulk = &entries[0];
    assert!(client(bulk), "{bulk}");
    assert_eq!(bulk["action"], "requeue");
    // The why of a bulk action is its route with the selection it ran with.
    assert_eq!(
        bulk["why"],
        "POST /api/v1/jobs/failed/retry-all?queue=bulkq"
    );
    assert_eq!(bulk["queue"], "bulkq");
    assert_eq!(bulk["count"], 2);
    let mut ids: Vec<String> = serde_json::from_value(bulk["job_ids"].clone()).unwrap();
    ids.sort();
    assert_eq!(ids, strings(&["k1", "k2"]));
    assert_eq!(entries[1]["action"], "resume");
    assert!(client(&entries[1]), "{}", entries[1]);
    assert_eq!(entries[2]["action"], "pause");
    assert!(client(&entries[2]), "{}", entries[2]);
    let delete = &entries[3];
    assert!(client(delete), "{delete}");
    assert_eq!(delete["action"], "purge");
    assert_eq!(delete["why"], "DELETE /api/v1/jobs/failed/{job_id}");
    assert_eq!(delete["job_ids"], json!(["m2"]));
    assert_eq!(delete["queue"], "default");
    let retry = &entries[4];
    assert!(client(retry), "{retry}");
    assert_eq!(retry["action"], "requeue");
    assert_eq!(retry["why"], "POST /api/v1/jobs/failed/{job_id}/retry");
    assert_eq!(retry["job_ids"], json!(["m1"]));
    let auto = &entries[5];
    assert_eq!(auto["who"], "supervisor", "{auto}");
    assert!(
        auto["action"].as_str().unwrap().starts_with("requeue"),
        "{auto}"
    );
    assert_eq!(auto["why"], "retry-now", "the policy is the reason");
    assert_eq!(auto["queue"], "auto");
    assert_eq!(auto["job_ids"], json!(["au1"]));
    for e in entries {
        has_keys(
            e,
            &[
                "id", "at", "who", "action", "why", "queue", "count", "job_ids",
            ],
        );
        time_of(&e["at"]);
    }

    let two = daemon.get("/api/v1/audit?limit=2").expect(200);
    assert_eq!(two["entries"].as_array().unwrap().len(), 2);
    assert_eq!(two["entries"][0], entries[0]);
}

#[test]
fn no_get_changes_state() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    FailedJob::new("g1").attempts(1).write(&mut con);
    FailedJob::new("g2")
        .queue("emails")
        .exception("ValueError", "bad")
        .write(&mut con);
    FailedJob::new("g3").queue("emails").write(&mut con);
    FailedJob::new("bad")
        .field("ended_at", b"yesterday")
        .write(&mut con);
    FailedJob::new("gone").write(&mut con);
    let _: () = con.del("rq:job:gone").unwrap();
    // Expired entries that RQ's own cleanup would remove: a GET must leave them be.
    FailedJob::new("expired").write(&mut con);
    let _: () = con.zadd("rq:failed:default", "expired", 1_000).unwrap();
    let _: () = con
        .zadd("rq:finished:default", "old-finished", 1_000)
        .unwrap();
    let _: () = con.zadd("rq:wip:default", "old-started", 1_000).unwrap();
    let rq = Rq::rq2();
    let queued = rq.enqueue(&redis.url(), &JobSpec::new("default", "tasks.ok"));
    // An audit entry and a finished task to read back.
    FailedJob::new("to-delete").write(&mut con);
    daemon.delete("/api/v1/jobs/failed/to-delete").expect(200);
    let task = daemon
        .post("/api/v1/jobs/failed/retry-all?queue=nosuch")
        .expect(200)["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The listing and the groups answer from the index the scans build.
    daemon.scan();

    let before = snapshot(&mut con);
    let mut paths: Vec<String> = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/jobs/failed",
        "/api/v1/jobs/failed?queue=emails",
        "/api/v1/jobs/failed?queue=default&limit=1&offset=1",
        "/api/v1/jobs/failed?limit=1000&offset=2",
        "/api/v1/jobs/failed/groups",
        "/api/v1/jobs/failed/groups?queue=emails",
        "/api/v1/jobs/stats",
        "/api/v1/supervisor",
        "/api/v1/policies",
        "/api/v1/audit",
        "/api/v1/audit?limit=1",
        "/api/v1/openapi.json",
        "/api/v1/tasks/nope",
        "/api/v1/no-such-route",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    paths.push(format!("/api/v1/tasks/{task}"));
    for id in [
        "g1",
        "g2",
        "g3",
        "bad",
        "gone",
        "expired",
        "to-delete",
        "nope",
        &queued,
    ] {
        paths.push(format!("/api/v1/jobs/failed/{id}/explain"));
        paths.push(format!("/api/v1/jobs/status/{id}"));
    }
    let mut statuses = BTreeMap::new();
    for path in &paths {
        let r = daemon.get(path);
        assert!(r.status < 500, "GET {path}: {} {}", r.status, r.text());
        statuses.insert(path.clone(), r.status);
    }
    assert_eq!(snapshot(&mut con), before, "some GET changed Redis");
    // Not vacuous: the GETs saw the data.
    let list = daemon.get("/api/v1/jobs/failed").expect(200);
    assert_eq!(
        list["total"], 5,
        "g1, g2, g3, bad, gone (not the expired one): {list}"
    );
    assert_eq!(statuses["/api/v1/jobs/failed/g1/explain"], 200);
    assert_eq!(statuses[&format!("/api/v1/jobs/status/{queued}")], 200);
    assert_eq!(statuses[&format!("/api/v1/tasks/{task}")], 200);
    assert_eq!(snapshot(&mut con), before);
}

#[test]
fn overview_endpoints_answer_with_their_shapes() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    let render = "app.workers.reports.render_report";
    job("o1", "default", render, "ConnectionError", 300).write(&mut con);
    job("o2", "default", render, "ConnectionError", 100).write(&mut con);
    job(
        "o3",
        "emails",
        "app.workers.emails.send_welcome",
        "ValueError",
        50,
    )
    .write(&mut con);
    let o1_failed = ended_at(&mut con, "o1");
    let o2_failed = ended_at(&mut con, "o2");
    let report = daemon.scan();
    assert_eq!(report["report"]["scanned"], 3, "{report}");

    // Groups: by queue, function, exception; counts, oldest/newest, policy.
    let groups = daemon.get("/api/v1/jobs/failed/groups").expect(200);
    assert_eq!(groups["total"], 3, "{groups}");
    let list = groups["groups"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{groups}");
    let g = &list[0];
    assert_eq!(g["queue"], "default");
    assert_eq!(g["func_name"], render);
    assert_eq!(g["exc_type"], "ConnectionError");
    assert_eq!(g["count"], 2);
    assert_eq!(g["policy"], "slow-retry");
    assert_eq!(time_of(&g["oldest_failed_at"]), o1_failed);
    assert_eq!(time_of(&g["newest_failed_at"]), o2_failed);
    assert_eq!(list[1]["queue"], "emails");
    assert_eq!(list[1]["exc_type"], "ValueError");
    assert_eq!(list[1]["policy"], "drop-bad-input");
    assert_eq!(list[1]["count"], 1);
    let emails = daemon
        .get("/api/v1/jobs/failed/groups?queue=emails")
        .expect(200);
    assert_eq!(emails["groups"].as_array().unwrap().len(), 1);

    // Policies in evaluation order.
    let policies = daemon.get("/api/v1/policies").expect(200);
    let p = policies["policies"].as_array().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0]["name"], "slow-retry");
    assert_eq!(p[0]["action"], "retry");
    assert_eq!(p[0]["max_attempts"], 5);
    assert_eq!(p[1]["name"], "drop-bad-input");
    assert_eq!(p[1]["action"], "purge");

    // Explain.
    let explain = daemon.get("/api/v1/jobs/failed/o1/explain").expect(200);
    assert_eq!(explain["job_id"], "o1");
    assert_eq!(explain["policy"], "slow-retry");
    assert_eq!(
        time_of(&explain["next_retry_at"]),
        o1_failed + chrono::Duration::hours(1)
    );

    // Supervisor state with the last scan.
    let state = daemon.get("/api/v1/supervisor").expect(200);
    has_keys(
        &state,
        &[
            "paused",
            "dry_run",
            "redis_connected",
            "started_at",
            "scan_interval_seconds",
            "last_scan",
        ],
    );
    assert_eq!(state["paused"], false);
    assert_eq!(state["dry_run"], false);
    assert_eq!(state["redis_connected"], true);
    assert_eq!(state["scan_interval_seconds"], 3600.0);
    assert_eq!(state["last_scan"], report);
    time_of(&state["last_scan"]["finished_at"]);
    assert!(state["last_scan"]["report"]["duration_ms"].is_u64());

    // Stats shape.
    let stats = daemon.get("/api/v1/jobs/stats").expect(200);
    assert_eq!(stats["failed_count"], 3);
    assert_eq!(
        stats["queues"]["default"],
        json!({"queued": 0, "started": 0, "failed": 2, "finished": 0, "deferred": 0, "scheduled": 0})
    );

    // Health and the OpenAPI document.
    assert_eq!(daemon.get("/healthz").expect(200), json!({"status": "ok"}));
    assert_eq!(
        daemon.get("/readyz").expect(200),
        json!({"status": "ready"})
    );
    let doc = daemon.get("/api/v1/openapi.json").expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/jobs/failed",
        "/api/v1/jobs/failed/{job_id}/retry",
        "/api/v1/jobs/failed/retry-all",
        "/api/v1/jobs/failed/{job_id}",
        "/api/v1/jobs/failed/clear",
        "/api/v1/jobs/status/{job_id}",
        "/api/v1/jobs/stats",
        "/api/v1/jobs/failed/groups",
        "/api/v1/jobs/failed/{job_id}/explain",
        "/api/v1/tasks/{task_id}",
        "/api/v1/supervisor",
        "/api/v1/supervisor/pause",
        "/api/v1/supervisor/resume",
        "/api/v1/supervisor/scan",
        "/api/v1/policies",
        "/api/v1/audit",
        "/api/v1/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Pause / resume / scan

#[test]
fn a_paused_daemon_does_not_requeue_and_resume_plus_scan_requeues_at_once() {
    let (redis, daemon) = start(
        r#"
[[policy]]
name = "retry-after-2s"
exceptions = ["ConnectionError"]
action = "retry"
max_attempts = 3
backoff = { strategy = "fixed", delay = "2s" }
"#,
    );
    let mut con = redis.conn();
    let paused = daemon
        .post("/api/v1/supervisor/pause?reason=deploy%20in%20progress")
        .expect(200);
    assert_eq!(paused["paused"], true);
    let state = daemon.get("/api/v1/supervisor").expect(200);
    assert_eq!(state["paused"], true);
    assert_eq!(state["paused_reason"], "deploy in progress", "{state}");
    let samples = parse_metrics(&daemon.get("/metrics").text());
    assert_eq!(metric(&samples, "rq_retryd_paused", &[]), Some(1.0));

    // Due now, and due 2 s from now (its timer fires while paused).
    FailedJob::new("due-now")
        .failed_secs_ago(30)
        .write(&mut con);
    FailedJob::new("due-soon")
        .failed_secs_ago(0)
        .write(&mut con);
    let report = daemon.scan();
    assert_eq!(report["report"]["requeued"], 0, "{report}");
    std::thread::sleep(Duration::from_secs(4));
    assert!(in_failed(&mut con, "default", "due-now"));
    assert!(in_failed(&mut con, "default", "due-soon"));
    assert!(
        queue_ids(&mut con, "default").is_empty(),
        "paused: nothing requeued"
    );
    assert_eq!(hget(&mut con, "rq:job:due-now", "retryd_attempts"), None);

    let resumed = daemon.post("/api/v1/supervisor/resume").expect(200);
    assert_eq!(resumed["paused"], false);
    assert_eq!(resumed["paused_reason"], Value::Null, "{resumed}");
    let started = Instant::now();
    let report = daemon.scan();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "scan now did not wait for scan_interval (1h)"
    );
    assert_eq!(report["report"]["requeued"], 2, "{report}");
    assert_eq!(
        sorted(queue_ids(&mut con, "default")),
        strings(&["due-now", "due-soon"])
    );
    assert_eq!(
        hget(&mut con, "rq:job:due-now", "retryd_attempts").as_deref(),
        Some("1")
    );
    let samples = parse_metrics(&daemon.get("/metrics").text());
    assert_eq!(metric(&samples, "rq_retryd_paused", &[]), Some(0.0));
}
