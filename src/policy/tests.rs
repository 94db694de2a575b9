//! Table and property tests of the policy engine: which policy decides, and what it decides.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::glob::{ExceptionPattern, GlobList};
use crate::rq::{CasToken, Failure, JobFacts, Meta, MetaValue, Reads};

/// When every test job failed.
fn failed_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// Compiles the `[[policy]]` tables of a TOML snippet the way the daemon does.
fn policies(toml: &str) -> Vec<Policy> {
    match crate::config::parse(toml, "policies.toml") {
        Ok(config) => config.policies,
        Err(e) => panic!("test policies must be valid:\n{e}"),
    }
}

fn traceback(last_line: &str) -> String {
    format!(
        "Traceback (most recent call last):\n  File \"/app/workers/mail.py\", line 12, in send\n    smtp.send(msg)\n{last_line}\n"
    )
}

/// A failed job on `queue` running `func` whose traceback ends in `last_line`.
fn job(queue: &str, func: Option<&str>, last_line: &str) -> JobFacts {
    JobFacts {
        job_id: "0b6a1c2e-job".to_string(),
        queue: queue.to_string(),
        origin: queue.to_string(),
        status: Some("failed".to_string()),
        func_name: func.map(str::to_string),
        description: None,
        failed_at: failed_at(),
        failed_at_from: crate::rq::job::FailedAt::EndedAt,
        attempts: 0,
        exhausted: false,
        last_policy: None,
        requeued_at: None,
        succeeded_at: None,
        failure: Some(Failure::from_text(traceback(last_line))),
        cas: CasToken::default(),
        reads: Reads::ALL,
        created_at: None,
        meta: Some(Meta::Read(vec![])),
    }
}

/// A plain `ValueError` on `default`, for tests that care only about the action.
fn any_job() -> JobFacts {
    job("default", Some("app.tasks.work"), "ValueError: bad input")
}

fn decided(policies: &[Policy], job: &JobFacts, now: DateTime<Utc>) -> (Decision, Option<String>) {
    let eval = decide(policies, job, now);
    (eval.decision, eval.policy.map(|p| p.name.clone()))
}

/// A fixed 60s retry policy without jitter, with the given extra lines.
fn fixed_retry(extra: &str) -> Vec<Policy> {
    policies(&format!(
        "[[policy]]\nname = \"retry\"\nbackoff = {{ strategy = \"fixed\", delay = \"60s\" }}\n{extra}\n"
    ))
}

// ---- which policy decides ------------------------------------------------------------------

#[test]
fn the_first_matching_policy_decides_even_when_later_ones_match_too() {
    let p = policies(
        r#"
[[policy]]
name = "not-this-queue"
queues = ["reports"]
action = "purge"
[[policy]]
name = "leave-value-errors"
exceptions = ["ValueError"]
action = "ignore"
[[policy]]
name = "purge-everything"
action = "purge"
"#,
    );
    let (decision, policy) = decided(&p, &any_job(), failed_at());
    assert_eq!(decision, Decision::Ignore);
    assert_eq!(policy.as_deref(), Some("leave-value-errors"));

    let (decision, policy) = decided(&p, &job("default", None, "KeyError: 'x'"), failed_at());
    assert_eq!(decision, Decision::PurgeNow { exhausted: false });
    assert_eq!(policy.as_deref(), Some("purge-everything"));
}

#[test]
fn every_match_field_must_hold() {
    let p = policies(
        r#"
[[policy]]
name = "strict"
queues = ["email"]
functions = ["app.mail.*"]
exceptions = ["ConnectionError"]
error_pattern = "refused"
action = "ignore"
"#,
    );
    let all = job(
        "email",
        Some("app.mail.send"),
        "ConnectionError: [Errno 111] Connection refused",
    );
    assert_eq!(decided(&p, &all, failed_at()).0, Decision::Ignore);

    let cases = [
        (
            "wrong queue",
            job(
                "default",
                Some("app.mail.send"),
                "ConnectionError: Connection refused",
            ),
        ),
        (
            "wrong function",
            job(
                "email",
                Some("app.web.send"),
                "ConnectionError: Connection refused",
            ),
        ),
        (
            "wrong exception",
            job(
                "email",
                Some("app.mail.send"),
                "OSError: Connection refused",
            ),
        ),
        (
            "wrong text",
            job(
                "email",
                Some("app.mail.send"),
                "ConnectionError: reset by peer",
            ),
        ),
    ];
    for (what, job) in cases {
        assert_eq!(
            decided(&p, &job, failed_at()),
            (Decision::Unmatched, None),
            "{what}"
        );
    }
}

