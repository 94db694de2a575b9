//! How many tests use the machine at once.
//!
//! Most tests wait: on `rq worker`s, on Chromium, on a daemon's next scan. So the program runs
//! more test threads than the machine has cores (`.cargo/config.toml`). A few tests are heavy:
//! they load the whole machine (crash and fault injection, racing daemons, a failure storm) or
//! time it closely (a rate within 10 %, a lease taken over within two lease times). No two heavy
//! tests run at once, and while one runs, fewer other tests take a seat ([`take_a_seat`]):
//!
//! - [`alone`] (`support::one_heavy_test_at_a_time`): a test whose assertions are times (a
//!   rate, a takeover deadline) runs beside at most [`BESIDE_A_TIMED_TEST`] other test, as on
//!   the 2 threads of a 2-core machine it was written for, so what it measures does not change
//!   with the thread count;
//! - [`loading`]: a test that loads the machine but asserts what happened, not how fast (every
//!   job in one place after a `kill -9`, a hung Redis answered within seconds), runs beside at
//!   most [`BESIDE_A_LOADING_TEST`] others. It only gets slower beside them; its deadlines are
//!   tens of seconds, the slack of a loaded machine.
//!
//! The heavy tests hold the program's critical path: they run one after another, about 110 s in
//! all on a 2-core machine. libtest starts tests in name order, and most heavy ones are named
//! `reliability_*`, `storm`, `switchboard`: with as many threads as seats they started last, and
//! the program ended with them alone. So the program runs a thread for every test
//! (`.cargo/config.toml`), every test starts at once, and the seats, not the threads, say how
//! many use the machine: at most [`SEATS`] at a time, and while any heavy test waits for its
//! turn or runs, at most as many as that heavy test allows beside it. The heavy tests thus run
//! from the start, beside a few others, and the rest take all the seats when they are done.
//! Hence heavy tests are still kept few (a test that starts one Chromium or one daemon is not
//! heavy: `first_paint`, `circuit_breaker`) and short (seeded data sized to what the assertion
//! needs, not more).
//!
//! A test takes its seat the first time it starts something through `support` (a Redis, the
//! binary, a daemon in-process, an RQ venv, Chromium), and keeps it until its thread ends:
//! libtest runs each test on a thread of its own, named after the test. Threads a test spawns
//! itself take no seat (its seat covers them); waiting for one there could deadlock the test
//! that holds the seat against a heavy test waiting for it.

use std::cell::{Cell, RefCell};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// How many other tests may run while a timed heavy test ([`alone`]) does: one, as on two test
/// threads.
const BESIDE_A_TIMED_TEST: usize = 1;
/// How many other tests may run while a [`loading`] heavy test does. 4 since the heavy tests
/// run from the start (see the module's doc): with 2, the integration program took 178 s on a
/// 2-core machine, with 4 146 s, and each heavy test's own time grew by at most 13%.
const BESIDE_A_LOADING_TEST: usize = 4;
/// How many tests use the machine at once when no heavy test waits or runs: the 6 test threads
/// the program ran with before it ran one for every test.
const SEATS: usize = 6;

/// Who uses the machine now.
struct Running {
    /// While a heavy test runs (or waits for the seats to empty): how many may sit beside it.
    beside_heavy: Option<usize>,
    /// Heavy tests that asked for their turn and have not ended.
    heavy_asked: usize,
    seated: usize,
}

impl Running {
    /// Whether a test asking for a seat must wait.
    fn full(&self) -> bool {
        let limit = match self.beside_heavy {
            Some(beside) => beside,
            // A heavy test waits for its turn: keep the seats it will allow beside it.
            None if self.heavy_asked > 0 => BESIDE_A_LOADING_TEST,
            None => SEATS,
        };
        self.seated >= limit
    }
}

static RUNNING: Mutex<Running> = Mutex::new(Running {
    beside_heavy: None,
    heavy_asked: 0,
    seated: 0,
});
/// Notified whenever `RUNNING` changes.
static CHANGED: Condvar = Condvar::new();
/// The heavy tests queue here, so that `RUNNING` only sees one of them at a time.
static HEAVY_TURN: Mutex<()> = Mutex::new(());

thread_local! {
    /// This test's seat, given back when its thread ends.
    static SEAT: RefCell<Option<Seat>> = const { RefCell::new(None) };
    /// Whether this thread runs a heavy test (which needs no seat).
    static HEAVY_HERE: Cell<bool> = const { Cell::new(false) };
}

