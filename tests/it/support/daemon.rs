//! The whole daemon in-process: `rq_retryd::daemon::run` on a listener the test bound, stopped
//! by cancelling its token. No binary, no signals: a test reaches the daemon's state directly
//! and sees what `run` returned. For plain `#[test]`s, like the rest of the support code (its
//! HTTP client blocks).
//!
//! [`Running`] is one such daemon: `run` gets a thread and a multi-thread runtime of its own
//! and is driven by `block_on`, as the binary drives it, so that the blocking HTTP client of
//! the tests never stalls the daemon's runtime. (Its future is `Send`:
//! `daemon::tests::the_daemon_future_is_send`.) Its log is its own: every thread of its runtime
//! has, as its default, the subscriber the binary would install for the config's `[logging]`
//! (`rq_retryd::telemetry::subscriber`), writing to a buffer of this daemon's. Nothing
//! process-wide changes (no global subscriber), so many daemons run side by side in the one
//! test program. `support::http::Daemon` runs on it by default; [`InProcess`] is the bare form
//! that hands out the daemon's state.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rq_retryd::config::Config;
use rq_retryd::state::DaemonState;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use super::http::{request, try_request, Response};

/// How long the daemon may take to answer `/healthz`, and a `wait_until` to hold.
const WAIT_DEADLINE: Duration = Duration::from_secs(30);
/// How long `run` may take to return after the cancel: the shutdown grace and some.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// The exit code the binary would have after a panic.
const PANICKED: i32 = 101;

/// What a daemon logged, shared by the threads of its runtime.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    fn append(&self, text: &str) {
        use std::io::Write as _;
        let _ = self.clone().write_all(text.as_bytes());
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One `daemon::run` on a thread of its own; cancelled on drop, which waits (at most
/// [`STOP_DEADLINE`]) for `run` to return, as dropping a child process waits for its exit.
pub struct Running {
    pub state: Arc<DaemonState>,
    cancel: CancellationToken,
    log: LogBuffer,
    /// What `run` returned, once it has (its error as the binary prints it).
    returned: Arc<Mutex<Option<Result<(), String>>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Starts `daemon::run(listener, …)` for `config` and returns at once. `listener` is
    /// already bound (so no other test can take its port), and made non-blocking here.
    pub fn start(config: Config, listener: std::net::TcpListener) -> Running {
        super::machine::take_a_seat();
        // What the binary installs first: one process-wide crypto provider for rediss://.
        let _ = rustls::crypto::ring::default_provider().install_default();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let log = LogBuffer::default();
        let sink = log.clone();
        // The binary's filter is the config's level (the tests' daemons never see RUST_LOG).
        let (dispatch, _filter) = rq_retryd::telemetry::subscriber(
            &config.logging,
            &config.logging.level,
            BoxMakeWriter::new(move || sink.clone()),
        )
        .unwrap_or_else(|e| panic!("the daemon's log subscriber: {e}"));
        let config = Arc::new(config);
        let state = DaemonState::new(config.clone());
        let cancel = CancellationToken::new();
        let returned = Arc::new(Mutex::new(None));
        let thread = {
            let (state, cancel, returned, log) =
                (state.clone(), cancel.clone(), returned.clone(), log.clone());
            std::thread::Builder::new()
                .name("in-process-daemon".into())
                .spawn(move || {
                    let outcome = tracing::dispatcher::with_default(&dispatch, || {
                        run(&config, &dispatch, listener, state, cancel)
                    });
                    let outcome = outcome.map_err(|e| format!("{e:#}"));
                    if let Err(e) = &outcome {
                        log.append(&format!("rq-retryd: {e}\n"));
                    }
                    *returned.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
                })
                .expect("a thread for the daemon")
        };
        Running {
            state,
            cancel,
            log,
            returned,
            thread,
        }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Once `run` has returned: 0 for `Ok`, 1 for an error (as the binary exits), 101 when it
    /// panicked.
    pub fn exit_code(&self) -> Option<i32> {
        match &*self.returned.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(Ok(())) => Some(0),
            Some(Err(_)) => Some(1),
            None => self.thread.is_finished().then_some(PANICKED),
        }
    }

    /// Cancels the token (as SIGTERM does) and waits until `run` has returned and its runtime
    /// is gone; `None` when that took longer than `within`.
    pub fn stop(&self, within: Duration) -> Option<i32> {
        self.cancel.cancel();
        super::wait_until(within, || {
            self.thread.is_finished().then(|| self.exit_code())?
        })
    }

    /// What `run` returned (after [`stop`](Self::stop)): its error as text.
    fn outcome(&self) -> Option<Result<(), String>> {
        self.returned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop(STOP_DEADLINE);
    }
}

/// The daemon's thread: what `commands::run` does around `daemon::run`, but the signals, the
/// reloads and systemd.
fn run(
    config: &Config,
    dispatch: &tracing::Dispatch,
    listener: std::net::TcpListener,
    state: Arc<DaemonState>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    for warning in rq_retryd::config::loose_secret_files(config) {
        tracing::warn!("{warning}");
    }
    let on_each_thread = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // For the thread's whole life: the guard is never dropped.
            std::mem::forget(tracing::dispatcher::set_default(&on_each_thread));
        })
        .build()
        .expect("a runtime for the daemon");
    let outcome = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        rq_retryd::daemon::run(listener, state, cancel).await
    });
    // What the daemon left running ends here, as it would with the process.
    runtime.shutdown_background();
    outcome
}

