//! One job's history, `GET /api/v1/failed-jobs/{job_id}/history`: RQ's runs from the results
//! stream interleaved with the audit's actions, newest first, for any id, with real RQ workers
//! writing the runs and a real daemon the actions. See: issue 22, item 3.

use crate::support;

use redis::Commands;
use serde_json::Value;

use support::api::{start, SLOW_POLICIES};
use support::http::{enc, Daemon, DaemonConfig};
use support::jobs::FailedJob;
use support::rq::{JobSpec, Rq};
use support::RedisServer;

/// ValueErrors retried once a second has passed since the failure, the next one an hour
/// later: one automatic requeue, then nothing more during a test.
const RETRY_ONCE: &str = r#"
[[policy]]
name = "card-retry"
exceptions = ["ValueError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "linear", initial = "1s", step = "1h" }
"#;

fn history(daemon: &Daemon, id: &str) -> Value {
    daemon
        .get(&format!("/api/v1/failed-jobs/{}/history", enc(id)))
        .expect(200)
}

fn kinds(history: &Value) -> Vec<String> {
    history["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events: {history}"))
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

fn times(history: &Value) -> Vec<chrono::DateTime<chrono::Utc>> {
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| support::api::time_of(&e["at"]))
        .collect()
}

#[test]
fn a_job_that_failed_was_requeued_by_rq_retryd_and_failed_again_shows_both_runs_and_the_requeue() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), RETRY_ONCE));
    let rq = Rq::rq2();
    let id = rq.enqueue(&redis.url(), &JobSpec::new("default", "tasks.chained_fail"));
    rq.burst_worker(&redis.url(), &["default"]);
    assert_eq!(rq.status(&redis.url(), &id), "failed");
    daemon.wait_until("rq-retryd requeued the job", |d| {
        d.scan();
        rq.status(&redis.url(), &id) == "queued"
    });
    rq.burst_worker(&redis.url(), &["default"]);
    assert_eq!(rq.status(&redis.url(), &id), "failed");

    let h = history(&daemon, &id);
    assert_eq!(h["job_id"], id.as_str());
    assert_eq!(h["status"], "failed");
    assert_eq!(h["queue"], "default");
    assert_eq!(
        kinds(&h),
        ["failed_run", "requeue", "failed_run"],
        "newest first: {h}"
    );
    let t = times(&h);
    assert!(t[0] > t[1] && t[1] > t[2], "in time order: {t:?}");
    for run in [&h["events"][0], &h["events"][2]] {
        assert_eq!(run["source"], "results");
        assert_eq!(run["exc_type"], "ValueError", "the final exception: {run}");
        assert_eq!(
            run["message"], "order 42: card_declined (gateway said no)",
            "{run}"
        );
        assert!(run["who"].as_str().is_some_and(|w| !w.is_empty()), "{run}");
        assert_eq!(run["unreadable"], Value::Null);
    }
    let requeue = &h["events"][1];
    assert_eq!(requeue["source"], "audit");
    assert_eq!(requeue["who"], "supervisor");
    assert_eq!(requeue["why"], "card-retry");
    assert_eq!(requeue["action"], "requeue");
    assert_eq!(requeue["queue"], "default");
    assert!(h["audit_searched"].as_u64().unwrap() >= 1, "{h}");

    // An operator's retry is told apart from rq-retryd's requeue.
    daemon
        .post(&format!("/api/v1/failed-jobs/{}/retry", enc(&id)))
        .expect(200);
    let h = history(&daemon, &id);
    assert_eq!(h["status"], "queued");
    assert_eq!(
        kinds(&h),
        ["operator_retry", "failed_run", "requeue", "failed_run"]
    );
    assert_eq!(
        h["events"][0]["why"],
        "POST /api/v1/failed-jobs/{job_id}/retry"
    );
    assert_ne!(h["events"][0]["who"], "supervisor");
}

