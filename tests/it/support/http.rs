//! The daemon under test over real HTTP: `daemon::run` in-process on a free loopback port (or
//! `rq-retryd --config <tmp> run`, for what needs the process),
//! a blocking HTTP/1.1 client on `std::net::TcpStream` (no extra crates), and a small parser for
//! the Prometheus text format.
//!
//! Every wait has a deadline and fails with the daemon's log, so a daemon that never gets ready
//! fails the test with a reason instead of hanging CI.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::free_port;

/// A policy that matches every job and never acts: the daemon's own scans change nothing, so
/// only what a test does through the API writes.
pub const HANDS_OFF: &str = r#"
[[policy]]
name = "hands-off"
action = "ignore"
"#;

/// How long one HTTP exchange may take (a 503 after a Redis reconnect attempt takes seconds).
const HTTP_DEADLINE: Duration = Duration::from_secs(90);
/// How long the daemon may take to answer `/healthz` (or `/readyz`) after it was started.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected HTTP {status}, got {}: {}",
            self.status,
            self.text()
        );
        self.json()
    }

    /// Asserts an API error: this status, a JSON body with exactly `error` (non-empty) and
    /// `code` (= `code`).
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        let body = self.expect(status);
        let object = body
            .as_object()
            .unwrap_or_else(|| panic!("error body is not an object: {body}"));
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["code", "error"], "error body shape: {body}");
        assert_eq!(body["code"], code, "error code: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "error message is empty: {body}"
        );
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the whole answer. `target` is the
/// request target as sent on the wire (path and query, already percent-encoded). It sends
/// `Host: ADDR` unless `headers` has a `Host` of its own.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, target, headers, body)
        .unwrap_or_else(|e| panic!("{method} {target} on {addr}: {e}"))
}

/// Like [`request`], returning I/O errors (e.g. connection refused) instead of panicking.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    exchange(stream, addr, method, target, headers, body)
}

/// Like [`request`], sent from the local address `source` (any `127.x.y.z` is this host), so
/// that one test can be several clients, e.g. for limits kept per client address.
pub fn request_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let connect = || -> std::io::Result<TcpStream> {
        // std cannot bind a client socket before connecting; tokio's `TcpSocket` can.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let stream = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
                .await
                .map_err(|_| std::io::Error::other("connect timed out"))?
        })?;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        Ok(stream)
    };
    connect()
        .and_then(|stream| exchange(stream, addr, method, target, headers, body))
        .unwrap_or_else(|e| panic!("{method} {target} on {addr} from {source}: {e}"))
}

