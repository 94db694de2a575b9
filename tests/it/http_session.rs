//! The browser session a person expects (issue 19): a token is exchanged once for a cookie
//! (`POST /api/v1/session`) that serves every request of that browser, on every instance on the
//! same Redis, until sign-out or expiry; the cookie is HttpOnly and SameSite=Strict, Redis keeps
//! no secret, and a session whose token is gone from the config is refused. Against a real
//! `redis-server` and real `rq-retryd run`s.

use crate::support;

use redis::Commands;

use support::api::*;
use support::http::{Daemon, DaemonConfig, Response};
use support::RedisServer;

const TOKENS: &str = r#"
[[http.tokens]]
name = "ops-alice"
role = "operate"
token = "alice-0123456789abcdef"

[[http.tokens]]
name = "viewer"
role = "read"
token = "viewer-0123456789abcdef"
"#;

fn config(redis: &RedisServer, tokens: &str) -> DaemonConfig {
    let mut config = DaemonConfig::new(&redis.url(), &format!("{SLOW_POLICIES}\n{tokens}"));
    config.auth_token = Some("harness-0123456789abcdef".into());
    config
}

fn daemon(redis: &RedisServer, tokens: &str) -> Daemon {
    Daemon::start_ready(&config(redis, tokens))
}

/// Another instance on the same Redis: a standby, ready once its first observing pass has
/// built its index.
fn standby(redis: &RedisServer, tokens: &str) -> Daemon {
    let daemon = Daemon::start(&config(redis, tokens));
    daemon.wait_until("the standby's index is built", |d| {
        !d.get("/api/v1/supervisor").expect(200)["index_as_of"].is_null()
    });
    daemon
}

/// Signs in with `token`; the answer and the cookie (`name=value`).
fn sign_in(daemon: &Daemon, token: &str, extra: &[(&str, &str)]) -> (Response, String) {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    headers.extend_from_slice(extra);
    let answer = daemon.raw("POST", "/api/v1/session", &headers, b"");
    let cookie = answer
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no cookie: {}", answer.text()))
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (answer, cookie)
}

fn with_cookie(daemon: &Daemon, method: &str, path: &str, cookie: &str) -> Response {
    daemon.raw(method, path, &[("Cookie", cookie)], b"")
}

#[test]
fn a_token_is_exchanged_for_a_cookie_that_serves_every_request_until_sign_out() {
    let redis = RedisServer::start();
    let daemon = daemon(&redis, TOKENS);
    let mut con = redis.conn();
    job("j1", "default", "app.tasks.charge", "ConnectionError", 100).write(&mut con);
    daemon.scan();

    // Without a credential: 401.
    with_cookie(
        &daemon,
        "GET",
        "/api/v1/jobs/failed",
        "rq_retryd_session=nope",
    )
    .expect_error(401, "unauthorized");

    let (answer, cookie) = sign_in(&daemon, "alice-0123456789abcdef", &[]);
    let body = answer.expect(200);
    assert_eq!(body["name"], "ops-alice");
    assert_eq!(body["role"], "operate");
    let set_cookie = answer.header("set-cookie").unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} in {set_cookie}"
        );
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let secret = cookie.strip_prefix("rq_retryd_session=").unwrap();
    assert_eq!(secret.len(), 64, "{cookie}");

    // The cookie alone reads and writes (any number of tabs send the same cookie).
    let listed = with_cookie(&daemon, "GET", "/api/v1/jobs/failed", &cookie).expect(200);
    assert_eq!(ids_in(&listed["jobs"]), strings(&["j1"]));
    with_cookie(&daemon, "POST", "/api/v1/failed-jobs/j1/retry", &cookie).expect(200);
    let audit = with_cookie(&daemon, "GET", "/api/v1/audit", &cookie).expect(200);
    assert_eq!(audit["entries"][0]["who"], "ops-alice@127.0.0.1", "{audit}");

    // Redis keeps no secret: neither the cookie nor the token is in any key or value.
    let keys: Vec<String> = con.keys("rq:retryd:session:*").unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].contains(secret));
    let stored: String = con.get(&keys[0]).unwrap();
    assert!(
        !stored.contains(secret) && !stored.contains("alice-0123"),
        "{stored}"
    );
    let ttl: i64 = con.ttl(&keys[0]).unwrap();
    assert!(ttl > 43_000 && ttl <= 43_200, "{ttl}");

    // Signing out (no credential needed) ends it everywhere and clears the cookie.
    let out = with_cookie(&daemon, "DELETE", "/api/v1/session", &cookie);
    assert_eq!(out.expect(200)["signed_out"], true);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    with_cookie(&daemon, "GET", "/api/v1/jobs/failed", &cookie).expect_error(401, "unauthorized");
    let keys: Vec<String> = con.keys("rq:retryd:session:*").unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[test]