#[test]
fn any_element_of_a_list_may_match() {
    let p = policies(
        r#"
[[policy]]
name = "mail-or-default"
queues = ["default", "email*"]
exceptions = ["TimeoutError", "ConnectionError"]
action = "ignore"
"#,
    );
    for (queue, exc, expected) in [
        ("default", "TimeoutError: t", Decision::Ignore),
        ("email", "ConnectionError: c", Decision::Ignore),
        ("email-high", "TimeoutError: t", Decision::Ignore),
        ("reports", "TimeoutError: t", Decision::Unmatched),
        ("default", "ValueError: v", Decision::Unmatched),
    ] {
        let j = job(queue, Some("f"), exc);
        assert_eq!(
            decide(&p, &j, failed_at()).decision,
            expected,
            "{queue} {exc}"
        );
    }
}

#[test]
fn function_globs_match_dotted_names_and_need_a_known_function() {
    let p = policies(
        "[[policy]]\nname = \"workers\"\nfunctions = [\"app.workers.*\"]\naction = \"ignore\"\n",
    );
    for (func, expected) in [
        (Some("app.workers.send"), Decision::Ignore),
        (Some("app.workers.reports.render"), Decision::Ignore),
        (Some("app.web.views.index"), Decision::Unmatched),
        (Some("app.workers"), Decision::Unmatched),
        (None, Decision::Unmatched),
    ] {
        let j = job("default", func, "ValueError: x");
        assert_eq!(decide(&p, &j, failed_at()).decision, expected, "{func:?}");
    }
    let miss = explain(&p, &job("default", None, "ValueError: x"), failed_at()).misses;
    assert_eq!(
        miss,
        vec![(
            "workers",
            Mismatch::Function {
                function: None,
                patterns: vec!["app.workers.*".to_string()],
            }
        )]
    );
}

#[test]
fn bare_exception_names_match_any_module_and_dotted_names_only_their_own() {
    let bare = policies(
        "[[policy]]\nname = \"bare\"\nexceptions = [\"TimeoutError\"]\naction = \"ignore\"\n",
    );
    let dotted = policies(
        "[[policy]]\nname = \"dotted\"\nexceptions = [\"redis.exceptions.TimeoutError\"]\naction = \"ignore\"\n",
    );
    let cases = [
        ("TimeoutError: t", true, false),
        ("redis.exceptions.TimeoutError: t", true, true),
        ("asyncio.exceptions.TimeoutError: t", true, false),
        ("socket.TimeoutErrorish: t", false, false),
        ("ConnectionError: c", false, false),
    ];
    for (last_line, bare_hit, dotted_hit) in cases {
        let j = job("default", Some("f"), last_line);
        assert_eq!(
            decide(&bare, &j, failed_at()).decision == Decision::Ignore,
            bare_hit,
            "bare vs {last_line}"
        );
        assert_eq!(
            decide(&dotted, &j, failed_at()).decision == Decision::Ignore,
            dotted_hit,
            "dotted vs {last_line}"
        );
    }
}

#[test]
fn error_pattern_searches_the_whole_traceback_not_just_the_last_line() {
    let p = policies(
        "[[policy]]\nname = \"mail-file\"\nerror_pattern = \"workers/mail\\\\.py\"\naction = \"ignore\"\n",
    );
    // The pattern only appears in a `File ...` line in the middle of the traceback.
    let j = job("default", Some("f"), "RuntimeError: boom");
    assert!(!j
        .failure_text()
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .contains("mail"));
    assert_eq!(decide(&p, &j, failed_at()).decision, Decision::Ignore);

    let case_insensitive = policies(
        "[[policy]]\nname = \"timeouts\"\nerror_pattern = \"(?i)timed? ?out\"\naction = \"ignore\"\n",
    );
    for (last_line, hit) in [
        ("OSError: Operation Timed Out", true),
        ("socket.timeout: timeout", true),
        ("ValueError: bad input", false),
    ] {
        let j = job("default", Some("f"), last_line);
        assert_eq!(
            decide(&case_insensitive, &j, failed_at()).decision == Decision::Ignore,
            hit,
            "{last_line}"
        );
    }
}

#[test]
fn a_job_without_failure_text_never_matches_exception_or_text_filters() {
    let p = policies(
        r#"
[[policy]]
name = "by-exception"
exceptions = ["*"]
action = "ignore"
[[policy]]
name = "by-text"
error_pattern = ".*"
action = "ignore"
"#,
    );
    let mut j = any_job();
    j.failure = None;
    let eval = explain(&p, &j, failed_at());
    assert_eq!(eval.decision, Decision::Unmatched);
    assert_eq!(
        eval.misses,
        vec![
            (
                "by-exception",
                Mismatch::Exception {
                    exc_type: None,
                    patterns: vec!["*".to_string()],
                }
            ),
            (
                "by-text",
                Mismatch::ErrorPattern {
                    pattern: ".*".to_string(),
                    has_text: false,
                }
            ),
        ]
    );
}

