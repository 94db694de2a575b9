//! Production operations (issue 4): the systemd unit, SIGHUP reload, JSON logs in rotated
//! files, the Prometheus alert rules, and a real Prometheus scraping the daemon.

use crate::support;

use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::jobs::FailedJob;
use support::{binary, free_port, repo_root, RedisServer};

/// A blocking `GET` over HTTP/1.1 without a client library: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // The server may answer chunked; our JSON bodies are small enough to strip the chunk lines.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Some((status, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(config: &Path, port: u16) -> Daemon {
        let child = Command::new(binary())
            .arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("RUST_LOG")
            .env_remove("RQ_RETRYD_REDIS_URL")
            .env_remove("RQ_RETRYD_HTTP_LISTEN")
            .env_remove("RQ_RETRYD_AUTH_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start daemon");
        let daemon = Daemon { child };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some((200, _)) = http_get(port, "/readyz") {
                return daemon;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("daemon did not become ready on port {port}");
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    fn stop(mut self) -> (Option<i32>, String) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "daemon ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status.code(), stderr)
    }
}

fn policy_names(port: u16) -> Vec<String> {
    let (status, body) = http_get(port, "/api/v1/policies").expect("GET /api/v1/policies");
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    value["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn require(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} is not installed; ./scripts/test.sh installs it"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_systemd_unit_verifies_and_rates_3_0_or_better() {
    require("systemd-analyze");
    let unit =
        std::fs::read_to_string(repo_root().join("deploy/systemd/rq-retryd.service")).unwrap();
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(needle), "unit lacks {needle}");
    }
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rq-retryd.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/rq-retryd", binary().to_str().unwrap()),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let noise = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !noise.contains("rq-retryd.service:"),
        "systemd-analyze verify: {noise}"
    );
    let out = run(Command::new("systemd-analyze")
        .arg("security")
        .arg("--offline=true")
        .arg(&path));
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for rq-retryd.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 3.0, "exposure level {score} is worse than 3.0");
}

/// See issue 4: SIGHUP applies a valid new config without dropping the listener, and keeps the
/// running one when the new file is invalid.
#[test]
fn sighup_applies_a_valid_config_and_keeps_the_old_one_when_the_new_is_invalid() {
    let server = RedisServer::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let body = |policy: &str| {
        format!("[redis]\nurl = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[[policy]]\nname = \"{policy}\"\naction = \"ignore\"\n", server.url())
    };
    std::fs::write(&path, body("first")).unwrap();
    let daemon = Daemon::start(&path, port);
    assert_eq!(policy_names(port), vec!["first"]);

    std::fs::write(&path, body("second")).unwrap();
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while policy_names(port) != vec!["second"] {
        assert!(
            Instant::now() < deadline,
            "reload was not applied: {:?}",
            policy_names(port)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    std::fs::write(&path, format!("{}scan_intervall = \"1s\"\n", body("third"))).unwrap();
    daemon.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        policy_names(port),
        vec!["second"],
        "an invalid config must not replace the running one"
    );
    assert_eq!(
        http_get(port, "/healthz").map(|r| r.0),
        Some(200),
        "the process stays alive and serving"
    );

    let (code, stderr) = daemon.stop();
    assert_eq!(code, Some(0));
    assert!(stderr.contains("configuration reloaded"), "{stderr}");
    assert!(
        stderr.contains("reload refused") && stderr.contains(":8:1: policy[1].scan_intervall"),
        "{stderr}"
    );
}

#[test]
fn json_logs_go_to_a_rotated_file_with_one_event_per_action() {
    let server = RedisServer::start();
    let mut con = server.conn();
    FailedJob::new("log-me").write(&mut con);
    let logs = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[redis]\nurl = \"{}\"\n[logging]\nformat = \"json\"\ndirectory = \"{}\"\nrotation = \"hourly\"\nmax_files = 3\n[[policy]]\nname = \"now\"\nbackoff = {{ strategy = \"fixed\", delay = \"0s\" }}\n",
            server.url(),
            logs.path().display()
        ),
    )
    .unwrap();
    run(Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("once")
        .env_remove("RUST_LOG"));

    let files: Vec<PathBuf> = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("rq-retryd.") && name.ends_with(".log") && name.matches('-').count() >= 3,
        "hourly file name: {name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let action = events
        .iter()
        .find(|e| e["message"] == "action")
        .unwrap_or_else(|| panic!("no action event in {text}"));
    assert_eq!(action["job_id"], "log-me");
    assert_eq!(action["queue"], "default");
    assert_eq!(action["policy"], "now");
    assert_eq!(action["attempt"], 1);
    assert_eq!(action["decision"], "requeue_now");
    assert_eq!(action["outcome"], "requeued");
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    require("promtool");
    let rules = repo_root().join("deploy/prometheus");
    run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(rules.join("alerts.yml")));
    let out = run(Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg("alerts_test.yml")
        .current_dir(&rules));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_sees_redis_up() {
    let prometheus = require("prometheus");
    let server = RedisServer::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[redis]\nurl = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            server.url()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&path, port);

    let prom_port = free_port();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: rq-retryd\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"),
    )
    .unwrap();
    let mut prom = Command::new(prometheus)
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let seen = loop {
        if let Some((200, body)) = http_get(prom_port, "/api/v1/query?query=rq_retryd_redis_up") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if v["data"]["result"][0]["value"][1] == "1" {
                break true;
            }
            last = body;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = daemon.stop();
    assert!(
        seen,
        "Prometheus never saw rq_retryd_redis_up == 1; last answer: {last}"
    );
}

