//! No permission gap can half-write. Redis checks a command's ACL permission only when the
//! command runs, which inside a script is after the script's earlier writes (and a script is
//! never rolled back). Each write script therefore asks, before its first write, whether its
//! user may run every command it will run on the very keys, and writes nothing for the whole
//! call when one is denied: `forbidden_by_acl`, naming the command and the key.
//!
//! Each test creates Redis users that lack exactly one command (or may write only some keys),
//! seeds failed jobs, writes through one path (the executor, `once`, the HTTP API, a scan) as
//! that user, and asserts that every job is either exactly as it was (still in its registry,
//! hash byte for byte the same) or wholly requeued or purged, and that the refusals are counted.
//!
//! The audit entry is part of the same write (each script call appends its own), so the last
//! tests check that every changed job is audited exactly once, and that a user without XADD
//! writes nothing rather than something unaudited.
//!
//! See: the adversarial finding of round 3 (`+@all -rpush -lpush`: `once` exited 3 with all
//! 5,000 jobs in no registry and no queue; a manual retry answered 409 while the job was gone).

use crate::support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Output;

use chrono::Utc;
use redis::Commands;
use rq_retryd::executor::{
    Author, Executor, Outcome, Refusal, RefusalReason, Write, WriteKind, Writer,
};
use rq_retryd::rq::{JobFacts, Keys};
use support::http::{metric, parse_metrics, Daemon, DaemonConfig, HANDS_OFF};
use support::jobs::{async_con, key_content, read_facts, FailedJob, KeyContent};
use support::RedisServer;

/// Jobs per case: more than one script call (50 jobs) so a refusal is seen across calls.
const JOBS: usize = 60;

/// Creates (or redefines) user `name` with password `pw` and these ACL rules, and returns the
/// URL that logs in as it.
fn user(server: &RedisServer, name: &str, rules: &[&str]) -> String {
    let mut con = server.conn();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(name)
        .arg("reset")
        .arg("on")
        .arg(">pw")
        .arg(rules)
        .query(&mut con)
        .unwrap();
    format!("redis://{name}:pw@127.0.0.1:{}/0", server.port)
}

/// A user with every permission but `command`.
fn lacking(server: &RedisServer, command: &str) -> String {
    user(
        server,
        &format!("no-{command}"),
        &["~*", "&*", "+@all", &format!("-{command}")],
    )
}

fn ids(prefix: &str) -> Vec<String> {
    (0..JOBS).map(|i| format!("{prefix}{i:03}")).collect()
}

/// Seeds `ids` as failed jobs of queue `queue`, each made by `make`.
fn seed(server: &RedisServer, ids: &[String], make: impl Fn(&str) -> FailedJob) {
    let mut con = server.conn();
    for id in ids {
        make(id).write(&mut con);
    }
}

/// What a job is in Redis: its hash (every field, byte for byte, and whether it expires) and
/// its failed-registry score.
type JobState = (KeyContent, Option<f64>);

fn states(server: &RedisServer, queue: &str, ids: &[String]) -> BTreeMap<String, JobState> {
    let mut con = server.conn();
    ids.iter()
        .map(|id| {
            let hash = key_content(&mut con, format!("rq:job:{id}").as_bytes());
            let score: Option<f64> = con.zscore(format!("rq:failed:{queue}"), id).unwrap();
            (id.clone(), (hash, score))
        })
        .collect()
}

/// What happened to one job: nothing, or all of a requeue or a purge. Panics on anything in
/// between (the half-write this test program is about).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Untouched,
    Requeued,
    Purged,
}

