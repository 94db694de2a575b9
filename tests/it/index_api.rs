//! The failure index behind the HTTP API (issue 12): a failure is read from Redis once, the
//! listing and the groups answer from memory (Redis is asked only for the page's jobs, and no
//! request walks the keyspace), rq-retryd's own writes show in the next answer, a notified
//! failure is listed without a scan, a reload that changes the policies re-decides, and a
//! corrupt job stays listed as undecodable. Against a real redis-server and `rq-retryd run`.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::Value;
use support::http::{metric, parse_metrics, Daemon, DaemonConfig};
use support::jobs::FailedJob;
use support::RedisServer;

/// Retries timeouts after an hour (so nothing is requeued while a test looks), drops bad
/// input after a week.
const SLOW: &str = r#"
[[policy]]
name = "slow-retry"
exceptions = ["ConnectionError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "1h" }

[[policy]]
name = "drop-bad-input"
exceptions = ["ValueError"]
action = "purge"
purge_after = "7d"
"#;

const RENDER: &str = "app.workers.reports.render_report";
const WELCOME: &str = "app.workers.emails.send_welcome";

fn job(id: &str, queue: &str, func: &str, exc: &str, secs_ago: i64) -> FailedJob {
    let mut j = FailedJob::new(id)
        .queue(queue)
        .exception(exc, &format!("{id} went wrong"))
        .failed_secs_ago(secs_ago);
    j.func = func.to_string();
    j
}

/// `cmdstat_<name>` calls from `INFO commandstats`.
fn command_calls(con: &mut redis::Connection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Commands Redis ran while `f` ran, by name (without the INFO calls that measure it).
fn commands_during(con: &mut redis::Connection, f: impl FnOnce()) -> BTreeMap<String, u64> {
    let before = command_calls(con);
    f();
    let after = command_calls(con);
    after
        .into_iter()
        .filter(|(name, _)| name != "info")
        .filter_map(|(name, n)| {
            let d = n - before.get(&name).copied().unwrap_or(0);
            (d > 0).then_some((name, d))
        })
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    list["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs in {list}"))
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect()
}

fn last_scan_at(daemon: &Daemon) -> Value {
    daemon.get("/api/v1/supervisor").expect(200)["last_scan"]["finished_at"].clone()
}

#[test]
fn a_failure_is_read_once_and_every_answer_costs_redis_what_it_returns() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    for i in 0..400 {
        let (queue, func, exc) = match i % 4 {
            0 | 1 => ("default", RENDER, "ConnectionError"),
            2 => ("emails", WELCOME, "ConnectionError"),
            _ => ("emails", WELCOME, "ValueError"),
        };
        job(&format!("j{i}"), queue, func, exc, 60 + i).write(&mut con);
    }
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), SLOW));

    // Scans after the first read no job again: the index and the decision memory hold them.
    let rescans = commands_during(&mut con, || {
        daemon.scan();
        daemon.scan();
    });
    assert_eq!(
        rescans.get("hmget"),
        None,
        "a re-scan read jobs: {rescans:?}"
    );
    assert_eq!(rescans.get("xrevrange"), None, "{rescans:?}");

    // A page of 10: about 10 job reads, whatever the registry's size; no SCAN.
    let mut page = Value::Null;
    let listing = commands_during(&mut con, || {
        page = daemon.get("/api/v1/jobs/failed?limit=10").expect(200);
    });
    assert_eq!(page["total"], 400, "{page}");
    assert_eq!(page["source"], "index", "{page}");
    assert_eq!(ids(&page).len(), 10);
    assert_eq!(listing.get("hmget"), Some(&10), "{listing:?}");
    let total: u64 = listing.values().sum();
    assert!(
        total <= 40,
        "a 10-job page cost {total} commands: {listing:?}"
    );
    assert_eq!(listing.get("scan"), None, "{listing:?}");

    // Groups, stats and a filtered deep page: no job read, no SCAN.
    let mut groups = Value::Null;
    let overview = commands_during(&mut con, || {
        groups = daemon.get("/api/v1/jobs/failed/groups").expect(200);
        daemon.get("/api/v1/jobs/stats").expect(200);
        daemon
            .get("/api/v1/jobs/failed?queue=emails&exception=ValueError&limit=5&offset=95")
            .expect(200);
    });
    assert_eq!(overview.get("scan"), None, "{overview:?}");
    assert!(
        overview.get("hmget").copied().unwrap_or(0) <= 5,
        "{overview:?}"
    );
    let total: u64 = overview.values().sum();
    assert!(
        total <= 60,
        "three answers cost {total} commands: {overview:?}"
    );
    let counts: BTreeMap<(String, String, String), u64> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                (
                    g["queue"].as_str().unwrap().to_string(),
                    g["func_name"].as_str().unwrap().to_string(),
                    g["exc_type"].as_str().unwrap().to_string(),
                ),
                g["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: BTreeMap<(String, String, String), u64> = [
        (("default", RENDER, "ConnectionError"), 200),
        (("emails", WELCOME, "ConnectionError"), 100),
        (("emails", WELCOME, "ValueError"), 100),
    ]
    .into_iter()
    .map(|((q, f, e), n)| ((q.to_string(), f.to_string(), e.to_string()), n))
    .collect();
    assert_eq!(counts, expected, "{groups}");
    assert_eq!(groups["groups"][0]["policy"], "slow-retry");
    assert_eq!(groups["groups"][0]["by_state"]["waiting"], 200, "{groups}");

    // A bulk dry run counts from memory: no job read.
    let mut dry = Value::Null;
    let counted = commands_during(&mut con, || {
        dry = daemon
            .post("/api/v1/jobs/failed/retry-all?exception=ConnectionError&dry_run=true")
            .expect(200);
    });
    assert_eq!(dry["matched_count"], 300, "{dry}");
    assert_eq!(dry["by_exception"]["ConnectionError"], 300, "{dry}");
    assert_eq!(dry["job_ids"].as_array().unwrap().len(), 100, "{dry}");
    assert_eq!(dry["job_ids_truncated"], true, "{dry}");
    assert_eq!(counted.get("hmget"), None, "{counted:?}");
    assert_eq!(counted.get("scan"), None, "{counted:?}");
}

