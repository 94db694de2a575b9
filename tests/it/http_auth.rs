//! The HTTP API's tokens and listen rules, and its answers while Redis is down, against a real
//! `redis-server`, with a real `rq-retryd run` on a free loopback port driven over real sockets;
//! failed jobs written byte for byte as RQ leaves them (`support::jobs`) or by real RQ
//! (`support::rq`). Each test owns its Redis and its daemon.
//!
//! See: issue 3 (HTTP control surface and Prometheus metrics); split by resource in issue 12.

use crate::support;

use serde_json::json;

use support::api::*;
use support::http::{
    metric, parse_metrics, request_from, run_to_exit, Daemon, DaemonConfig, HANDS_OFF,
};
use support::jobs::{snapshot, FailedJob};
use support::RedisServer;

// ---------------------------------------------------------------------------------------------
// Auth

/// Every route of `src/http/mod.rs` that lives under `/api/`, with a method it serves, but
/// `/api/v1/openapi.json`: the API's description is open so that `/docs` can load it (issue 13).
const API_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/jobs/failed"),
    ("GET", "/api/v1/jobs/failed/groups"),
    ("POST", "/api/v1/jobs/failed/retry-all"),
    ("DELETE", "/api/v1/jobs/failed/clear"),
    ("DELETE", "/api/v1/jobs/failed/j1"),
    ("POST", "/api/v1/jobs/failed/j1/retry"),
    ("GET", "/api/v1/jobs/failed/j1/explain"),
    ("GET", "/api/v1/jobs/status/j1"),
    ("GET", "/api/v1/jobs/stats"),
    ("GET", "/api/v1/tasks/1-1"),
    ("GET", "/api/v1/supervisor"),
    ("POST", "/api/v1/supervisor/pause"),
    ("POST", "/api/v1/supervisor/resume"),
    ("POST", "/api/v1/supervisor/scan"),
    ("GET", "/api/v1/policies"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/whoami"),
];

/// The `n`th loopback address but 127.0.0.1 (every `127.x.y.z` is this host): a client of its
/// own, with its own budget of failed authentications.
fn loopback(n: u8) -> std::net::IpAddr {
    std::net::Ipv4Addr::new(127, 0, 1, n).into()
}

#[test]
fn with_a_token_every_api_route_needs_it_and_health_and_metrics_stay_open() {
    let redis = RedisServer::start();
    let token = "tok-7d1f0c5e2b9a4c3d8e6f";
    let mut config = DaemonConfig::new(&redis.url(), HANDS_OFF);
    config.auth_token = Some(token.into());
    // Ready and scanned once: the lease is taken before the snapshot (see: CI of session 19's
    // stop, where the first beat wrote it between the two snapshots on a loaded machine).
    let daemon = Daemon::start_ready(&config);
    let mut con = redis.conn();
    FailedJob::new("j1").write(&mut con);
    let before = snapshot(&mut con);

    let good = format!("Bearer {token}");
    let basic = format!("Basic {token}");
    let wrong_headers: [Vec<(&str, &str)>; 5] = [
        vec![],
        vec![("Authorization", "Bearer not-the-token")],
        vec![("Authorization", basic.as_str())],
        vec![("Authorization", token)],
        vec![("Authorization", "Bearer ")],
    ];
    for (i, (method, path)) in API_ROUTES.iter().enumerate() {
        // One client per route, so that no client goes over its budget of failures (429).
        let client = loopback(i as u8 + 1);
        for headers in &wrong_headers {
            let r = request_from(client, daemon.addr, method, path, headers, b"");
            assert_eq!(r.status, 401, "{method} {path} {headers:?}: {}", r.text());
            r.expect_error(401, "unauthorized");
        }
    }
    assert_eq!(snapshot(&mut con), before, "a 401 acts on nothing");
    let state = daemon
        .raw(
            "GET",
            "/api/v1/supervisor",
            &[("Authorization", &good)],
            b"",
        )
        .expect(200);
    assert_eq!(state["paused"], false, "an unauthorized pause was ignored");

    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/docs",
    ] {
        let r = daemon.raw("GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path} without a token: {}", r.text());
    }
    // With the token the routes answer (anything but 401).
    for (method, path) in API_ROUTES {
        let r = daemon.raw(method, path, &[("Authorization", &good)], b"");
        assert_ne!(
            r.status,
            401,
            "{method} {path} with the token: {}",
            r.text()
        );
        assert!(r.status < 500, "{method} {path}: {} {}", r.status, r.text());
    }
}

