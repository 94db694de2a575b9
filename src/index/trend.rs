//! When the failures happened: failures per minute over the last hour and per hour over the
//! last day for any selection ([`FailureIndex::timeline`]), and how each group moved in the
//! last half hour ([`FailureIndex::recent`]: the last 15 minutes against the 15 before, and
//! whether the group is new). See: issue 22, item 2.
//!
//! Answered from the index, so only from the failures that are **in a failed registry now**:
//! a job requeued (by rq-retryd, RQ or anyone) or deleted leaves its bucket. The counter
//! `rq_retryd_failures_seen_total` (see `metrics.rs`) is the record of every new failure.
//!
//! Pure like the rest of the index: the current time is a parameter. The buckets are aligned on
//! whole minutes and hours (UTC), so two answers within the same minute agree and a bar's
//! label is a clock time; the last bucket is the current, partial one.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{lock, time, us, FailureIndex, GroupId, IdMap, Selection, Test};

/// Minutes in the per-minute window, and hours in the per-hour one.
pub const MINUTES: usize = 60;
pub const HOURS: usize = 24;

const MINUTE_US: i64 = 60_000_000;
const HOUR_US: i64 = 60 * MINUTE_US;
/// The two windows a group's recent failures are counted in.
const QUARTER_US: i64 = 15 * MINUTE_US;

/// Failures counted in consecutive buckets of equal length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Buckets {
    /// When the first bucket begins (a whole minute or hour, UTC); bucket `i` holds the
    /// failures from `start + i × step` up to, not including, the next bucket's start.
    pub start: DateTime<Utc>,
    pub step_seconds: u32,
    pub counts: Vec<u64>,
}

impl Buckets {
    fn new(start_us: i64, step_us: i64, n: usize) -> Buckets {
        Buckets {
            start: time(start_us),
            step_seconds: (step_us / 1_000_000) as u32,
            counts: vec![0; n],
        }
    }

    /// Adds the counts of another part's same buckets.
    fn add(&mut self, other: &Buckets) {
        for (n, more) in self.counts.iter_mut().zip(&other.counts) {
            *n += more;
        }
    }

    /// Counts a failure at `at_us` when it falls in one of the buckets; returns whether it did.
    fn count(&mut self, start_us: i64, step_us: i64, at_us: i64) -> bool {
        if at_us < start_us {
            return false;
        }
        let i = ((at_us - start_us) / step_us) as usize;
        match self.counts.get_mut(i) {
            Some(n) => {
                *n += 1;
                true
            }
            None => false,
        }
    }
}

/// When the failures of a selection happened (see [`FailureIndex::timeline`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// Failed jobs the selection matches (the listing's `total` for the same filters).
    pub total: u64,
    /// Jobs left out because a fact the selection needs is not read yet.
    pub unknown: u64,
    /// The last 60 minutes, the current one last.
    pub minutes: Buckets,
    /// The last 24 hours, the current one last.
    pub hours: Buckets,
    /// Matched failures before the first hour.
    pub earlier: u64,
    /// Matched failures dated after the current hour (a worker's clock ahead of this host's).
    pub later: u64,
}

/// How one group moved lately (see [`FailureIndex::recent`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Recent {
    /// Failures in the last 15 minutes (and any dated after now).
    pub last_15m: u64,
    /// Failures in the 15 minutes before those.
    pub prev_15m: u64,
    /// Its first failure is within the last 15 minutes.
    pub new: bool,
}

/// Every group's failures of the last half hour, as of one time (see
/// [`FailureIndex::recent`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecentFailures {
    now_us: i64,
    /// Per group, the count in the last 15 minutes and in the 15 before.
    by_group: IdMap<GroupId, (u64, u64)>,
}

impl RecentFailures {
    /// How `group` moved: its counts, and whether its first failure is recent.
    pub fn of(&self, group: &super::Group) -> Recent {
        let (last_15m, prev_15m) = self.by_group.get(&group.id).copied().unwrap_or_default();
        Recent {
            last_15m,
            prev_15m,
            new: us(group.first_failed_at) >= self.now_us - QUARTER_US,
        }
    }
}