#[test]
fn a_job_no_policy_matches_is_left_alone() {
    let p = policies("[[policy]]\nname = \"reports\"\nqueues = [\"reports\"]\n");
    let eval = decide(&p, &any_job(), failed_at() + secs(86_400));
    assert_eq!(eval.decision, Decision::Unmatched);
    assert!(eval.policy.is_none());
    assert_eq!(eval.decision.name(), "unmatched");
    assert_eq!(
        decide(&[], &any_job(), failed_at()).decision,
        Decision::Unmatched
    );
}

#[test]
fn an_ignore_policy_leaves_the_job_and_stops_evaluation() {
    let p = policies("[[policy]]\nname = \"hands-off\"\naction = \"ignore\"\n[[policy]]\nname = \"purge\"\naction = \"purge\"\n");
    let (decision, policy) = decided(&p, &any_job(), failed_at() + secs(10 * 86_400));
    assert_eq!(decision, Decision::Ignore);
    assert_eq!(policy.as_deref(), Some("hands-off"));
}

// ---- what the matching policy decides ------------------------------------------------------

#[test]
fn a_purge_policy_without_purge_after_purges_at_once() {
    let p = policies("[[policy]]\nname = \"purge\"\naction = \"purge\"\n");
    assert_eq!(
        decide(&p, &any_job(), failed_at()).decision,
        Decision::PurgeNow { exhausted: false }
    );
}

#[test]
fn a_purge_policy_waits_for_purge_after_since_the_failure() {
    let p = policies("[[policy]]\nname = \"purge\"\naction = \"purge\"\npurge_after = \"7d\"\n");
    let due = failed_at() + secs(7 * 86_400);
    assert_eq!(
        decide(&p, &any_job(), failed_at() + secs(86_400)).decision,
        Decision::PurgeAt { due }
    );
    assert_eq!(
        decide(&p, &any_job(), due - secs(1)).decision.due(),
        Some(due)
    );
    assert_eq!(
        decide(&p, &any_job(), due).decision,
        Decision::PurgeNow { exhausted: false }
    );
}

#[test]
fn a_job_in_backoff_is_not_requeued_early() {
    let p = fixed_retry("");
    let due = failed_at() + secs(60);
    assert_eq!(
        decide(&p, &any_job(), failed_at() + secs(30)).decision,
        Decision::RequeueAt { due, attempt: 1 }
    );
    assert_eq!(
        decide(&p, &any_job(), due - chrono::Duration::milliseconds(1)).decision,
        Decision::RequeueAt { due, attempt: 1 }
    );
}

#[test]
fn a_job_whose_backoff_has_ended_is_requeued_now() {
    let p = fixed_retry("");
    let due = failed_at() + secs(60);
    assert_eq!(
        decide(&p, &any_job(), due).decision,
        Decision::RequeueNow {
            attempt: 1,
            at_front: false
        }
    );
    let front = fixed_retry("at_front = true");
    assert_eq!(
        decide(&front, &any_job(), due + secs(3600)).decision,
        Decision::RequeueNow {
            attempt: 1,
            at_front: true
        }
    );
}

#[test]
fn the_retry_is_due_at_the_failure_plus_the_delay_for_the_attempts_so_far() {
    // Linear 10s + 20s per attempt: after 2 requeues the next waits 50s after the failure.
    let p = policies(
        "[[policy]]\nname = \"linear\"\nmax_attempts = 10\nbackoff = { strategy = \"linear\", initial = \"10s\", step = \"20s\" }\n",
    );
    let mut j = any_job();
    j.attempts = 2;
    let due = failed_at() + secs(50);
    assert_eq!(
        decide(&p, &j, failed_at() + secs(49)).decision,
        Decision::RequeueAt { due, attempt: 3 }
    );
    let Action::Retry(spec) = &p[0].action else {
        panic!("retry policy expected");
    };
    assert_eq!(next_retry_at(spec, &j), due);
    assert_eq!(
        decide(&p, &j, due).decision,
        Decision::RequeueNow {
            attempt: 3,
            at_front: false
        }
    );
}

#[test]
fn a_job_that_used_up_its_attempts_is_marked_exhausted_once() {
    let p = fixed_retry("max_attempts = 3");
    let mut j = any_job();
    j.attempts = 3;
    let later = failed_at() + secs(86_400);
    assert_eq!(decide(&p, &j, later).decision, Decision::MarkExhausted);
    j.exhausted = true;
    assert_eq!(decide(&p, &j, later).decision, Decision::Exhausted);
    j.attempts = 7;
    assert_eq!(decide(&p, &j, later).decision, Decision::Exhausted);
}

