//! No web page can act, no rebinding can read (issue 19): against a real daemon on a loopback
//! listen with no token (the default), a page of another site cannot make the operator's browser
//! change anything (cross-site form posts are answered 403 `cross_site` and no handler runs), a
//! page reached through a rebound DNS name reads and deletes nothing (421 `host_not_allowed`),
//! and the pages cannot be framed nor the answers cached or sniffed. Scripts that send neither
//! `Origin` nor `Sec-Fetch-Site` (curl, Prometheus) work as before.
//!
//! See: issue 19.

use crate::support;

use redis::Commands;
use serde_json::Value;

use support::api::job;
use support::http::{Daemon, DaemonConfig, Response, HANDS_OFF};
use support::RedisServer;

/// The three body types an HTML form can send to another site without a CORS preflight.
const FORM_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "text/plain",
];

/// The text every seeded job's failure holds (`job(...)` writes "<id> went wrong").
const FAILURE_TEXT: &str = "went wrong";

/// A daemon that also answers for `rq.test`, with failed jobs `j1`..`j4` on `default`, indexed.
fn seeded() -> (RedisServer, Daemon) {
    let redis = RedisServer::start();
    let mut config = DaemonConfig::new(&redis.url(), HANDS_OFF);
    config.http_extra = "allowed_hosts = [\"rq.test\"]\n".into();
    let daemon = Daemon::start_ready(&config);
    let mut con = redis.conn();
    for (i, id) in ["j1", "j2", "j3", "j4"].into_iter().enumerate() {
        job(
            id,
            "default",
            "app.tasks.work",
            "ConnectionError",
            100 + i as i64,
        )
        .write(&mut con);
    }
    daemon.scan();
    (redis, daemon)
}

/// Everything a write could change: the failed registry, the queue, the job hashes, the
/// pause switch, the audit, and how often a scan was asked for (the handler logs each).
#[derive(Debug, PartialEq)]
struct Observed {
    failed: Vec<String>,
    queued: Vec<String>,
    jobs: Vec<bool>,
    paused: Value,
    audit_entries: usize,
    scans_requested: usize,
}

fn observe(redis: &RedisServer, daemon: &Daemon) -> Observed {
    let mut con = redis.conn();
    let mut failed: Vec<String> = con.zrange("rq:failed:default", 0, -1).unwrap();
    failed.sort();
    let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
    let jobs = ["j1", "j2", "j3", "j4"]
        .iter()
        .map(|id| con.exists(format!("rq:job:{id}")).unwrap())
        .collect();
    Observed {
        failed,
        queued,
        jobs,
        paused: daemon.get("/api/v1/supervisor").expect(200)["paused"].clone(),
        audit_entries: daemon.get("/api/v1/audit").expect(200)["entries"]
            .as_array()
            .expect("audit entries")
            .len(),
        scans_requested: daemon.log().matches("scan requested").count(),
    }
}

/// Every write of the API, as `(method, target)`.
const WRITES: [(&str, &str); 7] = [
    ("POST", "/api/v1/jobs/failed/retry-all"),
    ("POST", "/api/v1/jobs/failed/j1/retry"),
    ("DELETE", "/api/v1/jobs/failed/j2"),
    ("DELETE", "/api/v1/jobs/failed/clear"),
    ("POST", "/api/v1/supervisor/pause"),
    ("POST", "/api/v1/supervisor/resume"),
    ("POST", "/api/v1/supervisor/scan"),
];

fn own_origin(daemon: &Daemon) -> String {
    daemon.base_url()
}

