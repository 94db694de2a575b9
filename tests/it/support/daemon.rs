//! The whole daemon in-process: `rq_retryd::daemon::run` on a port-0 listener, stopped by
//! cancelling its token. No binary, no config file, no signals: a test reaches the daemon's
//! state directly and sees what `run` returned. For plain `#[test]`s, like the rest of the
//! support code (its HTTP client blocks).
//!
//! `run` gets a thread and a runtime of its own and is driven by `block_on`, as the binary
//! drives it, so that the blocking HTTP client of the tests never stalls the daemon's runtime.
//! (Its future is `Send`: `daemon::tests::the_daemon_future_is_send`.)

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rq_retryd::state::DaemonState;
use tokio_util::sync::CancellationToken;

use super::http::{request, try_request, Response};

/// How long the daemon may take to answer `/healthz`, and a `wait_until` to hold.
const WAIT_DEADLINE: Duration = Duration::from_secs(30);
/// How long `run` may take to return after the cancel: the shutdown grace and some.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// A daemon running in this process; cancelled (without waiting) on drop.
pub struct InProcess {
    pub addr: SocketAddr,
    /// The daemon's shared state, as the HTTP API and the loops see it.
    pub state: Arc<DaemonState>,
    cancel: CancellationToken,
    /// What `run` returned, once it has.
    returned: mpsc::Receiver<anyhow::Result<()>>,
    thread: std::thread::JoinHandle<()>,
}

impl InProcess {
    /// Parses `config_text` (its `[http] listen` is not used: the daemon gets a listener on
    /// 127.0.0.1:0), starts the daemon and waits until `/healthz` answers.
    #[track_caller]
    pub fn start(config_text: &str) -> InProcess {
        super::machine::take_a_seat();
        // The daemon's log goes to the test's captured output (shown when a test fails).
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_test_writer()
            .try_init();
        let config = rq_retryd::config::parse(config_text, "in-process.toml")
            .unwrap_or_else(|e| panic!("invalid config:\n{e}"));
        let state = DaemonState::new(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let cancel = CancellationToken::new();
        let (tx, returned) = mpsc::channel();
        let (daemon_state, daemon_cancel) = (state.clone(), cancel.clone());
        let thread = std::thread::Builder::new()
            .name("in-process-daemon".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a runtime for the daemon");
                let outcome = runtime.block_on(async {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    rq_retryd::daemon::run(listener, daemon_state, daemon_cancel).await
                });
                let _ = tx.send(outcome);
                // What the daemon left running ends here, as it would with the process.
                runtime.shutdown_background();
            })
            .expect("a thread for the daemon");
        let daemon = InProcess {
            addr,
            state,
            cancel,
            returned,
            thread,
        };
        daemon.wait_until("/healthz answers 200", |d| {
            try_request(d.addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
        });
        daemon
    }

    /// Polls `check` every 20 ms until it holds; panics after 30 s, or when `run` returned.
    #[track_caller]
    pub fn wait_until(&self, what: &str, mut check: impl FnMut(&InProcess) -> bool) {
        let deadline = Instant::now() + WAIT_DEADLINE;
        loop {
            if check(self) {
                return;
            }
            assert!(
                !self.thread.is_finished(),
                "daemon::run returned while waiting for {what}: {:?}",
                self.returned.try_recv()
            );
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT_DEADLINE:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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
        self.cancel.cancel();
        match self.returned.recv_timeout(STOP_DEADLINE) {
            Ok(outcome) => outcome,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("daemon::run did not return within {STOP_DEADLINE:?} of the cancel")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("daemon::run panicked"),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
