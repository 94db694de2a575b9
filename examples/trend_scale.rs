//! How fast the failure index answers the trend questions (issue 22, item 2) at a given size,
//! in memory only: `cargo run --release --example trend_scale -- 1000000`. The failures are
//! spread over the last two days, a tenth of them in the last hour, so that every bucket
//! counts. Prints the median and the slowest of 9 runs of each question; the HTTP answer adds
//! the handler's few hundred microseconds (see docs/benchmarks.md, "Trend").

use std::time::Instant;

use chrono::Utc;
use rq_retryd::glob::ExceptionPattern;
use rq_retryd::index::{Observation, RecentFailures, Selection, State};

pub mod common;

use common::{Mix, EXCEPTIONS, FUNCTIONS, QUEUES};

fn main() {
    let n = common::size();
    // Three queues, three functions, four exception types; every job waiting, never tried.
    let mix = Mix {
        queues: &QUEUES[..3],
        functions: &FUNCTIONS[..3],
        exceptions: &EXCEPTIONS[..4],
    };
    let now = Utc::now();
    let mut index = common::build(n, |index, i, id| {
        // One in ten within the last hour, the rest over two days.
        let window_ms = if i % 10 == 0 { 3_600_000 } else { 172_800_000 };
        index.observe(&Observation {
            attempts: 0,
            state: State::Waiting,
            next_due: None,
            ..mix.observation(i, id, now - common::offset(i, window_ms))
        });
    });
    // Wall time, and this thread's time on a CPU (its CPU clock, see common), which a
    // busy machine does not inflate: the two differ by the time the thread waited for a core.
    let time = |name: &str, f: &mut dyn FnMut() -> u64| {
        let mut wall: Vec<f64> = Vec::new();
        let mut cpu: Vec<f64> = Vec::new();
        for _ in 0..9 {
            let (t, c) = (Instant::now(), common::thread_cpu_ms());
            std::hint::black_box(f());
            wall.push(t.elapsed().as_secs_f64() * 1000.0);
            cpu.push(common::thread_cpu_ms() - c);
        }
        wall.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        println!(
            "{name:<52} {:7.2} ms wall (max {:.2}), {:7.2} ms on CPU (max {:.2}); medians of 9",
            wall[4], wall[8], cpu[4], cpu[8]
        );
    };
    let all = Selection::default();
    let one_group = Selection {
        queue: Some("emails".into()),
        exception: Some(ExceptionPattern::new("ValueError").unwrap()),
        ..Selection::default()
    };
    time("timeline, everything", &mut || {
        index.timeline(&all, Utc::now()).total
    });
    time("timeline, queue + exception", &mut || {
        index.timeline(&one_group, Utc::now()).total
    });
    time(
        "recent + groups (index unchanged: kept failures)",
        &mut || {
            let recent = index.recent(&Selection::default(), Utc::now());
            index.groups().iter().map(|g| recent.of(g).last_15m).sum()
        },
    );
    // One new failure before each call makes every answer a pass over all entries, as during
    // an incident.
    let mut extra = 0usize;
    time("recent alone (after a change: a pass)", &mut || {
        extra += 1;
        let id = common::extra_id(extra);
        index.observe(&common::one_more(extra, &id, Utc::now()));
        u64::from(index.recent(&all, Utc::now()) != RecentFailures::default())
    });
    let t = index.timeline(&all, Utc::now());
    println!(
        "check: total {} = hours {} + earlier {} + later {}; last hour by minute {}",
        t.total,
        t.hours.counts.iter().sum::<u64>(),
        t.earlier,
        t.later,
        t.minutes.counts.iter().sum::<u64>()
    );
    common::print_peak();
}
