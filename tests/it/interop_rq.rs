//! Interop with real RQ: jobs are enqueued through RQ's Python API, failed and run by real
//! `rq worker --burst` processes, and supervised by the real `rq-retryd once`. Every scenario
//! runs twice, against RQ 2.12.0 (`rq2::...`) and RQ 1.16.2 (`rq1::...`), each on its own
//! throwaway redis-server.

use crate::support;

use serde_json::{json, Value};
use support::http::{enc, metric, parse_metrics, Daemon, DaemonConfig};
use support::rq::{config_with_policies, retryd, retryd_once, write_config, JobSpec, Rq};
use support::RedisServer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Generates `rq2::<scenario>` and `rq1::<scenario>` tests from one scenario function each, so
/// the two RQ versions are held to exactly the same specification.
macro_rules! for_both_rq_versions {
    ($($scenario:ident),* $(,)?) => {
        mod rq2 {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario(&super::Rq::rq2());
                }
            )*
        }
        mod rq1 {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario(&super::Rq::rq1());
                }
            )*
        }
    };
}

for_both_rq_versions!(
    flaky_job_is_retried_until_finished,
    job_in_backoff_is_not_requeued_before_its_delay,
    permanently_failing_job_is_kept_and_marked_exhausted,
    exhausted_job_is_purged_when_on_exhausted_is_purge,
    purge_policy_deletes_only_matching_jobs_and_leaves_unmatched_ones_untouched,
    requeue_matches_rqs_own_failed_job_registry_requeue,
    job_whose_worker_died_is_failed_by_rq_and_retried,
    failures_rq_writes_itself_have_exception_types_policies_match,
    a_requeued_parent_still_runs_its_dependent_after_its_failure_ttl,
    an_old_job_is_given_up_by_max_age_and_a_young_one_retried,
    meta_policies_match_job_meta_with_the_pickle_and_the_json_serializer,
    an_instance_method_is_shown_and_matched_as_module_class_method,
    a_job_an_operator_stopped_is_never_retried_automatically_but_can_be_by_hand,
    a_finished_job_rq_fails_as_abandoned_is_succeeded_and_never_rerun_automatically,
    jobs_requeued_or_deleted_by_rqs_api_leave_at_once_with_notifications,
    jobs_requeued_or_deleted_by_rqs_api_leave_within_seconds_without_notifications,
    a_requeue_to_queue_is_served_by_its_own_worker,
    a_held_job_goes_once_a_live_worker_listens_to_its_queue,
    a_held_job_waits_for_its_queue_to_drain_and_a_manual_retry_warns,
);

/// Retries the `ConnectionError("upstream timed out")` that `tasks.fail_first` raises, at once.
const RETRY_TIMEOUTS_NOW: &str = r#"
[[policy]]
name = "transient-network"
exceptions = ["ConnectionError"]
error_pattern = "(?i)timed? ?out"
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "0s" }
"#;

/// A job that fails its first 2 runs is requeued after each failure and ends `finished`, with
/// rq-retryd's bookkeeping (2 attempts, the policy's name) left on its hash.
fn flaky_job_is_retried_until_finished(rq: &Rq) {
    let env = TestEnv::new(RETRY_TIMEOUTS_NOW);
    let url = env.url();
    let id = rq.enqueue(
        &url,
        &JobSpec::new("flaky", "tasks.fail_first")
            .args(json!(["test:flaky:runs", 2]))
            .kwargs(json!({"value": "recovered"})),
    );
    rq.burst_worker(&url, &["flaky"]);
    assert_eq!(rq.status(&url, &id), "failed");
    assert_eq!(rq.failed_ids(&url, "flaky"), vec![id.clone()]);

    for attempt in 1..=2 {
        let run = retryd_once(&env.config, &[]);
        assert_eq!(
            run.count("requeued"),
            1,
            "round {attempt}: {:?}",
            run.summary()
        );
        assert_eq!(rq.status(&url, &id), "queued", "round {attempt}");
        assert_eq!(
            rq.queued_ids(&url, "flaky"),
            vec![id.clone()],
            "round {attempt}"
        );
        assert!(rq.failed_ids(&url, "flaky").is_empty(), "round {attempt}");
        assert_eq!(
            env.job_field(&id, "retryd_attempts").as_deref(),
            Some(attempt.to_string().as_str()),
            "round {attempt}"
        );
        rq.burst_worker(&url, &["flaky"]);
    }

    let job = rq.fetch(&url, &id);
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["return_value"], "recovered", "{job}");
    assert_eq!(
        env.counter("test:flaky:runs"),
        3,
        "the job ran exactly 3 times"
    );
    assert_eq!(env.job_field(&id, "retryd_attempts").as_deref(), Some("2"));
    assert_eq!(
        env.job_field(&id, "retryd_policy").as_deref(),
        Some("transient-network")
    );
    assert!(env.job_field(&id, "retryd_requeued_at").is_some());
    assert_eq!(env.job_field(&id, "retryd_exhausted"), None);

    let run = retryd_once(&env.config, &[]);
    assert_eq!(run.count("requeued"), 0, "a finished job is left alone");
    assert_eq!(rq.status(&url, &id), "finished");
}

/// A parent with a dependent child fails with a 10 s `failure_ttl`; rq-retryd requeues it; a
/// worker runs it only after those 10 s have passed (10, not 3: on a loaded machine the worker
/// and the RQ calls around it took over 3 s, and the failure expired before rq-retryd ran). The child must still run: the parent's
/// dependents set lives as long as the parent, not as long as its failure.
/// See: issue 21, item 3 (the dependents set expired with the failure, the parent finished
/// and its child stayed `deferred` for good).
fn a_requeued_parent_still_runs_its_dependent_after_its_failure_ttl(rq: &Rq) {
    const FAILURE_TTL: Duration = Duration::from_secs(10);
    let env = TestEnv::new(RETRY_TIMEOUTS_NOW);
    let url = env.url();
    let parent = rq.enqueue(
        &url,
        &JobSpec::new("chain", "tasks.fail_first")
            .args(json!(["test:chain:runs", 1]))
            .ttls(180, 500, FAILURE_TTL.as_secs() as i64),
    );
    let child = rq.enqueue(
        &url,
        &JobSpec::new("chain", "tasks.ok")
            .kwargs(json!({"value": "child ran"}))
            .depends_on(&parent),
    );
    assert_eq!(rq.status(&url, &child), "deferred");
    rq.burst_worker(&url, &["chain"]);
    let failed_by = Instant::now();
    assert_eq!(rq.status(&url, &parent), "failed");
    assert!(env.exists(&format!("rq:job:{parent}:dependents")));

    let run = retryd_once(&env.config, &[]);
    assert_eq!(run.count("requeued"), 1, "{:?}", run.summary());
    // Until the failure_ttl has passed for sure (counted from the worker's end, after the failure).
    std::thread::sleep((FAILURE_TTL + Duration::from_secs(1)).saturating_sub(failed_by.elapsed()));
    assert!(
        env.exists(&format!("rq:job:{parent}:dependents")),
        "the parent's dependents set expired with its failure_ttl while it waited"
    );

    rq.burst_worker(&url, &["chain"]);
    let job = rq.fetch(&url, &parent);
    assert_eq!(job["status"], "finished", "{job}");
    let job = rq.fetch(&url, &child);
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["return_value"], "child ran", "{job}");
}

/// Retries every failed job at once, whatever it is. Queue-wide and never deleting, so a scan
/// reads neither failure texts nor results to decide (`policy::reads_for`).
const RETRY_EVERYTHING: &str = r#"
[[policy]]
name = "everything"
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "0s" }
"#;

/// Waits until `check` holds (polling), panicking with `what` after 60 s.
#[track_caller]
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon with `policies` on the scenario's Redis, its startup scan done.
fn daemon(env: &TestEnv, policies: &str) -> support::http::Daemon {
    support::http::Daemon::start_ready(&support::http::DaemonConfig::new(&env.url(), policies))
}

/// The value of one sample line of the daemon's `/metrics` (`name{labels}`), if present.
fn metric_line(d: &support::http::Daemon, sample: &str) -> Option<String> {
    let text = d.get("/metrics").text();
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')
            .map(str::to_string)
    })
}

