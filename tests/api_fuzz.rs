//! Property-based run over the whole API from its own OpenAPI document: schemathesis (pinned in
//! `target/venv-tools`, or `$RQ_RETRYD_VENV_TOOLS`, by `scripts/test.sh`) generates valid and
//! invalid requests for every operation of a live daemon holding failed jobs, and fails on any
//! 5xx. Bounded: a fixed number of examples per operation and a fixed seed.
//!
//! See: issue 3 ("a property/fuzz run over the API from its OpenAPI document finds no 5xx").

mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::http::{Daemon, DaemonConfig};
use support::jobs::FailedJob;
use support::rq::Rq;
use support::RedisServer;

/// Examples per operation; with ~20 operations this keeps the run well under two minutes.
const MAX_EXAMPLES: &str = "30";
const DEADLINE: Duration = Duration::from_secs(240);

const POLICIES: &str = r#"
[[policy]]
name = "slow-retry"
exceptions = ["ConnectionError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "exponential", initial = "1h", multiplier = 2.0, max = "1d" }

[[policy]]
name = "drop-bad-input"
exceptions = ["ValueError"]
action = "purge"
purge_after = "7d"
"#;

fn schemathesis() -> PathBuf {
    let venv = match std::env::var_os("RQ_RETRYD_VENV_TOOLS") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => support::repo_root().join("target").join("venv-tools"),
    };
    let st = venv.join("bin").join("st");
    assert!(
        st.is_file(),
        "schemathesis is missing ({}): run ./scripts/test.sh, which installs it",
        st.display()
    );
    st
}

#[test]
fn schemathesis_finds_no_server_error_in_any_operation() {
    let st = schemathesis();
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    Rq::rq2().seed_failed_jobs(&redis.url(), 200, &["default", "emails", "reports"]);
    let mut con = redis.conn();
    FailedJob::new("corrupt")
        .field("ended_at", b"")
        .write(&mut con);
    FailedJob::new("plain").queue("emails").write(&mut con);

    let report = tempfile::tempdir().unwrap();
    let mut child = Command::new(&st)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", daemon.base_url()))
        .args(["--url", &daemon.base_url()])
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", "20260301"])
        .args(["--workers", "2"])
        .args(["--request-timeout", "60"])
        .args(["--suppress-health-check", "all"])
        .arg("--report-dir")
        .arg(report.path())
        // Its caches (`.schemathesis/`) land in the working directory: keep them out of the repo.
        .current_dir(report.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start schemathesis");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis did not finish within {DEADLINE:?}:\n{}",
                out.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    assert!(
        status.success(),
        "schemathesis failed ({status}):\n{stdout}\n{stderr}\n--- daemon log ---\n{}",
        daemon.log()
    );
    // Not vacuous: it tested the API's operations and generated many cases.
    assert!(
        !stdout.contains("No operations") && stdout.contains("/api/v1/jobs/failed"),
        "schemathesis tested nothing?\n{stdout}"
    );
    let cases = generated_cases(&stdout);
    assert!(cases >= 200, "only {cases} test cases generated:\n{stdout}");
    // And the daemon survived it.
    daemon.get("/healthz").expect(200);
    daemon.get("/readyz").expect(200);
}

/// The "N generated" count from schemathesis' summary ("Test cases:" then "N generated, ...",
/// on the same line or the next).
fn generated_cases(stdout: &str) -> u64 {
    let mut lines = stdout.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("Test cases:") {
            let text = if rest.trim().is_empty() {
                lines.next().unwrap_or("")
            } else {
                rest.trim()
            };
            if let Some(n) = text.split_whitespace().next().and_then(|n| n.parse().ok()) {
                return n;
            }
        }
    }
    panic!("no 'Test cases: N generated' summary in:\n{stdout}")
}
