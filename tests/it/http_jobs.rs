//! The HTTP API's failed-job listing and single-job routes (retry, delete, status, explain),
//! against a real `redis-server`, with a real `rq-retryd run` on a free loopback port driven over
//! real sockets; failed jobs written byte for byte as RQ leaves them (`support::jobs`) or by real
//! RQ (`support::rq`). Each test owns its Redis and its daemon.
//!
//! See: issue 3 (HTTP control surface and Prometheus metrics); split by resource in issue 12.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use redis::Commands;
use serde_json::{json, Value};

use support::api::*;
use support::http::HANDS_OFF;
use support::jobs::{key_content, snapshot, traceback, FailedJob};
use support::rq::{JobSpec, Rq};

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
        json!({"job_id": id, "queue": "default", "status": "queued", "dry_run": false})
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
    assert_eq!(
        answer,
        json!({"job_id": "doomed", "deleted": true, "dry_run": false})
    );
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
    assert_eq!(
        failed["description"].as_str(),
        hget(&mut con, "rq:job:f1", "description").as_deref()
    );
    assert!(failed["description"].is_string(), "{failed}");

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
    // RQ's own description of the call: what the console's job page shows.
    assert_eq!(ok["description"], "tasks.ok()", "{ok}");
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
            "/api/v1/jobs/failed/retry-all?failed_after=1y",
            "invalid_time",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?failed_after=123456h",
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
    // At the limit the size is accepted, and the body is refused for what it is: no route of
    // the API reads one (see: issue 19, unknown input is refused).
    let body = vec![b'x'; 64 * 1024];
    let r = daemon.raw(
        "POST",
        "/api/v1/jobs/failed/retry-all?dry_run=true",
        &[("Content-Type", "application/octet-stream")],
        &body,
    );
    r.expect_error(400, "unexpected_body");
    assert_eq!(snapshot(&mut con), before, "nothing acted on");
}