/// An operator stops two running jobs with RQ's `send_stop_job_command`; RQ's worker fails each
/// with status `stopped` and no `ended_at`. Under a policy that retries everything, neither
/// `once` nor the daemon requeues them: they are listed `stopped` (not undecodable, no
/// warning), counted in `rq_retryd_stopped_jobs`, explained; an operator's retry through the
/// HTTP API requeues one and a worker runs it, an operator's delete deletes the other.
/// See: issue 21, item 2.
fn a_job_an_operator_stopped_is_never_retried_automatically_but_can_be_by_hand(rq: &Rq) {
    let env = TestEnv::new(RETRY_EVERYTHING);
    let url = env.url();
    let hanging = |counter: &str| {
        JobSpec::new("long", "tasks.hang_first")
            .args(json!([counter]))
            .kwargs(json!({"value": "ran by hand"}))
    };
    let id = rq.enqueue(&url, &hanging("test:long:runs"));
    let other = rq.enqueue(&url, &hanging("test:other:runs"));
    let mut worker = rq.worker(&url, &["long"]);
    for (job, counter) in [(&id, "test:long:runs"), (&other, "test:other:runs")] {
        wait_for("the worker to start the job", || env.counter(counter) == 1);
        let sent = rq.ctl_json(&url, &["stop", job]);
        assert_eq!(sent["stopped"], job.as_str());
        wait_for("RQ to fail the stopped job", || {
            rq.failed_ids(&url, "long").contains(job)
        });
    }
    worker.kill9();
    for job in [&id, &other] {
        assert_eq!(rq.status(&url, job), "stopped");
        assert_eq!(env.job_field(job, "ended_at").unwrap_or_default(), "");
    }
    let both = {
        let mut v = vec![id.clone(), other.clone()];
        v.sort();
        v
    };
    let failed = || {
        let mut v = rq.failed_ids(&url, "long");
        v.sort();
        v
    };

    let run = retryd_once(&env.config, &[]);
    let summary = run.summary();
    assert_eq!(run.count("requeued"), 0, "{summary}");
    assert_eq!(run.count("purged"), 0, "{summary}");
    assert_eq!(run.count("stopped"), 2, "{summary}");
    assert_eq!(summary["skipped"], 0, "not undecodable: {summary}");
    assert!(
        !run.stderr.contains("cannot decode"),
        "no warning for a stopped job:\n{}",
        run.stderr
    );
    assert_eq!(failed(), both);
    assert_eq!(rq.status(&url, &id), "stopped");
    assert_eq!(env.job_field(&id, "retryd_attempts"), None);

    let explain = retryd(&env.config, &["explain", &id, "--json"]);
    let explained: Value = serde_json::from_str(&explain.stdout).expect("explain --json");
    let decision = explained["decision"].as_str().unwrap_or_default();
    assert!(
        decision.starts_with("stopped: RQ marks this job stopped")
            && decision.contains("never retries it automatically"),
        "{explained:#}"
    );

    let d = daemon(&env, RETRY_EVERYTHING);
    d.scan();
    let listed = d.get("/api/v1/jobs/failed?state=stopped").expect(200);
    assert_eq!(listed["total"], 2, "{listed:#}");
    assert_eq!(listed["jobs"][0]["state"], "stopped", "{listed:#}");
    assert_eq!(
        metric_line(&d, "rq_retryd_stopped_jobs{queue=\"long\"}").as_deref(),
        Some("2")
    );
    assert_eq!(failed(), both, "the daemon left them");
    assert!(!d.log().contains("cannot decode"), "{}", d.log());

    d.post(&format!("/api/v1/jobs/failed/{id}/retry"))
        .expect(200);
    d.delete(&format!("/api/v1/jobs/failed/{other}"))
        .expect(200);
    assert_eq!(rq.queued_ids(&url, "long"), vec![id.clone()]);
    assert!(rq.failed_ids(&url, "long").is_empty());
    assert!(!env.exists(&format!("rq:job:{other}")), "deleted by hand");
    assert_eq!(
        metric_line(&d, "rq_retryd_stopped_jobs{queue=\"long\"}").as_deref(),
        Some("0")
    );
    rq.burst_worker(&url, &["long"]);
    let job = rq.fetch(&url, &id);
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["return_value"], "ran by hand", "{job}");
}

/// A job runs to success; RQ's own `StartedJobRegistry.cleanup` later finds it still listed as
/// started and fails it as abandoned (rq/rq#2424). Under a queue-wide retry policy `once`
/// decides without reading the job's results, so the requeue script is what finds the success
/// and writes nothing; the daemon, which reads everything, lists it `succeeded` with that
/// reason. An operator may still retry it. See: issue 21, item 6.
fn a_finished_job_rq_fails_as_abandoned_is_succeeded_and_never_rerun_automatically(rq: &Rq) {
    let env = TestEnv::new(RETRY_EVERYTHING);
    let url = env.url();
    let id = rq.enqueue(
        &url,
        &JobSpec::new("done", "tasks.fail_first")
            .args(json!(["test:done:runs", 0]))
            .kwargs(json!({"value": "charged once"})),
    );
    rq.burst_worker(&url, &["done"]);
    assert_eq!(rq.status(&url, &id), "finished");
    rq.ctl_json(&url, &["leave-started", "--queue", "done", &id]);
    let cleaned = rq.ctl_json(&url, &["abandon", "--queue", "done"]);
    assert_eq!(cleaned["failed"], json!([id.clone()]), "{cleaned}");
    assert_eq!(rq.status(&url, &id), "failed");

    for round in 1..=2 {
        let run = retryd_once(&env.config, &[]);
        let summary = run.summary();
        assert_eq!(run.count("requeued"), 0, "round {round}: {summary}");
        assert_eq!(run.count("purged"), 0, "round {round}: {summary}");
        assert_eq!(run.count("succeeded"), 1, "round {round}: {summary}");
        // The scan decided to requeue (it read no results); the script refused.
        assert!(
            run.stderr.contains("outcome=\"succeeded\"")
                || run.stderr.contains("outcome=succeeded"),
            "round {round}: the requeue script found the success:\n{}",
            run.stderr
        );
        assert_eq!(rq.failed_ids(&url, "done"), vec![id.clone()]);
        assert_eq!(env.job_field(&id, "retryd_attempts"), None);
    }
    assert_eq!(env.counter("test:done:runs"), 1);

    let d = daemon(&env, RETRY_EVERYTHING);
    d.scan();
    let listed = d.get("/api/v1/jobs/failed?state=succeeded").expect(200);
    assert_eq!(listed["total"], 1, "{listed:#}");
    assert_eq!(listed["jobs"][0]["job_id"], id.as_str(), "{listed:#}");
    let explained = d
        .get(&format!("/api/v1/jobs/failed/{id}/explain"))
        .expect(200);
    let decision = explained["decision"].as_str().unwrap_or_default();
    assert!(
        decision.starts_with("succeeded: its last run succeeded"),
        "{explained:#}"
    );
    assert_eq!(
        metric_line(&d, "rq_retryd_succeeded_jobs{queue=\"done\"}").as_deref(),
        Some("1")
    );
    assert_eq!(
        rq.failed_ids(&url, "done"),
        vec![id.clone()],
        "the daemon left it"
    );

    d.post(&format!("/api/v1/jobs/failed/{id}/retry"))
        .expect(200);
    rq.burst_worker(&url, &["done"]);
    assert_eq!(rq.status(&url, &id), "finished");
    assert_eq!(env.counter("test:done:runs"), 2, "run again by hand, once");
}

/// Retries what RQ fails after a worker died under the job, after a delay.
const RETRY_ABANDONED: &str = r#"
[[policy]]
name = "worker-died"
error_pattern = "AbandonedJobError"
action = "retry"
max_attempts = 3
backoff = { strategy = "fixed", delay = "2s" }
"#;