fn running() -> MutexGuard<'static, Running> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `CHANGED` while `blocked` holds.
fn wait_while(
    mut now: MutexGuard<'static, Running>,
    blocked: impl Fn(&Running) -> bool,
) -> MutexGuard<'static, Running> {
    while blocked(&now) {
        now = CHANGED.wait(now).unwrap_or_else(PoisonError::into_inner);
    }
    now
}

/// One test counted in `RUNNING.seated`: since when it waited for the seat, and since when it
/// holds it.
struct Seat {
    asked: Instant,
    seated: Instant,
}

/// When the first test asked for a seat or a turn.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Now, after the epoch is set (the first call sets it).
fn now_since_epoch() -> Instant {
    epoch();
    Instant::now()
}

/// With `RQ_RETRYD_TEST_TIMES=<file>`, each test that took a seat or a heavy turn appends a
/// line `<test>\t<seat|heavy>\t<seconds waited>\t<seconds run>\t<asked at, since the first
/// ask>` there when it ends: where the program's time goes (libtest's own `--report-time`
/// needs a nightly toolchain).
fn report_time(kind: &str, asked: Instant, started: Instant) {
    let Some(path) = std::env::var_os("RQ_RETRYD_TEST_TIMES") else {
        return;
    };
    let epoch = epoch();
    let name = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!(
        "{name}\t{kind}\t{:.2}\t{:.2}\t{:.2}\n",
        (started - asked).as_secs_f64(),
        started.elapsed().as_secs_f64(),
        asked.saturating_duration_since(epoch).as_secs_f64()
    );
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut file) = file {
        let _ = std::io::Write::write_all(&mut file, line.as_bytes());
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        running().seated -= 1;
        CHANGED.notify_all();
        report_time("seat", self.asked, self.seated);
    }
}

/// libtest names each test's thread after the test (`module::name`); threads a test spawns
/// are unnamed or named otherwise.
fn on_a_test_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|name| name.contains("::"))
}

/// Called by the fixtures that start something: the first call of a test waits while a heavy
/// test runs beside another one already, then holds a seat until the test's thread ends.
pub fn take_a_seat() {
    if !on_a_test_thread() || HEAVY_HERE.get() || SEAT.with_borrow(Option::is_some) {
        return;
    }
    let asked = now_since_epoch();
    let mut now = wait_while(running(), Running::full);
    now.seated += 1;
    drop(now);
    SEAT.set(Some(Seat {
        asked,
        seated: Instant::now(),
    }));
}

/// A heavy test's turn: no other heavy test runs, and at most [`BESIDE_A_TIMED_TEST`] or
/// [`BESIDE_A_LOADING_TEST`] other tests hold a seat. Ends when dropped.
pub struct Alone {
    _turn: MutexGuard<'static, ()>,
    asked: Instant,
    started: Instant,
}

/// Waits for the turn of a heavy test that loads the machine but times nothing closely (see
/// the module's doc).
pub fn loading() -> Alone {
    heavy_turn(BESIDE_A_LOADING_TEST)
}

/// Waits for the turn of a heavy test that times the machine closely (see the module's doc).
pub fn alone() -> Alone {
    heavy_turn(BESIDE_A_TIMED_TEST)
}

/// Waits for the turn of a test that changes what every test shares (it installs the Debian
/// package into `/`, and with it `/etc/rq-retryd/config.toml`, which the binary reads when no
/// config is named): no other test holds a seat while it runs. Since every test starts at once,
/// it would otherwise run beside one that runs the binary with only environment variables.
pub fn exclusive() -> Alone {
    heavy_turn(0)
}

fn heavy_turn(beside: usize) -> Alone {
    let asked = now_since_epoch();
    // A test that started something before it asked gives its seat back: it is the heavy one.
    SEAT.set(None);
    HEAVY_HERE.set(true);
    running().heavy_asked += 1;
    CHANGED.notify_all();
    let turn = HEAVY_TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let mut now = running();
    now.beside_heavy = Some(beside);
    drop(wait_while(now, |r| r.seated > beside));
    Alone {
        _turn: turn,
        asked,
        started: Instant::now(),
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        {
            let mut now = running();
            now.beside_heavy = None;
            now.heavy_asked -= 1;
        }
        CHANGED.notify_all();
        HEAVY_HERE.set(false);
        report_time("heavy", self.asked, self.started);
    }
}
