//! Replays an operator controls: a bulk retry with its own `rate` and a `reason` for the
//! audit, its progress, `DELETE /api/v1/tasks/{id}` from any instance, and a task whose
//! instance was killed read as interrupted from another. Real `redis-server`, failed jobs
//! written by real RQ (`seed_failed_jobs.py`), real `rq-retryd run` processes.
//!
//! See: issue 22, item 6 ("Requeue these 50,000 slowly, and stop if it goes wrong").

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::Value;

use support::http::{enc, Daemon, DaemonConfig, HANDS_OFF};
use support::rq::Rq;
use support::RedisServer;

/// `count` failed jobs on `queue`, written by RQ's own failure paths; their ids.
fn seed(redis: &RedisServer, queue: &str, count: usize) -> Vec<String> {
    Rq::rq2().seed_failed_jobs(&redis.url(), count, &[queue]);
    let ids: Vec<String> = redis
        .conn()
        .zrange(format!("rq:failed:{queue}"), 0, -1)
        .unwrap();
    assert_eq!(ids.len(), count, "seeded failed jobs");
    ids
}

/// Starts a retry of `queue` that answers at once (202) and returns its task id.
fn start_retry(daemon: &Daemon, query: &str) -> String {
    let started = daemon
        .post(&format!("/api/v1/jobs/failed/retry-all?{query}&wait_ms=0"))
        .expect(202);
    assert_eq!(started["state"], "running", "{started}");
    started["task_id"].as_str().expect("task_id").to_string()
}

fn task(daemon: &Daemon, id: &str) -> Value {
    daemon.get(&format!("/api/v1/tasks/{id}")).expect(200)
}

/// Polls the task on `daemon` until `check` holds (at most `within`); the last answer.
#[track_caller]
fn wait_task(daemon: &Daemon, id: &str, within: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let t = task(daemon, id);
        if check(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task did not get there in {within:?}: {t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every seeded job is either in its queue exactly once or still in the failed registry, never
/// both, never neither; returns (queued, failed).
#[track_caller]
fn none_lost_or_doubled(redis: &RedisServer, queue: &str, ids: &[String]) -> (u64, u64) {
    let mut con = redis.conn();
    let queued: Vec<String> = con.lrange(format!("rq:queue:{queue}"), 0, -1).unwrap();
    let mut times: BTreeMap<&str, u32> = BTreeMap::new();
    for id in &queued {
        *times.entry(id.as_str()).or_default() += 1;
    }
    let (mut in_queue, mut failed) = (0, 0);
    for id in ids {
        let once = times.get(id.as_str()).copied().unwrap_or(0);
        let in_failed: Option<f64> = con.zscore(format!("rq:failed:{queue}"), id).unwrap();
        match (once, in_failed.is_some()) {
            (1, false) => in_queue += 1,
            (0, true) => failed += 1,
            other => panic!("job {id}: {other:?} (times queued, in failed registry)"),
        }
    }
    assert_eq!(
        queued.len() as u64,
        in_queue,
        "the queue holds only seeded jobs"
    );
    (in_queue, failed)
}

/// See: issue 22, item 6. rate=50 over 500 jobs: the first second's worth goes at once, the
/// other 450 need 9 s more; the progress is readable meanwhile and the reason is audited.
#[test]
fn a_paced_retry_takes_as_long_as_its_rate_says_shows_progress_and_audits_its_reason() {
    let redis = RedisServer::start();
    let ids = seed(&redis, "replay", 500);
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), HANDS_OFF));

    let began = Instant::now();
    let id = start_retry(
        &daemon,
        &format!("queue=replay&rate=50&reason={}", enc("incident 42: é")),
    );
    let midway = wait_task(&daemon, &id, Duration::from_secs(30), |t| {
        t["state"] != "running" || t["done"].as_u64().unwrap() >= 100
    });
    assert_eq!(midway["state"], "running", "{midway}");
    assert_eq!(midway["total"], 500, "{midway}");
    assert_eq!(midway["rate"], 50, "{midway}");
    assert_eq!(midway["reason"], "incident 42: é", "{midway}");
    assert!(midway["done"].as_u64().unwrap() < 500, "{midway}");
    let done = wait_task(&daemon, &id, Duration::from_secs(60), |t| {
        t["state"] != "running"
    });
    let took = began.elapsed();
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["requeued_count"], 500, "{done}");
    assert_eq!(
        (done["done"].clone(), done["total"].clone()),
        (500.into(), 500.into())
    );
    // (500 - 50 burst) / 50 per second = 9 s; a little margin for clocks, none for slowness.
    assert!(
        took >= Duration::from_millis(8_500),
        "500 jobs at rate=50 took only {took:?}"
    );
    println!("rate=50 over 500 jobs took {took:?}");
    assert_eq!(none_lost_or_doubled(&redis, "replay", &ids), (500, 0));

    let audit = daemon.get("/api/v1/audit").expect(200);
    let requeues: Vec<&Value> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "requeue")
        .collect();
    assert!(
        requeues.len() >= 9,
        "one audit entry per second's batch: {audit}"
    );
    for e in &requeues {
        let why = e["why"].as_str().unwrap();
        assert!(
            why.starts_with("api: incident 42: é; POST /api/v1/jobs/failed/retry-all?queue=replay"),
            "{why}"
        );
    }
    let counted: u64 = requeues.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 500);
}