/// See issue 4: an ACL user and password in the URL work, and the password never reaches the
/// output or the logs.
#[test]
fn an_acl_user_and_password_in_the_url_work_and_are_never_printed() {
    let server = RedisServer::start();
    let mut admin = server.conn();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("retryd")
        .arg("on")
        .arg(">s3cret-Pa55")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("off")
        .query(&mut admin)
        .unwrap();
    let mut con = redis::Client::open(format!(
        "redis://retryd:s3cret-Pa55@127.0.0.1:{}/0",
        server.port
    ))
    .unwrap()
    .get_connection()
    .unwrap();
    FailedJob::new("acl").write(&mut con);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let policy = "[[policy]]\nname = \"now\"\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n";
    std::fs::write(&path, format!("[redis]\nurl = \"redis://retryd:s3cret-Pa55@127.0.0.1:{}/0\"\n[logging]\nlevel = \"trace\"\n{policy}", server.port)).unwrap();
    let out = run(Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("once")
        .env_remove("RUST_LOG"));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains("s3cret-Pa55"),
        "the password leaked: {printed}"
    );
    let queued: Vec<String> = redis::Commands::lrange(&mut con, "rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["acl"]);

    std::fs::write(
        &path,
        format!(
            "[redis]\nurl = \"redis://retryd:wrong@127.0.0.1:{}/0\"\n{policy}",
            server.port
        ),
    )
    .unwrap();
    let refused = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("once")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        !String::from_utf8_lossy(&refused.stderr).contains("wrong@"),
        "a wrong password is not echoed either"
    );
}

/// One request with a chosen `Host` and optional bearer token: the status code.
fn status_with(port: u16, path: &str, host: &str, token: Option<&str>) -> u16 {
    request_with(port, path, host, token).0
}

/// Like [`status_with`]: the status code and the whole response after it (headers and body).
fn request_with(port: u16, path: &str, host: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    (status, text)
}

