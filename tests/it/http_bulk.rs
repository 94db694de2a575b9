//! The HTTP API's bulk actions (retry-all, clear, dry runs, tasks), against a real `redis-server`,
//! with a real `rq-retryd run` on a free loopback port driven over real sockets; failed jobs
//! written byte for byte as RQ leaves them (`support::jobs`) or by real RQ (`support::rq`). Each
//! test owns its Redis and its daemon.
//!
//! See: issue 3 (HTTP control surface and Prometheus metrics); split by resource in issue 12.

use crate::support;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::Commands;
use serde_json::{json, Value};

use support::api::*;
use support::http::{enc, metric, parse_metrics, Daemon, DaemonConfig, HANDS_OFF};
use support::jobs::{key_content, snapshot, FailedJob};
use support::RedisServer;

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
        // Times ago, as a person types them (jobs failed 100 and 120 s, and 10,000 s ago).
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?dry_run=true&failed_after=17m".into(),
            vec!["a1", "a2", "b2", "b3"],
            json!({"ConnectionError": 2, "ValueError": 1, "smtplib.SMTPServerDisconnected": 1}),
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?dry_run=true&failed_before=1h".into(),
            vec!["a3", "b1"],
            json!({"ConnectionError": 1, "ValueError": 1}),
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
        // Answered from the index, a dry run also counts by state (issue 22, item 8): here
        // the hands-off policy ignores every decodable job.
        let by_state = if ids.is_empty() {
            json!({})
        } else {
            json!({ "ignored": ids.len() })
        };
        assert_eq!(body["by_state"], by_state, "{path}: {body}");
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
        json!({"entries": [], "next_cursor": null, "searched": 0, "stream_len": 0})
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

/// The ids the listing shows for `filters` (every page of them), sorted.
fn listed(daemon: &Daemon, filters: &str) -> Vec<String> {
    let page = daemon
        .get(&format!("/api/v1/jobs/failed?limit=1000&{filters}"))
        .expect(200);
    sorted(ids_in(&page["jobs"]))
}

