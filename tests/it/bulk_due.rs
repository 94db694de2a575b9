//! Requeues the script decides (issue 24, item 1): for a queue whose deciding policy matches
//! every job and requeues at once, `once` sends ids to the requeue_due script without reading
//! the jobs first. The script must requeue exactly the jobs the client's decode and decision
//! would requeue now, write them as requeue.lua does, and leave every other job exactly as it
//! was for the client to read and decide.

use crate::support;

use std::collections::BTreeMap;
use std::io::Write as _;

use chrono::Utc;
use redis::Commands;
use rq_retryd::executor::{Attribution, DuePolicy, DueRequeued, Executor, Writer};
use rq_retryd::rq::Keys;
use support::jobs::{async_con, key_content, FailedJob, KeyContent};
use support::RedisServer;

const ENDED: &[u8] = b"2026-11-05T10:00:00.123456Z";

fn add_result(con: &mut redis::Connection, id: &str, fields: &[(&str, &str)]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(format!("rq:results:{id}")).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    let _: String = cmd.query(con).unwrap();
}

/// Every kind of job the script must requeue or leave, by id; returns the ids it must requeue
/// (in registry order) and the ones it must leave. `future`: an ended_at after now (the
/// client waits for it, and so must the script).
fn seed(con: &mut redis::Connection, future: &str) -> (Vec<&'static str>, Vec<&'static str>) {
    let job = |id: &str| FailedJob::new(id).field("ended_at", ENDED);
    let jobs = [
        (job("plain"), true),
        (job("second").attempts(1), true),
        (
            job("whole-second").field("ended_at", b"2026-10-31T10:00:00Z"),
            true,
        ),
        (
            job("leap-day").field("ended_at", b"2024-02-29T10:00:00.5Z"),
            true,
        ),
        (
            job("marked").attempts(2).field("retryd_exhausted", b"1"),
            true,
        ),
        (job("with-sets"), true),
        (job("used-up").attempts(3), false),
        (job("stopped").field("status", b"stopped"), false),
        (job("succeeded"), false),
        (job("no-ended-at").field("ended_at", b""), false),
        (
            job("not-a-date").field("ended_at", b"2026-02-30T10:00:00Z"),
            false,
        ),
        (
            job("no-zone").field("ended_at", b"2026-11-05T10:00:00.123456"),
            false,
        ),
        (job("future").field("ended_at", future.as_bytes()), false),
        (job("odd-attempts").field("retryd_attempts", b" 1"), false),
        (job("odd-mark").field("retryd_exhausted", b"yes"), false),
        (job("elsewhere").field("origin", b"emails"), false),
        (job("bad-ttl").field("ttl", b"1e300"), false),
    ];
    let (mut requeue, mut leave) = (Vec::new(), Vec::new());
    for (j, requeued) in &jobs {
        j.write(con);
        let id: &'static str = Box::leak(j.id.clone().into_boxed_str());
        if *requeued {
            requeue.push(id)
        } else {
            leave.push(id)
        }
    }
    add_result(con, "succeeded", &[("type", "1"), ("worker_name", "w1")]);
    let _: () = con.sadd("rq:job:with-sets:dependents", "child").unwrap();
    let _: () = con.expire("rq:job:with-sets:dependents", 1000).unwrap();
    // In the registry, no hash; and a job key of the wrong type.
    let _: () = con
        .zadd("rq:failed:default", "orphan", Utc::now().timestamp() + 1000)
        .unwrap();
    let _: () = con
        .zadd(
            "rq:failed:default",
            "string-key",
            Utc::now().timestamp() + 1000,
        )
        .unwrap();
    let _: () = con.set("rq:job:string-key", "x").unwrap();
    leave.extend(["orphan", "string-key"]);
    (requeue, leave)
}

