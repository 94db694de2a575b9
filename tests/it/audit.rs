//! The audit trail answers "who did what": `GET /api/v1/audit` filtered by who, action, queue,
//! job id and time, paged with a cursor through the whole capped stream, and the supervisor's
//! automatic writes folded so that people's actions stay in it. Against a real redis-server
//! and a real `rq-retryd run` over real sockets.
//!
//! See: issue 22, item 4 ("the supervisor wrote 598 entries in 13 minutes, so a person's action
//! scrolls out in 3 minutes; a bulk entry's 'why' is the route, not the filter").

use crate::support;

use std::time::Duration;

use chrono::{Timelike, Utc};
use redis::Commands;
use serde_json::Value;

use support::api::*;
use support::http::{Daemon, DaemonConfig};
use support::jobs::FailedJob;
use support::RedisServer;

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

/// Two operators with tokens of their own, besides the daemon's `auth_token`.
const PEOPLE: &str = r#"
[[http.tokens]]
name = "ops-alice"
role = "operate"
token = "alice-s3cret"

[[http.tokens]]
name = "ops-bob"
role = "operate"
token = "bob-s3cret"
"#;

fn entries(page: &Value) -> &Vec<Value> {
    page["entries"].as_array().expect("entries")
}

/// The ids an entry lists.
fn listed(entry: &Value) -> Vec<String> {
    serde_json::from_value(entry["job_ids"].clone()).expect("job_ids")
}

/// Waits, if needed, until a minute has at least 20 s left: the supervisor's entries fold
/// within one minute, and a test that writes twice must not straddle two.
fn early_in_a_minute() {
    while Utc::now().second() >= 40 {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_failed(con: &mut redis::Connection, prefix: &str, n: usize, queue: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}{i:03}");
            FailedJob::new(&id).queue(queue).write(con);
            id
        })
        .collect()
}

#[test]
fn the_supervisors_writes_fold_into_entries_of_up_to_100_jobs_and_a_persons_never_do() {
    early_in_a_minute();
    let (redis, daemon) = start(AUTO_AND_HANDS_OFF);
    let mut con = redis.conn();
    // 120 requeues in one scan: three script calls of 50, 50 and 20 jobs.
    let mut ids = write_failed(&mut con, "a", 120, "auto");
    daemon.scan();
    // The mirror has seen the first entries before the next pass folds into them.
    let first = daemon.get("/api/v1/audit?who=supervisor").expect(200);
    assert_eq!(entries(&first).len(), 2, "{first}");
    // A second pass in the same minute (the due timers' many small batches) adds its five
    // jobs to the open entry, which leaves its place.
    ids.extend(write_failed(&mut con, "b", 5, "auto"));
    daemon.scan();
    let page = daemon.get("/api/v1/audit?who=supervisor").expect(200);
    let auto = entries(&page);
    assert_eq!(auto.len(), 2, "100 + 25 jobs: {page}");
    assert_eq!(auto[0]["count"], 25, "{page}");
    assert_eq!(auto[1]["count"], 100, "{page}");
    assert!(
        auto[0]["last_at"].is_string(),
        "a folded entry says when it last grew: {page}"
    );
    for e in auto {
        assert_eq!(e["action"], "requeue");
        assert_eq!(e["why"], "retry-now");
        assert_eq!(e["queue"], "auto");
        assert_eq!(
            listed(e).len() as u64,
            e["count"].as_u64().unwrap(),
            "every id listed"
        );
    }
    let mut all: Vec<String> = auto.iter().flat_map(listed).collect();
    all.sort();
    ids.sort();
    assert_eq!(all, ids, "each requeued job in exactly one entry");
    let raw_len: usize = con.xlen("rq:retryd:audit").unwrap();
    assert_eq!(
        raw_len, 2,
        "the replaced entries are gone from the stream itself"
    );

    // A person's bulk action is one entry per script call, never folded.
    write_failed(&mut con, "m", 60, "manual");
    daemon.scan();
    daemon
        .post("/api/v1/jobs/failed/retry-all?queue=manual")
        .expect(200);
    let people = daemon.get("/api/v1/audit?people_only=true").expect(200);
    let counts: Vec<u64> = entries(&people)
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 60, "{people}");
    assert_eq!(counts.len(), 2, "50 + 10: {people}");
}