/// The Procfile line of README "On a platform": `retryd: rq-retryd run` with nothing but the
/// platform's variables (`REDIS_URL`, `PORT`) and rq-retryd's token, host name and policies
/// file. A job a real RQ worker failed is retried and finishes; the API answers on `PORT` under
/// the platform's host name with the token, and refuses without it or under another name.
#[test]
fn run_from_a_procfile_line_takes_redis_url_port_token_and_policies_from_the_environment() {
    use support::rq::{JobSpec, Rq};
    let redis = RedisServer::start();
    let url = redis.url();
    let rq = Rq::rq2();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.toml");
    std::fs::write(
        &policies,
        "[[policy]]\nname = \"now\"\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n",
    )
    .unwrap();
    let id = rq.enqueue(
        &url,
        &JobSpec::new("default", "tasks.fail_first")
            .args(serde_json::json!(["test:procfile:runs", 1]))
            .kwargs(serde_json::json!({"value": "done"})),
    );
    rq.burst_worker(&url, &["default"]);
    assert_eq!(rq.status(&url, &id), "failed");

    let port = free_port();
    let token = "procfile-token-0123456789";
    let mut command = Command::new(binary());
    command
        .arg("run")
        .env_remove("RUST_LOG")
        .env_remove("RQ_RETRYD_REDIS_URL")
        .env_remove("RQ_RETRYD_HTTP_LISTEN");
    let mut daemon = start_as_procfile(command, &policies, &url, port, token);
    requeued_then_finished(&rq, &url, &id, &mut daemon);

    let api = "/api/v1/supervisor";
    assert_eq!(
        status_with(port, api, "myapp.example.com", Some(token)),
        200
    );
    assert_eq!(status_with(port, api, "myapp.example.com", None), 401);
    assert_eq!(status_with(port, api, "evil.example", Some(token)), 421);
    // Probes take the platform's own names for the container.
    assert_eq!(status_with(port, "/healthz", "10.1.2.3:5000", None), 200);
}

/// The wheel under test, or a failure that says how to get one: this test installs it, so it
/// never passes without one.
fn wheel_under_test() -> PathBuf {
    let wheel = std::env::var_os("RQ_RETRYD_WHEEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "RQ_RETRYD_WHEEL is not set: this test installs the wheel. Run ./scripts/test.sh \
                 (it builds the wheel and sets it), or \
                 RQ_RETRYD_WHEEL=$(./scripts/wheel.sh --dev | tail -n 1) cargo test --test it deploy::the_wheel"
            )
        });
    assert!(
        wheel.is_file(),
        "RQ_RETRYD_WHEEL={} is not a file",
        wheel.display()
    );
    wheel
}

