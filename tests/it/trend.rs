//! The trend of failures (issue 22, item 2): `GET /api/v1/jobs/timeline` counts a selection's
//! failed jobs per minute and per hour as the listing lists them, each group carries its last
//! 15 minutes against the 15 before and a `new` marker, and `rq_retryd_failures_seen_total`
//! counts each new failure once while a requeue takes the job out of the timeline. Against a
//! real redis-server and `rq-retryd run`, with failures written at controlled `ended_at` times
//! (what the index takes as the failure time).

use crate::support;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use support::api::{ended_at, job, start, time_of, SLOW_POLICIES};
use support::http::{enc, metric, parse_metrics, Daemon};

const RENDER: &str = "app.workers.reports.render_report";
const WELCOME: &str = "app.workers.emails.send_welcome";

fn counts(series: &Value) -> Vec<u64> {
    series["counts"]
        .as_array()
        .unwrap_or_else(|| panic!("no counts in {series}"))
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect()
}

/// The bucket of `series` that holds `at`, if any.
fn bucket_of(series: &Value, at: DateTime<Utc>) -> Option<usize> {
    let start = time_of(&series["start"]);
    let step = Duration::seconds(series["step_seconds"].as_i64().unwrap());
    if at < start {
        return None;
    }
    let i = ((at - start).num_microseconds().unwrap() / step.num_microseconds().unwrap()) as usize;
    (i < counts(series).len()).then_some(i)
}

fn listing_total(daemon: &Daemon, filters: &str) -> u64 {
    daemon
        .get(&format!("/api/v1/jobs/failed?limit=1{filters}"))
        .expect(200)["total"]
        .as_u64()
        .unwrap()
}

#[test]
fn the_timeline_puts_each_failure_in_its_minute_and_hour_and_adds_up_to_the_listing() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    // (id, queue, exception, seconds ago): ids an HTTP path or a glob could trip over. Nothing
    // is due (a due retry would leave the registry): the KeyError is unmatched.
    let failures = [
        ("clear", "default", "ConnectionError", 20),
        ("%2F", "default", "ConnectionError", 95),
        ("jöb-ü", "emails", "ValueError", 125),
        ("groups", "emails", "ValueError", 40 * 60),
        ("hour-ago", "default", "KeyError", 3 * 3600 + 60),
        ("day-ago", "emails", "ValueError", 30 * 3600),
        // A worker whose clock is two hours ahead of this host's.
        ("ahead", "default", "ConnectionError", -2 * 3600),
    ];
    for (id, queue, exc, ago) in failures {
        job(id, queue, RENDER, exc, ago).write(&mut con);
    }
    daemon.scan();

    let t = daemon.get("/api/v1/jobs/timeline").expect(200);
    assert_eq!(t["source"], "index", "{t}");
    assert_eq!(t["total"], 7, "{t}");
    assert_eq!(t["unknown"], 0, "{t}");
    assert_eq!(t["minutes"]["step_seconds"], 60, "{t}");
    assert_eq!(t["hours"]["step_seconds"], 3600, "{t}");
    let (minutes, hours) = (counts(&t["minutes"]), counts(&t["hours"]));
    assert_eq!((minutes.len(), hours.len()), (60, 24), "{t}");
    // Whole minutes and hours, the current one last.
    let now = Utc::now();
    let minute_start = time_of(&t["minutes"]["start"]);
    assert_eq!(minute_start.timestamp() % 60, 0, "{t}");
    assert!(minute_start + Duration::minutes(59) <= now, "{t}");
    assert!(now < minute_start + Duration::minutes(61), "{t}");
    assert_eq!(time_of(&t["hours"]["start"]).timestamp() % 3600, 0, "{t}");

    let mut want_minutes = vec![0u64; 60];
    let mut want_hours = vec![0u64; 24];
    let (mut earlier, mut later) = (0, 0);
    for (id, ..) in failures {
        let at = ended_at(&mut con, id);
        if let Some(i) = bucket_of(&t["minutes"], at) {
            want_minutes[i] += 1;
        }
        match bucket_of(&t["hours"], at) {
            Some(i) => want_hours[i] += 1,
            None if at < time_of(&t["hours"]["start"]) => earlier += 1,
            None => later += 1,
        }
    }
    assert_eq!(minutes, want_minutes, "{t}");
    assert_eq!(hours, want_hours, "{t}");
    assert_eq!(
        (t["earlier"].as_u64(), t["later"].as_u64()),
        (Some(earlier), Some(later))
    );
    assert_eq!((earlier, later), (1, 1), "{t}");
    assert_eq!(minutes.iter().sum::<u64>(), 4, "{t}");

    // The listing's selection, with the listing's totals.
    for filters in [
        "",
        "&queue=default",
        "&queue=emails&exception=ValueError",
        "&function=app.workers.*&failed_after=1h",
        "&state=waiting",
        "&queue=nowhere",
    ] {
        let t = daemon
            .get(&format!(
                "/api/v1/jobs/timeline?{}",
                filters.trim_start_matches('&')
            ))
            .expect(200);
        let total = t["total"].as_u64().unwrap();
        assert_eq!(total, listing_total(&daemon, filters), "{filters}: {t}");
        let sum = counts(&t["hours"]).iter().sum::<u64>()
            + t["earlier"].as_u64().unwrap()
            + t["later"].as_u64().unwrap();
        assert_eq!(sum, total, "{filters}: {t}");
    }
    let emails = daemon
        .get("/api/v1/jobs/timeline?queue=emails&exception=ValueError")
        .expect(200);
    assert_eq!(emails["total"], 3, "{emails}");
}

