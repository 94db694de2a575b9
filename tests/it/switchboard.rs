//! One switchboard for every instance (issue 11): the pause switch lives in Redis, so pausing
//! through any instance stops every instance before its next write; one instance holds the
//! lease and does the automatic work; after `kill -9` of the holder a standby takes over within
//! two lease times and finishes, nothing lost, nothing doubled. The lease's own round trips run
//! in-process too, on a paused clock ([`LeasesOnRedis`]).
//!
//! See: issue 11 ("One switchboard for every instance", "One active scanner, standbys ready"),
//! issue 20 (the lease as a struct).

use crate::support;

use std::time::{Duration, Instant};

use rq_retryd::switchboard::{BeatChange, Lease};
use serde_json::Value;
use support::faults::{
    assert_all_auto_requeued, audited, check_invariant, metric_sum, seed, KillableDaemon,
    RETRY_EVERYTHING_NOW,
};
use support::RedisServer;
use tokio::time::advance;

const QUEUES: [&str; 2] = ["alpha", "beta"];
/// The instances' `lease_ttl`.
const LEASE_TTL: Duration = Duration::from_secs(2);

fn supervisor_lines(extra: &str) -> String {
    format!(
        "scan_interval = \"1h\"\nbatch_size = 100\nqueues = [\"*\"]\nlease_ttl = \"{}s\"\n{extra}",
        LEASE_TTL.as_secs()
    )
}

#[track_caller]
fn post(d: &KillableDaemon, path: &str) -> Value {
    let r = d
        .try_call("POST", path)
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert_eq!(r.status, 200, "POST {path}: {}\n{}", r.text(), d.log());
    r.json()
}

fn state(d: &KillableDaemon) -> Value {
    d.get("/api/v1/supervisor").json()
}

fn queued(con: &mut redis::Connection) -> usize {
    let mut pipe = redis::pipe();
    for q in QUEUES {
        pipe.cmd("LLEN").arg(format!("rq:queue:{q}"));
    }
    let lens: Vec<usize> = pipe.query(con).unwrap();
    lens.iter().sum()
}

fn failed(con: &mut redis::Connection) -> usize {
    let mut pipe = redis::pipe();
    for q in QUEUES {
        pipe.cmd("ZCARD").arg(format!("rq:failed:{q}"));
    }
    let lens: Vec<usize> = pipe.query(con).unwrap();
    lens.iter().sum()
}