fn fate(server: &RedisServer, queue: &str, id: &str, was: &JobState) -> Fate {
    let mut con = server.conn();
    let now = states(server, queue, &[id.to_string()]).remove(id).unwrap();
    if &now == was {
        return Fate::Untouched;
    }
    let waiting: Vec<String> = con.lrange(format!("rq:queue:{queue}"), 0, -1).unwrap();
    let in_queue = waiting.iter().filter(|w| *w == id).count();
    let (hash, score) = &now;
    if hash.0 == "none" {
        assert_eq!(*score, None, "job {id}: hash deleted, registry entry kept");
        assert_eq!(in_queue, 0, "job {id}: hash deleted, still queued");
        for key in ["dependents", "dependencies"] {
            let left: bool = con.exists(format!("rq:job:{id}:{key}")).unwrap();
            assert!(!left, "job {id}: purged, its {key} set kept");
        }
        let results: bool = con.exists(format!("rq:results:{id}")).unwrap();
        assert!(!results, "job {id}: purged, its results kept");
        return Fate::Purged;
    }
    let status: Option<String> = con.hget(format!("rq:job:{id}"), "status").unwrap();
    if status.as_deref() == Some("failed") && score.is_some() && in_queue == 0 {
        // Marked exhausted: a field more, still a failure in its registry.
        let exhausted: Option<String> = con
            .hget(format!("rq:job:{id}"), "retryd_exhausted")
            .unwrap();
        assert_eq!(exhausted.as_deref(), Some("1"), "job {id} changed: {now:?}");
        return Fate::Untouched;
    }
    assert_eq!(
        status.as_deref(),
        Some("queued"),
        "job {id} half-written: {now:?}"
    );
    assert_eq!(*score, None, "job {id}: queued and still in its registry");
    assert_eq!(in_queue, 1, "job {id}: queued and in no queue");
    let ttl: i64 = con.ttl(format!("rq:job:{id}")).unwrap();
    assert_eq!(
        ttl, -1,
        "job {id}: requeued with its failure_ttl expiry kept"
    );
    let queues: bool = con
        .sismember("rq:queues", format!("rq:queue:{queue}"))
        .unwrap();
    assert!(
        queues,
        "job {id}: requeued onto a queue rq:queues does not list"
    );
    Fate::Requeued
}

/// How many jobs met each fate (asserting each met one whole).
fn fates(
    server: &RedisServer,
    queue: &str,
    before: &BTreeMap<String, JobState>,
) -> BTreeMap<&'static str, usize> {
    let mut count = BTreeMap::new();
    for (id, was) in before {
        let name = match fate(server, queue, id, was) {
            Fate::Untouched => "untouched",
            Fate::Requeued => "requeued",
            Fate::Purged => "purged",
        };
        *count.entry(name).or_default() += 1;
    }
    count
}

fn untouched(count: &BTreeMap<&str, usize>) -> usize {
    count.get("untouched").copied().unwrap_or(0)
}

// ---- the executor: every command of every script ------------------------------------------

fn refusal(command: &str, key: &str) -> Outcome {
    Outcome::Refused(Refusal {
        reason: RefusalReason::ForbiddenByAcl {
            command: command.into(),
        },
        key: key.into(),
    })
}

/// Reads the facts of `ids` as the default user, then applies `kind` to all of them as `url`'s
/// user and returns the outcomes.
async fn apply_as_user(
    server: &RedisServer,
    url: &str,
    ids: &[String],
    kind: WriteKind,
    writer: Writer<'_>,
) -> Vec<Outcome> {
    let mut admin = async_con(server).await;
    let mut writes = Vec::new();
    for id in ids {
        let f: JobFacts = read_facts(&mut admin, "default", id).await;
        writes.push(Write::of(&f, Author::Policy("transient".into()), kind));
    }
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let executor = Executor::new(Keys::new("rq"));
    executor.load_scripts(&mut con).await.unwrap();
    executor
        .apply_as(&mut con, &writes, Utc::now(), writer)
        .await
        .unwrap()
}

const REQUEUE: WriteKind = WriteKind::Requeue {
    attempt: Some(1),
    at_front: false,
};

/// One case of the matrix: the command the user lacks, the write, how the jobs are made, and
/// the key the refusal must name (for job `j000`).
struct Case {
    command: &'static str,
    kind: WriteKind,
    writer: Writer<'static>,
    job: fn(&str) -> FailedJob,
    key: &'static str,
}

fn plain(id: &str) -> FailedJob {
    FailedJob::new(id)
}

fn with_ttl(id: &str) -> FailedJob {
    FailedJob::new(id).field("ttl", b"600")
}

fn exhausted(id: &str) -> FailedJob {
    FailedJob::new(id).field("retryd_exhausted", b"1")
}

/// In RQ 2.x group `nightly` (its hash names it; the script asks for SREM on the group's set
/// whether or not the set exists).
fn grouped(id: &str) -> FailedJob {
    FailedJob::new(id).field("group_id", b"nightly")
}

/// Failed by RQ after its worker died: no `ended_at`.
fn abandoned(id: &str) -> FailedJob {
    FailedJob::new(id).field("ended_at", b"")
}

