//! The binary as an operator meets it: config errors, exit codes, `check-config`, `explain`,
//! corrupt data, and the daemon's backoff timer and graceful shutdown.

use crate::support;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use redis::Commands;
use support::jobs::FailedJob;
use support::{binary, repo_root, RedisServer};

fn write_config(dir: &tempfile::TempDir, body: &str) -> std::path::PathBuf {
    let path = dir.path().join("config.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    path
}

fn rq_retryd(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RQ_RETRYD_REDIS_URL")
        .env_remove("RQ_RETRYD_HTTP_LISTEN")
        .env_remove("RQ_RETRYD_AUTH_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .expect("run rq-retryd")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn an_invalid_config_names_file_line_column_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[supervisor]\nscan_intervall = \"10s\"\n");
    let out = rq_retryd(&path, &["once"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let expected = format!("{}:2:1: supervisor.scan_intervall:", path.display());
    assert!(err.contains(&expected), "stderr was: {err}");
    assert!(err.contains("unknown field"), "stderr was: {err}");
}

#[test]
fn an_unclosed_regex_is_reported_at_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[[policy]]\nname = \"a\"\nerror_pattern = \"(timed out\"\n",
    );
    let out = rq_retryd(&path, &["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(":3:17: policy[1].error_pattern: invalid regex"),
        "stderr was: {err}"
    );
}

#[test]
fn every_shipped_example_config_passes_check_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_root().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let out = rq_retryd(&path, &["check-config"]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("policies (evaluated in order"),
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected the example configs in config/, found {checked}"
    );
}

#[test]
fn check_config_never_prints_the_redis_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[redis]\nurl = \"redis://app:hunter2@127.0.0.1:6379/0\"\n",
    );
    let out = rq_retryd(&path, &["check-config"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(
        stdout.contains("redis://app:***@127.0.0.1:6379/0"),
        "{stdout}"
    );
}

#[test]
fn once_exits_1_when_redis_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!("[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\n"),
    );
    let out = rq_retryd(&path, &["once"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot reach Redis"));
}

/// `rq-retryd once --json` with one policy retrying every failed job at once; asserts it exits
/// 0 and returns the JSON report and stderr.
fn once_retrying_everything(server: &RedisServer) -> (serde_json::Value, String) {
    once_retrying(server, "")
}

/// Like [`once_retrying_everything`], with `matcher` (TOML lines) added to the policy.
fn once_retrying(server: &RedisServer, matcher: &str) -> (serde_json::Value, String) {
    let out = once_retrying_output(server, matcher);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let report = serde_json::from_slice(&out.stdout).expect("JSON report");
    (report, text(&out.stderr))
}

/// `once --json` with a retry-at-once policy (plus `matcher`), whatever its exit code.
fn once_retrying_output(server: &RedisServer, matcher: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!("[redis]\nurl = \"{}\"\n[[policy]]\nname = \"retry\"\nbackoff = {{ strategy = \"fixed\", delay = \"0s\" }}\n{matcher}", server.url()),
    );
    rq_retryd(&path, &["once", "--json"])
}