#[test]
fn the_listing_filters_combine_and_page_in_failure_time_order() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    // Failed 100..=129 s ago, alternating queues and kinds.
    let seeded = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    for i in 0..30i64 {
        let (queue, func, exc) = if i % 3 == 0 {
            ("emails", WELCOME, "ValueError")
        } else {
            ("default", RENDER, "ConnectionError")
        };
        job(&format!("f{i:02}"), queue, func, exc, 100 + i).write(&mut con);
    }
    FailedJob::new("unmatched")
        .exception("KeyError", "nope")
        .failed_secs_ago(10)
        .write(&mut con);
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), SLOW));

    // Newest first by default: f00 failed last.
    let all = daemon.get("/api/v1/jobs/failed?limit=1000").expect(200);
    assert_eq!(all["total"], 31);
    let newest = ids(&all);
    assert_eq!(newest[0], "unmatched");
    assert_eq!(newest[1], "f00");
    assert_eq!(newest[30], "f29");
    // Oldest first, paged: the pages are the reversed order cut in threes, without overlap.
    let mut paged = Vec::new();
    for offset in (0..31).step_by(3) {
        let page = daemon
            .get(&format!(
                "/api/v1/jobs/failed?order=oldest&limit=3&offset={offset}"
            ))
            .expect(200);
        assert_eq!(page["total"], 31);
        paged.extend(ids(&page));
    }
    let mut reversed = newest.clone();
    reversed.reverse();
    assert_eq!(paged, reversed);

    let select = |query: &str| -> BTreeSet<String> {
        let page = daemon
            .get(&format!("/api/v1/jobs/failed?limit=1000&{query}"))
            .expect(200);
        let got: BTreeSet<String> = ids(&page).into_iter().collect();
        assert_eq!(page["total"], got.len() as u64, "{query}: {page}");
        got
    };
    let expect = |pred: &dyn Fn(i64) -> bool| -> BTreeSet<String> {
        (0..30)
            .filter(|i| pred(*i))
            .map(|i| format!("f{i:02}"))
            .collect()
    };
    assert_eq!(select("exception=ValueError"), expect(&|i| i % 3 == 0));
    let mut default_queue = expect(&|i| i % 3 != 0);
    default_queue.insert("unmatched".to_string());
    assert_eq!(
        select("queue=default&function=app.workers.*"),
        default_queue
    );
    assert_eq!(select("policy=drop-bad-input"), expect(&|i| i % 3 == 0));
    assert_eq!(select("state=waiting"), expect(&|_| true));
    assert_eq!(
        select("state=unmatched"),
        BTreeSet::from(["unmatched".to_string()])
    );
    // A time window: failed between 124.5 and 105.5 s before the seeding, ConnectionError only.
    assert_eq!(
        select(&format!(
            "failed_after={}&failed_before={}&exception=ConnectionError",
            seeded - 124.5,
            seeded - 105.5
        )),
        expect(&|i| i % 3 != 0 && (6..=24).contains(&i))
    );
    assert!(select("exception=ValueError&queue=default").is_empty());
    daemon
        .get("/api/v1/jobs/failed?state=sleepy")
        .expect_error(400, "invalid_query");
    daemon
        .get("/api/v1/jobs/failed?order=sideways")
        .expect_error(400, "invalid_query");
}

