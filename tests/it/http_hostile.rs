//! Hostile HTTP input (issue 6): slow clients are disconnected, oversized and malformed
//! requests get 4xx answers, and the daemon keeps serving everyone else.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::http::{Daemon, DaemonConfig};
use support::RedisServer;

fn addr(daemon: &Daemon) -> String {
    daemon.base_url().trim_start_matches("http://").to_string()
}

/// Sends `raw` and returns the status code of the answer (0 if the connection closed first).
fn raw_status(daemon: &Daemon, raw: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr(daemon)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(raw);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected_and_others_are_served() {
    let server = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&server.url(), ""));
    let mut slow = TcpStream::connect(addr(&daemon)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .unwrap();
    let opened = Instant::now();

    // Meanwhile everyone else is served at once.
    let t = Instant::now();
    assert_eq!(daemon.get("/healthz").status, 200);
    assert!(t.elapsed() < Duration::from_secs(2));

    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = slow.read(&mut buf).unwrap_or(0);
    let waited = opened.elapsed();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "a slow client gets a timeout or a closed connection, got {answer:?}"
    );
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(15),
        "disconnected after {waited:?}"
    );
    assert_eq!(daemon.get("/readyz").status, 200, "the daemon is unharmed");
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

#[test]
fn oversized_and_malformed_requests_get_4xx_never_5xx() {
    let server = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&server.url(), ""));
    let huge_uri = format!(
        "GET /api/v1/jobs/status/{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "a".repeat(200_000)
    );
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(1_000_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a 200 KB path", huge_uri.into_bytes()),
        ("a 1 MB header", huge_header.into_bytes()),
        ("garbage instead of HTTP", b"\x00\x01\x02 not http at all\r\n\r\n".to_vec()),
        ("a NUL in the job id", b"GET /api/v1/jobs/status/a%00b HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec()),
        ("invalid UTF-8 in the job id", b"POST /api/v1/jobs/failed/%ff%fe/retry HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()),
        ("a bad query", b"GET /api/v1/jobs/failed?limit=%zz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec()),
        ("a declared 10 MB body", b"POST /api/v1/supervisor/scan HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n".to_vec()),
    ];
    for (what, raw) in cases {
        let status = raw_status(&daemon, &raw);
        assert!(
            status == 0 || (400..500).contains(&status),
            "{what}: answered {status}"
        );
    }
    assert_eq!(
        daemon.get("/healthz").status,
        200,
        "the daemon is alive after all of them"
    );
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}