/// Sends one request on a connected `stream` and reads the whole answer.
fn exchange(
    mut stream: TcpStream,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    stream.set_read_timeout(Some(HTTP_DEADLINE))?;
    stream.set_write_timeout(Some(HTTP_DEADLINE))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    head.push_str("Connection: close\r\n");
    let mut has_length = false;
    for (name, value) in headers {
        has_length |= name.eq_ignore_ascii_case("content-length");
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_length && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if !body.is_empty() {
        stream.write_all(body)?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{e}: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        match headers.iter().find(|(k, _)| k == "content-length") {
            Some((_, n)) => {
                let n: usize = n.parse().map_err(|_| "bad content-length")?;
                if rest.len() < n {
                    return Err(format!("body cut short: {} of {n} bytes", rest.len()));
                }
                rest[..n].to_vec()
            }
            None => rest.to_vec(),
        }
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("chunk cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// What goes into the daemon's config file. Defaults: scans every hour (so nothing happens
/// behind a test's back; tests trigger scans with `POST /api/v1/supervisor/scan`), all queues,
/// a rate limit that never interferes, info logs, no token, loopback listen on a free port.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub redis_url: String,
    /// `None`: `127.0.0.1:<free port>`. `Some("0.0.0.0")`: that host with a free port.
    pub listen_host: Option<String>,
    pub scan_interval: String,
    pub batch_size: usize,
    pub max_requeues_per_second: u32,
    pub auth_token: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    pub log_level: String,
    /// More lines of the `[http]` table, verbatim (e.g. `allowed_hosts = ["rq.test"]`).
    pub http_extra: String,
    /// `[[policy]]` tables, verbatim.
    pub policies: String,
}

impl DaemonConfig {
    pub fn new(redis_url: &str, policies: &str) -> DaemonConfig {
        DaemonConfig {
            redis_url: redis_url.to_string(),
            listen_host: None,
            scan_interval: "1h".into(),
            batch_size: 500,
            max_requeues_per_second: 100_000,
            auth_token: None,
            auth_token_file: None,
            log_level: "info".into(),
            http_extra: String::new(),
            policies: policies.to_string(),
        }
    }

    /// The token a client sends: the configured one, or the first line of the token file.
    fn token(&self) -> Option<String> {
        self.auth_token.clone().or_else(|| {
            self.auth_token_file.as_ref().map(|p| {
                std::fs::read_to_string(p)
                    .expect("token file")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
        })
    }

    fn toml(&self, listen: SocketAddr) -> String {
        let mut http = format!("listen = \"{listen}\"\n");
        if let Some(token) = &self.auth_token {
            http.push_str(&format!("auth_token = \"{token}\"\n"));
        }
        if let Some(path) = &self.auth_token_file {
            http.push_str(&format!("auth_token_file = \"{}\"\n", path.display()));
        }
        http.push_str(&self.http_extra);
        format!(
            "[redis]\nurl = \"{}\"\n\n\
             [supervisor]\nscan_interval = \"{}\"\nbatch_size = {}\nqueues = [\"*\"]\nmax_requeues_per_second = {}\n\n\
             [http]\n{http}\n\
             [logging]\nlevel = \"{}\"\n\n{}\n",
            self.redis_url,
            self.scan_interval,
            self.batch_size,
            self.max_requeues_per_second,
            self.log_level,
            self.policies
        )
    }
}

/// The daemon under test: in this process ([`start`](Daemon::start), see
/// `support::daemon::Running`) or as `rq-retryd run` ([`spawn`](Daemon::spawn)), for what
/// needs a process: signals, exit codes, what the binary prints, a kill. The same API either
/// way; stopped on drop.
pub struct Daemon {
    runner: Runner,
    pub addr: SocketAddr,
    /// The token that [`get`](Self::get) and friends send (the configured one, if any).
    pub token: Option<String>,
    dir: tempfile::TempDir,
}

enum Runner {
    /// `daemon::run` on a thread of its own; its log in memory.
    InProcess(super::daemon::Running),
    /// `rq-retryd --config FILE run`, killed on drop; its stdout and stderr go to files in the
    /// daemon's temporary directory, so a test can read the whole log at any time.
    Process(Mutex<Option<Child>>),
}

impl Daemon {
    /// Starts the daemon in-process on a listener bound to a free port (the config file
    /// names it) and waits until `/healthz` answers (Redis need not be up).
    #[track_caller]
    pub fn start(config: &DaemonConfig) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = config.listen_host.as_deref().unwrap_or("127.0.0.1");
        let listener = std::net::TcpListener::bind((host, 0))
            .unwrap_or_else(|e| panic!("cannot listen on {host}: {e}"));
        let listen = listener.local_addr().expect("local address");
        let config_path = dir.path().join("rq-retryd.toml");
        let text = config.toml(listen);
        std::fs::write(&config_path, &text).expect("write config");
        let parsed = rq_retryd::config::parse(&text, &config_path.display().to_string())
            .unwrap_or_else(|e| panic!("rq-retryd would refuse this config:\n{e}"));
        let daemon = Daemon {
            runner: Runner::InProcess(super::daemon::Running::start(parsed, listener)),
            addr: SocketAddr::from(([127, 0, 0, 1], listen.port())),
            token: config.token(),
            dir,
        };
        daemon.wait_until("/healthz answers 200", |d| {
            try_request(d.addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
        });
        if ["info", "debug", "trace"].contains(&config.log_level.as_str()) {
            // An assertion that a line was not logged holds only if the log is captured.
            let log = daemon.log();
            assert!(
                log.contains("rq-retryd starting"),
                "no log captured:\n{log}"
            );
        }
        daemon
    }

    /// Like [`start`](Self::start), then waits until `/readyz` is 200 and the first scan has
    /// completed, so that no startup scan can interleave with what the test does next.
    #[track_caller]
    pub fn start_ready(config: &DaemonConfig) -> Daemon {
        Daemon::start(config).ready()
    }

    /// Like [`spawn`](Self::spawn), then waits as [`start_ready`](Self::start_ready) does.
    #[track_caller]
    pub fn spawn_ready(config: &DaemonConfig) -> Daemon {
        Daemon::spawn(config).ready()
    }

    #[track_caller]
    fn ready(self) -> Daemon {
        self.wait_ready();
        self.wait_until("the first scan completed", |d| {
            !d.get("/api/v1/supervisor").expect(200)["last_scan"].is_null()
        });
        self
    }

    /// Starts `rq-retryd --config FILE run` as a process and waits until `/healthz` answers
    /// (Redis need not be up).
    #[track_caller]
    pub fn spawn(config: &DaemonConfig) -> Daemon {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let host = config.listen_host.as_deref().unwrap_or("127.0.0.1");
            let port = free_port();
            let listen: SocketAddr = format!("{host}:{port}").parse().expect("listen address");
            let config_path = dir.path().join("rq-retryd.toml");
            std::fs::write(&config_path, config.toml(listen)).expect("write config");
            let child = super::spawn_daemon(&config_path, dir.path());
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let daemon = Daemon {
                runner: Runner::Process(Mutex::new(Some(child))),
                addr,
                token: config.token(),
                dir,
            };
            let deadline = Instant::now() + START_DEADLINE;
            while Instant::now() < deadline {
                if let Some(code) = daemon.try_exit_code() {
                    last_log = daemon.log();
                    if last_log.contains("cannot listen") {
                        break; // The free port was taken meanwhile: try another one.
                    }
                    panic!("rq-retryd exited with {code} while starting:\n{last_log}");
                }
                if let Ok(r) = try_request(addr, "GET", "/healthz", &[], b"") {
                    if r.status == 200 {
                        return daemon;
                    }
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            if daemon.try_exit_code().is_none() {
                panic!(
                    "rq-retryd did not answer /healthz within {START_DEADLINE:?}:\n{}",
                    daemon.log()
                );
            }
        }
        panic!("rq-retryd could not listen on a free port after 3 attempts:\n{last_log}");
    }

    /// Polls `/readyz` until it answers 200.
    #[track_caller]
    pub fn wait_ready(&self) {
        self.wait_until("/readyz answers 200", |d| d.get("/readyz").status == 200);
    }

    /// Polls `check` every 50 ms until it holds; panics with the log after 30 s.
    #[track_caller]
    pub fn wait_until(&self, what: &str, mut check: impl FnMut(&Daemon) -> bool) {
        let held = super::wait_until(START_DEADLINE, || {
            if check(self) {
                return Some(());
            }
            if let Some(code) = self.try_exit_code() {
                panic!(
                    "rq-retryd exited with {code} while waiting for {what}:\n{}",
                    self.log()
                );
            }
            None
        });
        assert!(
            held.is_some(),
            "timed out after {START_DEADLINE:?} waiting for {what}; log:\n{}",
            self.log()
        );
    }

    /// Runs a full scan now (`POST /api/v1/supervisor/scan`) and waits until it has completed.
    /// Call it only after the startup scan is done ([`start_ready`](Self::start_ready)), so the
    /// completion observed is this scan's.
    #[track_caller]
    pub fn scan(&self) -> Value {
        let asked = chrono::Utc::now();
        let answer = self.post("/api/v1/supervisor/scan").expect(202);
        assert_eq!(answer, serde_json::json!({"scan_requested": true}));
        let mut last = Value::Null;
        // A scan that began after the request: one already running when it came may not
        // have seen what the test wrote just before.
        self.wait_until("the requested scan completed", |d| {
            last = d.get("/api/v1/supervisor").expect(200)["last_scan"].clone();
            last["report"]["started_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t.with_timezone(&chrono::Utc) > asked)
        });
        last
    }

    /// `GET path` with the daemon's token (if any).
    pub fn get(&self, path: &str) -> Response {
        self.call("GET", path)
    }

    /// `POST path` with an empty body and the daemon's token (if any).
    pub fn post(&self, path: &str) -> Response {
        self.call("POST", path)
    }

    /// `DELETE path` with the daemon's token (if any).
    pub fn delete(&self, path: &str) -> Response {
        self.call("DELETE", path)
    }

    /// `method path` with the daemon's token (if any).
    pub fn call(&self, method: &str, path: &str) -> Response {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        request(self.addr, method, path, &headers, b"")
    }

    /// A request exactly as given: no token added.
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(self.addr, method, path, headers, body)
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the daemon logged so far (a process: all it wrote to stdout and stderr).
    pub fn log(&self) -> String {
        match &self.runner {
            Runner::InProcess(running) => running.log(),
            Runner::Process(_) => {
                let read = |name: &str| {
                    std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
                };
                format!("{}{}", read("stdout.log"), read("stderr.log"))
            }
        }
    }

    /// The exit code, if the daemon has exited (-1 for a signal). In-process: once `run` has
    /// returned, 0 for `Ok`, 1 for an error, 101 when it panicked.
    pub fn try_exit_code(&self) -> Option<i32> {
        match &self.runner {
            Runner::InProcess(running) => running.exit_code(),
            Runner::Process(child) => {
                let mut child = child.lock().expect("child lock");
                let status = child.as_mut()?.try_wait().expect("wait for rq-retryd")?;
                Some(status.code().unwrap_or(-1))
            }
        }
    }

    /// Stops the daemon (a process: SIGTERM; in-process: the cancel that SIGTERM is) and
    /// waits (at most 20 s) for the exit; returns the exit code and the log.
    pub fn stop(self) -> (i32, String) {
        let child = match &self.runner {
            Runner::InProcess(running) => {
                let Some(code) = running.stop(Duration::from_secs(20)) else {
                    panic!(
                        "daemon::run did not return within 20 s of the cancel:\n{}",
                        self.log()
                    );
                };
                return (code, self.log());
            }
            Runner::Process(child) => child.lock().expect("child lock").take(),
        };
        let mut child = child.expect("running daemon");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let exited = super::wait_until(Duration::from_secs(20), || {
            child.try_wait().expect("wait for rq-retryd")
        });
        let Some(status) = exited else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "rq-retryd did not exit within 20 s of SIGTERM:\n{}",
                self.log()
            );
        };
        (status.code().unwrap_or(-1), self.log())
    }

    /// The config file the daemon was started with (for a process: rewrite it, then
    /// [`signal`](Self::signal) `HUP` to reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("rq-retryd.toml")
    }

    /// Sends `kill -NAME` (e.g. `HUP`) to the daemon, which must be a process
    /// ([`spawn`](Self::spawn)).
    #[track_caller]
    pub fn signal(&self, name: &str) {
        let Runner::Process(child) = &self.runner else {
            panic!("kill -{name} needs the daemon as a process: start it with Daemon::spawn");
        };
        let child = child.lock().expect("child lock");
        let pid = child.as_ref().expect("running daemon").id();
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {pid}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // In-process: `Running`'s own drop cancels it and waits for `run` to return.
        if let Runner::Process(child) = &mut self.runner {
            if let Some(mut child) = child.get_mut().ok().and_then(Option::take) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Runs `rq-retryd --config <toml in a temp dir> run` to completion (for configs that must be
/// refused); returns the exit code and everything it printed. Killed after 20 s.
pub fn run_to_exit(toml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("rq-retryd.toml");
    std::fs::write(&config_path, toml).expect("write config");
    let mut child = super::spawn_daemon(&config_path, dir.path());
    let code = match super::wait_until(Duration::from_secs(20), || child.try_wait().expect("wait"))
    {
        Some(status) => status.code().unwrap_or(-1),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            -100
        }
    };
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    (
        code,
        format!("{}{}", read("stdout.log"), read("stderr.log")),
    )
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Named `name`, with (at least) these label values.
    pub fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// Parses the samples of a Prometheus text exposition (comments skipped). Panics on a line it
/// cannot read, so a malformed exposition fails the test.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("metric line without a value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in metric line {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                (name.to_string(), parse_labels(body, line))
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label without quotes: {line:?}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape: {line:?}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The value of the one sample named `name` whose labels include `labels`; `None` when there is
/// none. Panics when several match (the caller must be precise).
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples.iter().filter(|s| s.matches(name, labels)).collect();
    assert!(
        found.len() <= 1,
        "{name}{labels:?} matches several samples: {found:?}"
    );
    found.first().map(|s| s.value)
}

/// The virtualenv of `rq` (same lookup as `support::rq`: `$RQ_RETRYD_VENV_RQ1/2`, else
/// `target/venv-rq1/2`), for running its `python` or `rq` directly.
pub fn venv_of(rq: &super::rq::Rq) -> PathBuf {
    let (var, dir) = if rq.version.starts_with("1.") {
        ("RQ_RETRYD_VENV_RQ1", "venv-rq1")
    } else {
        ("RQ_RETRYD_VENV_RQ2", "venv-rq2")
    };
    match std::env::var_os(var) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => super::repo_root().join("target").join(dir),
    }
}

/// An `rq worker --burst` running in the background in its own process group, killed (with its
/// work horse) on drop. For states that only exist while a job runs (`started`).
pub struct BackgroundWorker {
    child: Child,
}

/// Starts `rq worker --burst -u URL --path tests/python QUEUE` from `rq`'s venv.
pub fn rq_worker_in_background(rq: &super::rq::Rq, url: &str, queue: &str) -> BackgroundWorker {
    use std::os::unix::process::CommandExt;
    let child = Command::new(venv_of(rq).join("bin").join("rq"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONWARNINGS", "ignore")
        .args(["worker", "--burst", "-u", url, "--path"])
        .arg(super::rq::python_dir())
        .arg(queue)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start rq worker (RQ {}): {e}", rq.version));
    BackgroundWorker { child }
}

impl Drop for BackgroundWorker {
    fn drop(&mut self) {
        // The worker's own process group: the worker and the work horse it forked.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
