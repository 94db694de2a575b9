//! The atomic scripts against a real redis-server: each write happens completely or not at all,
//! only on the failure the decision saw, and never twice.

use crate::support;

use chrono::Utc;
use redis::Commands;
use rq_retryd::executor::{Author, Executor, Outcome, Refusal, RefusalReason, Write, WriteKind};
use rq_retryd::rq::{decode, DecodeOutcome, JobFacts, Keys, Registry};
use support::jobs::{async_con, read_facts as facts, FailedJob};
use support::RedisServer;

fn requeue(f: &JobFacts, attempt: Option<u32>, at_front: bool) -> Write {
    Write::of(
        f,
        Author::Policy("transient".into()),
        WriteKind::Requeue { attempt, at_front },
    )
}

/// Every audit entry, oldest first: (stream id, fields).
fn audit_entries(
    con: &mut redis::Connection,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    redis::cmd("XRANGE")
        .arg("rq:retryd:audit")
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap()
}

fn with_kind(f: &JobFacts, kind: WriteKind) -> Write {
    Write {
        kind,
        ..requeue(f, None, false)
    }
}

#[tokio::test]
async fn requeue_moves_a_failed_job_onto_its_queue_in_one_step() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("j1").queue("emails").write(&mut sync);
    let mut con = async_con(&server).await;
    let f = facts(&mut con, "emails", "j1").await;
    let executor = Executor::new(Keys::new("rq"));

    let outcomes = executor
        .apply(&mut con, &[requeue(&f, Some(1), false)], Utc::now())
        .await
        .unwrap();

    assert_eq!(outcomes, vec![Outcome::Requeued]);
    let in_registry: Option<f64> = sync.zscore("rq:failed:emails", "j1").unwrap();
    assert_eq!(in_registry, None);
    let queued: Vec<String> = sync.lrange("rq:queue:emails", 0, -1).unwrap();
    assert_eq!(queued, vec!["j1"]);
    let h: std::collections::HashMap<String, String> = {
        let raw: std::collections::HashMap<String, Vec<u8>> = sync.hgetall("rq:job:j1").unwrap();
        raw.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect()
    };
    assert_eq!(h["status"], "queued");
    assert_eq!(h["started_at"], "");
    assert_eq!(h["ended_at"], "");
    assert!(
        h["enqueued_at"].ends_with('Z') && h["enqueued_at"].len() == 27,
        "RQ timestamp: {}",
        h["enqueued_at"]
    );
    assert_eq!(h["retryd_attempts"], "1");
    assert_eq!(h["retryd_policy"], "transient");
    assert_eq!(h["retryd_requeued_at"], h["enqueued_at"]);
    // The traceback is replaced by what RQ's own requeue writes there: zlib.compress(b"").
    let exc_info: Vec<u8> = sync.hget("rq:job:j1", "exc_info").unwrap();
    assert_eq!(exc_info, b"x\x9c\x03\x00\x00\x00\x00\x01");
    let ttl: i64 = sync.ttl("rq:job:j1").unwrap();
    assert_eq!(
        ttl, -1,
        "a requeued job must not keep its failure_ttl expiry"
    );
    let member: bool = sync.sismember("rq:queues", "rq:queue:emails").unwrap();
    assert!(member);
}

#[tokio::test]
async fn a_second_identical_requeue_is_a_no_op_not_a_duplicate() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("j1").write(&mut sync);
    let mut con = async_con(&server).await;
    let f = facts(&mut con, "default", "j1").await;
    let executor = Executor::new(Keys::new("rq"));
    let w = requeue(&f, Some(1), false);

    let outcomes = executor
        .apply(&mut con, &[w.clone(), w], Utc::now())
        .await
        .unwrap();

    assert_eq!(outcomes, vec![Outcome::Requeued, Outcome::NotInRegistry]);
    let queued: Vec<String> = sync.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["j1"]);
}