fn a_read_session_reads_only_and_a_session_needs_its_token_configured_still() {
    let redis = RedisServer::start();
    let first = daemon(&redis, TOKENS);
    let mut con = redis.conn();
    job("j1", "default", "app.tasks.charge", "ConnectionError", 100).write(&mut con);
    first.scan();

    let (_, viewer) = sign_in(&first, "viewer-0123456789abcdef", &[]);
    with_cookie(&first, "GET", "/api/v1/jobs/failed", &viewer).expect(200);
    with_cookie(&first, "POST", "/api/v1/failed-jobs/j1/retry", &viewer)
        .expect_error(403, "forbidden");
    assert!(in_failed(&mut con, "default", "j1"));
    let (_, alice) = sign_in(&first, "alice-0123456789abcdef", &[]);
    // A wrong token signs nobody in; a cookie is no way to sign in again.
    first
        .raw(
            "POST",
            "/api/v1/session",
            &[("Authorization", "Bearer wrong")],
            b"",
        )
        .expect_error(401, "unauthorized");
    with_cookie(&first, "POST", "/api/v1/session", &alice).expect_error(400, "token_required");

    // Another instance on the same Redis knows the sessions (a load balancer may send the
    // next request there)...
    let second = standby(&redis, TOKENS);
    with_cookie(&second, "GET", "/api/v1/jobs/failed", &alice).expect(200);
    // ...but one whose config no longer has the token (or gives it another role) refuses it.
    let demoted = TOKENS.replace(
        "name = \"ops-alice\"\nrole = \"operate\"",
        "name = \"ops-alice\"\nrole = \"read\"",
    );
    assert_ne!(demoted, TOKENS);
    let third = standby(&redis, &demoted);
    with_cookie(&third, "GET", "/api/v1/jobs/failed", &alice).expect_error(401, "unauthorized");
    let without_viewer = TOKENS
        .split("[[http.tokens]]\nname = \"viewer\"")
        .next()
        .unwrap();
    let fourth = standby(&redis, without_viewer);
    with_cookie(&fourth, "GET", "/api/v1/jobs/failed", &viewer).expect_error(401, "unauthorized");
    with_cookie(&fourth, "GET", "/api/v1/jobs/failed", &alice).expect(200);
}

#[test]
fn the_cookie_is_secure_when_the_page_came_over_tls() {
    let redis = RedisServer::start();
    let daemon = daemon(&redis, TOKENS);
    let own_https = format!("https://{}", daemon.addr);
    for header in [
        ("X-Forwarded-Proto", "https"),
        ("Origin", own_https.as_str()),
    ] {
        let (answer, _) = sign_in(&daemon, "alice-0123456789abcdef", &[header]);
        let set_cookie = answer.header("set-cookie").unwrap();
        assert!(set_cookie.contains("; Secure"), "{header:?}: {set_cookie}");
    }
}

/// See: issue 19: identity can come from a reverse proxy a team already runs for single
/// sign-on, trusted only from the proxy's own address.
#[test]
fn a_trusted_proxys_user_header_names_the_caller_and_no_one_else_can_send_it() {
    use support::http::request_from;
    let redis = RedisServer::start();
    let proxy = r#"
[http.proxy_identity]
header = "X-Auth-Request-Email"
trusted_proxies = ["127.0.0.2", "10.0.0.0/8"]
operate = ["alice@example.com"]
read = ["*@example.com"]
"#;
    let mut config = config(&redis, TOKENS);
    // A table of its own: after the [[policy]] tables is as good a place as any.
    config.policies = format!("{}\n{proxy}", config.policies);
    let daemon = Daemon::start_ready(&config);
    let mut con = redis.conn();
    for id in ["j1", "j2"] {
        job(id, "default", "app.tasks.charge", "ConnectionError", 100).write(&mut con);
    }
    daemon.scan();
    let proxy_ip: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let as_user = |user: &str, method: &str, path: &str| {
        request_from(
            proxy_ip,
            daemon.addr,
            method,
            path,
            &[("X-Auth-Request-Email", user)],
            b"",
        )
    };

    // From the proxy: alice operates, bob reads, eve has no role.
    as_user("alice@example.com", "POST", "/api/v1/failed-jobs/j1/retry").expect(200);
    assert!(!in_failed(&mut con, "default", "j1"));
    let audit = as_user("bob@example.com", "GET", "/api/v1/audit").expect(200);
    assert_eq!(
        audit["entries"][0]["who"], "alice@example.com@127.0.0.2",
        "{audit}"
    );
    as_user("bob@example.com", "POST", "/api/v1/failed-jobs/j2/retry")
        .expect_error(403, "forbidden");
    as_user("eve@evil.example", "GET", "/api/v1/jobs/failed").expect_error(403, "no_role");
    assert!(in_failed(&mut con, "default", "j2"));

    // The same header from any other address is refused, whatever it names, and nothing is done.
    for source in ["127.0.0.1", "127.0.0.3"] {
        let answer = request_from(
            source.parse().unwrap(),
            daemon.addr,
            "POST",
            "/api/v1/failed-jobs/j2/retry",
            &[("X-Auth-Request-Email", "alice@example.com")],
            b"",
        );
        answer.expect_error(403, "untrusted_proxy");
    }
    assert!(in_failed(&mut con, "default", "j2"));
    assert!(daemon.log().contains("not a trusted proxy"), "logged");
    // Without the header, the tokens still work from anywhere.
    daemon.post("/api/v1/failed-jobs/j2/retry").expect(200);
}
