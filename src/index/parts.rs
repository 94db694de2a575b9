//! Answers that walk every entry, over contiguous parts of the entries at once: one part per
//! core, each on its own thread (the first on the caller's), merged in entry order, so that an
//! answer is the same as one pass's. At five million failed jobs one pass over whole entries
//! took 20–200 ms on one core (issue 24, item 3); the listing, the dry runs, the searches (and
//! their groups) and the what-if then take about half on two. A filter's pass reads only the
//! entries' 16-byte column ([`super::stored`]): a filtered page at 5M takes 2–20 ms on two
//! cores. `groups` itself needs no pass (see [`super::tallies`]).
//!
//! A listing page deep in a large selection is found without holding every match: one pass
//! marks the matches (a bit each), notes each match's slice of the entries' range of failure
//! times ([`BUCKETS`] slices, [`super::TimeSpan`]; two bytes a match) and counts the matches in
//! each slice; then only the matches in the slices the page falls in are read again. Holding
//! every match's sort key and position took 80 MB at five million; reading every match again
//! to find its slice took a second pass over the entries' memory (issue 24, item 3).

use std::collections::BinaryHeap;
use std::sync::OnceLock;

use super::stored::{EntryRef, Hot, Kinds, Stored};
use super::{Entry, FailureIndex, Order, Page, Selection, Test, TOP_K_MAX};
use crate::jobkey::JobKey;

/// Below this many entries an answer is one pass on the calling thread: starting a thread
/// (tens of microseconds) would cost more than it saves. The unit tests split from two
/// entries on, so that their small indexes are answered in parts too.
const PARALLEL_MIN: usize = if cfg!(test) { 2 } else { 100_000 };
/// At most this many parts, however many cores.
const PARTS_MAX: usize = 8;
/// The slices of the matches' range of failure times that a deep page is looked for in (few
/// in the unit tests, so that a slice holds many matches and ties there).
const BUCKETS: usize = if cfg!(test) { 8 } else { 1 << 16 };
// A match's slice is noted in two bytes.
const _: () = assert!(BUCKETS <= 1 << 16);

/// A run of the index's entries.
#[derive(Clone, Copy)]
pub(super) struct Part<'a> {
    /// Which part (they are numbered in entry order, the same way for every pass over an
    /// unchanged index).
    pub index: usize,
    /// The position of its first entry in the index.
    pub start: usize,
    /// Its entries' keys and stored fields, and their hot fields, at the same offsets.
    pub entries: &'a [((u16, JobKey), Stored)],
    pub hot: &'a [Hot],
    pub kinds: &'a Kinds,
}

impl<'a> Part<'a> {
    /// The part's entries with their positions in the index, each read whole.
    pub fn iter(self) -> impl Iterator<Item = (u32, &'a (u16, JobKey), Entry)> {
        self.refs().map(|(pos, r)| (pos, r.key(), r.entry()))
    }

    /// The part's entries with their positions in the index, each read only as far as asked
    /// (see [`super::stored`]).
    pub fn refs(self) -> impl Iterator<Item = (u32, EntryRef<'a>)> {
        let (start, kinds) = (self.start, self.kinds);
        self.hot
            .iter()
            .zip(self.entries)
            .enumerate()
            .map(move |(i, (h, cold))| ((start + i) as u32, EntryRef::new(h, cold, kinds)))
    }
}

/// How many parts an answer over `len` entries is split into.
pub(super) fn parts_for(len: usize) -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    if len < PARALLEL_MIN {
        return 1;
    }
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    cores.clamp(1, PARTS_MAX)
}

/// A page's matches: their sort keys and positions, the page's sorted from `first`.
#[derive(Default)]
struct Found {
    total: u64,
    unknown: u64,
    hits: Vec<(i64, u32)>,
    first: usize,
}

/// One part's matches as bits, each match's time slice (in the bits' order), and how many
/// fall in each slice.
struct Marked {
    bits: Vec<u64>,
    slices: Vec<u16>,
    counts: Vec<u32>,
    total: u64,
    unknown: u64,
}