#[test]
fn odd_ids_of_rq_1_16_have_a_history_on_the_any_id_path() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), SLOW_POLICIES));
    let rq = Rq::rq1();
    let ids = ["clear", "%2F", "a/b c", "ジョブ-ü"];
    for id in ids {
        rq.enqueue(
            &redis.url(),
            &JobSpec::new("default", "tasks.always_fail")
                .id(id)
                .args(serde_json::json!([format!("bad input for {id}")])),
        );
    }
    rq.burst_worker(&redis.url(), &["default"]);
    for id in ids {
        let h = history(&daemon, id);
        assert_eq!(h["job_id"], id, "{h}");
        assert_eq!(kinds(&h), ["failed_run"], "{id}: {h}");
        let run = &h["events"][0];
        assert_eq!(run["exc_type"], "ValueError", "{id}: {run}");
        assert_eq!(run["message"], format!("bad input for {id}"), "{run}");
        // RQ 1.16 names no worker in its results.
        assert_eq!(run["who"], Value::Null, "{run}");
    }
    // `clear` reaches the job, not the bulk route, and nothing was cleared by a GET.
    let mut con = redis.conn();
    let failed: usize = con.zcard("rq:failed:default").unwrap();
    assert_eq!(failed, ids.len());
}

#[test]
fn a_failure_rq_kept_only_in_the_job_hash_is_still_a_failed_run() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), SLOW_POLICIES));
    let rq = Rq::rq1();
    // As RQ 1.16 does on a Redis without streams: exc_info in the hash, no results.
    rq.script("fail_without_streams.py", &[&redis.url(), "no-streams"]);
    let mut con = redis.conn();
    let results: bool = con.exists("rq:results:no-streams").unwrap();
    assert!(!results, "RQ wrote no results stream");
    let h = history(&daemon, "no-streams");
    assert_eq!(kinds(&h), ["failed_run"], "{h}");
    let run = &h["events"][0];
    assert_eq!(run["source"], "job_hash");
    assert_eq!(run["exc_type"], "ValueError");
    assert_eq!(run["message"], "no streams here");
    let ended: String = con.hget("rq:job:no-streams", "ended_at").unwrap();
    assert_eq!(
        support::api::time_of(&run["at"]),
        support::api::time_of(&Value::String(ended))
    );

    // A job of RQ 1.16 whose results expired: the failure is known, its text is not.
    let id = rq.enqueue(&redis.url(), &JobSpec::new("default", "tasks.always_fail"));
    rq.burst_worker(&redis.url(), &["default"]);
    let _: () = con.del(format!("rq:results:{id}")).unwrap();
    let h = history(&daemon, &id);
    assert_eq!(kinds(&h), ["failed_run"], "{h}");
    assert_eq!(h["events"][0]["source"], "job_hash");
    assert_eq!(h["events"][0]["exc_type"], Value::Null);
}

#[test]
fn corrupt_results_and_keys_of_the_wrong_type_are_told_never_a_500() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    FailedJob::new("garbled").write(&mut con);
    for fields in [
        vec![("type", "9"), ("exc_string", "not base64 %%%")],
        vec![("type", "2"), ("exc_string", "aGVsbG8=")],
        vec![("worker_name", "w")],
    ] {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("rq:results:garbled").arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query(&mut con).unwrap();
    }
    let h = history(&daemon, "garbled");
    assert_eq!(
        kinds(&h),
        [
            "unreadable_run",
            "failed_run",
            "unreadable_run",
            "failed_run"
        ],
        "{h}"
    );
    let unreadable: Vec<&str> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["unreadable"].as_str())
        .collect();
    assert_eq!(
        unreadable,
        [
            "the entry has no type",
            "its failure text cannot be read: exc_string is not valid zlib data",
            "the entry's type \"9\" is not one RQ writes; its failure text cannot be read: exc_string is not valid base64",
        ]
    );
    // The one readable run is the job's real failure.
    assert_eq!(h["events"][3]["exc_type"], "ConnectionError");

    // Keys of the wrong type: notes, and what can be read is still shown.
    let _: () = con.set("rq:job:stringy", "not a hash").unwrap();
    let _: () = con.rpush("rq:results:stringy", "not a stream").unwrap();
    let h = history(&daemon, "stringy");
    assert_eq!(kinds(&h), Vec::<String>::new());
    assert_eq!(
        h["notes"],
        serde_json::json!([
            "the job key is not a hash: RQ's fields cannot be read",
            "the results key is not a stream: RQ's runs cannot be read"
        ])
    );
    let _: () = con.del("rq:retryd:audit").unwrap();
    let _: () = con.set("rq:retryd:audit", "not a stream").unwrap();
    let h = history(&daemon, "garbled");
    assert_eq!(h["events"].as_array().unwrap().len(), 4);
    assert_eq!(
        h["notes"],
        serde_json::json!(["the audit key is not a stream: no actions shown"])
    );
}

