use super::*;
use crate::glob::{ExceptionPattern, GlobList};
use chrono::TimeZone;
use proptest::prelude::*;

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + secs, 0).unwrap()
}

fn obs<'a>(queue: &'a str, id: &'a str, secs: i64) -> Observation<'a> {
    Observation {
        queue,
        job_id: id,
        score: 1e10 + secs as f64,
        failed_at: at(secs),
        function: Known::Is("app.tasks.send"),
        exception: Known::Is("ConnectionError"),
        attempts: 0,
        exhausted: false,
        policy: Some("transient"),
        state: State::Waiting,
        next_due: Some(at(secs + 60)),
        text: Known::Unknown,
    }
}

fn ids(page: &Page) -> Vec<&str> {
    page.jobs.iter().map(|j| j.job_id.as_str()).collect()
}

#[test]
fn a_failure_seen_once_is_listed_with_every_fact_and_seen_again_without_a_read() {
    let mut index = FailureIndex::default();
    index.begin_scan();
    index.observe(&obs("default", "a", 10));
    let page = index.page(&Selection::default(), Order::Newest, 0, 10);
    assert_eq!(page.total, 1);
    let a = &page.jobs[0];
    assert_eq!(a.queue, "default");
    assert_eq!(a.function.as_deref(), Some("app.tasks.send"));
    assert_eq!(a.exception.as_deref(), Some("ConnectionError"));
    assert_eq!(a.policy.as_deref(), Some("transient"));
    assert_eq!(a.state, State::Waiting);
    assert_eq!(a.next_due, Some(at(70)));
    index.begin_scan();
    assert!(index.still_there("default", "a", 1e10 + 10.0));
    assert!(
        !index.still_there("default", "a", 1e10 + 11.0),
        "a new failure of the same job (new score) must be read"
    );
}

#[test]
fn an_action_is_reflected_in_the_next_answer() {
    let mut index = FailureIndex::default();
    for (id, s) in [("a", 1), ("b", 2), ("c", 3)] {
        index.observe(&obs("default", id, s));
    }
    assert!(index.remove("default", "b"));
    assert!(!index.remove("default", "b"));
    let page = index.page(&Selection::default(), Order::Oldest, 0, 10);
    assert_eq!(ids(&page), vec!["a", "c"]);
    let all = index.tally(&Selection::default(), 0);
    assert_eq!((all.matched, all.unknown), (2, 0));
}

#[test]
fn a_completed_scan_drops_what_it_did_not_see_in_the_queues_it_scanned() {
    let mut index = FailureIndex::default();
    index.begin_scan();
    index.observe(&obs("default", "a", 1));
    index.observe(&obs("default", "b", 2));
    index.observe(&obs("other", "x", 3));
    index.begin_scan();
    assert!(index.still_there("default", "a", 1e10 + 1.0));
    index.end_scan(&["default".to_string()]);
    let page = index.page(&Selection::default(), Order::Oldest, 0, 10);
    assert_eq!(
        ids(&page),
        vec!["a", "x"],
        "b is gone; other was not scanned"
    );
}