impl Marked {
    /// The offsets within the part of its matches, in order.
    fn offsets(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(word, &bits)| {
            let mut left = bits;
            std::iter::from_fn(move || {
                (left != 0).then(|| {
                    let bit = left.trailing_zeros() as usize;
                    left &= left - 1;
                    word * 64 + bit
                })
            })
        })
    }
}

impl FailureIndex {
    /// `each` over the entries in parts (see the module documentation), the answers in entry
    /// order. A part whose thread cannot be started is answered on the caller's.
    pub(super) fn in_parts<'s, R: Send>(&'s self, each: impl Fn(Part<'s>) -> R + Sync) -> Vec<R> {
        let all = self.entries.as_slice();
        let hot = self.entries.hot_slice();
        let len = all.len();
        let parts = parts_for(len);
        let size = len.div_ceil(parts).max(1);
        let part = |index: usize| {
            let start = (index * size).min(len);
            let end = (start + size).min(len);
            Part {
                index,
                start,
                entries: &all[start..end],
                hot: &hot[start..end],
                kinds: &self.kinds,
            }
        };
        if parts == 1 {
            return vec![each(part(0))];
        }
        std::thread::scope(|s| {
            let each = &each;
            let others: Vec<_> = (1..parts)
                .map(|i| {
                    let p = part(i);
                    std::thread::Builder::new()
                        .name("index-part".into())
                        .spawn_scoped(s, move || each(p))
                        .map_err(|_| p)
                })
                .collect();
            let mut out = Vec::with_capacity(parts);
            out.push(each(part(0)));
            for other in others {
                out.push(match other {
                    Ok(thread) => thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    Err(p) => each(p),
                });
            }
            out
        })
    }

    /// One page of `query` in `order`, from `offset`: linear in the index's size whatever the
    /// offset, in parts.
    pub fn page(&self, query: &Selection, order: Order, offset: usize, limit: usize) -> Page {
        // Newest first sorts by descending failure time; ties in failure time are ordered by
        // position, so that pages do not overlap.
        let key = move |h: &Hot| match order {
            Order::Newest => -h.failed_at_us,
            Order::Oldest => h.failed_at_us,
        };
        let wanted = offset.saturating_add(limit);
        let everything = query
            .is_everything()
            .then(|| self.everything(&key, order, offset, limit))
            .flatten();
        let found = if let Some(found) = everything {
            found
        } else if wanted <= TOP_K_MAX {
            self.front(query, key, offset, wanted)
        } else {
            let (lo, hi) = (self.times.lo, self.times.hi);
            let range = match order {
                Order::Newest => (hi.saturating_neg(), lo.saturating_neg()),
                Order::Oldest => (lo, hi),
            };
            self.deep(query, key, range, offset, limit)
        };
        let jobs = found
            .hits
            .iter()
            .skip(found.first)
            .take(limit)
            .map(|&(_, pos)| {
                let r = self.entry_ref(pos as usize);
                self.listed(r.key(), &r.entry())
            })
            .collect();
        Page {
            total: found.total,
            unknown: found.unknown,
            jobs,
        }
    }

    /// A page near the front: each part keeps only its first `wanted` matches in a bounded
    /// heap.
    fn front(
        &self,
        query: &Selection,
        key: impl Fn(&Hot) -> i64 + Sync,
        offset: usize,
        wanted: usize,
    ) -> Found {
        let test = || {
            let c = self.compile(query);
            move |r: EntryRef<'_>| c.test(r)
        };
        self.front_by(test, key, offset, wanted)
    }

