//! Concurrency (issue 6): three daemons on the same Redis, plus manual retries racing them.
//! Every job is requeued exactly once: each id is once in its queue list, none is left failed,
//! the requeue stamps (`retryd_attempts`, `retryd_policy`) say who did it, and the requeue
//! counters of all daemons (metrics) and the audit stream add up to exactly the number of jobs.
//! A manual retry of a job that a daemon is requeuing at the same moment answers 200, 404 or
//! 409, never a 5xx, and a 200 means that this retry, and only it, requeued the job.

use crate::support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::faults::{
    audited, check_invariant, metric_sum, seed, Census, KillableDaemon, Rng, RETRY_EVERYTHING_NOW,
    RETRY_POLICY,
};
use support::RedisServer;

const QUEUES: [&str; 3] = ["alpha", "beta", "gamma"];
/// Leader election off: every daemon scans and writes, as with `leader_election = false` (or
/// before it existed), so the three really race for every job and only the compare-and-set
/// keeps each requeue single. With the lease on, one daemon does the automatic work
/// (tests/it/switchboard.rs). Each daemon requeues at most 2,000 jobs a second, so no one of
/// them can drain the registries before the others have begun: the race is between all three
/// (at 100,000 a second one daemon did nearly everything, and in CI two did nothing).
const SUPERVISOR: &str = "scan_interval = \"1h\"\nbatch_size = 200\nqueues = [\"*\"]\nmax_requeues_per_second = 2000\nleader_election = false";