#[test]
fn every_filter_combines_and_unknown_facts_are_counted_apart() {
    let mut index = FailureIndex::default();
    index.observe(&obs("default", "a", 1));
    index.observe(&Observation {
        exception: Known::Is("builtins.ValueError"),
        policy: Some("bad-input"),
        state: State::Due,
        next_due: None,
        ..obs("default", "b", 2)
    });
    index.observe(&Observation {
        exception: Known::Unknown,
        ..obs("emails", "c", 3)
    });
    index.observe(&Observation {
        function: Known::Is("app.reports.build"),
        policy: None,
        state: State::Unmatched,
        ..obs("emails", "d", 4)
    });
    index.observe(&Observation {
        exception: Known::Missing,
        ..obs("emails", "e", 5)
    });
    let q = |f: &dyn Fn(&mut Selection)| {
        let mut query = Selection::default();
        f(&mut query);
        index.page(&query, Order::Oldest, 0, 100)
    };
    let conn = ExceptionPattern::new("ConnectionError").unwrap();
    let page = q(&|q| q.exception = Some(conn.clone()));
    assert_eq!(ids(&page), vec!["a", "d"]);
    assert_eq!(page.unknown, 1, "c's exception type is not read yet");
    let page = q(&|q| {
        q.exception = Some(ExceptionPattern::new("ValueError").unwrap());
        q.queue = Some("default".into());
    });
    assert_eq!(ids(&page), vec!["b"]);
    let page = q(&|q| q.function = Some(GlobList::new(&["app.reports.*".to_string()]).unwrap()));
    assert_eq!(ids(&page), vec!["d"]);
    assert_eq!(ids(&q(&|q| q.state = Some(State::Unmatched))), vec!["d"]);
    assert_eq!(ids(&q(&|q| q.policy = Some("bad-input".into()))), vec!["b"]);
    assert_eq!(
        ids(&q(&|q| {
            q.failed_after = Some(at(2));
            q.failed_before = Some(at(5));
        })),
        vec!["c", "d"]
    );
    assert_eq!(
        ids(&q(&|q| q.queue = Some("nowhere".into()))),
        Vec::<&str>::new()
    );
    assert_eq!(
        ids(&q(&|q| q.policy = Some("nowhere".into()))),
        Vec::<&str>::new()
    );
}

#[test]
fn groups_are_by_queue_function_and_exception_largest_first() {
    let mut index = FailureIndex::default();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        index.observe(&obs("default", id, i as i64));
    }
    index.observe(&Observation {
        exception: Known::Is("ValueError"),
        state: State::Exhausted,
        next_due: None,
        ..obs("default", "v", 9)
    });
    index.observe(&Observation {
        exception: Known::Unknown,
        ..obs("emails", "u", 5)
    });
    let groups = index.groups();
    assert_eq!(groups.len(), 3);
    let top = &groups[0];
    assert_eq!(
        (top.queue.as_str(), top.exception.as_deref(), top.count),
        ("default", Some("ConnectionError"), 3)
    );
    assert_eq!((top.first_failed_at, top.last_failed_at), (at(0), at(2)));
    assert_eq!(top.next_due, Some(at(60)));
    assert_eq!(top.policy.as_deref(), Some("transient"));
    assert!(top.known);
    let unknown = groups.iter().find(|g| g.queue == "emails").unwrap();
    assert!(!unknown.known && unknown.exception.is_none());
    let v = groups
        .iter()
        .find(|g| g.exception.as_deref() == Some("ValueError"))
        .unwrap();
    assert_eq!(v.by_state.get(&State::Exhausted), Some(&1));
    assert_eq!(v.next_due, None);
}

#[test]
fn queue_counts_are_by_state() {
    let mut index = FailureIndex::default();
    index.observe(&obs("default", "a", 1));
    index.observe(&Observation {
        state: State::Undecodable,
        policy: None,
        function: Known::Unknown,
        exception: Known::Unknown,
        ..obs("default", "b", 2)
    });
    let counts = index.queue_counts();
    assert_eq!(counts["default"].failed, 2);
    assert_eq!(
        counts["default"].by_state.get(&State::Undecodable),
        Some(&1)
    );
}

#[test]
fn a_tally_counts_the_selection_over_every_queue_by_exception() {
    let mut index = FailureIndex::default();
    index.observe(&obs("default", "a", 1));
    index.observe(&obs("emails", "b", 2));
    index.observe(&Observation {
        exception: Known::Is("ValueError"),
        ..obs("emails", "c", 3)
    });
    let query = Selection {
        exception: Some(ExceptionPattern::new("ConnectionError").unwrap()),
        ..Selection::default()
    };
    let tally = index.tally(&query, 10);
    assert_eq!((tally.matched, tally.unknown, tally.undecodable), (2, 0, 0));
    let mut sample = tally.sample.clone();
    sample.sort();
    assert_eq!(sample, ["a", "b"]);
    assert_eq!(
        tally.by_exception.into_iter().collect::<Vec<_>>(),
        [("ConnectionError".to_string(), 2)]
    );
    assert_eq!(
        index.tally(&query, 1).sample.len(),
        1,
        "the sample is bounded"
    );
}