/// The way issue 11 lost jobs: RQ-seeded failed jobs, and a stray `SET rq:queue:default` by some
/// script. Every job of that queue must stay in its registry with its hash unchanged, the log
/// must name the key, the other queue is requeued, and `once` exits 3 with its summary printed.
/// See: issue 11.
#[test]
fn once_leaves_jobs_whose_queue_key_has_the_wrong_type_and_exits_3() {
    let server = RedisServer::start();
    support::rq::Rq::rq2().seed_failed_jobs(&server.url(), 40, &["default", "emails"]);
    let mut con = server.conn();
    let _: () = con.set("rq:queue:default", "stray").unwrap();
    let ids: Vec<String> = con.zrange("rq:failed:default", 0, -1).unwrap();
    assert!(!ids.is_empty());
    let before: Vec<_> = ids
        .iter()
        .map(|id| support::jobs::key_content(&mut con, format!("rq:job:{id}").as_bytes()))
        .collect();

    let out = once_retrying_output(&server, "");

    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let n = ids.len() as u64;
    assert_eq!(report["refused"], n, "{report}");
    assert_eq!(report["skipped_by_reason"]["wrong_type"], n, "{report}");
    assert_eq!(report["requeued"], 40 - n, "{report}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("key=rq:queue:default") && stderr.contains("wrong_type"),
        "the log names the key and the reason: {stderr}"
    );
    let still: Vec<String> = con.zrange("rq:failed:default", 0, -1).unwrap();
    assert_eq!(still, ids, "every job stays in its failed registry");
    for (id, was) in ids.iter().zip(&before) {
        let now = support::jobs::key_content(&mut con, format!("rq:job:{id}").as_bytes());
        assert_eq!(&now, was, "job {id} changed");
    }
    let stray: String = con.get("rq:queue:default").unwrap();
    assert_eq!(stray, "stray");
    let emails: usize = con.llen("rq:queue:emails").unwrap();
    assert_eq!(emails as u64, 40 - n);
}

/// A failed job whose newest result holds an `exc_string` that is base64 but not zlib.
fn write_with_unreadable_failure_text(con: &mut redis::Connection, id: &str) {
    FailedJob::new(id).write(con);
    let results = format!("rq:results:{id}");
    let _: () = redis::cmd("DEL").arg(&results).query(con).unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&results)
        .arg("*")
        .arg("type")
        .arg(2)
        .arg("exc_string")
        .arg("aGVsbG8gd29ybGQ=")
        .query(con)
        .unwrap();
}

#[test]
fn corrupt_jobs_are_skipped_counted_and_never_touched() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let future = chrono::Utc::now().timestamp() + 100_000;
    // A good job, so we can see the policy does act.
    FailedJob::new("good").write(&mut con);
    // A 5 MiB traceback is big but valid: it is decoded and acted on.
    FailedJob::new("huge")
        .exception("ConnectionError", &"x".repeat(5 << 20))
        .write(&mut con);
    // Corrupt variants.
    write_with_unreadable_failure_text(&mut con, "bad-zlib");
    FailedJob::new("not-utf8")
        .field("origin", b"def\xffault")
        .write(&mut con);
    // No ended_at on a job that is not `failed` (a failed one without it is what RQ leaves
    // when a worker dies, and is retried: tests/it/interop_rq.rs).
    FailedJob::new("no-ended-at")
        .field("ended_at", b"")
        .field("status", b"started")
        .write(&mut con);
    FailedJob::new("bad-attempts")
        .field("retryd_attempts", b"many")
        .write(&mut con);
    let _: () = con.set("rq:job:a-string", "I am not a hash").unwrap();
    let _: () = con.zadd("rq:failed:default", "a-string", future).unwrap();
    let _: () = con.zadd("rq:failed:default", "orphan", future).unwrap();
    let corrupt = [
        "bad-zlib",
        "not-utf8",
        "no-ended-at",
        "bad-attempts",
        "a-string",
        "orphan",
    ];
    let before: Vec<_> = corrupt
        .iter()
        .map(|id| support::jobs::key_content(&mut con, format!("rq:job:{id}").as_bytes()))
        .collect();

    // The policy looks at the exception, so an unreadable failure text stops a decision.
    let (report, stderr) = once_retrying(&server, "exceptions = [\"ConnectionError\"]\n");

    assert_eq!(report["requeued"], 2, "{report}");
    assert_eq!(report["skipped_by_reason"]["decode_error"], 5, "{report}");
    assert_eq!(report["skipped_by_reason"]["orphan"], 1, "{report}");
    for (id, dump) in corrupt.iter().zip(before) {
        let in_registry: Option<f64> = con.zscore("rq:failed:default", id).unwrap();
        assert!(
            in_registry.is_some(),
            "{id} must stay in the failed registry"
        );
        let after = support::jobs::key_content(&mut con, format!("rq:job:{id}").as_bytes());
        assert_eq!(after, dump, "{id} must be byte-for-byte untouched");
    }
    let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued.len(), 2);
    assert!(queued.contains(&"good".to_string()) && queued.contains(&"huge".to_string()));
    assert!(
        stderr.contains("cannot decode failed job"),
        "corrupt jobs are logged: {stderr}"
    );
}