/// Spawns three daemons at once (none waits for another) and waits until all are ready.
fn three_daemons(url: &str) -> Vec<KillableDaemon> {
    let daemons: Vec<KillableDaemon> = (0..3)
        .map(|_| KillableDaemon::spawn(url, SUPERVISOR, RETRY_EVERYTHING_NOW))
        .collect();
    for d in &daemons {
        d.wait_healthy();
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.get("/readyz").status != 200 {
            assert!(Instant::now() < deadline, "/readyz never 200:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    daemons
}

/// Waits until no seeded job is left in a failed registry.
fn wait_drained(con: &mut redis::Connection, daemons: &[KillableDaemon]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut pipe = redis::pipe();
        for q in QUEUES {
            pipe.cmd("ZCARD").arg(format!("rq:failed:{q}"));
        }
        let left: Vec<usize> = pipe.query(con).unwrap();
        if left.iter().sum::<usize>() == 0 {
            return;
        }
        for d in daemons {
            if let Some(code) = d.exited() {
                panic!("a daemon exited with {code}:\n{}", d.log());
            }
        }
        assert!(
            Instant::now() < deadline,
            "{left:?} jobs still failed after 90 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requeues per daemon from its `/metrics`: (auto, manual).
fn requeue_counters(daemons: &[KillableDaemon]) -> Vec<(u64, u64)> {
    daemons
        .iter()
        .map(|d| {
            let text = d.get("/metrics").text();
            let auto = metric_sum(&text, "rq_retryd_requeued_total", &[("trigger", "auto")]);
            let manual = metric_sum(&text, "rq_retryd_requeued_total", &[("trigger", "manual")]);
            (auto as u64, manual as u64)
        })
        .collect()
}

/// Jobs each daemon counted and logged as undecodable: (`skipped_total{reason="decode_error"}`,
/// "cannot decode" log lines).
fn decode_errors(daemons: &[KillableDaemon]) -> Vec<(u64, usize)> {
    daemons
        .iter()
        .map(|d| {
            let text = d.get("/metrics").text();
            let counted = metric_sum(
                &text,
                "rq_retryd_skipped_total",
                &[("reason", "decode_error")],
            );
            (
                counted as u64,
                d.log().matches("cannot decode failed job").count(),
            )
        })
        .collect()
}

/// Splits the census into jobs requeued by a daemon's policy (one automatic attempt) and jobs
/// requeued manually (policy `manual`, no attempt counted); panics on any other stamp.
fn by_requeuer(census: &Census) -> (HashSet<String>, HashSet<String>) {
    let (mut auto, mut manual) = (HashSet::new(), HashSet::new());
    for (id, s) in &census.states {
        match (s.attempts.as_deref(), s.policy.as_deref()) {
            (Some("1"), Some(RETRY_POLICY)) => auto.insert(id.clone()),
            (None, Some("manual")) => manual.insert(id.clone()),
            other => panic!("{id} carries an inconsistent requeue stamp {other:?}: {s:?}"),
        };
    }
    (auto, manual)
}

#[test]
fn three_daemons_and_retry_all_calls_requeue_every_job_exactly_once() {
    let _alone = support::machine::loading();
    let started = Instant::now();
    let server = RedisServer::start();
    let mut con = server.conn();
    // The daemons start on empty registries and all scan the seeded jobs at one request: were
    // the jobs there first, a daemon that starts a few seconds late on a loaded machine finds
    // them gone, and the race is between fewer than three (seen in CI).
    let daemons = three_daemons(&server.url());
    let jobs = seed(&mut con, "multi", &QUEUES, 4_000);
    let total = jobs.len();

    // Racing the daemons: retry-all through each daemon's API, with and without a queue
    // filter, again and again until nothing is left.
    let done = AtomicBool::new(false);
    let manual_counted = Mutex::new(Vec::<u64>::new());
    let filters = ["", "?queue=beta", "?queue=gamma", "?queue=alpha"];
    std::thread::scope(|s| {
        for (i, filter) in filters.iter().enumerate() {
            let daemon = &daemons[i % daemons.len()];
            let (done, manual_counted) = (&done, &manual_counted);
            s.spawn(move || {
                let sep = if filter.is_empty() { '?' } else { '&' };
                let path = format!("/api/v1/jobs/failed/retry-all{filter}{sep}wait_ms=30000");
                while !done.load(Ordering::SeqCst) {
                    let r = daemon
                        .try_call("POST", &path)
                        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
                    let body: Value = r.json();
                    assert_eq!(
                        r.status, 200,
                        "POST {path} while daemons requeue the same jobs: {body}"
                    );
                    assert_eq!(body["state"], "done", "{body}");
                    let n = body["requeued_count"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("no requeued_count: {body}"));
                    manual_counted.lock().unwrap().push(n);
                }
            });
        }
        for d in &daemons {
            let r = d.try_call("POST", "/api/v1/supervisor/scan").unwrap();
            assert_eq!(r.status, 202, "POST /api/v1/supervisor/scan: {}", r.text());
        }
        wait_drained(&mut con, &daemons);
        done.store(true, Ordering::SeqCst);
    });

    let census = check_invariant(&mut con, &jobs);
    assert_eq!((census.failed, census.queued), (0, total));
    let (auto, manual) = by_requeuer(&census);
    let counters = requeue_counters(&daemons);
    let auto_counted: u64 = counters.iter().map(|c| c.0).sum();
    let manual_by_metrics: u64 = counters.iter().map(|c| c.1).sum();
    let calls = manual_counted.into_inner().unwrap();
    let manual_by_answers: u64 = calls.iter().sum();
    println!(
        "3 daemons + {} retry-all calls over {total} jobs: per daemon (auto, manual) {counters:?}; \
         {} requeued by a daemon, {} by retry-all",
        calls.len(),
        auto.len(),
        manual.len()
    );
    assert_eq!(
        auto_counted,
        auto.len() as u64,
        "automatic requeues counted by the daemons vs jobs stamped by the policy"
    );
    assert_eq!(
        manual_by_metrics,
        manual.len() as u64,
        "manual requeues counted by the daemons vs jobs stamped manual"
    );
    assert_eq!(
        manual_by_answers,
        manual.len() as u64,
        "requeued_count of all retry-all answers vs jobs stamped manual"
    );
    assert_eq!(
        audited(&mut con, "requeue", None),
        total as u64,
        "the audit stream records every job requeued exactly once in total"
    );
    assert_eq!(
        audited(&mut con, "requeue", Some("supervisor")),
        auto.len() as u64
    );
    assert!(
        counters.iter().filter(|c| c.0 > 0).count() >= 2 && !manual.is_empty(),
        "the race did not happen: per daemon (auto, manual) {counters:?}"
    );
    // Every seeded job is well-formed: a job another daemon (or retry-all) requeued between
    // this daemon's listing of the registry and its read of the hash was moved, not corrupt.
    // Counting it as a decode error fires the shipped alert RqRetrydDecodeErrors
    // (deploy/prometheus/alerts.yml) on healthy jobs.
    let undecodable = decode_errors(&daemons);
    let first_line = daemons
        .iter()
        .flat_map(|d| {
            d.log()
                .lines()
                .filter(|l| l.contains("cannot decode failed job"))
                .map(str::to_string)
                .take(1)
                .collect::<Vec<_>>()
        })
        .next();
    assert!(
        undecodable
            .iter()
            .all(|&(counted, logged)| counted == 0 && logged == 0),
        "no seeded job is corrupt, yet the daemons counted/logged decode errors \
         (skipped_total{{reason=\"decode_error\"}}, \"cannot decode failed job\" lines) per daemon: \
         {undecodable:?}; first line: {first_line:?}"
    );
    for mut d in daemons {
        assert_eq!(d.stop(), 0, "SIGTERM exits 0:\n{}", d.log());
    }
    println!("took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn manual_retry_racing_the_daemons_answers_200_404_or_409_and_never_doubles() {
    let _alone = support::machine::loading();
    let started = Instant::now();
    let server = RedisServer::start();
    let mut con = server.conn();
    let jobs = seed(&mut con, "race", &QUEUES, 3_000);
    let total = jobs.len();
    let (mut rng, seed) = Rng::from_env(0x5eed_0007);
    let mut shuffled = jobs.clone();
    for i in (1..shuffled.len()).rev() {
        let j = rng.range(0, i as u64) as usize;
        shuffled.swap(i, j);
    }

    let daemons = three_daemons(&server.url());
    let answers = Mutex::new(Vec::<(String, u16, Value)>::new());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Three racers retry what the daemons are working on right now: an id near the head
        // of a failed registry (the daemons take ids by rank, in batches). One more retries in
        // a random order. Each sends its retries to the three daemons in turn.
        for racer in 0..4u64 {
            let (daemons, answers, done, shuffled) = (&daemons, &answers, &done, &shuffled);
            let url = server.url();
            s.spawn(move || {
                let mut rng = Rng::from_env(seed.wrapping_add(racer + 1)).0;
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                for n in 0.. {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    let id = if racer < 3 {
                        let queue = QUEUES[(n + racer as usize) % QUEUES.len()];
                        let rank = rng.range(0, 300);
                        let head: Vec<String> = redis::cmd("ZRANGE")
                            .arg(format!("rq:failed:{queue}"))
                            .arg(rank)
                            .arg(rank)
                            .query(&mut con)
                            .unwrap();
                        match head.into_iter().next() {
                            Some(id) => id,
                            None => continue,
                        }
                    } else {
                        match shuffled.get(n) {
                            Some(job) => job.id.clone(),
                            None => break,
                        }
                    };
                    let daemon = &daemons[n % daemons.len()];
                    let path = format!("/api/v1/jobs/failed/{id}/retry");
                    let r = daemon
                        .try_call("POST", &path)
                        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
                    let body: Value = r.json();
                    answers.lock().unwrap().push((id, r.status, body));
                }
            });
        }
        wait_drained(&mut con, &daemons);
        done.store(true, Ordering::SeqCst);
    });

    let answers = answers.into_inner().unwrap();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut retried: HashSet<String> = HashSet::new();
    let mut misreported: Vec<String> = Vec::new();
    for (id, status, body) in &answers {
        *by_status.entry(*status).or_default() += 1;
        match status {
            200 => {
                let queue = jobs.iter().find(|j| &j.id == id).unwrap().queue.clone();
                assert_eq!(
                    body,
                    &serde_json::json!({"job_id": id, "queue": queue, "status": "queued", "dry_run": false})
                );
                assert!(
                    retried.insert(id.clone()),
                    "{id} answered 200 twice: requeued twice"
                );
            }
            404 | 409 => {
                assert!(
                    body["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{status} for {id} without an error message: {body}"
                );
                // None of these jobs is corrupt or gone: losing the race means "moved meanwhile"
                // (404 not_in_failed_registry) or "changed meanwhile" (409 job_changed).
                let expected = if *status == 404 {
                    "not_in_failed_registry"
                } else {
                    "job_changed"
                };
                if body["code"] != expected {
                    misreported.push(format!("{status} {body}"));
                }
            }
            _ => panic!("manual retry of {id} racing the daemons answered {status}: {body}"),
        }
    }
    let census = check_invariant(&mut con, &jobs);
    assert_eq!((census.failed, census.queued), (0, total));
    let (auto, manual) = by_requeuer(&census);
    let counters = requeue_counters(&daemons);
    println!(
        "manual retries racing 3 daemons over {total} jobs (seed {seed}): {} answers {by_status:?}; \
         {} requeued by a daemon, {} manually; per daemon (auto, manual) {counters:?}",
        answers.len(),
        auto.len(),
        manual.len()
    );
    assert_eq!(
        manual, retried,
        "the jobs stamped manual are exactly those whose retry answered 200"
    );
    assert_eq!(
        counters.iter().map(|c| c.0 + c.1).sum::<u64>(),
        total as u64,
        "the daemons' requeue counters add up to exactly one requeue per job"
    );
    assert_eq!(
        counters.iter().map(|c| c.1).sum::<u64>(),
        manual.len() as u64
    );
    assert!(
        by_status.get(&200).is_some_and(|n| *n > 0) && by_status.get(&404).is_some_and(|n| *n > 0),
        "the race did not happen (every retry won, or every retry lost): {by_status:?}"
    );
    assert!(
        misreported.is_empty(),
        "{} manual retries of well-formed jobs that a daemon requeued at the same moment were \
         answered as something other than 404 not_in_failed_registry / 409 job_changed; first: {:?}",
        misreported.len(),
        misreported.iter().take(3).collect::<Vec<_>>()
    );
    for mut d in daemons {
        assert_eq!(d.stop(), 0, "SIGTERM exits 0:\n{}", d.log());
    }
    println!("took {:.1} s", started.elapsed().as_secs_f64());
}