#[test]
fn a_dry_run_counts_by_state_and_exception_type_with_unread_and_missing_types_as_unknown() {
    let mut index = FailureIndex::default();
    let ids: Vec<String> = (0..40).map(|i| format!("j{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        index.observe(&Observation {
            exception: [
                Known::Is("ConnectionError"),
                Known::Is("ValueError"),
                Known::Unknown,
                Known::Missing,
            ][i % 4],
            state: [State::Waiting, State::Due, State::Exhausted][i % 3],
            ..obs("default", id, i as i64)
        });
    }
    index.observe(&Observation::undecodable("default", "broken", 1e10));
    let tally = index.tally(&Selection::default(), 0);
    assert_eq!((tally.matched, tally.undecodable), (40, 1));
    assert_eq!(
        tally.by_exception.into_iter().collect::<Vec<_>>(),
        [
            ("(unknown)".to_string(), 20),
            ("ConnectionError".to_string(), 10),
            ("ValueError".to_string(), 10)
        ]
    );
    assert_eq!(
        tally.by_state.into_iter().collect::<Vec<_>>(),
        [
            (State::Due, 13),
            (State::Waiting, 14),
            (State::Exhausted, 13)
        ]
    );
}

proptest! {
    /// Any page at any offset, either order, equals the same page of a plain sort of the whole
    /// selection, and consecutive pages neither overlap nor miss a job.
    #[test]
    fn pages_equal_a_full_sort_at_every_offset(
        // Seconds over 30 minutes, many shared (a deep page of everything finds its minutes
        // from the counts per minute).
        times in proptest::collection::vec((0i64..50).prop_map(|t| t * 37), 0..120),
        removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        queue_filter in any::<bool>(),
        newest in any::<bool>(),
        offset in 0usize..130,
        limit in 1usize..40,
    ) {
        let mut index = FailureIndex::default();
        let mut model: Vec<(String, String, i64)> = Vec::new();
        for (i, t) in times.iter().enumerate() {
            let queue = if i % 3 == 0 { "q1" } else { "q2" };
            let id = format!("j{i}");
            index.observe(&obs(queue, &id, *t));
            model.push((queue.to_string(), id, *t));
        }
        for r in &removed {
            if model.is_empty() { break; }
            let (q, id, _) = model.remove(r.index(model.len()));
            prop_assert!(index.remove(&q, &id));
        }
        let query = Selection { queue: queue_filter.then(|| "q1".to_string()), ..Selection::default() };
        let order = if newest { Order::Newest } else { Order::Oldest };
        let mut want: Vec<&(String, String, i64)> = model.iter().filter(|m| !queue_filter || m.0 == "q1").collect();
        want.sort_by_key(|m| if newest { -m.2 } else { m.2 });
        let page = index.page(&query, order, offset, limit);
        prop_assert_eq!(page.total as usize, want.len());
        let got_times: Vec<i64> = page.jobs.iter().map(|j| j.failed_at.timestamp() - 1_790_000_000).collect();
        let want_times: Vec<i64> = want.iter().skip(offset).take(limit).map(|m| m.2).collect();
        prop_assert_eq!(got_times, want_times, "failure times of the page");
        // Pages tile the selection: every job exactly once over all pages.
        let mut seen = std::collections::HashSet::new();
        let mut start = 0;
        while start < want.len() {
            for j in index.page(&query, order, start, limit).jobs {
                prop_assert!(seen.insert(j.job_id.clone()), "{} on two pages", j.job_id);
            }
            start += limit;
        }
        prop_assert_eq!(seen.len(), want.len());
    }
}

fn undecodable<'a>(queue: &'a str, id: &'a str) -> Observation<'a> {
    Observation::undecodable(queue, id, 1e10)
}

