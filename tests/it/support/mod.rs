//! Test fixtures shared by the integration tests: a throwaway `redis-server` on a free port,
//! the path of the built binary, and the Python virtualenvs with real RQ.
//!
//! Nothing here skips: a missing `redis-server` or venv is a test failure with a message that says
//! how to get it (`scripts/test.sh` installs everything).

pub mod api;
pub mod browser;
pub mod daemon;
pub mod faults;
pub mod http;
pub mod jobs;
pub mod machine;
pub mod rq;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` owned by one test, killed on drop. It keeps nothing on disk.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a fresh server on a free loopback port and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra `redis-server` arguments (e.g. `--notify-keyspace-events Kz`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_each(|| extra.iter().map(|a| a.to_string()).collect())
    }

    /// Like [`start_with`](Self::start_with), the extra arguments made anew for each attempt:
    /// a second port they name (`--tls-port`) is chosen again with the server's own, since a
    /// port another test took makes every attempt with it fail.
    pub fn start_each(extra: impl Fn() -> Vec<String>) -> RedisServer {
        machine::take_a_seat();
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(extra())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            let child = cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); run scripts/test.sh, which installs it")
            });
            let mut server = RedisServer {
                port,
                child,
                _dir: dir,
            };
            if server.wait_ready(Duration::from_secs(10)) {
                return server;
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!("redis-server did not come up on a free port after 5 attempts");
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let url = self.url();
        wait_until(timeout, || {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(false);
            }
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut con = client.get_connection().ok()?;
            redis::cmd("PING")
                .query::<String>(&mut con)
                .is_ok()
                .then_some(true)
        })
        .unwrap_or(false)
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A blocking connection for setting up and asserting.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("connect to test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Taken first by each test that loads the machine or times it closely: crash and fault
/// injection, three racing daemons, a 12,000-job requeue, a rate within 10 %, a breaker that
/// counts batches. No two of them run at once, and while one runs at most one other test runs
/// beside it, as when the program ran on the 2 threads of a 2-core machine (see
/// [`machine`]); a test that panicked while holding it does not fail the next.
pub fn one_heavy_test_at_a_time() -> machine::Alone {
    machine::alone()
}

/// How often [`wait_until`] asks.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Asks `ready` every 20 ms until it answers `Some`, and returns that; `None` once `timeout` has
/// passed without it. For waiting on what another process does (a server coming up, a child
/// exiting, a daemon's state); a test that means to let time pass sleeps instead.
pub fn wait_until<T>(timeout: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .unwrap()
        .port()
}

/// The `rq-retryd` binary cargo built for this test run.
pub fn binary() -> PathBuf {
    // A test about to run the binary uses the machine (and reads what it shares: see
    // `machine::exclusive`).
    machine::take_a_seat();
    PathBuf::from(env!("CARGO_BIN_EXE_rq-retryd"))
}

/// The environment through which a developer's shell could point the binary under test
/// somewhere else (e.g. at the Redis on 6379) or change what it logs.
const RETRYD_ENV: [&str; 5] = [
    "RQ_RETRYD_CONFIG",
    "RQ_RETRYD_REDIS_URL",
    "RQ_RETRYD_HTTP_LISTEN",
    "RQ_RETRYD_AUTH_TOKEN",
    "RUST_LOG",
];

/// `rq-retryd` with that environment removed, so only the test's config decides.
pub fn retryd_command() -> Command {
    machine::take_a_seat();
    let mut cmd = Command::new(binary());
    for var in RETRYD_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Starts `rq-retryd --config CONFIG run`, its output going to `stdout.log` and `stderr.log`
/// in `dir`.
pub fn spawn_daemon(config: &Path, dir: &Path) -> Child {
    let stdout = std::fs::File::create(dir.join("stdout.log")).expect("stdout log");
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("stderr log");
    retryd_command()
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start rq-retryd")
}

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