#[tokio::test]
async fn a_write_script_lacking_any_one_command_writes_nothing_and_names_it() {
    let server = RedisServer::start();
    let manual_requeue = WriteKind::Requeue {
        attempt: None,
        at_front: true,
    };
    let cases = [
        // requeue.lua: the shared keys (once per call), then per job.
        Case {
            command: "ZMSCORE",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: plain,
            key: "rq:failed:default",
        },
        Case {
            command: "ZREM",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: plain,
            key: "rq:failed:default",
        },
        Case {
            command: "RPUSH",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: plain,
            key: "rq:queue:default",
        },
        Case {
            command: "LPUSH",
            kind: manual_requeue,
            writer: Writer::Manual,
            job: plain,
            key: "rq:queue:default",
        },
        Case {
            command: "SADD",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: plain,
            key: "rq:queues",
        },
        Case {
            command: "HMGET",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: plain,
            key: "rq:job:j000",
        },
        Case {
            command: "HSET",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: plain,
            key: "rq:job:j000",
        },
        Case {
            command: "PERSIST",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: plain,
            key: "rq:job:j000",
        },
        Case {
            command: "EXPIRE",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: with_ttl,
            key: "rq:job:j000",
        },
        Case {
            command: "HDEL",
            kind: manual_requeue,
            writer: Writer::Manual,
            job: exhausted,
            key: "rq:job:j000",
        },
        Case {
            command: "EXISTS",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: abandoned,
            key: "rq:job:j000",
        },
        // A policy's requeue reads the job's results (is its last run a success?).
        Case {
            command: "XREVRANGE",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: plain,
            key: "rq:results:j000",
        },
        // Whether the job has dependency sets to keep alive with it (one EXISTS for both).
        Case {
            command: "EXISTS",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: plain,
            key: "rq:job:j000:dependents",
        },
        // The audit entry every script appends in the same step as its writes.
        Case {
            command: "XADD",
            kind: REQUEUE,
            writer: Writer::Manual,
            job: plain,
            key: "rq:retryd:audit",
        },
        Case {
            command: "XADD",
            kind: WriteKind::Purge,
            writer: Writer::Manual,
            job: plain,
            key: "rq:retryd:audit",
        },
        Case {
            command: "XADD",
            kind: WriteKind::MarkExhausted,
            writer: Writer::Manual,
            job: plain,
            key: "rq:retryd:audit",
        },
        // An automatic call looks for the entry to fold into and replaces it (issue 22, item 4).
        Case {
            command: "XREVRANGE",
            kind: REQUEUE,
            writer: Writer::Automatic,
            job: plain,
            key: "rq:retryd:audit",
        },
        Case {
            command: "XDEL",
            kind: WriteKind::Purge,
            writer: Writer::Automatic,
            job: plain,
            key: "rq:retryd:audit",
        },
        // The gate's reads, for automatic writes (one HGET under pcall: its type check too).
        Case {
            command: "HGET",
            kind: REQUEUE,
            writer: Writer::Automatic,
            job: plain,
            key: "rq:retryd:switches",
        },
        Case {
            command: "GET",
            kind: REQUEUE,
            writer: Writer::Leader("token"),
            job: plain,
            key: "rq:retryd:lease",
        },
        // purge.lua
        Case {
            command: "ZSCORE",
            kind: WriteKind::Purge,
            writer: Writer::Manual,
            job: plain,
            key: "rq:failed:default",
        },
        Case {
            command: "ZREM",
            kind: WriteKind::Purge,
            writer: Writer::Manual,
            job: plain,
            key: "rq:failed:default",
        },
        Case {
            command: "HMGET",
            kind: WriteKind::Purge,
            writer: Writer::Manual,
            job: plain,
            key: "rq:job:j000",
        },
        Case {
            command: "UNLINK",
            kind: WriteKind::Purge,
            writer: Writer::Manual,
            job: plain,
            key: "rq:job:j000",
        },
        // What RQ 2.x's Job.delete also removes: the execution records, the group membership.
        Case {
            command: "ZRANGE",
            kind: WriteKind::Purge,
            writer: Writer::Manual,
            job: plain,
            key: "rq:executions:j000",
        },
        Case {
            command: "SREM",
            kind: WriteKind::Purge,
            writer: Writer::Manual,
            job: grouped,
            key: "rq:group:nightly",
        },
        // mark_exhausted.lua
        Case {
            command: "ZSCORE",
            kind: WriteKind::MarkExhausted,
            writer: Writer::Manual,
            job: plain,
            key: "rq:failed:default",
        },
        Case {
            command: "HMGET",
            kind: WriteKind::MarkExhausted,
            writer: Writer::Manual,
            job: plain,
            key: "rq:job:j000",
        },
        Case {
            command: "HSET",
            kind: WriteKind::MarkExhausted,
            writer: Writer::Manual,
            job: plain,
            key: "rq:job:j000",
        },
    ];
    let mut admin = server.conn();
    let ids = ids("j");
    for case in &cases {
        let _: () = redis::cmd("FLUSHALL").query(&mut admin).unwrap();
        if matches!(case.writer, Writer::Leader(_)) {
            let _: () = admin.set("rq:retryd:lease", "token").unwrap();
        }
        seed(&server, &ids, case.job);
        let url = lacking(&server, &case.command.to_ascii_lowercase());
        let before = states(&server, "default", &ids);
        let lists: Vec<String> = admin.lrange("rq:queue:default", 0, -1).unwrap();

        let outcomes = apply_as_user(&server, &url, &ids, case.kind, case.writer).await;

        let what = format!("{:?} without {}", case.kind, case.command);
        assert_eq!(outcomes.len(), JOBS, "{what}");
        assert_eq!(outcomes[0], refusal(case.command, case.key), "{what}");
        assert!(
            outcomes.iter().all(|o| matches!(
                o,
                Outcome::Refused(Refusal { reason: RefusalReason::ForbiddenByAcl { command }, .. })
                    if command == case.command
            )),
            "{what}: {outcomes:?}"
        );
        assert_eq!(states(&server, "default", &ids), before, "{what}");
        let lists_now: Vec<String> = admin.lrange("rq:queue:default", 0, -1).unwrap();
        assert_eq!(lists_now, lists, "{what}");
        let audited: bool = admin.exists("rq:retryd:audit").unwrap();
        assert!(!audited, "{what}: a refused call appends no audit entry");
    }
}