#[test]
fn cross_site_form_posts_to_every_write_are_refused_and_change_nothing() {
    let (redis, daemon) = seeded();
    let before = observe(&redis, &daemon);
    assert_eq!(before.failed.len(), 4, "{before:?}");
    let origin = ("Origin", "http://evil.example");
    let cross = ("Sec-Fetch-Site", "cross-site");
    let senders: [&[(&str, &str)]; 4] = [
        &[origin],
        &[cross],
        &[origin, cross],
        &[("Origin", "null"), cross],
    ];
    for (method, target) in WRITES {
        for content_type in FORM_TYPES {
            for sender in senders {
                let mut headers = sender.to_vec();
                headers.push(("Content-Type", content_type));
                let answer = daemon.raw(method, target, &headers, b"confirm=yes");
                answer.expect_error(403, "cross_site");
                assert_eq!(
                    answer.header("cache-control"),
                    Some("no-store"),
                    "{method} {target}"
                );
            }
        }
    }
    assert_eq!(observe(&redis, &daemon), before, "nothing changed");
}

#[test]
fn the_same_form_posts_from_the_daemons_own_origin_work() {
    let (redis, daemon) = seeded();
    let origin = own_origin(&daemon);
    let same = |method: &str, target: &str, content_type: &str| -> Response {
        let headers = [
            ("Origin", origin.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
            ("Content-Type", content_type),
        ];
        // No body: the API reads none and refuses one (400 unexpected_body, tests/it/http_any_input.rs).
        daemon.raw(method, target, &headers, b"")
    };
    let r = same("POST", "/api/v1/jobs/failed/j1/retry", FORM_TYPES[0]).expect(200);
    assert_eq!(r["status"], "queued", "{r}");
    same("DELETE", "/api/v1/jobs/failed/j2", FORM_TYPES[1]).expect(200);
    let r = same("POST", "/api/v1/jobs/failed/retry-all", FORM_TYPES[2]).expect(200);
    assert_eq!(r["requeued_count"], 2, "j3 and j4: {r}");
    same("POST", "/api/v1/supervisor/pause", FORM_TYPES[0]).expect(200);
    assert_eq!(observe(&redis, &daemon).paused, true);
    same("POST", "/api/v1/supervisor/resume", FORM_TYPES[1]).expect(200);
    assert_eq!(observe(&redis, &daemon).paused, false);
    same("POST", "/api/v1/supervisor/scan", FORM_TYPES[2]).expect(202);
    let after = observe(&redis, &daemon);
    assert_eq!(after.failed, Vec::<String>::new(), "{after:?}");
    assert_eq!(after.queued.len(), 3, "j1, j3, j4 requeued: {after:?}");
    assert_eq!(
        after.jobs,
        [true, false, true, true],
        "j2 deleted: {after:?}"
    );

    // And the clear, on a job failed again.
    let mut con = redis.conn();
    job("j5", "default", "app.tasks.work", "ConnectionError", 5).write(&mut con);
    daemon.scan();
    let r = same("DELETE", "/api/v1/jobs/failed/clear", FORM_TYPES[0]).expect(200);
    assert_eq!(r["deleted_count"], 1, "{r}");
}

#[test]
fn scripts_that_send_no_origin_work_and_a_bare_form_body_is_refused() {
    let (redis, daemon) = seeded();
    // `curl -X POST` / `-X DELETE`: no Origin, no Sec-Fetch-Site, no body, no Content-Type.
    let before = observe(&redis, &daemon);
    for (method, target) in WRITES {
        let answer = daemon.raw(method, target, &[("Content-Type", FORM_TYPES[0])], b"x=1");
        answer.expect_error(415, "form_body");
    }
    assert_eq!(
        observe(&redis, &daemon),
        before,
        "a form body changed nothing"
    );

    daemon.post("/api/v1/jobs/failed/j1/retry").expect(200);
    daemon.delete("/api/v1/jobs/failed/j2").expect(200);
    daemon.post("/api/v1/supervisor/pause").expect(200);
    daemon.post("/api/v1/supervisor/resume").expect(200);
    daemon.post("/api/v1/supervisor/scan").expect(202);
    let json = [("Content-Type", "application/json")];
    let r = daemon
        .raw("POST", "/api/v1/jobs/failed/retry-all", &json, b"")
        .expect(200);
    assert_eq!(r["requeued_count"], 2, "{r}");
    let after = observe(&redis, &daemon);
    assert_eq!(after.failed, Vec::<String>::new(), "{after:?}");
    assert_eq!(after.jobs, [true, false, true, true], "{after:?}");
    let mut con = redis.conn();
    job("j5", "default", "app.tasks.work", "ConnectionError", 5).write(&mut con);
    daemon.scan();
    let r = daemon.delete("/api/v1/jobs/failed/clear").expect(200);
    assert_eq!(r["deleted_count"], 1, "{r}");
}

#[test]
fn a_rebound_host_name_reads_nothing_and_deletes_nothing() {
    let (redis, daemon) = seeded();
    let before = observe(&redis, &daemon);
    let evil = format!("evil.example:{}", daemon.addr.port());
    let reads = [
        ("GET", "/api/v1/jobs/failed"),
        ("GET", "/api/v1/jobs/failed/groups"),
        ("GET", "/api/v1/jobs/status/j1"),
        ("GET", "/ui/"),
        ("GET", "/ui/jobs"),
        ("GET", "/docs"),
        ("DELETE", "/api/v1/jobs/failed/clear"),
        ("DELETE", "/api/v1/jobs/failed/j1"),
    ];
    for host in [evil.as_str(), "EVIL.example", "localhost.evil.example:80"] {
        for (method, target) in reads {
            let answer = daemon.raw(method, target, &[("Host", host)], b"");
            answer.expect_error(421, "host_not_allowed");
            let body = answer.text();
            for secret in [
                "j1",
                "j2",
                FAILURE_TEXT,
                "Traceback",
                "ConnectionError",
                "app.tasks",
            ] {
                assert!(
                    !body.contains(secret),
                    "{method} {target} as {host}: {body}"
                );
            }
        }
    }
    assert_eq!(observe(&redis, &daemon), before, "nothing deleted");
}

#[test]
fn local_hosts_and_listed_names_are_answered() {
    let (_redis, daemon) = seeded();
    let port = daemon.addr.port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("LocalHost.:{port}"),
        format!("rq.test:{port}"),
        "RQ.test".to_string(),
    ] {
        let listing = daemon
            .raw("GET", "/api/v1/jobs/failed", &[("Host", &host)], b"")
            .expect(200);
        assert_eq!(listing["total"], 4, "{host}: {listing}");
        let page = daemon.raw("GET", "/ui/", &[("Host", &host)], b"");
        assert_eq!(page.status, 200, "{host}");
    }
    // A page served as rq.test may act from its own origin.
    let host = format!("rq.test:{port}");
    let origin = format!("http://{host}");
    let headers = [
        ("Host", host.as_str()),
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    daemon
        .raw("POST", "/api/v1/supervisor/pause", &headers, b"")
        .expect(200);
}

#[test]
fn pages_cannot_be_framed_and_answers_are_neither_cached_nor_sniffed() {
    let (_redis, daemon) = seeded();
    for page in ["/ui/", "/ui/jobs", "/docs"] {
        let answer = daemon.get(page);
        assert_eq!(answer.status, 200, "{page}");
        let csp = answer.header("content-security-policy").unwrap_or("");
        assert!(csp.contains("frame-ancestors 'none'"), "{page}: {csp:?}");
        assert_eq!(
            answer
                .headers
                .iter()
                .filter(|(k, _)| k == "content-security-policy")
                .count(),
            1,
            "{page}: one policy"
        );
        assert_eq!(answer.header("x-frame-options"), Some("DENY"), "{page}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    }
    for target in [
        "/api/v1/jobs/failed",
        "/api/v1/supervisor",
        "/api/v1/nope",
        "/healthz",
        "/metrics",
    ] {
        let answer = daemon.get(target);
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{target}");
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{target}"
        );
    }
    let refused = daemon.raw(
        "GET",
        "/api/v1/jobs/failed",
        &[("Host", "evil.example")],
        b"",
    );
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    assert_eq!(refused.header("x-content-type-options"), Some("nosniff"));
}
