//! The HTTP control surface end to end (issue 3): a real `rq-retryd run` on a free loopback port,
//! driven over real sockets, against a real `redis-server`; failed jobs written byte for byte as
//! RQ leaves them (`support::jobs`) or by real RQ (`support::rq`). Each test owns its Redis and
//! its daemon.
//!
//! See: issue 3 (HTTP control surface and Prometheus metrics).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use redis::Commands;
use serde_json::{json, Value};

use support::http::{enc, metric, parse_metrics, run_to_exit, Daemon, DaemonConfig, HANDS_OFF};
use support::jobs::{key_content, snapshot, traceback, FailedJob};
use support::rq::{JobSpec, Rq};
use support::RedisServer;

/// ConnectionErrors on `default` retried with a long linear backoff (1h + 30m per attempt, no
/// jitter, so `next_retry_at` is exact and nothing becomes due during a test); ValueErrors
/// purged after a week; everything else unmatched.
const SLOW_POLICIES: &str = r#"
[[policy]]
name = "slow-retry"
queues = ["default"]
exceptions = ["ConnectionError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "linear", initial = "1h", step = "30m" }

[[policy]]
name = "drop-bad-input"
exceptions = ["ValueError"]
action = "purge"
purge_after = "7d"
"#;

/// A Redis and a daemon that has finished its startup scan.
fn start(policies: &str) -> (RedisServer, Daemon) {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), policies));
    (redis, daemon)
}

fn job(id: &str, queue: &str, func: &str, exc: &str, secs_ago: i64) -> FailedJob {
    let mut j = FailedJob::new(id)
        .queue(queue)
        .exception(exc, &format!("{id} went wrong"))
        .failed_secs_ago(secs_ago);
    j.func = func.to_string();
    j
}

fn hget(con: &mut redis::Connection, key: &str, field: &str) -> Option<String> {
    con.hget(key, field).unwrap()
}

fn exists(con: &mut redis::Connection, key: &str) -> bool {
    con.exists(key).unwrap()
}

fn in_failed(con: &mut redis::Connection, queue: &str, id: &str) -> bool {
    let score: Option<f64> = con.zscore(format!("rq:failed:{queue}"), id).unwrap();
    score.is_some()
}

fn queue_ids(con: &mut redis::Connection, queue: &str) -> Vec<String> {
    con.lrange(format!("rq:queue:{queue}"), 0, -1).unwrap()
}

/// RQ's `ended_at` of a stored job, as a time.
fn ended_at(con: &mut redis::Connection, id: &str) -> DateTime<Utc> {
    let text = hget(con, &format!("rq:job:{id}"), "ended_at").expect("ended_at");
    NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.fZ")
        .unwrap_or_else(|e| panic!("ended_at {text:?}: {e}"))
        .and_utc()
}