#[test]
fn every_filter_narrows_the_audit_to_what_it_names() {
    let redis = RedisServer::start();
    let mut config = DaemonConfig::new(&redis.url(), &format!("{AUTO_AND_HANDS_OFF}\n{PEOPLE}"));
    config.auth_token = Some("lead-s3cret".into());
    let daemon = Daemon::start_ready(&config);
    let mut con = redis.conn();
    let as_user = |token: &str, method: &str, path: &str| {
        let auth = format!("Bearer {token}");
        daemon.raw(method, path, &[("Authorization", &auth)], b"")
    };
    let before = Utc::now().timestamp() - 1;
    write_failed(&mut con, "auto-", 3, "auto");
    FailedJob::new("clear").queue("emails").write(&mut con);
    FailedJob::new("%2F").write(&mut con);
    FailedJob::new("é/%2F").queue("emails").write(&mut con);
    FailedJob::new("t1")
        .queue("emails")
        .exception("TimeoutError", "slow")
        .write(&mut con);
    daemon.scan();
    as_user("alice-s3cret", "POST", "/api/v1/failed-jobs/clear/retry").expect(200);
    as_user("bob-s3cret", "DELETE", "/api/v1/failed-jobs/%252F").expect(200);
    as_user("alice-s3cret", "POST", "/api/v1/supervisor/pause").expect(200);
    as_user("alice-s3cret", "POST", "/api/v1/supervisor/resume").expect(200);
    as_user("bob-s3cret", "DELETE", "/api/v1/failed-jobs/%C3%A9%2F%252F").expect(200);
    as_user(
        "bob-s3cret",
        "POST",
        "/api/v1/jobs/failed/retry-all?queue=emails&exception=TimeoutError&failed_after=1h",
    )
    .expect(200);

    let get = |query: &str| daemon.get(&format!("/api/v1/audit?{query}")).expect(200);
    let whats = |query: &str| -> Vec<String> {
        entries(&get(query))
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e["who"].as_str().unwrap(),
                    e["action"].as_str().unwrap(),
                    e["queue"].as_str().unwrap()
                )
            })
            .collect()
    };
    let alice = "ops-alice@127.0.0.1";
    let bob = "ops-bob@127.0.0.1";
    assert_eq!(
        whats("who=alice"),
        [
            format!("{alice} resume "),
            format!("{alice} pause "),
            format!("{alice} requeue emails")
        ]
    );
    assert_eq!(whats("who=ALICE"), whats("who=alice"), "case-insensitive");
    assert_eq!(whats("who=supervisor"), ["supervisor requeue auto"]);
    let people = whats("people_only=true");
    assert_eq!(people.len(), 6, "{people:?}");
    assert!(
        people.iter().all(|w| !w.starts_with("supervisor")),
        "{people:?}"
    );
    assert_eq!(
        whats("action=purge"),
        [
            format!("{bob} purge emails"),
            format!("{bob} purge default")
        ]
    );
    assert_eq!(
        whats("action=purge&who=bob&queue=default"),
        [format!("{bob} purge default")]
    );
    assert_eq!(whats("queue=auto"), ["supervisor requeue auto"]);
    // Any id, as it is: `clear`, `%2F`, non-ASCII.
    assert_eq!(whats("job_id=clear"), [format!("{alice} requeue emails")]);
    assert_eq!(whats("job_id=%252F"), [format!("{bob} purge default")]);
    assert_eq!(
        whats("job_id=%C3%A9%2F%252F"),
        [format!("{bob} purge emails")]
    );
    assert!(whats("job_id=%2F").is_empty(), "a part of an id is no id");
    assert_eq!(whats("job_id=auto-001&people_only=true").len(), 0);

    // The bulk entry says who and the selection it used, not only the route.
    let bob_retries = get("who=bob&action=requeue");
    let bulk = &entries(&bob_retries)[0];
    assert_eq!(
        bulk["why"],
        "POST /api/v1/jobs/failed/retry-all?queue=emails&exception=TimeoutError&failed_after=1h"
    );
    assert_eq!(listed(bulk), ["t1"]);

    // Times: relative, unix seconds, RFC 3339; the range is inclusive.
    let everything = whats("limit=1000").len();
    assert_eq!(everything, 7);
    assert_eq!(whats("since=1h").len(), everything);
    assert_eq!(whats(&format!("since={before}")).len(), everything);
    assert!(whats(&format!("until={before}")).is_empty());
    assert!(whats("since=2999-01-01T00:00:00Z").is_empty());
    assert_eq!(whats("until=2999-01-01T00:00:00Z").len(), everything);
    assert_eq!(whats("since=1h&until=0s&who=supervisor").len(), 1);
}

