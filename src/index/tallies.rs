//! Every group's counts, kept as the entries change, so that `groups` answers from a few
//! numbers per group instead of a pass over every entry (issue 24, item 3: at five million
//! failed jobs that pass took 50–100 ms, and an incident changes the index many times a
//! second).
//!
//! Counts by state and by policy are the index's counts per kind (group × policy × state ×
//! exhausted mark, see [`super::stored::Kinds`]), summed per group when asked. A group's first
//! and last failure time and its earliest due time are a minimum or a maximum, which taking a
//! value out cannot update from the number alone: each is kept as the group's [`KEPT`] lowest
//! values ([`Lowest`]). Taking out one of them takes it from the list; only when a list runs
//! empty while the group still has values is it filled again, by one pass over the entries
//! (once per [`KEPT`] such removals of one group, as when an operator retries the oldest jobs
//! one by one).
//! Each queue's lowest and highest registry score (the reconcile's size check) are kept the
//! same way.

use std::collections::BTreeMap;

use super::{Entry, FailureIndex, GroupId, GroupSums, IdMap, Order};

/// How many of a group's lowest values each [`Lowest`] keeps (two in the unit tests, so that
/// they run the lists empty and fill them again).
const KEPT: usize = if cfg!(test) { 2 } else { 32 };

/// A multiset of values of which only the lowest few are kept: `kept` is always the first
/// `kept.len()` values of the whole set in ascending order.
#[derive(Debug, Default, Clone)]
struct Lowest {
    /// Values in the whole set.
    n: u64,
    kept: Vec<i64>,
}

impl Lowest {
    fn add(&mut self, v: i64) {
        let whole = self.kept.len() as u64 == self.n;
        self.n += 1;
        // A value below the highest kept is among the lowest; above it, it may not be (the set
        // holds values that are not kept) unless every value is kept.
        if whole || self.kept.last().is_some_and(|&last| v < last) {
            let at = self.kept.partition_point(|&x| x <= v);
            self.kept.insert(at, v);
            self.kept.truncate(KEPT);
        }
    }

    fn remove(&mut self, v: i64) {
        debug_assert!(self.n > 0, "a value taken from an empty set");
        self.n = self.n.saturating_sub(1);
        // Every value up to the highest kept is kept: the first `kept.len()` of the set.
        if self.kept.last().is_some_and(|&last| v <= last) {
            let at = self.kept.partition_point(|&x| x < v);
            debug_assert_eq!(self.kept.get(at), Some(&v), "a kept value missing");
            if self.kept.get(at) == Some(&v) {
                self.kept.remove(at);
            }
        }
    }

    /// The lowest value (`None` for an empty set); `Err` when it must be found again.
    fn lowest(&self) -> Result<Option<i64>, Stale> {
        match self.kept.first() {
            Some(&v) => Ok(Some(v)),
            None if self.n == 0 => Ok(None),
            None => Err(Stale),
        }
    }

    fn stale(&self) -> bool {
        self.n > 0 && self.kept.is_empty()
    }
}

/// A kept minimum or maximum was taken out with every other kept value: the entries must be
/// read again to know the next.
#[derive(Debug)]
struct Stale;

/// One group's lowest and highest times. Its jobs by state and by policy are the counts of
/// its kinds (see [`super::stored::Kinds`]); how many it has is `first.n`.
#[derive(Debug, Default, Clone)]
struct GroupTally {
    /// Failure times.
    first: Lowest,
    /// Failure times, bitwise negated (the highest first).
    last: Lowest,
    /// Due times of the jobs that have one.
    due: Lowest,
}

impl GroupTally {
    fn stale(&self) -> bool {
        self.first.stale() || self.last.stale() || self.due.stale()
    }
}

/// One queue's lowest and highest registry scores (see [`FailureIndex::queue_spans`]), as
/// [`ordered`] numbers; how many entries it has is `lo.n`.
#[derive(Debug, Default, Clone)]
struct QueueTally {
    lo: Lowest,
    /// Bitwise negated (the highest first).
    hi: Lowest,
}

impl QueueTally {
    fn stale(&self) -> bool {
        self.lo.stale() || self.hi.stale()
    }
}