#[track_caller]
fn time_of(v: &Value) -> DateTime<Utc> {
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("not a time string: {v}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

fn ids_in(jobs: &Value) -> Vec<String> {
    jobs.as_array()
        .unwrap_or_else(|| panic!("not an array: {jobs}"))
        .iter()
        .map(|j| j["job_id"].as_str().expect("job_id").to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn keys_of(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Asserts that `v` has at least the `expected` keys.
#[track_caller]
fn has_keys(v: &Value, expected: &[&str]) {
    let keys = keys_of(v);
    for k in expected {
        assert!(keys.iter().any(|have| have == k), "no {k:?} in {v}");
    }
}

/// Stops a test's Redis for good (the server process exits).
fn kill_redis(redis: &RedisServer) {
    let mut con = redis.conn();
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut con);
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .is_ok()
    {
        assert!(Instant::now() < deadline, "redis-server did not shut down");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Listing

#[test]
fn failed_jobs_are_listed_with_paging_a_queue_filter_and_every_field() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    let render = "app.workers.reports.render_report";
    let welcome = "app.workers.emails.send_welcome";
    let mut expected_default = Vec::new();
    for i in 0..7u32 {
        let id = format!("d{i}");
        job(&id, "default", render, "ConnectionError", 100 + i as i64)
            .attempts(i % 3)
            .write(&mut con);
        expected_default.push(id);
    }
    // A traceback of ~100 KB: the listing must carry all of it.
    let long_message = "x".repeat(100_000);
    job("long", "default", render, "ConnectionError", 50)
        .exception("ConnectionError", &long_message)
        .write(&mut con);
    expected_default.push("long".into());
    job("e0", "emails", welcome, "ConnectionError", 300).write(&mut con);
    job("e1", "emails", welcome, "ConnectionError", 301).write(&mut con);
    job("e2", "emails", welcome, "ValueError", 302)
        .attempts(1)
        .write(&mut con);
    let all: BTreeSet<String> = expected_default
        .iter()
        .cloned()
        .chain(strings(&["e0", "e1", "e2"]))
        .collect();

    // The listing answers from the index the scans build.
    daemon.scan();
    // Paging: pages of 3 over 11 jobs, every job exactly once, `total` on every page.
    let mut seen = Vec::new();
    for (offset, size) in [(0, 3), (3, 3), (6, 3), (9, 2), (11, 0), (500, 0)] {
        let page = daemon
            .get(&format!("/api/v1/jobs/failed?limit=3&offset={offset}"))
            .expect(200);
        assert_eq!(page["total"], 11, "offset {offset}: {page}");
        assert_eq!(page["limit"], 3);
        assert_eq!(page["offset"], offset);
        let ids = ids_in(&page["jobs"]);
        assert_eq!(ids.len(), size, "offset {offset}: {ids:?}");
        seen.extend(ids);
    }
    assert_eq!(seen.len(), 11, "{seen:?}");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), all);
    // Default page size holds them all.
    let everything = daemon.get("/api/v1/jobs/failed").expect(200);
    assert_eq!(everything["total"], 11);
    assert_eq!(
        sorted(ids_in(&everything["jobs"])),
        all.iter().cloned().collect::<Vec<_>>()
    );

    // Filtered by queue.
    let emails = daemon.get("/api/v1/jobs/failed?queue=emails").expect(200);
    assert_eq!(emails["total"], 3, "{emails}");
    assert_eq!(
        sorted(ids_in(&emails["jobs"])),
        strings(&["e0", "e1", "e2"])
    );
    let default = daemon
        .get("/api/v1/jobs/failed?queue=default&limit=1000")
        .expect(200);
    assert_eq!(default["total"], 8);
    assert_eq!(sorted(ids_in(&default["jobs"])), sorted(expected_default));
    let none = daemon.get("/api/v1/jobs/failed?queue=nosuch").expect(200);
    assert_eq!(none["total"], 0);
    assert_eq!(none["jobs"], json!([]));

    let by_id: BTreeMap<String, Value> = everything["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["job_id"].as_str().unwrap().to_string(), j.clone()))
        .collect();
    for j in by_id.values() {
        has_keys(
            j,
            &[
                "job_id",
                "queue",
                "func_name",
                "description",
                "exc_info",
                "failed_at",
                "attempts",
                "policy",
                "next_retry_at",
            ],
        );
    }

    // A retried-by-policy job: policy, attempts, failed_at = ended_at, next retry at
    // ended_at + 1h + 30m * attempts.
    let d2 = &by_id["d2"];
    assert_eq!(d2["queue"], "default");
    assert_eq!(d2["func_name"], render);
    assert_eq!(d2["description"], format!("{render}(42, tenant='acme')"));
    assert_eq!(
        d2["exc_info"],
        traceback("ConnectionError", "d2 went wrong"),
        "the whole failure text"
    );
    assert_eq!(d2["attempts"], 2);
    assert_eq!(d2["policy"], "slow-retry");
    let failed_at = ended_at(&mut con, "d2");
    assert_eq!(time_of(&d2["failed_at"]), failed_at);
    assert_eq!(
        time_of(&d2["next_retry_at"]),
        failed_at + chrono::Duration::seconds(3600 + 2 * 1800)
    );
    let d0 = &by_id["d0"];
    assert_eq!(d0["attempts"], 0);
    assert_eq!(
        time_of(&d0["next_retry_at"]),
        ended_at(&mut con, "d0") + chrono::Duration::seconds(3600)
    );

    // The full ~100 KB traceback, not a cut version.
    assert_eq!(
        by_id["long"]["exc_info"],
        traceback("ConnectionError", &long_message)
    );

    // Unmatched: no policy, no retry time. Purge policy: named, no retry time.
    let e0 = &by_id["e0"];
    assert_eq!(e0["func_name"], welcome);
    assert_eq!(e0["policy"], Value::Null);
    assert_eq!(e0["next_retry_at"], Value::Null);
    assert_eq!(e0["attempts"], 0);
    assert_eq!(time_of(&e0["failed_at"]), ended_at(&mut con, "e0"));
    let e2 = &by_id["e2"];
    assert_eq!(e2["policy"], "drop-bad-input");
    assert_eq!(e2["next_retry_at"], Value::Null);
    assert_eq!(e2["attempts"], 1);
    assert_eq!(e2["exc_info"], traceback("ValueError", "e2 went wrong"));
}

// ---------------------------------------------------------------------------------------------
// Single jobs

#[test]
fn retry_one_requeues_into_the_origin_queue_without_counting_an_attempt() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    let id = "3f1c1b1e-9a8b-4c57-9a0e-0d3b1a2b3c4d";
    FailedJob::new(id).attempts(2).write(&mut con);
    FailedJob::new("bystander").write(&mut con);

    let answer = daemon
        .post(&format!("/api/v1/jobs/failed/{id}/retry"))
        .expect(200);
    assert_eq!(
        answer,
        json!({"job_id": id, "queue": "default", "status": "queued"})
    );
    assert_eq!(queue_ids(&mut con, "default"), vec![id.to_string()]);
    assert_eq!(
        hget(&mut con, &format!("rq:job:{id}"), "status").as_deref(),
        Some("queued")
    );
    assert!(!in_failed(&mut con, "default", id));
    assert_eq!(
        hget(&mut con, &format!("rq:job:{id}"), "retryd_attempts").as_deref(),
        Some("2"),
        "a manual retry is not an automatic attempt"
    );
    assert!(
        in_failed(&mut con, "default", "bystander"),
        "only that job moves"
    );

    // RQ itself sees the job queued.
    let rq = Rq::rq2();
    assert_eq!(rq.queued_ids(&redis.url(), "default"), vec![id.to_string()]);
    assert_eq!(rq.status(&redis.url(), id), "queued");

    // The status endpoint agrees.
    let status = daemon.get(&format!("/api/v1/jobs/status/{id}")).expect(200);
    assert_eq!(status["status"], "queued");
    assert_eq!(status["queue"], "default");
    assert_eq!(status["attempts"], 2);

    // Not in a failed registry any more.
    daemon
        .post(&format!("/api/v1/jobs/failed/{id}/retry"))
        .expect_error(404, "not_in_failed_registry");
    assert_eq!(queue_ids(&mut con, "default"), vec![id.to_string()]);
}

#[test]
fn delete_one_removes_the_job_hash_registry_entry_and_results() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    FailedJob::new("doomed").queue("emails").write(&mut con);
    FailedJob::new("keeper").queue("emails").write(&mut con);
    assert!(exists(&mut con, "rq:job:doomed"));
    assert!(exists(&mut con, "rq:results:doomed"));

    let answer = daemon.delete("/api/v1/jobs/failed/doomed").expect(200);
    assert_eq!(answer, json!({"job_id": "doomed", "deleted": true}));
    assert!(!exists(&mut con, "rq:job:doomed"), "hash gone");
    assert!(
        !in_failed(&mut con, "emails", "doomed"),
        "registry entry gone"
    );
    assert!(!exists(&mut con, "rq:results:doomed"), "results gone");
    assert!(exists(&mut con, "rq:job:keeper"));
    assert!(in_failed(&mut con, "emails", "keeper"));

    daemon
        .delete("/api/v1/jobs/failed/doomed")
        .expect_error(404, "not_in_failed_registry");
    daemon
        .get("/api/v1/jobs/status/doomed")
        .expect_error(404, "no_such_job");
}

#[test]
fn job_status_shows_any_job_with_its_full_failure_text() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    FailedJob::new("f1")
        .exception("ConnectionError", &"y".repeat(70_000))
        .attempts(3)
        .write(&mut con);
    let rq = Rq::rq2();
    let queued = rq.enqueue(&redis.url(), &JobSpec::new("work", "tasks.ok"));

    let failed = daemon.get("/api/v1/jobs/status/f1").expect(200);
    has_keys(
        &failed,
        &[
            "job_id",
            "status",
            "queue",
            "enqueued_at",
            "started_at",
            "ended_at",
            "attempts",
            "exc_info",
        ],
    );
    assert_eq!(failed["job_id"], "f1");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["queue"], "default");
    assert_eq!(failed["attempts"], 3);
    assert_eq!(
        failed["exc_info"],
        traceback("ConnectionError", &"y".repeat(70_000))
    );
    assert_eq!(
        failed["ended_at"].as_str(),
        hget(&mut con, "rq:job:f1", "ended_at").as_deref()
    );
    assert!(failed["enqueued_at"].is_string() && failed["started_at"].is_string());

    let ok = daemon
        .get(&format!("/api/v1/jobs/status/{queued}"))
        .expect(200);
    assert_eq!(ok["job_id"], queued.as_str());
    assert_eq!(ok["status"], "queued");
    assert_eq!(ok["queue"], "work");
    assert_eq!(ok["attempts"], 0);
    assert_eq!(ok["exc_info"], Value::Null);
    assert_eq!(ok["ended_at"], Value::Null);
    assert!(ok["enqueued_at"].is_string(), "{ok}");
}