/// Key patterns differ by key. Redis itself refuses a script call that declares a key the user
/// may not read and write (NOPERM, before the script runs); a selector can still tie a command
/// to some keys, which only the script's own check sees. Either way the calls that hold a job
/// the user may not write are refused whole and the others are written whole.
#[tokio::test]
async fn a_key_pattern_or_selector_that_spares_some_job_hashes_refuses_exactly_their_calls() {
    let server = RedisServer::start();
    let patterns = user(
        &server,
        "some-keys",
        &[
            "%R~*",
            "~rq:failed:*",
            "~rq:queue:*",
            "~rq:queues",
            "~rq:retryd:*",
            "~rq:results:*",
            "~rq:job:w*",
            "&*",
            "+@all",
        ],
    );
    let selector = user(
        &server,
        "some-hset",
        &["~*", "&*", "+@all", "-hset", "(+hset ~rq:job:w*)"],
    );
    for (url, refused) in [
        (&patterns, refusal("EVALSHA", "")),
        (&selector, refusal("HSET", "rq:job:x000")),
    ] {
        let mut admin = server.conn();
        let _: () = redis::cmd("FLUSHALL").query(&mut admin).unwrap();
        // Writable jobs first: the first call (50) holds only writable ones, the second mixes.
        let mut ids: Vec<String> = (0..55).map(|i| format!("w{i:03}")).collect();
        ids.extend((0..5).map(|i| format!("x{i:03}")));
        seed(&server, &ids, plain);
        let before = states(&server, "default", &ids);

        let outcomes = apply_as_user(&server, url, &ids, REQUEUE, Writer::Manual).await;

        assert!(
            outcomes[..50].iter().all(|o| *o == Outcome::Requeued),
            "{outcomes:?}"
        );
        assert!(outcomes[50..].iter().all(|o| *o == refused), "{outcomes:?}");
        let count = fates(&server, "default", &before);
        assert_eq!(untouched(&count), 10, "{count:?}");
        assert_eq!(count.get("requeued"), Some(&50), "{count:?}");
    }
}

/// How a case's failed jobs are made.
type JobMaker = fn(&str) -> FailedJob;

/// Seeds `ids` made by `make`, each with the dependency set `set` (`dependents` or
/// `dependencies`) expiring with the failure, as RQ's failure leaves it.
fn seed_with_set(server: &RedisServer, ids: &[String], make: JobMaker, set: &str) {
    seed(server, ids, make);
    let mut con = server.conn();
    for id in ids {
        let key = format!("rq:job:{id}:{set}");
        let _: () = con.sadd(&key, "child").unwrap();
        let _: () = con.expire(&key, 31_536_000).unwrap();
    }
}

