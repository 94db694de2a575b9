//! How many tests use the machine at once.
//!
//! Most tests wait: on `rq worker`s, on Chromium, on a daemon's next scan. So the program runs
//! more test threads than the machine has cores (`.cargo/config.toml`). A few tests load the
//! machine or time it closely (crash and fault injection, racing daemons, a rate within 10 %);
//! they were written for, and ran beside, one other test on the 2 threads of a 2-core machine.
//! They still do: they run one at a time ([`alone`]), and while one runs at most
//! [`BESIDE_A_HEAVY_TEST`] other test takes a seat ([`take_a_seat`]), so what they measure
//! does not change with the thread count.
//!
//! A test takes its seat the first time it starts something through `support` (a Redis, the
//! binary, a daemon in-process, an RQ venv, Chromium), and keeps it until its thread ends:
//! libtest runs each test on a thread of its own, named after the test. Threads a test spawns
//! itself take no seat (its seat covers them); waiting for one there could deadlock the test
//! that holds the seat against a heavy test waiting for it.

use std::cell::{Cell, RefCell};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// How many other tests may run while a heavy one does: one, as on two test threads.
const BESIDE_A_HEAVY_TEST: usize = 1;

/// Who uses the machine now.
struct Running {
    heavy: bool,
    seated: usize,
}

static RUNNING: Mutex<Running> = Mutex::new(Running {
    heavy: false,
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

/// One test counted in `RUNNING.seated`.
struct Seat;

impl Drop for Seat {
    fn drop(&mut self) {
        running().seated -= 1;
        CHANGED.notify_all();
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
    let mut now = wait_while(running(), |r| r.heavy && r.seated >= BESIDE_A_HEAVY_TEST);
    now.seated += 1;
    drop(now);
    SEAT.set(Some(Seat));
}

/// A heavy test's turn: no other heavy test runs, and at most [`BESIDE_A_HEAVY_TEST`] other
/// test holds a seat. Ends when dropped.
pub struct Alone {
    _turn: MutexGuard<'static, ()>,
}

/// Waits for the turn of a heavy test (see the module's doc).
pub fn alone() -> Alone {
    // A test that started something before it asked gives its seat back: it is the heavy one.
    SEAT.set(None);
    HEAVY_HERE.set(true);
    let turn = HEAVY_TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let mut now = running();
    now.heavy = true;
    drop(wait_while(now, |r| r.seated > BESIDE_A_HEAVY_TEST));
    Alone { _turn: turn }
}

impl Drop for Alone {
    fn drop(&mut self) {
        running().heavy = false;
        CHANGED.notify_all();
        HEAVY_HERE.set(false);
    }
}
