//! Crash safety (issue 6): a retry-everything daemon is `kill -9`ed at random moments, several
//! times in a row, while it requeues tens of thousands of failed jobs; after every kill each job
//! is in exactly one place (its failed registry or its queue list), no id is twice in a queue
//! list and every job hash exists. A last run then finishes: every job requeued exactly once.
//!
//! The kill moments come from a seeded RNG (printed; replay with `RQ_RETRYD_FAULT_SEED`).

use crate::support;

use std::time::{Duration, Instant};

use support::faults::{
    assert_all_auto_requeued, check_invariant, metric_sum, seed, KillableDaemon, Place, Rng,
    RETRY_EVERYTHING_NOW, RETRY_POLICY,
};
use support::RedisServer;

const QUEUES: [&str; 3] = ["alpha", "beta", "gamma"];
/// Enough that seven killed runs cannot requeue everything: a debug daemon does about 30 jobs
/// per ms here (queue-wide policies read no tracebacks), and each run lives up to
/// [`KILL_WITHIN`] ms after its first requeue: at most 7 × 1,800 of the 24,000 jobs.
const PER_QUEUE: usize = 8_000;
/// A run is killed up to this many ms after its first requeue: a window of about nine batches
/// of 200 at 30 jobs per ms, so the kills land at every point of a batch (between two script
/// calls, with one in flight, between a batch's requeues and its audit entry) as they did with
/// 150 ms and 60,000 jobs, with 40 % of the jobs to seed, check nine times and finish.
const KILL_WITHIN: u64 = 60;
/// Kills in a row before the run that may finish.
const KILLS: usize = 7;

/// Many small batches, no rate limit to speak of, nothing scheduled but the start-up scan. The
/// lease is on (the default) with a short time: each restarted daemon must first wait for the
/// killed one's lease to run out, and the killed one's writes are fenced by it.
const SUPERVISOR: &str = "scan_interval = \"1h\"\nbatch_size = 200\nqueues = [\"*\"]\nmax_requeues_per_second = 100000\nlease_ttl = \"1s\"";