/// The requeue script keeps a job's dependency sets alive with it (issue 21): TYPE, then
/// PERSIST or EXPIRE on each set that exists. A user who may run those on the job hash but not
/// on the sets (a selector) gets forbidden_by_acl naming the set, and nothing is written: not
/// the hash, not the registry, not the set's expiry.
#[tokio::test]
async fn a_requeue_lacking_a_command_on_a_dependency_set_writes_nothing_and_names_it() {
    let server = RedisServer::start();
    let only_hashes = |command: &str| {
        // The job hashes are rq:job:jNNN; the sets rq:job:jNNN:dependents and :dependencies.
        user(
            &server,
            &format!("sets-no-{command}"),
            &[
                "~*",
                "&*",
                "+@all",
                &format!("-{command}"),
                &format!("(+{command} ~rq:job:j??? ~rq:failed:* ~rq:queue* ~rq:retryd:*)"),
            ],
        )
    };
    // The command lacked on the sets, how the jobs are made, and which set they have.
    let cases: [(&str, JobMaker, &str); 4] = [
        ("TYPE", plain, "dependents"),
        ("PERSIST", plain, "dependents"),
        ("PERSIST", plain, "dependencies"),
        ("EXPIRE", with_ttl, "dependents"),
    ];
    let mut admin = server.conn();
    let ids = ids("j");
    for (command, job, set) in cases {
        let _: () = redis::cmd("FLUSHALL").query(&mut admin).unwrap();
        seed_with_set(&server, &ids, job, set);
        let url = only_hashes(&command.to_ascii_lowercase());
        let before = states(&server, "default", &ids);
        let sets_before: Vec<KeyContent> = ids
            .iter()
            .map(|id| key_content(&mut admin, format!("rq:job:{id}:{set}").as_bytes()))
            .collect();

        let outcomes = apply_as_user(&server, &url, &ids, REQUEUE, Writer::Manual).await;

        let what = format!("requeue without {command} on the {set} sets");
        let key = format!("rq:job:j000:{set}");
        assert_eq!(outcomes[0], refusal(command, &key), "{what}");
        assert!(
            outcomes.iter().all(|o| matches!(
                o,
                Outcome::Refused(Refusal { reason: RefusalReason::ForbiddenByAcl { command: c }, .. })
                    if c == command
            )),
            "{what}: {outcomes:?}"
        );
        assert_eq!(states(&server, "default", &ids), before, "{what}");
        let sets_now: Vec<KeyContent> = ids
            .iter()
            .map(|id| key_content(&mut admin, format!("rq:job:{id}:{set}").as_bytes()))
            .collect();
        assert_eq!(sets_now, sets_before, "{what}");
        let queued: bool = admin.exists("rq:queue:default").unwrap();
        assert!(!queued, "{what}");
    }
}

// ---- once --------------------------------------------------------------------------------

fn write_config(dir: &tempfile::TempDir, url: &str, policy: &str) -> std::path::PathBuf {
    let path = dir.path().join("config.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(format!("[redis]\nurl = \"{url}\"\n{policy}").as_bytes())
        .unwrap();
    path
}

fn once(url: &str, policy: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, url, policy);
    support::retryd_command()
        .arg("--config")
        .arg(&path)
        .args(["once", "--json"])
        .output()
        .expect("run rq-retryd once")
}

const RETRY_NOW: &str =
    "[[policy]]\nname = \"retry\"\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n";