/// How long a [`RecentCache`] answers after it was filled: it keeps this much more than the
/// half hour it needs.
const HORIZON_US: i64 = QUARTER_US;

/// The recent failures' windows begin on whole seconds, so that a group's failures can be
/// counted per second.
const SECOND_US: i64 = 1_000_000;
/// How many seconds from its start a [`RecentCache`] counts one by one. Later failures are
/// counted together: every window it answers for puts them in the last quarter.
const SPAN_S: u32 = 3 * 3600;

/// The two windows of `recent` as of `now_us`: the last 15 minutes from the start of the
/// current second, and the 15 before.
fn windows(now_us: i64) -> (i64, i64) {
    let last_from = floor(now_us, SECOND_US) - QUARTER_US;
    (last_from - QUARTER_US, last_from)
}

/// The index's failures from a little over half an hour before a time on, by group and
/// second, kept as the entries change: later unfiltered `recent` answers (the console asks
/// every few seconds, and after every change in an incident) count these instead of passing
/// over every entry again, until the windows move past what it holds.
#[derive(Debug)]
pub(super) struct RecentCache {
    from_us: i64,
    times: IdMap<GroupId, Seconds>,
}

impl RecentCache {
    /// Whether it holds what the windows from `prev_from` and `last_from` count.
    fn answers(&self, prev_from: i64, last_from: i64) -> bool {
        self.from_us <= prev_from && last_from <= self.from_us + i64::from(SPAN_S) * SECOND_US
    }

    /// Counts in a new or changed entry.
    pub(super) fn note(&mut self, queue: u16, e: &super::Entry) {
        if let Some((group, second)) = second_of(self.from_us, queue, e) {
            self.times.entry(group).or_default().note(second);
        }
    }

    /// Counts out a removed entry, or one as it was before a change.
    pub(super) fn unnote(&mut self, queue: u16, e: &super::Entry) {
        if let Some((group, second)) = second_of(self.from_us, queue, e) {
            if let Some(seconds) = self.times.get_mut(&group) {
                seconds.unnote(second);
            }
        }
    }

    /// Every group's counts from `last_from` on and in `[prev_from, last_from)` (whole seconds
    /// that it [`answers`](Self::answers) for).
    fn counts(&self, prev_from: i64, last_from: i64) -> IdMap<GroupId, (u64, u64)> {
        let second = |at: i64| ((at - self.from_us) / SECOND_US) as u32;
        let (prev, last) = (second(prev_from), second(last_from));
        self.times
            .iter()
            .map(|(g, seconds)| (*g, seconds.counts(prev, last)))
            .filter(|(_, (last, prev))| last + prev > 0)
            .collect()
    }
}

/// One group's recent failures, in seconds from a [`RecentCache`]'s start ([`SPAN_S`] for any
/// later): each failure's second while they are fewer than the seconds, else a count per
/// second. So a group takes at most 4 bytes a failure and 43 KB, and a million failures of one
/// group are counted without a million pushes (issue 24, item 3: at 5M recent failures the
/// list of every time was most of a `groups` answer after a change).
#[derive(Debug)]
enum Seconds {
    Each(Vec<u32>),
    PerSecond(Box<[u32]>),
}

impl Default for Seconds {
    fn default() -> Self {
        Seconds::Each(Vec::new())
    }
}

impl Seconds {
    fn note(&mut self, second: u32) {
        match self {
            Seconds::Each(each) => {
                each.push(second);
                if each.len() > SPAN_S as usize {
                    self.spread();
                }
            }
            Seconds::PerSecond(counts) => counts[second as usize] += 1,
        }
    }