#[test]
fn a_queue_wide_policy_reads_no_failure_texts_and_is_not_stopped_by_one_it_cannot_read() {
    let server = RedisServer::start();
    let mut con = server.conn();
    FailedJob::new("good").write(&mut con);
    write_with_unreadable_failure_text(&mut con, "bad-text");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .unwrap();

    let (report, _) = once_retrying_everything(&server);

    // Whether a job is retried does not depend on its traceback here, so none is read and the
    // one that cannot be decoded is retried like the other.
    assert_eq!(report["requeued"], 2, "{report}");
    assert!(
        report["skipped_by_reason"].get("decode_error").is_none(),
        "{report}"
    );
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut con)
        .unwrap();
    assert!(
        stats.contains("cmdstat_hmget:"),
        "the jobs were read: {stats}"
    );
    // The scan reads no results stream; the requeue script reads each requeued job's newest
    // result once, to leave a job whose last run succeeded alone (issue 21): 2 calls, not 4;
    // and its one call reads the audit's newest entries for one to fold into (issue 22): 3.
    assert!(
        stats.contains("cmdstat_xrevrange:calls=3,"),
        "no results stream is read but by the requeue's own check: {stats}"
    );
    let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued.len(), 2, "{queued:?}");
}

#[test]
fn once_finds_a_failed_registry_whose_queue_left_rq_queues() {
    let server = RedisServer::start();
    let mut con = server.conn();
    FailedJob::new("listed").queue("listed").write(&mut con);
    FailedJob::new("stray")
        .queue("deleted-queue")
        .write(&mut con);
    // As after Queue.delete(): the queue is gone from rq:queues, its failed registry is not.
    let _: () = con.srem("rq:queues", "rq:queue:deleted-queue").unwrap();

    let (report, _) = once_retrying_everything(&server);

    assert_eq!(report["requeued"], 2, "{report}");
    assert_eq!(
        report["queues"],
        serde_json::json!(["deleted-queue", "listed"])
    );
    let queued: Vec<String> = con.lrange("rq:queue:deleted-queue", 0, -1).unwrap();
    assert_eq!(queued, vec!["stray"]);
}