#[track_caller]
fn wait_for(
    what: &str,
    limit: Duration,
    daemons: &[&KillableDaemon],
    mut check: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        for d in daemons {
            if let Some(code) = d.exited() {
                panic!(
                    "a daemon exited with {code} while waiting for {what}:\n{}",
                    d.log()
                );
            }
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            daemons
                .iter()
                .map(|d| d.log())
                .collect::<Vec<_>>()
                .join("\n-----\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ready(d: &KillableDaemon) {
    d.wait_healthy();
    wait_for("/readyz", Duration::from_secs(30), &[d], || {
        d.get("/readyz").status == 200
    });
}

/// Pause through A while B (the active instance) is mid-way through a bulk requeue: B
/// requeues nothing more once the pause has answered; both say paused, by whom and when, and
/// `rq_retryd_paused` agrees; manual retries still work; an instance that starts while paused
/// stays paused; resume lets B finish.
#[test]
fn a_pause_through_any_instance_stops_every_instance_before_its_next_write() {
    let _alone = support::machine::loading();
    let server = RedisServer::start();
    let mut con = server.conn();
    // 3,000 jobs at 500/s after a first burst of 500 (the rate limiter's bucket starts full):
    // B has five seconds of work once it is active, for A to start and pause it at 1,000. What
    // is left then is read twice while paused (by B's pass and by C's first scan) and requeued
    // after the resume, all at a debug daemon's pace: a few seconds for a few thousand jobs.
    let jobs = seed(&mut con, "pause", &QUEUES, 1_500);
    // B first, so that B holds the lease; a slow rate so that the pause lands mid-way.
    let b = KillableDaemon::spawn(
        &server.url(),
        &supervisor_lines("max_requeues_per_second = 500"),
        RETRY_EVERYTHING_NOW,
    );
    ready(&b);
    wait_for("B active", Duration::from_secs(10), &[&b], || {
        state(&b)["active"] == true
    });
    let a = KillableDaemon::spawn(
        &server.url(),
        &supervisor_lines("max_requeues_per_second = 500"),
        RETRY_EVERYTHING_NOW,
    );
    ready(&a);
    wait_for("B mid-way", Duration::from_secs(30), &[&a, &b], || {
        queued(&mut con) >= 1_000
    });

    let answer = post(&a, "/api/v1/supervisor/pause");
    let at_pause = queued(&mut con);
    assert_eq!(answer["paused"], true, "{answer}");
    assert!(
        at_pause < jobs.len(),
        "the requeue finished before the pause: {at_pause}"
    );
    // A lease time: B writes a batch of 100 every 200 ms at this rate and beats three times in
    // it, so B would show a write whether it read the pause before each batch, at each beat or
    // never.
    std::thread::sleep(LEASE_TTL);
    let after = queued(&mut con);
    assert_eq!(
        after,
        at_pause,
        "B requeued {} jobs after the pause through A had answered",
        after - at_pause
    );
    assert_eq!(failed(&mut con) + after, jobs.len(), "nothing lost");

    for (name, d) in [("A", &a), ("B", &b)] {
        let s = state(d);
        assert_eq!(s["paused"], true, "{name}: {s}");
        assert!(
            s["paused_by"]
                .as_str()
                .is_some_and(|w| w.contains("127.0.0.1")),
            "{name}: who paused: {s}"
        );
        assert!(s["paused_at"].as_str().is_some(), "{name}: when: {s}");
        wait_for("rq_retryd_paused 1", Duration::from_secs(5), &[d], || {
            metric_sum(&d.get("/metrics").text(), "rq_retryd_paused", &[]) == 1.0
        });
    }
    // B counts what the pause held back when its pass ends, which may be after the
    // answers above.
    wait_for(
        "B counts what the pause held back",
        Duration::from_secs(10),
        &[&b],
        || {
            metric_sum(
                &b.get("/metrics").text(),
                "rq_retryd_skipped_total",
                &[("reason", "paused")],
            ) > 0.0
        },
    );

    // Manual actions keep working while paused, on either instance.
    let id = {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg("rq:failed:alpha")
            .arg(0)
            .arg(0)
            .query(&mut con)
            .unwrap();
        ids[0].clone()
    };
    let r = post(&a, &format!("/api/v1/jobs/failed/{id}/retry"));
    assert_eq!(r["status"], "queued", "{r}");

    // An instance that starts while paused stays paused, even one that writes without a lease.
    let c = KillableDaemon::spawn(
        &server.url(),
        &supervisor_lines("leader_election = false"),
        RETRY_EVERYTHING_NOW,
    );
    ready(&c);
    assert_eq!(state(&c)["paused"], true);
    let before_c = queued(&mut con);
    wait_for("C's first scan", Duration::from_secs(20), &[&c], || {
        !state(&c)["last_scan"].is_null()
    });
    assert_eq!(queued(&mut con), before_c, "C requeued while paused");
    assert!(
        metric_sum(
            &c.get("/metrics").text(),
            "rq_retryd_skipped_total",
            &[("reason", "paused")]
        ) > 0.0
    );

    // Resume through C: B, the active instance, finishes the work.
    let resumed = post(&c, "/api/v1/supervisor/resume");
    assert_eq!(resumed["paused"], false, "{resumed}");
    assert!(resumed["paused_by"].is_null(), "{resumed}");
    let scan = c.try_call("POST", "/api/v1/supervisor/scan").unwrap();
    assert_eq!(scan.status, 202, "{}", scan.text());
    wait_for(
        "all requeued",
        Duration::from_secs(60),
        &[&a, &b, &c],
        || failed(&mut con) == 0,
    );
    let census = check_invariant(&mut con, &jobs);
    assert_eq!((census.failed, census.queued), (0, jobs.len()));
    assert_eq!(audited(&mut con, "requeue", None), jobs.len() as u64);
    for mut d in [a, b, c] {
        assert_eq!(d.stop(), 0, "SIGTERM exits 0:\n{}", d.log());
    }
}

/// Three instances: exactly one is active and every one names it; the standbys read no
/// registry and write nothing; `kill -9` of the holder mid-work hands the work to a standby
/// within two lease times, which finishes it: every job requeued exactly once. SIGTERM of the
/// next holder releases the lease, so the last standby takes over within a beat or two.
#[test]
fn a_standby_takes_over_within_two_lease_times_after_kill_9_and_finishes_the_work() {
    let _alone = support::one_heavy_test_at_a_time();
    let lease_ttl = LEASE_TTL;
    let server = RedisServer::start();
    let mut con = server.conn();
    // 6,000 jobs at 2,000/s: the holder is killed at 2,000 or a little more, so the standby
    // that takes over has work left, and requeues some before the test stops it in turn.
    let jobs = seed(&mut con, "lease", &QUEUES, 3_000);
    let lines = supervisor_lines("max_requeues_per_second = 2000");
    let mut daemons: Vec<KillableDaemon> = (0..3)
        .map(|_| KillableDaemon::spawn(&server.url(), &lines, RETRY_EVERYTHING_NOW))
        .collect();
    for d in &daemons {
        ready(d);
    }
    let refs: Vec<&KillableDaemon> = daemons.iter().collect();
    wait_for(
        "one active instance",
        Duration::from_secs(10),
        &refs,
        || {
            daemons
                .iter()
                .filter(|d| state(d)["active"] == true)
                .count()
                == 1
        },
    );
    let states: Vec<Value> = daemons.iter().map(state).collect();
    let holder = states
        .iter()
        .position(|s| s["active"] == true)
        .expect("one active");
    let holder_id = states[holder]["instance"].as_str().unwrap().to_string();
    for s in &states {
        assert_eq!(
            s["active_instance"],
            holder_id.as_str(),
            "every instance names the holder: {s}"
        );
    }
    let leaders: Vec<f64> = daemons
        .iter()
        .map(|d| metric_sum(&d.get("/metrics").text(), "rq_retryd_leader", &[]))
        .collect();
    assert_eq!(
        leaders.iter().sum::<f64>(),
        1.0,
        "rq_retryd_leader: {leaders:?}"
    );

    wait_for("the holder mid-way", Duration::from_secs(30), &refs, || {
        queued(&mut con) >= 2_000
    });
    drop(refs);
    daemons[holder].kill9();
    let killed_at = Instant::now();
    let at_kill = queued(&mut con);
    assert!(at_kill < jobs.len(), "the holder finished before the kill");
    let standbys: Vec<usize> = (0..3).filter(|&i| i != holder).collect();
    let refs: Vec<&KillableDaemon> = standbys.iter().map(|&i| &daemons[i]).collect();
    wait_for(
        "a standby active",
        2 * lease_ttl + Duration::from_millis(500),
        &refs,
        || {
            standbys
                .iter()
                .any(|&i| state(&daemons[i])["active"] == true)
        },
    );
    let took_over = killed_at.elapsed();
    println!(
        "a standby took over {:.2} s after kill -9 (lease {lease_ttl:?})",
        took_over.as_secs_f64()
    );
    assert!(took_over <= 2 * lease_ttl, "takeover took {took_over:?}");
    wait_for(
        "more requeued by the new holder",
        Duration::from_secs(20),
        &refs,
        || queued(&mut con) > at_kill,
    );

    // SIGTERM of the new holder releases the lease: the last one takes over at its next beat.
    let second = *standbys
        .iter()
        .find(|&&i| state(&daemons[i])["active"] == true)
        .unwrap();
    let last = *standbys.iter().find(|&&i| i != second).unwrap();
    assert_eq!(daemons[second].stop(), 0, "SIGTERM exits 0");
    let stopped_at = Instant::now();
    wait_for("the last one active", lease_ttl, &[&daemons[last]], || {
        state(&daemons[last])["active"] == true
    });
    println!(
        "after SIGTERM the last standby took over in {:.2} s",
        stopped_at.elapsed().as_secs_f64()
    );
    assert!(daemons[last].log().contains("holds the lease"));

    wait_for(
        "all requeued",
        Duration::from_secs(60),
        &[&daemons[last]],
        || failed(&mut con) == 0,
    );
    let census = check_invariant(&mut con, &jobs);
    assert_all_auto_requeued(&census, jobs.len());
    // The audit entry of a batch is appended after its script calls, so `kill -9` can take
    // the entries of the holder's batches in flight with it (at most 3 batches of 100 here):
    // never more entries than requeues, and no more missing than that.
    let audited = audited(&mut con, "requeue", Some("supervisor"));
    assert!(
        audited <= jobs.len() as u64 && audited + 300 >= jobs.len() as u64,
        "audited {audited} automatic requeues of {} jobs",
        jobs.len()
    );
    assert_eq!(daemons[last].stop(), 0);
}

/// Leases beating on one real Redis with the tokio clock paused: what each instance decides
/// goes by its own clock from when its beat was sent, while Redis keeps the lease by its own
/// time. Redis answers in real time while the paused clock stands still: the clock does not
/// jump ahead to the next timer (a beat's timeout) while a blocking task runs, here one that
/// waits until the fixture is dropped.
///
/// See: issue 11 (one active scanner, standbys ready), issue 20 (the lease as a struct, tested
/// in-process).
struct LeasesOnRedis {
    server: RedisServer,
    con: redis::aio::MultiplexedConnection,
    board: rq_retryd::switchboard::Switchboard,
    _clock_held: std::sync::mpsc::Sender<()>,
}

/// The lease time of [`LeasesOnRedis`]' instances.
const TTL: Duration = Duration::from_secs(30);

impl LeasesOnRedis {
    async fn start() -> LeasesOnRedis {
        let server = RedisServer::start();
        let (clock_held, until_dropped) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || until_dropped.recv());
        let con = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        LeasesOnRedis {
            server,
            con,
            board: rq_retryd::switchboard::Switchboard::new(rq_retryd::rq::Keys::new("rq")),
            _clock_held: clock_held,
        }
    }

    /// One beat of `lease`, taking part in the election.
    async fn beat(&mut self, lease: &Lease) -> BeatChange {
        lease
            .beat(&self.board, &mut self.con, true, TTL)
            .await
            .unwrap()
    }

    /// Who holds the lease, as Redis says.
    fn holder(&self) -> Option<String> {
        redis::cmd("GET")
            .arg("rq:retryd:lease")
            .query(&mut self.server.conn())
            .unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn a_lease_that_ran_out_on_the_holder_s_clock_but_not_in_redis_is_renewed_as_a_new_start() {
    let mut redis = LeasesOnRedis::start().await;
    let (a, b) = (Lease::new("a".into()), Lease::new("b".into()));
    assert!(redis.beat(&a).await.became_active);
    assert_eq!(redis.beat(&b).await, BeatChange::default());
    assert_eq!(b.last_beat().lease.holder.as_deref(), Some("a"));
    assert!(a.holds(TTL) && !b.holds(TTL));
    assert_eq!(redis.holder().as_deref(), Some("a"));
    for _ in 0..3 {
        advance(TTL / 3).await;
        assert_eq!(redis.beat(&a).await, BeatChange::default(), "no news");
        assert!(a.holds(TTL), "renewed every third of the lease");
    }

    // A's beats stall for two lease times by its clock (a stopped process): it stands by,
    // though Redis still holds its lease; the beat that renews it is a new start.
    advance(TTL * 2).await;
    assert!(!a.holds(TTL));
    assert_eq!(redis.holder().as_deref(), Some("a"));
    let back = redis.beat(&a).await;
    assert!(back.became_active && !back.stopped_being_active, "{back:?}");
    assert!(a.holds(TTL));
    assert_eq!(redis.beat(&b).await, BeatChange::default());
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_goes_to_the_standby_at_its_next_beat() {
    let mut redis = LeasesOnRedis::start().await;
    let (a, b) = (Lease::new("a".into()), Lease::new("b".into()));
    assert!(redis.beat(&a).await.became_active);
    redis.beat(&b).await;

    // A scan asked for on the switchboard is news to every instance at its next beat, once.
    redis.board.request_scan(&mut redis.con).await.unwrap();
    assert!(redis.beat(&a).await.scan_requested);
    assert!(redis.beat(&b).await.scan_requested);
    assert_eq!(redis.beat(&b).await, BeatChange::default());

    // Released (on shutdown): B takes over at its next beat, not a lease time later; a second
    // release gives nothing up.
    assert!(a.release(&redis.board, &mut redis.con).await);
    assert!(!a.holds(TTL));
    assert_eq!(redis.holder(), None);
    assert!(redis.beat(&b).await.became_active);
    assert!(b.holds(TTL));
    assert!(!a.release(&redis.board, &mut redis.con).await);
    assert_eq!(redis.holder().as_deref(), Some("b"));
    assert_eq!(redis.beat(&a).await, BeatChange::default(), "A stands by");
    assert!(!a.holds(TTL));

    // An instance outside the election only reads.
    let reader = Lease::new("reader".into());
    let read = reader.beat(&redis.board, &mut redis.con, false, TTL).await;
    assert_eq!(read.unwrap(), BeatChange::default());
    assert_eq!(redis.holder().as_deref(), Some("b"));
}