#[test]
fn on_exhausted_purge_deletes_the_used_up_job() {
    let p = fixed_retry("max_attempts = 2\non_exhausted = \"purge\"");
    let mut j = any_job();
    j.attempts = 2;
    assert_eq!(
        decide(&p, &j, failed_at()).decision,
        Decision::PurgeNow { exhausted: true }
    );
    j.exhausted = true;
    assert_eq!(
        decide(&p, &j, failed_at()).decision,
        Decision::PurgeNow { exhausted: true }
    );
    j.attempts = 1;
    j.exhausted = false;
    assert!(matches!(
        decide(&p, &j, failed_at()).decision,
        Decision::RequeueAt { attempt: 2, .. }
    ));
}

#[test]
fn raising_max_attempts_retries_an_exhausted_job_again() {
    let mut j = any_job();
    j.attempts = 3;
    j.exhausted = true;
    let later = failed_at() + secs(86_400);
    assert_eq!(
        decide(&fixed_retry("max_attempts = 3"), &j, later).decision,
        Decision::Exhausted
    );
    assert_eq!(
        decide(&fixed_retry("max_attempts = 5"), &j, later).decision,
        Decision::RequeueNow {
            attempt: 4,
            at_front: false
        }
    );
}

#[test]
fn explain_keeps_one_mismatch_per_skipped_policy_and_decide_keeps_none() {
    let p = policies(
        r#"
[[policy]]
name = "reports-only"
queues = ["reports"]
[[policy]]
name = "timeouts"
exceptions = ["TimeoutError"]
[[policy]]
name = "catch-all"
action = "ignore"
[[policy]]
name = "never-reached"
queues = ["nothing"]
"#,
    );
    let j = any_job();
    let eval = explain(&p, &j, failed_at());
    assert_eq!(eval.decision, Decision::Ignore);
    assert_eq!(eval.policy.map(|p| p.name.as_str()), Some("catch-all"));
    assert_eq!(
        eval.misses,
        vec![
            (
                "reports-only",
                Mismatch::Queue {
                    queue: "default".to_string(),
                    patterns: vec!["reports".to_string()],
                }
            ),
            (
                "timeouts",
                Mismatch::Exception {
                    exc_type: Some("ValueError".to_string()),
                    patterns: vec!["TimeoutError".to_string()],
                }
            ),
        ]
    );
    assert_eq!(
        eval.misses[0].1.to_string(),
        "queue \"default\" matches none of [\"reports\"]"
    );

    let quiet = decide(&p, &j, failed_at());
    assert_eq!(quiet.decision, eval.decision);
    assert!(quiet.misses.is_empty());

    let elsewhere = job("other", Some("f"), "KeyError: k");
    let none = explain(&p[..2], &elsewhere, failed_at());
    assert_eq!(none.decision, Decision::Unmatched);
    assert_eq!(none.misses.len(), 2);
}

// ---- properties ----------------------------------------------------------------------------

fn any_backoff() -> impl Strategy<Value = Backoff> {
    let d = (0u64..200_000).prop_map(Duration::from_secs);
    let jitter = 0.0f64..=1.0;
    prop_oneof![
        (d.clone(), jitter.clone()).prop_map(|(delay, jitter)| Backoff::Fixed { delay, jitter }),
        (
            d.clone(),
            d.clone(),
            proptest::option::of(d.clone()),
            jitter.clone()
        )
            .prop_map(|(initial, step, max, jitter)| Backoff::Linear {
                initial,
                step,
                max,
                jitter
            }),
        (d.clone(), 1.0f64..=100.0, d, jitter).prop_map(|(initial, multiplier, max, jitter)| {
            Backoff::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            }
        }),
    ]
}

fn any_retry_spec() -> impl Strategy<Value = RetrySpec> {
    (1u32..=20, any_backoff(), any::<bool>(), any::<bool>()).prop_map(
        |(max_attempts, backoff, at_front, purge)| RetrySpec {
            max_attempts,
            backoff,
            at_front,
            on_exhausted: if purge {
                OnExhausted::Purge
            } else {
                OnExhausted::Keep
            },
            circuit_breaker: None,
            max_age: None,
            requeue_to: None,
            hold_when: None,
        },
    )
}

fn retry_policy(spec: RetrySpec) -> Vec<Policy> {
    vec![Policy {
        name: "prop".to_string(),
        matcher: Matcher::default(),
        action: Action::Retry(spec),
    }]
}

/// A failed job at a random time with random attempts, plus a `now` around it.
fn any_job_and_now() -> impl Strategy<Value = (JobFacts, DateTime<Utc>)> {
    (
        "[a-f0-9-]{1,36}",
        0i64..4_000_000_000,
        0u32..30,
        any::<bool>(),
        -1_000_000i64..100_000_000,
    )
        .prop_map(|(id, failed, attempts, exhausted, offset)| {
            let mut j = any_job();
            j.job_id = id;
            j.failed_at = DateTime::from_timestamp(failed, 0).unwrap();
            j.attempts = attempts;
            j.exhausted = exhausted;
            let now = j.failed_at + secs(offset);
            (j, now)
        })
}