#[test]
fn explain_names_the_deciding_policy_and_why_earlier_ones_did_not_match() {
    let server = RedisServer::start();
    let mut con = server.conn();
    FailedJob::new("j1")
        .queue("emails")
        .exception(
            "smtplib.SMTPServerDisconnected",
            "Connection unexpectedly closed",
        )
        .attempts(1)
        .write(&mut con);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!(
            r#"[redis]
url = "{}"
[[policy]]
name = "billing-only"
queues = ["billing"]
[[policy]]
name = "value-errors"
exceptions = ["ValueError"]
action = "purge"
[[policy]]
name = "smtp"
exceptions = ["SMTPServerDisconnected"]
max_attempts = 4
backoff = {{ strategy = "fixed", delay = "1h" }}
[[policy]]
name = "later"
action = "ignore"
"#,
            server.url()
        ),
    );

    let out = rq_retryd(&path, &["explain", "j1"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "queue        emails",
        "function     app.workers.reports.render_report",
        "exception    smtplib.SMTPServerDisconnected",
        "attempts     1 of 4",
        "billing-only (retry): queue \"emails\" matches none of [\"billing\"]",
        "value-errors (purge): exception \"smtplib.SMTPServerDisconnected\" matches none of [\"ValueError\"]",
        "=> matched smtp (retry)",
        "later (ignore): an earlier policy matched",
        "decision     wait: attempt 2 is due at",
        "next retry",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }

    let json = rq_retryd(&path, &["explain", "j1", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["policy"], "smtp");
    assert_eq!(value["attempts"], 1);
    assert_eq!(value["max_attempts"], 4);
    assert!(value["next_retry_at"].is_string());

    let missing = rq_retryd(&path, &["explain", "no-such-job"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("not in any failed registry"));
}

/// See issue 2, item 5: a waiting job is requeued when its backoff ends, not at the next scan.
#[test]
fn the_daemon_requeues_a_job_when_its_backoff_ends_and_stops_cleanly_on_sigterm() {
    let server = RedisServer::start();
    let mut con = server.conn();
    FailedJob::new("j1").failed_secs_ago(0).write(&mut con);
    let failed_at = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!(
            "[redis]\nurl = \"{}\"\n[supervisor]\nscan_interval = \"1h\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[policy]]\nname = \"p\"\nbackoff = {{ strategy = \"fixed\", delay = \"2s\" }}\n",
            server.url()
        ),
    );
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut requeued_after = None;
    while failed_at.elapsed() < Duration::from_secs(15) {
        let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
        if !queued.is_empty() {
            assert_eq!(queued, vec!["j1"]);
            requeued_after = Some(failed_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let requeued_after =
        requeued_after.expect("the job was never requeued although its backoff ended");
    assert!(
        requeued_after >= Duration::from_millis(1800),
        "requeued before its backoff ended: {requeued_after:?}"
    );

    unsafe_sigterm(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not stop within 10s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("rq-retryd stopped"), "{stderr}");
}

/// What the daemon told systemd (`NOTIFY_SOCKET`), one line per state, in order.
struct Notifications {
    socket: std::os::unix::net::UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(path: &std::path::Path) -> Notifications {
        let socket = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notifications {
            socket,
            seen: Vec::new(),
        }
    }

    /// Reads until `count` lines (from `since` on) satisfy `wanted`; panics after 20 s.
    #[track_caller]
    fn wait_for(&mut self, since: usize, count: usize, wanted: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            let found: Vec<usize> = (since..self.seen.len())
                .filter(|&i| wanted(&self.seen[i]))
                .collect();
            if found.len() >= count {
                return found[count - 1];
            }
            assert!(Instant::now() < deadline, "not told: {:?}", self.seen);
            if let Ok(n) = self.socket.recv(&mut buf) {
                let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen
                    .extend(datagram.lines().filter(|l| !l.is_empty()).map(String::from));
            }
        }
    }
}

/// Under systemd (`Type=notify`, `WatchdogSec`): READY once listening, then the status while
/// Redis is reached, WATCHDOG pings from the scan loop, RELOADING then READY around a SIGHUP
/// reload, STOPPING last at SIGTERM, and exit 0. See: issue 20 (the daemon as a library; the
/// process around it tells systemd what it told before).
#[test]
fn the_daemon_tells_systemd_ready_watchdog_reloading_and_stopping_in_order() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let mut told = Notifications::bind(&socket);
    let path = write_config(
        &dir,
        &format!(
            "[redis]\nurl = \"{}\"\n[supervisor]\nscan_interval = \"1h\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[policy]]\nname = \"p\"\naction = \"ignore\"\n",
            server.url()
        ),
    );
    let mut child = support::retryd_command()
        .arg("--config")
        .arg(&path)
        .arg("run")
        .env("NOTIFY_SOCKET", &socket)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = told.wait_for(0, 1, |l| l == "READY=1");
    let connecting = told.wait_for(0, 1, |l| l == "STATUS=connecting to Redis");
    let scanned = told.wait_for(0, 1, |l| l.starts_with("STATUS=last scan "));
    told.wait_for(scanned, 2, |l| l == "WATCHDOG=1");
    assert!(
        ready < connecting && connecting < scanned,
        "{:?}",
        told.seen
    );

    let hup = told.seen.len();
    support::faults::signal(child.id(), "HUP");
    let reloading = told.wait_for(hup, 1, |l| l == "RELOADING=1");
    told.wait_for(reloading, 1, |l| l == "READY=1");

    unsafe_sigterm(child.id());
    told.wait_for(0, 1, |l| l == "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let mut buf = [0u8; 4096];
    while let Ok(n) = told.socket.recv(&mut buf) {
        told.seen
            .extend(String::from_utf8_lossy(&buf[..n]).lines().map(String::from));
    }
    assert_eq!(
        told.seen.iter().filter(|l| *l == "STOPPING=1").count(),
        1,
        "{:?}",
        told.seen
    );
    assert_eq!(
        told.seen.last().map(String::as_str),
        Some("STOPPING=1"),
        "{:?}",
        told.seen
    );
}

fn unsafe_sigterm(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A failed registry that is not a sorted set cannot be read: `once` reports it, leaves it, and
/// scans every other queue as usual. See: issue 11.
#[test]
fn once_skips_a_failed_registry_of_the_wrong_type_and_scans_the_others() {
    let server = RedisServer::start();
    let mut con = server.conn();
    FailedJob::new("e1").queue("emails").write(&mut con);
    let _: () = con.set("rq:failed:default", "stray").unwrap();
    let _: () = con.sadd("rq:queues", "rq:queue:default").unwrap();

    let (report, stderr) = once_retrying_everything(&server);

    assert_eq!(report["requeued"], 1, "{report}");
    assert_eq!(report["skipped_by_reason"]["wrong_type"], 1, "{report}");
    assert!(stderr.contains("key=rq:failed:default"), "{stderr}");
    let stray: String = con.get("rq:failed:default").unwrap();
    assert_eq!(stray, "stray");
}

/// See: issue 11 section 4 ("check-config must refuse what run refuses ... with the same
/// message, so 'valid' means it starts") and issue 13 part 3 (roles).
#[test]
fn check_config_and_run_refuse_an_unreadable_or_empty_token_file_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\nsecond line\n").unwrap();
    let missing = dir.path().join("no-such-token");
    for (key, path) in [
        ("auth_token_file", &missing),
        ("auth_token_file", &empty),
        ("token_file", &missing),
        ("token_file", &empty),
    ] {
        let http = if key == "auth_token_file" {
            format!(
                "[http]\nlisten = \"127.0.0.1:1\"\nauth_token_file = \"{}\"\n",
                path.display()
            )
        } else {
            format!(
                "[http]\nlisten = \"127.0.0.1:1\"\n[[http.tokens]]\nname = \"dash\"\nrole = \"read\"\ntoken_file = \"{}\"\n",
                path.display()
            )
        };
        let config = write_config(
            &dir,
            &format!("[redis]\nurl = \"redis://127.0.0.1:1/0\"\n{http}"),
        );
        let checked = rq_retryd(&config, &["check-config"]);
        let ran = rq_retryd(&config, &["run"]);
        assert_eq!(checked.status.code(), Some(2), "{}", text(&checked.stderr));
        assert_eq!(ran.status.code(), Some(2), "{}", text(&ran.stderr));
        let message = text(&checked.stderr);
        assert_eq!(message, text(&ran.stderr), "the same refusal");
        let says = if path == &missing {
            "cannot read"
        } else {
            "has an empty first line"
        };
        assert!(
            message.contains(&format!("{}:", config.display()))
                && message.contains(key)
                && message.contains(says)
                && message.contains(&path.display().to_string()),
            "{message}"
        );
        assert!(!text(&checked.stdout).contains("(valid)"));
    }
}

/// See: issue 13 part 3 ("check-config prints the tokens by name and role, never the secret").
#[test]
fn check_config_lists_tokens_by_name_and_role_and_never_prints_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alice");
    std::fs::write(&file, "alice-s3cret-0123\n").unwrap();
    let config = write_config(
        &dir,
        &format!(
            "[http]\nlisten = \"0.0.0.0:9732\"\nauth_token = \"legacy-s3cret-0123\"\n\
             [[http.tokens]]\nname = \"ops-alice\"\nrole = \"operate\"\ntoken_file = \"{}\"\n\
             [[http.tokens]]\nname = \"dashboard\"\nrole = \"read\"\ntoken = \"dash-s3cret-012345\"\n",
            file.display()
        ),
    );
    let out = rq_retryd(&config, &["check-config"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = shown
        .lines()
        .find(|l| l.starts_with("http.auth"))
        .unwrap_or_else(|| panic!("no http.auth line: {shown}"));
    assert!(line.contains("auth_token (role operate"), "{line}");
    assert!(
        line.contains(&format!("ops-alice (role operate, from {}", file.display())),
        "{line}"
    );
    assert!(line.contains("dashboard (role read"), "{line}");
    assert!(!shown.contains("s3cret"), "a secret was printed: {shown}");
}

/// See: issue 19 ("token checks in config"): a token file with a BOM, or a short token on a
/// non-loopback listen, is refused by `check-config` and `run` with the same located message;
/// a valid config whose file holds a secret others can read passes with a warning that names
/// the file and `chmod 600`.
#[test]
fn check_config_and_run_refuse_a_bom_or_short_token_and_warn_about_a_readable_secret() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let bom = dir.path().join("bom-token");
    std::fs::write(&bom, "\u{feff}0123456789abcdef0123\n").unwrap();
    for (http, says) in [
        (
            format!(
                "[http]\nlisten = \"127.0.0.1:1\"\n[[http.tokens]]\nname = \"dash\"\nrole = \"read\"\ntoken_file = \"{}\"\n",
                bom.display()
            ),
            format!("{}:1:1: the token (the first line) holds a byte-order mark", bom.display()),
        ),
        (
            "[http]\nlisten = \"0.0.0.0:1\"\nauth_token = \"short-s3cret\"\n".to_string(),
            "http.auth_token: the token is 12 bytes".to_string(),
        ),
    ] {
        let config = write_config(
            &dir,
            &format!("[redis]\nurl = \"redis://127.0.0.1:1/0\"\n{http}"),
        );
        let checked = rq_retryd(&config, &["check-config"]);
        assert_eq!(checked.status.code(), Some(2), "{}", text(&checked.stderr));
        // A `run` that accepted the token would wait for Redis forever: give it 20 s.
        let (code, ran) = support::http::run_to_exit(&std::fs::read_to_string(&config).unwrap());
        assert_eq!(code, 2, "{ran}");
        let message = text(&checked.stderr);
        assert!(message.contains(&says), "{message}");
        let located = message.lines().next().unwrap().split_once(": ").unwrap().1;
        assert!(ran.contains(located), "run refuses the same way:\n{ran}");
        assert!(!message.contains("s3cret") && !message.contains("0123"), "{message}");
    }

    let config = write_config(
        &dir,
        "[redis]\nurl = \"redis://:hunter2@127.0.0.1:1/0\"\n[http]\nauth_token = \"a-s3cret-long-enough\"\n",
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let checked = rq_retryd(&config, &["check-config"]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked.stderr));
    let warning = text(&checked.stderr);
    assert!(
        warning.contains(&format!(
            "warning: {} holds an API token and a Redis URL with a password",
            config.display()
        )) && warning.contains(&format!("chmod 600 {}", config.display())),
        "{warning}"
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let checked = rq_retryd(&config, &["check-config"]);
    assert_eq!(text(&checked.stderr), "", "no warning for a private file");
}

/// See: issue 19 ("text logs escape control characters"): a job id from Redis with a newline
/// and an escape sequence is logged on its own line, escaped, and forges no line.
#[test]
fn a_job_id_with_a_newline_forges_no_log_line() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let id = "a\nINFO forged line \u{1b}[2J";
    FailedJob::new(id).write(&mut con);
    let (report, log) = once_retrying_everything(&server);
    assert_eq!(report["requeued"], 1, "{report}");
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r"job_id=a\nINFO forged line \u{1b}[2J")),
        "the id is logged, escaped:\n{log}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("INFO forged")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "{log:?}");
}
