//! A plan rebuilds exactly the write the due-time read would have decided, or there is none.

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::policy::Policy;

fn policies(toml: &str) -> Vec<Policy> {
    match crate::config::parse(toml, "policies.toml") {
        Ok(config) => config.policies,
        Err(e) => panic!("test policies must be valid:\n{e}"),
    }
}

const RETRY_THEN_PURGE: &str = r#"
[[policy]]
name = "transient"
exceptions = ["ConnectionError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "5s" }

[[policy]]
name = "slow-lane"
exceptions = ["TimeoutError"]
action = "retry"
requeue_to = "slow"
at_front = true
backoff = { strategy = "fixed", delay = "5s" }

[[policy]]
name = "aged"
exceptions = ["OSError"]
action = "retry"
max_age = "1h"
backoff = { strategy = "fixed", delay = "5s" }

[[policy]]
name = "held"
exceptions = ["BusyError"]
action = "retry"
hold_when = { queue_longer_than = 2 }
backoff = { strategy = "fixed", delay = "5s" }

[[policy]]
name = "bad-data"
exceptions = ["KeyError"]
action = "purge"
purge_after = "10s"
"#;

fn failed_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 18, 20, 53).unwrap() + chrono::Duration::microseconds(123_456)
}

/// The write a scan decides for a due job of `queue` read with these stored values.
fn write(policy: &str, kind: WriteKind, to: &str, ended_at: &str, attempts: &str) -> Write {
    Write {
        job_id: "clear".to_string(),
        queue: "default".to_string(),
        origin: to.to_string(),
        cas: CasToken {
            origin: "default".to_string(),
            ended_at: ended_at.to_string(),
            attempts: attempts.to_string(),
        },
        failed_at: failed_at(),
        author: Author::Policy(policy.to_string()),
        kind,
    }
}

fn requeue(attempt: u32, at_front: bool) -> WriteKind {
    WriteKind::Requeue {
        attempt: Some(attempt),
        at_front,
    }
}

const ENDED: &str = "2026-12-03T18:20:53.123456Z";

#[test]
fn a_plan_rebuilds_the_write_a_read_would_decide() {
    let ps = policies(RETRY_THEN_PURGE);
    let cases = [
        (
            write("transient", requeue(1, false), "default", ENDED, ""),
            1,
        ),
        (
            write("transient", requeue(3, false), "default", ENDED, "2"),
            3,
        ),
        (
            write("transient", requeue(1, false), "default", ENDED, "0"),
            1,
        ),
        (write("slow-lane", requeue(1, true), "slow", ENDED, ""), 1),
    ];
    for (w, attempt) in cases {
        let plan = Plan::of(&ps, &w).unwrap_or_else(|| panic!("no plan for {w:?}"));
        let (rebuilt, decision) = plan.write(&ps, "default", "clear", failed_at()).unwrap();
        assert_eq!(rebuilt.cas, w.cas);
        assert_eq!(
            (rebuilt.origin.as_str(), rebuilt.kind),
            (w.origin.as_str(), w.kind)
        );
        assert_eq!(rebuilt.author, w.author);
        assert_eq!(
            (rebuilt.job_id.as_str(), rebuilt.failed_at),
            ("clear", failed_at())
        );
        assert!(
            matches!(decision, Decision::RequeueNow { attempt: a, .. } if a == attempt),
            "{decision:?}"
        );
    }
    let purge = write("bad-data", WriteKind::Purge, "default", ENDED, "1");
    let (rebuilt, decision) = Plan::of(&ps, &purge)
        .unwrap()
        .write(&ps, "default", "clear", failed_at())
        .unwrap();
    assert_eq!((rebuilt.kind, rebuilt.cas), (WriteKind::Purge, purge.cas));
    assert_eq!(decision, Decision::PurgeNow { exhausted: false });
}

#[test]
fn what_three_bytes_cannot_say_exactly_gets_no_plan_and_is_read_when_due() {
    let ps = policies(RETRY_THEN_PURGE);
    let mut other_origin = write("transient", requeue(1, false), "default", ENDED, "");
    other_origin.cas.origin = "elsewhere".to_string();
    let mut manual = write("transient", requeue(1, false), "default", ENDED, "");
    manual.author = Author::Operator;
    let none = [
        // No ended_at: two such failures look alike to the compare-and-set.
        write("transient", requeue(1, false), "default", "", ""),
        // An ended_at RQ wrote in another form than the one rebuilt from the time.
        write(
            "transient",
            requeue(1, false),
            "default",
            "2026-12-03T18:20:53.123456",
            "",
        ),
        write(
            "transient",
            requeue(1, false),
            "default",
            "2026-12-03T18:20:53Z",
            "",
        ),
        // An attempts field that does not read back as written, or too large.
        write("transient", requeue(2, false), "default", ENDED, "01"),
        write("transient", requeue(256, false), "default", ENDED, "255"),
        // The attempt is not the next one, or the write goes elsewhere than the policy says.
        write("transient", requeue(2, false), "default", ENDED, ""),
        write("slow-lane", requeue(1, true), "default", ENDED, ""),
        write("slow-lane", requeue(1, false), "slow", ENDED, ""),
        // max_age may give the job up by the time it is due; a held job must be read (is it
        // still there?) before it is held again.
        write("aged", requeue(1, false), "default", ENDED, ""),
        write("held", requeue(1, false), "default", ENDED, ""),
        // A write its policy does not make, an unknown policy, an operator's.
        write("bad-data", requeue(1, false), "default", ENDED, ""),
        write("transient", WriteKind::Purge, "default", ENDED, ""),
        write("transient", WriteKind::MarkExhausted, "default", ENDED, ""),
        write("gone", requeue(1, false), "default", ENDED, ""),
        other_origin,
        manual,
    ];
    for w in none {
        assert_eq!(Plan::of(&ps, &w), None, "{w:?}");
    }
}

#[test]
fn a_plan_made_under_other_policies_does_not_fit_them() {
    let ps = policies(RETRY_THEN_PURGE);
    let plan = Plan::of(
        &ps,
        &write("bad-data", WriteKind::Purge, "default", ENDED, ""),
    )
    .unwrap();
    // Position 3 is a purge policy here; in a shorter list there is none, and in this one it
    // is a retry policy.
    assert!(plan
        .write(&ps[..3], "default", "clear", failed_at())
        .is_none());
    let swapped: Vec<Policy> = ps.iter().rev().cloned().collect();
    assert!(plan
        .write(&swapped, "default", "clear", failed_at())
        .is_none());
}