#[test]
fn a_deleted_job_keeps_the_history_of_its_deletion_and_an_unknown_one_is_404() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    FailedJob::new("doomed").write(&mut con);
    daemon.delete("/api/v1/failed-jobs/doomed").expect(200);
    let h = history(&daemon, "doomed");
    assert_eq!(h["status"], Value::Null, "the hash is gone: {h}");
    assert_eq!(kinds(&h), ["operator_delete"]);
    assert_eq!(h["events"][0]["why"], "DELETE /api/v1/failed-jobs/{job_id}");
    assert_eq!(h["events"][0]["count"], 1);

    daemon
        .get("/api/v1/failed-jobs/never-was/history")
        .expect_error(404, "no_such_job");
    daemon
        .get("/api/v1/failed-jobs/doomed/history?limit=5")
        .expect_error(400, "unknown_parameter");
    let doc = daemon.get("/api/v1/openapi.json").expect(200);
    assert!(
        doc["paths"]["/api/v1/failed-jobs/{job_id}/history"]["get"].is_object(),
        "the route is in the OpenAPI document"
    );
    for schema in ["JobHistory", "HistoryEvent", "EventKind", "EventSource"] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} is in the OpenAPI document"
        );
    }
}

/// Appends an audit entry naming `ids`, as the write scripts do.
fn audit(con: &mut redis::Connection, who: &str, action: &str, ids: &[&str]) -> String {
    redis::cmd("XADD")
        .arg("rq:retryd:audit")
        .arg("*")
        .arg("at")
        .arg(chrono::Utc::now().to_rfc3339())
        .arg("who")
        .arg(who)
        .arg("action")
        .arg(action)
        .arg("why")
        .arg("test")
        .arg("queue")
        .arg("default")
        .arg("count")
        .arg(ids.len())
        .arg("job_ids")
        .arg(ids.join(","))
        .arg("job_ids_json")
        .arg(serde_json::to_string(ids).unwrap())
        .query(con)
        .unwrap()
}

#[test]
fn the_audit_is_searched_whole_and_followed_as_it_grows_is_trimmed_and_is_replaced() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    // A full stream: the job is named by the oldest entry and, with a comma in its id, only
    // through job_ids_json.
    let first = audit(&mut con, "supervisor", "requeue", &["a,b", "other"]);
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        let ids: Vec<String> = (0..100).map(|j| format!("filler-{i}-{j}")).collect();
        pipe.cmd("XADD")
            .arg("rq:retryd:audit")
            .arg("*")
            .arg("who")
            .arg("supervisor")
            .arg("action")
            .arg("requeue")
            .arg("job_ids_json")
            .arg(serde_json::to_string(&ids).unwrap())
            .ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    let h = history(&daemon, "a,b");
    assert_eq!(kinds(&h), ["requeue"]);
    assert_eq!(h["events"][0]["entry_id"], first.as_str());
    assert_eq!(h["audit_searched"], 10_001, "the whole stream is searched");
    assert_eq!(
        kinds(&history(&daemon, "filler-5000-99")),
        ["requeue"],
        "the last id an entry lists"
    );

    // Entries appended since are found.
    audit(&mut con, "ops@127.0.0.1", "purge", &["a,b"]);
    let h = history(&daemon, "a,b");
    assert_eq!(kinds(&h), ["operator_delete", "requeue"]);
    // (How much is read from Redis per request is the audit mirror's, tested in audit::.)
    assert_eq!(h["audit_searched"], 10_002);

    // Trimmed entries are gone from the history.
    let _: () = redis::cmd("XTRIM")
        .arg("rq:retryd:audit")
        .arg("MAXLEN")
        .arg(10)
        .query(&mut con)
        .unwrap();
    let h = history(&daemon, "a,b");
    assert_eq!(kinds(&h), ["operator_delete"]);
    assert_eq!(h["audit_searched"], 10);

    // A stream deleted and written anew: only its own entries count.
    let _: () = con.del("rq:retryd:audit").unwrap();
    daemon
        .get(&format!("/api/v1/failed-jobs/{}/history", enc("a,b")))
        .expect_error(404, "no_such_job");
    audit(&mut con, "supervisor", "mark_exhausted", &["a,b"]);
    let h = history(&daemon, "a,b");
    assert_eq!(kinds(&h), ["marked_exhausted"]);
    assert_eq!(h["audit_searched"], 1);
}