proptest! {
    #[test]
    fn a_requeue_is_always_the_next_attempt_within_max_attempts(
        spec in any_retry_spec(),
        (j, now) in any_job_and_now(),
    ) {
        let max = spec.max_attempts;
        let p = retry_policy(spec);
        match decide(&p, &j, now).decision {
            Decision::RequeueNow { attempt, .. } | Decision::RequeueAt { attempt, .. } => {
                prop_assert_eq!(attempt, j.attempts + 1);
                prop_assert!(attempt <= max);
            }
            Decision::MarkExhausted | Decision::Exhausted | Decision::PurgeNow { exhausted: true } => {
                prop_assert!(j.attempts >= max);
            }
            other => prop_assert!(false, "a retry policy decided {other:?}"),
        }
    }

    #[test]
    fn the_same_job_at_the_same_time_gets_the_same_decision(
        spec in any_retry_spec(),
        (j, now) in any_job_and_now(),
    ) {
        let p = retry_policy(spec.clone());
        let again = retry_policy(spec);
        let first = decide(&p, &j, now).decision;
        prop_assert_eq!(&first, &decide(&p, &j.clone(), now).decision);
        prop_assert_eq!(&first, &decide(&again, &j, now).decision);
        prop_assert_eq!(&first, &explain(&p, &j, now).decision);
    }

    #[test]
    fn a_wait_is_in_the_future_and_a_requeue_is_not(
        spec in any_retry_spec(),
        (j, now) in any_job_and_now(),
    ) {
        let due = next_retry_at(&spec, &j);
        let p = retry_policy(spec);
        match decide(&p, &j, now).decision {
            Decision::RequeueAt { due: wait_until, .. } => {
                prop_assert!(wait_until > now);
                prop_assert_eq!(wait_until, due);
            }
            Decision::RequeueNow { .. } => prop_assert!(due <= now),
            _ => {}
        }
    }

    #[test]
    fn the_next_retry_never_precedes_the_failure(
        spec in any_retry_spec(),
        (j, _now) in any_job_and_now(),
    ) {
        prop_assert!(next_retry_at(&spec, &j) >= j.failed_at);
    }

    #[test]
    fn a_purge_waits_exactly_purge_after(
        after in 0u64..100_000_000,
        (j, now) in any_job_and_now(),
    ) {
        let p = vec![Policy {
            name: "purge".to_string(),
            matcher: Matcher::default(),
            action: Action::Purge { after: Duration::from_secs(after) },
        }];
        let due = j.failed_at + secs(after as i64);
        let expected = if due <= now {
            Decision::PurgeNow { exhausted: false }
        } else {
            Decision::PurgeAt { due }
        };
        prop_assert_eq!(decide(&p, &j, now).decision, expected);
    }
}

// ---- what a scan reads ---------------------------------------------------------------------

/// A matcher built from small alphabets, so that random policies often match random jobs.
fn any_matcher() -> impl Strategy<Value = Matcher> {
    let globs = |options: &'static [&'static str]| {
        proptest::option::of(proptest::sample::select(options))
            .prop_map(|g| g.map(|g| GlobList::new(&[g.to_string()]).unwrap()))
    };
    (
        globs(&["default", "reports", "*"]),
        globs(&["app.tasks.*", "app.workers.*.send", "*"]),
        proptest::option::of(proptest::sample::select(
            &["ValueError", "TimeoutError", "builtins.KeyError"][..],
        )),
        proptest::option::of(proptest::sample::select(
            &["timed out", "(?i)bad", "line \\d+"][..],
        )),
        proptest::option::of(proptest::sample::select(&["acme-*", "other", "1"][..])),
    )
        .prop_map(|(queues, functions, exception, pattern, tenant)| Matcher {
            queues,
            functions,
            exceptions: exception.map(|e| vec![ExceptionPattern::new(e).unwrap()]),
            error_pattern: pattern.map(|p| regex::Regex::new(p).unwrap()),
            meta: tenant.map(|t| {
                vec![MetaPattern {
                    key: "tenant".to_string(),
                    value: GlobList::new(&[t.to_string()]).unwrap(),
                }]
            }),
        })
}