#[test]
fn a_tally_counts_the_selection_by_exception_with_a_sample_and_the_undecodable_apart() {
    let mut index = FailureIndex::default();
    for i in 0..5 {
        index.observe(&obs("default", &format!("t{i}"), i));
    }
    let value_error = Observation {
        exception: Known::Is("ValueError"),
        ..obs("default", "v", 9)
    };
    index.observe(&value_error);
    index.observe(&obs("emails", "e", 1));
    index.observe(&undecodable("default", "broken"));
    index.observe(&undecodable("emails", "broken-too"));

    let all_default = index.tally(
        &Selection {
            queue: Some("default".into()),
            ..Selection::default()
        },
        3,
    );
    assert_eq!(all_default.matched, 6);
    assert_eq!(all_default.undecodable, 1, "only the selection's queue");
    assert_eq!(all_default.sample.len(), 3);
    assert_eq!(
        all_default.by_exception,
        [
            ("ConnectionError".to_string(), 5),
            ("ValueError".to_string(), 1)
        ]
        .into_iter()
        .collect()
    );
    let timeouts = index.tally(
        &Selection {
            exception: Some(ExceptionPattern::new("ConnectionError").unwrap()),
            ..Selection::default()
        },
        100,
    );
    assert_eq!(timeouts.matched, 6, "both queues");
    assert_eq!(timeouts.undecodable, 2);
    assert_eq!(timeouts.unknown, 0, "undecodable jobs are not 'unknown'");
    let nowhere = index.tally(
        &Selection {
            queue: Some("nosuch".into()),
            ..Selection::default()
        },
        10,
    );
    assert_eq!(nowhere, Tally::default());
}

#[test]
fn a_bulk_action_reads_only_what_may_match_or_what_the_index_does_not_know_as_it_is() {
    let mut index = FailureIndex::default();
    index.observe(&obs("default", "timeout", 1));
    index.observe(&Observation {
        exception: Known::Is("ValueError"),
        ..obs("default", "bad-input", 2)
    });
    index.observe(&undecodable("default", "broken"));
    let query = Selection {
        exception: Some(ExceptionPattern::new("ConnectionError").unwrap()),
        ..Selection::default()
    };
    let ids: Vec<String> = ["timeout", "bad-input", "broken", "new", "failed-again"]
        .map(String::from)
        .to_vec();
    // "failed-again" is indexed, but the registry shows another score: a new failure.
    index.observe(&Observation {
        exception: Known::Is("ValueError"),
        ..obs("default", "failed-again", 3)
    });
    let scores = [1e10 + 1.0, 1e10 + 2.0, 1e10, 1e10 + 4.0, 1e10 + 99.0];
    let split = index.to_read(&query, "default", &ids, &scores);
    assert_eq!(
        split.matches,
        vec![KnownMatch {
            id: "timeout".into(),
            score: 1e10 + 1.0,
            exception: "ConnectionError".into()
        }]
    );
    assert_eq!(split.check, vec!["new", "failed-again"]);
    assert_eq!(split.undecodable, 1);
    // A queue the index never saw: everything is read whole.
    let split = index.to_read(&query, "elsewhere", &ids, &scores);
    assert!(split.matches.is_empty());
    assert_eq!(split.check, ids);
    assert_eq!(split.undecodable, 0);
}

#[test]
fn take_returns_the_indexed_state_and_set_state_marks_exhausted() {
    let mut index = FailureIndex::default();
    index.observe(&obs("default", "a", 1));
    index.observe(&obs("default", "b", 2));
    assert!(index.set_state("default", "b", State::Exhausted, true));
    assert!(!index.set_state("default", "zz", State::Exhausted, true));
    let b = index.page(
        &Selection {
            state: Some(State::Exhausted),
            ..Selection::default()
        },
        Order::Newest,
        0,
        10,
    );
    assert_eq!(ids(&b), vec!["b"]);
    assert!(b.jobs[0].exhausted);
    assert_eq!(b.jobs[0].next_due, None);
    assert_eq!(index.take("default", "a"), Some(State::Waiting));
    assert_eq!(index.take("default", "a"), None);
    assert_eq!(index.take("other", "b"), None);
    assert_eq!(index.len(), 1);
}