/// See: issue 19 ("whoami"): the caller's token name and role; `anonymous`/`operate` without
/// tokens; behind the same auth as the other routes, and in the OpenAPI document.
#[test]
fn whoami_names_the_callers_token_and_role() {
    let redis = RedisServer::start();
    let tokens = r#"
[[http.tokens]]
name = "dashboard"
role = "read"
token = "dashboard-secret-5b1e"
"#;
    let mut config = DaemonConfig::new(&redis.url(), &format!("{HANDS_OFF}\n{tokens}"));
    config.auth_token = Some("operator-secret-9c2d".into());
    let daemon = Daemon::start(&config);
    let who = |token: &str| {
        daemon
            .raw(
                "GET",
                "/api/v1/whoami",
                &[("Authorization", &format!("Bearer {token}"))],
                b"",
            )
            .expect(200)
    };
    assert_eq!(
        who("dashboard-secret-5b1e"),
        json!({"name": "dashboard", "role": "read", "via": "token"})
    );
    assert_eq!(
        who("operator-secret-9c2d"),
        json!({"name": "auth_token", "role": "operate", "via": "token"})
    );
    daemon
        .raw("GET", "/api/v1/whoami", &[], b"")
        .expect_error(401, "unauthorized");
    let doc = daemon
        .raw("GET", "/api/v1/openapi.json", &[], b"")
        .expect(200);
    let op = &doc["paths"]["/api/v1/whoami"]["get"];
    assert!(op["responses"]["200"].is_object(), "{op}");
    assert!(op["responses"]["401"].is_object(), "{op}");
    assert!(op["responses"]["429"].is_object(), "{op}");

    let open = Daemon::start(&DaemonConfig::new(&redis.url(), HANDS_OFF));
    assert_eq!(
        open.get("/api/v1/whoami").expect(200),
        json!({"name": "anonymous", "role": "operate", "via": "none"})
    );
}

