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
/// per ms here (queue-wide policies read no tracebacks), and each run lives up to 150 ms after
/// its first requeue.
const PER_QUEUE: usize = 20_000;
/// Kills in a row before the run that may finish.
const KILLS: usize = 7;

/// Many small batches, no rate limit to speak of, nothing scheduled but the start-up scan. The
/// lease is on (the default) with a short time: each restarted daemon must first wait for the
/// killed one's lease to run out, and the killed one's writes are fenced by it.
const SUPERVISOR: &str = "scan_interval = \"1h\"\nbatch_size = 200\nqueues = [\"*\"]\nmax_requeues_per_second = 100000\nlease_ttl = \"1s\"";

#[test]
fn kill_9_at_random_moments_never_loses_or_doubles_a_job() {
    let _alone = support::one_heavy_test_at_a_time();
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
            let delay = rng.range(0, 150);
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
    loop {
        if let Some(code) = daemon.exited() {
            panic!("rq-retryd exited with {code}:\n{}", daemon.log());
        }
        let supervisor = daemon.get("/api/v1/supervisor").expect(200);
        if !supervisor["last_scan"].is_null() {
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
