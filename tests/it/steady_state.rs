//! The daemon's memory between scans (issue 5): a re-scan that finds nothing due reads no job
//! hash and no traceback, a new failure of a known job is read again, and a job in backoff is
//! requeued within a second of its due time by the timer, not by the next scan, also while a
//! long pass runs, and scans that meet jobs as they fall due neither double nor conflict.

use crate::support;

use std::time::{Duration, Instant};

use redis::Commands;
use support::http::{Daemon, DaemonConfig};
use support::jobs::FailedJob;
use support::RedisServer;

fn calls(con: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Polls until `job` is the only id in `rq:queue:<queue>`; returns how long after `since` that
/// was, and fails after 10 s saying `what` was never requeued.
fn wait_until_queued(
    con: &mut redis::Connection,
    queue: &str,
    job: &str,
    since: Instant,
    what: &str,
) -> Duration {
    loop {
        let queued: Vec<String> = con.lrange(format!("rq:queue:{queue}"), 0, -1).unwrap();
        if queued == vec![job] {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{what} was never requeued"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Redis and a daemon whose one policy, `soon`, retries what it matches after `delay`
/// (`matching`: more keys of the policy, e.g. an exception filter), with its first scan done.
fn soon(delay: &str, matching: &str) -> (RedisServer, redis::Connection, Daemon) {
    let server = RedisServer::start();
    let con = server.conn();
    let config = DaemonConfig::new(
        &server.url(),
        &format!(
            "[[policy]]\nname = \"soon\"\n{matching}backoff = {{ strategy = \"fixed\", delay = \"{delay}\" }}\n"
        ),
    );
    let daemon = Daemon::start_ready(&config);
    (server, con, daemon)
}

#[test]
fn a_rescan_that_finds_nothing_due_reads_no_job_and_no_traceback() {
    let server = RedisServer::start();
    let mut con = server.conn();
    for i in 0..300 {
        FailedJob::new(&format!("w{i}"))
            .queue(if i % 2 == 0 { "a" } else { "b" })
            .write(&mut con);
    }
    let config = DaemonConfig::new(
        &server.url(),
        // An exception filter, so that deciding needs the failure text (a queue-wide policy
        // would read none at all).
        "[[policy]]\nname = \"later\"\nexceptions = [\"ConnectionError\"]\nbackoff = { strategy = \"fixed\", delay = \"1h\" }\n",
    );
    let daemon = Daemon::start_ready(&config);
    let first = daemon.get("/api/v1/supervisor").expect(200)["last_scan"]["report"].clone();
    assert_eq!(first["waiting"], 300, "{first}");
    assert_eq!(
        calls(&mut con, "xrevrange"),
        300,
        "the first scan reads each traceback"
    );

    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .unwrap();
    let report = daemon.scan()["report"].clone();
    assert_eq!(report["waiting"], 300, "{report}");
    assert_eq!(report["scanned"], 300, "{report}");
    assert_eq!(calls(&mut con, "hmget"), 0, "no job hash re-read");
    assert_eq!(calls(&mut con, "xrevrange"), 0, "no traceback re-read");

    // w0 fails again: RQ re-adds it with a new score; only it is read again.
    let _: () = con
        .zadd(
            "rq:failed:a",
            "w0",
            chrono::Utc::now().timestamp() + 31_536_001,
        )
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .unwrap();
    let report = daemon.scan()["report"].clone();
    assert_eq!(report["waiting"], 300, "{report}");
    assert_eq!(calls(&mut con, "hmget"), 1, "only the new failure is read");
    assert_eq!(calls(&mut con, "xrevrange"), 1);
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

#[test]
fn a_job_in_backoff_is_requeued_by_its_timer_within_a_second_of_its_due_time() {
    let (_server, mut con, daemon) = soon("3s", "");
    FailedJob::new("t1").failed_secs_ago(0).write(&mut con);
    let failed = Instant::now();
    // The scan sees it waiting (due in about 3 s); scan_interval is 1h, so only the timer can act.
    let report = daemon.scan()["report"].clone();
    assert_eq!(report["waiting"], 1, "{report}");
    let requeued_after = wait_until_queued(&mut con, "default", "t1", failed, "the timer: the job");
    assert!(
        requeued_after >= Duration::from_millis(2900),
        "requeued before its due time: {requeued_after:?}"
    );
    assert!(
        requeued_after <= Duration::from_millis(4000),
        "requeued more than a second after its due time: {requeued_after:?}"
    );
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

/// See issue 5, target 3: with keyspace notifications on, a new failure that a policy retries at
/// once is requeued without waiting for `scan_interval` (1h here).
#[test]
fn a_notified_new_failure_is_requeued_without_waiting_for_the_scan_interval() {
    for events in ["Kz", "Ez"] {
        let server = RedisServer::start_with(&["--notify-keyspace-events", events]);
        let mut con = server.conn();
        let config = DaemonConfig::new(
            &server.url(),
            "[[policy]]\nname = \"now\"\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n",
        );
        let daemon = Daemon::start_ready(&config);
        // Give the listener a moment to subscribe after the first scan.
        daemon.wait_until("the notification listener subscribed", |d| {
            d.log()
                .contains("listening for failed-registry notifications")
        });
        FailedJob::new("fresh").queue("emails").write(&mut con);
        wait_until_queued(
            &mut con,
            "emails",
            "fresh",
            Instant::now(),
            &format!("notify-keyspace-events {events}: the new failure"),
        );
        let scans = daemon
            .get("/metrics")
            .text()
            .lines()
            .find(|l| l.starts_with("rq_retryd_scans_total "))
            .map(str::to_string);
        assert_eq!(
            scans.as_deref(),
            Some("rq_retryd_scans_total 1"),
            "requeued by the notification, not by another full scan"
        );
        let (code, _) = daemon.stop();
        assert_eq!(code, 0);
    }
}

#[test]
fn without_notifications_the_scan_interval_still_finds_new_failures() {
    let server = RedisServer::start_with(&["--notify-keyspace-events", ""]);
    let mut con = server.conn();
    let mut config = DaemonConfig::new(
        &server.url(),
        "[[policy]]\nname = \"now\"\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n",
    );
    config.scan_interval = "1s".into();
    let daemon = Daemon::start_ready(&config);
    FailedJob::new("later").write(&mut con);
    wait_until_queued(
        &mut con,
        "default",
        "later",
        Instant::now(),
        "the periodic scan: the new failure",
    );
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

/// Issue 24, item 2: a job whose backoff ends is written from the decision memory, not read
/// again: the requeue script's compare-and-set checks the same facts before it writes. Each
/// job hash is read once, by the script (before: by the client and again by the script).
#[test]
fn a_due_job_is_requeued_from_memory_without_reading_it_again() {
    let (_server, mut con, daemon) = soon("2s", "exceptions = [\"ConnectionError\"]\n");
    let ids: Vec<String> = (0..5).map(|i| format!("due{i}")).collect();
    for id in &ids {
        FailedJob::new(id).failed_secs_ago(0).write(&mut con);
    }
    let report = daemon.scan()["report"].clone();
    assert_eq!(report["waiting"], 5, "{report}");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .unwrap();
    let since = Instant::now();
    loop {
        let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
        if queued.len() == ids.len() {
            let mut sorted = queued.clone();
            sorted.sort();
            assert_eq!(sorted, ids, "each job queued exactly once");
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "not requeued: {queued:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        calls(&mut con, "hmget"),
        5,
        "one read of each job: the script's compare, no re-read by the daemon"
    );
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

/// A waiting job that changed before it fell due (it failed again: a new `ended_at`) is not
/// requeued from memory: the compare-and-set refuses the remembered write, and the job is read
/// and decided again at once, so it waits its new backoff. A job deleted meanwhile is left
/// deleted. Nothing is queued twice.
#[test]
fn a_due_job_that_changed_meanwhile_is_read_and_decided_again() {
    let (_server, mut con, daemon) = soon("3s", "");
    FailedJob::new("changed").failed_secs_ago(0).write(&mut con);
    FailedJob::new("deleted").failed_secs_ago(0).write(&mut con);
    let failed = Instant::now();
    let report = daemon.scan()["report"].clone();
    assert_eq!(report["waiting"], 2, "{report}");
    std::thread::sleep(Duration::from_millis(1500));
    // Another failure of `changed` (same registry score: no notification, no new read), and
    // `deleted` removed the way RQ's Job.delete removes it.
    let _: () = con
        .hset("rq:job:changed", "ended_at", support::jobs::rq_time(0))
        .unwrap();
    let _: () = con.zrem("rq:failed:default", "deleted").unwrap();
    let _: () = con.del("rq:job:deleted").unwrap();
    // Its old due time (3 s) passes: nothing is queued.
    while failed.elapsed() < Duration::from_millis(4000) {
        let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
        assert!(
            queued.is_empty(),
            "requeued on its old due time: {queued:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = wait_until_queued(&mut con, "default", "changed", failed, "the changed job");
    assert!(
        after >= Duration::from_millis(4400),
        "requeued before its new due time: {after:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(
        queued,
        vec!["changed"],
        "queued once, the deleted job not at all"
    );
    let exists: bool = con.exists("rq:job:deleted").unwrap();
    assert!(!exists, "the deleted job stays deleted");
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

/// A daemon that ignores `ValueError` failures and retries every other at once (a scan
/// interval of 1h: only notified passes act), its notification listener subscribed.
fn ignore_or_retry_now(server: &RedisServer) -> Daemon {
    listening_daemon(
        server,
        "[[policy]]\nname = \"keep\"\nexceptions = [\"ValueError\"]\naction = \"ignore\"\n\n\
         [[policy]]\nname = \"now\"\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n",
    )
}

/// A daemon with `policies`, its first scan done and its notification listener subscribed.
fn listening_daemon(server: &RedisServer, policies: &str) -> Daemon {
    let daemon = Daemon::start_ready(&DaemonConfig::new(&server.url(), policies));
    daemon.wait_until("the notification listener subscribed", |d| {
        d.log()
            .contains("listening for failed-registry notifications")
    });
    daemon
}

/// Sets Redis's keyspace notifications (`""`: none), to write unnoticed.
fn notify_events(con: &mut redis::Connection, flags: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(flags)
        .query(con)
        .unwrap();
}

/// Writes failed job `id` of `queue` unnotified (the write scores it with its own second), then
/// gives it registry score `score` with one notification (a score lower first, so that the
/// ZADD is a change Redis notifies).
fn fail_notified_once(con: &mut redis::Connection, queue: &str, id: &str, score: i64) {
    let registry = format!("rq:failed:{queue}");
    notify_events(con, "");
    FailedJob::new(id).queue(queue).write(con);
    let _: () = con.zadd(&registry, id, score - 1).unwrap();
    notify_events(con, "Kz");
    let _: () = con.zadd(&registry, id, score).unwrap();
}

/// Issue 24, item 2: a notified pass lists windows of 2,000 ids, newest first, and stops after
/// one with nothing new (it used to list at least two windows of 6,000). RQ scores a failure
/// with its whole-second failure time plus `failure_ttl`, so one second's failures tie and sort
/// by id: a new failure can come after more than a window of known ones of the same second.
/// The pass goes on while a window ends inside the newest second it listed before, so such a
/// failure is acted on at once, not at the next full scan (1h here).
#[test]
fn a_new_failure_tied_behind_a_window_of_known_ones_is_still_acted_on_at_once() {
    let server = RedisServer::start_with(&["--notify-keyspace-events", "Kz"]);
    let mut con = server.conn();
    let known = 2_500; // more than a newest-first window (LIST_WINDOW, 2,000)
    for i in 0..known {
        FailedJob::new(&format!("z-{i:05}"))
            .queue("tied")
            .exception("ValueError", "card number failed Luhn check")
            .write(&mut con);
    }
    // One second's failures: the same score for all (the write scores each with its own now).
    let score = chrono::Utc::now().timestamp() + 31_536_000;
    let mut pipe = redis::pipe();
    for i in 0..known {
        pipe.zadd("rq:failed:tied", format!("z-{i:05}"), score)
            .ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    let daemon = ignore_or_retry_now(&server);
    // A new failure of the same second whose id sorts below every known one: newest first,
    // it comes after all 2,500 of them. Written unnotified (the write scores it with its own
    // second), then notified once with the tied score.
    fail_notified_once(&mut con, "tied", "a-new", score);
    wait_until_queued(
        &mut con,
        "tied",
        "a-new",
        Instant::now(),
        "the new failure behind 2,500 known ones of its second",
    );
    let known_left: u64 = con.zcard("rq:failed:tied").unwrap();
    assert_eq!(known_left, known, "the ignored failures stay failed");
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

/// A failure that lands below the newest score a pass already listed: two workers fail jobs
/// across a second boundary, and the one scored with second n writes after the other's
/// second n+1 was listed. Newest first, a notified pass used to stop inside second n+1 and
/// never reach it (session 23's storm at 8,000 a second: 89 failures of 460,000, found only by
/// the next full scan, 1h here). A pass now goes on through the second below the newest
/// listed before it.
#[test]
fn a_failure_scored_below_the_newest_listed_is_acted_on_within_seconds() {
    let server = RedisServer::start_with(&["--notify-keyspace-events", "Kz"]);
    let mut con = server.conn();
    let known = 2_500; // more than a newest-first window (LIST_WINDOW, 2,000)
    let score = chrono::Utc::now().timestamp() + 31_536_000;
    let mut pipe = redis::pipe();
    for i in 0..known {
        let id = format!("z-{i:05}");
        FailedJob::new(&id)
            .queue("late")
            .exception("ValueError", "card number failed Luhn check")
            .write(&mut con);
        pipe.zadd("rq:failed:late", id, score).ignore();
    }
    FailedJob::new("zz-newest")
        .queue("late")
        .exception("ValueError", "card number failed Luhn check")
        .write(&mut con);
    pipe.zadd("rq:failed:late", "zz-newest", score + 1).ignore();
    let _: () = pipe.query(&mut con).unwrap();
    let daemon = ignore_or_retry_now(&server);
    // The late failure, scored with the second below the newest listed, its id sorting below
    // every known one (newest first it comes last). Written unnotified outside the index's
    // range of scores, then notified once with its score.
    fail_notified_once(&mut con, "late", "a-late", score);
    let after = wait_until_queued(
        &mut con,
        "late",
        "a-late",
        Instant::now(),
        "the failure scored below the newest listed",
    );
    println!("the late failure was requeued {after:?} after it was written");
    let known_left: u64 = con.zcard("rq:failed:late").unwrap();
    assert_eq!(known_left, known + 1, "the ignored failures stay failed");
    let listed = daemon
        .get("/api/v1/jobs/failed?queue=late&limit=1")
        .expect(200);
    assert_eq!(listed["total"], known + 1, "{listed}");
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

/// Issue 24, item 4: a due job is requeued on time while a long notified pass runs. The due
/// pass used to share one loop with the notified passes and the full scans, so during a
/// failure storm (notified passes back to back, each for seconds) a job whose backoff ended
/// waited for them: due -> requeued p50 13 s at 3,000 failures a second. Here one notified
/// pass reads tens of thousands of new failures (written unnotified to a queue the daemon did
/// not know yet, then woken by one more) while a job in a 2 s backoff falls due.
#[test]
fn a_due_job_is_requeued_on_time_while_a_long_notified_pass_runs() {
    // Timed (requeued within 1 s of its due time), so it runs beside at most one other test.
    let _alone = support::one_heavy_test_at_a_time();
    let server = RedisServer::start_with(&["--notify-keyspace-events", "Kz"]);
    let mut con = server.conn();
    let daemon = listening_daemon(
        &server,
        "[[policy]]\nname = \"keep\"\nqueues = [\"bulk\"]\naction = \"ignore\"\n\n\
         [[policy]]\nname = \"soon\"\nqueues = [\"due\"]\nbackoff = { strategy = \"fixed\", delay = \"2s\" }\n",
    );
    // Unnotified, and on a queue the index does not hold (its size check does not look at
    // it): nothing reads these until a notification names the queue.
    const BULK: u64 = 40_000;
    notify_events(&mut con, "");
    FailedJob::write_all(
        &mut con,
        (0..BULK).map(|i| {
            FailedJob::new(&format!("bulk-{i:06}"))
                .queue("bulk")
                .exception("ValueError", "card number failed Luhn check")
        }),
    );
    notify_events(&mut con, "Kz");
    FailedJob::new("t1")
        .queue("due")
        .failed_secs_ago(0)
        .write(&mut con);
    let failed = Instant::now();
    daemon.wait_until("t1 is remembered waiting", |d| {
        d.get("/api/v1/jobs/failed?queue=due").expect(200)["total"] == 1
    });
    // One more failure names the bulk queue: its notified pass reads all 40,001, newest first.
    // It starts half a second before t1 is due, so that it is still running then on a machine
    // several times faster than this one (about 11,000 a second read here in a debug build;
    // started at once, it was over by the due time when its dependencies were optimised).
    std::thread::sleep(Duration::from_millis(1_500).saturating_sub(failed.elapsed()));
    FailedJob::new("bulk-last").queue("bulk").write(&mut con);
    let requeued_after = wait_until_queued(&mut con, "due", "t1", failed, "t1, due in 2 s,");
    let indexed = daemon
        .get("/api/v1/jobs/failed?queue=bulk&limit=1")
        .expect(200)["total"]
        .as_u64()
        .unwrap();
    println!("t1 requeued {requeued_after:?} after its failure; {indexed} of {BULK} indexed then");
    assert!(
        requeued_after >= Duration::from_millis(1900),
        "requeued before its due time: {requeued_after:?}"
    );
    assert!(
        requeued_after <= Duration::from_millis(3000),
        "requeued {requeued_after:?} after its failure, due after 2 s: it waited for the \
         notified pass ({indexed} of {BULK} indexed then)"
    );
    assert!(
        indexed < BULK,
        "the notified pass was over ({indexed} indexed) before t1 was requeued after \
         {requeued_after:?}: the test proves nothing on a machine this fast; write more"
    );
    daemon.wait_until("the notified pass indexed every bulk failure", |d| {
        d.get("/api/v1/jobs/failed?queue=bulk&limit=1").expect(200)["total"] == BULK + 1
    });
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

/// Issue 24, item 4: with the due pass on its own task, full scans and due passes meet the
/// same jobs as they fall due. Each failure is acted on once: every job queued exactly once,
/// counted once in `requeued_total`, and no scan reports a conflict (a scan that listed a job
/// the due pass was writing, or had just written, leaves it alone).
#[test]
fn scans_running_while_jobs_fall_due_neither_double_nor_count_conflicts() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let config = DaemonConfig::new(
        &server.url(),
        "[[policy]]\nname = \"soon\"\nqueues = [\"race\"]\nbackoff = { strategy = \"fixed\", delay = \"3s\" }\n",
    );
    let daemon = Daemon::start_ready(&config);
    const JOBS: u64 = 3_000;
    FailedJob::write_all(
        &mut con,
        (0..JOBS).map(|i| {
            FailedJob::new(&format!("race-{i:05}"))
                .queue("race")
                .failed_secs_ago(0)
        }),
    );
    let written = Instant::now();
    let (mut scans, mut conflicts, mut by_scans) = (0, 0, 0);
    loop {
        let report = daemon.scan()["report"].clone();
        scans += 1;
        conflicts += report["conflicts"].as_u64().unwrap();
        by_scans += report["requeued"].as_u64().unwrap();
        let left: u64 = con.zcard("rq:failed:race").unwrap();
        if left == 0 {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(30),
            "{left} jobs still failed 30 s after they were due"
        );
    }
    let queued: Vec<String> = con.lrange("rq:queue:race", 0, -1).unwrap();
    let distinct: std::collections::BTreeSet<&String> = queued.iter().collect();
    println!("{scans} scans; {by_scans} requeued by scans, the rest by due passes");
    assert_eq!(queued.len() as u64, JOBS, "each job queued once");
    assert_eq!(distinct.len() as u64, JOBS, "no job queued twice");
    assert_eq!(conflicts, 0, "a scan met a job the due pass acted on");
    assert!(
        scans >= 3,
        "the scans did not overlap the due times ({scans})"
    );
    let samples = support::http::parse_metrics(&daemon.get("/metrics").text());
    let requeued =
        support::http::metric(&samples, "rq_retryd_requeued_total", &[("queue", "race")]);
    assert_eq!(requeued, Some(JOBS as f64), "each requeue counted once");
    let listed = daemon
        .get("/api/v1/jobs/failed?queue=race&limit=1")
        .expect(200)["total"]
        .clone();
    assert_eq!(listed, 0, "the index lists none of them any more");
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}