/// See: issue 19 ("guessing is slow"): after a burst of failed authentications an address gets
/// 429 with Retry-After for every token it presents, even the right one (so a right guess
/// cannot be told from a wrong one, nor used at once), and still 401 without a token; another
/// address is not affected; each failure is counted, and logged at most once a minute per address, never
/// with the token.
#[test]
fn guessing_tokens_gets_429_after_a_burst_per_client_address() {
    let redis = RedisServer::start();
    let token = "tok-3f9a1c7e5b2d4a6c8e0f";
    let mut config = DaemonConfig::new(&redis.url(), HANDS_OFF);
    config.auth_token = Some(token.into());
    let daemon = Daemon::start_ready(&config);
    let good = format!("Bearer {token}");
    let guesser = loopback(1);

    let started = std::time::Instant::now();
    let (mut refused, mut limited) = (0u32, 0u32);
    for i in 0..5_000 {
        let guess = format!("Bearer guess-{i:05}");
        let r = request_from(
            guesser,
            daemon.addr,
            "GET",
            "/api/v1/jobs/stats",
            &[("Authorization", &guess)],
            b"",
        );
        match r.status {
            401 => refused += 1,
            429 => {
                limited += 1;
                r.expect_error(429, "too_many_auth_failures");
                let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=6).contains(&wait), "Retry-After {wait}");
            }
            other => panic!("guess {i}: HTTP {other}: {}", r.text()),
        }
    }
    // A burst of 10, then one every 6 s.
    let allowed = 10 + started.elapsed().as_secs() as u32 / 6 + 1;
    assert!(
        (10..=allowed).contains(&refused),
        "{refused} answered 401 (at most {allowed}), {limited} answered 429"
    );

    // The right token from the guessing address: still 429 until its time has passed.
    let r = request_from(
        guesser,
        daemon.addr,
        "GET",
        "/api/v1/jobs/stats",
        &[("Authorization", &good)],
        b"",
    );
    r.expect_error(429, "too_many_auth_failures");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    // Without a token it guesses nothing: the usual 401 (which the console needs to sign in).
    request_from(guesser, daemon.addr, "GET", "/api/v1/jobs/stats", &[], b"")
        .expect_error(401, "unauthorized");
    // Another address, the right token: let in at once.
    request_from(
        loopback(2),
        daemon.addr,
        "GET",
        "/api/v1/jobs/stats",
        &[("Authorization", &good)],
        b"",
    )
    .expect(200);

    let samples = parse_metrics(&daemon.get("/metrics").text());
    let count = |reason: &str| {
        metric(
            &samples,
            "rq_retryd_auth_failures_total",
            &[("reason", reason)],
        )
        .unwrap()
    };
    assert_eq!(count("invalid"), f64::from(refused));
    assert_eq!(count("limited"), f64::from(limited + 1));
    assert_eq!(count("missing"), 1.0);

    std::thread::sleep(std::time::Duration::from_secs(wait));
    request_from(
        guesser,
        daemon.addr,
        "GET",
        "/api/v1/jobs/stats",
        &[("Authorization", &good)],
        b"",
    )
    .expect(200);

    let (_, log) = daemon.stop();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authentication failed"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() <= 2,
        "one line per address per minute, not one per guess: {} lines\n{log}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("WARN") && l.contains("127.0.1.1")),
        "{lines:?}"
    );
    assert!(
        !log.contains("guess-") && !log.contains(token) && !log.contains("tok-"),
        "a token, or a guess, is in the log:\n{log}"
    );
}

#[test]
fn a_non_loopback_listen_without_a_token_refuses_to_start_with_exit_2() {
    let redis = RedisServer::start();
    let port = support::free_port();
    let toml = format!(
        "[redis]\nurl = \"{}\"\n[http]\nlisten = \"0.0.0.0:{port}\"\n{HANDS_OFF}",
        redis.url()
    );
    let (code, log) = run_to_exit(&toml);
    assert_eq!(code, 2, "exit code; output:\n{log}");
    assert!(
        log.contains("non-loopback") && log.contains("auth_token"),
        "the message says why:\n{log}"
    );
    assert!(
        log.contains("http.listen") || log.contains("listen"),
        "names the key:\n{log}"
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        support::http::try_request(addr, "GET", "/healthz", &[], b"").is_err(),
        "nothing listens"
    );
}

#[test]
fn a_token_from_auth_token_file_guards_a_non_loopback_listen_and_is_never_logged() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let token = "Zq8fileToken4e1b9c7d2a6f";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut config = DaemonConfig::new(&redis.url(), SLOW_POLICIES);
    config.listen_host = Some("0.0.0.0".into());
    config.auth_token_file = Some(token_file.clone());
    config.log_level = "trace".into();
    let daemon = Daemon::start_ready(&config);
    let mut con = redis.conn();
    FailedJob::new("j1").write(&mut con);
    FailedJob::new("j2").write(&mut con);

    daemon
        .raw("GET", "/api/v1/jobs/stats", &[], b"")
        .expect_error(401, "unauthorized");
    daemon
        .raw(
            "GET",
            "/api/v1/jobs/stats",
            &[("Authorization", "Bearer Zq8wrong")],
            b"",
        )
        .expect_error(401, "unauthorized");
    // Exercise the paths that log: manual actions, switches, a scan.
    assert_eq!(
        daemon.get("/api/v1/jobs/stats").expect(200)["failed_count"],
        2
    );
    daemon.post("/api/v1/jobs/failed/j1/retry").expect(200);
    daemon.delete("/api/v1/jobs/failed/j2").expect(200);
    daemon.post("/api/v1/supervisor/pause").expect(200);
    daemon.post("/api/v1/supervisor/resume").expect(200);
    daemon.scan();

    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "SIGTERM exits 0:\n{log}");
    assert!(
        log.contains("rq-retryd starting") && log.contains("manual action"),
        "the log was captured (else the next check proves nothing):\n{log}"
    );
    assert!(
        !log.contains(token) && !log.contains("Zq8"),
        "the token appears in the log:\n{log}"
    );
    // See: issue 19: the token file can be read by others (written with the umask's 0644).
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains(&format!("{} holds the API token", token_file.display()))
            && l.contains("chmod 600")),
        "run warns about a token file others can read:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Redis down