#[test]
fn kill_9_at_random_moments_never_loses_or_doubles_a_job() {
    let _alone = support::machine::loading();
    let started = Instant::now();
    let server = RedisServer::start();
    let mut con = server.conn();
    let jobs = seed(&mut con, "crash", &QUEUES, PER_QUEUE);
    let total = jobs.len();
    let census = check_invariant(&mut con, &jobs);
    assert_eq!((census.failed, census.queued), (total, 0));

    let (mut rng, seed) = Rng::from_env(0x5eed_0006);
    println!("crash safety: {total} jobs over {QUEUES:?}, seed {seed}");
    let mut queued_before = 0;
    let mut interrupted_mid_requeue = 0;
    let mut checks = 1;
    for kill in 1..=KILLS {
        let mut daemon = KillableDaemon::spawn(&server.url(), SUPERVISOR, RETRY_EVERYTHING_NOW);
        // The first kill lands during start-up (connecting, loading scripts, discovering queues);
        // the others at a random moment after this run's first requeue, so they hit the scan
        // in the middle of its batches rather than the process's start-up.
        let moment = if kill == 1 {
            let delay = rng.range(20, 150);
            std::thread::sleep(Duration::from_millis(delay));
            format!("{delay} ms after start")
        } else {
            let since = wait_for_first_requeue(&mut con, queued_before, &daemon);
            let delay = rng.range(0, KILL_WITHIN);
            std::thread::sleep(Duration::from_millis(delay));
            format!("{delay} ms after its first requeue ({since} ms after start)")
        };
        daemon.kill9();
        let census = check_invariant(&mut con, &jobs);
        checks += 1;
        // Nothing takes a job off its queue here (no workers): requeued jobs stay requeued.
        assert!(
            census.queued >= queued_before,
            "kill {kill}: queued went from {queued_before} down to {}",
            census.queued
        );
        for (id, state) in &census.states {
            if state.place == Place::Queued {
                assert_eq!(
                    (state.attempts.as_deref(), state.policy.as_deref()),
                    (Some("1"), Some(RETRY_POLICY)),
                    "kill {kill}: {id} is queued without the stamp of exactly one automatic requeue"
                );
            } else {
                assert_eq!(
                    state.attempts, None,
                    "kill {kill}: {id} is still failed but carries retryd_attempts"
                );
            }
        }
        if census.queued > queued_before && census.failed > 0 {
            interrupted_mid_requeue += 1;
        }
        println!(
            "  kill -9 #{kill} {moment}: {} requeued by this run, {} queued, {} still failed; invariant holds",
            census.queued - queued_before,
            census.queued,
            census.failed
        );
        queued_before = census.queued;
    }
    assert!(
        interrupted_mid_requeue >= KILLS - 1,
        "only {interrupted_mid_requeue} of {KILLS} kills landed while the daemon was requeueing; \
         the kill moments do not exercise a crash mid-scan"
    );
    assert!(
        queued_before < total,
        "the killed runs requeued everything; the last run has nothing to finish"
    );

    // The run that may finish.
    let mut daemon = KillableDaemon::spawn(&server.url(), SUPERVISOR, RETRY_EVERYTHING_NOW);
    daemon.wait_healthy();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut lease_lost_mid_scan = false;
    loop {
        if let Some(code) = daemon.exited() {
            panic!("rq-retryd exited with {code}:\n{}", daemon.log());
        }
        let supervisor = daemon.get("/api/v1/supervisor").expect(200);
        // On a loaded machine a beat can come later than the 1 s lease: the daemon then stops
        // writing mid-scan (`not_active`, fenced as a killed one is) and scans again when it
        // holds the lease again. The count below is over both scans, still exact.
        if supervisor["last_scan"]["report"]["skipped_by_reason"]["not_active"]
            .as_u64()
            .is_some_and(|n| n > 0)
        {
            if !lease_lost_mid_scan {
                println!("  the finishing run lost its lease mid-scan: {supervisor}");
            }
            lease_lost_mid_scan = true;
        } else if !supervisor["last_scan"].is_null() {
            // Counted by the daemon, not read off `last_scan`: a second, idle scan right after
            // the first (a wake-up that came while the first ran) replaces that record.
            let requeued = metric_sum(
                &daemon.get("/metrics").text(),
                "rq_retryd_requeued_total",
                &[],
            );
            assert_eq!(
                requeued as usize,
                total - queued_before,
                "the finishing run requeues exactly the jobs the killed runs left: {supervisor}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the finishing scan did not complete in 90 s:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let census = check_invariant(&mut con, &jobs);
    checks += 1;
    assert_all_auto_requeued(&census, total);
    assert_eq!(daemon.stop(), 0, "SIGTERM exits 0:\n{}", daemon.log());
    println!(
        "crash safety: survived {KILLS} kill -9 ({interrupted_mid_requeue} mid-requeue), \
         invariant checked {checks} times over {total} jobs ({} job checks), every job requeued \
         exactly once; {:.1} s",
        checks * total,
        started.elapsed().as_secs_f64()
    );
}

/// Polls the queue lists until they hold more than `queued_before` ids (the daemon's first
/// requeue of this run landed); returns the milliseconds since `daemon` was spawned, about.
fn wait_for_first_requeue(
    con: &mut redis::Connection,
    queued_before: usize,
    daemon: &KillableDaemon,
) -> u128 {
    let started = Instant::now();
    loop {
        let mut pipe = redis::pipe();
        for queue in QUEUES {
            pipe.cmd("LLEN").arg(format!("rq:queue:{queue}"));
        }
        let lengths: Vec<usize> = pipe.query(con).unwrap();
        if lengths.iter().sum::<usize>() > queued_before {
            return started.elapsed().as_millis();
        }
        if let Some(code) = daemon.exited() {
            panic!("rq-retryd exited with {code}:\n{}", daemon.log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "rq-retryd requeued nothing within 30 s:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The check above fails when it should: each kind of violation it looks for, planted in a
/// few seeded jobs, is named in its panic (its hash reads go through one script per 5,000
/// jobs, so that is what this covers beyond the lists).
#[test]
fn the_invariant_check_names_every_kind_of_violation() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let jobs = seed(&mut con, "planted", &["alpha"], 8);
    assert_eq!(check_invariant(&mut con, &jobs).failed, 8, "a clean start");
    let id = |n: usize| jobs[n].id.clone();
    let cmd = |con: &mut redis::Connection, args: &[&str]| {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        let _: redis::Value = c.query(con).unwrap();
    };
    // 0: in both places; 1: lost; 2: twice in the list (and still failed); 3: hash gone;
    // 4: failed but says queued; 5: failed without its expiry.
    cmd(&mut con, &["RPUSH", "rq:queue:alpha", &id(0)]);
    cmd(&mut con, &["ZREM", "rq:failed:alpha", &id(1)]);
    cmd(&mut con, &["ZREM", "rq:failed:alpha", &id(2)]);
    cmd(&mut con, &["RPUSH", "rq:queue:alpha", &id(2), &id(2)]);
    cmd(&mut con, &["DEL", &format!("rq:job:{}", id(3))]);
    cmd(
        &mut con,
        &["HSET", &format!("rq:job:{}", id(4)), "status", "queued"],
    );
    cmd(&mut con, &["PERSIST", &format!("rq:job:{}", id(5))]);
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_invariant(&mut con, &jobs)
    }))
    .expect_err("the check panics");
    let message = found
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    for expected in [
        format!("{} is both in rq:failed:alpha and in rq:queue:alpha", id(0)),
        format!("{} is lost", id(1)),
        format!("{} appears 2 times in its queue list", id(2)),
        format!("the hash rq:job:{} is gone", id(3)),
        format!("{} is Failed but its hash says status=\"queued\"", id(4)),
        format!("{} is Failed but its hash has PTTL -1", id(5)),
    ] {
        assert!(message.contains(&expected), "{expected:?} in:\n{message}");
    }
}