fn in_a_day() -> String {
    (Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn contents(con: &mut redis::Connection, ids: &[&str]) -> BTreeMap<String, Vec<KeyContent>> {
    ids.iter()
        .map(|id| {
            let keys = [
                format!("rq:job:{id}"),
                format!("rq:job:{id}:dependents"),
                format!("rq:results:{id}"),
            ];
            let c = keys
                .iter()
                .map(|k| key_content(con, k.as_bytes()))
                .collect();
            (id.to_string(), c)
        })
        .collect()
}

#[tokio::test]
async fn the_script_requeues_what_the_client_would_requeue_now_and_leaves_the_rest_as_it_was() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    let future = in_a_day();
    let (requeue, leave) = seed(&mut sync, &future);
    let ids: Vec<String> = sync.zrange("rq:failed:default", 0, -1).unwrap();
    let mut with_gone = ids.clone();
    with_gone.push("never-there".into());
    with_gone.push(ids[0].clone()); // twice in one call: the second is left to the client
    let before = contents(&mut sync, &leave);
    let mut con = async_con(&server).await;
    let policy = DuePolicy {
        name: "now",
        max_attempts: 3,
        at_front: false,
    };
    let by = Attribution {
        who: "supervisor",
        route: None,
    };

    let answers = Executor::new(Keys::new("rq"))
        .requeue_due(
            &mut con,
            "default",
            &with_gone,
            &policy,
            Utc::now(),
            Writer::Automatic,
            by,
        )
        .await
        .unwrap();

    let requeued: Vec<&str> = with_gone
        .iter()
        .zip(&answers)
        .filter(|(_, a)| a.is_some())
        .map(|(id, _)| id.as_str())
        .collect();
    let mut expected = requeue.clone();
    expected.sort_by_key(|id| ids.iter().position(|x| x == id));
    assert_eq!(requeued, expected);
    let at = |id: &str| answers[with_gone.iter().position(|x| x == id).unwrap()].clone();
    assert_eq!(
        at("plain"),
        Some(DueRequeued {
            ended_at: "2026-11-05T10:00:00.123456Z".into(),
            attempts: "".into()
        })
    );
    assert_eq!(at("second").unwrap().attempts, "1");
    assert_eq!(
        contents(&mut sync, &leave),
        before,
        "the jobs left to the client are untouched"
    );
    for id in &leave {
        let score: Option<f64> = sync.zscore("rq:failed:default", *id).unwrap();
        assert!(score.is_some(), "{id} stays in the failed registry");
    }
    let queued: Vec<String> = sync.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, expected);
    for (id, attempts) in [("plain", "1"), ("second", "2"), ("marked", "3")] {
        let h: BTreeMap<String, String> =
            ["status", "retryd_attempts", "retryd_policy", "ended_at"]
                .into_iter()
                .map(|f| (f.to_string(), sync.hget(format!("rq:job:{id}"), f).unwrap()))
                .collect();
        let exhausted: bool = sync
            .hexists(format!("rq:job:{id}"), "retryd_exhausted")
            .unwrap();
        assert_eq!(h["status"], "queued", "{id}");
        assert_eq!(h["retryd_attempts"], attempts, "{id}");
        assert_eq!(h["retryd_policy"], "now", "{id}");
        assert_eq!(h["ended_at"], "", "{id}");
        assert!(!exhausted, "{id}");
        let ttl: i64 = sync.ttl(format!("rq:job:{id}")).unwrap();
        assert_eq!(ttl, -1, "{id}");
    }
    let ttl: i64 = sync.ttl("rq:job:with-sets:dependents").unwrap();
    assert_eq!(ttl, -1, "the dependency set lives as long as the job");
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("rq:retryd:audit")
        .arg("-")
        .arg("+")
        .query(&mut sync)
        .unwrap();
    assert_eq!(
        entries.len(),
        1,
        "one audit entry for the call: {entries:?}"
    );
    let fields = &entries[0].1;
    let field = |name: &str| {
        let at = fields.iter().position(|f| f == name).unwrap();
        fields[at + 1].clone()
    };
    let listed: Vec<String> = serde_json::from_str(&field("job_ids_json")).unwrap();
    assert_eq!(listed, expected);
    assert_eq!(field("action"), "requeue");
    assert_eq!(field("why"), "now");
    assert_eq!(field("who"), "supervisor");
}

