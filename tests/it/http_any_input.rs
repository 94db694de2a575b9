//! What people send (issue 19): a job may be named anything RQ allows (`clear`, `groups`,
//! `retry-all`, `%`, `/`, spaces, non-ASCII) and each is reached alone; a misspelt parameter, a
//! flag in the wrong case, a value the OpenAPI document does not admit or a body the route does
//! not read is refused with nothing changed; `dry_run` is honoured wherever it is sent; and a
//! bulk action cut short by Redis says what it did. Against a real `redis-server` and a real
//! `rq-retryd run`.

use crate::support;

use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::Value;

use support::api::*;
use support::http::{request, Daemon, DaemonConfig};
use support::RedisServer;

/// Percent-encodes every byte of `text` but RFC 3986's unreserved characters, as a client
/// must for a path segment.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn failed_count(con: &mut redis::Connection, queues: &[&str]) -> usize {
    queues
        .iter()
        .map(|q| {
            let n: usize = con.zcard(format!("rq:failed:{q}")).unwrap();
            n
        })
        .sum()
}

/// Names that are routes elsewhere, characters that need encoding, and text beyond ASCII.
const AWKWARD_IDS: &[&str] = &[
    "clear",
    "groups",
    "retry-all",
    "stats",
    "explain",
    "retry",
    "50%",
    "%2F",
    "a/b",
    "x:y",
    "with space",
    "jöb-ジョブ",
];

#[test]
fn every_job_is_reached_alone_whatever_its_id_and_a_job_named_clear_is_deleted_alone() {
    // See: issue 19 (deleting a job named `clear` purged 167 jobs in 4 queues).
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    for (i, id) in AWKWARD_IDS.iter().enumerate() {
        job(
            id,
            "default",
            "app.tasks.charge",
            "ConnectionError",
            100 + i as i64,
        )
        .write(&mut con);
    }
    for i in 0..10 {
        job(
            &format!("other{i}"),
            "emails",
            "app.tasks.send",
            "ValueError",
            50,
        )
        .write(&mut con);
    }
    let queues = ["default", "emails"];
    let total = AWKWARD_IDS.len() + 10;
    assert_eq!(failed_count(&mut con, &queues), total);
    daemon.scan();

    // The listing shows every id exactly.
    let listed = daemon.get("/api/v1/jobs/failed?limit=1000").expect(200);
    let mut ids = ids_in(&listed["jobs"]);
    ids.retain(|id| !id.starts_with("other"));
    assert_eq!(sorted(ids), sorted(strings(AWKWARD_IDS)));

    // Each is explained as itself.
    for id in AWKWARD_IDS {
        let answer = daemon
            .get(&format!("/api/v1/failed-jobs/{}/explain", segment(id)))
            .expect(200);
        assert_eq!(answer["job_id"], *id, "{answer}");
    }

    // Deleting the job named `clear` deletes that job and nothing else.
    let deleted = daemon
        .delete(&format!("/api/v1/failed-jobs/{}", segment("clear")))
        .expect(200);
    assert_eq!(deleted["job_id"], "clear");
    assert_eq!(deleted["deleted"], true);
    assert!(!exists(&mut con, "rq:job:clear"));
    assert_eq!(failed_count(&mut con, &queues), total - 1);

    // The others alternately retried and deleted, each alone.
    let mut left = total - 1;
    for (i, id) in AWKWARD_IDS.iter().skip(1).enumerate() {
        if i % 2 == 0 {
            let answer = daemon
                .post(&format!("/api/v1/failed-jobs/{}/retry", segment(id)))
                .expect(200);
            assert_eq!(answer["job_id"], *id, "{answer}");
            assert_eq!(answer["status"], "queued");
            assert!(
                queue_ids(&mut con, "default").iter().any(|q| q == id),
                "{id}"
            );
            assert_eq!(
                hget(&mut con, &format!("rq:job:{id}"), "status").as_deref(),
                Some("queued")
            );
        } else {
            let answer = daemon
                .delete(&format!("/api/v1/failed-jobs/{}", segment(id)))
                .expect(200);
            assert_eq!(answer["job_id"], *id, "{answer}");
            assert!(!exists(&mut con, &format!("rq:job:{id}")), "{id}");
        }
        left -= 1;
        assert!(!in_failed(&mut con, "default", id), "{id}");
        assert_eq!(failed_count(&mut con, &queues), left, "after {id}");
    }
    // The emails queue was never touched.
    assert_eq!(failed_count(&mut con, &["emails"]), 10);
    // The job that is gone is a 404, not a bulk action.
    daemon
        .delete("/api/v1/failed-jobs/clear")
        .expect_error(404, "not_in_failed_registry");
    assert_eq!(failed_count(&mut con, &["emails"]), 10);
}