#[test]
fn single_job_routes_answer_404_for_unknown_jobs_and_409_for_corrupt_ones() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    // ended_at garbled: the job cannot be decoded, so it cannot be acted on safely.
    FailedJob::new("corrupt")
        .field("ended_at", b"yesterday")
        .write(&mut con);
    // In a failed registry, but its hash is gone.
    let _: () = con
        .zadd("rq:failed:default", "orphan", 4_000_000_000u64)
        .unwrap();
    // Exists, but queued rather than failed.
    let rq = Rq::rq2();
    let queued = rq.enqueue(&redis.url(), &JobSpec::new("default", "tasks.ok"));

    let before = key_content(&mut con, b"rq:job:corrupt");
    daemon
        .post("/api/v1/jobs/failed/corrupt/retry")
        .expect_error(409, "corrupt_job");
    daemon
        .delete("/api/v1/jobs/failed/corrupt")
        .expect_error(409, "corrupt_job");
    daemon
        .get("/api/v1/jobs/failed/corrupt/explain")
        .expect_error(409, "corrupt_job");
    assert_eq!(
        key_content(&mut con, b"rq:job:corrupt"),
        before,
        "untouched"
    );
    assert!(in_failed(&mut con, "default", "corrupt"));

    for id in ["no-such-job", queued.as_str()] {
        daemon
            .post(&format!("/api/v1/jobs/failed/{id}/retry"))
            .expect_error(404, "not_in_failed_registry");
        daemon
            .delete(&format!("/api/v1/jobs/failed/{id}"))
            .expect_error(404, "not_in_failed_registry");
        daemon
            .get(&format!("/api/v1/jobs/failed/{id}/explain"))
            .expect_error(404, "not_in_failed_registry");
    }
    assert_eq!(rq.status(&redis.url(), &queued), "queued");
    daemon
        .get("/api/v1/jobs/status/no-such-job")
        .expect_error(404, "no_such_job");
    daemon
        .post("/api/v1/jobs/failed/orphan/retry")
        .expect_error(404, "job_missing");
    daemon
        .delete("/api/v1/jobs/failed/orphan")
        .expect_error(404, "job_missing");
    // No route at all: still JSON.
    daemon
        .get("/api/v1/no-such-route")
        .expect_error(404, "no_route");
}