#[test]
fn readyz_and_api_routes_answer_503_once_redis_is_gone() {
    let (redis, daemon) = start(HANDS_OFF);
    let mut con = redis.conn();
    FailedJob::new("j1").write(&mut con);
    drop(con);
    assert_eq!(
        daemon.get("/readyz").expect(200),
        json!({"status": "ready"})
    );
    kill_redis(&redis);

    daemon.get("/readyz").expect_error(503, "redis_unavailable");
    for (method, path) in [
        ("GET", "/api/v1/jobs/failed"),
        ("GET", "/api/v1/jobs/stats"),
        ("POST", "/api/v1/jobs/failed/j1/retry"),
        ("POST", "/api/v1/jobs/failed/retry-all"),
        ("GET", "/api/v1/audit"),
    ] {
        let r = daemon.call(method, path);
        assert_eq!(r.status, 503, "{method} {path}: {}", r.text());
        r.expect_error(503, "redis_unavailable");
    }
    // The process itself is alive.
    assert_eq!(daemon.get("/healthz").expect(200), json!({"status": "ok"}));
}

#[test]
fn a_daemon_started_before_redis_answers_503_until_redis_is_up() {
    let port = support::free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let daemon = Daemon::start(&DaemonConfig::new(&url, HANDS_OFF));

    daemon.get("/healthz").expect(200);
    daemon.get("/readyz").expect_error(503, "redis_unavailable");
    for (method, path) in [
        ("GET", "/api/v1/jobs/failed"),
        ("GET", "/api/v1/jobs/stats"),
        ("GET", "/api/v1/jobs/status/j1"),
        ("POST", "/api/v1/jobs/failed/j1/retry"),
        ("DELETE", "/api/v1/jobs/failed/clear"),
        ("GET", "/api/v1/audit"),
    ] {
        daemon
            .call(method, path)
            .expect_error(503, "redis_unavailable");
    }
    let state = daemon.get("/api/v1/supervisor").expect(200);
    assert_eq!(state["redis_connected"], false, "{state}");

    // Now Redis comes up on the configured port: the daemon connects by itself.
    let dir = tempfile::tempdir().unwrap();
    let mut server = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start redis-server");
    struct KillOnDrop<'a>(&'a mut std::process::Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = KillOnDrop(&mut server);
    daemon.wait_ready();
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    FailedJob::new("j1").write(&mut con);
    let stats = daemon.get("/api/v1/jobs/stats").expect(200);
    assert_eq!(stats["failed_count"], 1, "{stats}");
    daemon.get("/api/v1/jobs/failed").expect(200);
    assert_eq!(
        daemon.get("/api/v1/supervisor").expect(200)["redis_connected"],
        true
    );
}

/// A Redis with no queues at all (a fresh install): stats are empty, not an error.
#[test]
fn stats_of_a_redis_without_queues_are_empty_not_an_error() {
    let (_redis, daemon) = start(HANDS_OFF);
    let list = daemon.get("/api/v1/jobs/failed").expect(200);
    assert_eq!(list["total"], 0, "{list}");
    let groups = daemon.get("/api/v1/jobs/failed/groups").expect(200);
    assert_eq!(groups["groups"], json!([]), "{groups}");
    let stats = daemon.get("/api/v1/jobs/stats").expect(200);
    assert_eq!(stats, json!({"failed_count": 0, "queues": {}}));
}