#[tokio::test]
async fn a_decision_on_a_failure_that_changed_meanwhile_writes_nothing() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("j1").write(&mut sync);
    let mut con = async_con(&server).await;
    let f = facts(&mut con, "default", "j1").await;
    // Someone retried it and it failed again in the meantime: a new ended_at.
    let _: () = sync
        .hset("rq:job:j1", "ended_at", support::jobs::rq_time(0))
        .unwrap();
    let before = support::jobs::snapshot(&mut sync);

    let executor = Executor::new(Keys::new("rq"));
    let outcomes = executor
        .apply(
            &mut con,
            &[
                requeue(&f, Some(1), false),
                with_kind(&f, WriteKind::Purge),
                with_kind(&f, WriteKind::MarkExhausted),
            ],
            Utc::now(),
        )
        .await
        .unwrap();

    assert_eq!(
        outcomes,
        vec![Outcome::Changed, Outcome::Changed, Outcome::Changed]
    );
    assert_eq!(support::jobs::snapshot(&mut sync), before);
}

// See: issue 11 (the soak: a job RQ failed after its worker died has no ended_at).
#[tokio::test]
async fn a_failure_without_ended_at_is_written_only_while_it_is_still_that_failure() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    for id in ["gone-worker", "requeued-by-rq", "then-failed-again"] {
        FailedJob::new(id).write(&mut sync);
        let _: () = sync.hdel(format!("rq:job:{id}"), "ended_at").unwrap();
    }
    let mut con = async_con(&server).await;
    let executor = Executor::new(Keys::new("rq"));
    let abandoned = facts(&mut con, "default", "gone-worker").await;
    assert_eq!(abandoned.cas.ended_at, "");
    assert_eq!(
        executor
            .apply(&mut con, &[requeue(&abandoned, Some(1), false)], Utc::now())
            .await
            .unwrap(),
        vec![Outcome::Requeued]
    );
    let queued: Vec<String> = sync.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["gone-worker"]);

    // Decided on while it had no ended_at; then RQ requeued it (status queued, still listed in
    // the registry for a moment), or it ran and failed again (an ended_at now).
    let requeued = facts(&mut con, "default", "requeued-by-rq").await;
    let again = facts(&mut con, "default", "then-failed-again").await;
    let _: () = sync
        .hset("rq:job:requeued-by-rq", "status", "queued")
        .unwrap();
    let _: () = sync
        .hset(
            "rq:job:then-failed-again",
            "ended_at",
            support::jobs::rq_time(0),
        )
        .unwrap();
    let before = support::jobs::snapshot(&mut sync);
    for f in [&requeued, &again] {
        let outcomes = executor
            .apply(
                &mut con,
                &[
                    requeue(f, Some(1), false),
                    with_kind(f, WriteKind::Purge),
                    with_kind(f, WriteKind::MarkExhausted),
                ],
                Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(
            outcomes,
            vec![Outcome::Changed, Outcome::Changed, Outcome::Changed],
            "{}",
            f.job_id
        );
    }
    assert_eq!(support::jobs::snapshot(&mut sync), before);
}

#[tokio::test]
async fn a_registry_entry_without_a_job_hash_is_left_in_place() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    let _: () = sync
        .zadd("rq:failed:default", "ghost", Utc::now().timestamp() + 1000)
        .unwrap();
    let mut con = async_con(&server).await;
    let registry = Registry::new(Keys::new("rq"));
    let raw = registry
        .read_jobs(&mut con, "default", &["ghost".to_string()])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(decode(&raw), DecodeOutcome::Orphan);

    let ghost = Write {
        job_id: "ghost".into(),
        queue: "default".into(),
        origin: "default".into(),
        cas: Default::default(),
        failed_at: Utc::now(),
        author: Author::Policy("p".into()),
        kind: WriteKind::Requeue {
            attempt: Some(1),
            at_front: false,
        },
    };
    let purge = Write {
        kind: WriteKind::Purge,
        ..ghost.clone()
    };
    let outcomes = Executor::new(Keys::new("rq"))
        .apply(&mut con, &[ghost, purge], Utc::now())
        .await
        .unwrap();

    assert_eq!(outcomes, vec![Outcome::JobMissing, Outcome::JobMissing]);
    let still: Option<f64> = sync.zscore("rq:failed:default", "ghost").unwrap();
    assert!(still.is_some());
    let queued: i64 = sync.llen("rq:queue:default").unwrap();
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn purge_deletes_the_job_its_dependency_sets_and_results_and_nothing_else() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("doomed").write(&mut sync);
    FailedJob::new("bystander").write(&mut sync);
    let _: () = sync.sadd("rq:job:doomed:dependents", "x").unwrap();
    let _: () = sync.sadd("rq:job:doomed:dependencies", "y").unwrap();
    let mut con = async_con(&server).await;
    let f = facts(&mut con, "default", "doomed").await;
    let bystander_before: Option<Vec<u8>> = redis::cmd("DUMP")
        .arg("rq:job:bystander")
        .query(&mut sync)
        .unwrap();

    let outcomes = Executor::new(Keys::new("rq"))
        .apply(&mut con, &[with_kind(&f, WriteKind::Purge)], Utc::now())
        .await
        .unwrap();

    assert_eq!(outcomes, vec![Outcome::Purged]);
    for key in [
        "rq:job:doomed",
        "rq:job:doomed:dependents",
        "rq:job:doomed:dependencies",
        "rq:results:doomed",
    ] {
        let exists: bool = sync.exists(key).unwrap();
        assert!(!exists, "{key} should be gone");
    }
    let gone: Option<f64> = sync.zscore("rq:failed:default", "doomed").unwrap();
    assert_eq!(gone, None);
    let bystander_after: Option<Vec<u8>> = redis::cmd("DUMP")
        .arg("rq:job:bystander")
        .query(&mut sync)
        .unwrap();
    assert_eq!(bystander_before, bystander_after);
    let still: Option<f64> = sync.zscore("rq:failed:default", "bystander").unwrap();
    assert!(still.is_some());
}