fn any_policies() -> impl Strategy<Value = Vec<Policy>> {
    let action = prop_oneof![
        (
            any_retry_spec(),
            proptest::option::of(1u64..400_000_000).prop_map(|a| a.map(Duration::from_secs)),
        )
            .prop_map(|(spec, max_age)| Action::Retry(RetrySpec { max_age, ..spec })),
        (0u64..100_000).prop_map(|s| Action::Purge {
            after: Duration::from_secs(s)
        }),
        Just(Action::Ignore),
    ];
    proptest::collection::vec((any_matcher(), action), 0..6).prop_map(|list| {
        list.into_iter()
            .enumerate()
            .map(|(i, (matcher, action))| Policy {
                name: format!("p{i}"),
                matcher,
                action,
            })
            .collect()
    })
}

fn any_failed_job() -> impl Strategy<Value = (JobFacts, DateTime<Utc>)> {
    (
        any_job_and_now(),
        proptest::sample::select(&["default", "reports", "emails"][..]),
        proptest::option::of(proptest::sample::select(
            &["app.tasks.work", "app.workers.mail.send", "other"][..],
        )),
        proptest::option::of(proptest::sample::select(
            &[
                "ValueError: bad input",
                "socket.TimeoutError: timed out",
                "KeyError: 'id'",
            ][..],
        )),
        proptest::option::of(-100_000_000i64..100_000),
        0usize..5,
    )
        .prop_map(|((mut j, now), queue, func, last_line, created, meta)| {
            j.queue = queue.to_string();
            j.origin = queue.to_string();
            j.func_name = func.map(str::to_string);
            j.failure = last_line.map(|l| Failure::from_text(traceback(l)));
            j.created_at = created.map(|offset| j.failed_at + secs(offset));
            let tenant = |v: MetaValue| Meta::Read(vec![("tenant".to_string(), v)]);
            j.meta = Some(match meta {
                0 => Meta::Read(vec![]),
                1 => tenant(MetaValue::Text("acme-1".to_string())),
                2 => tenant(MetaValue::Text("1".to_string())),
                3 => tenant(MetaValue::Other("list")),
                _ => Meta::Unreadable("not a readable pickle".to_string()),
            });
            (j, now)
        })
}

#[test]
fn a_queue_wide_policy_ends_what_is_read_and_other_queues_policies_do_not_count() {
    let p = policies(
        r#"
        [[policy]]
        name = "reports-by-function"
        queues = ["reports"]
        functions = ["app.*"]
        [[policy]]
        name = "timeouts"
        exceptions = ["TimeoutError"]
        queues = ["default", "reports"]
        [[policy]]
        name = "default-all"
        queues = ["default"]
        [[policy]]
        name = "by-pattern"
        error_pattern = "x"
        "#,
    );
    let reads = |q| reads_for(&p, q);
    assert_eq!(
        reads("default"),
        Reads {
            function: false,
            failure: true,
            meta: false,
        }
    );
    assert_eq!(
        reads("reports"),
        Reads {
            function: true,
            failure: true,
            meta: false,
        }
    );
    assert_eq!(
        reads("emails"),
        Reads {
            function: false,
            failure: true,
            meta: false,
        }
    );
    assert_eq!(reads_for(&p[2..3], "default"), Reads::DECISION);
    assert_eq!(
        reads_for(&p[2..], "default"),
        Reads::DECISION,
        "by-pattern is never reached"
    );
    assert_eq!(reads_for(&[], "default"), Reads::DECISION);

    let deleting = policies(
        r#"
        [[policy]]
        name = "purge-old"
        queues = ["reports"]
        action = "purge"
        purge_after = "7d"
        [[policy]]
        name = "retry-then-purge"
        queues = ["emails"]
        on_exhausted = "purge"
        [[policy]]
        name = "retry"
        "#,
    );
    assert_eq!(reads_for(&deleting, "reports"), Reads::ALL);
    assert_eq!(reads_for(&deleting, "emails"), Reads::ALL);
    assert_eq!(reads_for(&deleting, "default"), Reads::DECISION);
}

proptest! {
    #[test]
    fn deciding_on_what_reads_for_asks_equals_deciding_on_everything(
        policies in any_policies(),
        (full, now) in any_failed_job(),
    ) {
        let reads = reads_for(&policies, &full.queue);
        let mut part = full.clone();
        part.reads = reads;
        if !reads.function {
            part.func_name = None;
            part.description = None;
        }
        if !reads.failure {
            part.failure = None;
        }
        if !reads.meta {
            part.meta = None;
        }
        // Matchers debug_assert that what they look at was read, so a policy reached without
        // its part fails here too.
        let all = decide(&policies, &full, now);
        let narrow = decide(&policies, &part, now);
        prop_assert_eq!(&narrow.decision, &all.decision);
        prop_assert_eq!(narrow.policy.map(|p| &p.name), all.policy.map(|p| &p.name));
    }
}

// ---- max_age -------------------------------------------------------------------------------

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

/// `any_job()` created `age` before it failed.
fn created_before_failure(age: chrono::Duration) -> JobFacts {
    let mut j = any_job();
    j.created_at = Some(failed_at() - age);
    j
}