#[test]
fn groups_say_how_many_failed_in_the_last_15_minutes_and_the_15_before_and_which_are_new() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    // default render ConnectionError: failing for hours, 1 now and 1 twenty minutes ago.
    for (id, ago) in [("r-now", 120), ("r-20m", 20 * 60), ("r-2h", 2 * 3600)] {
        job(id, "default", RENDER, "ConnectionError", ago).write(&mut con);
    }
    // emails welcome ValueError: began 5 minutes ago.
    for (id, ago) in [("w-1m", 60), ("w-5m", 5 * 60)] {
        job(id, "emails", WELCOME, "ValueError", ago).write(&mut con);
    }
    // emails welcome TimeoutError: quiet for three hours.
    job("t-3h", "emails", WELCOME, "TimeoutError", 3 * 3600).write(&mut con);
    daemon.scan();

    let answer = daemon.get("/api/v1/jobs/failed/groups").expect(200);
    let group = |key: &str| -> (u64, u64, bool) {
        let g = answer["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"] == key)
            .unwrap_or_else(|| panic!("no group {key} in {answer}"));
        (
            g["last_15m"].as_u64().unwrap(),
            g["prev_15m"].as_u64().unwrap(),
            g["new"].as_bool().unwrap(),
        )
    };
    assert_eq!(
        group(&format!("default|{RENDER}|ConnectionError")),
        (1, 1, false)
    );
    assert_eq!(group(&format!("emails|{WELCOME}|ValueError")), (2, 0, true));
    assert_eq!(
        group(&format!("emails|{WELCOME}|TimeoutError")),
        (0, 0, false)
    );
}

#[test]
fn a_new_failure_is_counted_once_and_a_requeue_takes_it_out_of_the_timeline_not_the_counter() {
    let (redis, daemon) = start(SLOW_POLICIES);
    let mut con = redis.conn();
    // The backlog found at start is a baseline: the queue's series is there, at 0.
    job("old", "emails", WELCOME, "ValueError", 600).write(&mut con);
    daemon.scan();
    let seen = |daemon: &Daemon| {
        let text = daemon.get("/metrics").text();
        metric(
            &parse_metrics(&text),
            "rq_retryd_failures_seen_total",
            &[("queue", "emails")],
        )
    };
    assert_eq!(seen(&daemon), Some(0.0));

    // Two failures after the start, one with an id only the any-id routes take.
    for id in ["clear", "fresh"] {
        job(id, "emails", WELCOME, "ValueError", 0).write(&mut con);
    }
    daemon.scan();
    daemon.scan();
    assert_eq!(seen(&daemon), Some(2.0), "a re-scan counts nothing again");
    let before = daemon.get("/api/v1/jobs/timeline?queue=emails").expect(200);
    assert_eq!(before["total"], 3, "{before}");
    assert_eq!(
        counts(&before["minutes"]).iter().sum::<u64>(),
        3,
        "{before}"
    );

    daemon
        .post(&format!("/api/v1/failed-jobs/{}/retry", enc("clear")))
        .expect(200);
    let after = daemon.get("/api/v1/jobs/timeline?queue=emails").expect(200);
    assert_eq!(after["total"], 2, "a requeued job leaves its bar: {after}");
    assert_eq!(counts(&after["minutes"]).iter().sum::<u64>(), 2, "{after}");
    assert_eq!(seen(&daemon), Some(2.0), "the counter keeps what it saw");

    // The same job fails again: a new failure.
    job("clear", "emails", WELCOME, "ValueError", 0).write(&mut con);
    daemon.scan();
    assert_eq!(seen(&daemon), Some(3.0));
}

#[test]
fn the_timeline_refuses_misspelt_parameters_and_bad_filters_and_is_declared() {
    let (_redis, daemon) = start(SLOW_POLICIES);
    for (query, code) in [
        ("queu=default", "unknown_parameter"),
        ("limit=5", "unknown_parameter"),
        ("failed_after=yesterday", "invalid_time"),
        ("exception=%5BValueError%5D", "invalid_exception"),
        ("function=app.%7Ba,b%7D", "invalid_function"),
        ("queue=", "invalid_queue"),
    ] {
        daemon
            .get(&format!("/api/v1/jobs/timeline?{query}"))
            .expect_error(400, code);
    }
    assert_eq!(daemon.post("/api/v1/jobs/timeline").status, 405);
    let doc = daemon.get("/api/v1/openapi.json").expect(200);
    let op = &doc["paths"]["/api/v1/jobs/timeline"]["get"];
    let mut names: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("no parameters: {op}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort();
    for name in [
        "exception",
        "failed_after",
        "failed_before",
        "function",
        "policy",
        "queue",
        "state",
    ] {
        assert!(names.contains(&name), "{name} not declared: {names:?}");
    }
    let groups = &doc["components"]["schemas"]["FailureGroup"]["properties"];
    for field in ["last_15m", "prev_15m", "new"] {
        assert!(groups.get(field).is_some(), "{field} not in {groups}");
    }
}