#[tokio::test]
async fn mark_exhausted_marks_once_and_keeps_the_job_in_its_registry() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("j1").attempts(3).write(&mut sync);
    let mut con = async_con(&server).await;
    let f = facts(&mut con, "default", "j1").await;
    let w = with_kind(&f, WriteKind::MarkExhausted);

    let outcomes = Executor::new(Keys::new("rq"))
        .apply(&mut con, &[w.clone(), w], Utc::now())
        .await
        .unwrap();

    assert_eq!(
        outcomes,
        vec![Outcome::MarkedExhausted, Outcome::AlreadyExhausted]
    );
    let marked: String = sync.hget("rq:job:j1", "retryd_exhausted").unwrap();
    assert_eq!(marked, "1");
    let still: Option<f64> = sync.zscore("rq:failed:default", "j1").unwrap();
    assert!(still.is_some());
}

#[tokio::test]
async fn scripts_flushed_from_redis_are_loaded_again_and_run_once() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("j1").write(&mut sync);
    let mut con = async_con(&server).await;
    let executor = Executor::new(Keys::new("rq"));
    executor.load_scripts(&mut con).await.unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut sync).unwrap();
    let f = facts(&mut con, "default", "j1").await;

    let outcomes = executor
        .apply(&mut con, &[requeue(&f, Some(1), false)], Utc::now())
        .await
        .unwrap();

    assert_eq!(outcomes, vec![Outcome::Requeued]);
    let queued: Vec<String> = sync.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["j1"]);
}

#[tokio::test]
async fn at_front_pushes_to_the_head_of_the_queue() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    let _: () = sync.rpush("rq:queue:default", "waiting-1").unwrap();
    FailedJob::new("urgent").write(&mut sync);
    let mut con = async_con(&server).await;
    let f = facts(&mut con, "default", "urgent").await;

    let outcomes = Executor::new(Keys::new("rq"))
        .apply(&mut con, &[requeue(&f, Some(1), true)], Utc::now())
        .await
        .unwrap();

    assert_eq!(outcomes, vec![Outcome::Requeued]);
    let queued: Vec<String> = sync.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["urgent", "waiting-1"]);
}

#[tokio::test]
async fn a_job_with_its_own_ttl_expires_like_rq_would_set_it() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("j1").field("ttl", b"600").write(&mut sync);
    let mut con = async_con(&server).await;
    let f = facts(&mut con, "default", "j1").await;

    Executor::new(Keys::new("rq"))
        .apply(&mut con, &[requeue(&f, Some(1), false)], Utc::now())
        .await
        .unwrap();

    let ttl: i64 = sync.ttl("rq:job:j1").unwrap();
    assert!((1..=600).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn a_manual_requeue_does_not_count_as_an_attempt() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("j1").attempts(2).write(&mut sync);
    let mut con = async_con(&server).await;
    let f = facts(&mut con, "default", "j1").await;

    let outcomes = Executor::new(Keys::new("rq"))
        .apply(&mut con, &[requeue(&f, None, false)], Utc::now())
        .await
        .unwrap();

    assert_eq!(outcomes, vec![Outcome::Requeued]);
    let attempts: String = sync.hget("rq:job:j1", "retryd_attempts").unwrap();
    assert_eq!(attempts, "2");
}