    /// [`FailureIndex::front`] of the entries a test matches (`test` makes one for each part).
    fn front_by<T: Fn(EntryRef<'_>) -> Test>(
        &self,
        test: impl Fn() -> T + Sync,
        key: impl Fn(&Hot) -> i64 + Sync,
        offset: usize,
        wanted: usize,
    ) -> Found {
        let parts = self.in_parts(|part| {
            let test = test();
            let (mut total, mut unknown) = (0u64, 0u64);
            let mut heap = BinaryHeap::with_capacity(wanted + 1);
            for (pos, r) in part.refs() {
                match test(r) {
                    Test::Match => {
                        total += 1;
                        let hit = (key(r.hot), pos);
                        if heap.len() < wanted {
                            heap.push(hit);
                        } else if heap.peek().is_some_and(|top| hit < *top) {
                            heap.pop();
                            heap.push(hit);
                        }
                    }
                    Test::Unknown => unknown += 1,
                    Test::No => {}
                }
            }
            (total, unknown, heap.into_vec())
        });
        let mut found = Found::default();
        for (total, unknown, hits) in parts {
            found.total += total;
            found.unknown += unknown;
            found.hits.extend(hits);
        }
        found.hits.sort_unstable();
        found.hits.truncate(wanted);
        found.first = offset.min(found.hits.len());
        found
    }

    /// A page past [`TOP_K_MAX`]: two passes, keeping only the matches in the time slices the
    /// page falls in (see the module documentation).
    fn deep(
        &self,
        query: &Selection,
        key: impl Fn(&Hot) -> i64 + Sync,
        (lo, hi): (i64, i64),
        offset: usize,
        limit: usize,
    ) -> Found {
        // In floating point: a 128-bit division per match was a fifth of a deep search's time
        // at 5M. A page needs only that a later key never lands in an earlier slice, and
        // each step here (conversion, subtraction, scaling, truncation) keeps that.
        let scale = BUCKETS as f64 / (hi as f64 - lo as f64 + 1.0).max(1.0);
        let bucket = |k: i64| (((k as f64 - lo as f64) * scale) as usize).min(BUCKETS - 1);
        let marks = self.in_parts(|part| {
            let c = self.compile(query);
            let mut m = Marked {
                bits: vec![0; part.entries.len().div_ceil(64)],
                // Room for every entry, so the notes are never copied as they grow (pages
                // never written take no memory).
                slices: Vec::with_capacity(part.entries.len()),
                counts: vec![0; BUCKETS],
                total: 0,
                unknown: 0,
            };
            for (i, (_, r)) in part.refs().enumerate() {
                match c.test(r) {
                    Test::Match => {
                        let b = bucket(key(r.hot));
                        m.bits[i / 64] |= 1 << (i % 64);
                        m.slices.push(b as u16);
                        m.total += 1;
                        m.counts[b] += 1;
                    }
                    Test::Unknown => m.unknown += 1,
                    Test::No => {}
                }
            }
            m
        });
        let mut found = Found {
            total: marks.iter().map(|m| m.total).sum(),
            unknown: marks.iter().map(|m| m.unknown).sum(),
            ..Found::default()
        };
        if offset as u64 >= found.total {
            return found;
        }
        let mut counts = vec![0u64; BUCKETS];
        for m in &marks {
            for (sum, n) in counts.iter_mut().zip(&m.counts) {
                *sum += u64::from(*n);
            }
        }
        let (first, last, before) = slices_of(&counts, offset, offset.saturating_add(limit));
        // Only the matches in the page's slices are read again.
        let kept = self.in_parts(|part| {
            let m = &marks[part.index];
            m.offsets()
                .zip(&m.slices)
                .filter(|&(_, &b)| (first..=last).contains(&usize::from(b)))
                .map(|(i, _)| (key(&part.hot[i]), (part.start + i) as u32))
                .collect::<Vec<_>>()
        });
        found.hits = kept.concat();
        found.first = offset - before as usize;
        select(
            &mut found.hits,
            found.first,
            found.first.saturating_add(limit),
        );
        found
    }
}