#[test]
fn rq_retryds_own_writes_show_in_the_next_answer_without_a_scan() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    for i in 0..6 {
        job(&format!("d{i}"), "default", RENDER, "ConnectionError", 60).write(&mut con);
    }
    for i in 0..4 {
        job(&format!("e{i}"), "emails", WELCOME, "ValueError", 60).write(&mut con);
    }
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), SLOW));
    let scanned = last_scan_at(&daemon);
    let gauge = |name: &str, queue: &str| {
        let text = daemon.get("/metrics").text();
        metric(&parse_metrics(&text), name, &[("queue", queue)])
    };
    assert_eq!(gauge("rq_retryd_failed_jobs", "default"), Some(6.0));
    assert_eq!(gauge("rq_retryd_waiting_jobs", "default"), Some(6.0));
    assert_eq!(gauge("rq_retryd_queued_jobs", "default"), Some(0.0));

    daemon.post("/api/v1/jobs/failed/d0/retry").expect(200);
    daemon.delete("/api/v1/jobs/failed/d1").expect(200);
    let list = daemon.get("/api/v1/jobs/failed?queue=default").expect(200);
    assert_eq!(list["total"], 4, "{list}");
    assert!(!ids(&list).contains(&"d0".to_string()), "{list}");
    assert!(!ids(&list).contains(&"d1".to_string()), "{list}");
    // The gauges moved with the actions, not at a scan.
    assert_eq!(gauge("rq_retryd_failed_jobs", "default"), Some(4.0));
    assert_eq!(gauge("rq_retryd_waiting_jobs", "default"), Some(4.0));
    assert_eq!(gauge("rq_retryd_queued_jobs", "default"), Some(1.0));
    daemon
        .post("/api/v1/jobs/failed/retry-all?queue=emails&exception=ValueError")
        .expect(200);
    let groups = daemon.get("/api/v1/jobs/failed/groups").expect(200);
    assert_eq!(groups["total"], 4, "{groups}");
    assert_eq!(groups["groups"].as_array().unwrap().len(), 1, "{groups}");
    assert_eq!(
        last_scan_at(&daemon),
        scanned,
        "no scan ran: the answers came from the writes"
    );
    // And Redis agrees.
    let queued: Vec<String> = con.lrange("rq:queue:emails", 0, -1).unwrap();
    assert_eq!(queued.len(), 4);
    assert_eq!(gauge("rq_retryd_failed_jobs", "emails"), Some(0.0));
    assert_eq!(gauge("rq_retryd_queued_jobs", "emails"), Some(4.0));
}

#[test]
fn a_notified_failure_is_listed_within_a_second_without_a_scan() {
    let redis = RedisServer::start_with(&["--notify-keyspace-events", "Kz"]);
    let mut con = redis.conn();
    job("early", "default", RENDER, "ConnectionError", 60).write(&mut con);
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), SLOW));
    let scanned = last_scan_at(&daemon);
    // Give the daemon's notification listener a moment to subscribe.
    std::thread::sleep(Duration::from_millis(300));

    job("late", "emails", WELCOME, "ValueError", 0).write(&mut con);
    let written = Instant::now();
    daemon.wait_until("the notified failure is listed", |d| {
        ids(&d.get("/api/v1/jobs/failed?queue=emails").expect(200)) == vec!["late".to_string()]
    });
    let took = written.elapsed();
    assert!(took < Duration::from_secs(3), "listed after {took:?}");
    assert_eq!(last_scan_at(&daemon), scanned, "no full scan ran");
    let late = daemon.get("/api/v1/jobs/failed?queue=emails").expect(200);
    assert_eq!(late["jobs"][0]["policy"], "drop-bad-input", "{late}");
    assert_eq!(late["jobs"][0]["state"], "waiting", "{late}");
}