#[tokio::test]
async fn racing_executors_requeue_every_job_exactly_once() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    let ids: Vec<String> = (0..300).map(|i| format!("job-{i}")).collect();
    for id in &ids {
        FailedJob::new(id).write(&mut sync);
    }
    let mut con = async_con(&server).await;
    let registry = Registry::new(Keys::new("rq"));
    let raws = registry.read_jobs(&mut con, "default", &ids).await.unwrap();
    let writes: Vec<Write> = raws
        .iter()
        .map(|r| match decode(r) {
            DecodeOutcome::Job(f) => requeue(&f, Some(1), false),
            other => panic!("{other:?}"),
        })
        .collect();

    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut con = async_con(&server).await;
        let writes = writes.clone();
        tasks.push(tokio::spawn(async move {
            Executor::new(Keys::new("rq"))
                .apply(&mut con, &writes, Utc::now())
                .await
                .unwrap()
        }));
    }
    let mut requeued = 0;
    for t in tasks {
        requeued += t
            .await
            .unwrap()
            .iter()
            .filter(|o| **o == Outcome::Requeued)
            .count();
    }

    assert_eq!(requeued, ids.len());
    let mut queued: Vec<String> = sync.lrange("rq:queue:default", 0, -1).unwrap();
    queued.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(queued, expected, "every job in the queue exactly once");
    let left: i64 = sync.zcard("rq:failed:default").unwrap();
    assert_eq!(left, 0);
}

/// Scripts handle up to 50 jobs per call: one bad job must not stop or undo the others.
#[tokio::test]
async fn a_job_key_that_turned_into_a_string_fails_alone_within_a_batch() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    for id in ["a", "b", "c"] {
        FailedJob::new(id).write(&mut sync);
    }
    let mut con = async_con(&server).await;
    let (fa, fb, fc) = (
        facts(&mut con, "default", "a").await,
        facts(&mut con, "default", "b").await,
        facts(&mut con, "default", "c").await,
    );
    // Between the decision and the write, b's key is replaced by a string.
    let _: () = sync.del("rq:job:b").unwrap();
    let _: () = sync.set("rq:job:b", "not a hash").unwrap();

    let outcomes = Executor::new(Keys::new("rq"))
        .apply(
            &mut con,
            &[
                requeue(&fa, Some(1), false),
                requeue(&fb, Some(1), false),
                requeue(&fc, Some(1), false),
            ],
            Utc::now(),
        )
        .await
        .unwrap();

    assert_eq!(outcomes[0], Outcome::Requeued);
    assert_eq!(
        outcomes[1],
        Outcome::Refused(Refusal {
            reason: RefusalReason::WrongType,
            key: "rq:job:b".into()
        })
    );
    assert_eq!(outcomes[2], Outcome::Requeued);
    let queued: Vec<String> = sync.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["a", "c"]);
    let b_still_failed: Option<f64> = sync.zscore("rq:failed:default", "b").unwrap();
    assert!(b_still_failed.is_some());
    let b_value: String = sync.get("rq:job:b").unwrap();
    assert_eq!(b_value, "not a hash");
}