#[test]
fn the_original_single_job_routes_keep_working_for_every_id_they_can_reach() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    for id in ["clear", "plain", "a/b"] {
        job(id, "default", "app.tasks.charge", "ConnectionError", 100).write(&mut con);
    }
    daemon.scan();
    // Retry and explain of a job named `clear` go through the original routes too (only the
    // DELETE path is the bulk route's).
    let explained = daemon.get("/api/v1/jobs/failed/clear/explain").expect(200);
    assert_eq!(explained["job_id"], "clear");
    daemon.post("/api/v1/jobs/failed/clear/retry").expect(200);
    assert_eq!(queue_ids(&mut con, "default"), strings(&["clear"]));
    daemon.delete("/api/v1/jobs/failed/a%2Fb").expect(200);
    assert!(!exists(&mut con, "rq:job:a/b"));
    daemon.post("/api/v1/jobs/failed/plain/retry").expect(200);
    assert_eq!(failed_count(&mut con, &["default"]), 0);
}

#[test]
fn a_misspelt_parameter_a_bad_value_or_a_body_is_refused_and_nothing_changes() {
    // See: issue 19 (`clear?exeption=ValueError` matched all 319 jobs; `DRY_RUN=true` and
    // `dry-run=true` ran for real).
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    for i in 0..20 {
        let exc = if i % 2 == 0 {
            "ValueError"
        } else {
            "ConnectionError"
        };
        job(
            &format!("j{i}"),
            "default",
            "app.tasks.charge",
            exc,
            100 + i,
        )
        .write(&mut con);
    }
    daemon.scan();
    let before = support::jobs::snapshot(&mut con);

    let refused = [
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?exeption=ValueError",
            "unknown_parameter",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?DRY_RUN=true",
            "unknown_parameter",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?dry-run=true",
            "unknown_parameter",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?dry_run=yes",
            "invalid_query",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?exception=%5BValueError%5D",
            "invalid_exception",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/clear?exception=%20",
            "invalid_exception",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?qeue=default",
            "unknown_parameter",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/retry-all?function=app.%7Ba,b%7D",
            "invalid_function",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/j0/retry?force=1",
            "unknown_parameter",
        ),
        (
            "POST",
            "/api/v1/failed-jobs/j0/retry?DRY_RUN=true",
            "unknown_parameter",
        ),
        (
            "DELETE",
            "/api/v1/failed-jobs/j0?dryrun=1",
            "unknown_parameter",
        ),
        (
            "DELETE",
            "/api/v1/jobs/failed/j0?dry-run=true",
            "unknown_parameter",
        ),
        (
            "POST",
            "/api/v1/supervisor/pause?reasn=x",
            "unknown_parameter",
        ),
        // A pause's reason (issue 22, item 8): 1 to 500 characters, no control characters.
        ("POST", "/api/v1/supervisor/pause?reason=", "invalid_reason"),
        (
            "POST",
            "/api/v1/supervisor/pause?reason=a%0Ab",
            "invalid_reason",
        ),
        ("POST", "/api/v1/supervisor/scan?now=1", "unknown_parameter"),
        (
            "GET",
            "/api/v1/jobs/failed?exeption=ValueError",
            "unknown_parameter",
        ),
        (
            "GET",
            "/api/v1/jobs/failed/groups?stat=due",
            "unknown_parameter",
        ),
        (
            "GET",
            "/api/v1/jobs/stats?queue=default",
            "unknown_parameter",
        ),
        ("GET", "/healthz?verbose=1", "unknown_parameter"),
    ];
    for (method, target, code) in refused {
        let answer = request(daemon.addr, method, target, &[], b"");
        assert_eq!(answer.status, 400, "{method} {target}: {}", answer.text());
        assert_eq!(
            answer.json()["code"],
            code,
            "{method} {target}: {}",
            answer.text()
        );
        if code == "unknown_parameter" {
            let name = target.split('?').nth(1).unwrap().split('=').next().unwrap();
            assert!(
                answer.text().contains(name),
                "names {name}: {}",
                answer.text()
            );
        }
    }
    // A body the route does not read (the API's input is the query string).
    let answer = request(
        daemon.addr,
        "POST",
        "/api/v1/jobs/failed/retry-all",
        &[("Content-Type", "application/json")],
        br#"{"queue": "nothing"}"#,
    );
    answer.expect_error(400, "unexpected_body");

    assert_eq!(support::jobs::snapshot(&mut con), before, "nothing changed");
    assert_eq!(
        daemon.get("/api/v1/supervisor").expect(200)["paused"],
        false
    );
}

#[test]
fn dry_run_is_honoured_on_single_job_actions() {
    // See: issue 19 (`DELETE /api/v1/jobs/failed/{id}?dry_run=true` deleted the job).
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    job("j1", "default", "app.tasks.charge", "ConnectionError", 100).write(&mut con);
    daemon.scan();
    let before = support::jobs::snapshot(&mut con);
    for target in [
        "/api/v1/failed-jobs/j1?dry_run=true",
        "/api/v1/jobs/failed/j1?dry_run=true",
    ] {
        let answer = daemon.delete(target).expect(200);
        assert_eq!(answer["deleted"], false, "{target}: {answer}");
        assert_eq!(answer["dry_run"], true, "{target}: {answer}");
    }
    for target in [
        "/api/v1/failed-jobs/j1/retry?dry_run=true",
        "/api/v1/jobs/failed/j1/retry?dry_run=true",
    ] {
        let answer = daemon.post(target).expect(200);
        assert_eq!(answer["status"], "failed", "{target}: {answer}");
        assert_eq!(answer["dry_run"], true, "{target}: {answer}");
    }
    assert_eq!(
        support::jobs::snapshot(&mut con),
        before,
        "a dry run writes nothing"
    );
    // A dry run still says when the job cannot be acted on.
    daemon
        .delete("/api/v1/failed-jobs/nope?dry_run=true")
        .expect_error(404, "not_in_failed_registry");
    // And without it, the action happens.
    let answer = daemon
        .delete("/api/v1/failed-jobs/j1?dry_run=false")
        .expect(200);
    assert_eq!(answer["deleted"], true);
    assert!(!in_failed(&mut con, "default", "j1"));
}

