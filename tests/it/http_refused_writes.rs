//! The HTTP write paths leave a job exactly as it was when a key it touches has the wrong type:
//! retry one, delete one, retry-all and clear answer what was refused, and Redis holds byte for
//! byte what it held for those jobs.
//!
//! See: issue 11 ("Also for the HTTP retry/delete/retry-all/clear paths").

use crate::support;

use redis::Commands;

use support::http::{Daemon, DaemonConfig, HANDS_OFF};
use support::jobs::{key_content, FailedJob, KeyContent};
use support::RedisServer;

fn start() -> (RedisServer, Daemon) {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), HANDS_OFF));
    (redis, daemon)
}

/// Every key of job `id` (hash, results, dependency sets) and its registry score.
fn job_state(con: &mut redis::Connection, queue: &str, id: &str) -> (Vec<KeyContent>, Option<f64>) {
    let keys = [
        format!("rq:job:{id}"),
        format!("rq:results:{id}"),
        format!("rq:job:{id}:dependents"),
        format!("rq:job:{id}:dependencies"),
    ];
    let contents = keys
        .iter()
        .map(|k| key_content(con, k.as_bytes()))
        .collect();
    let score: Option<f64> = con.zscore(format!("rq:failed:{queue}"), id).unwrap();
    (contents, score)
}

#[test]
fn retry_one_onto_a_queue_key_of_the_wrong_type_is_a_409_and_changes_nothing() {
    let (redis, daemon) = start();
    let mut con = redis.conn();
    FailedJob::new("a").write(&mut con);
    let _: () = con.set("rq:queue:default", "stray").unwrap();
    let before = job_state(&mut con, "default", "a");

    daemon
        .post("/api/v1/jobs/failed/a/retry")
        .expect_error(409, "write_refused");

    assert_eq!(job_state(&mut con, "default", "a"), before);
    let stray: String = con.get("rq:queue:default").unwrap();
    assert_eq!(stray, "stray");
    assert!(
        daemon.log().contains("key=rq:queue:default"),
        "the log names the key"
    );
}

#[test]
fn delete_one_with_a_dependencies_key_of_the_wrong_type_is_a_409_and_deletes_nothing() {
    let (redis, daemon) = start();
    let mut con = redis.conn();
    FailedJob::new("a").write(&mut con);
    let _: () = con.rpush("rq:job:a:dependencies", "x").unwrap();
    let before = job_state(&mut con, "default", "a");

    daemon
        .delete("/api/v1/jobs/failed/a")
        .expect_error(409, "write_refused");

    assert_eq!(job_state(&mut con, "default", "a"), before);
}

/// A results key of the wrong type already stops the read: the job is undecodable, and an
/// undecodable job is never deleted.
#[test]
fn delete_one_with_a_results_key_of_the_wrong_type_is_refused_as_corrupt() {
    let (redis, daemon) = start();
    let mut con = redis.conn();
    FailedJob::new("a").write(&mut con);
    let _: () = con.del("rq:results:a").unwrap();
    let _: () = con.set("rq:results:a", "not a stream").unwrap();
    let before = job_state(&mut con, "default", "a");

    daemon
        .delete("/api/v1/jobs/failed/a")
        .expect_error(409, "corrupt_job");

    assert_eq!(job_state(&mut con, "default", "a"), before);
}

#[test]
fn retry_all_counts_refused_jobs_and_leaves_them_while_other_queues_are_requeued() {
    let (redis, daemon) = start();
    let mut con = redis.conn();
    for id in ["a1", "a2", "a3"] {
        FailedJob::new(id).write(&mut con);
    }
    FailedJob::new("b1").queue("emails").write(&mut con);
    let _: () = con.hset("rq:queue:default", "not", "a list").unwrap();
    let before: Vec<_> = ["a1", "a2", "a3"]
        .iter()
        .map(|id| job_state(&mut con, "default", id))
        .collect();

    let r = daemon.post("/api/v1/jobs/failed/retry-all").expect(200);

    assert_eq!(r["requeued_count"], 1, "{r}");
    assert_eq!(r["refused"], 3, "{r}");
    for (id, was) in ["a1", "a2", "a3"].iter().zip(&before) {
        assert_eq!(&job_state(&mut con, "default", id), was, "{id}");
    }
    let emails: Vec<String> = con.lrange("rq:queue:emails", 0, -1).unwrap();
    assert_eq!(emails, vec!["b1"]);
}

#[test]
fn clear_deletes_the_whole_jobs_and_leaves_the_one_with_a_foreign_dependents_key() {
    let (redis, daemon) = start();
    let mut con = redis.conn();
    for id in ["a", "b", "c"] {
        FailedJob::new(id).write(&mut con);
    }
    let _: () = con.set("rq:job:b:dependents", "not a set").unwrap();
    let before = job_state(&mut con, "default", "b");

    let r = daemon
        .delete("/api/v1/jobs/failed/clear?queue=default")
        .expect(200);

    assert_eq!(r["deleted_count"], 2, "{r}");
    assert_eq!(r["refused"], 1, "{r}");
    assert_eq!(job_state(&mut con, "default", "b"), before);
    for id in ["a", "c"] {
        let gone: bool = con.exists(format!("rq:job:{id}")).unwrap();
        assert!(!gone, "{id} deleted whole");
        let score: Option<f64> = con.zscore("rq:failed:default", id).unwrap();
        assert_eq!(score, None);
    }
}

#[test]
fn a_failed_registry_of_the_wrong_type_lists_as_empty_and_is_left_alone() {
    let (redis, daemon) = start();
    let mut con = redis.conn();
    FailedJob::new("a").queue("emails").write(&mut con);
    let _: () = con.set("rq:failed:default", "stray").unwrap();
    let _: () = con.sadd("rq:queues", "rq:queue:default").unwrap();
    // The listing answers from what the scans index: a scan has looked at both.
    daemon.scan();

    // The listing shows what is readable; the stray key holds no job.
    let list = daemon.get("/api/v1/jobs/failed").expect(200);
    assert_eq!(list["total"], 1, "{list}");
    let stray: String = con.get("rq:failed:default").unwrap();
    assert_eq!(stray, "stray");
}
