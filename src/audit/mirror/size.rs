//! What the mirror costs per entry, measured: the heap bytes the test's own thread holds after
//! mirroring a full stream (10,000 entries), counted by a global allocator that only counts
//! while a thread asks it to (the other tests of this binary run on other threads). Run with
//! `cargo test --lib audit::mirror::size -- --nocapture` to see the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::Mirrored;
use crate::audit::RawEntry;

/// The system allocator, counting the bytes live on a thread while that thread counts.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down has no locals any more, and counts nothing.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = LIVE.try_with(|live| live.set(live.get() + delta));
        }
    });
}

// SAFETY: every call goes to `System` unchanged; the counting touches only const-initialised
// thread locals without destructors, which allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The heap bytes `f` leaves allocated on this thread.
fn retained(f: impl FnOnce()) -> isize {
    LIVE.with(|l| l.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    LIVE.with(|l| l.get())
}

/// An entry as the write scripts append it: `ids` UUIDs; nine in ten by the supervisor, the
/// others by one of a few people; three queues, a `to_queue` on requeues.
fn raw(n: usize, ids: usize) -> RawEntry {
    let job_ids: Vec<String> = (0..ids)
        .map(|i| format!("{:08x}-0000-4000-8000-{:012x}", n, i * 7919))
        .collect();
    let who = if n.is_multiple_of(10) {
        format!("ops-{}@10.0.0.{}", ["alice", "bob"][n % 2], n % 7)
    } else {
        "supervisor".to_string()
    };
    let queue = ["default", "emails", "reports"][n % 3];
    let mut fields: Vec<(&str, String)> = vec![
        ("at", "2026-12-03T12:00:00.123456+00:00".into()),
        ("who", who),
        ("action", "requeue".into()),
        ("why", "transient-network".into()),
        ("queue", queue.into()),
        ("count", ids.to_string()),
        ("job_ids", job_ids.join(",")),
        ("job_ids_json", serde_json::to_string(&job_ids).unwrap()),
        ("to_queue", queue.into()),
    ];
    if n.is_multiple_of(5) {
        fields.push(("last_at", "2026-12-03T12:00:30+00:00".into()));
    }
    let fields = fields
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
        .collect();
    (
        format!("{}-{}", 1_764_763_200_000 + n as u64, n % 3),
        fields,
    )
}

/// Bytes per entry of a mirror of 10,000 entries of `ids` ids each.
fn per_entry(ids: usize) -> f64 {
    const ENTRIES: usize = 10_000;
    let raws: Vec<RawEntry> = (0..ENTRIES).map(|n| raw(n, ids)).collect();
    let mut mirror = Mirrored::default();
    let bytes = retained(|| {
        for r in &raws {
            mirror.push(r);
        }
    });
    assert_eq!(mirror.entries.len(), ENTRIES);
    let per = bytes as f64 / ENTRIES as f64;
    println!(
        "audit mirror: {ids} ids an entry: {bytes} bytes for {ENTRIES} entries, {per:.0} per entry"
    );
    per
}

#[test]
fn a_full_stream_of_100_id_entries_costs_at_most_500_bytes_an_entry() {
    assert_eq!(std::mem::size_of::<crate::audit::filter::Summary>(), 48);
    let per = per_entry(100);
    assert!(per <= 500.0, "{per:.0} bytes per entry");
    let per = per_entry(50);
    assert!(per <= 300.0, "{per:.0} bytes per entry");
}