#[tokio::test]
async fn one_call_serving_several_queues_policies_and_duplicates_maps_every_outcome_back() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    for (id, queue) in [
        ("a1", "alpha"),
        ("a2", "alpha"),
        ("b1", "beta"),
        ("b2", "beta"),
    ] {
        FailedJob::new(id).queue(queue).write(&mut sync);
    }
    let mut con = async_con(&server).await;
    let a1 = facts(&mut con, "alpha", "a1").await;
    let a2 = facts(&mut con, "alpha", "a2").await;
    let b1 = facts(&mut con, "beta", "b1").await;
    let b2 = facts(&mut con, "beta", "b2").await;
    let other_policy = Write {
        author: Author::Policy("other".into()),
        ..requeue(&b2, Some(1), false)
    };
    // Interleaved groups, one job twice (in the same group) and one at the front.
    let writes = vec![
        requeue(&a1, Some(1), false),
        requeue(&b1, Some(1), true),
        requeue(&a1, Some(1), false),
        other_policy,
        requeue(&a2, Some(1), false),
    ];

    let outcomes = Executor::new(Keys::new("rq"))
        .apply(&mut con, &writes, Utc::now())
        .await
        .unwrap();

    assert_eq!(
        outcomes,
        vec![
            Outcome::Requeued,
            Outcome::Requeued,
            Outcome::NotInRegistry,
            Outcome::Requeued,
            Outcome::Requeued
        ]
    );
    let alpha: Vec<String> = sync.lrange("rq:queue:alpha", 0, -1).unwrap();
    assert_eq!(alpha, vec!["a1", "a2"], "each once, in decision order");
    let beta: Vec<String> = sync.lrange("rq:queue:beta", 0, -1).unwrap();
    assert_eq!(beta.len(), 2, "{beta:?}");
    assert!(beta.contains(&"b1".to_string()) && beta.contains(&"b2".to_string()));
    let policy: String = sync.hget("rq:job:b2", "retryd_policy").unwrap();
    assert_eq!(policy, "other");
    for queue in ["alpha", "beta"] {
        let left: usize = sync.zcard(format!("rq:failed:{queue}")).unwrap();
        assert_eq!(left, 0, "{queue}");
        let known: bool = sync
            .sismember("rq:queues", format!("rq:queue:{queue}"))
            .unwrap();
        assert!(known, "{queue}");
    }
}

/// A requeued job's dependency sets live exactly as long as its hash: PERSISTed with it, or
/// given its own ttl with it, never left with the failure's EXPIRE.
/// See: issue 21, item 3 (the dependents set expired, and the children stayed deferred).
#[tokio::test]
async fn a_requeued_job_keeps_its_dependency_sets_as_long_as_itself() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("plain").write(&mut sync);
    FailedJob::new("timed")
        .field("ttl", b"600")
        .write(&mut sync);
    for id in ["plain", "timed"] {
        for set in ["dependents", "dependencies"] {
            let key = format!("rq:job:{id}:{set}");
            let _: () = sync.sadd(&key, "other").unwrap();
            let _: () = sync.expire(&key, 5).unwrap();
        }
    }
    let mut con = async_con(&server).await;
    let plain = facts(&mut con, "default", "plain").await;
    let timed = facts(&mut con, "default", "timed").await;

    let outcomes = Executor::new(Keys::new("rq"))
        .apply(
            &mut con,
            &[
                requeue(&plain, Some(1), false),
                requeue(&timed, Some(1), false),
            ],
            Utc::now(),
        )
        .await
        .unwrap();

    assert_eq!(outcomes, vec![Outcome::Requeued, Outcome::Requeued]);
    for key in [
        "rq:job:plain",
        "rq:job:plain:dependents",
        "rq:job:plain:dependencies",
    ] {
        let ttl: i64 = sync.ttl(key).unwrap();
        assert_eq!(ttl, -1, "{key}");
    }
    for key in [
        "rq:job:timed",
        "rq:job:timed:dependents",
        "rq:job:timed:dependencies",
    ] {
        let ttl: i64 = sync.ttl(key).unwrap();
        assert!((590..=600).contains(&ttl), "{key}: ttl {ttl}");
    }
}