/// A user who may not run one command of the write: the script writes nothing and leaves
/// every job of the call to the client (which refuses it, naming the command, as before).
#[tokio::test]
async fn a_denied_command_leaves_every_job_of_the_call_to_the_client_unwritten() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    for id in ["a", "b", "c"] {
        FailedJob::new(id).field("ended_at", ENDED).write(&mut sync);
    }
    let ids: Vec<String> = sync.zrange("rq:failed:default", 0, -1).unwrap();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let policy = DuePolicy {
        name: "now",
        max_attempts: 3,
        at_front: false,
    };
    let by = Attribution {
        who: "supervisor",
        route: None,
    };
    for command in [
        "persist",
        "hset",
        "rpush",
        "xadd",
        "zrem",
        "exists",
        "xrevrange",
    ] {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("limited")
            .arg("reset")
            .arg("on")
            .arg(">pw")
            .arg(&["~*", "&*", "+@all", &format!("-{command}")][..])
            .query(&mut sync)
            .unwrap();
        let url = format!("redis://limited:pw@127.0.0.1:{}/0", server.port);
        let mut con = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let before = contents(&mut sync, &refs);

        let answers = Executor::new(Keys::new("rq"))
            .requeue_due(
                &mut con,
                "default",
                &ids,
                &policy,
                Utc::now(),
                Writer::Automatic,
                by,
            )
            .await
            .unwrap();

        assert_eq!(answers, vec![None; 3], "without {command}");
        assert_eq!(contents(&mut sync, &refs), before, "without {command}");
        let queued: bool = sync.exists("rq:queue:default").unwrap();
        assert!(!queued, "without {command}");
    }
}

fn once(server: &RedisServer, policy: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(format!("[redis]\nurl = \"{}\"\n{policy}", server.url()).as_bytes())
        .unwrap();
    let out = support::retryd_command()
        .arg("--config")
        .arg(&path)
        .args(["once", "--json"])
        .output()
        .expect("run rq-retryd once");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn cached_scripts(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("number_of_cached_scripts:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("number_of_cached_scripts")
}

/// In the failed registry, in which queues, and the hash's fields.
type Fate = (bool, Vec<String>, Vec<Vec<u8>>);

/// The hash fields a decision reads or a write sets (not the times the seed and the run stamp).
const DECIDED: [&str; 8] = [
    "status=",
    "origin=",
    "ended_at=",
    "exc_info=",
    "ttl=",
    "retryd_attempts=",
    "retryd_policy=",
    "retryd_exhausted=",
];

/// Where each job is after a run, and its hash's [`DECIDED`] fields.
fn fates(con: &mut redis::Connection, ids: &[&str]) -> BTreeMap<String, Fate> {
    ids.iter()
        .map(|id| {
            let failed: Option<f64> = con.zscore("rq:failed:default", *id).unwrap();
            let mut queues = Vec::new();
            for q in ["default", "emails"] {
                let ids: Vec<String> = con.lrange(format!("rq:queue:{q}"), 0, -1).unwrap();
                if ids.iter().any(|x| x == id) {
                    queues.push(q.to_string());
                }
            }
            let (_, fields, _) = key_content(con, format!("rq:job:{id}").as_bytes());
            let fields = fields
                .into_iter()
                .filter(|f| DECIDED.iter().any(|k| f.starts_with(k.as_bytes())))
                .collect();
            (id.to_string(), (failed.is_some(), queues, fields))
        })
        .collect()
}

/// `once` with a queue-wide retry-now policy (the script decides) ends exactly where the same
/// policy decided on the client ends (a max_age of ten years changes no decision here, and
/// makes the client read and decide every job).
#[test]
fn once_ends_where_the_clients_own_decisions_end() {
    let server = RedisServer::start();
    let mut sync = server.conn();
    let policy = "[[policy]]\nname = \"now\"\nmax_attempts = 3\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n";
    let client = format!("{policy}max_age = \"3650d\"\n");
    let future = in_a_day();
    let mut runs = Vec::new();
    for config in [policy, client.as_str()] {
        let _: () = redis::cmd("FLUSHALL").query(&mut sync).unwrap();
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut sync).unwrap();
        let (requeue, leave) = seed(&mut sync, &future);
        let all: Vec<&str> = requeue.iter().chain(&leave).copied().collect();
        let report = once(&server, config);
        runs.push((fates(&mut sync, &all), report, cached_scripts(&mut sync)));
    }
    assert_eq!(runs[0].0, runs[1].0);
    for field in [
        "requeued",
        "refused",
        "conflicts",
        "skipped_by_reason",
        "scanned",
    ] {
        assert_eq!(
            runs[0].1[field], runs[1].1[field],
            "{field}: {} / {}",
            runs[0].1, runs[1].1
        );
    }
    assert_eq!(runs[0].1["requeued"], 10, "{}", runs[0].1);
    // The first run went through the requeue_due script: one script more than the second.
    assert_eq!(runs[0].2, runs[1].2 + 1);
}