#[test]
fn a_reload_that_changes_the_policies_re_decides_every_listed_job() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    for i in 0..5 {
        job(&format!("t{i}"), "default", RENDER, "ConnectionError", 60).write(&mut con);
    }
    // Reloaded with SIGHUP: a process.
    let daemon = Daemon::spawn_ready(&DaemonConfig::new(&redis.url(), SLOW));
    let before = daemon
        .get("/api/v1/jobs/failed?policy=slow-retry")
        .expect(200);
    assert_eq!(before["total"], 5, "{before}");

    let config = std::fs::read_to_string(daemon.config_path()).unwrap();
    let cut = config.find("[[policy]]").expect("policies in the config");
    let ignore = "[[policy]]\nname = \"leave-timeouts\"\nexceptions = [\"ConnectionError\"]\naction = \"ignore\"\n";
    std::fs::write(daemon.config_path(), format!("{}{ignore}", &config[..cut])).unwrap();
    daemon.signal("HUP");
    daemon.wait_until("the reloaded policy decides every job", |d| {
        d.get("/api/v1/jobs/failed?policy=leave-timeouts&state=ignored")
            .expect(200)["total"]
            == 5
    });
    let old = daemon
        .get("/api/v1/jobs/failed?policy=slow-retry")
        .expect(200);
    assert_eq!(old["total"], 0, "{old}");
}

#[test]
fn corrupt_and_orphaned_jobs_stay_listed_as_undecodable() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    job("fine", "default", RENDER, "ConnectionError", 60).write(&mut con);
    FailedJob::new("garbled")
        .field("ended_at", b"yesterday")
        .write(&mut con);
    FailedJob::new("orphan").write(&mut con);
    let _: () = con.del("rq:job:orphan").unwrap();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), SLOW));

    let broken = daemon
        .get("/api/v1/jobs/failed?state=undecodable")
        .expect(200);
    assert_eq!(broken["total"], 2, "{broken}");
    let listed: BTreeSet<String> = ids(&broken).into_iter().collect();
    assert_eq!(
        listed,
        BTreeSet::from(["garbled".to_string(), "orphan".to_string()])
    );
    for j in broken["jobs"].as_array().unwrap() {
        assert!(j["decode_error"].is_string(), "{j}");
        assert_eq!(j["state"], "undecodable", "{j}");
    }
    let groups = daemon.get("/api/v1/jobs/failed/groups").expect(200);
    assert_eq!(groups["total"], 3, "{groups}");
    assert_eq!(groups["undecodable"], 2, "{groups}");
    assert_eq!(groups["groups"].as_array().unwrap().len(), 1, "{groups}");
    // Left exactly as they were.
    assert!(con.exists::<_, bool>("rq:job:garbled").unwrap());
    let in_registry: Option<f64> = con.zscore("rq:failed:default", "orphan").unwrap();
    assert!(in_registry.is_some());
}