#[test]
fn max_age_gives_up_a_job_older_than_it_whatever_attempts_remain() {
    let now = failed_at() + secs(120);
    let old = created_before_failure(days(3));
    let keep = fixed_retry("max_attempts = 5\nmax_age = \"2d\"");
    assert_eq!(decided(&keep, &old, now).0, Decision::MarkExhausted);
    let Action::Retry(spec) = &keep[0].action else {
        unreachable!()
    };
    assert_eq!(
        exhaustion(spec, &old, now),
        Some(Exhaustion::MaxAge {
            deadline: failed_at() - days(1)
        })
    );
    let mut marked = old.clone();
    marked.exhausted = true;
    assert_eq!(decided(&keep, &marked, now).0, Decision::Exhausted);
    let purge = fixed_retry("max_attempts = 5\nmax_age = \"2d\"\non_exhausted = \"purge\"");
    assert_eq!(
        decided(&purge, &old, now).0,
        Decision::PurgeNow { exhausted: true }
    );
    // A young job under the same policy is retried as usual.
    let young = created_before_failure(secs(10));
    assert_eq!(
        decided(&keep, &young, now).0,
        Decision::RequeueNow {
            attempt: 1,
            at_front: false
        }
    );
}

#[test]
fn max_age_gives_up_as_soon_as_the_next_retry_would_come_after_it() {
    // Created 2 days minus 30 s before it failed: the deadline is 30 s after the failure, the
    // next retry (60 s fixed) would be 60 s after it.
    let j = created_before_failure(days(2) - secs(30));
    let p = fixed_retry("max_age = \"2d\"");
    let Action::Retry(spec) = &p[0].action else {
        unreachable!()
    };
    let now = failed_at() + secs(1);
    assert_eq!(
        exhaustion(spec, &j, now),
        Some(Exhaustion::NextRetryTooLate {
            deadline: failed_at() + secs(30),
            due: failed_at() + secs(60),
        })
    );
    assert_eq!(decided(&p, &j, now).0, Decision::MarkExhausted);
    // With room for the retry, it waits for it.
    let j = created_before_failure(days(1));
    assert_eq!(
        decided(&p, &j, now).0,
        Decision::RequeueAt {
            due: failed_at() + secs(60),
            attempt: 1
        }
    );
}

#[test]
fn a_job_without_created_at_is_never_given_up_because_of_max_age() {
    let mut j = any_job();
    j.created_at = None;
    let with_age = fixed_retry("max_age = \"1s\"");
    let without = fixed_retry("");
    for offset in [0, 59, 60, 86_400 * 400] {
        let now = failed_at() + secs(offset);
        assert_eq!(
            decided(&with_age, &j, now).0,
            decided(&without, &j, now).0,
            "{offset}"
        );
    }
}

proptest! {
    /// `max_age` only ever gives a job up earlier: where a policy without it requeues or waits,
    /// the same policy with it decides the same or gives up exactly as `max_attempts` would;
    /// without a `created_at` it changes nothing.
    #[test]
    fn max_age_only_ever_gives_up_earlier_and_never_without_created_at(
        spec in any_retry_spec(),
        (mut j, now) in any_job_and_now(),
        max_age in 1u64..400_000_000,
        created in proptest::option::of(-100_000_000i64..100_000),
    ) {
        j.created_at = created.map(|offset| j.failed_at + secs(offset));
        let without = decide(&retry_policy(spec.clone()), &j, now).decision;
        let aged = RetrySpec { max_age: Some(Duration::from_secs(max_age)), ..spec.clone() };
        let with = decide(&retry_policy(aged.clone()), &j, now).decision;
        if j.created_at.is_none() {
            prop_assert_eq!(&with, &without);
        }
        if with != without {
            let used_up = RetrySpec { max_attempts: j.attempts.min(spec.max_attempts), ..spec };
            prop_assert_eq!(&with, &decide(&retry_policy(used_up), &j, now).decision);
            let by_age = matches!(
                exhaustion(&aged, &j, now),
                Some(Exhaustion::MaxAge { .. } | Exhaustion::NextRetryTooLate { .. })
            );
            prop_assert!(by_age, "{:?} without max_age, {:?} with it", without, with);
        }
    }
}

// ---- meta ----------------------------------------------------------------------------------

fn with_meta(items: &[(&str, MetaValue)]) -> JobFacts {
    let mut j = any_job();
    j.meta = Some(Meta::Read(
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    ));
    j
}

fn text(t: &str) -> MetaValue {
    MetaValue::Text(t.to_string())
}

