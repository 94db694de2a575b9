//! What-if before reload (issue 22, item 5): `POST /api/v1/policies/simulate` and
//! `check-config --simulate` tell what a candidate policy file would do with the failed jobs of
//! now, against the running policies, and write nothing. Against a real redis-server and the
//! real binary.

use crate::support;

use std::io::Write as _;
use std::process::Command;

use redis::Commands;
use serde_json::Value;
use support::api::{job, start, SLOW_POLICIES};
use support::http::{Daemon, DaemonConfig};
use support::{binary, RedisServer};

const SEND: &str = "app.workers.emails.send";
const RENDER: &str = "app.workers.reports.render";

/// 5 ConnectionErrors on `default` (waiting: the running backoff is 1 h), 3 ValueErrors
/// (purged after a week), 2 KeyErrors on `reports` (unmatched); all failed 10 minutes ago.
fn backlog(con: &mut redis::Connection) {
    for i in 0..5 {
        job(
            &format!("conn-{i}"),
            "default",
            SEND,
            "ConnectionError",
            600,
        )
        .write(con);
    }
    for i in 0..3 {
        job(&format!("value-{i}"), "default", SEND, "ValueError", 600).write(con);
    }
    for i in 0..2 {
        job(&format!("key-{i}"), "reports", RENDER, "KeyError", 600).write(con);
    }
}

/// A Redis with the [`backlog`], and a daemon under the running policies whose index holds
/// all of it.
fn indexed_backlog() -> (RedisServer, redis::Connection, Daemon) {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    backlog(&mut con);
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), SLOW_POLICIES));
    daemon.wait_until("the backlog is indexed", |d| {
        d.get("/api/v1/jobs/failed").json()["total"] == 10
    });
    (redis, con, daemon)
}

/// Every key RQ's data lives in, with its DUMP: what "nothing written" compares.
fn rq_data(con: &mut redis::Connection) -> Vec<(String, Vec<u8>)> {
    let mut keys: Vec<String> = con.keys("rq:*").unwrap();
    keys.retain(|k| !k.starts_with("rq:retryd:"));
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let value = content(con, &k);
            (k, value)
        })
        .collect()
}

/// The running policies with the first retry's delay cut from 1 h to 1 min.
fn faster() -> String {
    SLOW_POLICIES.replace("initial = \"1h\"", "initial = \"1m\"")
}

/// A key's value: a hash's fields in order (a hash's DUMP follows its table's order, which
/// a mere read can change by a step of incremental rehashing), else its DUMP.
fn content(con: &mut redis::Connection, key: &str) -> Vec<u8> {
    let kind: String = redis::cmd("TYPE").arg(key).query(con).unwrap();
    if kind == "hash" {
        let fields: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = con.hgetall(key).unwrap();
        return format!("{fields:?}").into_bytes();
    }
    redis::cmd("DUMP").arg(key).query(con).unwrap()
}

/// Fails naming the keys that differ (not their dumps).
fn assert_same(before: &[(String, Vec<u8>)], after: &[(String, Vec<u8>)]) {
    let changed: Vec<&String> = before
        .iter()
        .chain(after)
        .filter(|kv| !(before.contains(kv) && after.contains(kv)))
        .map(|(k, _)| k)
        .collect();
    assert!(changed.is_empty(), "written by a simulation: {changed:?}");
}

fn simulate(daemon: &Daemon, body: &str) -> support::http::Response {
    daemon.raw(
        "POST",
        "/api/v1/policies/simulate",
        &[("Content-Type", "application/toml")],
        body.as_bytes(),
    )
}

fn group<'a>(report: &'a Value, exception: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["exception"] == exception)
        .unwrap_or_else(|| panic!("no {exception} group in {report}"))
}