/// `clear` is reserved by `DELETE /api/v1/jobs/failed/clear`; the interface says it is not a
/// valid job id, so the single-job routes must refuse it rather than act on a job named so.
#[test]
fn clear_is_not_a_valid_job_id() {
    let (redis, daemon) = start(HANDS_OFF);
    let mut con = redis.conn();
    FailedJob::new("clear").write(&mut con);
    daemon
        .post("/api/v1/jobs/failed/clear/retry")
        .expect_error(400, "invalid_job_id");
    daemon
        .get("/api/v1/jobs/failed/clear/explain")
        .expect_error(400, "invalid_job_id");
    assert!(in_failed(&mut con, "default", "clear"));
    assert!(queue_ids(&mut con, "default").is_empty());
}

#[test]
fn bad_input_is_a_400_with_a_code_and_never_acts() {
    let (redis, daemon) = start(HANDS_OFF);
    let mut con = redis.conn();
    FailedJob::new("j1").write(&mut con);
    let before = snapshot(&mut con);

    let cases: &[(&str, &str, &str)] = &[
        ("GET", "/api/v1/jobs/failed?limit=0", "invalid_limit"),
        ("GET", "/api/v1/jobs/failed?limit=1001", "invalid_limit"),
        ("GET", "/api/v1/jobs/failed?limit=abc", "invalid_query"),
        ("GET", "/api/v1/jobs/failed?limit=-1", "invalid_query"),
        ("GET", "/api/v1/jobs/failed?offset=-1", "invalid_query"),
        ("GET", "/api/v1/jobs/failed?offset=abc", "invalid_query"),
        (
            "GET",
            "/api/v1/jobs/failed?offset=99999999999999999999999",
            "invalid_query",
        ),
        ("GET", "/api/v1/jobs/failed?queue=", "invalid_queue"),
        ("GET", "/api/v1/audit?limit=0", "invalid_limit"),
        ("GET", "/api/v1/audit?limit=x", "invalid_query"),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?function=%5B",
            "invalid_function",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?function=%5B",
            "invalid_function",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?exception=%5B",
            "invalid_exception",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?failed_before=yesterday",
            "invalid_time",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?failed_after=2026-13-45T99%3A00%3A00Z",
            "invalid_time",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?failed_after=NaN",
            "invalid_time",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?dry_run=maybe",
            "invalid_query",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?wait_ms=30001",
            "invalid_wait",
        ),
        // Not UTF-8 once decoded: no listing can show such an id.
        ("POST", "/api/v1/jobs/failed/j1%FF/retry", "invalid_job_id"),
        ("DELETE", "/api/v1/jobs/failed/%C3", "invalid_job_id"),
        ("GET", "/api/v1/jobs/status/a%FE%FFb", "invalid_job_id"),
        ("GET", "/api/v1/jobs/failed/a%80b/explain", "invalid_job_id"),
    ];
    for (method, path, code) in cases {
        let r = daemon.call(method, path);
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
        r.expect_error(400, code);
    }
    // See: issue 11. Ids RQ 1.x can make (spaces, control characters) and long ones (RQ 2.x
    // sets no length) are ids like any other: not in a failed registry here, so 404.
    let long_id = "a".repeat(300);
    let unusual: &[(&str, String, &str)] = &[
        (
            "POST",
            "/api/v1/jobs/failed/j1%20x/retry".into(),
            "not_in_failed_registry",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/j1%00/retry".into(),
            "not_in_failed_registry",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/j1%20x".into(),
            "not_in_failed_registry",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/%0Aj1".into(),
            "not_in_failed_registry",
        ),
        ("GET", "/api/v1/jobs/status/a%20b".into(), "no_such_job"),
        ("GET", "/api/v1/jobs/status/a%00b".into(), "no_such_job"),
        (
            "GET",
            "/api/v1/jobs/failed/a%09b/explain".into(),
            "not_in_failed_registry",
        ),
        (
            "GET",
            format!("/api/v1/jobs/status/{long_id}"),
            "no_such_job",
        ),
    ];
    for (method, path, code) in unusual {
        daemon.call(method, path).expect_error(404, code);
    }
    assert_eq!(
        snapshot(&mut con),
        before,
        "a refused request wrote nothing"
    );
}

#[test]
fn bodies_over_64_kib_are_refused_with_413() {
    let (redis, daemon) = start(HANDS_OFF);
    let mut con = redis.conn();
    FailedJob::new("j1").write(&mut con);
    daemon.scan();
    let before = snapshot(&mut con);
    // Declared over the limit: refused before the body is read (so none is sent).
    for (method, path) in [
        ("POST", "/api/v1/jobs/failed/retry-all"),
        ("POST", "/api/v1/jobs/failed/j1/retry"),
        ("DELETE", "/api/v1/jobs/failed/clear"),
        ("POST", "/api/v1/supervisor/pause"),
    ] {
        daemon
            .raw(method, path, &[("Content-Length", "65537")], b"")
            .expect_error(413, "payload_too_large");
        daemon
            .raw(method, path, &[("Content-Length", "10000000")], b"")
            .expect_error(413, "payload_too_large");
    }
    assert_eq!(snapshot(&mut con), before, "nothing acted on");
    assert_eq!(
        daemon.get("/api/v1/supervisor").expect(200)["paused"],
        false
    );
    // At the limit it is accepted.
    let body = vec![b'x'; 64 * 1024];
    let r = daemon.raw(
        "POST",
        "/api/v1/jobs/failed/retry-all?dry_run=true",
        &[("Content-Type", "application/octet-stream")],
        &body,
    );
    assert_eq!(r.expect(200)["matched_count"], 1);
}