#[test]
fn a_page_near_the_front_and_a_deep_page_agree_with_a_full_sort() {
    // Enough entries that pages ending beyond TOP_K_MAX take the other path; failure times
    // repeat (ties are ordered by position).
    let n = TOP_K_MAX + 2_000;
    let mut index = FailureIndex::default();
    let names: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
    for (i, id) in names.iter().enumerate() {
        index.observe(&obs("default", id, ((i * 7919) % 3_001) as i64));
    }
    for order in [Order::Newest, Order::Oldest] {
        let everything = index.page(&Selection::default(), order, 0, n);
        assert_eq!(everything.jobs.len(), n);
        let all: Vec<&str> = ids(&everything);
        // A full sort by failure time, ties by position (here the order of observation).
        let mut sorted: Vec<usize> = (0..n).collect();
        sorted.sort_by_key(|&i| {
            let t = ((i * 7919) % 3_001) as i64;
            (if order == Order::Newest { -t } else { t }, i)
        });
        let want: Vec<&str> = sorted.iter().map(|&i| names[i].as_str()).collect();
        assert_eq!(all, want, "{order:?}: everything");
        for (offset, limit) in [
            (0, 50),
            (TOP_K_MAX - 10, 10),
            (TOP_K_MAX - 10, 11),
            (TOP_K_MAX + 5, 100),
            (n - 7, 50),
        ] {
            let page = index.page(&Selection::default(), order, offset, limit);
            assert_eq!(page.total, n as u64);
            assert_eq!(
                ids(&page),
                all[offset..(offset + limit).min(n)].to_vec(),
                "{order:?} {offset}+{limit}"
            );
        }
    }
}

// See: issue 21. A policy's requeue the script refused as stopped or succeeded is listed so at
// once (its exhausted mark kept), in the state filter and in the groups' counts.
#[test]
fn settle_lists_a_job_stopped_or_succeeded_and_keeps_its_exhausted_mark() {
    let mut index = FailureIndex::default();
    index.observe(&obs("default", "a", 1));
    index.observe(&obs("default", "b", 2));
    assert!(index.set_state("default", "b", State::Exhausted, true));
    assert!(index.settle("default", "a", State::Stopped));
    assert!(index.settle("default", "b", State::Succeeded));
    assert!(!index.settle("default", "zz", State::Stopped));
    assert!(!index.settle("other", "a", State::Stopped));
    for (state, id, exhausted) in [(State::Stopped, "a", false), (State::Succeeded, "b", true)] {
        let page = index.page(
            &Selection {
                state: Some(state),
                ..Selection::default()
            },
            Order::Newest,
            0,
            10,
        );
        assert_eq!(ids(&page), vec![id]);
        assert_eq!(page.jobs[0].exhausted, exhausted);
        assert_eq!(page.jobs[0].next_due, None);
    }
    let by_state = &index.groups()[0].by_state;
    assert_eq!(by_state.get(&State::Stopped), Some(&1));
    assert_eq!(by_state.get(&State::Succeeded), Some(&1));
    assert_eq!(State::parse("stopped"), Some(State::Stopped));
    assert_eq!(State::parse("succeeded"), Some(State::Succeeded));
}

/// What a bisect asked and found: ZCOUNTs, round trips, the leaves read (lo, hi, indexed
/// entries) and the ranges found empty.
type Bisected = (usize, usize, Vec<(f64, f64, u64)>, Vec<(f64, f64)>);

/// Runs a [`bisect::Bisect`] against a registry simulated by its sorted scores.
fn bisect_against(index_scores: Vec<f64>, registry: &[f64], leaf: usize) -> Bisected {
    let mut registry = registry.to_vec();
    registry.sort_by(f64::total_cmp);
    let zcount = |lo: f64, hi: f64| {
        (registry.partition_point(|s| *s <= hi) - registry.partition_point(|s| *s < lo)) as u64
    };
    let mut b = bisect::Bisect::new(index_scores, leaf);
    let (mut commands, mut trips) = (0, 0);
    while !b.is_done() {
        let counts: Vec<u64> = b.asking().iter().map(|s| zcount(s.lo, s.hi)).collect();
        commands += counts.len();
        trips += 1;
        b.answer(&counts);
    }
    let leaves = b
        .leaves()
        .iter()
        .map(|s| (s.lo, s.hi, s.indexed()))
        .collect();
    let empty = b.empty().iter().map(|s| (s.lo, s.hi)).collect();
    (commands, trips, leaves, empty)
}