/// A dependents or dependencies key that is not a set is not RQ's: the requeue leaves the job
/// (and that key) exactly as they were, as purge does.
#[tokio::test]
async fn a_dependency_key_that_is_not_a_set_refuses_the_requeue_before_any_write() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    for id in ["a", "b", "c"] {
        FailedJob::new(id).write(&mut sync);
    }
    let _: () = sync.set("rq:job:a:dependents", "stray").unwrap();
    let _: () = sync.set("rq:job:b:dependencies", "stray").unwrap();
    let mut con = async_con(&server).await;
    let mut writes = Vec::new();
    for id in ["a", "b", "c"] {
        writes.push(requeue(
            &facts(&mut con, "default", id).await,
            Some(1),
            false,
        ));
    }
    let hash_a: std::collections::BTreeMap<String, Vec<u8>> = sync.hgetall("rq:job:a").unwrap();

    let outcomes = Executor::new(Keys::new("rq"))
        .apply(&mut con, &writes, Utc::now())
        .await
        .unwrap();

    let wrong = |key: &str| {
        Outcome::Refused(Refusal {
            reason: RefusalReason::WrongType,
            key: key.into(),
        })
    };
    assert_eq!(
        outcomes,
        vec![
            wrong("rq:job:a:dependents"),
            wrong("rq:job:b:dependencies"),
            Outcome::Requeued
        ]
    );
    let queued: Vec<String> = sync.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["c"]);
    let failed: Vec<String> = sync.zrange("rq:failed:default", 0, -1).unwrap();
    assert_eq!(failed, vec!["a", "b"]);
    let hash_a_now: std::collections::BTreeMap<String, Vec<u8>> = sync.hgetall("rq:job:a").unwrap();
    assert_eq!(hash_a_now, hash_a);
    let ttl: i64 = sync.ttl("rq:job:a").unwrap();
    assert!(ttl > 0, "the refused job keeps its failure expiry");
}

/// Appends a results entry to job `id`'s stream, as RQ's `Result.save` does.
fn add_result(con: &mut redis::Connection, id: &str, fields: &[(&str, &str)]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(format!("rq:results:{id}")).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    let _: String = cmd.query(con).unwrap();
}

/// What RQ 2.12's StartedJobRegistry.cleanup stores as exc_string: base64(zlib("Moved to
/// FailedJobRegistry, due to AbandonedJobError, at 2026-12-03 09:02:24.052659+00:00")).
const ABANDONED: &str = "eJzzzS9LTVEoyVdwS8zMSU3xyk8KSk3PLC4pqtRRSClNBck4JiXmpeTngSVdi4ryi3QUEksUjAyMzHQNjXQNjBUMLK0MjKyMTPQMTI3MTC21DQysDAwASlsapA==";

// See: issue 21, items 2 and 6. The scan decides without reading the results stream, so the
// requeue script itself leaves a stopped job and one whose last run succeeded to the operator:
// a policy's requeue writes nothing for them, an operator's goes ahead.
#[tokio::test]
async fn a_policys_requeue_leaves_stopped_and_succeeded_jobs_and_an_operators_does_not() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    // stopped by an operator (RQ: status stopped, no ended_at)
    FailedJob::new("stopped")
        .field("status", b"stopped")
        .field("ended_at", b"")
        .write(&mut sync);
    // RQ 1.16: cleanup wrote no result; the newest is the success.
    FailedJob::new("ok-rq1").write(&mut sync);
    add_result(
        &mut sync,
        "ok-rq1",
        &[("type", "1"), ("return_value", "gA==")],
    );
    // RQ 2.x: cleanup's failure (empty worker_name, no execution_id) on top of the success.
    FailedJob::new("ok-rq2").write(&mut sync);
    add_result(
        &mut sync,
        "ok-rq2",
        &[("type", "1"), ("worker_name", "w1"), ("execution_id", "e1")],
    );
    add_result(
        &mut sync,
        "ok-rq2",
        &[
            ("type", "2"),
            ("worker_name", ""),
            ("exc_string", ABANDONED),
        ],
    );
    // Succeeded once, then ran again and failed in a worker: a failure like any other.
    FailedJob::new("failed-again").write(&mut sync);
    add_result(
        &mut sync,
        "failed-again",
        &[("type", "1"), ("worker_name", "w1")],
    );
    add_result(
        &mut sync,
        "failed-again",
        &[("type", "2"), ("worker_name", "w2"), ("execution_id", "e2")],
    );
    let mut con = async_con(&server).await;
    let ids = ["stopped", "ok-rq1", "ok-rq2", "failed-again"];
    let mut all = Vec::new();
    for id in ids {
        all.push(facts(&mut con, "default", id).await);
    }
    let executor = Executor::new(Keys::new("rq"));

    let automatic: Vec<Write> = all.iter().map(|f| requeue(f, Some(1), false)).collect();
    let outcomes = executor
        .apply(&mut con, &automatic, Utc::now())
        .await
        .unwrap();

    assert_eq!(
        outcomes,
        vec![
            Outcome::Stopped,
            Outcome::Succeeded,
            Outcome::Succeeded,
            Outcome::Requeued
        ]
    );
    for id in &ids[..3] {
        let score: Option<f64> = sync.zscore("rq:failed:default", *id).unwrap();
        assert!(score.is_some(), "{id} stays in the failed registry");
        let attempts: Option<String> = sync
            .hget(format!("rq:job:{id}"), "retryd_attempts")
            .unwrap();
        assert_eq!(attempts, None, "{id}: nothing written");
    }
    let queued: Vec<String> = sync.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["failed-again"]);

    let manual: Vec<Write> = all[..3].iter().map(|f| requeue(f, None, false)).collect();
    let outcomes = executor.apply(&mut con, &manual, Utc::now()).await.unwrap();
    assert_eq!(outcomes, vec![Outcome::Requeued; 3]);
    let status: String = sync.hget("rq:job:stopped", "status").unwrap();
    assert_eq!(status, "queued");
}