#[test]
fn a_faster_backoff_changes_one_group_to_retried_now_and_writes_nothing() {
    let (_redis, mut con, daemon) = indexed_backlog();
    let before = rq_data(&mut con);

    let report = simulate(&daemon, &faster()).expect(200);
    assert_eq!(report["source"], "index", "{report}");
    let index_as_of = support::api::time_of(&report["index_as_of"]);
    assert!(
        index_as_of <= support::api::time_of(&report["as_of"]),
        "{report}"
    );
    assert_eq!(report["jobs"], 10, "{report}");
    assert_eq!(report["changed_groups"], 1, "{report}");
    assert_eq!(report["changed_jobs"], 5, "{report}");
    assert_eq!(report["uncertain"], 0, "{report}");
    let conn = group(&report, "ConnectionError");
    assert_eq!(conn["queue"], "default");
    assert_eq!(conn["function"], SEND);
    assert_eq!(conn["running"], serde_json::json!({"wait": 5}));
    assert_eq!(conn["candidate"], serde_json::json!({"retry_now": 5}));
    assert_eq!(
        conn["moves"],
        serde_json::json!([{"from": "wait", "to": "retry_now", "jobs": 5}])
    );
    assert_eq!(
        report["groups"][0]["exception"], "ConnectionError",
        "changed groups first"
    );
    for unchanged in ["ValueError", "KeyError"] {
        let g = group(&report, unchanged);
        assert_eq!(g["changed"], 0, "{g}");
        assert_eq!(g["running"], g["candidate"], "{g}");
    }
    assert_eq!(
        group(&report, "KeyError")["candidate"],
        serde_json::json!({"unmatched": 2})
    );
    assert_eq!(report["policies"][0]["name"], "slow-retry");
    assert_eq!(
        report["policies"][0]["outcomes"],
        serde_json::json!({"retry_now": 5})
    );

    // The running file itself changes nothing.
    let same = simulate(&daemon, SLOW_POLICIES).expect(200);
    assert_eq!(
        (same["changed_jobs"].clone(), same["uncertain"].clone()),
        (0.into(), 0.into())
    );

    assert_same(&before, &rq_data(&mut con));
    // 5 in backoff and 3 waiting for purge_after, as before.
    let listed = daemon.get("/api/v1/jobs/failed?state=waiting").expect(200);
    assert_eq!(
        listed["total"], 8,
        "the running decisions are unchanged: {listed}"
    );
}

#[test]
fn a_whole_config_is_simulated_by_its_policies_and_its_other_sections_named() {
    let (redis, daemon) = start(SLOW_POLICIES);
    backlog(&mut redis.conn());
    daemon.scan();
    let whole = format!(
        "[redis]\nurl = \"redis://elsewhere:6379/0\"\n[http]\nauth_token_file = \"/nonexistent/token\"\n{}",
        faster()
    );
    let report = simulate(&daemon, &whole).expect(200);
    assert_eq!(
        report["ignored_sections"],
        serde_json::json!(["redis", "http"])
    );
    assert_eq!(report["changed_jobs"], 5, "{report}");
}

#[test]
fn an_invalid_file_is_refused_with_every_problem_located_like_check_config() {
    let (_redis, daemon) = start(SLOW_POLICIES);
    let bad = "[[policy]]\nname = \"a\"\nmax_attempts = 0\n[[policy]]\nname = \"a\"\n";
    let answer = simulate(&daemon, bad);
    assert_eq!(answer.status, 400, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["code"], "invalid_policy_file");
    let problems = body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{body}");
    assert_eq!(
        (problems[0]["line"].clone(), problems[0]["column"].clone()),
        (3.into(), 16.into())
    );
    assert_eq!(problems[0]["key"], "policy[1].max_attempts");
    assert_eq!(problems[1]["key"], "policy[2].name");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("candidate:3:16: policy[1].max_attempts: "),
        "{body}"
    );

    let typo = simulate(&daemon, "[[policy]]\nname = \"a\"\nmax_attempt = 3\n");
    assert_eq!(typo.status, 400);
    let typo = typo.json();
    assert_eq!(typo["problems"][0]["line"], 3, "{typo}");
    assert!(
        typo["error"].as_str().unwrap().contains("max_attempt"),
        "{typo}"
    );

    let not_text = daemon.raw(
        "POST",
        "/api/v1/policies/simulate",
        &[("Content-Type", "application/toml")],
        &[0xff, 0xfe],
    );
    not_text.expect_error(400, "invalid_body");
}

