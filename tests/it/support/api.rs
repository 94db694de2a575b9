//! Helpers of the HTTP API tests (`tests/http_*.rs`): a Redis with a daemon that has finished
//! its startup scan, jobs with chosen function and exception, and small readers of Redis and of
//! JSON answers.

use chrono::{DateTime, NaiveDateTime, Utc};
use redis::Commands;
use serde_json::Value;
use std::time::Duration;

use super::http::{Daemon, DaemonConfig};
use super::jobs::FailedJob;
use super::RedisServer;

/// ConnectionErrors on `default` retried with a long linear backoff (1h + 30m per attempt, no
/// jitter, so `next_retry_at` is exact and nothing becomes due during a test); ValueErrors
/// purged after a week; everything else unmatched.
pub const SLOW_POLICIES: &str = r#"
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
pub fn start(policies: &str) -> (RedisServer, Daemon) {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), policies));
    (redis, daemon)
}

pub fn job(id: &str, queue: &str, func: &str, exc: &str, secs_ago: i64) -> FailedJob {
    let mut j = FailedJob::new(id)
        .queue(queue)
        .exception(exc, &format!("{id} went wrong"))
        .failed_secs_ago(secs_ago);
    j.func = func.to_string();
    j
}

pub fn hget(con: &mut redis::Connection, key: &str, field: &str) -> Option<String> {
    con.hget(key, field).unwrap()
}

pub fn exists(con: &mut redis::Connection, key: &str) -> bool {
    con.exists(key).unwrap()
}

pub fn in_failed(con: &mut redis::Connection, queue: &str, id: &str) -> bool {
    let score: Option<f64> = con.zscore(format!("rq:failed:{queue}"), id).unwrap();
    score.is_some()
}

pub fn queue_ids(con: &mut redis::Connection, queue: &str) -> Vec<String> {
    con.lrange(format!("rq:queue:{queue}"), 0, -1).unwrap()
}

/// RQ's `ended_at` of a stored job, as a time.
pub fn ended_at(con: &mut redis::Connection, id: &str) -> DateTime<Utc> {
    let text = hget(con, &format!("rq:job:{id}"), "ended_at").expect("ended_at");
    NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.fZ")
        .unwrap_or_else(|e| panic!("ended_at {text:?}: {e}"))
        .and_utc()
}

#[track_caller]
pub fn time_of(v: &Value) -> DateTime<Utc> {
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("not a time string: {v}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

pub fn ids_in(jobs: &Value) -> Vec<String> {
    jobs.as_array()
        .unwrap_or_else(|| panic!("not an array: {jobs}"))
        .iter()
        .map(|j| j["job_id"].as_str().expect("job_id").to_string())
        .collect()
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub fn keys_of(v: &Value) -> Vec<String> {
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
pub fn has_keys(v: &Value, expected: &[&str]) {
    let keys = keys_of(v);
    for k in expected {
        assert!(keys.iter().any(|have| have == k), "no {k:?} in {v}");
    }
}

/// Stops a test's Redis for good (the server process exits).
pub fn kill_redis(redis: &RedisServer) {
    let mut con = redis.conn();
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut con);
    let client = redis::Client::open(redis.url()).unwrap();
    let down = super::wait_until(Duration::from_secs(10), || {
        client.get_connection().is_err().then_some(())
    });
    assert!(down.is_some(), "redis-server did not shut down");
}