// ---------------------------------------------------------------------------------------------
// Auth

/// Every route of `src/http/mod.rs` that lives under `/api/`, with a method it serves, but
/// `/api/v1/openapi.json`: the API's description is open so that `/docs` can load it (issue 13).
const API_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/jobs/failed"),
    ("GET", "/api/v1/jobs/failed/groups"),
    ("POST", "/api/v1/jobs/failed/retry-all"),
    ("DELETE", "/api/v1/jobs/failed/clear"),
    ("DELETE", "/api/v1/jobs/failed/j1"),
    ("POST", "/api/v1/jobs/failed/j1/retry"),
    ("GET", "/api/v1/jobs/failed/j1/explain"),
    ("GET", "/api/v1/jobs/status/j1"),
    ("GET", "/api/v1/jobs/stats"),
    ("GET", "/api/v1/tasks/1-1"),
    ("GET", "/api/v1/supervisor"),
    ("POST", "/api/v1/supervisor/pause"),
    ("POST", "/api/v1/supervisor/resume"),
    ("POST", "/api/v1/supervisor/scan"),
    ("GET", "/api/v1/policies"),
    ("GET", "/api/v1/audit"),
];

#[test]
fn with_a_token_every_api_route_needs_it_and_health_and_metrics_stay_open() {
    let redis = RedisServer::start();
    let token = "tok-7d1f0c5e2b9a4c3d8e6f";
    let mut config = DaemonConfig::new(&redis.url(), HANDS_OFF);
    config.auth_token = Some(token.into());
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    let mut con = redis.conn();
    FailedJob::new("j1").write(&mut con);
    let before = snapshot(&mut con);

    let good = format!("Bearer {token}");
    let basic = format!("Basic {token}");
    let wrong_headers: [Vec<(&str, &str)>; 5] = [
        vec![],
        vec![("Authorization", "Bearer not-the-token")],
        vec![("Authorization", basic.as_str())],
        vec![("Authorization", token)],
        vec![("Authorization", "Bearer ")],
    ];
    for (method, path) in API_ROUTES {
        for headers in &wrong_headers {
            let r = daemon.raw(method, path, headers, b"");
            assert_eq!(r.status, 401, "{method} {path} {headers:?}: {}", r.text());
            r.expect_error(401, "unauthorized");
        }
    }
    assert_eq!(snapshot(&mut con), before, "a 401 acts on nothing");
    let state = daemon
        .raw(
            "GET",
            "/api/v1/supervisor",
            &[("Authorization", &good)],
            b"",
        )
        .expect(200);
    assert_eq!(state["paused"], false, "an unauthorized pause was ignored");

    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/docs",
    ] {
        let r = daemon.raw("GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path} without a token: {}", r.text());
    }
    // With the token the routes answer (anything but 401).
    for (method, path) in API_ROUTES {
        let r = daemon.raw(method, path, &[("Authorization", &good)], b"");
        assert_ne!(
            r.status,
            401,
            "{method} {path} with the token: {}",
            r.text()
        );
        assert!(r.status < 500, "{method} {path}: {} {}", r.status, r.text());
    }
}

#[test]
fn a_non_loopback_listen_without_a_token_refuses_to_start_with_exit_2() {
    let redis = RedisServer::start();
    let port = support::free_port();
    let toml = format!(
        "[redis]\nurl = \"{}\"\n[http]\nlisten = \"0.0.0.0:{port}\"\n{HANDS_OFF}",
        redis.url()
    );
    let (code, log) = run_to_exit(&toml);
    assert_eq!(code, 2, "exit code; output:\n{log}");
    assert!(
        log.contains("non-loopback") && log.contains("auth_token"),
        "the message says why:\n{log}"
    );
    assert!(
        log.contains("http.listen") || log.contains("listen"),
        "names the key:\n{log}"
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        support::http::try_request(addr, "GET", "/healthz", &[], b"").is_err(),
        "nothing listens"
    );
}