#[tokio::test]
async fn a_results_key_that_is_not_a_stream_refuses_a_policys_requeue_before_any_write() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("j1").write(&mut sync);
    let mut con = async_con(&server).await;
    let f = facts(&mut con, "default", "j1").await;
    let _: () = sync.del("rq:results:j1").unwrap();
    let _: () = sync.set("rq:results:j1", "stray").unwrap();
    let executor = Executor::new(Keys::new("rq"));

    let outcomes = executor
        .apply(&mut con, &[requeue(&f, Some(1), false)], Utc::now())
        .await
        .unwrap();

    assert_eq!(
        outcomes,
        vec![Outcome::Refused(Refusal {
            reason: RefusalReason::WrongType,
            key: "rq:results:j1".into()
        })]
    );
    let score: Option<f64> = sync.zscore("rq:failed:default", "j1").unwrap();
    assert!(score.is_some());
}

/// `requeue_to`: several jobs of one registry, some going to their origin and some to another
/// queue, in one apply. Each lands in its target queue, whose name becomes the origin of the
/// moved ones only; a job requeued into its own origin keeps its hash as before (no origin
/// written). One audit entry per (registry, target) call, naming the target. See: issue 21.
#[tokio::test]
async fn a_requeue_to_another_queue_moves_the_origin_with_the_job() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    for id in ["stay", "move1", "move2"] {
        FailedJob::new(id).queue("fast").write(&mut sync);
    }
    let mut con = async_con(&server).await;
    let executor = Executor::new(Keys::new("rq"));
    let mut writes = Vec::new();
    for id in ["stay", "move1", "move2"] {
        let f = facts(&mut con, "fast", id).await;
        let w = requeue(&f, Some(1), false);
        writes.push(if id == "stay" { w } else { w.to_queue("slow") });
    }

    let outcomes = executor.apply(&mut con, &writes, Utc::now()).await.unwrap();

    assert_eq!(outcomes, vec![Outcome::Requeued; 3]);
    let fast: Vec<String> = sync.lrange("rq:queue:fast", 0, -1).unwrap();
    let slow: Vec<String> = sync.lrange("rq:queue:slow", 0, -1).unwrap();
    assert_eq!(fast, vec!["stay"]);
    assert_eq!(slow, vec!["move1", "move2"]);
    for (id, origin) in [("stay", "fast"), ("move1", "slow"), ("move2", "slow")] {
        let got: String = sync.hget(format!("rq:job:{id}"), "origin").unwrap();
        assert_eq!(got, origin, "{id}");
    }
    let known: Vec<String> = sync.smembers("rq:queues").unwrap();
    assert!(known.contains(&"rq:queue:slow".to_string()), "{known:?}");
    let failed: Vec<String> = sync.zrange("rq:failed:fast", 0, -1).unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    let entries = audit_entries(&mut sync);
    let calls: Vec<(String, String, String)> = entries
        .iter()
        .map(|(_, e)| {
            (
                e["queue"].clone(),
                e["to_queue"].clone(),
                e["count"].clone(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ("fast".into(), "fast".into(), "1".into()),
            ("fast".into(), "slow".into(), "2".into())
        ]
    );
}

/// The compare-and-set still compares the origin the decision saw, not the target: a job
/// whose origin changed since is not moved. See: issue 21.
#[tokio::test]
async fn a_requeue_to_compares_the_origin_the_decision_saw() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("j1").queue("fast").write(&mut sync);
    let mut con = async_con(&server).await;
    let f = facts(&mut con, "fast", "j1").await;
    let _: () = sync.hset("rq:job:j1", "origin", "elsewhere").unwrap();
    let executor = Executor::new(Keys::new("rq"));

    let outcomes = executor
        .apply(
            &mut con,
            &[requeue(&f, Some(1), false).to_queue("slow")],
            Utc::now(),
        )
        .await
        .unwrap();

    assert_eq!(outcomes, vec![Outcome::Changed]);
    let slow: Vec<String> = sync.lrange("rq:queue:slow", 0, -1).unwrap();
    assert!(slow.is_empty());
    let origin: String = sync.hget("rq:job:j1", "origin").unwrap();
    assert_eq!(origin, "elsewhere");
}

