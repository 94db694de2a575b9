//! How fast the failure index answers at a given size, in memory only (no Redis, no HTTP):
//! `cargo run --release --example index_scale -- 1000000`. Prints the median of 9 runs of each
//! question. The end-to-end figures (HTTP, Redis, side by side with rq-dashboard) are the
//! index benchmark's; this isolates the index's own share of them.

use std::time::Instant;

use chrono::{TimeZone, Utc};
use rq_retryd::glob::{ExceptionPattern, GlobList};
use rq_retryd::index::{Observation, Order, Selection, State};

pub mod common;

use common::{Mix, EXCEPTIONS, FUNCTIONS, QUEUES};

fn main() {
    let n = common::size();
    // Three queues, four functions, five exception types; a fifth of the jobs under a second
    // policy.
    let mix = Mix {
        queues: &QUEUES[..3],
        functions: &FUNCTIONS,
        exceptions: &EXCEPTIONS[..5],
    };
    let t0 = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    let mut index = common::build(n, |index, i, id| {
        index.observe(&Observation {
            policy: Some(if i % 5 == 1 { "bad-input" } else { "transient" }),
            ..mix.observation(i, id, t0 + common::offset(i, 86_400_000))
        });
    });
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
        let id = common::extra_id(extra);
        index.observe(&common::one_more(extra, &id, t0));
        index.groups().len()
    });
    time("dry-run tally (exception filter)", &mut || {
        index.tally(&conn, 10).matched as usize
    });
    common::print_peak();
}
