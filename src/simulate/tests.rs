use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::config::parse_policy_file;
use crate::index::{FailureIndex, Observation};
use crate::rq::{Failure, Reads};

fn policies(text: &str) -> Vec<Policy> {
    parse_policy_file(text, "test").unwrap().policies
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
}

const RUNNING: &str = r#"
[[policy]]
name = "network"
exceptions = ["ConnectionError"]
max_attempts = 3
backoff = { strategy = "fixed", delay = "10m" }
[[policy]]
name = "bad-input"
exceptions = ["ValueError"]
action = "purge"
purge_after = "7d"
"#;

fn job(
    id: &str,
    queue: &str,
    function: &str,
    exception: &str,
    failed_at: DateTime<Utc>,
) -> JobFacts {
    JobFacts {
        job_id: id.to_string(),
        queue: queue.to_string(),
        origin: queue.to_string(),
        status: Some("failed".to_string()),
        func_name: Some(function.to_string()),
        description: None,
        failed_at,
        failed_at_from: Default::default(),
        attempts: 0,
        exhausted: false,
        last_policy: None,
        requeued_at: None,
        succeeded_at: None,
        failure: Some(Failure::from_text(format!("Traceback\n{exception}: boom"))),
        cas: Default::default(),
        reads: Reads::ALL,
        created_at: None,
        meta: None,
    }
}

/// `n` jobs of one group that failed `ago` before now, indexed as a scan with `running`
/// indexes them (with everything read).
fn observe(
    index: &mut FailureIndex,
    running: &[Policy],
    group: (&str, &str, &str),
    n: usize,
    ago: Duration,
) {
    let (queue, function, exception) = group;
    for i in 0..n {
        let id = format!("{queue}-{function}-{exception}-{i}");
        let facts = job(&id, queue, function, exception, now() - ago);
        let e = policy::decide(running, &facts, now());
        let o = Observation::decided(&facts, 1.0, e.policy.map(|p| p.name.as_str()), &e.decision);
        index.observe(&o);
    }
}

fn backlog(running: &[Policy]) -> FailureIndex {
    let mut index = FailureIndex::default();
    observe(
        &mut index,
        running,
        ("email", "app.send", "ConnectionError"),
        5,
        Duration::minutes(1),
    );
    observe(
        &mut index,
        running,
        ("email", "app.send", "ValueError"),
        3,
        Duration::days(1),
    );
    observe(
        &mut index,
        running,
        ("reports", "app.render", "KeyError"),
        2,
        Duration::minutes(1),
    );
    index
}

fn simulate(index: &FailureIndex, running: &[Policy], candidate: &[Policy]) -> Report {
    over_index(index, running, candidate, now()).report(
        GroupLabel::clone,
        candidate,
        now(),
        "index",
    )
}

fn group<'r>(report: &'r Report, exception: &str) -> &'r GroupDiff {
    report
        .groups
        .iter()
        .find(|g| g.exception.as_deref() == Some(exception))
        .unwrap()
}

#[test]
fn the_running_file_as_candidate_changes_nothing_and_knows_everything() {
    let running = policies(RUNNING);
    let index = backlog(&running);
    let report = simulate(&index, &running, &running);
    assert_eq!(report.jobs, 10);
    assert_eq!(
        (report.changed_jobs, report.changed_groups, report.uncertain),
        (0, 0, 0)
    );
    assert_eq!(report.running, report.candidate);
    assert_eq!(report.running[&Outcome::Wait], 5);
    assert_eq!(report.running[&Outcome::PurgeLater], 3);
    assert_eq!(report.running[&Outcome::Unmatched], 2);
}

#[test]
fn a_shorter_backoff_changes_one_group_from_waiting_to_retried_now() {
    let running = policies(RUNNING);
    let index = backlog(&running);
    let candidate = policies(&RUNNING.replace("delay = \"10m\"", "delay = \"30s\""));
    let report = simulate(&index, &running, &candidate);
    assert_eq!(
        (report.changed_groups, report.changed_jobs, report.uncertain),
        (1, 5, 0)
    );
    let g = &report.groups[0];
    assert_eq!(g.exception.as_deref(), Some("ConnectionError"));
    assert_eq!(
        g.moves,
        vec![Move {
            from: Outcome::Wait,
            to: Outcome::RetryNow,
            jobs: 5
        }]
    );
    assert_eq!(g.policies["network"], 5);
    assert_eq!(report.policies[0].outcomes[&Outcome::RetryNow], 5);
    assert_eq!(group(&report, "ValueError").changed, 0);
}