/// An automatic write folds into the newest audit entry of its kind (who, action, why, queue,
/// to_queue, minute) within the newest 16, past entries of other kinds, while the merged entry
/// lists at most 100 jobs; when that newest entry has no room it starts one of its own, even
/// if an older entry of its kind has room (the fold reads entries one at a time, newest
/// first). See: issue 22, item 4; issue 24, item 1.
#[tokio::test]
async fn an_automatic_write_folds_into_the_newest_audit_entry_of_its_kind_only() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    let ids = |queue: &str, from: usize, n: usize| -> Vec<String> {
        (from..from + n).map(|i| format!("{queue}{i}")).collect()
    };
    let jobs = ids("a", 0, 161)
        .into_iter()
        .map(|id| FailedJob::new(&id).queue("a"))
        .chain(
            ids("b", 0, 2)
                .into_iter()
                .map(|id| FailedJob::new(&id).queue("b")),
        );
    FailedJob::write_all(&mut sync, jobs);
    let mut con = async_con(&server).await;
    let executor = Executor::new(Keys::new("rq"));
    // One `now` for every call: all of them fall in the same minute.
    let now = Utc::now();
    let mut next = std::collections::HashMap::from([("a", 0), ("b", 0)]);
    let mut requeue_next = |queue: &'static str, n: usize| {
        let from = next[queue];
        next.insert(queue, from + n);
        ids(queue, from, n)
    };
    let steps: [(&str, usize); 6] = [("a", 5), ("b", 1), ("a", 2), ("a", 94), ("b", 1), ("a", 60)];
    for (queue, n) in steps {
        let mut writes = Vec::new();
        for id in requeue_next(queue, n) {
            writes.push(requeue(&facts(&mut con, queue, &id).await, Some(1), false));
        }
        let outcomes = executor
            .apply_as(
                &mut con,
                &writes,
                now,
                rq_retryd::executor::Writer::Automatic,
            )
            .await
            .unwrap();
        assert!(
            outcomes.iter().all(|o| *o == Outcome::Requeued),
            "{outcomes:?}"
        );
    }

    let entries = audit_entries(&mut sync);
    let kinds: Vec<(&str, &str)> = entries
        .iter()
        .map(|(_, e)| (e["queue"].as_str(), e["count"].as_str()))
        .collect();
    // a:5, b:1 | a:2 folds past b into a:7 | a:94 is a call of 50 (folds: 57) and one of 44
    // (new) | b:1 folds past both into b:2 | a:60 is 50 (folds into a:44: 94) and 10 (new:
    // the newest a entry is full, the older a:57 with room is not looked at).
    assert_eq!(
        kinds,
        vec![("a", "57"), ("b", "2"), ("a", "94"), ("a", "10")]
    );
    let mut listed: Vec<String> = entries
        .iter()
        .flat_map(|(_, e)| serde_json::from_str::<Vec<String>>(&e["job_ids_json"]).unwrap())
        .collect();
    listed.sort();
    let mut all: Vec<String> = ids("a", 0, 161).into_iter().chain(ids("b", 0, 2)).collect();
    all.sort();
    assert_eq!(listed, all, "every requeued job is listed exactly once");
}