#[test]
fn a_token_from_auth_token_file_guards_a_non_loopback_listen_and_is_never_logged() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let token = "Zq8fileToken4e1b9c7d2a6f";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut config = DaemonConfig::new(&redis.url(), SLOW_POLICIES);
    config.listen_host = Some("0.0.0.0".into());
    config.auth_token_file = Some(token_file);
    config.log_level = "trace".into();
    let daemon = Daemon::start_ready(&config);
    let mut con = redis.conn();
    FailedJob::new("j1").write(&mut con);
    FailedJob::new("j2").write(&mut con);

    daemon
        .raw("GET", "/api/v1/jobs/stats", &[], b"")
        .expect_error(401, "unauthorized");
    daemon
        .raw(
            "GET",
            "/api/v1/jobs/stats",
            &[("Authorization", "Bearer Zq8wrong")],
            b"",
        )
        .expect_error(401, "unauthorized");
    // Exercise the paths that log: manual actions, switches, a scan.
    assert_eq!(
        daemon.get("/api/v1/jobs/stats").expect(200)["failed_count"],
        2
    );
    daemon.post("/api/v1/jobs/failed/j1/retry").expect(200);
    daemon.delete("/api/v1/jobs/failed/j2").expect(200);
    daemon.post("/api/v1/supervisor/pause").expect(200);
    daemon.post("/api/v1/supervisor/resume").expect(200);
    daemon.scan();

    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "SIGTERM exits 0:\n{log}");
    assert!(
        log.contains("rq-retryd starting") && log.contains("manual action"),
        "the log was captured (else the next check proves nothing):\n{log}"
    );
    assert!(
        !log.contains(token) && !log.contains("Zq8"),
        "the token appears in the log:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Redis down

#[test]
fn readyz_and_api_routes_answer_503_once_redis_is_gone() {
    let (redis, daemon) = start(HANDS_OFF);
    let mut con = redis.conn();
    FailedJob::new("j1").write(&mut con);
    drop(con);
    assert_eq!(
        daemon.get("/readyz").expect(200),
        json!({"status": "ready"})
    );
    kill_redis(&redis);

    daemon.get("/readyz").expect_error(503, "redis_unavailable");
    for (method, path) in [
        ("GET", "/api/v1/jobs/failed"),
        ("GET", "/api/v1/jobs/stats"),
        ("POST", "/api/v1/jobs/failed/j1/retry"),
        ("POST", "/api/v1/jobs/failed/retry-all"),
        ("GET", "/api/v1/audit"),
    ] {
        let r = daemon.call(method, path);
        assert_eq!(r.status, 503, "{method} {path}: {}", r.text());
        r.expect_error(503, "redis_unavailable");
    }
    // The process itself is alive.
    assert_eq!(daemon.get("/healthz").expect(200), json!({"status": "ok"}));
}

#[test]
fn a_daemon_started_before_redis_answers_503_until_redis_is_up() {
    let port = support::free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let daemon = Daemon::start(&DaemonConfig::new(&url, HANDS_OFF));

    daemon.get("/healthz").expect(200);
    daemon.get("/readyz").expect_error(503, "redis_unavailable");
    for (method, path) in [
        ("GET", "/api/v1/jobs/failed"),
        ("GET", "/api/v1/jobs/stats"),
        ("GET", "/api/v1/jobs/status/j1"),
        ("POST", "/api/v1/jobs/failed/j1/retry"),
        ("DELETE", "/api/v1/jobs/failed/clear"),
        ("GET", "/api/v1/audit"),
    ] {
        daemon
            .call(method, path)
            .expect_error(503, "redis_unavailable");
    }
    let state = daemon.get("/api/v1/supervisor").expect(200);
    assert_eq!(state["redis_connected"], false, "{state}");

    // Now Redis comes up on the configured port: the daemon connects by itself.
    let dir = tempfile::tempdir().unwrap();
    let mut server = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start redis-server");
    struct KillOnDrop<'a>(&'a mut std::process::Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = KillOnDrop(&mut server);
    daemon.wait_ready();
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    FailedJob::new("j1").write(&mut con);
    let stats = daemon.get("/api/v1/jobs/stats").expect(200);
    assert_eq!(stats["failed_count"], 1, "{stats}");
    daemon.get("/api/v1/jobs/failed").expect(200);
    assert_eq!(
        daemon.get("/api/v1/supervisor").expect(200)["redis_connected"],
        true
    );
}

/// A Redis with no queues at all (a fresh install): stats are empty, not an error.
#[test]
fn stats_of_a_redis_without_queues_are_empty_not_an_error() {
    let (_redis, daemon) = start(HANDS_OFF);
    let list = daemon.get("/api/v1/jobs/failed").expect(200);
    assert_eq!(list["total"], 0, "{list}");
    let groups = daemon.get("/api/v1/jobs/failed/groups").expect(200);
    assert_eq!(groups["groups"], json!([]), "{groups}");
    let stats = daemon.get("/api/v1/jobs/stats").expect(200);
    assert_eq!(stats, json!({"failed_count": 0, "queues": {}}));
}

// ---------------------------------------------------------------------------------------------
// Bulk actions

/// Six decodable failed jobs and one corrupt one; returns a cutoff between the old and the
/// recent ones (unix seconds).
///
/// | id | queue  | function                | exception                     | failed |
/// |----|--------|-------------------------|-------------------------------|--------|
/// | a1 | default| ...reports.render_report| ConnectionError               | recent |
/// | a2 | default| ...reports.render_report| ConnectionError               | recent |
/// | a3 | default| ...reports.render_report| ValueError                    | old    |
/// | b1 | emails | ...emails.send_welcome  | ConnectionError               | old    |
/// | b2 | emails | ...emails.send_welcome  | smtplib.SMTPServerDisconnected| recent |
/// | b3 | emails | ...emails.send_welcome  | ValueError                    | recent |
/// | c  | default| (corrupt: ended_at garbled)  |                             |        |
fn seed_selection(con: &mut redis::Connection) -> i64 {
    let render = "app.workers.reports.render_report";
    let welcome = "app.workers.emails.send_welcome";
    job("a1", "default", render, "ConnectionError", 100).write(con);
    job("a2", "default", render, "ConnectionError", 120).write(con);
    job("a3", "default", render, "ValueError", 10_000).write(con);
    job("b1", "emails", welcome, "ConnectionError", 10_000).write(con);
    job(
        "b2",
        "emails",
        welcome,
        "smtplib.SMTPServerDisconnected",
        100,
    )
    .write(con);
    job("b3", "emails", welcome, "ValueError", 100).write(con);
    FailedJob::new("c")
        .field("ended_at", b"yesterday")
        .write(con);
    Utc::now().timestamp() - 1_000
}

fn rfc3339(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0).unwrap().to_rfc3339()
}

