//! `rediss://` (issue 4): rq-retryd verifies the server against the configured CA, supports
//! mutual TLS, and refuses a server it cannot verify. Certificates are made with openssl here.

use crate::support;

use std::path::Path;
use std::process::Command;

use redis::Commands;
use support::jobs::FailedJob;
use support::{binary, free_port, RedisServer};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (./scripts/test.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=rq-retryd test CA",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ],
        );
    }
}

fn tls_server(dir: &Path, auth_clients: bool) -> (RedisServer, u16) {
    let tls_port = std::cell::Cell::new(0);
    let p = |f: &str| dir.join(f).display().to_string();
    let auth = if auth_clients { "yes" } else { "no" };
    let server = RedisServer::start_each(|| {
        tls_port.set(free_port());
        [
            "--tls-port",
            &tls_port.get().to_string(),
            "--tls-cert-file",
            &p("server.crt"),
            "--tls-key-file",
            &p("server.key"),
            "--tls-ca-cert-file",
            &p("ca.crt"),
            "--tls-auth-clients",
            auth,
        ]
        .map(String::from)
        .to_vec()
    });
    (server, tls_port.get())
}

fn once(dir: &Path, body: &str) -> std::process::Output {
    let path = dir.join("config.toml");
    std::fs::write(&path, body).unwrap();
    Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("once")
        .arg("--json")
        .env_remove("RQ_RETRYD_REDIS_URL")
        .output()
        .unwrap()
}

const POLICY: &str =
    "[[policy]]\nname = \"now\"\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n";

#[test]
fn once_requeues_over_tls_verified_by_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (server, tls_port) = tls_server(dir.path(), false);
    let mut con = server.conn();
    FailedJob::new("over-tls").write(&mut con);
    let ca = dir.path().join("ca.crt");
    let out = once(
        dir.path(),
        &format!(
            "[redis]\nurl = \"rediss://127.0.0.1:{tls_port}/0\"\ntls_ca_file = \"{}\"\n{POLICY}",
            ca.display()
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["over-tls"]);
}

#[test]
fn mutual_tls_presents_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (server, tls_port) = tls_server(dir.path(), true);
    let mut con = server.conn();
    FailedJob::new("mtls").write(&mut con);
    let p = |f: &str| dir.path().join(f).display().to_string();
    let base = format!(
        "[redis]\nurl = \"rediss://127.0.0.1:{tls_port}/0\"\ntls_ca_file = \"{}\"\n",
        p("ca.crt")
    );

    let without = once(dir.path(), &format!("{base}{POLICY}"));
    assert_eq!(
        without.status.code(),
        Some(1),
        "a server requiring client certificates must refuse us without one"
    );

    let with = once(
        dir.path(),
        &format!(
            "{base}tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n{POLICY}",
            p("client.crt"),
            p("client.key")
        ),
    );
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["mtls"]);
}

#[test]
fn a_server_that_cannot_be_verified_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (server, tls_port) = tls_server(dir.path(), false);
    let mut con = server.conn();
    FailedJob::new("stays").write(&mut con);
    // No CA configured: the system roots do not know our test CA.
    let out = once(
        dir.path(),
        &format!("[redis]\nurl = \"rediss://127.0.0.1:{tls_port}/0\"\n{POLICY}"),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Option<f64> = con.zscore("rq:failed:default", "stays").unwrap();
    assert!(left.is_some());
}

#[test]
fn tls_files_without_a_rediss_url_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), "x").unwrap();
    let out = once(
        dir.path(),
        &format!(
            "[redis]\nurl = \"redis://127.0.0.1:1/0\"\ntls_ca_file = \"{}\"\n",
            dir.path().join("ca.crt").display()
        ),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(":3:15: redis.tls_ca_file: TLS files need a rediss:// url"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A platform (Heroku's Redis) hands the app `REDIS_URL=rediss://…` for a server with a
/// certificate no CA vouches for, and RQ apps add redis-py's `ssl_cert_reqs=none`: the same URL,
/// in the same variable, with no config file, works for rq-retryd, and without the parameter it
/// is refused as before.
#[test]
fn a_platforms_redis_url_with_ssl_cert_reqs_none_connects_without_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (server, tls_port) = tls_server(dir.path(), false);
    let mut con = server.conn();
    FailedJob::new("from-platform").write(&mut con);
    let run = |url: &str| {
        Command::new(binary())
            .args(["once", "--json"])
            .env_remove("RQ_RETRYD_REDIS_URL")
            .env_remove("RQ_RETRYD_CONFIG")
            .env("REDIS_URL", url)
            .output()
            .unwrap()
    };
    let verified = run(&format!("rediss://127.0.0.1:{tls_port}/0"));
    assert_eq!(
        verified.status.code(),
        Some(1),
        "an unverifiable certificate is refused unless the URL says otherwise: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let out = run(&format!(
        "rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=none"
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The embedded defaults' policy waits a minute before the first retry: the job was seen
    // over TLS and decided on, not requeued yet.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["scanned"], 1, "{report}");
    assert_eq!(report["waiting"], 1, "{report}");
}