    /// Takes out one failure of `second`.
    fn unnote(&mut self, second: u32) {
        match self {
            Seconds::Each(each) => match each.iter().position(|&s| s == second) {
                Some(at) => {
                    each.swap_remove(at);
                }
                None => debug_assert!(false, "a failure counted out that was not in"),
            },
            Seconds::PerSecond(counts) => {
                let n = &mut counts[second as usize];
                debug_assert!(*n > 0, "a failure counted out that was not in");
                *n = n.saturating_sub(1);
            }
        }
    }

    /// From each failure's second to a count per second.
    fn spread(&mut self) {
        if let Seconds::Each(each) = self {
            let mut counts = vec![0u32; SPAN_S as usize + 1].into_boxed_slice();
            for &second in each.iter() {
                counts[second as usize] += 1;
            }
            *self = Seconds::PerSecond(counts);
        }
    }

    /// Adds another part's failures of the same group.
    fn merge(&mut self, other: Seconds) {
        match (self, other) {
            (Seconds::PerSecond(mine), Seconds::PerSecond(theirs)) => {
                for (n, more) in mine.iter_mut().zip(theirs.iter()) {
                    *n += more;
                }
            }
            (mine, Seconds::Each(theirs)) => theirs.into_iter().for_each(|s| mine.note(s)),
            (mine, theirs) => {
                let Seconds::Each(each) = std::mem::replace(mine, theirs) else {
                    unreachable!("the other three cases are above")
                };
                each.into_iter().for_each(|s| mine.note(s));
            }
        }
    }

    /// How many from second `last` on, and how many in `[prev, last)`.
    fn counts(&self, prev: u32, last: u32) -> (u64, u64) {
        match self {
            Seconds::Each(each) => each.iter().fold((0, 0), |(l, p), &s| {
                (
                    l + u64::from(s >= last),
                    p + u64::from(s >= prev && s < last),
                )
            }),
            Seconds::PerSecond(counts) => {
                let sum = |r: &[u32]| r.iter().map(|&n| u64::from(n)).sum::<u64>();
                let (prev, last) = (prev as usize, last as usize);
                (sum(&counts[last..]), sum(&counts[prev..last]))
            }
        }
    }

    fn shrink_to_fit(&mut self) {
        if let Seconds::Each(each) = self {
            each.shrink_to_fit();
        }
    }
}

/// The start of the whole `step_us` that holds `at_us`.
fn floor(at_us: i64, step_us: i64) -> i64 {
    at_us - at_us.rem_euclid(step_us)
}

impl FailureIndex {
    /// The failures `query` matches, per minute over the last hour and per hour over the last
    /// day as of `now`: one pass over the entries, like a listing's.
    pub fn timeline(&self, query: &Selection, now: DateTime<Utc>) -> Timeline {
        let now_us = us(now);
        let minutes_start = floor(now_us, MINUTE_US) - (MINUTES as i64 - 1) * MINUTE_US;
        let hours_start = floor(now_us, HOUR_US) - (HOURS as i64 - 1) * HOUR_US;
        let hours_end = hours_start + HOURS as i64 * HOUR_US;
        let empty = || Timeline {
            total: 0,
            unknown: 0,
            minutes: Buckets::new(minutes_start, MINUTE_US, MINUTES),
            hours: Buckets::new(hours_start, HOUR_US, HOURS),
            earlier: 0,
            later: 0,
        };
        let parts = self.in_parts(|part| {
            let mut t = empty();
            let c = self.compile(query);
            for (_, r) in part.refs() {
                match c.test(r) {
                    Test::Match => {}
                    Test::Unknown => {
                        t.unknown += 1;
                        continue;
                    }
                    Test::No => continue,
                }
                t.total += 1;
                let at = r.hot.failed_at_us;
                if at < hours_start {
                    t.earlier += 1;
                } else if at >= hours_end {
                    t.later += 1;
                } else {
                    t.hours.count(hours_start, HOUR_US, at);
                    t.minutes.count(minutes_start, MINUTE_US, at);
                }
            }
            t
        });
        let mut t = empty();
        for part in parts {
            t.total += part.total;
            t.unknown += part.unknown;
            t.earlier += part.earlier;
            t.later += part.later;
            t.hours.add(&part.hours);
            t.minutes.add(&part.minutes);
        }
        t
    }