#[test]
fn a_new_policy_for_unmatched_jobs_is_decided_from_the_index() {
    let running = policies(RUNNING);
    let index = backlog(&running);
    let candidate = policies(&format!(
        "{RUNNING}[[policy]]\nname = \"keys\"\nqueues = [\"reports\"]\nexceptions = [\"KeyError\"]\naction = \"purge\"\n"
    ));
    let report = simulate(&index, &running, &candidate);
    let g = group(&report, "KeyError");
    assert_eq!(
        g.moves,
        vec![Move {
            from: Outcome::Unmatched,
            to: Outcome::Purge,
            jobs: 2
        }]
    );
    assert_eq!(report.changed_jobs, 2);
    assert_eq!(report.uncertain, 0);
}

#[test]
fn a_traceback_pattern_the_index_cannot_check_is_counted_as_uncertain() {
    let running = policies(RUNNING);
    let index = backlog(&running);
    let candidate = policies(&format!(
        "[[policy]]\nname = \"timeouts\"\nerror_pattern = \"timed out\"\naction = \"ignore\"\n{RUNNING}"
    ));
    let report = simulate(&index, &running, &candidate);
    assert_eq!(report.uncertain, 10);
    assert_eq!(report.uncertain_because[&Unknown::Traceback], 10);
    assert_eq!(report.changed_jobs, 0);
}

#[test]
fn a_retry_policy_for_jobs_a_purge_policy_decides_needs_their_rq_status() {
    let running = policies(RUNNING);
    let index = backlog(&running);
    let candidate = policies(&RUNNING.replace("action = \"purge\"\npurge_after = \"7d\"", ""));
    let report = simulate(&index, &running, &candidate);
    assert_eq!(
        group(&report, "ValueError").uncertain_because[&Unknown::RqStatus],
        3
    );
    assert_eq!(group(&report, "ConnectionError").changed, 0);
}

#[test]
fn jobs_read_whole_are_decided_exactly_by_both_files() {
    let running = policies(RUNNING);
    let candidate = policies(&RUNNING.replace("delay = \"10m\"", "delay = \"30s\""));
    let mut tally = Tally::default();
    for i in 0..4 {
        let facts = job(
            &format!("j{i}"),
            "email",
            "app.send",
            "ConnectionError",
            now() - Duration::minutes(1),
        );
        tally.add_facts(
            &facts,
            (&running, &candidate),
            &QueueWorlds::default(),
            now(),
        );
    }
    tally.add_undecodable("email");
    let report = tally.report(GroupLabel::clone, &candidate, now(), "redis");
    assert_eq!(report.jobs, 5);
    assert_eq!(report.changed_jobs, 4);
    assert_eq!(report.candidate[&Outcome::RetryNow], 4);
    assert_eq!(report.candidate[&Outcome::Undecodable], 1);
}

/// The candidate of `RUNNING` with a 30 s delay (the ConnectionErrors of a minute ago are due)
/// and a `hold_when` on the length of their queue.
fn candidate_holding_when_longer_than(limit: u64) -> Vec<Policy> {
    policies(&RUNNING.replace(
        "delay = \"10m\" }",
        &format!("delay = \"30s\" }}\nhold_when = {{ queue_longer_than = {limit} }}"),
    ))
}

fn email_world(length: u64) -> QueueWorlds {
    let world = crate::hold::QueueWorld {
        live_workers: 1,
        length,
    };
    QueueWorlds::Read(HashMap::from([("email".to_string(), world)]))
}

#[test]
fn a_due_requeue_that_hold_when_holds_back_is_held_not_retried_now() {
    let running = policies(RUNNING);
    let index = backlog(&running);
    let candidate = candidate_holding_when_longer_than(100);
    let held = |worlds: &QueueWorlds| {
        over_index_held(&index, (&running, &candidate), worlds, now()).report(
            GroupLabel::clone,
            &candidate,
            now(),
            "index",
        )
    };
    let long = held(&email_world(101));
    let g = group(&long, "ConnectionError");
    assert_eq!(g.candidate.get(&Outcome::Held), Some(&5), "{g:?}");
    assert_eq!(g.candidate.get(&Outcome::RetryNow), None, "{g:?}");
    let short = held(&email_world(100));
    let g = group(&short, "ConnectionError");
    assert_eq!(g.candidate.get(&Outcome::RetryNow), Some(&5), "{g:?}");
    // Not read: not guessed.
    let unread = held(&QueueWorlds::Unread);
    assert_eq!(
        group(&unread, "ConnectionError").uncertain_because[&Unknown::Hold],
        5
    );
}

#[test]
fn jobs_read_whole_are_held_by_the_same_rule() {
    let running = policies(RUNNING);
    let candidate = candidate_holding_when_longer_than(0);
    let mut tally = Tally::default();
    let facts = job(
        "j",
        "email",
        "app.send",
        "ConnectionError",
        now() - Duration::minutes(1),
    );
    tally.add_facts(&facts, (&running, &candidate), &email_world(1), now());
    let report = tally.report(GroupLabel::clone, &candidate, now(), "redis");
    assert_eq!(report.candidate.get(&Outcome::Held), Some(&1), "{report:?}");
}