/// See: issue 22, item 6. A cancel stops the task between two batches; what it had not
/// requeued stays failed, nothing is lost or requeued twice, and the counts say so.
#[test]
fn a_cancelled_retry_stops_and_leaves_the_rest_failed_with_none_lost_or_doubled() {
    let redis = RedisServer::start();
    let ids = seed(&redis, "replay", 300);
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), HANDS_OFF));

    let id = start_retry(&daemon, "queue=replay&rate=20&reason=slowly");
    wait_task(&daemon, &id, Duration::from_secs(30), |t| {
        t["requeued_count"].as_u64().unwrap() >= 40
    });
    let cancelled = daemon.delete(&format!("/api/v1/tasks/{id}")).expect(200);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert!(cancelled["cancel_requested_by"].is_string(), "{cancelled}");
    let requeued = cancelled["requeued_count"].as_u64().unwrap();
    assert!((40..300).contains(&requeued), "{cancelled}");
    assert!(cancelled["finished_at"].is_string(), "{cancelled}");

    // Nothing moves after the answer.
    std::thread::sleep(Duration::from_millis(2_500));
    let later = task(&daemon, &id);
    assert_eq!(later["state"], "cancelled");
    assert_eq!(later["requeued_count"], requeued, "{later}");
    assert_eq!(
        none_lost_or_doubled(&redis, "replay", &ids),
        (requeued, 300 - requeued)
    );

    daemon
        .delete(&format!("/api/v1/tasks/{id}"))
        .expect_error(409, "task_finished");
    for unknown in [
        "1-1-00000000",
        "clear",
        "%2F",
        "%C3%A9t%C3%A9",
        "a%3Aalive",
        &"9".repeat(80),
    ] {
        daemon
            .delete(&format!("/api/v1/tasks/{unknown}"))
            .expect_error(404, "no_such_task");
        daemon
            .get(&format!("/api/v1/tasks/{unknown}"))
            .expect_error(404, "no_such_task");
    }
}