/// The ids a dry run names for `filters`, sorted.
fn dry_run_ids(daemon: &Daemon, method: &str, path: &str, filters: &str) -> Vec<String> {
    let body = daemon
        .call(method, &format!("{path}?dry_run=true&{filters}"))
        .expect(200);
    assert_eq!(body["state"], "done", "{filters}: {body}");
    assert_eq!(body["job_ids_truncated"], false, "{filters}: {body}");
    let ids: Vec<String> = body["job_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("{filters}: no job_ids in {body}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(body["matched_count"], ids.len(), "{filters}: {body}");
    sorted(ids)
}

#[test]
fn bulk_takes_every_state_and_policy_the_listing_takes_and_selects_what_it_lists() {
    // See: issue 20 (bulk lacked `policy` and `state`; the console disabled its buttons).
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    // a1, a2: slow-retry, waiting; a3, b3: drop-bad-input, waiting; b1, b2: unmatched;
    // c: undecodable.
    seed_selection(&mut con);
    daemon.scan();
    let before = snapshot(&mut con);

    let states = [
        "due",
        "waiting",
        "exhausted",
        "unmatched",
        "ignored",
        "stopped",
        "succeeded",
        "held",
    ];
    let mut selections: Vec<String> = states.iter().map(|s| format!("state={s}")).collect();
    selections.extend(
        [
            "policy=slow-retry",
            "policy=drop-bad-input",
            "policy=nosuch",
            "policy=drop-bad-input&state=waiting&queue=emails",
            "policy=slow-retry&state=unmatched",
            "state=unmatched&exception=ConnectionError",
        ]
        .map(String::from),
    );
    for filters in &selections {
        let shown = listed(&daemon, filters);
        for (method, path) in [
            ("POST", "/api/v1/jobs/failed/retry-all"),
            ("DELETE", "/api/v1/jobs/failed/clear"),
        ] {
            assert_eq!(
                dry_run_ids(&daemon, method, path, filters),
                shown,
                "{method} {path} with {filters} selects what the listing shows"
            );
        }
    }
    assert_eq!(
        listed(&daemon, "state=waiting"),
        strings(&["a1", "a2", "a3", "b3"])
    );
    assert_eq!(listed(&daemon, "state=unmatched"), strings(&["b1", "b2"]));
    assert_eq!(listed(&daemon, "policy=slow-retry"), strings(&["a1", "a2"]));

    // The listing shows undecodable jobs; a bulk action takes the filter and never touches
    // them: it selects none and counts them as skipped.
    assert_eq!(listed(&daemon, "state=undecodable"), strings(&["c"]));
    let r = daemon
        .delete("/api/v1/jobs/failed/clear?dry_run=true&state=undecodable")
        .expect(200);
    assert_eq!(
        (r["matched_count"].clone(), r["skipped"].clone()),
        (json!(0), json!(1)),
        "{r}"
    );
    assert_eq!(snapshot(&mut con), before, "dry runs write nothing");
}

#[test]
fn retry_all_and_clear_by_state_and_policy_touch_exactly_the_listed_jobs() {
    // See: issue 20.
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    seed_selection(&mut con);
    daemon.scan();

    let shown = listed(&daemon, "state=unmatched");
    assert_eq!(shown, strings(&["b1", "b2"]));
    let r = daemon
        .delete("/api/v1/jobs/failed/clear?state=unmatched")
        .expect(200);
    assert_eq!(r["deleted_count"], shown.len(), "{r}");
    assert_eq!(r["matched_count"], shown.len(), "{r}");
    for id in &shown {
        assert!(!exists(&mut con, &format!("rq:job:{id}")), "{id} deleted");
    }
    for id in ["a1", "a2", "a3", "b3", "c"] {
        assert!(exists(&mut con, &format!("rq:job:{id}")), "{id} stays");
    }

    let shown = listed(&daemon, "policy=slow-retry&state=waiting");
    assert_eq!(shown, strings(&["a1", "a2"]));
    let r = daemon
        .post("/api/v1/jobs/failed/retry-all?policy=slow-retry&state=waiting")
        .expect(200);
    assert_eq!(r["requeued_count"], shown.len(), "{r}");
    assert_eq!(sorted(queue_ids(&mut con, "default")), shown);
    assert!(in_failed(&mut con, "default", "a3"), "drop-bad-input stays");
    assert!(in_failed(&mut con, "emails", "b3"), "drop-bad-input stays");

    // The audit says what was selected.
    let audit = daemon.get("/api/v1/audit").expect(200).to_string();
    assert!(
        audit.contains("clear?state=unmatched"),
        "the audit names the selection: {audit}"
    );
    assert!(
        audit.contains("retry-all?policy=slow-retry&state=waiting"),
        "the audit names the selection: {audit}"
    );
}

#[test]
fn a_misspelt_or_unknown_bulk_filter_is_refused_and_nothing_is_touched() {
    // See: issues 19 and 20: a filter dropped on the way selects everything.
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    seed_selection(&mut con);
    daemon.scan();
    let before = snapshot(&mut con);
    for (method, path, code) in [
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?stat=due",
            "unknown_parameter",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?State=waiting",
            "unknown_parameter",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?polcy=slow-retry",
            "unknown_parameter",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?policies=slow-retry",
            "unknown_parameter",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?state=sleepy",
            "invalid_query",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?state=",
            "invalid_query",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?policy=",
            "invalid_policy",
        ),
    ] {
        daemon.call(method, path).expect_error(400, code);
        // The listing refuses the same.
        let listing = path.replace("/retry-all", "").replace("/clear", "");
        daemon.get(&listing).expect_error(400, code);
    }
    assert_eq!(snapshot(&mut con), before, "nothing touched");
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