#[test]
fn an_oversize_file_a_misspelt_parameter_and_a_cross_site_page_are_refused() {
    let (_redis, daemon) = start(SLOW_POLICIES);
    let big = format!("# {}\n{}", "x".repeat(70 * 1024), SLOW_POLICIES);
    simulate(&daemon, &big).expect_error(413, "payload_too_large");
    daemon
        .raw(
            "POST",
            "/api/v1/policies/simulate?dry_run=true",
            &[("Content-Type", "application/toml")],
            SLOW_POLICIES.as_bytes(),
        )
        .expect_error(400, "unknown_parameter");
    daemon
        .raw(
            "POST",
            "/api/v1/policies/simulate",
            &[
                ("Content-Type", "application/toml"),
                ("Origin", "http://evil.example"),
                ("Sec-Fetch-Site", "cross-site"),
            ],
            SLOW_POLICIES.as_bytes(),
        )
        .expect_error(403, "cross_site");
    daemon
        .get("/api/v1/policies/simulate")
        .expect_error(405, "method_not_allowed");
}

#[test]
fn a_read_token_may_simulate_although_it_may_not_write() {
    let redis = RedisServer::start();
    let tokens =
        "\n[[http.tokens]]\nname = \"viewer\"\nrole = \"read\"\ntoken = \"viewer-secret-7f3a9c\"\n";
    let mut config = DaemonConfig::new(&redis.url(), &format!("{SLOW_POLICIES}\n{tokens}"));
    config.auth_token = Some("operator-secret-9c2d4e".into());
    let daemon = Daemon::start_ready(&config);
    let viewer = [
        ("Authorization", "Bearer viewer-secret-7f3a9c"),
        ("Content-Type", "application/toml"),
    ];
    let report = daemon
        .raw(
            "POST",
            "/api/v1/policies/simulate",
            &viewer,
            faster().as_bytes(),
        )
        .expect(200);
    assert_eq!(report["jobs"], 0, "{report}");
    daemon
        .raw("POST", "/api/v1/supervisor/scan", &viewer[..1], b"")
        .expect_error(403, "forbidden");
    daemon
        .raw(
            "POST",
            "/api/v1/policies/simulate",
            &[("Content-Type", "application/toml")],
            faster().as_bytes(),
        )
        .expect_error(401, "unauthorized");
    // The document says so: the route's 403 is only the cross-site guard's.
    let doc = daemon.get("/api/v1/openapi.json").expect(200);
    let post = &doc["paths"]["/api/v1/policies/simulate"]["post"]["responses"];
    let refused = post["403"]["description"].as_str().unwrap();
    assert!(refused.starts_with("cross_site"), "{refused}");
    assert!(post["401"].is_object(), "{post}");
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

fn check_config(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("--config")
        .arg(config)
        .arg("check-config")
        .args(args)
        .env_remove("RQ_RETRYD_REDIS_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run rq-retryd")
}

/// Every key with its DUMP (no daemon runs here, so nothing else writes).
fn digest(con: &mut redis::Connection) -> Vec<(String, Vec<u8>)> {
    let mut keys: Vec<String> = con.keys("*").unwrap();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let value = content(con, &k);
            (k, value)
        })
        .collect()
}

#[test]
fn check_config_simulate_reads_redis_without_a_daemon_and_writes_nothing() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    backlog(&mut con);
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        &dir,
        "config.toml",
        &format!("[redis]\nurl = \"{}\"\n{SLOW_POLICIES}", redis.url()),
    );
    let candidate = write(&dir, "candidate.toml", &faster());
    let before = digest(&mut con);

    let out = check_config(&config, &["--simulate", candidate.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("simulated 10 failed jobs"), "{text}");
    assert!(text.contains("5 jobs in 1 group would change:"), "{text}");
    assert!(
        text.contains(&format!(
            "  default {SEND} ConnectionError: 5 wait -> retry_now"
        )),
        "{text}"
    );

    let out = check_config(
        &config,
        &["--simulate", candidate.to_str().unwrap(), "--json"],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["source"], "redis");
    assert_eq!(report["index_as_of"], Value::Null);
    assert_eq!(
        group(&report, "ConnectionError")["candidate"],
        serde_json::json!({"retry_now": 5})
    );
    assert_eq!(group(&report, "KeyError")["changed"], 0);
    assert_same(&before, &digest(&mut con));

    let bad = write(
        &dir,
        "bad.toml",
        "[[policy]]\nname = \"a\"\nmax_attempts = 0\n",
    );
    let out = check_config(&config, &["--simulate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:16: policy[1].max_attempts: "),
        "{err}"
    );
}