/// A worker is killed (`kill -9`, work horse and all) while running a job; RQ's own
/// `StartedJobRegistry.cleanup` later fails the job ("due to AbandonedJobError"), without the
/// `ended_at` a worker writes. rq-retryd dates that failure by when RQ put it into the failed
/// registry, keeps it there for the policy's backoff, then requeues it once, and a worker runs
/// it to the end. See: issue 11 (the soak found such jobs never retried).
fn job_whose_worker_died_is_failed_by_rq_and_retried(rq: &Rq) {
    let env = TestEnv::new(RETRY_ABANDONED);
    let url = env.url();
    let id = rq.enqueue(
        &url,
        &JobSpec::new("fragile", "tasks.hang_first")
            .args(json!(["test:fragile:runs"]))
            .kwargs(json!({"value": "survived"})),
    );
    let mut worker = rq.worker(&url, &["fragile"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.counter("test:fragile:runs") == 0 {
        assert!(Instant::now() < deadline, "the worker never started {id}");
        std::thread::sleep(Duration::from_millis(50));
    }
    worker.kill9();
    assert_eq!(rq.status(&url, &id), "started");

    let cleaned = rq.ctl_json(&url, &["abandon", "--queue", "fragile"]);
    assert_eq!(cleaned["failed"], json!([id.clone()]), "{cleaned}");
    let failed_at = Instant::now();
    assert_eq!(rq.status(&url, &id), "failed");
    assert_eq!(
        env.job_field(&id, "ended_at").unwrap_or_default(),
        "",
        "RQ fails an abandoned job without ended_at"
    );

    let explain = retryd(&env.config, &["explain", &id]);
    assert_eq!(explain.code, 0, "{}\n{}", explain.stdout, explain.stderr);
    assert!(
        explain.stdout.contains("worker-died"),
        "explain names the policy:\n{}",
        explain.stdout
    );
    let mut run = retryd_once(&env.config, &[]);
    // RQ dates the failure in whole seconds: the backoff ends 1-2 s after the cleanup.
    if failed_at.elapsed() < Duration::from_millis(500) {
        assert_eq!(run.count("requeued"), 0, "{:?}", run.summary());
        assert_eq!(run.count("waiting"), 1, "{:?}", run.summary());
        assert_eq!(rq.failed_ids(&url, "fragile"), vec![id.clone()]);
    }
    // That first run counts too: on a loaded machine the backoff had ended before it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let summary = run.summary();
        assert_eq!(summary["skipped"], 0, "never undecodable: {summary}");
        if run.count("requeued") == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never requeued: {summary}");
        std::thread::sleep(Duration::from_millis(250));
        run = retryd_once(&env.config, &[]);
    }
    assert!(
        failed_at.elapsed() >= Duration::from_millis(500),
        "requeued before its 2s backoff from RQ's failure"
    );
    assert_eq!(rq.queued_ids(&url, "fragile"), vec![id.clone()]);
    assert_eq!(env.job_field(&id, "retryd_attempts").as_deref(), Some("1"));

    rq.burst_worker(&url, &["fragile"]);
    let job = rq.fetch(&url, &id);
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["return_value"], "survived", "{job}");
    assert_eq!(env.counter("test:fragile:runs"), 2, "ran once more, once");
}

/// Policies on the exception types of the failures RQ writes as sentences, not tracebacks.
const BY_RQ_FAILURE_TYPE: &str = r#"
[[policy]]
name = "worker-died"
exceptions = ["AbandonedJobError"]
action = "retry"
max_attempts = 3
backoff = { strategy = "fixed", delay = "1h" }

[[policy]]
name = "horse-killed"
exceptions = ["WorkHorseTerminated"]
action = "retry"
max_attempts = 3
backoff = { strategy = "fixed", delay = "1h" }
"#;