#[test]
fn meta_globs_match_top_level_values_and_every_key_must_match() {
    let p = policies(
        r#"
[[policy]]
name = "acme"
meta = { tenant = "acme-*", priority = "1" }
"#,
    );
    let now = failed_at();
    let hit = with_meta(&[("tenant", text("acme-1")), ("priority", text("1"))]);
    assert_eq!(decided(&p, &hit, now).1.as_deref(), Some("acme"));
    let miss = |j: &JobFacts| explain(&p, j, now).misses[0].1.clone();
    assert_eq!(
        miss(&with_meta(&[
            ("tenant", text("other")),
            ("priority", text("1"))
        ])),
        Mismatch::Meta {
            key: "tenant".into(),
            pattern: "acme-*".into(),
            found: MetaFound::Value("other".into())
        }
    );
    assert_eq!(
        miss(&with_meta(&[("tenant", text("acme-1"))])),
        Mismatch::Meta {
            key: "priority".into(),
            pattern: "1".into(),
            found: MetaFound::Missing
        }
    );
    let listed = miss(&with_meta(&[
        ("tenant", MetaValue::Other("list")),
        ("priority", text("1")),
    ]));
    assert!(listed.to_string().contains("tenant is a list"), "{listed}");
    let mut unreadable = any_job();
    unreadable.meta = Some(Meta::Unreadable("not a readable pickle: x".into()));
    let why = miss(&unreadable).to_string();
    assert!(
        why.contains("meta unreadable (not a readable pickle: x)"),
        "{why}"
    );
    assert_eq!(decided(&p, &unreadable, now).0, Decision::Unmatched);
}

#[test]
fn meta_integers_booleans_and_none_compare_as_python_prints_them() {
    let p = policies(
        r#"
[[policy]]
name = "flags"
meta = { vip = "True", tier = "2", owner = "None" }
"#,
    );
    // What meta decoding makes of True, 2 and None (see rq::meta).
    let j = with_meta(&[
        ("vip", text("True")),
        ("tier", text("2")),
        ("owner", text("None")),
    ]);
    assert_eq!(decided(&p, &j, failed_at()).1.as_deref(), Some("flags"));
}

#[test]
fn a_meta_policy_makes_a_scan_read_meta_only_while_it_can_be_reached() {
    let p = policies(
        r#"
[[policy]]
name = "acme"
queues = ["default"]
meta = { tenant = "acme-*" }
[[policy]]
name = "everything-else"
[[policy]]
name = "never-reached"
meta = { tenant = "x" }
"#,
    );
    assert!(reads_for(&p, "default").meta);
    assert_eq!(reads_for(&p, "emails"), Reads::DECISION);
}

// ---- jobs left to the operator (issue 21, items 2 and 6) -----------------------------------

/// `job` as RQ leaves it when an operator stopped it.
fn stopped(mut job: JobFacts) -> JobFacts {
    job.status = Some("stopped".to_string());
    job
}

/// `job` whose last run succeeded (rq/rq#2424).
fn succeeded(mut job: JobFacts) -> JobFacts {
    job.succeeded_at = Some(failed_at() - secs(5));
    job
}

#[test]
fn a_retry_policy_never_requeues_exhausts_or_purges_a_stopped_or_succeeded_job() {
    let now = failed_at() + secs(3600);
    let at = failed_at() - secs(5);
    for (extra, attempts) in [
        ("", 0),
        ("max_attempts = 2\non_exhausted = \"keep\"", 2),
        ("max_attempts = 2\non_exhausted = \"purge\"", 2),
    ] {
        let p = fixed_retry(extra);
        let mut job = any_job();
        job.attempts = attempts;
        assert_eq!(
            decided(&p, &stopped(job.clone()), now),
            (Decision::Stopped, Some("retry".to_string())),
            "{extra}"
        );
        assert_eq!(
            decided(&p, &succeeded(job.clone()), now),
            (Decision::Succeeded { at }, Some("retry".to_string())),
            "{extra}"
        );
        assert_ne!(decided(&p, &job, now).0, Decision::Stopped);
    }
    // No policy at all: listed as what it is, not as unmatched.
    assert_eq!(decided(&[], &stopped(any_job()), now).0, Decision::Stopped);
    assert_eq!(
        decided(&[], &succeeded(any_job()), now).0,
        Decision::Succeeded { at }
    );
}

#[test]
fn purge_and_ignore_policies_apply_to_stopped_and_succeeded_jobs_as_to_any_job() {
    let now = failed_at() + secs(3600);
    let purge = policies("[[policy]]\nname = \"drop\"\naction = \"purge\"\n");
    let ignore = policies("[[policy]]\nname = \"quiet\"\naction = \"ignore\"\n");
    for job in [stopped(any_job()), succeeded(any_job())] {
        assert_eq!(
            decided(&purge, &job, now).0,
            Decision::PurgeNow { exhausted: false }
        );
        assert_eq!(decided(&ignore, &job, now).0, Decision::Ignore);
    }
}
