//! No half-done write: every write script checks, before its first write, every key it touches
//! and every value that could make a later command fail. A job that cannot be written whole is
//! not written at all, and says which key stopped it.
//!
//! Each test makes one key the wrong type (or provokes another refusal) between the decision
//! and the write, then asserts that Redis holds byte for byte what it held before the call —
//! or, for the other jobs of the same call, that they were written whole.
//!
//! See: issue 11 ("`rq-retryd once` ... logged 'write refused by Redis; job left as it was' ...
//! but the jobs were not left as they were").

use crate::support;

use std::collections::BTreeMap;

use chrono::Utc;
use redis::Commands;
use rq_retryd::executor::{Author, Executor, Outcome, Refusal, RefusalReason, Write, WriteKind};
use rq_retryd::rq::{JobFacts, Keys};
use support::jobs::{async_con, read_facts as facts, snapshot, FailedJob, KeyContent};
use support::RedisServer;

type Snapshot = BTreeMap<Vec<u8>, KeyContent>;

fn write(f: &JobFacts, kind: WriteKind) -> Write {
    Write::of(f, Author::Policy("transient".into()), kind)
}

const REQUEUE: WriteKind = WriteKind::Requeue {
    attempt: Some(1),
    at_front: false,
};
const MANUAL_REQUEUE: WriteKind = WriteKind::Requeue {
    attempt: None,
    at_front: true,
};

fn wrong_type(key: &str) -> Outcome {
    Outcome::Refused(Refusal {
        reason: RefusalReason::WrongType,
        key: key.into(),
    })
}

/// Replaces `key` with a value of another type than RQ gives it.
fn clobber(con: &mut redis::Connection, key: &str, as_type: &str) {
    let _: () = con.del(key).unwrap();
    match as_type {
        "string" => {
            let _: () = con.set(key, "a stray value").unwrap();
        }
        "list" => {
            let _: () = con.rpush(key, "x").unwrap();
        }
        "hash" => {
            let _: () = con.hset(key, "f", "v").unwrap();
        }
        other => panic!("unknown type {other}"),
    }
}

/// Seeds `ids` as failed jobs of queue `default`, reads their facts, then runs `prepare` (the
/// sabotage) and the writes, and returns the outcomes with the snapshots before and after.
async fn run_after(
    ids: &[&str],
    kind: WriteKind,
    prepare: impl FnOnce(&mut redis::Connection),
) -> (Vec<Outcome>, Snapshot, Snapshot, RedisServer) {
    let server = RedisServer::start();
    let mut sync = server.conn();
    for id in ids {
        FailedJob::new(id).write(&mut sync);
    }
    let mut con = async_con(&server).await;
    let mut writes = Vec::new();
    for id in ids {
        writes.push(write(&facts(&mut con, "default", id).await, kind));
    }
    prepare(&mut sync);
    let before = snapshot(&mut sync);
    let outcomes = Executor::new(Keys::new("rq"))
        .apply(&mut con, &writes, Utc::now())
        .await
        .unwrap();
    let after = snapshot(&mut sync);
    (outcomes, before, after, server)
}

fn assert_unchanged(before: &Snapshot, after: &Snapshot) {
    assert!(
        before == after,
        "a refused write changed Redis:\n{}",
        diff(before, after)
    );
}