    /// Every group's failures in the last 15 minutes and in the 15 before, as of `now` (from
    /// the start of its second), of the jobs `query` matches, undecodable jobs left out:
    /// counted from the recent failures kept for this version of the index, gathered by one
    /// pass over the entries when there are none for it yet or they do not reach back far
    /// enough for `now`.
    pub fn recent(&self, query: &Selection, now: DateTime<Utc>) -> RecentFailures {
        let now_us = us(now);
        let (prev_from, last_from) = windows(now_us);
        if !query.is_everything() {
            return self.recent_matching(query, now_us, prev_from, last_from);
        }
        let mut cache = lock(&self.recent_cache);
        let fresh = cache
            .as_ref()
            .is_some_and(|c| c.answers(prev_from, last_from));
        if !fresh {
            *cache = Some(self.recent_from(prev_from - HORIZON_US));
        }
        let kept = cache.as_ref().expect("filled above");
        RecentFailures {
            now_us,
            by_group: kept.counts(prev_from, last_from),
        }
    }

    /// [`FailureIndex::recent`] of the jobs a search (or another filter) finds: one pass over
    /// the entries, as the search's own groups are.
    fn recent_matching(
        &self,
        query: &Selection,
        now_us: i64,
        prev_from: i64,
        last_from: i64,
    ) -> RecentFailures {
        let parts = self.in_parts(|part| {
            let c = self.compile(query);
            let mut by_group: IdMap<GroupId, (u64, u64)> = IdMap::default();
            for (_, r) in part.refs() {
                let at = r.hot.failed_at_us;
                // Only the jobs it finds count, as in the groups' `count`.
                if at < prev_from
                    || r.kind.state == super::State::Undecodable
                    || c.test(r) != Test::Match
                {
                    continue;
                }
                let counts = by_group.entry(*r.group()).or_default();
                if at >= last_from {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
            }
            by_group
        });
        let mut by_group: IdMap<GroupId, (u64, u64)> = IdMap::default();
        for part in parts {
            for (group, (last, prev)) in part {
                let counts = by_group.entry(group).or_default();
                counts.0 += last;
                counts.1 += prev;
            }
        }
        RecentFailures { now_us, by_group }
    }

    /// The failure times from `from_us` on, by group; undecodable jobs are in no group's count
    /// (see `http::jobs::groups`). They hold while the version does.
    fn recent_from(&self, from_us: i64) -> RecentCache {
        let parts = self.in_parts(|part| {
            let mut times = RecentCache {
                from_us,
                times: IdMap::default(),
            };
            for (_, (queue, _), e) in part.iter() {
                times.note(*queue, &e);
            }
            times.times
        });
        let mut times: IdMap<GroupId, Seconds> = IdMap::default();
        for part in parts {
            for (group, seconds) in part {
                times.entry(group).or_default().merge(seconds);
            }
        }
        for t in times.values_mut() {
            t.shrink_to_fit();
        }
        RecentCache { from_us, times }
    }

    /// The groups ([`FailureIndex::groups`]) and their recent failures as of `now`
    /// ([`FailureIndex::recent`], of everything): both from counts kept as the entries change.
    pub fn groups_and_recent(&self, now: DateTime<Utc>) -> (Vec<super::Group>, RecentFailures) {
        (self.groups(), self.recent(&Selection::default(), now))
    }
}

/// An entry's group and its failure's second from `from_us` (the last for any later), unless
/// it failed before or is undecodable (in no group's count).
fn second_of(from_us: i64, queue: u16, e: &super::Entry) -> Option<(GroupId, u32)> {
    if e.failed_at_us < from_us || e.state == super::State::Undecodable {
        return None;
    }
    let second = ((e.failed_at_us - from_us) / SECOND_US).min(i64::from(SPAN_S));
    Some((super::tallies::group_of(queue, e), second as u32))
}

#[cfg(test)]
mod tests {
    use super::super::{Known, Observation, State};
    use super::*;
    use chrono::TimeZone;