// See: issue 21, item 4 (jobs others removed stayed listed until the next full scan).
#[test]
fn one_removal_among_a_million_is_found_with_a_few_dozen_counts_and_one_small_read() {
    for n in [100_000usize, 1_000_000] {
        let scores: Vec<f64> = (0..n).map(|i| 1e9 + i as f64).collect();
        let mut registry = scores.clone();
        let gone = registry.remove(n / 3);
        let started = std::time::Instant::now();
        let (commands, trips, leaves, empty) = bisect_against(scores, &registry, 256);
        let took = started.elapsed();
        let depth = (n as f64 / 256.0).log2().ceil() as usize;
        assert!(trips <= depth + 2, "n={n}: {trips} round trips");
        assert!(commands <= 2 * depth + 1, "n={n}: {commands} ZCOUNTs");
        assert_eq!(leaves.len(), 1, "n={n}: {leaves:?}");
        let (lo, hi, indexed) = leaves[0];
        assert!(lo <= gone && gone <= hi && indexed <= 256, "{leaves:?}");
        assert!(empty.is_empty());
        eprintln!("n={n}: {commands} ZCOUNTs in {trips} round trips, 1 leaf of {indexed}; planning took {took:?}");
    }
}

#[test]
fn removals_in_two_places_are_two_leaves_and_matching_ranges_are_not_descended() {
    let scores: Vec<f64> = (0..10_000).map(|i| 1e9 + i as f64).collect();
    let registry: Vec<f64> = scores
        .iter()
        .copied()
        .filter(|s| *s != 1e9 + 10.0 && *s != 1e9 + 9_000.0)
        .collect();
    let (_, _, leaves, empty) = bisect_against(scores.clone(), &registry, 100);
    assert_eq!(leaves.len(), 2, "{leaves:?}");
    assert!(leaves[0].0 <= 1e9 + 10.0 && 1e9 + 10.0 <= leaves[0].1);
    assert!(leaves[1].0 <= 1e9 + 9_000.0 && 1e9 + 9_000.0 <= leaves[1].1);
    assert!(empty.is_empty());
    // Nothing removed: one ZCOUNT, nothing read.
    let (commands, trips, leaves, _) = bisect_against(scores.clone(), &scores, 100);
    assert_eq!((commands, trips, leaves.len()), (1, 1, 0));
    // An empty index asks nothing.
    let (commands, _, leaves, _) = bisect_against(Vec::new(), &scores, 100);
    assert_eq!((commands, leaves.len()), (0, 0));
}

#[test]
fn a_range_the_registry_emptied_is_dropped_without_a_read() {
    // RQ's cleanup (ZREMRANGEBYSCORE 0 now) took the oldest fifth.
    let scores: Vec<f64> = (0..10_000).map(|i| 1e9 + i as f64).collect();
    let registry: Vec<f64> = scores[2_000..].to_vec();
    let (_, _, leaves, empty) = bisect_against(scores, &registry, 100);
    let emptied: f64 = empty.iter().map(|(lo, hi)| hi - lo + 1.0).sum();
    let read: u64 = leaves.iter().map(|l| l.2).sum();
    assert!(read <= 100, "at most one boundary leaf is read: {leaves:?}");
    assert!(emptied + read as f64 >= 2_000.0, "{empty:?} {leaves:?}");
    assert!(empty.iter().all(|(_, hi)| *hi < 1e9 + 2_000.0), "{empty:?}");
}

#[test]
fn a_burst_sharing_one_score_is_read_as_one_leaf() {
    // RQ's scores are whole seconds: 1,000 jobs failed in the same second.
    let mut scores = vec![5e9; 1_000];
    scores.extend((0..1_000).map(|i| 6e9 + i as f64));
    let mut registry = scores.clone();
    registry.remove(0);
    let (_, _, leaves, _) = bisect_against(scores, &registry, 100);
    assert_eq!(leaves, vec![(5e9, 5e9, 1_000)]);
}