fn diff(before: &Snapshot, after: &Snapshot) -> String {
    let mut out = String::new();
    for (k, v) in before {
        match after.get(k) {
            None => out += &format!("- {} removed\n", String::from_utf8_lossy(k)),
            Some(w) if w != v => out += &format!("~ {} changed\n", String::from_utf8_lossy(k)),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        out += &format!("+ {} added\n", String::from_utf8_lossy(k));
    }
    out
}

// ---- requeue: failed registry, queue list, rq:queues, job hash, ttl --------------------------

#[tokio::test]
async fn requeue_onto_a_queue_key_of_the_wrong_type_writes_nothing_for_any_job() {
    for as_type in ["string", "hash"] {
        let (outcomes, before, after, _server) = run_after(&["a", "b", "c"], REQUEUE, |con| {
            clobber(con, "rq:queue:default", as_type)
        })
        .await;
        assert_eq!(
            outcomes,
            vec![wrong_type("rq:queue:default"); 3],
            "{as_type}"
        );
        assert_unchanged(&before, &after);
    }
}

#[tokio::test]
async fn requeue_with_rq_queues_of_the_wrong_type_writes_nothing() {
    let (outcomes, before, after, _server) = run_after(&["a", "b"], MANUAL_REQUEUE, |con| {
        clobber(con, "rq:queues", "list")
    })
    .await;
    assert_eq!(outcomes, vec![wrong_type("rq:queues"); 2]);
    assert_unchanged(&before, &after);
}

#[tokio::test]
async fn requeue_from_a_failed_registry_of_the_wrong_type_writes_nothing() {
    let (outcomes, before, after, _server) = run_after(&["a", "b"], REQUEUE, |con| {
        clobber(con, "rq:failed:default", "string")
    })
    .await;
    assert_eq!(outcomes, vec![wrong_type("rq:failed:default"); 2]);
    assert_unchanged(&before, &after);
}

#[tokio::test]
async fn requeue_of_a_job_key_of_the_wrong_type_leaves_it_and_requeues_the_others_whole() {
    let (outcomes, before, after, server) = run_after(&["a", "b", "c"], REQUEUE, |con| {
        clobber(con, "rq:job:b", "list")
    })
    .await;
    assert_eq!(
        outcomes,
        vec![Outcome::Requeued, wrong_type("rq:job:b"), Outcome::Requeued]
    );
    // b is exactly as it was, still in its registry; a and c are fully requeued.
    for key in [&b"rq:job:b"[..], b"rq:results:b"] {
        assert_eq!(before.get(key), after.get(key));
    }
    let mut con = server.conn();
    let left: Vec<String> = con.zrange("rq:failed:default", 0, -1).unwrap();
    assert_eq!(left, vec!["b"]);
    let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["a", "c"]);
    for id in ["a", "c"] {
        let status: String = con.hget(format!("rq:job:{id}"), "status").unwrap();
        assert_eq!(status, "queued", "{id}");
    }
}

/// A job's `ttl` field that EXPIRE cannot take (RQ would fail on it too).
#[tokio::test]
async fn requeue_of_a_job_whose_ttl_expire_cannot_take_is_refused_before_any_write() {
    for ttl in ["1e300", "inf", "100000000000000000"] {
        let server = RedisServer::start();
        let mut sync = server.conn();
        FailedJob::new("a").write(&mut sync);
        FailedJob::new("b")
            .field("ttl", ttl.as_bytes())
            .write(&mut sync);
        let mut con = async_con(&server).await;
        let wa = write(&facts(&mut con, "default", "a").await, REQUEUE);
        let wb = write(&facts(&mut con, "default", "b").await, REQUEUE);
        let before = snapshot(&mut sync);
        let outcomes = Executor::new(Keys::new("rq"))
            .apply(&mut con, &[wa, wb], Utc::now())
            .await
            .unwrap();
        let after = snapshot(&mut sync);
        assert_eq!(
            outcomes,
            vec![
                Outcome::Requeued,
                Outcome::Refused(Refusal {
                    reason: RefusalReason::InvalidTtl,
                    key: "rq:job:b".into()
                })
            ],
            "ttl {ttl}"
        );
        assert_eq!(before.get(&b"rq:job:b"[..]), after.get(&b"rq:job:b"[..]));
        let still: Option<f64> = sync.zscore("rq:failed:default", "b").unwrap();
        assert!(still.is_some(), "ttl {ttl}: b left its registry");
        let queued: Vec<String> = sync.lrange("rq:queue:default", 0, -1).unwrap();
        assert_eq!(queued, vec!["a"], "ttl {ttl}");
    }
}

#[tokio::test]
async fn a_job_with_an_ordinary_ttl_is_requeued_with_it() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("a").field("ttl", b"600").write(&mut sync);
    let mut con = async_con(&server).await;
    let w = write(&facts(&mut con, "default", "a").await, REQUEUE);
    let outcomes = Executor::new(Keys::new("rq"))
        .apply(&mut con, &[w], Utc::now())
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Outcome::Requeued]);
    let ttl: i64 = sync.ttl("rq:job:a").unwrap();
    assert!((590..=600).contains(&ttl), "ttl {ttl}");
}

// ---- purge: failed registry, job hash, dependents, dependencies, results ---------------------

#[tokio::test]
async fn purge_leaves_a_job_whole_when_any_key_it_would_touch_has_the_wrong_type() {
    for (key, as_type) in [
        ("rq:failed:default", "string"),
        ("rq:job:b", "string"),
        ("rq:job:b:dependents", "string"),
        ("rq:job:b:dependencies", "list"),
        ("rq:results:b", "hash"),
        // Checked by its ZRANGE under pcall, not a TYPE (issue 24, item 2).
        ("rq:executions:b", "string"),
    ] {
        let (outcomes, before, after, _server) =
            run_after(&["b"], WriteKind::Purge, |con| clobber(con, key, as_type)).await;
        assert_eq!(outcomes, vec![wrong_type(key)], "{key}");
        assert_unchanged(&before, &after);
    }
}