/// The index keeps neither `job.meta` nor the traceback: a candidate that matches on them
/// cannot be decided from it, and says so, with the fact, rather than guessing.
#[test]
fn what_the_index_does_not_hold_is_counted_as_uncertain_with_the_missing_fact() {
    let (redis, daemon) = start(SLOW_POLICIES);
    backlog(&mut redis.conn());
    daemon.scan();
    let by_meta = format!(
        "[[policy]]\nname = \"acme\"\nmeta = {{ tenant = \"acme\" }}\naction = \"ignore\"\n{SLOW_POLICIES}"
    );
    let report = simulate(&daemon, &by_meta).expect(200);
    assert_eq!(report["jobs"], 10, "{report}");
    assert_eq!(report["uncertain"], 10, "{report}");
    assert_eq!(report["uncertain_because"], serde_json::json!({"meta": 10}));
    assert_eq!(report["changed_jobs"], 0, "{report}");
    assert_eq!(report["candidate"], serde_json::json!({}), "{report}");

    let by_text = format!(
        "{SLOW_POLICIES}[[policy]]\nname = \"timeouts\"\nerror_pattern = \"went wrong\"\naction = \"purge\"\n"
    );
    let report = simulate(&daemon, &by_text).expect(200);
    // Only the unmatched KeyErrors reach the new last policy.
    assert_eq!(
        report["uncertain_because"],
        serde_json::json!({"traceback": 2})
    );
    assert_eq!(group(&report, "ConnectionError")["uncertain"], 0);
}

/// A candidate's due requeue that its `hold_when` holds back is `held`, not `retry_now`, by
/// the rule the supervisor applies (here: no live RQ worker listens to `default`), in the API
/// and in `check-config --simulate`; once a worker is alive, the same file retries them now.
#[test]
fn a_due_requeue_held_back_by_hold_when_is_simulated_as_held() {
    let (redis, mut con, daemon) = indexed_backlog();
    let candidate = faster().replace(
        "step = \"30m\" }",
        "step = \"30m\" }\nhold_when = { no_workers = true }",
    );
    assert_ne!(candidate, faster());

    let report = simulate(&daemon, &candidate).expect(200);
    let conn = group(&report, "ConnectionError");
    assert_eq!(conn["candidate"], serde_json::json!({"held": 5}), "{conn}");
    assert_eq!(
        conn["moves"],
        serde_json::json!([{"from": "wait", "to": "held", "jobs": 5}])
    );

    let dir = tempfile::tempdir().unwrap();
    let config = write(
        &dir,
        "config.toml",
        &format!("[redis]\nurl = \"{}\"\n{SLOW_POLICIES}", redis.url()),
    );
    let file = write(&dir, "candidate.toml", &candidate);
    let out = check_config(&config, &["--simulate", file.to_str().unwrap(), "--json"]);
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        group(&cli, "ConnectionError")["candidate"],
        serde_json::json!({"held": 5}),
        "{cli}"
    );

    // A live worker on `default` (RQ's registration: its key in the queue's worker set).
    let _: () = con.sadd("rq:workers:default", "rq:worker:w1").unwrap();
    let _: () = con.hset("rq:worker:w1", "state", "idle").unwrap();
    daemon.wait_until(
        "the worker is seen (the world is read at most once a second)",
        |d| {
            group(&simulate(d, &candidate).expect(200), "ConnectionError")["candidate"]
                == serde_json::json!({"retry_now": 5})
        },
    );
}