#[test]
fn a_bulk_action_cut_short_by_redis_answers_what_it_did_so_far() {
    // See: issue 19 (Redis dying mid retry-all answered `503 broken pipe`, no count).
    let redis = RedisServer::start();
    let mut config = DaemonConfig::new(&redis.url(), SLOW_POLICIES);
    // 3,000 jobs at 500 requeues a second at most; the action asks for 100 a second (below),
    // so it runs for 30 s in batches of 100, one a second.
    config.max_requeues_per_second = 500;
    let daemon = Daemon::start_ready(&config);
    let mut con = redis.conn();
    let total = 3_000;
    for i in 0..total {
        job(
            &format!("j{i}"),
            "default",
            "app.tasks.charge",
            "ConnectionError",
            100,
        )
        .write(&mut con);
    }
    daemon.scan();
    // Let it requeue two batches, then take Redis away between batches (a kill inside one is
    // the next test's).
    let bulk = retry_all_until_queued(&daemon, &mut con, "rate=100", 200);
    kill_redis(&redis);
    let answer = bulk.join().unwrap();
    assert_eq!(answer.status, 503, "{}", answer.text());
    let body: Value = answer.json();
    assert_eq!(body["code"], "interrupted", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(body["state"], "failed", "{body}");
    let done = body["requeued_count"].as_u64().expect("requeued_count");
    assert!(done >= 200 && done < total as u64, "{body}");
    // The task can still be looked at.
    let task = daemon
        .get(&format!(
            "/api/v1/tasks/{}",
            body["task_id"].as_str().unwrap()
        ))
        .expect(200);
    assert_eq!(task["requeued_count"], done);
}

#[test]
fn a_bulk_action_cut_short_inside_a_batch_counts_what_redis_never_answered_as_in_doubt() {
    // See: session 13's note. A batch's script calls go out in one pipeline; Redis killed
    // while it runs them has done some and answered none, and the answer counted them as
    // not done. The AOF keeps every write Redis made, so the restarted server shows the
    // truth the answer must bound: requeued <= queued <= requeued + in_doubt.
    let mut redis = support::faults::PersistentRedis::started();
    let mut config = DaemonConfig::new(&redis.url(), SLOW_POLICIES);
    config.max_requeues_per_second = 100_000;
    let daemon = Daemon::start_ready(&config);
    let mut con = redis.conn();
    // No rate: batches of 500 (the read batch), one pipeline each, back to back, so the kill
    // below lands inside one far more often than between two.
    let total = 20_000;
    support::faults::seed(&mut con, "doubt", &["default"], total);
    daemon.scan();
    // 1,100 queued: two batches done and the third under way (a multiple of 500 would be
    // waited for between two batches).
    let bulk = retry_all_until_queued(&daemon, &mut con, "", 1_100);
    redis.kill9();
    let answer = bulk.join().unwrap();
    assert_eq!(answer.status, 503, "{}", answer.text());
    let body: Value = answer.json();
    assert_eq!(body["code"], "interrupted", "{body}");
    let requeued = body["requeued_count"].as_u64().expect("requeued_count");
    let in_doubt = body["in_doubt"].as_u64().expect("in_doubt");
    assert!(requeued + in_doubt < total as u64, "cut short: {body}");
    if in_doubt > 0 {
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("{in_doubt} writes were sent and not answered")),
            "{error}"
        );
    }

    redis.start();
    let queued = queue_len(&mut redis.conn()) as u64;
    assert!(
        requeued <= queued && queued <= requeued + in_doubt,
        "Redis queued {queued}; the answer said requeued {requeued}, in doubt {in_doubt}"
    );
}

/// Starts `POST retry-all?wait_ms=30000&<query>` on a thread of its own and returns once
/// `queued` jobs are on the `default` queue; join the handle for the answer.
fn retry_all_until_queued(
    daemon: &Daemon,
    con: &mut redis::Connection,
    query: &str,
    queued: usize,
) -> std::thread::JoinHandle<support::http::Response> {
    let (addr, path) = (
        daemon.addr,
        format!("/api/v1/jobs/failed/retry-all?wait_ms=30000&{query}"),
    );
    let bulk = std::thread::spawn(move || request(addr, "POST", &path, &[], b""));
    let started = Instant::now();
    while queue_len(con) < queued {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the bulk retry never began"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    bulk
}

fn queue_len(con: &mut redis::Connection) -> usize {
    con.llen("rq:queue:default").unwrap()
}