#[test]
fn drop_absent_drops_only_what_the_registry_no_longer_holds_with_that_score() {
    let mut index = FailureIndex::default();
    for (id, s) in [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 50)] {
        index.observe(&obs("default", id, s));
    }
    index.observe(&obs("other", "b", 2));
    let score = |s: i64| 1e10 + s as f64;
    // In [1, 4]: a is still there, b is gone, c failed again (another score), d is there, and
    // x is a new failure the index does not know. e is outside the ranges read.
    let present = vec![
        (b"a".to_vec(), score(1)),
        (b"c".to_vec(), score(30)),
        (b"d".to_vec(), score(4)),
        (b"x".to_vec(), score(2)),
    ];
    let dropped = index.drop_absent(
        "default",
        &[(score(1), score(2)), (score(3), score(4))],
        &present,
    );
    let mut gone: Vec<&str> = dropped.gone.iter().map(|(id, _, _)| id.as_str()).collect();
    gone.sort();
    assert_eq!(gone, ["b", "c"]);
    assert_eq!(dropped.unknown, 2, "x, and c with its new score");
    let page = index.page(&Selection::default(), Order::Oldest, 0, 10);
    let mut left: Vec<(String, &str)> = page
        .jobs
        .iter()
        .map(|j| (j.queue.clone(), j.job_id.as_str()))
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            ("default".to_string(), "a"),
            ("default".to_string(), "d"),
            ("default".to_string(), "e"),
            ("other".to_string(), "b")
        ]
    );
    let spans = index.queue_spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(
        (
            spans[0].queue.as_str(),
            spans[0].indexed,
            spans[0].lo,
            spans[0].hi
        ),
        ("default", 3, score(1), score(50))
    );
    // Asked again after a change, the spans follow it (they are kept while nothing changes).
    assert_eq!(index.queue_spans(), spans);
    index.observe(&obs("other", "z", 70));
    let spans = index.queue_spans();
    assert_eq!(
        (spans[1].queue.as_str(), spans[1].indexed, spans[1].hi),
        ("other", 2, score(70))
    );
}

/// A reader that panicked while it held a cache's lock (counting the groups, say) leaves the
/// cache as it was: the next readers still get their answers, not a poisoned lock's panic.
#[test]
fn a_reader_that_panicked_holding_a_cache_does_not_stop_the_next() {
    let mut index = FailureIndex::default();
    index.observe(&obs("default", "a", 1));
    let before = index.groups();
    index.observe(&obs("default", "b", 2));
    std::thread::scope(|s| {
        for cache in [0, 1, 2] {
            let index = &index;
            let panicked = s
                .spawn(move || {
                    let _held = (
                        (cache == 0).then(|| index.tallies.lock().unwrap()),
                        (cache == 1).then(|| index.recent_cache.lock().unwrap()),
                        (cache == 2).then(|| index.occurrences.lock().unwrap()),
                    );
                    panic!("a reader fails while it holds cache {cache}");
                })
                .join();
            assert!(panicked.is_err());
        }
    });
    let now = chrono::Utc::now();
    let (groups, _) = index.groups_and_recent(now);
    assert_eq!(
        groups[0].count, 2,
        "counted again after the change: {before:?}"
    );
    // The counts kept behind the poisoned locks still follow the entries.
    index.observe(&obs("default", "c", 3));
    assert_eq!(index.groups()[0].count, 3);
    index.remove("default", "c");
    assert_eq!(index.groups(), groups);
    assert_eq!(index.queue_spans()[0].indexed, 2);
}

/// One change to the index, as the scans, the writes and the notifications make them.
#[derive(Debug, Clone)]
enum Change {
    /// A failure read (new, or replacing the job's entry): job, queue, function, exception,
    /// seconds (failure time), state, due after it (seconds).
    Observe(u8, u8, u8, u8, i64, usize, Option<i64>),
    Remove(u8),
    SetState(u8, usize),
    SetHeld(u8),
    /// A full scan that saw again the jobs whose bit is set.
    Scan(u16),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0u8..12, 0u8..2, 0u8..2, 0u8..3, 0i64..4000, 0..State::ALL.len(), proptest::option::of(0i64..100))
            .prop_map(|(j, q, f, x, t, s, d)| Change::Observe(j, q, f, x, t, s, d)),
        2 => (0u8..12).prop_map(Change::Remove),
        1 => (0u8..12, 0..State::ALL.len()).prop_map(|(j, s)| Change::SetState(j, s)),
        1 => (0u8..12).prop_map(Change::SetHeld),
        1 => any::<u16>().prop_map(Change::Scan),
    ]
}