    /// 12:30:30 UTC: half past, and half a minute into the minute.
    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 12, 30, 30).unwrap()
    }

    fn ago(secs: i64) -> DateTime<Utc> {
        now() - chrono::Duration::seconds(secs)
    }

    fn failed<'a>(
        queue: &'a str,
        id: &'a str,
        exception: &'a str,
        secs_ago: i64,
    ) -> Observation<'a> {
        Observation {
            queue,
            job_id: id,
            score: 1e10,
            failed_at: ago(secs_ago),
            function: Known::Is("app.tasks.send"),
            exception: Known::Is(exception),
            attempts: 0,
            exhausted: false,
            policy: None,
            state: State::Unmatched,
            next_due: None,
            text: Known::Unknown,
        }
    }

    fn index_of(failures: &[Observation<'_>]) -> FailureIndex {
        let mut index = FailureIndex::default();
        for o in failures {
            index.observe(o);
        }
        index
    }

    /// A later answer of an unchanged index comes from the failures kept for it, and is the
    /// answer a fresh pass gives; a change or a clock past the horizon makes a fresh pass.
    #[test]
    fn a_kept_answer_equals_a_fresh_pass_until_the_index_changes_or_the_clock_moves_on() {
        let failures = [
            failed("default", "a", "ValueError", 60),
            failed("default", "b", "ValueError", 20 * 60),
            failed("default", "c", "ValueError", 40 * 60),
            failed("emails", "d", "TimeoutError", 50 * 60),
            failed("emails", "e", "TimeoutError", 80 * 60),
        ];
        let later = |mins: i64| now() + chrono::Duration::minutes(mins);
        for mins in [0, 5, 14, 15, 16, 40, -1, -20] {
            let kept = index_of(&failures);
            kept.recent(&Selection::default(), now());
            let fresh = index_of(&failures);
            assert_eq!(
                kept.recent(&Selection::default(), later(mins)),
                fresh.recent(&Selection::default(), later(mins)),
                "{mins} min"
            );
        }
        let mut kept = index_of(&failures);
        kept.recent(&Selection::default(), now());
        kept.observe(&failed("default", "f", "ValueError", 0));
        let mut fresh = index_of(&failures);
        fresh.observe(&failed("default", "f", "ValueError", 0));
        assert_eq!(
            kept.recent(&Selection::default(), now()),
            fresh.recent(&Selection::default(), now())
        );
        let g = kept
            .groups()
            .into_iter()
            .find(|g| g.queue == "default")
            .unwrap();
        assert_eq!(kept.recent(&Selection::default(), now()).of(&g).last_15m, 2);
    }

    /// The groups and recent failures an index keeps as it changes and the clock moves on
    /// equal those of an index built afresh from the same failures, asked once.
    #[test]
    fn kept_groups_and_recent_equal_a_fresh_index_after_changes_and_as_time_goes_by() {
        let mut failures = vec![failed("edges", "undecodable", "KeyError", 60)];
        failures[0].state = State::Undecodable;
        let ids: Vec<String> = (0..300).map(|i| format!("j{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let (queue, exception) = [("default", "ValueError"), ("emails", "TimeoutError")][i % 2];
            failures.push(failed(queue, id, exception, i as i64 * 13 - 10));
        }
        let fresh = |failures: &[Observation<'_>], at| index_of(failures).groups_and_recent(at);
        for mins in [0, 14, 16, 31, -5] {
            let at = now() + chrono::Duration::minutes(mins);
            let mut kept = index_of(&failures);
            assert_eq!(
                kept.groups_and_recent(at),
                fresh(&failures, at),
                "{mins} min"
            );
            // After a change (a new failure, a removed one); then with the clock moved on.
            let mut changed = failures.clone();
            changed.push(failed("default", "new", "ValueError", 0));
            kept.observe(&failed("default", "new", "ValueError", 0));
            changed.retain(|o| o.job_id != "j7");
            kept.remove("emails", "j7");
            assert_eq!(
                kept.groups_and_recent(at),
                fresh(&changed, at),
                "{mins} min, changed"
            );
            let later = at + chrono::Duration::minutes(20);
            assert_eq!(
                kept.groups_and_recent(later),
                fresh(&changed, later),
                "{mins} min, later"
            );
        }
    }

    /// With no filter, `recent` counts each group's kept times; with one, it passes over the
    /// entries. A filter that keeps every job must give the same.
    #[test]
    fn the_unfiltered_fast_path_counts_what_a_filtered_pass_counts() {
        let mut failures = Vec::new();
        let ids: Vec<String> = (0..200).map(|i| format!("j{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let (queue, exception) = [("default", "ValueError"), ("emails", "TimeoutError")][i % 2];
            // From 10 s ahead of now (a worker's clock) to 50 minutes ago, on both edges.
            failures.push(failed(queue, id, exception, i as i64 * 15 - 10));
        }
        failures.push(failed("edges", "e15", "KeyError", 15 * 60));
        failures.push(failed("edges", "e30", "KeyError", 30 * 60));
        let keeps_all = Selection {
            failed_after: Some(now() - chrono::Duration::days(365)),
            ..Selection::default()
        };
        assert!(Selection::default().is_everything() && !keeps_all.is_everything());
        for mins in [0, 3, 15, 29, 44] {
            // On the second and 0.7 s into it (the windows begin on the second either way).
            for ms in [0, 700] {
                let index = index_of(&failures);
                let at =
                    now() + chrono::Duration::minutes(mins) + chrono::Duration::milliseconds(ms);
                let fast = index.recent(&Selection::default(), at);
                assert_eq!(
                    fast,
                    index.recent(&keeps_all, at),
                    "{mins} min {ms} ms later"
                );
                assert!(!fast.by_group.is_empty() || mins == 44);
            }
        }
    }

    /// A group's failures counted one by one or per second, merged from parts of either kind,
    /// count what a list of every failure's second counts.
    #[test]
    fn seconds_count_alike_each_or_per_second_and_merged_in_any_mix() {
        let big = SPAN_S as usize + 50;
        let list = |n: usize, seed: u32| -> Vec<u32> {
            (0..n as u32)
                .map(|i| (i.wrapping_mul(7919).wrapping_add(seed)) % (SPAN_S + 1))
                .collect()
        };
        let naive = |all: &[u32], prev: u32, last: u32| {
            let l = all.iter().filter(|&&s| s >= last).count() as u64;
            let p = all.iter().filter(|&&s| s >= prev && s < last).count() as u64;
            (l, p)
        };
        for (a, b) in [(3, 5), (big, 7), (9, big), (big, big + 3), (0, big)] {
            let (xs, ys) = (list(a, 1), list(b, 2));
            let mut mine = Seconds::default();
            xs.iter().for_each(|&s| mine.note(s));
            let mut theirs = Seconds::default();
            ys.iter().for_each(|&s| theirs.note(s));
            assert_eq!(matches!(mine, Seconds::PerSecond(_)), a > SPAN_S as usize);
            mine.merge(theirs);
            let all: Vec<u32> = xs.iter().chain(&ys).copied().collect();
            for (prev, last) in [
                (0, 0),
                (0, 900),
                (1800, 2700),
                (2700, SPAN_S),
                (SPAN_S, SPAN_S),
            ] {
                assert_eq!(
                    mine.counts(prev, last),
                    naive(&all, prev, last),
                    "{a}+{b} {prev}..{last}"
                );
            }
        }
    }

    /// Thousands of one group's failures (past the seconds a list holds, so counted per second,
    /// in parts of both kinds) give what a filtered pass over the entries gives.
    #[test]
    fn a_group_with_more_failures_than_seconds_counts_what_a_pass_counts() {
        let n = 2 * SPAN_S as usize + 400;
        let ids: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
        let mut index = FailureIndex::default();
        for (i, id) in ids.iter().enumerate() {
            // The first half mostly one group, the second mostly another.
            let exception = if (i < n / 2) == (i % 20 != 0) {
                "ValueError"
            } else {
                "KeyError"
            };
            let mut o = failed("default", id, exception, 0);
            o.failed_at = now() - chrono::Duration::milliseconds((i as i64 * 997) % 2_700_000);
            index.observe(&o);
        }
        let keeps_all = Selection {
            failed_after: Some(now() - chrono::Duration::days(1)),
            ..Selection::default()
        };
        for ms in [0, 300, 60_000, 20 * 60_000 + 500] {
            let at = now() + chrono::Duration::milliseconds(ms);
            let fast = index.recent(&Selection::default(), at);
            assert_eq!(fast, index.recent(&keeps_all, at), "{ms} ms later");
            let (last, prev) = fast
                .by_group
                .values()
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            // 20 minutes on, the last quarter is after every failure.
            assert!(prev > 0 && (last > 0) == (ms < 15 * 60_000) && last + prev <= n as u64);
        }
    }

    /// What `failures_seen_total` counts: a failure is new once, and again only when the job
    /// failed again (a new failure time), not when a scan reads it again.
    #[test]
    fn a_failure_is_new_once_and_again_only_when_the_job_fails_again() {
        let mut index = FailureIndex::default();
        assert!(index.observe(&failed("default", "a", "ValueError", 60)));
        assert!(!index.observe(&failed("default", "a", "ValueError", 60)));
        assert!(!index.observe(&Observation {
            state: State::Exhausted,
            ..failed("default", "a", "ValueError", 60)
        }));
        assert!(index.observe(&failed("default", "a", "ValueError", 5)));
        assert!(index.observe(&failed("emails", "a", "ValueError", 5)));
        assert!(index.remove("default", "a"));
        assert!(index.observe(&failed("default", "a", "ValueError", 5)));
    }

    #[test]
    fn failures_fall_into_whole_minutes_and_hours_the_current_one_last() {
        let index = index_of(&[
            failed("default", "now", "ValueError", 0),
            // 12:30:00: the start of the current minute.
            failed("default", "minute-start", "ValueError", 30),
            // 12:29:59: the minute before.
            failed("default", "minute-before", "ValueError", 31),
            // 11:31:00: the first minute of the window; 11:30:59 is before it.
            failed("default", "first-minute", "ValueError", 59 * 60 + 30),
            failed("default", "hour-only", "ValueError", 59 * 60 + 31),
            // 13:00 yesterday is the first hour; 12:59:59 yesterday is earlier.
            failed(
                "default",
                "first-hour",
                "ValueError",
                23 * 3600 + 30 * 60 + 30,
            ),
            failed("default", "earlier", "ValueError", 23 * 3600 + 30 * 60 + 31),
            // 13:00:00 today: after the current hour.
            failed("default", "later", "ValueError", -(29 * 60 + 30)),
        ]);
        let t = index.timeline(&Selection::default(), now());
        assert_eq!(
            t.minutes.start,
            Utc.with_ymd_and_hms(2026, 12, 3, 11, 31, 0).unwrap()
        );
        assert_eq!(t.minutes.step_seconds, 60);
        assert_eq!(
            t.hours.start,
            Utc.with_ymd_and_hms(2026, 12, 2, 13, 0, 0).unwrap()
        );
        assert_eq!(t.hours.step_seconds, 3600);
        let minutes = &t.minutes.counts;
        assert_eq!(minutes.len(), 60);
        assert_eq!((minutes[59], minutes[58], minutes[0]), (2, 1, 1));
        assert_eq!(minutes.iter().sum::<u64>(), 4);
        let hours = &t.hours.counts;
        assert_eq!(hours.len(), 24);
        // 11:30:59 is in the 11 o'clock hour with the first minute; the rest in the current.
        assert_eq!((hours[23], hours[22], hours[0]), (3, 2, 1));
        assert_eq!((t.earlier, t.later, t.total, t.unknown), (1, 1, 8, 0));
        assert_eq!(hours.iter().sum::<u64>() + t.earlier + t.later, t.total);
    }

    #[test]
    fn a_timeline_counts_only_what_the_selection_matches_and_says_what_it_cannot_tell() {
        let mut index = index_of(&[
            failed("default", "a", "ValueError", 10),
            failed("default", "b", "TimeoutError", 10),
            failed("emails", "c", "ValueError", 10),
        ]);
        index.observe(&Observation {
            exception: Known::Unknown,
            ..failed("default", "d", "-", 10)
        });
        let select = |queue: Option<&str>, exception: Option<&str>| Selection {
            queue: queue.map(str::to_string),
            exception: exception.map(|e| crate::glob::ExceptionPattern::new(e).unwrap()),
            ..Selection::default()
        };
        let cases = [
            (select(None, None), 4, 0),
            (select(Some("default"), None), 3, 0),
            (select(None, Some("ValueError")), 2, 1),
            (select(Some("emails"), Some("TimeoutError")), 0, 0),
            (select(Some("never-seen"), None), 0, 0),
        ];
        for (selection, total, unknown) in cases {
            let t = index.timeline(&selection, now());
            assert_eq!((t.total, t.unknown), (total, unknown), "{selection:?}");
            assert_eq!(t.minutes.counts[59], total, "{selection:?}");
        }
    }

    #[test]
    fn a_group_counts_its_last_quarter_hour_against_the_one_before_and_is_new_only_if_it_began_in_it(
    ) {
        let index = index_of(&[
            // Old group, rising: 1 failure 20 minutes ago, 2 in the last 15, 1 an hour ago.
            failed("default", "old-1", "ValueError", 3600),
            failed("default", "old-2", "ValueError", 20 * 60),
            failed("default", "old-3", "ValueError", 14 * 60 + 59),
            failed("default", "old-4", "ValueError", 0),
            // New group: its first failure 10 minutes ago; and one dated ahead of now.
            failed("default", "new-1", "TimeoutError", 10 * 60),
            failed("default", "new-2", "TimeoutError", -5),
            // Quiet group: nothing in the last half hour.
            failed("emails", "quiet", "ValueError", 31 * 60),
            // On the edges: exactly 15 and exactly 30 minutes ago.
            failed("edges", "e15", "ValueError", 15 * 60),
            failed("edges", "e30", "ValueError", 30 * 60),
        ]);
        let mut index = index;
        index.observe(&Observation::undecodable("edges", "broken", 1e10));
        index.observe(&Observation {
            state: State::Undecodable,
            ..failed("edges", "broken-now", "ValueError", 0)
        });
        let recent = index.recent(&Selection::default(), now());
        let of = |queue: &str, exception: &str| {
            let g = index
                .groups()
                .into_iter()
                .find(|g| g.queue == queue && g.exception.as_deref() == Some(exception))
                .unwrap();
            recent.of(&g)
        };
        let trend = |last_15m, prev_15m, new| Recent {
            last_15m,
            prev_15m,
            new,
        };
        assert_eq!(of("default", "ValueError"), trend(2, 1, false));
        assert_eq!(of("default", "TimeoutError"), trend(2, 0, true));
        assert_eq!(of("emails", "ValueError"), trend(0, 0, false));
        assert_eq!(of("edges", "ValueError"), trend(1, 1, false));

        // With a search (the groups' `q`), only the jobs it finds count, as in `count`.
        let searched = Selection {
            q: Some(super::super::Needle::parse("old-4").unwrap()),
            ..Selection::default()
        };
        let recent = index.recent(&searched, now());
        let g = index.groups_matching(&searched);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].count, 1);
        // `new` goes by the group as searched: its one job failed just now.
        assert_eq!(recent.of(&g[0]), trend(1, 0, true));
    }
}