#[test]
fn dry_runs_answer_the_selection_by_every_filter_and_write_nothing() {
    let (redis, daemon) = start(HANDS_OFF);
    let mut con = redis.conn();
    let cutoff = seed_selection(&mut con);
    // Dry runs count from the index the scans build.
    daemon.scan();
    let before = snapshot(&mut con);

    let cases: Vec<(&str, String, Vec<&str>, Value)> = vec![
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?dry_run=true".into(),
            vec!["a1", "a2", "a3", "b1", "b2", "b3"],
            json!({"ConnectionError": 3, "ValueError": 2, "smtplib.SMTPServerDisconnected": 1}),
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?dry_run=true&queue=emails".into(),
            vec!["b1", "b2", "b3"],
            json!({"ConnectionError": 1, "ValueError": 1, "smtplib.SMTPServerDisconnected": 1}),
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?dry_run=true&function=app.workers.emails.%2A".into(),
            vec!["b1", "b2", "b3"],
            json!({"ConnectionError": 1, "ValueError": 1, "smtplib.SMTPServerDisconnected": 1}),
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?dry_run=true&function=%2Arender_report".into(),
            vec!["a1", "a2", "a3"],
            json!({"ConnectionError": 2, "ValueError": 1}),
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?dry_run=true&exception=ValueError".into(),
            vec!["a3", "b3"],
            json!({"ValueError": 2}),
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?dry_run=true&exception=SMTPServerDisconnected".into(),
            vec!["b2"],
            json!({"smtplib.SMTPServerDisconnected": 1}),
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?dry_run=true&exception=smtplib.SMTPServerDisconnected"
                .into(),
            vec!["b2"],
            json!({"smtplib.SMTPServerDisconnected": 1}),
        ),
        (
            "POST",
            format!("/api/v1/jobs/failed/retry-all?dry_run=true&failed_before={cutoff}"),
            vec!["a3", "b1"],
            json!({"ConnectionError": 1, "ValueError": 1}),
        ),
        (
            "DELETE",
            format!(
                "/api/v1/jobs/failed/clear?dry_run=true&failed_after={}",
                enc(&rfc3339(cutoff))
            ),
            vec!["a1", "a2", "b2", "b3"],
            json!({"ConnectionError": 2, "ValueError": 1, "smtplib.SMTPServerDisconnected": 1}),
        ),
        (
            "POST",
            format!(
                "/api/v1/jobs/failed/retry-all?dry_run=true&queue=default&exception=ConnectionError&failed_after={cutoff}"
            ),
            vec!["a1", "a2"],
            json!({"ConnectionError": 2}),
        ),
        (
            "DELETE",
            format!(
                "/api/v1/jobs/failed/clear?dry_run=true&failed_before={}&failed_after={}",
                cutoff,
                cutoff + 500
            ),
            vec![],
            json!({}),
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?dry_run=true&queue=nosuch".into(),
            vec![],
            json!({}),
        ),
    ];
    for (method, path, ids, by_exception) in &cases {
        let r = daemon.call(method, path);
        let body = r.expect(200);
        assert_eq!(body["state"], "done", "{path}: {body}");
        assert_eq!(body["dry_run"], true, "{path}: {body}");
        assert_eq!(body["matched_count"], ids.len(), "{path}: {body}");
        let mut got: Vec<String> = body["job_ids"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: no job_ids in {body}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        got.sort();
        assert_eq!(got, strings(ids), "{path}: {body}");
        assert_eq!(&body["by_exception"], by_exception, "{path}: {body}");
        let count_field = if *method == "POST" {
            "requeued_count"
        } else {
            "deleted_count"
        };
        assert_eq!(
            body[count_field], 0,
            "{path}: a dry run acts on nothing: {body}"
        );
    }
    assert_eq!(
        snapshot(&mut con),
        before,
        "a dry run writes nothing, not even an audit entry"
    );
    assert!(!exists(&mut con, "rq:retryd:audit"));
    assert_eq!(
        daemon.get("/api/v1/audit").expect(200),
        json!({"entries": []})
    );
}