proptest! {
    /// The groups and recent failures kept as the entries change equal what a pass over the
    /// entries counts, after any changes: removing a group's oldest, newest and soonest due
    /// jobs one by one (so that the kept lowest values run out), replacing an entry with one
    /// in another group, state changes, scans that drop entries.
    #[test]
    fn counts_kept_as_entries_change_equal_a_pass_over_them(
        changes in proptest::collection::vec(change(), 0..80),
    ) {
        let queues = ["q0", "q1"];
        let functions = [Known::Is("app.a"), Known::Unknown];
        let exceptions = [Known::Is("ValueError"), Known::Is("TimeoutError"), Known::Missing];
        let now = at(3600);
        let mut index = FailureIndex::default();
        // The recent failures are kept from the first answer on.
        index.recent(&Selection::default(), now);
        let mut queue_of: HashMap<u8, u8> = HashMap::new();
        for change in changes {
            match change {
                Change::Observe(j, q, f, x, t, s, d) => {
                    // A job stays in its queue (another queue's entry is another job).
                    let q = *queue_of.entry(j).or_insert(q);
                    let id = format!("j{j}");
                    index.observe(&Observation {
                        function: functions[usize::from(f)],
                        exception: exceptions[usize::from(x)],
                        state: State::ALL[s],
                        next_due: d.map(|d| at(t + d)),
                        policy: [None, Some("p")][usize::from(x % 2)],
                        ..obs(queues[usize::from(q)], &id, t)
                    });
                }
                Change::Remove(j) => {
                    if let Some(q) = queue_of.get(&j) {
                        index.remove(queues[usize::from(*q)], &format!("j{j}"));
                    }
                }
                Change::SetState(j, s) => {
                    if let Some(q) = queue_of.get(&j) {
                        index.set_state(queues[usize::from(*q)], &format!("j{j}"), State::ALL[s], s % 2 == 0);
                    }
                }
                Change::SetHeld(j) => {
                    if let Some(q) = queue_of.get(&j) {
                        index.set_held(queues[usize::from(*q)], &format!("j{j}"));
                    }
                }
                Change::Scan(seen) => {
                    index.begin_scan();
                    let listed: Vec<((u16, JobKey), f64)> =
                        index.entries.iter().map(|(k, e)| (k.clone(), e.score)).collect();
                    for ((q, key), score) in listed {
                        let j: u8 = key.to_id()[1..].parse().unwrap();
                        if seen & (1 << j) != 0 {
                            let queue = index.queues.names[usize::from(q)].clone();
                            prop_assert!(index.still_there(&queue, &key.to_id(), score));
                        }
                    }
                    index.end_scan(&queues.map(String::from));
                }
            }
            prop_assert!(index.kinds.counts_match(index.entries.hot_slice()));
            let kept = index.groups();
            let counted = index.groups_matching(&Selection::default());
            prop_assert_eq!(&kept, &counted);
            let mut minutes: Vec<i64> = index.entries.hot_slice().iter().map(|h| h.failed_at_us.div_euclid(60_000_000)).collect();
            minutes.sort_unstable();
            let kept: Vec<i64> = lock(&index.tallies).minutes.iter().flat_map(|(m, n)| std::iter::repeat_n(*m, *n as usize)).collect();
            prop_assert_eq!(kept, minutes);
            prop_assert_eq!(index.queue_spans(), index.spans_now());
            let kept = index.recent(&Selection::default(), now);
            let cache = lock(&index.recent_cache).take();
            let counted = index.recent(&Selection::default(), now);
            *lock(&index.recent_cache) = cache;
            prop_assert_eq!(kept, counted);
        }
    }
}