/// A score as an integer of the same order (as `f64::total_cmp` orders scores).
fn ordered(score: f64) -> i64 {
    let bits = score.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// The score an [`ordered`] integer stands for.
fn score_of(ordered: i64) -> f64 {
    f64::from_bits((ordered ^ (((ordered >> 63) as u64) >> 1) as i64) as u64)
}

/// Every group's counts (see the module documentation), every queue's span of scores, and
/// every entry's failure minute.
#[derive(Debug, Default)]
pub(super) struct Tallies {
    groups: IdMap<GroupId, GroupTally>,
    /// Groups and queues with a list to fill again.
    stale: usize,
    /// By queue id.
    queues: Vec<QueueTally>,
    /// Entries per minute of failure time (minutes since the epoch): where a deep page of
    /// every failed job lies, without a pass over the entries to count them.
    pub(super) minutes: BTreeMap<i64, u64>,
}

const MINUTE_US: i64 = 60_000_000;

/// The failure times a deep page of every failed job lies in (see [`Tallies::page_span`]).
pub(super) struct PageSpan {
    /// From `lo` up to, not including, `hi` (microseconds).
    pub lo: i64,
    pub hi: i64,
    /// Entries that come before that span in the page's order.
    pub before: u64,
    /// Entries within it.
    pub within: u64,
}

pub(super) fn group_of(queue: u16, e: &Entry) -> GroupId {
    GroupId {
        queue,
        function: e.function,
        exception: e.exception,
    }
}

impl Tallies {
    /// Counts an entry in.
    pub(super) fn add(&mut self, queue: u16, e: &Entry) {
        let t = self.groups.entry(group_of(queue, e)).or_default();
        let was_stale = cfg!(debug_assertions) && t.stale();
        t.first.add(e.failed_at_us);
        t.last.add(!e.failed_at_us);
        if e.due_us != i64::MAX {
            t.due.add(e.due_us);
        }
        // (Asked only where the check runs: adding is on every new failure's path.)
        debug_assert_eq!(was_stale, t.stale(), "adding leaves a list as it was");
        let q = usize::from(queue);
        if self.queues.len() <= q {
            self.queues.resize_with(q + 1, QueueTally::default);
        }
        let t = &mut self.queues[q];
        t.lo.add(ordered(e.score));
        t.hi.add(!ordered(e.score));
        *self
            .minutes
            .entry(e.failed_at_us.div_euclid(MINUTE_US))
            .or_default() += 1;
    }

    /// Counts an entry out (it was counted in as it is).
    pub(super) fn remove(&mut self, queue: u16, e: &Entry) {
        let group = group_of(queue, e);
        let Some(t) = self.groups.get_mut(&group) else {
            debug_assert!(false, "an entry counted out of a group it is not in");
            return;
        };
        let was_stale = t.stale();
        t.first.remove(e.failed_at_us);
        t.last.remove(!e.failed_at_us);
        if e.due_us != i64::MAX {
            t.due.remove(e.due_us);
        }
        let stale = t.stale();
        if t.first.n == 0 {
            self.groups.remove(&group);
        }
        self.now_stale(was_stale, stale);
        if let Some(t) = self.queues.get_mut(usize::from(queue)) {
            let was_stale = t.stale();
            t.lo.remove(ordered(e.score));
            t.hi.remove(!ordered(e.score));
            let stale = t.stale();
            self.now_stale(was_stale, stale);
        }
        let minute = e.failed_at_us.div_euclid(MINUTE_US);
        if let Some(n) = self.minutes.get_mut(&minute) {
            *n -= 1;
            if *n == 0 {
                self.minutes.remove(&minute);
            }
        }
    }

    /// Counts a group or queue whose lists ran empty, or were filled again.
    fn now_stale(&mut self, was: bool, is: bool) {
        match (was, is) {
            (false, true) => self.stale += 1,
            (true, false) => self.stale -= 1,
            _ => {}
        }
    }

    /// The whole minutes of failure time that hold the entries ranked `start..end` in `order`
    /// (`start` below the number of entries).
    pub(super) fn page_span(&self, order: Order, start: u64, end: u64) -> PageSpan {
        let minutes: Box<dyn Iterator<Item = (&i64, &u64)>> = match order {
            Order::Oldest => Box::new(self.minutes.iter()),
            Order::Newest => Box::new(self.minutes.iter().rev()),
        };
        let (mut before, mut through) = (0u64, 0u64);
        let (mut first, mut last) = (None, None);
        for (&minute, &n) in minutes {
            if first.is_none() {
                if before + n > start {
                    first = Some(minute);
                    through = before;
                } else {
                    before += n;
                    continue;
                }
            }
            through += n;
            last = Some(minute);
            if through >= end {
                break;
            }
        }
        let (first, last) = (first.unwrap_or(0), last.unwrap_or(0));
        let (lo, hi) = (first.min(last), first.max(last));
        PageSpan {
            lo: lo * MINUTE_US,
            hi: (hi + 1) * MINUTE_US,
            before,
            within: through - before,
        }
    }
}

/// One group's lowest values, as a pass over the entries gathers them to fill its lists again.
#[derive(Default)]
struct Gathered {
    first: Vec<i64>,
    last: Vec<i64>,
    due: Vec<i64>,
}

/// Puts `v` into `lowest` (ascending, at most [`KEPT`]) when it is among the lowest so far.
fn gather(lowest: &mut Vec<i64>, v: i64) {
    if lowest.len() < KEPT || lowest.last().is_some_and(|&last| v < last) {
        let at = lowest.partition_point(|&x| x <= v);
        lowest.insert(at, v);
        lowest.truncate(KEPT);
    }
}

impl Gathered {
    fn note(&mut self, e: &Entry) {
        gather(&mut self.first, e.failed_at_us);
        gather(&mut self.last, !e.failed_at_us);
        if e.due_us != i64::MAX {
            gather(&mut self.due, e.due_us);
        }
    }

    fn merge(&mut self, other: Gathered) {
        for (mine, theirs) in [
            (&mut self.first, other.first),
            (&mut self.last, other.last),
            (&mut self.due, other.due),
        ] {
            theirs.into_iter().for_each(|v| gather(mine, v));
        }
    }
}

impl FailureIndex {
    /// Every group's sums, its lists filled again first where they ran empty (one pass over
    /// the entries, which the lock on the index's tallies holds still: the caller reads the
    /// index).
    pub(super) fn group_sums(&self) -> Vec<(GroupId, GroupSums)> {
        let mut tallies = super::lock(&self.tallies);
        if tallies.stale > 0 {
            self.fill_again(&mut tallies);
        }
        // Counts by state and policy from the kinds' counts; times from the kept lists.
        let mut sums: IdMap<GroupId, GroupSums> = IdMap::default();
        for (kind, n) in self.kinds.held() {
            let s = sums.entry(kind.group).or_insert_with(GroupSums::new);
            s.count += n;
            s.by_state[kind.state as usize] += n;
            *s.policies.entry(kind.policy).or_default() += n;
        }
        for (id, s) in sums.iter_mut() {
            let Some(t) = tallies.groups.get(id) else {
                debug_assert!(false, "a group with entries and no kept times");
                continue;
            };
            let value = |l: &Lowest| l.lowest().expect("filled again above");
            s.first = value(&t.first).unwrap_or(i64::MAX);
            s.last = value(&t.last).map_or(i64::MIN, |v| !v);
            s.next_due = value(&t.due).unwrap_or(i64::MAX);
        }
        sums.into_iter().collect()
    }

    /// Fills the lists that ran empty again from the entries.
    fn fill_again(&self, tallies: &mut Tallies) {
        let stale: IdMap<GroupId, ()> = tallies
            .groups
            .iter()
            .filter(|(_, t)| t.stale())
            .map(|(id, _)| (*id, ()))
            .collect();
        let stale_queues: Vec<bool> = tallies.queues.iter().map(QueueTally::stale).collect();
        let parts = self.in_parts(|part| {
            let mut found: IdMap<GroupId, Gathered> = IdMap::default();
            let mut scores: Vec<(Vec<i64>, Vec<i64>)> =
                vec![Default::default(); stale_queues.len()];
            for (_, (queue, _), e) in part.iter() {
                let group = group_of(*queue, &e);
                if stale.contains_key(&group) {
                    found.entry(group).or_default().note(&e);
                }
                if stale_queues.get(usize::from(*queue)) == Some(&true) {
                    let (lo, hi) = &mut scores[usize::from(*queue)];
                    gather(lo, ordered(e.score));
                    gather(hi, !ordered(e.score));
                }
            }
            (found, scores)
        });
        let mut found: IdMap<GroupId, Gathered> = IdMap::default();
        let mut scores: Vec<(Vec<i64>, Vec<i64>)> = vec![Default::default(); stale_queues.len()];
        for (part, part_scores) in parts {
            for (group, gathered) in part {
                found.entry(group).or_default().merge(gathered);
            }
            for ((lo, hi), (more_lo, more_hi)) in scores.iter_mut().zip(part_scores) {
                more_lo.into_iter().for_each(|v| gather(lo, v));
                more_hi.into_iter().for_each(|v| gather(hi, v));
            }
        }
        for ((t, (lo, hi)), stale) in tallies.queues.iter_mut().zip(scores).zip(stale_queues) {
            if stale {
                t.lo.kept = lo;
                t.hi.kept = hi;
            }
        }
        for (group, gathered) in found {
            let Some(t) = tallies.groups.get_mut(&group) else {
                continue;
            };
            for (list, lowest) in [
                (&mut t.first, gathered.first),
                (&mut t.last, gathered.last),
                (&mut t.due, gathered.due),
            ] {
                debug_assert!(lowest.len() as u64 == list.n.min(KEPT as u64));
                list.kept = lowest;
            }
        }
        tallies.stale = tallies.groups.values().filter(|t| t.stale()).count()
            + tallies.queues.iter().filter(|t| t.stale()).count();
    }

    /// Per queue with entries: how many, and their lowest and highest score (the reconcile's
    /// size check asks every second), from the counts kept as the entries change.
    pub fn queue_spans(&self) -> Vec<super::QueueSpan> {
        let mut tallies = super::lock(&self.tallies);
        if tallies.stale > 0 {
            self.fill_again(&mut tallies);
        }
        let lowest = |l: &Lowest| l.lowest().expect("filled again above").unwrap_or_default();
        self.queues
            .names
            .iter()
            .zip(&tallies.queues)
            .filter(|(_, t)| t.lo.n > 0)
            .map(|(name, t)| super::QueueSpan {
                queue: name.to_string(),
                indexed: t.lo.n,
                lo: score_of(lowest(&t.lo)),
                hi: score_of(!lowest(&t.hi)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Scores keep their order as integers, and come back the same.
        #[test]
        fn scores_as_integers_keep_their_order(a in any::<f64>(), b in any::<f64>()) {
            prop_assume!(!a.is_nan() && !b.is_nan());
            prop_assert_eq!(ordered(a).cmp(&ordered(b)), a.total_cmp(&b));
            prop_assert_eq!(score_of(ordered(a)).to_bits(), a.to_bits());
        }

        /// After any adds and removes, the kept values are the lowest of the set, and the
        /// lowest value is known unless every kept one was taken out.
        #[test]
        fn the_kept_values_are_always_the_lowest_of_the_set(
            ops in proptest::collection::vec((any::<bool>(), 0i64..6), 0..60),
        ) {
            let mut lowest = Lowest::default();
            let mut set: Vec<i64> = Vec::new();
            for (add, v) in ops {
                if add {
                    lowest.add(v);
                    set.push(v);
                } else if let Some(at) = set.iter().position(|&x| x == v) {
                    lowest.remove(v);
                    set.swap_remove(at);
                }
                set.sort_unstable();
                prop_assert_eq!(lowest.n, set.len() as u64);
                prop_assert_eq!(&lowest.kept[..], &set[..lowest.kept.len()]);
                prop_assert!(lowest.kept.len() <= KEPT);
                match lowest.lowest() {
                    Ok(v) => prop_assert_eq!(v, set.first().copied()),
                    Err(Stale) => prop_assert!(lowest.stale()),
                }
            }
        }
    }
}