/// A standby keeps its own index (an observing pass: it reads and decides, writes nothing), so
/// it answers exactly as the active instance does, from memory; and each instance's index
/// follows the other's writes at once (the index events), with no scan in between.
#[test]
fn a_standby_answers_from_its_own_index_and_follows_the_other_instances_writes() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    for i in 0..12 {
        let exc = if i % 3 == 0 {
            "ValueError"
        } else {
            "ConnectionError"
        };
        job(&format!("s{i}"), "default", RENDER, exc, 60 + i).write(&mut con);
    }
    FailedJob::new("garbled")
        .field("ended_at", b"yesterday")
        .write(&mut con);
    let config = DaemonConfig::new(&redis.url(), SLOW);
    let (active, standby) = active_and_standby(&config);
    let strip = |mut v: Value| {
        let o = v.as_object_mut().unwrap();
        o.remove("as_of");
        v
    };
    for path in [
        "/api/v1/jobs/failed?limit=5&offset=3&order=oldest",
        "/api/v1/jobs/failed?exception=ValueError",
        "/api/v1/jobs/failed?state=undecodable",
        "/api/v1/jobs/failed/groups",
    ] {
        let (a, b) = (active.get(path).expect(200), standby.get(path).expect(200));
        assert_eq!(a["source"], "index", "{path}: {a}");
        assert_eq!(b["source"], "index", "{path}: {b}");
        assert_eq!(strip(a), strip(b), "{path}");
    }
    // The standby did not write: every job is still failed, none requeued.
    let failed: u64 = con.zcard("rq:failed:default").unwrap();
    assert_eq!(failed, 13);
    // Each instance's manual retry leaves the other's answers at once.
    let listed = |d: &Daemon| ids(&d.get("/api/v1/jobs/failed?limit=100").expect(200));
    for (writer, other, id) in [(&active, &standby, "s1"), (&standby, &active, "s2")] {
        assert!(listed(other).contains(&id.to_string()));
        writer
            .post(&format!("/api/v1/jobs/failed/{id}/retry"))
            .expect(200);
        assert!(
            !listed(writer).contains(&id.to_string()),
            "read-your-writes"
        );
        other.wait_until("the other instance's index follows the retry", |d| {
            !listed(d).contains(&id.to_string())
        });
    }
    assert_eq!(
        strip(active.get("/api/v1/jobs/failed/groups").expect(200)),
        strip(standby.get("/api/v1/jobs/failed/groups").expect(200))
    );
    let dry = "/api/v1/jobs/failed/retry-all?exception=ConnectionError&dry_run=true";
    let (a, b) = (active.post(dry).expect(200), standby.post(dry).expect(200));
    assert_eq!(a["matched_count"], 6, "{a}");
    assert_eq!(b["matched_count"], 6, "{b}");
    assert_eq!(a["skipped"], b["skipped"]);

    // A job deleted by someone else (as RQ's Job.delete does; no keyspace notifications
    // here) leaves both instances' counts within seconds, with no scan: each checks the
    // registries' counts every second. See: issue 21, item 4.
    let _: () = redis::pipe()
        .atomic()
        .zrem("rq:failed:default", "s4")
        .del("rq:job:s4")
        .query(&mut con)
        .unwrap();
    let deleted = Instant::now();
    for d in [&active, &standby] {
        d.wait_until("the deletion leaves the groups and the dry run", |d| {
            d.get("/api/v1/jobs/failed/groups").expect(200)["total"] == 10
                && d.post(dry).expect(200)["matched_count"] == 5
        });
    }
    assert!(
        deleted.elapsed() < Duration::from_secs(5),
        "took {:?}",
        deleted.elapsed()
    );
}

/// Entries taken out of a registry below the scan's position while a full pass runs (another
/// instance's or an operator's requeues) make the pass skip none of the others: every job still
/// in the registry afterwards is in the index. Before each window resumed at its own rank, each
/// such removal shifted the next window past as many unread entries.
#[test]
fn entries_removed_during_a_pass_make_it_skip_none() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    let seeded = support::faults::seed(&mut con, "shift", &["default"], 30_000);
    assert_eq!(seeded.len(), 30_000);
    let config = DaemonConfig::new(&redis.url(), SLOW);
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    // Take the lowest-ranked entries out, 100 every 10 ms, while the first pass runs.
    let mut removed = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = daemon.get("/api/v1/supervisor").expect(200);
        if !state["index_as_of"].is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no first pass:\n{}",
            daemon.log()
        );
        if removed < 12_000 {
            let popped: Vec<(String, f64)> = redis::cmd("ZPOPMIN")
                .arg("rq:failed:default")
                .arg(100)
                .query(&mut con)
                .unwrap();
            removed += popped.len();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(removed > 0, "the pass ended before anything was removed");
    let left: Vec<String> = con.zrange("rq:failed:default", 0, -1).unwrap();
    assert_eq!(left.len(), 30_000 - removed);
    let mut indexed = BTreeSet::new();
    let mut pages_total = 0;
    let mut listed = 0;
    for page in 0.. {
        let list = daemon
            .get(&format!(
                "/api/v1/jobs/failed?queue=default&limit=1000&offset={}",
                page * 1000
            ))
            .expect(200);
        pages_total = list["total"].as_u64().unwrap();
        let ids = ids(&list);
        if ids.is_empty() {
            break;
        }
        listed += ids.len();
        indexed.extend(ids);
    }
    let missing: Vec<&String> = left.iter().filter(|id| !indexed.contains(*id)).collect();
    println!(
        "removed {removed} during the pass; {} left; index total {pages_total}, listed {listed}, distinct {}",
        left.len(),
        indexed.len()
    );
    assert!(
        missing.is_empty(),
        "{} of {} jobs still failed are not in the index, e.g. {:?}",
        missing.len(),
        left.len(),
        &missing[..missing.len().min(5)]
    );
}

