//! How fast the failure index answers a `q=` search, and what its search texts cost, in memory
//! only (no Redis, no HTTP): `cargo run --release --example search_scale -- 1000000`, and with
//! `--no-text` the same index without search texts (the difference in RSS is their cost).
//! Prints p50 / p99 over 41 runs of each search (a page of 50, newest first) and of a dry-run
//! tally, and the bytes the texts take per job. See docs/benchmarks.md, "Search".

use std::time::Instant;

use chrono::{TimeZone, Utc};
use rq_retryd::index::{FailureIndex, Known, Needle, Observation, Order, SearchText, Selection};

const RUNS: usize = 41;

pub mod common;

use common::{status_kib, Mix, EXCEPTIONS, FUNCTIONS, QUEUES};

fn main() {
    let n = common::size();
    let with_text = !std::env::args().any(|a| a == "--no-text");
    let rss_before = status_kib("VmRSS");
    let index = build(n, with_text);
    println!(
        "texts: {with_text}; VmRSS {:.1} -> {:.1} MiB ({:.0} B/job); search texts {:.1} MiB ({:.0} B/job)",
        rss_before as f64 / 1024.0,
        status_kib("VmRSS") as f64 / 1024.0,
        (status_kib("VmRSS") - rss_before) as f64 * 1024.0 / n as f64,
        index.search_text_bytes() as f64 / 1048576.0,
        index.search_text_bytes() as f64 / n as f64,
    );
    if !with_text {
        return;
    }
    for q in [
        "card_declined",
        "TIMED OUT",
        "app.tasks.bill",
        "order=4242",
        "0000-4000-8000-00000000",
        "4e7a",
        "no such text anywhere",
    ] {
        let query = Selection {
            q: Some(Needle::parse(q).expect("a valid search")),
            ..Selection::default()
        };
        let mut total = 0;
        let page = percentiles(|| {
            total = index.page(&query, Order::Newest, 0, 50).total;
        });
        let tally = percentiles(|| {
            index.tally(&query, 100);
        });
        println!(
            "q={q:?}: {total} found; page wall p50 {:.1} p99 {:.1} ms, cpu p50 {:.1} p99 {:.1} ms; tally wall p50 {:.1} p99 {:.1} ms, cpu p50 {:.1} p99 {:.1} ms",
            page.0 .0, page.0 .1, page.1 .0, page.1 .1, tally.0 .0, tally.0 .1, tally.1 .0, tally.1 .1
        );
    }
    // A search every job's description holds (as `bench/index_api.py`'s "acme"), a page
    // halfway through; and one that only a shared exception line holds.
    for (q, offset) in [("example.com", n / 2), ("connection refused", 0)] {
        let query = Selection {
            q: Some(Needle::parse(q).expect("a valid search")),
            ..Selection::default()
        };
        let mut total = 0;
        let page = percentiles(|| {
            total = index.page(&query, Order::Newest, offset, 50).total;
        });
        println!(
            "q={q:?} at offset {offset}: {total} found; page wall p50 {:.1} p99 {:.1} ms",
            page.0 .0, page.0 .1
        );
    }
    println!("VmHWM {:.1} MiB", status_kib("VmHWM") as f64 / 1024.0);
}

/// An index of `n` failures over 3 queues, 4 functions and 5 exception types, each with its
/// own description (its arguments) and exception line (its message names the order); one in
/// a thousand was declined with `card_declined`.
fn build(n: usize, with_text: bool) -> FailureIndex {
    let exceptions = [&EXCEPTIONS[..4], &["stripe.error.CardError"]].concat();
    let mix = Mix {
        queues: &QUEUES[..3],
        functions: &FUNCTIONS,
        exceptions: &exceptions,
    };
    let t0 = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    common::build(n, |index, i, id| {
        let entry = mix.observation(i, id, t0 + common::offset(i, 86_400_000));
        let (Known::Is(function), Known::Is(exception)) = (entry.function, entry.exception) else {
            unreachable!("the mix names every function and exception")
        };
        let line = match i % 5 {
            0 => format!(
                "{exception}: Error 111 connecting to db-{}:5432. Connection refused.",
                i % 7
            ),
            1 => format!("{exception}: invalid literal for int() with base 10: 'order={i}'"),
            2 => format!(
                "{exception}: timed out after 30 s waiting for smtp-{}",
                i % 3
            ),
            3 => format!("{exception}: 'customer_{}'", i % 10_000),
            _ if i % 1000 == 4 => format!("{exception}: Your card was declined. (card_declined)"),
            _ => format!("{exception}: Your card has insufficient funds. order={i}"),
        };
        let description = format!("{function}({i}, to='user{}@example.com')", i % 50_000);
        let text = SearchText {
            exception_line: Some(&line),
            description: Some(&description),
        };
        index.observe(&Observation {
            text: if with_text {
                Known::Is(text)
            } else {
                Known::Unknown
            },
            ..entry
        });
    })
}

/// (p50, p99) in milliseconds of [`RUNS`] runs of `f`: wall-clock time, and the CPU time of
/// this thread (which other processes on a shared machine do not inflate).
fn percentiles(mut f: impl FnMut()) -> ((f64, f64), (f64, f64)) {
    let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) = (0..RUNS)
        .map(|_| {
            let (t, c) = (Instant::now(), common::thread_cpu_ms());
            f();
            (
                t.elapsed().as_secs_f64() * 1000.0,
                common::thread_cpu_ms() - c,
            )
        })
        .unzip();
    let p = |ms: &mut Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        (at(0.5), at(0.99))
    };
    (p(&mut wall), p(&mut cpu))
}