/// Issue 23's wheel, as a Python team uses it: `pip install` it next to `rq==2.12.0` in a fresh
/// venv, then start the `rq-retryd` that pip put on the venv's PATH exactly as the Procfile line
/// of README "On a platform" does (`rq-retryd run`, nothing but environment variables), against
/// a real Redis and that venv's own `rq worker`. The wheel is Cargo.toml's version, tagged
/// manylinux_2_17 and clean under `auditwheel show`; the installed command names the commit it
/// was built from, retries a failing-then-succeeding job until it finishes, and serves the
/// console and the API with the token.
#[test]
fn the_wheel_installs_with_pip_next_to_rq_and_runs_from_a_procfile_line() {
    use support::rq::{JobSpec, Rq};
    let wheel = wheel_under_test();
    let name = wheel.file_name().unwrap().to_str().unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        name.starts_with(&format!("rq_retryd-{version}-py3-none-"))
            && name.ends_with(".manylinux_2_17_x86_64.whl"),
        "{name}: not rq-retryd {version} for manylinux_2_17_x86_64"
    );
    let tools = std::env::var_os("RQ_RETRYD_VENV_WHEEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/venv-wheel"));
    let audit = run(Command::new(tools.join("bin/auditwheel"))
        .arg("show")
        .arg(&wheel));
    let audit = String::from_utf8_lossy(&audit.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        audit.contains("is consistent with the following platform tag: \"manylinux_2_17_x86_64\""),
        "auditwheel show: {audit}"
    );

    // A fresh venv with the wheel and RQ, as `pip install rq-retryd rq==2.12.0` makes it.
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    run(Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "-q",
        ])
        .arg(&wheel)
        .args(["rq==2.12.0", "redis==8.1.0"]));
    let installed = venv.join("bin/rq-retryd");
    assert!(installed.is_file(), "pip put no {}", installed.display());
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        venv.join("bin").display()
    );

    // `--version` names the version and the commit the wheel was built from: the same as the
    // binary cargo built from this checkout.
    let shown = run(Command::new("rq-retryd")
        .arg("--version")
        .env_clear()
        .env("PATH", &path));
    let shown = String::from_utf8_lossy(&shown.stdout).trim().to_string();
    assert_eq!(
        shown,
        format!(
            "rq-retryd {version} (commit {})",
            env!("RQ_RETRYD_GIT_COMMIT")
        )
    );
    assert!(!shown.contains("unknown"), "{shown}");

    let redis = RedisServer::start();
    let url = redis.url();
    let rq = Rq::in_venv(venv.clone(), "2.12.0");
    let policies = dir.path().join("policies.toml");
    std::fs::write(
        &policies,
        "[[policy]]\nname = \"now\"\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n",
    )
    .unwrap();
    let id = rq.enqueue(
        &url,
        &JobSpec::new("default", "tasks.fail_first")
            .args(serde_json::json!(["test:wheel:runs", 1]))
            .kwargs(serde_json::json!({"value": "done"})),
    );
    rq.burst_worker(&url, &["default"]);
    assert_eq!(rq.status(&url, &id), "failed");

    // The Procfile line `retryd: rq-retryd run`: a shell finds the command on the venv's PATH,
    // and only the platform's and rq-retryd's variables are set.
    let port = free_port();
    let token = "wheel-token-0123456789abcdef";
    let mut command = Command::new("sh");
    command
        .args(["-c", "exec rq-retryd run"])
        .env_clear()
        .env("PATH", &path);
    let mut daemon = start_as_procfile(command, &policies, &url, port, token);
    requeued_then_finished(&rq, &url, &id, &mut daemon);

    // The console's pages need no token (its data comes from the API, which does).
    let (status, page) = request_with(port, "/ui/", "myapp.example.com", None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("rq-retryd"), "{page}");
    let api = "/api/v1/supervisor";
    assert_eq!(
        status_with(port, api, "myapp.example.com", Some(token)),
        200
    );
    assert_eq!(status_with(port, api, "myapp.example.com", None), 401);
}

/// Starts `command` (an rq-retryd `run`) as a Procfile line runs it: the platform's
/// `REDIS_URL` and `PORT`, rq-retryd's token, host name and policies file, nothing else.
fn start_as_procfile(
    mut command: Command,
    policies: &Path,
    url: &str,
    port: u16,
    token: &str,
) -> KillOnDrop {
    KillOnDrop(
        command
            .env("RQ_RETRYD_CONFIG", policies)
            .env("REDIS_URL", url)
            .env("PORT", port.to_string())
            .env("RQ_RETRYD_AUTH_TOKEN", token)
            .env("RQ_RETRYD_ALLOWED_HOSTS", "myapp.example.com")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rq-retryd"),
    )
}

/// Waits (30 s at most) for `daemon` to requeue the failed job `id` of queue `default`, then
/// has a real worker run it to the end; a daemon that exits meanwhile fails with its stderr.
fn requeued_then_finished(rq: &support::rq::Rq, url: &str, id: &str, daemon: &mut KillOnDrop) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while rq.status(url, id) != "queued" {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = daemon.0.stderr.take() {
                pipe.read_to_string(&mut stderr).unwrap();
            }
            panic!("rq-retryd exited ({status}): {stderr}");
        }
        assert!(Instant::now() < deadline, "the failed job was not requeued");
        std::thread::sleep(Duration::from_millis(200));
    }
    rq.burst_worker(url, &["default"]);
    assert_eq!(rq.status(url, id), "finished");
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The venv scripts/test.sh makes for scripts/kubernetes.py and scripts/containers.py.
fn deploy_venv() -> PathBuf {
    std::env::var_os("RQ_RETRYD_VENV_DEPLOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/venv-deploy"))
}

fn deploy_python() -> PathBuf {
    let venv = deploy_venv();
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: ./scripts/test.sh creates the venv",
        python.display()
    );
    python
}

fn kubernetes_check(dir: &Path) -> Output {
    Command::new(deploy_python())
        .arg(repo_root().join("scripts/kubernetes.py"))
        .args(["check", env!("CARGO_PKG_VERSION")])
        .arg(dir)
        .output()
        .unwrap()
}