#[test]
fn the_cursor_pages_through_the_whole_stream_with_no_entry_lost_or_repeated() {
    let (redis, daemon) = start(AUTO_AND_HANDS_OFF);
    let mut con = redis.conn();
    let key = "rq:retryd:audit";
    let fill = |con: &mut redis::Connection, n: usize, from: usize| {
        let mut pipe = redis::pipe();
        for i in from..from + n {
            let who = if i % 10 == 0 {
                "ops-carol@10.0.0.7"
            } else {
                "supervisor"
            };
            let ids = format!(r#"["j{i}","k{i}"]"#);
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("at")
                .arg(Utc::now().to_rfc3339())
                .arg("who")
                .arg(who)
                .arg("action")
                .arg("requeue")
                .arg("why")
                .arg("p")
                .arg("queue")
                .arg("q")
                .arg("count")
                .arg(2)
                .arg("job_ids")
                .arg(format!("j{i},k{i}"))
                .arg("job_ids_json")
                .arg(ids);
        }
        let _: () = pipe.query(con).unwrap();
    };
    fill(&mut con, 2_500, 0);
    let truth = |con: &mut redis::Connection, people: bool| -> Vec<String> {
        let all: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .query(con)
            .unwrap();
        all.into_iter()
            .filter(|(_, f)| !people || f.iter().any(|(k, v)| k == "who" && v != "supervisor"))
            .map(|(id, _)| id)
            .collect()
    };
    let walk = |query: &str, limit: usize, between: &mut dyn FnMut()| -> Vec<String> {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let after = cursor
                .as_ref()
                .map(|c| format!("&cursor={c}"))
                .unwrap_or_default();
            let page = daemon
                .get(&format!("/api/v1/audit?limit={limit}{query}{after}"))
                .expect(200);
            let got = entries(&page);
            assert!(got.len() <= limit);
            seen.extend(got.iter().map(|e| e["id"].as_str().unwrap().to_string()));
            between();
            match page["next_cursor"].as_str() {
                Some(next) => {
                    assert!(
                        !got.is_empty(),
                        "a page with a next cursor has entries: {page}"
                    );
                    cursor = Some(next.to_string());
                }
                None => return seen,
            }
        }
    };
    assert_eq!(walk("", 97, &mut || {}), truth(&mut con, false));
    assert_eq!(
        walk("&people_only=true", 7, &mut || {}),
        truth(&mut con, true)
    );

    // Entries appended while a person pages do not shift the older pages.
    let expected = truth(&mut con, false);
    let mut appended = 0;
    let seen = walk("", 500, &mut || {
        fill(&mut redis.conn(), 3, 10_000 + appended);
        appended += 3;
    });
    assert_eq!(seen, expected);

    // The cap trims the oldest: the mirror drops them too.
    let _: () = redis::cmd("XTRIM")
        .arg(key)
        .arg("MAXLEN")
        .arg(1_000)
        .query(&mut con)
        .unwrap();
    assert_eq!(walk("", 1000, &mut || {}), truth(&mut con, false));
    // The key replaced by hand with other ids: read whole again.
    let _: () = con.del(key).unwrap();
    let _: () = redis::cmd("XADD")
        .arg(key)
        .arg("5-1")
        .arg("who")
        .arg("ops-dan")
        .arg("job_ids_json")
        .arg(&b"[\"\xff\xfe\"]"[..])
        .query(&mut con)
        .unwrap();
    let page = daemon.get("/api/v1/audit").expect(200);
    assert_eq!(entries(&page).len(), 1, "{page}");
    assert_eq!(page["entries"][0]["id"], "5-1");
    assert_eq!(
        page["entries"][0]["job_ids"],
        serde_json::json!(["\u{fffd}\u{fffd}"]),
        "an id that is not UTF-8 is shown, not fatal"
    );
    assert_eq!(page["stream_len"], 1);
}