/// RQ fails a job whose worker died ("Moved to FailedJobRegistry, due to AbandonedJobError, at
/// <time>", from `StartedJobRegistry.cleanup`) and a job whose work horse was SIGKILLed
/// ("Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ", from the worker) with
/// sentences, not tracebacks. `explain` reports them as `AbandonedJobError` and
/// `rq.WorkHorseTerminated`, and policies on those types match. See: issue 21 (the type was the
/// sentence up to its first `:`, holding a date and an hour).
fn failures_rq_writes_itself_have_exception_types_policies_match(rq: &Rq) {
    let env = TestEnv::new(BY_RQ_FAILURE_TYPE);
    let url = env.url();
    let abandoned = rq.enqueue(
        &url,
        &JobSpec::new("fragile", "tasks.hang_first").args(json!(["test:fragile:runs"])),
    );
    let mut worker = rq.worker(&url, &["fragile"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.counter("test:fragile:runs") == 0 {
        assert!(
            Instant::now() < deadline,
            "the worker never started {abandoned}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    worker.kill9();
    let cleaned = rq.ctl_json(&url, &["abandon", "--queue", "fragile"]);
    assert_eq!(cleaned["failed"], json!([abandoned.clone()]), "{cleaned}");

    let killed = rq.enqueue(&url, &JobSpec::new("horse", "tasks.kill_own_horse"));
    rq.burst_worker(&url, &["horse"]);
    assert_eq!(rq.failed_ids(&url, "horse"), vec![killed.clone()]);

    for (id, text, exception_type, policy) in [
        (
            &abandoned,
            "Moved to FailedJobRegistry, due to AbandonedJobError, at ",
            "AbandonedJobError",
            "worker-died",
        ),
        (
            &killed,
            "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ",
            "rq.WorkHorseTerminated",
            "horse-killed",
        ),
    ] {
        let run = retryd(&env.config, &["explain", id, "--json"]);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        let explained: Value = serde_json::from_str(&run.stdout).expect("explain --json");
        assert_eq!(explained["exception_type"], exception_type, "{explained:#}");
        assert_eq!(explained["policy"], policy, "{explained:#}");
        let tail = explained["failure_tail"].as_str().unwrap_or_default();
        assert!(
            tail.starts_with(text),
            "RQ's own text is kept: {explained:#}"
        );
    }
    let scan = retryd_once(&env.config, &[]);
    assert_eq!(scan.count("waiting"), 2, "{:?}", scan.summary());
}

/// With a fixed 2s backoff, a scan right after the failure leaves the job in `rq:failed:<q>`;
/// a scan after the delay has passed requeues it.
fn job_in_backoff_is_not_requeued_before_its_delay(rq: &Rq) {
    let env = TestEnv::new(
        r#"
[[policy]]
name = "transient-network"
exceptions = ["ConnectionError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "2s" }
"#,
    );
    let url = env.url();
    let id = rq.enqueue(
        &url,
        &JobSpec::new("backoff", "tasks.fail_first").args(json!(["test:backoff:runs", 1])),
    );
    rq.burst_worker(&url, &["backoff"]);
    // The failure (ended_at) happened before the worker exited, so it is at least this old.
    let failed_by = Instant::now();

    let early = retryd_once(&env.config, &[]);
    let scanned_after = failed_by.elapsed();
    assert!(
        scanned_after < Duration::from_millis(1500),
        "the machine is too slow to observe a 2s backoff: the first scan ran {scanned_after:?} after the failure"
    );
    assert_eq!(early.count("requeued"), 0, "{:?}", early.summary());
    assert_eq!(early.count("waiting"), 1, "{:?}", early.summary());
    assert!(env.failed_score("backoff", &id).is_some());
    assert_eq!(rq.failed_ids(&url, "backoff"), vec![id.clone()]);
    assert!(rq.queued_ids(&url, "backoff").is_empty());
    assert_eq!(rq.status(&url, &id), "failed");
    assert_eq!(env.job_field(&id, "retryd_attempts"), None);

    std::thread::sleep(Duration::from_millis(2300).saturating_sub(failed_by.elapsed()));
    let due = retryd_once(&env.config, &[]);
    assert_eq!(due.count("requeued"), 1, "{:?}", due.summary());
    assert_eq!(env.failed_score("backoff", &id), None);
    assert_eq!(rq.queued_ids(&url, "backoff"), vec![id.clone()]);
    assert_eq!(rq.status(&url, &id), "queued");
    assert_eq!(env.job_field(&id, "retryd_attempts").as_deref(), Some("1"));

    rq.burst_worker(&url, &["backoff"]);
    assert_eq!(rq.status(&url, &id), "finished");
}

/// A retry policy for `ValueError` with 2 attempts and no delay; `on_exhausted` is filled in.
fn give_up_after_two(on_exhausted: &str) -> String {
    format!(
        r#"
[[policy]]
name = "give-up-after-two"
exceptions = ["ValueError"]
action = "retry"
max_attempts = 2
backoff = {{ strategy = "fixed", delay = "0s" }}
on_exhausted = "{on_exhausted}"
"#
    )
}

/// Fails a `tasks.always_fail` job on "doomed" and lets rq-retryd requeue it twice, so it has
/// failed 3 times and used up `max_attempts = 2`. Returns its id.
fn fail_three_times_with_two_retries(rq: &Rq, env: &TestEnv) -> String {
    let url = env.url();
    let id = rq.enqueue(&url, &JobSpec::new("doomed", "tasks.always_fail"));
    rq.burst_worker(&url, &["doomed"]);
    for attempt in 1..=2 {
        assert_eq!(rq.status(&url, &id), "failed", "before round {attempt}");
        let run = retryd_once(&env.config, &[]);
        assert_eq!(
            run.count("requeued"),
            1,
            "round {attempt}: {:?}",
            run.summary()
        );
        rq.burst_worker(&url, &["doomed"]);
    }
    assert_eq!(rq.status(&url, &id), "failed");
    assert_eq!(env.job_field(&id, "retryd_attempts").as_deref(), Some("2"));
    assert_eq!(env.job_field(&id, "retryd_exhausted"), None);
    id
}

/// After `max_attempts` requeues the job fails again: it is not requeued a third time but
/// stays in the failed registry, marked `retryd_exhausted = "1"`, and later scans leave it.
fn permanently_failing_job_is_kept_and_marked_exhausted(rq: &Rq) {
    let env = TestEnv::new(&give_up_after_two("keep"));
    let url = env.url();
    let id = fail_three_times_with_two_retries(rq, &env);

    let run = retryd_once(&env.config, &[]);
    assert_eq!(run.count("requeued"), 0, "{:?}", run.summary());
    assert_eq!(run.count("exhausted"), 1, "{:?}", run.summary());
    assert_eq!(env.job_field(&id, "retryd_exhausted").as_deref(), Some("1"));
    assert_eq!(env.job_field(&id, "retryd_attempts").as_deref(), Some("2"));
    assert_eq!(rq.status(&url, &id), "failed");
    assert_eq!(rq.failed_ids(&url, "doomed"), vec![id.clone()]);
    assert!(rq.queued_ids(&url, "doomed").is_empty());

    let again = retryd_once(&env.config, &[]);
    assert_eq!(again.count("requeued"), 0, "{:?}", again.summary());
    assert_eq!(rq.failed_ids(&url, "doomed"), vec![id.clone()]);
    assert_eq!(env.job_field(&id, "retryd_exhausted").as_deref(), Some("1"));
    assert_eq!(env.job_field(&id, "retryd_attempts").as_deref(), Some("2"));
}

/// With `on_exhausted = "purge"`, the exhausted job's hash and registry entry are deleted.
fn exhausted_job_is_purged_when_on_exhausted_is_purge(rq: &Rq) {
    let env = TestEnv::new(&give_up_after_two("purge"));
    let url = env.url();
    let id = fail_three_times_with_two_retries(rq, &env);

    let run = retryd_once(&env.config, &[]);
    let summary = run.summary();
    assert_eq!(run.count("requeued"), 0, "{summary}");
    // The contract does not say whether an exhausted-then-purged job counts as "purged" or
    // "exhausted"; it must count as one of them. What Redis holds afterwards is the real check.
    assert!(
        run.count("purged") + run.count("exhausted") >= 1,
        "the exhausted purge is not reported: {summary}"
    );
    assert!(!env.exists(&format!("rq:job:{id}")), "job hash still there");
    assert_eq!(env.failed_score("doomed", &id), None);
    assert!(rq.failed_ids(&url, "doomed").is_empty());
    assert!(rq.queued_ids(&url, "doomed").is_empty());
}

/// A purge policy for `ValueError` deletes the ValueError job and nothing else: a failed job no
/// policy matches keeps its hash (DUMP), expiry and registry score exactly as RQ left them.
fn purge_policy_deletes_only_matching_jobs_and_leaves_unmatched_ones_untouched(rq: &Rq) {
    let env = TestEnv::new(
        r#"
[[policy]]
name = "bad-input"
exceptions = ["ValueError"]
action = "purge"
"#,
    );
    let url = env.url();
    let bad = rq.enqueue(
        &url,
        &JobSpec::new("mixed", "tasks.always_fail").args(json!(["card number failed Luhn check"])),
    );
    let stranger = rq.enqueue(
        &url,
        &JobSpec::new("mixed", "tasks.fail_first").args(json!(["test:mixed:runs", 100])),
    );
    rq.burst_worker(&url, &["mixed"]);
    let mut failed = rq.failed_ids(&url, "mixed");
    failed.sort();
    let mut both = vec![bad.clone(), stranger.clone()];
    both.sort();
    assert_eq!(failed, both);

    let stranger_key = format!("rq:job:{stranger}");
    let hash_before = env.key_state(&stranger_key);
    let score_before = env.failed_score("mixed", &stranger);
    assert!(hash_before.0.is_some() && score_before.is_some());

    let run = retryd_once(&env.config, &[]);
    let summary = run.summary();
    assert_eq!(run.count("purged"), 1, "{summary}");
    assert_eq!(run.count("unmatched"), 1, "{summary}");
    assert_eq!(run.count("requeued"), 0, "{summary}");

    assert!(
        !env.exists(&format!("rq:job:{bad}")),
        "ValueError job hash still there"
    );
    assert_eq!(env.failed_score("mixed", &bad), None);
    assert_eq!(rq.failed_ids(&url, "mixed"), vec![stranger.clone()]);
    assert_eq!(
        env.key_state(&stranger_key),
        hash_before,
        "the unmatched job's hash or expiry changed"
    );
    assert_eq!(env.failed_score("mixed", &stranger), score_before);
    assert_eq!(rq.status(&url, &stranger), "failed");
}

/// Differential check against RQ's own `FailedJobRegistry.requeue`: two identical jobs fail on
/// a real worker; RQ requeues one, rq-retryd the other. RQ must then see the same job twice
/// (apart from ids and times), each queued exactly once, and a worker must run both.
fn requeue_matches_rqs_own_failed_job_registry_requeue(rq: &Rq) {
    let env = TestEnv::new(RETRY_TIMEOUTS_NOW);
    let url = env.url();
    // Both jobs share the counter: runs 1 and 2 fail (one each), runs 3 and 4 succeed.
    let spec = JobSpec::new("diff", "tasks.fail_first")
        .args(json!(["test:diff:runs", 2]))
        .kwargs(json!({"value": "same"}))
        .meta(json!({"tenant": "acme", "trace": [1, 2, 3]}))
        .ttls(120, 600, 3600);
    let by_rq = rq.enqueue(&url, &spec);
    let by_retryd = rq.enqueue(&url, &spec);
    rq.burst_worker(&url, &["diff"]);
    assert_eq!(rq.status(&url, &by_rq), "failed");
    assert_eq!(rq.status(&url, &by_retryd), "failed");

    rq.requeue(&url, "diff", &by_rq);
    let run = retryd_once(&env.config, &[]);
    assert_eq!(run.count("requeued"), 1, "{:?}", run.summary());

    let reference = rq.fetch(&url, &by_rq);
    let ours = rq.fetch(&url, &by_retryd);
    for field in [
        "status",
        "origin",
        "func_name",
        "args",
        "kwargs",
        "meta",
        "timeout",
        "result_ttl",
        "failure_ttl",
        "description",
        "started_at",
        "ended_at",
    ] {
        assert_eq!(
            ours[field], reference[field],
            "{field}: RQ's requeue gives {}, rq-retryd gives {}\nRQ: {reference}\nrq-retryd: {ours}",
            reference[field], ours[field]
        );
    }
    assert_eq!(reference["status"], "queued");
    assert_eq!(reference["origin"], "diff");
    assert_eq!(
        reference["meta"],
        json!({"tenant": "acme", "trace": [1, 2, 3]})
    );
    assert_eq!(reference["started_at"], Value::Null);
    assert_eq!(reference["ended_at"], Value::Null);
    assert!(reference["enqueued_at"].is_string(), "{reference}");
    assert!(ours["enqueued_at"].is_string(), "{ours}");

    let queue = env.list("rq:queue:diff");
    assert_eq!(queue.len(), 2, "rq:queue:diff = {queue:?}");
    for id in [&by_rq, &by_retryd] {
        assert_eq!(
            queue.iter().filter(|queued| *queued == id).count(),
            1,
            "{id} is not queued exactly once: {queue:?}"
        );
    }
    assert!(rq.failed_ids(&url, "diff").is_empty());

    // Below RQ's API, the raw hashes must match too (down to the compressed empty `exc_info`
    // RQ's requeue writes), except for times and rq-retryd's own fields.
    let reference_hash = env.hash(&by_rq);
    let our_hash = env.hash(&by_retryd);
    let differs_by_time = ["created_at", "enqueued_at", "last_heartbeat"];
    assert!(
        reference_hash.contains_key("exc_info"),
        "{reference_hash:?}"
    );
    for (field, value) in &reference_hash {
        if differs_by_time.contains(&field.as_str()) {
            continue;
        }
        assert_eq!(
            our_hash.get(field),
            Some(value),
            "hash field {field:?} differs from RQ's requeue"
        );
    }
    for field in our_hash.keys() {
        assert!(
            reference_hash.contains_key(field) || field.starts_with("retryd_"),
            "rq-retryd left a field RQ's requeue does not have: {field:?}"
        );
    }

    rq.burst_worker(&url, &["diff"]);
    for id in [&by_rq, &by_retryd] {
        let job = rq.fetch(&url, id);
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["return_value"], "same", "{job}");
    }
}

/// Retries `ValueError`s at once, up to 5 times, for jobs younger than 2 days.
const RETRY_WHILE_FRESH: &str = r#"
[[policy]]
name = "fresh-only"
exceptions = ["ValueError"]
action = "retry"
max_attempts = 5
max_age = "2d"
backoff = { strategy = "fixed", delay = "0s" }
"#;

/// Two failing jobs under a policy with `max_age = "2d"` and attempts to spare: the one RQ
/// created 3 days ago (its `created_at`, which the worker keeps, written before it ran) is
/// given up and marked exhausted, not requeued; the one created now is requeued.
/// See: issue 21 ("max_age").
fn an_old_job_is_given_up_by_max_age_and_a_young_one_retried(rq: &Rq) {
    let env = TestEnv::new(RETRY_WHILE_FRESH);
    let url = env.url();
    let old = rq.enqueue(&url, &JobSpec::new("aging", "tasks.always_fail"));
    let young = rq.enqueue(&url, &JobSpec::new("aging", "tasks.always_fail"));
    let three_days_ago =
        rq_retryd::rq::job::format_rq_timestamp(chrono::Utc::now() - chrono::Duration::days(3));
    redis::cmd("HSET")
        .arg(format!("rq:job:{old}"))
        .arg("created_at")
        .arg(&three_days_ago)
        .exec(&mut env.server.conn())
        .expect("HSET created_at");
    rq.burst_worker(&url, &["aging"]);
    assert_eq!(rq.failed_ids(&url, "aging").len(), 2);
    assert_eq!(
        env.job_field(&old, "created_at").as_deref(),
        Some(three_days_ago.as_str()),
        "RQ's worker kept the job's created_at"
    );

    let explained = retryd(&env.config, &["explain", &old, "--json"]);
    assert_eq!(
        explained.code, 0,
        "{}\n{}",
        explained.stdout, explained.stderr
    );
    let explained: Value = serde_json::from_str(&explained.stdout).expect("explain --json");
    let decision = explained["decision"].as_str().unwrap_or_default();
    assert!(
        decision.starts_with("mark exhausted (max_age used up"),
        "{explained:#}"
    );

    let run = retryd_once(&env.config, &[]);
    assert_eq!(run.count("requeued"), 1, "{:?}", run.summary());
    assert_eq!(run.count("exhausted"), 1, "{:?}", run.summary());
    assert_eq!(rq.queued_ids(&url, "aging"), vec![young.clone()]);
    assert_eq!(rq.failed_ids(&url, "aging"), vec![old.clone()]);
    assert_eq!(rq.status(&url, &old), "failed");
    assert_eq!(
        env.job_field(&old, "retryd_exhausted").as_deref(),
        Some("1")
    );
    assert_eq!(env.job_field(&old, "retryd_attempts"), None);

    let again = retryd_once(&env.config, &[]);
    assert_eq!(again.count("requeued"), 0, "{:?}", again.summary());
    assert_eq!(rq.failed_ids(&url, "aging"), vec![old]);
}

/// Retries failed jobs whose `meta["tenant"]` starts with `acme-`.
const RETRY_ACME_TENANTS: &str = r#"
[[policy]]
name = "acme-tenants"
meta = { tenant = "acme-*" }
action = "retry"
max_attempts = 3
backoff = { strategy = "fixed", delay = "0s" }
"#;

/// With RQ's default (pickle) serializer and with `JSONSerializer`, a failed job enqueued with
/// `meta={"tenant": "acme-1"}` is retried by a `meta = { tenant = "acme-*" }` policy and one
/// with `tenant = "other"` is left alone, and `explain` says why. See: issue 21 ("meta").
fn meta_policies_match_job_meta_with_the_pickle_and_the_json_serializer(rq: &Rq) {
    let env = TestEnv::new(RETRY_ACME_TENANTS);
    let url = env.url();
    let mut jobs = Vec::new();
    for (queue, json) in [("tenants", false), ("tenants-json", true)] {
        for tenant in ["acme-1", "other"] {
            let mut spec =
                JobSpec::new(queue, "tasks.always_fail").meta(json!({"tenant": tenant, "n": 1}));
            if json {
                spec = spec.json_serializer();
            }
            jobs.push((queue, tenant, rq.enqueue(&url, &spec)));
        }
    }
    rq.burst_worker(&url, &["tenants"]);
    rq.burst_worker_with(
        &url,
        &["tenants-json"],
        &["--serializer", "rq.serializers.JSONSerializer"],
    );
    let stored = env.job_field(&jobs[2].2, "meta").unwrap_or_default();
    assert!(stored.starts_with('{'), "JSON meta: {stored:?}");

    let (other_queue, _, other) = &jobs[3];
    let explained = retryd(&env.config, &["explain", other, "--json"]);
    assert_eq!(
        explained.code, 0,
        "{}\n{}",
        explained.stdout, explained.stderr
    );
    let explained: Value = serde_json::from_str(&explained.stdout).expect("explain --json");
    assert_eq!(
        explained["policies"][0]["reason"], "meta tenant = \"other\" does not match \"acme-*\"",
        "{explained:#}"
    );

    let run = retryd_once(&env.config, &[]);
    assert_eq!(run.count("requeued"), 2, "{:?}", run.summary());
    for (queue, tenant, id) in &jobs {
        if *tenant == "acme-1" {
            assert_eq!(rq.queued_ids(&url, queue), vec![id.clone()], "{queue}");
            assert_eq!(env.job_field(id, "retryd_attempts").as_deref(), Some("1"));
        } else {
            assert_eq!(rq.failed_ids(&url, queue), vec![id.clone()], "{queue}");
            assert_eq!(env.job_field(id, "retryd_attempts"), None, "{queue}");
        }
    }
    assert_eq!(rq.failed_ids(&url, other_queue), vec![other.clone()]);
}

/// The daemon, which indexes every failure it reads, reads `meta` only for a queue whose
/// policies look at it (session 22 stopped decoding it for every job): with a `meta` policy on
/// the queue its first scan retries the `acme-1` job and leaves `other`, which the index lists
/// with its function. See: issue 24, item 3.
#[test]
fn rq2_the_indexing_daemon_still_reads_meta_for_a_meta_policy() {
    let rq = Rq::rq2();
    let env = TestEnv::new(RETRY_ACME_TENANTS);
    let url = env.url();
    let [acme, other] = ["acme-1", "other"].map(|tenant| {
        rq.enqueue(
            &url,
            &JobSpec::new("tenants", "tasks.always_fail").meta(json!({"tenant": tenant})),
        )
    });
    rq.burst_worker(&url, &["tenants"]);
    let d = daemon(&env, RETRY_ACME_TENANTS);
    assert_eq!(rq.queued_ids(&url, "tenants"), vec![acme.clone()]);
    assert_eq!(
        env.job_field(&acme, "retryd_attempts").as_deref(),
        Some("1")
    );
    assert_eq!(rq.failed_ids(&url, "tenants"), vec![other.clone()]);
    let listed = d.get("/api/v1/jobs/failed?queue=tenants").expect(200);
    let jobs = listed["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "{listed:#}");
    assert_eq!(jobs[0]["job_id"], other.as_str(), "{listed:#}");
    assert_eq!(jobs[0]["func_name"], "tasks.always_fail", "{listed:#}");
}

/// Retries any method of `tasks.Greeter`.
const RETRY_GREETER_METHODS: &str = r#"
[[policy]]
name = "greeter"
functions = ["tasks.Greeter.*"]
action = "retry"
max_attempts = 3
backoff = { strategy = "fixed", delay = "0s" }
"#;

/// `queue.enqueue(Greeter().greet)`: RQ stores `func_name = "greet"` and the pickled instance;
/// rq-retryd names the function `tasks.Greeter.greet` (explain, matching) and a `functions`
/// policy on `tasks.Greeter.*` retries it. See: issue 21 ("a job's function as a user writes
/// it").
fn an_instance_method_is_shown_and_matched_as_module_class_method(rq: &Rq) {
    let env = TestEnv::new(RETRY_GREETER_METHODS);
    let url = env.url();
    let id = rq.enqueue(
        &url,
        &JobSpec::new("greetings", "tasks.Greeter.greet").instance_method(),
    );
    rq.burst_worker(&url, &["greetings"]);
    let job = rq.fetch(&url, &id);
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["func_name"], "greet", "what RQ itself stores: {job}");

    let explained = retryd(&env.config, &["explain", &id, "--json"]);
    assert_eq!(
        explained.code, 0,
        "{}\n{}",
        explained.stdout, explained.stderr
    );
    let explained: Value = serde_json::from_str(&explained.stdout).expect("explain --json");
    assert_eq!(
        explained["function"], "tasks.Greeter.greet",
        "{explained:#}"
    );
    assert_eq!(explained["policy"], "greeter", "{explained:#}");

    let run = retryd_once(&env.config, &[]);
    assert_eq!(run.count("requeued"), 1, "{:?}", run.summary());
    assert_eq!(rq.queued_ids(&url, "greetings"), vec![id]);
}

/// Waits a job out of its failed registry for 1 h: listed as `waiting`, and counted by the
/// listing, the groups and a retry-all dry run.
const RETRY_IN_AN_HOUR: &str = r#"
[[policy]]
name = "later"
exceptions = ["ValueError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "1h" }
"#;

fn jobs_requeued_or_deleted_by_rqs_api_leave_at_once_with_notifications(rq: &Rq) {
    others_removals_leave_every_count(rq, true, Duration::from_secs(1));
}

fn jobs_requeued_or_deleted_by_rqs_api_leave_within_seconds_without_notifications(rq: &Rq) {
    others_removals_leave_every_count(rq, false, Duration::from_secs(3));
}

/// Three jobs failed by a real worker are listed by a daemon that scans only every 60 s. RQ's
/// own API requeues one (`FailedJobRegistry.requeue`, as rq-dashboard and django-rq call it),
/// then deletes another (`Job.delete`): each leaves the listing's total, the groups and a
/// retry-all dry run's count within `within` of RQ's call returning (keyspace notifications on
/// or off), no full scan runs meanwhile, and neither is ever listed as undecodable.
/// See: issue 21, item 4 (both stayed listed for 52-54 s, as undecodable).
fn others_removals_leave_every_count(rq: &Rq, notifications: bool, within: Duration) {
    use support::http::{Daemon, DaemonConfig};
    let server = RedisServer::start();
    let url = server.url();
    if notifications {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("Kz")
            .query(&mut server.conn())
            .expect("CONFIG SET notify-keyspace-events");
    }
    let ids: Vec<String> = (0..3)
        .map(|_| rq.enqueue(&url, &JobSpec::new("reports", "tasks.always_fail")))
        .collect();
    rq.burst_worker(&url, &["reports"]);
    assert_eq!(rq.failed_ids(&url, "reports").len(), 3);
    let mut config = DaemonConfig::new(&url, RETRY_IN_AN_HOUR);
    config.scan_interval = "60s".into();
    let daemon = Daemon::start_ready(&config);
    let last_scan =
        |d: &Daemon| d.get("/api/v1/supervisor").expect(200)["last_scan"]["finished_at"].clone();
    let scanned = last_scan(&daemon);
    // (groups total, dry-run matches) from the index alone, and no job ever undecodable. The
    // full listing is read only once the counts are right: its page read drops what it finds
    // gone by itself, which must not be what makes the counts right.
    let counts = |d: &Daemon| {
        let broken = d.get("/api/v1/jobs/failed?state=undecodable").expect(200);
        assert_eq!(broken["total"], 0, "listed as undecodable: {broken}");
        let groups = d.get("/api/v1/jobs/failed/groups").expect(200);
        assert_eq!(groups["undecodable"], 0, "{groups}");
        let dry = d
            .post("/api/v1/jobs/failed/retry-all?dry_run=true")
            .expect(200);
        // The per-queue gauges follow too, not only at the next full scan.
        let samples = support::http::parse_metrics(&d.get("/metrics").text());
        let gauge = |name: &str| {
            support::http::metric(&samples, name, &[("queue", "reports")]).unwrap_or(-1.0) as u64
        };
        (
            groups["total"].as_u64().unwrap(),
            dry["matched_count"].as_u64().unwrap(),
            gauge("rq_retryd_failed_jobs"),
            gauge("rq_retryd_waiting_jobs"),
        )
    };
    let listing = |d: &Daemon| {
        let list = d.get("/api/v1/jobs/failed?queue=reports").expect(200);
        let jobs = list["jobs"].as_array().expect("jobs").clone();
        for job in &jobs {
            assert_eq!(job["state"], "waiting", "{list}");
        }
        let mut listed: Vec<String> = jobs
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_string())
            .collect();
        listed.sort();
        (list["total"].as_u64().unwrap(), listed)
    };
    let mut expected: Vec<String> = ids.clone();
    expected.sort();
    assert_eq!(counts(&daemon), (3, 3, 3, 3));
    assert_eq!(listing(&daemon), (3, expected.clone()));
    // Give the notification listener a moment to subscribe.
    std::thread::sleep(Duration::from_millis(300));

    let mut wait_gone = |what: &str, id: &str| {
        expected.retain(|e| e != id);
        let n = expected.len() as u64;
        let since = Instant::now();
        let mut last = counts(&daemon);
        while last != (n, n, n, n) {
            assert!(
                since.elapsed() < within + Duration::from_secs(10),
                "{what}: still {last:?} after {:?}, want {n}:\n{}",
                since.elapsed(),
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
            last = counts(&daemon);
        }
        let took = since.elapsed();
        eprintln!("{what}: left every count after {took:?}");
        assert!(
            took <= within,
            "{what}: left every count after {took:?}, want <= {within:?}"
        );
        assert_eq!(listing(&daemon), (n, expected.clone()), "{what}");
    };
    rq.requeue(&url, "reports", &ids[0]);
    wait_gone("requeued by RQ", &ids[0]);
    rq.ctl(&url, &["delete", &ids[1]]);
    wait_gone("deleted by RQ", &ids[1]);
    assert_eq!(last_scan(&daemon), scanned, "no full scan ran meanwhile");
    // What noticed: the notifications when they are on, else the size check.
    let metrics = daemon.get("/metrics").text();
    let reconciles = |trigger: &str| {
        let line = format!("rq_retryd_reconciles_total{{trigger=\"{trigger}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {line} in:\n{metrics}"))
    };
    if notifications {
        assert!(reconciles("notification") >= 2.0, "{metrics}");
    } else {
        assert_eq!(reconciles("notification"), 0.0, "{metrics}");
        assert!(reconciles("size_check") >= 2.0, "{metrics}");
    }
    assert_eq!(rq.status(&url, &ids[0]), "queued");
    assert_eq!(rq.failed_ids(&url, "reports"), vec![ids[2].clone()]);
}

/// Retries failures on `fast` in a slow lane, and retries again there.
const SLOW_LANE: &str = r#"
[[policy]]
name = "to-slow-lane"
queues = ["fast"]
exceptions = ["ConnectionError"]
max_attempts = 5
backoff = { strategy = "fixed", delay = "0s" }
requeue_to = "slow"

[[policy]]
name = "slow-lane"
queues = ["slow"]
exceptions = ["ConnectionError"]
max_attempts = 5
backoff = { strategy = "fixed", delay = "0s" }
"#;

/// A job failing on `fast` is requeued into `slow` (`requeue_to`): RQ sees it there (origin,
/// queue, `rq:queues`), a worker of `slow` alone runs it, its next failure lands in `slow`'s
/// failed registry, where the slow lane's own policy retries it with the attempts carried
/// over, and it finishes in `slow`. See: issue 21 (`requeue_to`).
fn a_requeue_to_queue_is_served_by_its_own_worker(rq: &Rq) {
    let env = TestEnv::new(SLOW_LANE);
    let url = env.url();
    let id = rq.enqueue(
        &url,
        &JobSpec::new("fast", "tasks.fail_first")
            .args(json!(["test:lane:runs", 2]))
            .kwargs(json!({"value": "slowly"})),
    );
    rq.burst_worker(&url, &["fast"]);
    assert_eq!(rq.failed_ids(&url, "fast"), vec![id.clone()]);
    let explain = retryd(&env.config, &["explain", &id]);
    assert!(
        explain.stdout.contains("requeue to queue slow"),
        "{}\n{}",
        explain.stdout,
        explain.stderr
    );

    let run = retryd_once(&env.config, &[]);
    assert_eq!(run.count("requeued"), 1, "{:?}", run.summary());
    let job = rq.fetch(&url, &id);
    assert_eq!(job["origin"], "slow", "{job}");
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(rq.queued_ids(&url, "slow"), vec![id.clone()]);
    assert!(rq.queued_ids(&url, "fast").is_empty());
    assert!(rq.failed_ids(&url, "fast").is_empty());
    let stats = rq.ctl_json(&url, &["stats"]);
    assert_eq!(
        stats["queues"]["slow"]["queued"], 1,
        "RQ knows the queue: {stats}"
    );
    let last = env.newest_audit_entry();
    assert_eq!(
        last.get("queue").map(String::as_str),
        Some("fast"),
        "{last:?}"
    );
    assert_eq!(
        last.get("to_queue").map(String::as_str),
        Some("slow"),
        "{last:?}"
    );

    // A worker of `fast` has nothing to do; the slow lane's worker runs it, and it fails again.
    rq.burst_worker(&url, &["fast"]);
    assert_eq!(env.counter("test:lane:runs"), 1, "a fast worker ran it");
    rq.burst_worker(&url, &["slow"]);
    assert_eq!(env.counter("test:lane:runs"), 2);
    assert_eq!(rq.failed_ids(&url, "slow"), vec![id.clone()]);
    assert!(rq.failed_ids(&url, "fast").is_empty());
    assert_eq!(env.job_field(&id, "retryd_attempts").as_deref(), Some("1"));

    // The policy of the registry's queue decides now: the slow lane's, attempts carried over.
    let run = retryd_once(&env.config, &[]);
    assert_eq!(run.count("requeued"), 1, "{:?}", run.summary());
    assert_eq!(env.job_field(&id, "retryd_attempts").as_deref(), Some("2"));
    assert_eq!(
        env.job_field(&id, "retryd_policy").as_deref(),
        Some("slow-lane")
    );
    assert_eq!(rq.queued_ids(&url, "slow"), vec![id.clone()]);

    rq.burst_worker(&url, &["slow"]);
    let job = rq.fetch(&url, &id);
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["origin"], "slow", "{job}");
    assert_eq!(job["return_value"], "slowly", "{job}");
    let finished = rq.ctl_json(&url, &["registry", "--queue", "slow", "--name", "finished"]);
    assert_eq!(finished["ids"], json!([id.clone()]), "{finished}");
    let finished = rq.ctl_json(&url, &["registry", "--queue", "fast", "--name", "finished"]);
    assert_eq!(finished["ids"], json!([]), "{finished}");
    let started = rq.ctl_json(&url, &["registry", "--queue", "slow", "--name", "started"]);
    assert_eq!(started["ids"], json!([]), "{started}");
}

/// Holds requeues into `lonely` while no live RQ worker listens to it.
const HOLD_WITHOUT_WORKERS: &str = r#"
[[policy]]
name = "when-served"
queues = ["lonely"]
exceptions = ["ConnectionError"]
max_attempts = 5
backoff = { strategy = "fixed", delay = "0s" }
hold_when = { no_workers = true }
"#;

/// The listing's `held` jobs, by id.
fn held_ids(daemon: &Daemon) -> Vec<String> {
    let page = daemon.get("/api/v1/jobs/failed?state=held").expect(200);
    page["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            assert_eq!(j["state"], "held", "{j}");
            j["job_id"].as_str().expect("job_id").to_string()
        })
        .collect()
}

/// `rq_retryd_held_jobs{queue, reason}`, 0 when absent.
fn held_gauge(daemon: &Daemon, queue: &str, reason: &str) -> f64 {
    let text = daemon.get("/metrics").text();
    metric(
        &parse_metrics(&text),
        "rq_retryd_held_jobs",
        &[("queue", queue), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// A due job of a queue no worker listens to is `held` (listing, gauge, explain) and stays
/// failed; a real worker started in the background registers itself, and rq-retryd requeues
/// the job within a couple of seconds (no scan needed), and the worker runs it.
/// See: issue 21 (`hold_when.no_workers`).
fn a_held_job_goes_once_a_live_worker_listens_to_its_queue(rq: &Rq) {
    let env = TestEnv::new(HOLD_WITHOUT_WORKERS);
    let url = env.url();
    let id = rq.enqueue(
        &url,
        &JobSpec::new("lonely", "tasks.fail_first")
            .args(json!(["test:lonely:runs", 1]))
            .kwargs(json!({"value": "served"})),
    );
    rq.burst_worker(&url, &["lonely"]);
    assert_eq!(rq.failed_ids(&url, "lonely"), vec![id.clone()]);
    let gone = rq.ctl_json(&url, &["workers", "--queue", "lonely"]);
    assert_eq!(gone["names"], json!([]), "the burst worker left: {gone}");
    // A dry run says so too: held, not "would requeue".
    let dry = retryd_once(&env.config, &["--dry-run"]);
    assert_eq!(dry.count("held"), 1, "{:?}", dry.summary());
    assert_eq!(dry.count("requeued"), 0, "{:?}", dry.summary());
    // So does a real `once`, which leaves the job as it was.
    let once = retryd_once(&env.config, &[]);
    assert_eq!(once.count("held"), 1, "{:?}", once.summary());
    assert_eq!(once.count("requeued"), 0, "{:?}", once.summary());
    assert_eq!(rq.status(&url, &id), "failed");

    let daemon = Daemon::start_ready(&DaemonConfig::new(&url, HOLD_WITHOUT_WORKERS));
    assert_eq!(held_ids(&daemon), vec![id.clone()]);
    assert_eq!(held_gauge(&daemon, "lonely", "no_workers"), 1.0);
    let explain = daemon
        .get(&format!("/api/v1/failed-jobs/{}/explain", enc(&id)))
        .expect(200);
    assert_eq!(
        explain["held"], "no live RQ worker listens to queue lonely",
        "{explain}"
    );
    assert!(
        explain["decision"]
            .as_str()
            .unwrap_or("")
            .starts_with("held: "),
        "{explain}"
    );
    let explain = retryd(&env.config, &["explain", &id]);
    assert!(
        explain
            .stdout
            .contains("held: no live RQ worker listens to queue lonely"),
        "{}\n{}",
        explain.stdout,
        explain.stderr
    );
    // No full scan from here on (scan_interval is an hour, and none is requested, which
    // would also decide again): only the due-time pass, about every second, can requeue it.
    assert_eq!(rq.status(&url, &id), "failed");
    assert_eq!(env.counter("test:lonely:runs"), 1);

    let mut worker = rq.worker(&url, &["lonely"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rq.ctl_json(&url, &["workers", "--queue", "lonely"])["names"] == json!([]) {
        assert!(Instant::now() < deadline, "the worker never registered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let registered = Instant::now();
    daemon.wait_until("the held job is requeued", |_| {
        env.failed_score("lonely", &id).is_none()
    });
    let waited = registered.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "requeued {waited:?} after a worker registered"
    );
    daemon.wait_until("the worker ran the job", |_| {
        rq.status(&url, &id) == "finished"
    });
    assert_eq!(rq.fetch(&url, &id)["return_value"], "served");
    assert_eq!(env.job_field(&id, "retryd_attempts").as_deref(), Some("1"));
    daemon.wait_until("the held gauge is back to 0", |d| {
        held_gauge(d, "lonely", "no_workers") == 0.0
    });
    assert!(held_ids(&daemon).is_empty());
    worker.kill9();
}

/// Holds requeues into `busy` while it holds more than 2 jobs.
const HOLD_WHILE_BUSY: &str = r#"
[[policy]]
name = "when-quiet"
queues = ["busy"]
exceptions = ["ConnectionError"]
max_attempts = 5
backoff = { strategy = "fixed", delay = "0s" }
hold_when = { queue_longer_than = 2 }
"#;

/// Three failed jobs of a queue holding 3 jobs (more than the policy's 2) are held; an
/// operator's retry of one, and a bulk retry of another, through the HTTP API go ahead and
/// warn; the third is requeued once a worker has drained the queue, and runs. See: issue 21 (`queue_longer_than`, manual
/// retries warn but are not blocked).
fn a_held_job_waits_for_its_queue_to_drain_and_a_manual_retry_warns(rq: &Rq) {
    let env = TestEnv::new("");
    let url = env.url();
    let failing = |n: &str| {
        rq.enqueue(
            &url,
            &JobSpec::new("busy", "tasks.fail_first")
                .args(json!([format!("test:busy:{n}"), 1]))
                .kwargs(json!({"value": n})),
        )
    };
    let mut ids: Vec<String> = vec![failing("a"), failing("b")];
    rq.burst_worker(&url, &["busy"]);
    // c fails later than a and b, so that a bulk selection can take it alone.
    ids.push(failing("c"));
    rq.burst_worker(&url, &["busy"]);
    assert_eq!(rq.failed_ids(&url, "busy").len(), 3);
    for _ in 0..3 {
        rq.enqueue(&url, &JobSpec::new("busy", "tasks.ok"));
    }

    let daemon = Daemon::start_ready(&DaemonConfig::new(&url, HOLD_WHILE_BUSY));
    let mut held = held_ids(&daemon);
    held.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(held, expected);
    assert_eq!(held_gauge(&daemon, "busy", "queue_longer_than"), 3.0);
    let explain = daemon
        .get(&format!("/api/v1/failed-jobs/{}/explain", enc(&ids[1])))
        .expect(200);
    assert_eq!(
        explain["held"], "queue busy holds 3 jobs, more than 2",
        "{explain}"
    );

    let retried = daemon
        .post(&format!("/api/v1/failed-jobs/{}/retry", enc(&ids[0])))
        .expect(200);
    assert_eq!(retried["status"], "queued", "{retried}");
    assert_eq!(
        retried["warnings"],
        json!([{"code": "queue_longer_than", "queue": "busy",
                "message": "queue busy holds 3 jobs, more than 2"}]),
        "{retried}"
    );
    assert_eq!(rq.status(&url, &ids[0]), "queued");
    // A bulk retry of the last failure (c) goes ahead and warns alike.
    let listed = daemon.get("/api/v1/jobs/failed?queue=busy").expect(200);
    let b_failed_at = listed["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["job_id"] == ids[1].as_str())
        .and_then(|j| j["failed_at"].as_str())
        .expect("b is listed")
        .to_string();
    let bulk = daemon
        .post(&format!(
            "/api/v1/jobs/failed/retry-all?queue=busy&failed_after={}",
            enc(&b_failed_at)
        ))
        .expect(200);
    assert_eq!(bulk["requeued_count"], 1, "{bulk}");
    assert_eq!(rq.status(&url, &ids[2]), "queued");
    let warnings = bulk["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{bulk}");
    assert_eq!(warnings[0]["code"], "queue_longer_than", "{bulk}");
    assert!(
        warnings[0]["message"].as_str().is_some_and(
            |m| m.starts_with("queue busy holds ") && m.ends_with(" jobs, more than 2")
        ),
        "{bulk}"
    );
    daemon.scan();
    assert_eq!(held_ids(&daemon), vec![ids[1].clone()]);
    assert_eq!(rq.status(&url, &ids[1]), "failed");

    rq.burst_worker(&url, &["busy"]);
    assert_eq!(rq.status(&url, &ids[0]), "finished");
    assert_eq!(rq.status(&url, &ids[2]), "finished");
    daemon.wait_until("the held job is requeued", |_| {
        env.failed_score("busy", &ids[1]).is_none()
    });
    rq.burst_worker(&url, &["busy"]);
    let job = rq.fetch(&url, &ids[1]);
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["return_value"], "b", "{job}");
    daemon.wait_until("the held gauge is back to 0", |d| {
        held_gauge(d, "busy", "queue_longer_than") == 0.0
    });
}

/// One scenario's world: its own redis-server and a config pointing at it. The raw-key helpers
/// open a fresh connection each (cheap on loopback) so the env can be shared by reference.
struct TestEnv {
    server: RedisServer,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestEnv {
    /// Starts a server and writes a config with `policies` for it.
    fn new(policies: &str) -> TestEnv {
        let server = RedisServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), &config_with_policies(&server.url(), policies));
        TestEnv {
            server,
            config,
            _dir: dir,
        }
    }

    /// The URL workers, rqctl.py and the config all use.
    fn url(&self) -> String {
        self.server.url()
    }

    /// One field of the job hash, as a string (`None` when absent).
    fn job_field(&self, id: &str, field: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(format!("rq:job:{id}"))
            .arg(field)
            .query(&mut self.server.conn())
            .expect("HGET")
    }

    /// The job's score in `rq:failed:<queue>`, `None` when it is not there.
    fn failed_score(&self, queue: &str, id: &str) -> Option<String> {
        redis::cmd("ZSCORE")
            .arg(format!("rq:failed:{queue}"))
            .arg(id)
            .query(&mut self.server.conn())
            .expect("ZSCORE")
    }

    /// Whether `key` exists at all (a purged job leaves no hash behind).
    fn exists(&self, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query::<i64>(&mut self.server.conn())
            .expect("EXISTS")
            == 1
    }

    /// The keys matching `pattern`.
    fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.server.conn())
            .expect("KEYS")
    }

    /// Every key with its content as text (type, items, whether it expires), for comparing
    /// what two writes left.
    fn snapshot(&self) -> BTreeMap<String, String> {
        support::jobs::snapshot(&mut self.server.conn())
            .into_iter()
            .map(|(k, (kind, items, expires))| {
                let items: Vec<String> = items
                    .iter()
                    .map(|i| String::from_utf8_lossy(i).into_owned())
                    .collect();
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    format!("{kind} {items:?} expires={expires}"),
                )
            })
            .collect()
    }

    /// A key's serialized value (DUMP) and absolute expiry in ms (PEXPIRETIME; -1 none, -2 gone).
    fn key_state(&self, key: &str) -> (Option<Vec<u8>>, i64) {
        let con = &mut self.server.conn();
        let dump = redis::cmd("DUMP").arg(key).query(con).expect("DUMP");
        let expiry = redis::cmd("PEXPIRETIME")
            .arg(key)
            .query(con)
            .expect("PEXPIRETIME (needs Redis >= 7)");
        (dump, expiry)
    }

    /// The whole job hash, raw bytes per field.
    fn hash(&self, id: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        redis::cmd("HGETALL")
            .arg(format!("rq:job:{id}"))
            .query(&mut self.server.conn())
            .expect("HGETALL")
    }

    /// A whole list, e.g. `rq:queue:<q>` as workers would pop it.
    fn list(&self, key: &str) -> Vec<String> {
        redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut self.server.conn())
            .expect("LRANGE")
    }

    /// The newest entry of rq-retryd's audit trail, field by field.
    fn newest_audit_entry(&self) -> BTreeMap<String, String> {
        let entries: Vec<(String, BTreeMap<String, String>)> = redis::cmd("XREVRANGE")
            .arg("rq:retryd:audit")
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(&mut self.server.conn())
            .expect("XREVRANGE");
        entries.into_iter().next().expect("an audit entry").1
    }

    /// A counter a task INCRs on every run (0 when it never ran).
    fn counter(&self, key: &str) -> i64 {
        redis::cmd("GET")
            .arg(key)
            .query::<Option<i64>>(&mut self.server.conn())
            .expect("GET")
            .unwrap_or(0)
    }
}

/// Purges every job that RQ failed after its worker died.
const PURGE_ABANDONED: &str = r#"
[[policy]]
name = "drop-abandoned"
error_pattern = "AbandonedJobError"
action = "purge"
"#;

/// Twin jobs of the same shape, made by real RQ 2.12: in one group (with a bystander that
/// stays), each run by a worker killed under it (so its execution records stay) and failed by
/// RQ's own cleanup. RQ's own `job.delete()` deletes one; rq-retryd's purge the other. What is
/// left of each, its id substituted, must be the same, and neither may stay in a key they
/// shared (failed and started registries, the group). The one deliberate difference: rq-retryd
/// also deletes the results stream, which RQ leaves to expire with failure_ttl.
/// See: issue 21, item 5 (a purge left the execution records and the group membership).
#[test]
fn rq2_purge_removes_what_rqs_own_delete_removes() {
    let rq = Rq::rq2();
    let env = TestEnv::new(PURGE_ABANDONED);
    let url = env.url();
    rq.enqueue(
        &url,
        &JobSpec::new("elsewhere", "tasks.ok")
            .id("bystander")
            .group("nightly"),
    );
    for twin in ["twin-a", "twin-b"] {
        rq.enqueue(
            &url,
            &JobSpec::new("twins", "tasks.hang_first")
                .args(json!([format!("test:{twin}:runs")]))
                .id(twin)
                .group("nightly"),
        );
        let mut worker = rq.worker(&url, &["twins"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while env.counter(&format!("test:{twin}:runs")) == 0 {
            assert!(Instant::now() < deadline, "the worker never started {twin}");
            std::thread::sleep(Duration::from_millis(50));
        }
        worker.kill9();
    }
    let cleaned = rq.ctl_json(&url, &["abandon", "--queue", "twins"]);
    assert_eq!(cleaned["failed"], json!(["twin-a", "twin-b"]), "{cleaned}");
    for twin in ["twin-a", "twin-b"] {
        // The shape the comparison is about: both have what RQ's delete must remove.
        assert!(env.exists(&format!("rq:executions:{twin}")), "{twin}");
        assert_eq!(
            env.keys(&format!("rq:execution:{twin}:*")).len(),
            1,
            "{twin}"
        );
        assert!(env.exists(&format!("rq:results:{twin}")), "{twin}");
        assert_eq!(env.job_field(twin, "group_id").as_deref(), Some("nightly"));
    }

    rq.ctl_json(&url, &["delete", "twin-a"]);
    let run = retryd_once(&env.config, &[]);
    assert_eq!(run.count("purged"), 1, "{:?}", run.summary());

    let left = env.snapshot();
    let of = |twin: &str| -> BTreeMap<String, String> {
        left.iter()
            .filter(|(k, _)| k.contains(twin) && !k.starts_with("rq:retryd:"))
            .map(|(k, v)| (k.replace(twin, "<id>"), v.replace(twin, "<id>")))
            .collect()
    };
    let (mut by_rq, by_retryd) = (of("twin-a"), of("twin-b"));
    assert!(
        by_rq.remove("rq:results:<id>").is_some(),
        "RQ's delete leaves the results stream"
    );
    assert_eq!(by_retryd, by_rq, "left of RQ's delete vs rq-retryd's purge");
    for (key, content) in &left {
        // A killed worker's own record names the job it was running; no delete touches it.
        if key.starts_with("rq:retryd:") || key.starts_with("rq:worker:") || key.contains("twin-") {
            continue;
        }
        assert!(
            !content.contains("twin-"),
            "{key} still holds a twin: {content}"
        );
    }
    assert!(
        env.exists("rq:group:nightly"),
        "the bystander keeps the group"
    );
}
