//! The synthetic failure index the `*_scale` examples measure: one builder, so that the
//! examples differ only in the mix they ask for and in what they time. Each example declares
//! it `pub mod common;` and uses the part it needs.
//!
//! Ids look like RQ's UUIDs; failure times are spread by `i * 7919` (a prime) modulo a
//! window, so that consecutive entries are not in time order.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use rq_retryd::index::{FailureIndex, Known, Observation, State};

pub const QUEUES: [&str; 4] = ["default", "emails", "reports", "archive"];
pub const FUNCTIONS: [&str; 4] = [
    "app.tasks.send",
    "app.tasks.bill",
    "app.reports.build",
    "app.sync.pull",
];
pub const EXCEPTIONS: [&str; 6] = [
    "ConnectionError",
    "ValueError",
    "TimeoutError",
    "KeyError",
    "SMTPServerDisconnected",
    "PermissionError",
];

/// The index size: the first numeric argument, a million when there is none.
pub fn size() -> usize {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000)
}

/// The `i`th job's id, shaped like RQ's UUIDs.
pub fn job_id(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i * 7919)
}

/// Where in a window of `window_ms` the `i`th failure falls.
pub fn offset(i: usize, window_ms: i64) -> Duration {
    Duration::milliseconds((i as i64 * 7919) % window_ms)
}

/// Fills an index with `n` entries, `observe` adding the `i`th under its id, and prints how
/// long that took.
pub fn build(n: usize, mut observe: impl FnMut(&mut FailureIndex, usize, &str)) -> FailureIndex {
    let started = Instant::now();
    let mut index = FailureIndex::default();
    index.reserve_total(n);
    index.begin_scan();
    for i in 0..n {
        observe(&mut index, i, &job_id(i));
    }
    println!(
        "built {n} entries in {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    index
}

/// Which names the entries cycle through: the `i`th takes `queues[i % len]` and likewise.
pub struct Mix<'a> {
    pub queues: &'a [&'a str],
    pub functions: &'a [&'a str],
    pub exceptions: &'a [&'a str],
}

impl<'a> Mix<'a> {
    /// The `i`th entry: the mix's names, 0–2 attempts, policy `transient`, waiting, due, exhausted
    /// or unmatched in turn, next due 5 minutes after the failure, no search text.
    pub fn observation<'b>(
        &self,
        i: usize,
        id: &'b str,
        failed_at: DateTime<Utc>,
    ) -> Observation<'b>
    where
        'a: 'b,
    {
        Observation {
            queue: self.queues[i % self.queues.len()],
            job_id: id,
            score: 1e10 + i as f64,
            failed_at,
            function: Known::Is(self.functions[i % self.functions.len()]),
            exception: Known::Is(self.exceptions[i % self.exceptions.len()]),
            attempts: (i % 3) as u32,
            exhausted: false,
            policy: Some("transient"),
            state: [
                State::Waiting,
                State::Due,
                State::Exhausted,
                State::Unmatched,
            ][i % 4],
            next_due: Some(failed_at + Duration::minutes(5)),
            text: Known::Unknown,
        }
    }
}

/// The id of the `extra`th failure added after the build (see [`one_more`]).
pub fn extra_id(extra: usize) -> String {
    format!("ffffffff-0000-4000-8000-{extra:012x}")
}

/// One new failure, added before a timed call so that the index has changed and the answer
/// is a pass over all entries, as on a Redis where failures keep arriving.
pub fn one_more(extra: usize, id: &str, failed_at: DateTime<Utc>) -> Observation<'_> {
    Observation {
        queue: QUEUES[0],
        job_id: id,
        score: 2e10 + extra as f64,
        failed_at,
        function: Known::Is(FUNCTIONS[0]),
        exception: Known::Is(EXCEPTIONS[0]),
        attempts: 0,
        exhausted: false,
        policy: Some("transient"),
        state: State::Waiting,
        next_due: None,
        text: Known::Unknown,
    }
}

/// A field of /proc/self/status in KiB (`VmRSS`, `VmHWM`); 0 when unreadable.
pub fn status_kib(field: &str) -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Prints the process's peak resident memory (`VmHWM`).
pub fn print_peak() {
    println!("VmHWM: {} kB", status_kib("VmHWM"));
}

/// Milliseconds this thread has run on a CPU: time that other processes on a shared machine
/// do not inflate, unlike the wall clock.
pub fn thread_cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1000.0 + t.tv_nsec as f64 / 1e6
}