#[test]
fn bad_filter_values_are_refused_with_a_clear_code() {
    let (redis, daemon) = start(AUTO_AND_HANDS_OFF);
    let long = "x".repeat(1025);
    let cases: Vec<(String, &str)> = vec![
        ("action=teleport".into(), "invalid_query"),
        ("action=Requeue".into(), "invalid_query"),
        ("people_only=maybe".into(), "invalid_query"),
        ("limit=0".into(), "invalid_limit"),
        ("limit=1001".into(), "invalid_limit"),
        ("limit=-1".into(), "invalid_query"),
        ("cursor=abc".into(), "invalid_cursor"),
        ("cursor=1-2-3".into(), "invalid_cursor"),
        ("since=yesterday".into(), "invalid_time"),
        ("until=1x".into(), "invalid_time"),
        ("who=".into(), "invalid_filter"),
        ("job_id=".into(), "invalid_filter"),
        (format!("queue={long}"), "invalid_filter"),
        ("acton=purge".into(), "unknown_parameter"),
        ("jobid=x".into(), "unknown_parameter"),
    ];
    for (query, code) in cases {
        daemon
            .get(&format!("/api/v1/audit?{query}"))
            .expect_error(400, code);
    }
    let mut con = redis.conn();
    let _: () = con.set("rq:retryd:audit", "stray").unwrap();
    daemon
        .get("/api/v1/audit?who=x")
        .expect_error(409, "corrupt_audit");
}

/// The audit prologue every write script runs (`gate.lua`), with a body that appends the entry
/// of one call that changed every job named after the six gate arguments: what a write script
/// with a larger batch than the executor's 50 would append.
const ONE_CALL: &str = concat!(
    include_str!("../../src/executor/scripts/gate.lua"),
    "\nlocal no = audit_refusal()\nif no then return no end\n",
    "audit({unpack(ARGV, 7)})\nreturn 1\n"
);

/// A call that acts on more jobs than the comma-joined `job_ids` holds (100) lists every one
/// in `job_ids_json`, so the audit's `job_id` filter and the job's history find the last one
/// as they find the first; `job_ids` keeps the first 100 for older readers.
#[test]
fn every_job_of_a_call_beyond_the_first_100_is_found_by_its_id() {
    let (redis, daemon) = start(AUTO_AND_HANDS_OFF);
    let mut con = redis.conn();
    let ids: Vec<String> = (0..150).map(|i| format!("big,{i:03}")).collect();
    let at = Utc::now().to_rfc3339();
    let gate = [
        "",
        "ops-carol@10.0.0.9",
        "POST /api/v1/x",
        "purge",
        &at,
        "emails",
    ];
    let done: i64 = redis::cmd("EVAL")
        .arg(ONE_CALL)
        .arg(3)
        .arg(&["rq:retryd:switches", "rq:retryd:lease", "rq:retryd:audit"])
        .arg(&gate)
        .arg(&ids)
        .query(&mut con)
        .unwrap();
    assert_eq!(done, 1);
    let raw: Vec<(String, std::collections::HashMap<String, String>)> =
        con.xrange_all("rq:retryd:audit").unwrap();
    assert_eq!(raw.len(), 1);
    let fields = &raw[0].1;
    assert_eq!(fields["count"], "150");
    assert_eq!(
        fields["job_ids"],
        ids[..100].join(","),
        "old readers' field"
    );
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&fields["job_ids_json"]).unwrap(),
        ids
    );

    for id in [&ids[0], &ids[99], &ids[100], &ids[149]] {
        let q = urlencoding(id);
        let page = daemon.get(&format!("/api/v1/audit?job_id={q}")).expect(200);
        assert_eq!(entries(&page).len(), 1, "{id}: {page}");
        assert_eq!(listed(&entries(&page)[0]).len(), 150, "{page}");
        let history = daemon
            .get(&format!("/api/v1/failed-jobs/{q}/history"))
            .expect(200);
        let events = history["events"].as_array().unwrap();
        assert!(
            events
                .iter()
                .any(|e| e["action"] == "purge" && e["who"] == "ops-carol@10.0.0.9"),
            "{id}: {history}"
        );
    }
}