const PURGE_NOW: &str = "[[policy]]\nname = \"purge\"\naction = \"purge\"\n";
const EXHAUSTED: &str = "[[policy]]\nname = \"retry\"\nmax_attempts = 1\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `once` as a user lacking `command` over freshly seeded jobs and asserts: exit 3, every
/// job whole (all left as they were here, as the command is denied for every call), the count
/// of `forbidden_by_acl`, and a log line that names the command and the key.
fn once_without(
    server: &RedisServer,
    command: &str,
    policy: &str,
    job: fn(&str) -> FailedJob,
    key: &str,
) {
    let mut admin = server.conn();
    let _: () = redis::cmd("FLUSHALL").query(&mut admin).unwrap();
    let ids = ids("j");
    seed(server, &ids, job);
    let url = lacking(server, &command.to_ascii_lowercase());
    let before = states(server, "default", &ids);

    let out = once(&url, policy);

    let stderr = text(&out.stderr);
    let what = format!("once without {command}");
    assert_eq!(out.status.code(), Some(3), "{what}: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let count = fates(server, "default", &before);
    assert_eq!(untouched(&count), JOBS, "{what}: {count:?}");
    assert_eq!(
        report["skipped_by_reason"]["forbidden_by_acl"], JOBS as u64,
        "{what}: {report}"
    );
    assert_eq!(report["refused"], JOBS as u64, "{what}: {report}");
    let line = format!("user may not run {command} on {key}");
    assert!(
        stderr.contains(&line),
        "{what}: the log says {line:?}: {stderr}"
    );
}

#[test]
fn once_lacking_a_command_of_a_write_leaves_every_job_as_it_was_and_exits_3() {
    let server = RedisServer::start();
    for command in ["RPUSH", "ZREM", "SADD", "HSET", "PERSIST"] {
        let key = match command {
            "RPUSH" => "rq:queue:default",
            "ZREM" => "rq:failed:default",
            "SADD" => "rq:queues",
            _ => "rq:job:",
        };
        once_without(&server, command, RETRY_NOW, plain, key);
    }
    once_without(&server, "EXPIRE", RETRY_NOW, with_ttl, "rq:job:");
    // Rather than write unaudited, write nothing.
    once_without(&server, "XADD", RETRY_NOW, plain, "rq:retryd:audit");
    once_without(&server, "UNLINK", PURGE_NOW, plain, "rq:job:");
    once_without(&server, "ZREM", PURGE_NOW, plain, "rq:failed:default");
    once_without(
        &server,
        "HSET",
        EXHAUSTED,
        |id| plain(id).attempts(1),
        "rq:job:",
    );
}

/// The report's case: `+@all -rpush -lpush` against jobs real RQ 2 wrote.
#[test]
fn once_as_a_user_without_rpush_and_lpush_keeps_rq_written_jobs_in_their_registry() {
    let server = RedisServer::start();
    support::rq::Rq::rq2().seed_failed_jobs(&server.url(), JOBS, &["default"]);
    let url = user(
        &server,
        "no-push",
        &["~*", "&*", "+@all", "-rpush", "-lpush"],
    );
    let mut admin = server.conn();
    let ids: Vec<String> = admin.zrange("rq:failed:default", 0, -1).unwrap();
    assert_eq!(ids.len(), JOBS);
    let before = states(&server, "default", &ids);

    let out = once(&url, RETRY_NOW);

    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(
        report["skipped_by_reason"]["forbidden_by_acl"], JOBS as u64,
        "{report}"
    );
    assert_eq!(report["requeued"], 0, "{report}");
    assert_eq!(states(&server, "default", &ids), before);
}

/// Without EVALSHA no script runs, so nothing can be written: `once` says so and exits
/// non-zero, and every job is as it was.
#[test]
fn once_without_evalsha_writes_nothing_and_says_why() {
    let server = RedisServer::start();
    let ids = ids("j");
    seed(&server, &ids, plain);
    let url = lacking(&server, "evalsha");
    let before = states(&server, "default", &ids);

    let out = once(&url, RETRY_NOW);

    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.to_ascii_lowercase().contains("evalsha"), "{stderr}");
    assert_eq!(states(&server, "default", &ids), before);
}

/// A user that may not read the registries writes nothing (the scan fails, `once` exits 1); one
/// that may not PUBLISH the index events (a hint for other instances) still requeues every job
/// whole.
#[test]
fn once_lacking_a_read_or_the_announcement_loses_nothing() {
    let server = RedisServer::start();
    let ids = ids("j");
    seed(&server, &ids, plain);
    let before = states(&server, "default", &ids);

    let out = once(&lacking(&server, "zrange"), RETRY_NOW);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(states(&server, "default", &ids), before);

    let out = once(&lacking(&server, "publish"), RETRY_NOW);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let count = fates(&server, "default", &before);
    assert_eq!(count.get("requeued"), Some(&JOBS), "{count:?}");
}

// ---- the daemon: manual writes, bulk actions, the scan -------------------------------------

fn daemon_as(url: &str, policies: &str) -> Daemon {
    Daemon::start_ready(&DaemonConfig::new(url, policies))
}

#[test]
fn manual_and_bulk_writes_lacking_a_command_answer_forbidden_and_change_nothing() {
    let server = RedisServer::start();
    let ids = ids("j");
    seed(&server, &ids, plain);
    let url = user(
        &server,
        "no-writes",
        &["~*", "&*", "+@all", "-rpush", "-lpush", "-unlink"],
    );
    let daemon = daemon_as(&url, HANDS_OFF);
    let before = states(&server, "default", &ids);

    daemon
        .post("/api/v1/jobs/failed/j000/retry")
        .expect_error(409, "forbidden_by_acl");
    daemon
        .delete("/api/v1/jobs/failed/j001")
        .expect_error(409, "forbidden_by_acl");
    let r = daemon.post("/api/v1/jobs/failed/retry-all").expect(200);
    assert_eq!(r["refused"], JOBS as u64, "{r}");
    assert_eq!(r["requeued_count"], 0, "{r}");
    let r = daemon
        .delete("/api/v1/jobs/failed/clear?queue=default")
        .expect(200);
    assert_eq!(r["refused"], JOBS as u64, "{r}");
    assert_eq!(r["deleted_count"], 0, "{r}");

    assert_eq!(states(&server, "default", &ids), before);
    let log = daemon.log();
    for line in [
        "user may not run RPUSH on rq:queue:default",
        "user may not run UNLINK on rq:job:j001",
    ] {
        assert!(log.contains(line), "the log says {line:?}:\n{log}");
    }
}

