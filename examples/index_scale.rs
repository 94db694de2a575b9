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
    // An operator retrying the oldest jobs one by one: each takes a group's first failure.
    let mut oldest = index.page(&all, Order::Oldest, 0, 9).jobs;
    time("groups (after removing the oldest job)", &mut || {
        let job = oldest.pop().expect("one a run");
        index.remove(&job.queue, &job.job_id);
        index.groups().len()
    });
    // The reconcile's size check asks for every queue's span each second; in an incident the
    // index has changed since the last time.
    time("queue spans (after a change)", &mut || {
        extra += 1;
        let id = common::extra_id(extra);
        index.observe(&common::one_more(extra, &id, t0));
        index.queue_spans().len()
    });
    time("page at offset n * 3/4, newest", &mut || {
        index
            .page(&all, Order::Newest, index.len() * 3 / 4, 50)
            .jobs
            .len()
    });
    time("dry-run tally (exception filter)", &mut || {
        index.tally(&conn, 10).matched as usize
    });
    time("dry-run tally (everything)", &mut || {
        index.tally(&all, 10).matched as usize
    });
    random_pages(&index, t0);
    common::print_peak();
}

/// Pages of random selections at random offsets, drawn as `bench/index_api.py`'s random list
/// requests draw them (queue, function, exception, state, order, a time bound in a quarter of
/// them; an offset within the selection's total): the distribution, and the slowest five.
fn random_pages(index: &rq_retryd::index::FailureIndex, t0: chrono::DateTime<Utc>) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let functions = [
        "app.tasks.*",
        "app.*.b*",
        "*.pull",
        FUNCTIONS[0],
        FUNCTIONS[2],
    ];
    let exceptions = ["*Error", "Timeout?rror", EXCEPTIONS[0], EXCEPTIONS[3]];
    let states = [
        State::Waiting,
        State::Ignored,
        State::Unmatched,
        State::Due,
        State::Exhausted,
    ];
    let mut runs = Vec::new();
    while runs.len() < 100 {
        let pick = |k: usize, of: usize| (k < of).then_some(k);
        let mut s = Selection::default();
        let mut what = Vec::new();
        if let Some(k) = pick(next(QUEUES.len() + 2), 3) {
            s.queue = Some(QUEUES[k].to_string());
            what.push(format!("queue={}", QUEUES[k]));
        }
        if let Some(k) = pick(next(functions.len() + 3), functions.len()) {
            s.function = Some(GlobList::new(&[functions[k].to_string()]).unwrap());
            what.push(format!("function={}", functions[k]));
        }
        if let Some(k) = pick(next(exceptions.len() + 3), exceptions.len()) {
            s.exception = Some(ExceptionPattern::new(exceptions[k]).unwrap());
            what.push(format!("exception={}", exceptions[k]));
        }
        if let Some(k) = pick(next(states.len() + 2), states.len()) {
            s.state = Some(states[k]);
            what.push(format!("state={:?}", states[k]));
        }
        if next(4) == 0 {
            let at = t0 + chrono::Duration::milliseconds(next(86_400_000) as i64);
            if next(2) == 0 {
                s.failed_before = Some(at);
                what.push("failed_before".into());
            } else {
                s.failed_after = Some(at);
                what.push("failed_after".into());
            }
        }
        let order = if next(2) == 0 {
            Order::Newest
        } else {
            Order::Oldest
        };
        let total = index.page(&s, order, 0, 1).total as usize;
        if total == 0 && next(10) != 0 {
            continue;
        }
        let offset = if total > 0 { next(total) } else { 0 };
        let t = Instant::now();
        std::hint::black_box(index.page(&s, order, offset, 50).jobs.len());
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        runs.push((
            ms,
            format!("{} {order:?} offset {offset} of {total}", what.join(" ")),
        ));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "{:<48} {:7.2} ms (median of 100; p99 {:.2}, max {:.2})",
        "random selections at random offsets", runs[49].0, runs[98].0, runs[99].0
    );
    for (ms, what) in runs.iter().rev().take(5) {
        println!("    {ms:7.2} ms  {what}");
    }
}