/// `,` as `%2C` (the only character of these ids a query or path must escape).
fn urlencoding(id: &str) -> String {
    id.replace(',', "%2C")
}

/// `n` entries as the write scripts append them, of 20 ids each; entry `needle_at` also lists
/// `needle`.
fn seed_stream(con: &mut redis::Connection, n: usize, needle_at: usize, needle: &str) {
    let mut pipe = redis::pipe();
    for e in 0..n {
        let mut ids: Vec<String> = (0..20).map(|i| format!("seed-{e}-{i}")).collect();
        if e == needle_at {
            ids.push(needle.to_string());
        }
        pipe.cmd("XADD")
            .arg("rq:retryd:audit")
            .arg("*")
            .arg(&[("at", "2026-12-03T12:00:00+00:00"), ("who", "supervisor")])
            .arg(&[("action", "requeue"), ("why", "p"), ("queue", "q")])
            .arg("count")
            .arg(ids.len())
            .arg("job_ids")
            .arg(ids.join(","))
            .arg("job_ids_json")
            .arg(serde_json::to_string(&ids).unwrap())
            .ignore();
    }
    pipe.query::<()>(con).unwrap();
}

/// How many XRANGE calls Redis has answered since the last CONFIG RESETSTAT.
fn xrange_calls(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_xrange:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// The daemon reads the audit stream into its mirror when it starts, so the first audit or
/// history request reads only the tail (three XRANGEs: the first entry, the tail, the entry
/// read back) instead of the whole stream (eight for 3,000 entries). A request that comes
/// while it is still reading answers the same.
#[test]
fn the_audit_mirror_is_warm_before_the_first_request() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    seed_stream(&mut con, 3000, 1234, "needle");
    let config = DaemonConfig::new(&redis.url(), AUTO_AND_HANDS_OFF);

    // As early as the daemon answers with Redis reached (before that an answer is 503
    // redis_unavailable, as it was once in CI): warm-up or not, the same answer.
    let early = Daemon::start_ready(&config);
    let page = early.get("/api/v1/audit?job_id=needle").expect(200);
    assert_eq!(entries(&page).len(), 1, "{page}");
    assert_eq!(page["stream_len"], 3000, "{page}");
    drop(early);

    let daemon = Daemon::start_ready(&config);
    daemon.wait_until("the audit mirror is warm", |d| {
        d.log().contains("audit mirror warmed") && d.log().contains("entries=3000")
    });
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .unwrap();
    let page = daemon.get("/api/v1/audit?job_id=needle").expect(200);
    assert_eq!(entries(&page).len(), 1, "{page}");
    assert_eq!(listed(&entries(&page)[0]).len(), 21);
    assert_eq!(xrange_calls(&mut con), 3, "only the tail was read");
    let history = daemon.get("/api/v1/failed-jobs/needle/history").expect(200);
    assert_eq!(history["events"][0]["source"], "audit", "{history}");
}