/// See: issue 22, item 6. A task survives the instance that ran it: another instance reads
/// and cancels it while it runs, and reads it as interrupted (never running) once its
/// instance was killed.
#[test]
fn another_instance_cancels_a_task_and_reads_a_killed_instances_task_as_interrupted() {
    let redis = RedisServer::start();
    let ids = seed(&redis, "replay", 400);
    let config = DaemonConfig::new(&redis.url(), HANDS_OFF);
    // Killed with SIGKILL below: a process.
    let owner = Daemon::spawn_ready(&config);
    // A standby (the owner holds the lease): it never scans, yet answers for the task.
    let other = Daemon::start(&config);
    other.wait_ready();

    let first = start_retry(&owner, "queue=replay&rate=20");
    // In Redis before the 202 names it: the other instance knows it at once.
    assert_eq!(task(&other, &first)["task_id"], first.as_str());
    let seen = wait_task(&other, &first, Duration::from_secs(30), |t| {
        t["done"].as_u64().unwrap() >= 20
    });
    assert_eq!(seen["state"], "running", "{seen}");
    assert_eq!(
        seen["instance"],
        owner.get("/api/v1/supervisor").expect(200)["instance"]
    );
    let asked = other.delete(&format!("/api/v1/tasks/{first}"));
    assert!([200, 202].contains(&asked.status), "{}", asked.text());
    let stopped = wait_task(&owner, &first, Duration::from_secs(5), |t| {
        t["state"] != "running"
    });
    assert_eq!(stopped["state"], "cancelled", "{stopped}");
    let first_requeued = stopped["requeued_count"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(task(&other, &first)["state"], "cancelled");
    assert_eq!(task(&other, &first)["requeued_count"], first_requeued);

    let second = start_retry(&owner, "queue=replay&rate=20&reason=before%20the%20kill");
    wait_task(&other, &second, Duration::from_secs(30), |t| {
        t["done"].as_u64().unwrap() >= 20
    });
    owner.signal("KILL");
    let killed_at = Instant::now();
    let interrupted = wait_task(&other, &second, Duration::from_secs(20), |t| {
        t["state"] != "running"
    });
    println!(
        "read as interrupted {:?} after the kill",
        killed_at.elapsed()
    );
    assert_eq!(interrupted["state"], "interrupted", "{interrupted}");
    assert_eq!(interrupted["reason"], "before the kill");
    let counted = interrupted["requeued_count"].as_u64().unwrap();
    assert!(counted >= 20, "{interrupted}");
    other
        .delete(&format!("/api/v1/tasks/{second}"))
        .expect_error(409, "task_finished");
    // The counts are written after each batch: they lag the writes by at most the one batch
    // (a second's worth, 20) the kill may have cut between its write and its count.
    let (queued, failed) = none_lost_or_doubled(&redis, "replay", &ids);
    let lag = queued - first_requeued - counted;
    assert!(
        lag <= 20,
        "queued {queued}, failed {failed}, counted {first_requeued} + {counted}"
    );
}

/// See: issue 22, item 6. A rate outside 1..=the global limit, a bad reason or a misspelt
/// parameter is refused before anything is touched; a read token cannot cancel, nor can
/// another site.
#[test]
fn an_invalid_rate_or_reason_is_refused_and_only_an_operator_of_this_site_cancels() {
    let redis = RedisServer::start();
    seed(&redis, "replay", 20);
    let tokens =
        "\n[[http.tokens]]\nname = \"viewer\"\nrole = \"read\"\ntoken = \"viewer-secret-7d1f\"\n";
    let mut config = DaemonConfig::new(&redis.url(), &format!("{HANDS_OFF}{tokens}"));
    config.max_requeues_per_second = 200;
    config.auth_token = Some("operator-secret-31ab".into());
    let daemon = Daemon::start_ready(&config);
    let retry = |query: &str| {
        daemon.post(&format!(
            "/api/v1/jobs/failed/retry-all?queue=replay&{query}"
        ))
    };

    for rate in ["0", "201", "-1", "1.5", "abc", "", "99999999999"] {
        let r = retry(&format!("rate={rate}"));
        r.expect_error(400, "invalid_rate");
        assert!(
            r.text().contains("200"),
            "the answer names the limit: {}",
            r.text()
        );
    }
    for reason in ["", "a%0Ab", "%1B%5B31m", &"x".repeat(501)] {
        retry(&format!("reason={reason}")).expect_error(400, "invalid_reason");
    }
    retry("rates=5").expect_error(400, "unknown_parameter");
    retry("reson=x").expect_error(400, "unknown_parameter");
    let failed: u64 = redis.conn().zcard("rq:failed:replay").unwrap();
    assert_eq!(failed, 20, "nothing was touched");

    let id = start_retry(&daemon, "queue=replay&rate=1&reason=ok");
    let path = format!("/api/v1/tasks/{id}");
    daemon
        .raw(
            "DELETE",
            &path,
            &[("Authorization", "Bearer viewer-secret-7d1f")],
            b"",
        )
        .expect_error(403, "forbidden");
    daemon
        .raw(
            "DELETE",
            &path,
            &[
                ("Authorization", "Bearer operator-secret-31ab"),
                ("Origin", "http://evil.example"),
            ],
            b"",
        )
        .expect_error(403, "cross_site");
    daemon
        .raw(
            "GET",
            &path,
            &[("Authorization", "Bearer viewer-secret-7d1f")],
            b"",
        )
        .expect(200);
    assert_eq!(daemon.delete(&path).expect(200)["state"], "cancelled");
    let doc = daemon.get("/api/v1/openapi.json").expect(200);
    let params: Vec<&str> = doc["paths"]["/api/v1/jobs/failed/retry-all"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        params.contains(&"rate") && params.contains(&"reason"),
        "{params:?}"
    );
    assert!(doc["paths"]["/api/v1/tasks/{task_id}"]["delete"].is_object());
    let rate = doc["paths"]["/api/v1/jobs/failed/retry-all"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rate")
        .unwrap();
    assert_eq!(
        rate["schema"]["maximum"], 200,
        "the configured limit: {rate}"
    );
    assert_eq!(rate["schema"]["minimum"], 1, "{rate}");
}

/// See: issue 22, item 6. An instance stopped the ordinary way (SIGTERM) stops its task at the
/// next batch and writes it `interrupted` with its counts before it exits: another instance
/// reads it so at once, not a beat later.
#[test]
fn a_task_of_an_instance_stopped_with_sigterm_reads_as_interrupted_at_once() {
    let redis = RedisServer::start();
    let ids = seed(&redis, "replay", 200);
    let config = DaemonConfig::new(&redis.url(), HANDS_OFF);
    // Stopped with SIGTERM, as the test says: a process.
    let owner = Daemon::spawn_ready(&config);
    let other = Daemon::start(&config);
    other.wait_ready();

    let id = start_retry(&owner, "queue=replay&rate=20");
    wait_task(&other, &id, Duration::from_secs(30), |t| {
        t["done"].as_u64().unwrap() >= 20
    });
    let (code, log) = owner.stop();
    assert_eq!(code, 0, "{log}");
    let t = task(&other, &id);
    assert_eq!(t["state"], "interrupted", "{t}");
    assert!(t["error"].as_str().unwrap().contains("stopped"), "{t}");
    let counted = t["requeued_count"].as_u64().unwrap();
    assert_eq!(
        none_lost_or_doubled(&redis, "replay", &ids),
        (counted, 200 - counted)
    );
}

/// The console reads the most a bulk retry's `rate` may ask where it reads the supervisor's
/// state: `GET /api/v1/supervisor` says `max_requeues_per_second`, and the OpenAPI document
/// declares it; the API takes a rate at it and refuses one above.
#[test]
fn the_supervisor_state_says_the_most_a_rate_may_ask() {
    let redis = RedisServer::start();
    seed(&redis, "replay", 3);
    let mut config = DaemonConfig::new(&redis.url(), HANDS_OFF);
    config.max_requeues_per_second = 37;
    let daemon = Daemon::start_ready(&config);
    let state = daemon.get("/api/v1/supervisor").expect(200);
    assert_eq!(state["max_requeues_per_second"], 37, "{state}");
    let doc = daemon.get("/api/v1/openapi.json").expect(200);
    let schema = &doc["components"]["schemas"]["SupervisorState"];
    assert_eq!(
        schema["properties"]["max_requeues_per_second"]["type"], "integer",
        "{schema}"
    );
    assert!(
        schema["required"]
            .as_array()
            .unwrap()
            .contains(&"max_requeues_per_second".into()),
        "{schema}"
    );
    let retry = |rate: u32| {
        daemon.post(&format!(
            "/api/v1/jobs/failed/retry-all?queue=replay&dry_run=true&rate={rate}"
        ))
    };
    assert_eq!(retry(37).expect(200)["matched_count"], 3);
    retry(38).expect_error(400, "invalid_rate");
}
