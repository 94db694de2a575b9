//! How fast the failure index answers at a given size, in memory only (no Redis, no HTTP):
//! `cargo run --release --example index_scale -- 1000000`. Prints the median of 9 runs of each
//! question. The end-to-end figures (HTTP, Redis, side by side with rq-dashboard) are the
//! index benchmark's; this isolates the index's own share of them.

use std::time::Instant;

use chrono::{TimeZone, Utc};
use rq_retryd::glob::{ExceptionPattern, GlobList};
use rq_retryd::index::{FailureIndex, Known, Observation, Order, Selection, State};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let queues = ["default", "emails", "reports"];
    let functions = [
        "app.tasks.send",
        "app.tasks.bill",
        "app.reports.build",
        "app.sync.pull",
    ];
    let exceptions = [
        "ConnectionError",
        "ValueError",
        "TimeoutError",
        "KeyError",
        "SMTPServerDisconnected",
    ];
    let t0 = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    let mut index = FailureIndex::default();
    let started = Instant::now();
    index.reserve_total(n);
    index.begin_scan();
    for i in 0..n {
        let id = format!("{:08x}-0000-4000-8000-{:012x}", i, i * 7919);
        let failed_at = t0 + chrono::Duration::milliseconds((i as i64 * 7919) % 86_400_000);
        index.observe(&Observation {
            queue: queues[i % 3],
            job_id: &id,
            score: 1e10 + i as f64,
            failed_at,
            function: Known::Is(functions[i % 4]),
            exception: Known::Is(exceptions[i % 5]),
            attempts: (i % 3) as u32,
            exhausted: false,
            policy: Some(if i % 5 == 1 { "bad-input" } else { "transient" }),
            state: [
                State::Waiting,
                State::Due,
                State::Exhausted,
                State::Unmatched,
            ][i % 4],
            next_due: Some(failed_at + chrono::Duration::minutes(5)),
            text: Known::Unknown,
        });
    }
    println!(
        "built {n} entries in {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let time = |name: &str, f: &mut dyn FnMut() -> usize| {
        let mut ms: Vec<f64> = (0..9)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "{name:<48} {:7.2} ms (median of 9; max {:.2})",
            ms[4], ms[8]
        );
    };
    let all = Selection::default();
    let conn = Selection {
        exception: Some(ExceptionPattern::new("ConnectionError").unwrap()),
        ..Selection::default()
    };
    let mixed = Selection {
        queue: Some("emails".into()),
        function: Some(GlobList::new(&["app.tasks.*".to_string()]).unwrap()),
        state: Some(State::Waiting),
        failed_after: Some(t0 + chrono::Duration::hours(2)),
        ..Selection::default()
    };
    time("queue counts", &mut || index.queue_counts().len());
    time("first page, all queues, newest", &mut || {
        index.page(&all, Order::Newest, 0, 50).jobs.len()
    });
    time("page at offset 150,000, newest", &mut || {
        index.page(&all, Order::Newest, 150_000, 50).jobs.len()
    });
    time("exception filter, offset 100,000, oldest", &mut || {
        index.page(&conn, Order::Oldest, 100_000, 50).jobs.len()
    });
    time("queue+function+state+time filter, first page", &mut || {
        index.page(&mixed, Order::Newest, 0, 50).jobs.len()
    });
    time("groups (reused: the index has not changed)", &mut || {
        index.groups().len()
    });
    // `groups` keeps its answer until the index changes: one new failure before each call
    // makes every answer a full pass, as on a Redis where failures keep arriving.
    let mut extra = 0usize;
    time("groups (after a change)", &mut || {
        extra += 1;
        let id = format!("ffffffff-0000-4000-8000-{extra:012x}");
        index.observe(&Observation {
            queue: "default",
            job_id: &id,
            score: 2e10 + extra as f64,
            failed_at: t0,
            function: Known::Is(functions[0]),
            exception: Known::Is(exceptions[0]),
            attempts: 0,
            exhausted: false,
            policy: Some("transient"),
            state: State::Waiting,
            next_due: None,
            text: Known::Unknown,
        });
        index.groups().len()
    });
    time("dry-run tally (exception filter)", &mut || {
        index.tally(&conn, 10).matched as usize
    });
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("")
        .to_string();
    println!("{rss}");
}