#[test]
fn a_scan_lacking_rpush_counts_forbidden_by_acl_and_changes_nothing() {
    let server = RedisServer::start();
    let url = lacking(&server, "rpush");
    let daemon = daemon_as(&url, RETRY_NOW);
    let ids = ids("j");
    seed(&server, &ids, plain);
    let before = states(&server, "default", &ids);

    daemon.scan();

    assert_eq!(states(&server, "default", &ids), before);
    let samples = parse_metrics(&daemon.get("/metrics").text());
    assert_eq!(
        metric(
            &samples,
            "rq_retryd_skipped_total",
            &[("reason", "forbidden_by_acl")]
        ),
        Some(JOBS as f64)
    );
}

// ---- the audit is part of the write ------------------------------------------------------

/// Every entry of the audit stream, oldest first, as the API reads them.
async fn audit_entries(server: &RedisServer) -> Vec<rq_retryd::audit::AuditEntry> {
    let mut con = async_con(server).await;
    let mut entries = rq_retryd::audit::recent(&mut con, "rq", 10_000)
        .await
        .unwrap();
    entries.reverse();
    entries
}

/// After `once` and after a manual retry, each job the write changed is in exactly one audit
/// entry, with who, why, action and queue, and its id whole even when it holds a comma (the
/// comma-joined `job_ids` field would split it; the reader takes `job_ids_json`).
#[tokio::test]
async fn every_requeue_is_in_exactly_one_audit_entry_even_with_a_comma_in_its_id() {
    let server = RedisServer::start();
    let mut all = ids("j");
    all.extend(["a,b".to_string(), "c,d,e".to_string()]);
    seed(&server, &all, plain);

    let out = once(&server.url(), RETRY_NOW);

    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let entries = audit_entries(&server).await;
    // Two script calls (50 + 12 jobs); the second folds into the first's entry unless they
    // fell in two minutes. See: issue 22, item 4.
    let minutes: std::collections::BTreeSet<&str> = entries.iter().map(|e| &e.at[..16]).collect();
    assert_eq!(
        minutes.len(),
        entries.len(),
        "folded per minute: {entries:?}"
    );
    assert!(entries.len() <= 2, "{entries:?}");
    let mut listed: Vec<String> = Vec::new();
    for e in &entries {
        assert_eq!(
            (
                e.who.as_str(),
                e.action.as_str(),
                e.why.as_str(),
                e.queue.as_str()
            ),
            ("supervisor", "requeue", "retry", "default"),
            "{e:?}"
        );
        assert_eq!(e.count as usize, e.job_ids.len(), "{e:?}");
        chrono::DateTime::parse_from_rfc3339(&e.at).expect("at is RFC 3339");
        listed.extend(e.job_ids.iter().cloned());
    }
    listed.sort();
    all.sort();
    assert_eq!(listed, all, "every requeued job listed exactly once");

    // A manual retry, through the daemon.
    FailedJob::new("x,y").write(&mut server.conn());
    let daemon = daemon_as(&server.url(), HANDS_OFF);
    daemon
        .post(&format!(
            "/api/v1/jobs/failed/{}/retry",
            support::http::enc("x,y")
        ))
        .expect(200);

    let before = entries.len();
    let entries = audit_entries(&server).await;
    assert_eq!(entries.len(), before + 1, "{entries:?}");
    let manual = &entries[before];
    assert_eq!(manual.job_ids, vec!["x,y".to_string()], "{manual:?}");
    assert_eq!(manual.count, 1);
    assert_eq!(manual.action, "requeue");
    assert_eq!(manual.why, "POST /api/v1/jobs/failed/{job_id}/retry");
    assert_eq!(manual.queue, "default");
    assert_eq!(
        manual.who, "127.0.0.1",
        "the address without its port: {manual:?}"
    );
    let api = daemon.get("/api/v1/audit?limit=1").expect(200);
    assert_eq!(
        api["entries"][0]["job_ids"],
        serde_json::json!(["x,y"]),
        "{api}"
    );
}

