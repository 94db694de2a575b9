//! Redis Sentinel (issue 4): rq-retryd finds the master through a real sentinel, and after a
//! failover it follows the new master and keeps requeueing.

use crate::support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands;
use support::jobs::FailedJob;
use support::{binary, free_port, RedisServer};

/// Polls `check` every 100 ms for up to `secs` seconds.
fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {secs}s waiting for {what}");
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn queued(port: u16, queue: &str) -> Vec<String> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .unwrap()
        .get_connection()
        .unwrap();
    con.lrange(format!("rq:queue:{queue}"), 0, -1).unwrap()
}

#[test]
fn the_daemon_follows_a_sentinel_failover_and_keeps_requeueing() {
    let master = RedisServer::start();
    let replica_of = master.port.to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &replica_of]);
    wait_for("the replica to sync", 30, || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.conn())
            .unwrap();
        info.contains("master_link_status:up")
    });

    let dir = tempfile::tempdir().unwrap();
    let sentinel_port = free_port();
    let sentinel_conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &sentinel_conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n",
            dir.path().display(),
            master.port
        ),
    )
    .unwrap();
    let _sentinel = Killed(
        Command::new("redis-server")
            .arg(&sentinel_conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel"),
    );
    let sentinel_url = format!("redis://127.0.0.1:{sentinel_port}/");
    wait_for("the sentinel to see the replica", 30, || {
        let Ok(mut con) = redis::Client::open(sentinel_url.as_str())
            .unwrap()
            .get_connection()
        else {
            return false;
        };
        let replicas: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg("mymaster")
            .query(&mut con);
        replicas.is_ok_and(|r| !r.is_empty())
    });

    let http_port = free_port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"redis://sentinel-managed:6379/0\"\nsentinel_master = \"mymaster\"\nsentinels = [\"127.0.0.1:{sentinel_port}\"]\n\
             [supervisor]\nscan_interval = \"500ms\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [[policy]]\nname = \"now\"\nbackoff = {{ strategy = \"fixed\", delay = \"0s\" }}\n"
        ),
    )
    .unwrap();
    let mut daemon = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env_remove("RQ_RETRYD_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    FailedJob::new("before-failover").write(&mut master.conn());
    wait_for("the job on the first master to be requeued", 20, || {
        queued(master.port, "default") == vec!["before-failover"]
    });

    let _: redis::Value = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg("mymaster")
        .query(
            &mut redis::Client::open(sentinel_url.as_str())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
    wait_for("the replica to become master", 30, || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.conn())
            .unwrap();
        info.contains("role:master")
    });

    FailedJob::new("after-failover").write(&mut replica.conn());
    wait_for("the job on the new master to be requeued", 30, || {
        queued(replica.port, "default").contains(&"after-failover".to_string())
    });

    Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    let status = daemon.wait().unwrap();
    let mut log = String::new();
    daemon
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("following the failover"), "{log}");
    assert!(
        log.contains(&format!("127.0.0.1:{}", replica.port)),
        "the log names the new master: {log}"
    );
}