impl FailureIndex {
    /// A page of every failed job, at any offset: the minutes it lies in are known from the
    /// counts kept per minute ([`super::tallies`]), so one pass keeps only the entries of
    /// those minutes and compares nothing else: the first `offset + limit` of them in a
    /// bounded heap when the page is near their front, else all of them. `None` when that
    /// would be more than [`EVERYTHING_HELD_MAX`] entries (then the general way holds less).
    fn everything(
        &self,
        key: &(impl Fn(&Hot) -> i64 + Sync),
        order: Order,
        offset: usize,
        limit: usize,
    ) -> Option<Found> {
        let mut found = Found {
            total: self.entries.len() as u64,
            ..Found::default()
        };
        if offset as u64 >= found.total {
            return Some(found);
        }
        let end = offset.saturating_add(limit) as u64;
        let span = super::lock(&self.tallies).page_span(order, offset as u64, end);
        let first = offset - span.before as usize;
        let wanted = first.saturating_add(limit);
        let (lo, hi) = (span.lo, span.hi);
        if wanted <= TOP_K_MAX {
            // Near the front of its minutes (the first page among them): a bounded heap,
            // however many entries those minutes hold.
            let in_span = || {
                move |r: EntryRef<'_>| {
                    if (lo..hi).contains(&r.hot.failed_at_us) {
                        Test::Match
                    } else {
                        Test::No
                    }
                }
            };
            let mut found = self.front_by(in_span, key, first, wanted);
            found.total = self.entries.len() as u64;
            return Some(found);
        }
        if span.within > EVERYTHING_HELD_MAX {
            return None;
        }
        let kept = self.in_parts(|part| {
            (part.start..)
                .zip(part.hot)
                .filter(|(_, h)| (lo..hi).contains(&h.failed_at_us))
                .map(|(pos, h)| (key(h), pos as u32))
                .collect::<Vec<_>>()
        });
        found.hits = kept.concat();
        found.first = first;
        select(
            &mut found.hits,
            found.first,
            found.first.saturating_add(limit),
        );
        Some(found)
    }
}

/// At most this many entries (16 bytes each) are held for a page of every failed job (see
/// [`FailureIndex::everything`]); fewer in the unit tests, so that they take both ways.
const EVERYTHING_HELD_MAX: u64 = if cfg!(test) { 40 } else { 1 << 18 };

/// The first and last slice holding the matches ranked `start..end` by `counts`, and how many
/// matches the slices before the first hold.
fn slices_of(counts: &[u64], start: usize, end: usize) -> (usize, usize, u64) {
    let (start, end) = (start as u64, end as u64);
    let mut before = 0u64;
    let mut first = counts.len() - 1;
    for (b, &n) in counts.iter().enumerate() {
        if before + n > start {
            first = b;
            break;
        }
        before += n;
    }
    let mut through = before;
    let mut last = counts.len() - 1;
    for (b, &n) in counts.iter().enumerate().skip(first) {
        through += n;
        if through >= end {
            last = b;
            break;
        }
    }
    (first, last, before)
}

/// Puts the hits ranked `start..end` in place, sorted (linear, not a sort of everything).
fn select(hits: &mut [(i64, u32)], start: usize, end: usize) {
    let end = end.min(hits.len());
    if start >= end {
        return;
    }
    if start > 0 {
        hits.select_nth_unstable(start);
    }
    let rest = &mut hits[start..];
    if end - start < rest.len() {
        rest.select_nth_unstable(end - start);
    }
    rest[..end - start].sort_unstable();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slices_of_a_page_are_those_its_first_and_last_match_fall_in() {
        let counts = [0, 3, 0, 2, 5, 0, 1];
        // Ranks 0..2 are in slice 1; none before it.
        assert_eq!(slices_of(&counts, 0, 2), (1, 1, 0));
        // Ranks 2..4 span slices 1 and 3.
        assert_eq!(slices_of(&counts, 2, 4), (1, 3, 0));
        // Ranks 3..5 are slice 3's two; three before it.
        assert_eq!(slices_of(&counts, 3, 5), (3, 3, 3));
        // Ranks 9..50: from slice 4 to the end.
        assert_eq!(slices_of(&counts, 9, 50), (4, 6, 5));
        // The last match alone.
        assert_eq!(slices_of(&counts, 10, 11), (6, 6, 10));
    }

    #[test]
    fn marked_offsets_come_back_in_order() {
        let mut m = Marked {
            bits: vec![0; 3],
            slices: Vec::new(),
            counts: Vec::new(),
            total: 0,
            unknown: 0,
        };
        let set = [0usize, 1, 63, 64, 100, 191];
        for &i in &set {
            m.bits[i / 64] |= 1 << (i % 64);
        }
        assert_eq!(m.offsets().collect::<Vec<_>>(), set);
    }
}