/// The audit stream's key holding another type would make the XADD fail after the writes: the
/// scripts refuse the call before writing instead (wrong_type, naming the key).
#[tokio::test]
async fn an_audit_key_of_the_wrong_type_refuses_the_write_rather_than_leave_it_unrecorded() {
    let server = RedisServer::start();
    let ids = ids("j");
    seed(&server, &ids, plain);
    let _: () = server.conn().set("rq:retryd:audit", "stray").unwrap();
    let before = states(&server, "default", &ids);

    for kind in [REQUEUE, WriteKind::Purge, WriteKind::MarkExhausted] {
        let outcomes = apply_as_user(&server, &server.url(), &ids, kind, Writer::Manual).await;
        let wrong_type = Outcome::Refused(Refusal {
            reason: RefusalReason::WrongType,
            key: "rq:retryd:audit".into(),
        });
        assert!(
            outcomes.iter().all(|o| *o == wrong_type),
            "{kind:?}: {outcomes:?}"
        );
    }
    assert_eq!(states(&server, "default", &ids), before);
}

/// The same for automatic writes, whose type checks of the gate's keys and of the audit
/// stream are the reads themselves under pcall (issue 24, item 2: one command each instead of
/// TYPE and a read): a switches, lease or audit key of another type refuses the call, naming
/// the key, and nothing is written.
#[tokio::test]
async fn an_automatic_write_refuses_a_gate_or_audit_key_of_the_wrong_type() {
    for (key, writer) in [
        ("rq:retryd:switches", Writer::Automatic),
        ("rq:retryd:lease", Writer::Leader("token")),
        ("rq:retryd:audit", Writer::Automatic),
    ] {
        let server = RedisServer::start();
        let ids = ids("j");
        seed(&server, &ids, plain);
        // A string where a hash belongs (switches), a hash where a string or stream does.
        if key.ends_with("switches") {
            let _: () = server.conn().set(key, "stray").unwrap();
        } else {
            let _: () = server.conn().hset(key, "f", "v").unwrap();
        }
        let before = states(&server, "default", &ids);
        for kind in [REQUEUE, WriteKind::Purge, WriteKind::MarkExhausted] {
            let outcomes = apply_as_user(&server, &server.url(), &ids, kind, writer).await;
            let wrong_type = Outcome::Refused(Refusal {
                reason: RefusalReason::WrongType,
                key: key.into(),
            });
            assert!(
                outcomes.iter().all(|o| *o == wrong_type),
                "{key} {kind:?}: {outcomes:?}"
            );
        }
        assert_eq!(states(&server, "default", &ids), before, "{key}");
    }
}

/// A `hold_when` policy whose target queue the user may not read (no key pattern covers
/// `rq:workers:*`) holds its requeues back (`hold_unknown`, nothing written), while the
/// requeues of a policy without `hold_when` in the same registry go ahead. See: issue 21.
#[test]
fn a_hold_when_the_user_may_not_read_holds_its_requeues_and_spares_the_others() {
    let server = RedisServer::start();
    let held = ids("h");
    let free = ids("f");
    seed(&server, &held, |id| {
        plain(id).exception("ConnectionError", "down")
    });
    seed(&server, &free, |id| {
        plain(id).exception("ValueError", "bad")
    });
    // Every key rq-retryd reads and writes but RQ's worker registry.
    let url = user(
        &server,
        "no-workers",
        &[
            "&*",
            "+@all",
            "~rq:failed:*",
            "~rq:job:*",
            "~rq:queue:*",
            "~rq:queues",
            "~rq:retryd:*",
            "~rq:results:*",
            "~rq:executions:*",
            "~rq:execution:*",
            "~rq:wip:*",
            "~rq:group:*",
        ],
    );
    let policies = "[[policy]]\nname = \"held\"\nexceptions = [\"ConnectionError\"]\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\nhold_when = { no_workers = true }\n\n[[policy]]\nname = \"free\"\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n";
    let before = states(&server, "default", &held);

    let out = once(&url, policies);

    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["requeued"], JOBS as u64, "{report}");
    assert_eq!(
        report["skipped_by_reason"]["hold_unknown"], JOBS as u64,
        "{report}"
    );
    let count = fates(&server, "default", &before);
    assert_eq!(untouched(&count), JOBS, "{count:?}");
    let mut con = server.conn();
    let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, free);
    assert!(
        stderr.contains("cannot read the target queues' workers and lengths"),
        "{stderr}"
    );
}