/// A daemon running in this process, with its state at hand; cancelled on drop.
pub struct InProcess {
    pub addr: SocketAddr,
    /// The daemon's shared state, as the HTTP API and the loops see it.
    pub state: Arc<DaemonState>,
    running: Running,
}

impl InProcess {
    /// Parses `config_text` (its `[http] listen` is not used: the daemon gets a listener on
    /// 127.0.0.1:0), starts the daemon and waits until `/healthz` answers.
    #[track_caller]
    pub fn start(config_text: &str) -> InProcess {
        let config = rq_retryd::config::parse(config_text, "in-process.toml")
            .unwrap_or_else(|e| panic!("invalid config:\n{e}"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let running = Running::start(config, listener);
        let daemon = InProcess {
            addr,
            state: running.state.clone(),
            running,
        };
        daemon.wait_until("/healthz answers 200", |d| {
            try_request(d.addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
        });
        daemon
    }

    /// Polls `check` every 20 ms until it holds; panics (with the log) after 30 s, or when
    /// `run` returned.
    #[track_caller]
    pub fn wait_until(&self, what: &str, mut check: impl FnMut(&InProcess) -> bool) {
        let deadline = Instant::now() + WAIT_DEADLINE;
        loop {
            if check(self) {
                return;
            }
            assert!(
                self.running.exit_code().is_none(),
                "daemon::run returned while waiting for {what}: {:?}\n{}",
                self.running.outcome(),
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT_DEADLINE:?} waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.running.log()
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], b"")
    }

    /// `POST path` with an empty body.
    pub fn post(&self, path: &str) -> Response {
        request(self.addr, "POST", path, &[], b"")
    }

    /// Cancels the daemon's token and returns what `run` returned; panics when it has not
    /// returned within [`STOP_DEADLINE`].
    #[track_caller]
    pub fn stop(self) -> anyhow::Result<()> {
        match self.running.stop(STOP_DEADLINE) {
            None => panic!(
                "daemon::run did not return within {STOP_DEADLINE:?} of the cancel:\n{}",
                self.log()
            ),
            Some(PANICKED) => panic!("daemon::run panicked:\n{}", self.log()),
            Some(_) => self
                .running
                .outcome()
                .expect("run returned")
                .map_err(anyhow::Error::msg),
        }
    }
}