/// The same skip, made certain: a listing whose every anchor (the previous page's last 64
/// entries) was removed before its next page resumes where its last entry was, by score and
/// member, in both directions. RQ's scores are whole seconds, so thousands of entries share one:
/// the rank the listing expected would skip as many entries as were removed before it.
#[tokio::test]
async fn a_listing_overtaken_by_removals_resumes_right_after_its_last_entry() {
    use rq_retryd::rq::registry::anchors_of;
    use rq_retryd::rq::{Keys, Registry};
    let redis = RedisServer::start();
    let mut con = redis.conn();
    // 300 entries over three scores, 100 each; members sort within a score byte by byte
    // ("m-0050" < "m-0051"; an upper-case and a non-ASCII member too).
    let mut all: Vec<(String, i64)> = Vec::new();
    for score in [2_000_000_000i64, 2_000_000_001, 2_000_000_002] {
        for i in 0..98 {
            all.push((format!("m-{i:04}-{score}"), score));
        }
        all.push((format!("Z-{score}"), score));
        all.push((format!("é-{score}"), score));
    }
    for (member, score) in &all {
        let _: () = con.zadd("rq:failed:default", member, *score).unwrap();
    }
    let sorted: Vec<(String, f64)> = con.zrange_withscores("rq:failed:default", 0, -1).unwrap();
    let registry = Registry::new(Keys::new("rq"));
    let mut acon = support::jobs::async_con(&redis).await;
    let members = |page: &[(Vec<u8>, f64)]| -> Vec<String> {
        page.iter()
            .map(|(m, _)| String::from_utf8(m.clone()).unwrap())
            .collect()
    };
    for newest_first in [false, true] {
        let order: Vec<String> = if newest_first {
            sorted.iter().rev().map(|(m, _)| m.clone()).collect()
        } else {
            sorted.iter().map(|(m, _)| m.clone()).collect()
        };
        // The first page: 150 entries, ending inside the second score.
        let first = registry
            .failed_window_after(&mut acon, "default", &Default::default(), 150, newest_first)
            .await
            .unwrap();
        assert_eq!(members(&first), order[..150]);
        // Someone removes the first 170 entries in this order: every anchor, and 20 beyond.
        let removed = &order[..170];
        let _: () = con.zrem("rq:failed:default", removed).unwrap();
        let next = registry
            .failed_window_after(&mut acon, "default", &anchors_of(&first), 50, newest_first)
            .await
            .unwrap();
        assert_eq!(
            members(&next),
            order[170..220],
            "newest_first={newest_first}: the next page starts at the first entry still there \
             after the last listed one, not at the rank the listing expected"
        );
        // Put them back for the other direction.
        for (member, score) in &all {
            let _: () = con.zadd("rq:failed:default", member, *score).unwrap();
        }
    }
}

/// A due requeue that `hold_when` holds back is `held` on the standby too: its observing pass
/// runs the same read-only check of the target queue as the active instance, so both list,
/// count and group the jobs alike instead of the standby calling them due. See: issue 21.
#[test]
fn a_standby_lists_held_jobs_as_held_as_the_active_instance_does() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    for id in ["h1", "h2"] {
        FailedJob::new(id).write(&mut con);
    }
    let config = DaemonConfig::new(
        &redis.url(),
        "[[policy]]\nname = \"hold\"\nhold_when = { no_workers = true }\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n",
    );
    let (active, standby) = active_and_standby(&config);
    for d in [&active, &standby] {
        d.wait_until("both jobs are listed as held", |d| {
            d.get("/api/v1/jobs/failed?state=held").expect(200)["total"] == 2
        });
        let groups = d.get("/api/v1/jobs/failed/groups").expect(200);
        assert_eq!(groups["groups"][0]["by_state"]["held"], 2, "{groups}");
    }
    // Nobody requeued them: no worker listens to the queue.
    let failed: u64 = con.zcard("rq:failed:default").unwrap();
    assert_eq!(failed, 2);
}

/// Two instances on one Redis: the first holds the lease, the second is ready and knows it is
/// the standby.
fn active_and_standby(config: &DaemonConfig) -> (Daemon, Daemon) {
    let active = Daemon::start_ready(config);
    let standby = Daemon::start(config);
    standby.wait_ready();
    standby.wait_until("the standby sees the active instance", |d| {
        let s = d.get("/api/v1/supervisor").expect(200);
        s["active"] == false && s["active_instance"].is_string()
    });
    (active, standby)
}