/// deploy/kubernetes validates strictly against Kubernetes' schemas and the Prometheus
/// Operator's CRDs, its PrometheusRule is what deploy/prometheus/alerts.yml generates, and the
/// objects fit together; a misspelt field or a drifted rule fails the check.
#[test]
fn the_kubernetes_manifests_validate_strictly_and_their_rules_are_generated() {
    let dir = repo_root().join("deploy/kubernetes");
    let out = kubernetes_check(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Secret",
        "Service",
        "ServiceMonitor",
    ] {
        assert!(stdout.contains(&format!("\"{kind}\"")), "{kind}: {stdout}");
    }

    let broken = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("  replicas: 2", "  replicass: 2")
            .replace("      interval: 30s", "      intervall: 30s")
            .replace("      for: 5m", "      forr: 5m");
        std::fs::write(broken.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let out = kubernetes_check(broken.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for expected in [
        "'replicass' was unexpected",
        "'intervall' was unexpected",
        "'forr' was unexpected",
        "prometheusrule.yaml differs from deploy/prometheus/alerts.yml",
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
}

/// The ConfigMap's config runs as the Deployment runs it: refused without a token (and with
/// the example Secret's placeholder), and with one, two replicas share the Redis and exactly one
/// holds the lease while both answer the probes.
#[test]
fn the_kubernetes_config_runs_two_replicas_with_one_active() {
    let out = Command::new(deploy_python())
        .arg(repo_root().join("scripts/kubernetes.py"))
        .arg("config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &out.stdout).unwrap();
    let redis = RedisServer::start();
    let check = |token: Option<&str>| {
        let mut cmd = Command::new(binary());
        cmd.arg("--config")
            .arg(&config)
            .arg("check-config")
            .env("RQ_RETRYD_REDIS_URL", redis.url())
            .env_remove("RQ_RETRYD_HTTP_LISTEN")
            .env_remove("RQ_RETRYD_AUTH_TOKEN");
        if let Some(t) = token {
            cmd.env("RQ_RETRYD_AUTH_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    assert_eq!(check(None).status.code(), Some(2), "a token is required");
    let placeholder = check(Some("REPLACE-ME"));
    assert_eq!(
        placeholder.status.code(),
        Some(2),
        "secret.example.yaml's placeholder must not start: {}",
        String::from_utf8_lossy(&placeholder.stderr)
    );
    assert!(check(Some("a-real-token-0123456789")).status.success());

    let pods: Vec<(KillOnDrop, u16)> = (0..2)
        .map(|_| {
            let port = free_port();
            let child = Command::new(binary())
                .arg("run")
                .env("RQ_RETRYD_CONFIG", &config)
                .env("RQ_RETRYD_REDIS_URL", redis.url())
                .env("RQ_RETRYD_AUTH_TOKEN", "a-real-token-0123456789")
                .env("RQ_RETRYD_HTTP_LISTEN", format!("0.0.0.0:{port}"))
                .env("RQ_RETRYD_ALLOWED_HOSTS", "rq-retryd,rq-retryd.rq.svc")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (KillOnDrop(child), port)
        })
        .collect();
    let leader = |port: u16| -> Option<u8> {
        let (_, body) = http_get(port, "/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix("rq_retryd_leader "))
            .and_then(|v| v.trim().parse().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leaders: Vec<Option<u8>> = pods.iter().map(|(_, port)| leader(*port)).collect();
        if leaders.iter().flatten().count() == 2 && leaders.iter().flatten().sum::<u8>() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expected one active and one standby: {leaders:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (_, port) in &pods {
        for probe in ["/healthz", "/readyz"] {
            assert_eq!(status_with(*port, probe, "10.0.0.7:9732", None), 200);
        }
        let api = "/api/v1/supervisor";
        let host = "rq-retryd.rq.svc";
        assert_eq!(
            status_with(*port, api, host, Some("a-real-token-0123456789")),
            200
        );
    }
}

fn containers_check(args: &[&str]) -> Output {
    Command::new(deploy_python())
        .arg(repo_root().join("scripts/containers.py"))
        .args(args)
        .output()
        .unwrap()
}

/// No container engine or registry is reachable here, so the Dockerfile is checked with
/// BuildKit's parser: it copies everything the crate compiles in, builds with the crate's Rust,
/// and runs unprivileged; a Dockerfile that misses one of those is refused.
#[test]
fn the_dockerfile_copies_what_the_build_reads_and_runs_as_a_numeric_non_root_user() {
    let out = containers_check(&["dockerfile"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let broken: String = original
        .lines()
        .filter(|l| !l.starts_with("USER ") && !l.starts_with("COPY assets"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = dir.path().join("Dockerfile");
    std::fs::write(&path, broken).unwrap();
    let out = containers_check(&["dockerfile", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("the build reads assets/ui/console.js"),
        "{stdout}"
    );
    assert!(stdout.contains("no USER: it would run as root"), "{stdout}");
}

/// deploy/compose: valid against the compose specification, tied to the repository, its
/// policies load with the variables it sets, its Prometheus config and rules pass promtool, and
/// its example job is one a real RQ 2.12 worker runs (and fails, the first time).
#[test]
fn the_compose_example_is_valid_and_its_parts_work() {
    let compose = repo_root().join("deploy/compose");
    let out = Command::new(deploy_venv().join("bin/check-jsonschema"))
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(compose.join("compose.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = containers_check(&["compose"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let redis = RedisServer::start();
    let config = Command::new(binary())
        .arg("check-config")
        .env("RQ_RETRYD_CONFIG", compose.join("policies.toml"))
        .env("REDIS_URL", redis.url())
        .env("PORT", "9732")
        .env("RQ_RETRYD_AUTH_TOKEN", "compose-token-0123456789")
        .env("RQ_RETRYD_ALLOWED_HOSTS", "rq-retryd")
        .env_remove("RQ_RETRYD_REDIS_URL")
        .env_remove("RQ_RETRYD_HTTP_LISTEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&config.stdout);
    assert!(config.status.success(), "{text}");
    assert!(
        text.contains("0.0.0.0:9732") && text.contains("retry-quickly"),
        "{text}"
    );

    require("promtool");
    let prometheus = tempfile::tempdir().unwrap();
    std::fs::copy(
        compose.join("prometheus.yml"),
        prometheus.path().join("prometheus.yml"),
    )
    .unwrap();
    std::fs::copy(
        repo_root().join("deploy/prometheus/alerts.yml"),
        prometheus.path().join("alerts.yml"),
    )
    .unwrap();
    run(Command::new("promtool")
        .args(["check", "config"])
        .arg(prometheus.path().join("prometheus.yml")));

    let rq = support::rq::Rq::rq2();
    let venv = std::env::var_os("RQ_RETRYD_VENV_RQ2")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/venv-rq2"));
    let out = Command::new(venv.join("bin/python"))
        .arg("enqueue.py")
        .current_dir(compose.join("app"))
        .env("REDIS_URL", redis.url())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let id = printed
        .strip_prefix("enqueued ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("{printed}"))
        .to_string();
    let worker = Command::new(venv.join("bin/rq"))
        .args(["worker", "--burst", "--url", &redis.url(), "default"])
        .current_dir(compose.join("app"))
        .env("REDIS_URL", redis.url())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(worker.status.success());
    assert_eq!(rq.failed_ids(&redis.url(), "default"), vec![id.clone()]);
    // rq-retryd reads the failure RQ stored (compressed in the results stream) as its type.
    let explain = Command::new(binary())
        .args(["explain", &id, "--json"])
        .env("REDIS_URL", redis.url())
        .env_remove("RQ_RETRYD_CONFIG")
        .env_remove("RQ_RETRYD_REDIS_URL")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        explain.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&explain.stderr)
    );
    assert!(
        text.contains("\"ConnectionError\"") && text.contains("downstream unavailable (run 1)"),
        "the example task's own failure: {text}"
    );
}