#[test]
fn retry_all_and_clear_act_on_exactly_the_selection() {
    let (redis, daemon) = start(HANDS_OFF);
    let mut con = redis.conn();
    let cutoff = seed_selection(&mut con);

    // One queue, one exception type.
    let r = daemon
        .post("/api/v1/jobs/failed/retry-all?queue=emails&exception=ConnectionError")
        .expect(200);
    assert_eq!(r["requeued_count"], 1, "{r}");
    assert_eq!(r["matched_count"], 1, "{r}");
    assert_eq!(r["state"], "done");
    assert_eq!(queue_ids(&mut con, "emails"), strings(&["b1"]));
    assert_eq!(
        hget(&mut con, "rq:job:b1", "status").as_deref(),
        Some("queued")
    );
    for id in ["b2", "b3"] {
        assert!(in_failed(&mut con, "emails", id), "{id} stays");
    }

    // Clear by function glob and failure time.
    let r = daemon
        .delete(&format!(
            "/api/v1/jobs/failed/clear?function=app.workers.reports.%2A&failed_after={cutoff}"
        ))
        .expect(200);
    assert_eq!(r["deleted_count"], 2, "{r}");
    for id in ["a1", "a2"] {
        assert!(!exists(&mut con, &format!("rq:job:{id}")), "{id} deleted");
        assert!(!in_failed(&mut con, "default", id));
    }
    assert!(
        in_failed(&mut con, "default", "a3"),
        "a3 failed before the cutoff"
    );

    // Everything left; the corrupt job is skipped, never touched.
    let corrupt = key_content(&mut con, b"rq:job:c");
    let r = daemon.post("/api/v1/jobs/failed/retry-all").expect(200);
    assert_eq!(r["requeued_count"], 3, "a3, b2, b3: {r}");
    assert_eq!(r["skipped"], 1, "{r}");
    assert_eq!(queue_ids(&mut con, "default"), strings(&["a3"]));
    assert_eq!(
        sorted(queue_ids(&mut con, "emails")),
        strings(&["b1", "b2", "b3"])
    );
    let r = daemon.delete("/api/v1/jobs/failed/clear").expect(200);
    assert_eq!(r["deleted_count"], 0, "{r}");
    assert_eq!(r["skipped"], 1, "{r}");
    assert_eq!(key_content(&mut con, b"rq:job:c"), corrupt);
    assert!(in_failed(&mut con, "default", "c"));

    // `queue=` on clear.
    FailedJob::new("x1").queue("other").write(&mut con);
    FailedJob::new("x2").queue("other").write(&mut con);
    FailedJob::new("y1").queue("keep").write(&mut con);
    let r = daemon
        .delete("/api/v1/jobs/failed/clear?queue=other")
        .expect(200);
    assert_eq!(r["deleted_count"], 2, "{r}");
    assert!(in_failed(&mut con, "keep", "y1"));
    assert_eq!(
        daemon.get("/api/v1/jobs/stats").expect(200)["failed_count"],
        2,
        "c and y1 are left"
    );

    let samples = parse_metrics(&daemon.get("/metrics").text());
    let manual = |family: &str, queue: &str| {
        metric(
            &samples,
            family,
            &[
                ("queue", queue),
                ("policy", "manual"),
                ("trigger", "manual"),
            ],
        )
    };
    assert_eq!(manual("rq_retryd_requeued_total", "emails"), Some(3.0));
    assert_eq!(manual("rq_retryd_requeued_total", "default"), Some(1.0));
    assert_eq!(manual("rq_retryd_purged_total", "default"), Some(2.0));
    assert_eq!(manual("rq_retryd_purged_total", "other"), Some(2.0));
}

#[test]
fn a_bulk_action_with_wait_ms_0_answers_202_and_its_task_reaches_done() {
    let redis = RedisServer::start();
    let mut config = DaemonConfig::new(&redis.url(), HANDS_OFF);
    config.batch_size = 100;
    config.max_requeues_per_second = 400;
    let daemon = Daemon::start_ready(&config);
    let mut con = redis.conn();
    for i in 0..600 {
        FailedJob::new(&format!("bulk-{i:04}"))
            .queue("bulk")
            .write(&mut con);
    }

    let r = daemon.post("/api/v1/jobs/failed/retry-all?queue=bulk&wait_ms=0");
    let accepted = r.expect(202);
    assert_eq!(accepted["state"], "running", "{accepted}");
    assert_eq!(accepted["action"], "retry-all");
    let task_id = accepted["task_id"].as_str().expect("task_id").to_string();
    assert!(!task_id.is_empty());

    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let t = daemon.get(&format!("/api/v1/tasks/{task_id}")).expect(200);
        assert_eq!(t["task_id"], task_id.as_str());
        if t["state"] == "done" {
            break t;
        }
        assert_eq!(t["state"], "running", "{t}");
        assert!(Instant::now() < deadline, "task still running: {t}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["requeued_count"], 600, "{done}");
    assert_eq!(done["matched_count"], 600, "{done}");
    assert_eq!(done["conflicts"], 0, "{done}");
    assert!(done["finished_at"].is_string(), "{done}");
    let llen: u64 = con.llen("rq:queue:bulk").unwrap();
    assert_eq!(llen, 600);
    let left: u64 = con.zcard("rq:failed:bulk").unwrap();
    assert_eq!(left, 0);

    daemon
        .get("/api/v1/tasks/no-such-task")
        .expect_error(404, "no_such_task");
}

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
    let client = |e: &Value| {
        let who = e["who"].as_str().unwrap();
        who.starts_with("127.0.0.1:") && who["127.0.0.1:".len()..].parse::<u16>().is_ok()
    };
    // Newest first.
    let bulk = &entries[0];
    assert!(client(bulk), "{bulk}");
    assert_eq!(bulk["action"], "requeue");
    assert_eq!(bulk["why"], "POST /api/v1/jobs/failed/retry-all");
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
    let paused = daemon.post("/api/v1/supervisor/pause").expect(200);
    assert_eq!(paused["paused"], true);
    assert_eq!(daemon.get("/api/v1/supervisor").expect(200)["paused"], true);
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