#[tokio::test]
async fn a_refused_purge_does_not_stop_or_undo_the_other_purges_of_the_call() {
    let (outcomes, before, after, _server) = run_after(&["a", "b", "c"], WriteKind::Purge, |con| {
        clobber(con, "rq:results:b", "string")
    })
    .await;
    assert_eq!(
        outcomes,
        vec![Outcome::Purged, wrong_type("rq:results:b"), Outcome::Purged]
    );
    for key in ["rq:job:b", "rq:results:b"] {
        assert_eq!(
            before.get(key.as_bytes()),
            after.get(key.as_bytes()),
            "{key}"
        );
    }
    for key in ["rq:job:a", "rq:job:c", "rq:results:a", "rq:results:c"] {
        assert!(!after.contains_key(key.as_bytes()), "{key} still there");
    }
}

/// Purge calls mix registries; a wrong-typed registry of one queue must not stop, nor half-do,
/// the purges of another queue's jobs in the same call.
#[tokio::test]
async fn purge_across_registries_refuses_only_the_jobs_of_the_bad_registry() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    FailedJob::new("a").queue("alpha").write(&mut sync);
    FailedJob::new("b").queue("beta").write(&mut sync);
    FailedJob::new("c").queue("alpha").write(&mut sync);
    let mut con = async_con(&server).await;
    let writes = vec![
        write(&facts(&mut con, "alpha", "a").await, WriteKind::Purge),
        write(&facts(&mut con, "beta", "b").await, WriteKind::Purge),
        write(&facts(&mut con, "alpha", "c").await, WriteKind::Purge),
    ];
    clobber(&mut sync, "rq:failed:alpha", "string");
    let before = snapshot(&mut sync);
    let outcomes = Executor::new(Keys::new("rq"))
        .apply(&mut con, &writes, Utc::now())
        .await
        .unwrap();
    let after = snapshot(&mut sync);
    assert_eq!(
        outcomes,
        vec![
            wrong_type("rq:failed:alpha"),
            Outcome::Purged,
            wrong_type("rq:failed:alpha")
        ]
    );
    for key in ["rq:job:a", "rq:job:c", "rq:failed:alpha", "rq:results:a"] {
        assert_eq!(
            before.get(key.as_bytes()),
            after.get(key.as_bytes()),
            "{key}"
        );
    }
    assert!(!after.contains_key(&b"rq:job:b"[..]));
}

// ---- mark exhausted: failed registry, job hash ------------------------------------------------

#[tokio::test]
async fn mark_exhausted_leaves_everything_when_a_key_has_the_wrong_type() {
    for key in ["rq:failed:default", "rq:job:a"] {
        let (outcomes, before, after, _server) =
            run_after(&["a"], WriteKind::MarkExhausted, |con| {
                clobber(con, key, "list")
            })
            .await;
        assert_eq!(outcomes, vec![wrong_type(key)], "{key}");
        assert_unchanged(&before, &after);
    }
}

// ---- refusals by the server itself ------------------------------------------------------------

/// Out of memory (maxmemory with noeviction): Redis refuses a script's first write, and every
/// script's first write comes after all its checks, so nothing at all is written.
#[tokio::test]
async fn out_of_memory_refuses_every_script_before_it_writes_anything() {
    for kind in [REQUEUE, WriteKind::Purge, WriteKind::MarkExhausted] {
        let (outcomes, before, after, _server) = run_after(&["a", "b"], kind, |con| {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory-policy")
                .arg("noeviction")
                .query(con)
                .unwrap();
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg("1")
                .query(con)
                .unwrap();
        })
        .await;
        // PURGE only deletes, which Redis allows when out of memory; the others must refuse.
        if kind == WriteKind::Purge {
            assert_eq!(outcomes, vec![Outcome::Purged; 2]);
            continue;
        }
        assert_eq!(outcomes.len(), 2);
        for o in &outcomes {
            assert!(
                matches!(o, Outcome::Error(e) if e.contains("OOM")),
                "{kind:?}: {o:?}"
            );
            assert!(o.is_refused());
        }
        assert_unchanged(&before, &after);
    }
}
