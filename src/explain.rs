//! `explain`: for one failed job, which policy decides it, why the earlier ones did not, its
//! attempts, its next retry time and the decision. Pure over facts; the command reads them.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::policy::{self, Action, Decision, Exhaustion, Policy};
use crate::rq::JobFacts;

/// Everything `explain` reports about one job.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub job_id: String,
    pub queue: String,
    pub origin: String,
    pub status: Option<String>,
    pub function: Option<String>,
    pub exception_type: Option<String>,
    pub failed_at: DateTime<Utc>,
    /// `ended_at`, or `failed_registry` for a failure RQ recorded without one (its worker
    /// died): then `failed_at` is when RQ moved the job to the failed registry.
    pub failed_at_from: crate::rq::job::FailedAt,
    pub attempts: u32,
    pub max_attempts: Option<u32>,
    pub exhausted: bool,
    pub policy: Option<String>,
    pub policies: Vec<PolicyVerdict>,
    /// The decision in words (see [`describe_decision`]).
    pub decision: String,
    /// The decision itself, for the code that acts on it (the sentence is for people).
    #[serde(skip)]
    pub decided: Decision,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub purge_at: Option<DateTime<Utc>>,
    /// The last lines of the failure text.
    pub failure_tail: Option<String>,
    /// When RQ created the job (`created_at`), when readable.
    pub created_at: Option<DateTime<Utc>>,
    /// What the deciding policy's `max_age` means for this job (when it has one): when it
    /// gives the job up, or that it cannot apply because `created_at` is unreadable.
    pub max_age: Option<String>,
    /// The queue the deciding retry policy requeues into instead of the job's origin.
    pub requeue_to: Option<String>,
    /// Why a due requeue is held back (the policy's `hold_when`), when it is; see [`hold`].
    pub held: Option<String>,
}

/// The deciding retry policy's `hold_when` and the queue to check, when the decision is to
/// requeue now: what the caller reads (one read of the queue) before calling [`hold`].
pub fn pending_hold(policies: &[Policy], e: &Explanation) -> Option<(policy::HoldWhen, String)> {
    if !matches!(e.decided, Decision::RequeueNow { .. }) {
        return None;
    }
    let p = policies
        .iter()
        .find(|p| Some(&p.name) == e.policy.as_ref())?;
    let Action::Retry(spec) = &p.action else {
        return None;
    };
    let target = spec.requeue_to.clone().unwrap_or_else(|| e.origin.clone());
    spec.hold_when.map(|h| (h, target))
}

/// Holds the due requeue back when `hold` holds for `target` in `world` (the queue as read
/// after [`pending_hold`]); the decision then says so. The same rule the supervisor applies
/// (`hold::hold_reason`).
pub fn hold(
    e: &mut Explanation,
    hold: &policy::HoldWhen,
    target: &str,
    world: crate::hold::QueueWorld,
) {
    let Some(reason) = crate::hold::hold_reason(hold, target, world) else {
        return;
    };
    e.held = Some(reason.to_string());
    e.decision = format!(
        "held: {reason}; requeued as soon as that clears ({})",
        e.decision
    );
}

/// How one policy related to the job.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyVerdict {
    pub name: String,
    pub action: &'static str,
    pub result: Match,
    pub reason: Option<String>,
}

/// Whether one policy matched the job, serialised as `matched`, `not_matched` or
/// `not_evaluated` (an earlier policy matched).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    Matched,
    NotMatched,
    NotEvaluated,
}

/// Builds the explanation of `job` at `now`.
pub fn explain(policies: &[Policy], job: &JobFacts, now: DateTime<Utc>) -> Explanation {
    let evaluation = policy::explain(policies, job, now);
    let chosen = evaluation.policy.map(|p| p.name.as_str());
    let mut verdicts = Vec::with_capacity(policies.len());
    let mut passed_match = false;
    for p in policies {
        let miss = evaluation
            .misses
            .iter()
            .find(|(name, _)| *name == p.name)
            .map(|(_, m)| m.to_string());
        let (result, reason) = if passed_match {
            (
                Match::NotEvaluated,
                Some("an earlier policy matched".to_string()),
            )
        } else if Some(p.name.as_str()) == chosen {
            passed_match = true;
            (Match::Matched, None)
        } else {
            (Match::NotMatched, miss)
        };
        verdicts.push(PolicyVerdict {
            name: p.name.clone(),
            action: p.action.kind(),
            result,
            reason,
        });
    }
    let retry_spec = evaluation.policy.and_then(|p| match &p.action {
        Action::Retry(spec) => Some(spec),
        _ => None,
    });
    let next_retry_at = match (&evaluation.decision, retry_spec) {
        (Decision::RequeueNow { .. } | Decision::RequeueAt { .. }, Some(spec)) => {
            Some(policy::next_retry_at(spec, job))
        }
        _ => None,
    };
    let requeue_to = retry_spec.and_then(|s| s.requeue_to.as_deref());
    let mut decision = match retry_spec.and_then(|spec| policy::exhaustion(spec, job, now)) {
        Some(reason) => describe_exhausted(&evaluation.decision, reason),
        None => describe_decision(&evaluation.decision),
    };
    if let (Decision::RequeueNow { .. } | Decision::RequeueAt { .. }, Some(q)) =
        (&evaluation.decision, requeue_to)
    {
        let _ = write!(decision, ", requeue to queue {q}");
    }
    Explanation {
        job_id: job.job_id.clone(),
        queue: job.queue.clone(),
        origin: job.origin.clone(),
        status: job.status.clone(),
        function: job.func_name.clone(),
        exception_type: job.exc_type().map(str::to_string),
        failed_at: job.failed_at,
        failed_at_from: job.failed_at_from,
        attempts: job.attempts,
        max_attempts: retry_spec.map(|s| s.max_attempts),
        exhausted: job.exhausted,
        policy: chosen.map(str::to_string),
        policies: verdicts,
        decision,
        decided: evaluation.decision.clone(),
        next_retry_at,
        purge_at: match evaluation.decision {
            Decision::PurgeAt { due } => Some(due),
            _ => None,
        },
        failure_tail: job.failure_text().map(|t| tail(t, 5)),
        created_at: job.created_at,
        max_age: retry_spec.and_then(|spec| describe_max_age(spec, job)),
        requeue_to: requeue_to.map(str::to_string),
        held: None,
    }
}

/// The sentence for a decision of a retry policy that gave the job up, saying why.
fn describe_exhausted(decision: &Decision, reason: Exhaustion) -> String {
    let why = match reason {
        Exhaustion::Attempts => return describe_decision(decision),
        Exhaustion::MaxAge { deadline } => {
            format!(
                "max_age used up: the job is older than it since {}",
                ts(deadline)
            )
        }
        Exhaustion::NextRetryTooLate { deadline, due } => format!(
            "max_age used up: it ends at {}, before the next retry would be due at {}",
            ts(deadline),
            ts(due)
        ),
    };
    match decision {
        Decision::PurgeNow { exhausted: true } => {
            format!("purge now ({why}, on_exhausted = purge)")
        }
        Decision::MarkExhausted => format!("mark exhausted ({why}); keep in the failed registry"),
        Decision::Exhausted => {
            format!("exhausted ({why}; already marked); left in the failed registry")
        }
        other => describe_decision(other),
    }
}

/// What a retry policy's `max_age` means for `job`, `None` when the policy has none.
fn describe_max_age(spec: &policy::RetrySpec, job: &JobFacts) -> Option<String> {
    let age = spec.max_age?;
    let age_text = humantime::format_duration(age).to_string();
    Some(match job.created_at {
        Some(created) => {
            let deadline = created
                .checked_add_signed(chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            format!("{age_text}: created at {}, given up from {}", ts(created), ts(deadline))
        }
        None => format!(
            "{age_text}: cannot apply, the job has no readable created_at; retried up to max_attempts"
        ),
    })
}

/// A sentence for the decision.
pub fn describe_decision(decision: &Decision) -> String {
    match decision {
        Decision::RequeueNow { attempt, at_front } => {
            format!(
                "requeue now as attempt {attempt}{}",
                if *at_front { " (at the front)" } else { "" }
            )
        }
        Decision::RequeueAt { due, attempt } => {
            format!("wait: attempt {attempt} is due at {}", ts(*due))
        }
        Decision::PurgeNow { exhausted: false } => "purge now".to_string(),
        Decision::PurgeNow { exhausted: true } => {
            "purge now (max_attempts used up, on_exhausted = purge)".to_string()
        }
        Decision::PurgeAt { due } => format!("wait: purge is due at {}", ts(*due)),
        Decision::MarkExhausted => {
            "mark exhausted (max_attempts used up); keep in the failed registry".to_string()
        }
        Decision::Exhausted => {
            "exhausted (already marked); left in the failed registry".to_string()
        }
        Decision::Ignore => "ignore (an ignore policy matched); left alone".to_string(),
        Decision::Unmatched => "unmatched: no policy applies; left alone".to_string(),
        Decision::Stopped => "stopped: RQ marks this job stopped (an operator stopped it): \
            rq-retryd never retries it automatically; retry or delete it by hand"
            .to_string(),
        Decision::Succeeded { at } => format!(
            "succeeded: its last run succeeded (RQ's results record a success at {}; RQ \
             failed it afterwards, e.g. as abandoned): rq-retryd never retries it \
             automatically, as that would repeat its work; retry or delete it by hand",
            ts(*at)
        ),
    }
}

/// The human rendering printed by `rq-retryd explain`.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unknown)".to_string());
    let _ = writeln!(out, "job          {}", e.job_id);
    let _ = writeln!(out, "queue        {} (origin {})", e.queue, e.origin);
    let _ = writeln!(out, "function     {}", or_unknown(&e.function));
    let _ = writeln!(out, "exception    {}", or_unknown(&e.exception_type));
    let from = match e.failed_at_from {
        crate::rq::job::FailedAt::EndedAt => "",
        crate::rq::job::FailedAt::FailedRegistry
            if e.status.as_deref() == Some(crate::rq::job::STOPPED) =>
        {
            " (no ended_at: when RQ moved it to the failed registry; it was stopped)"
        }
        crate::rq::job::FailedAt::FailedRegistry => {
            " (no ended_at: when RQ moved it to the failed registry; its worker died)"
        }
    };
    let _ = writeln!(out, "failed at    {}{from}", ts(e.failed_at));
    if let Some(at) = e.created_at {
        let _ = writeln!(out, "created at   {}", ts(at));
    }
    let max = e
        .max_attempts
        .map(|m| format!(" of {m}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "attempts     {}{max}{}",
        e.attempts,
        if e.exhausted {
            " (marked exhausted)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "policies");
    for v in &e.policies {
        let mark = match v.result {
            Match::Matched => "=> matched",
            Match::NotMatched => "   no     ",
            Match::NotEvaluated => "   -      ",
        };
        let _ = write!(out, "  {mark} {} ({})", v.name, v.action);
        if let Some(reason) = &v.reason {
            let _ = write!(out, ": {reason}");
        }
        out.push('\n');
    }
    if e.policies.is_empty() {
        let _ = writeln!(out, "  (no policies configured)");
    }
    if let Some(max_age) = &e.max_age {
        let _ = writeln!(out, "max age      {max_age}");
    }
    if let Some(at) = e.next_retry_at {
        let _ = writeln!(out, "next retry   {}", ts(at));
    }
    if let Some(at) = e.purge_at {
        let _ = writeln!(out, "purge at     {}", ts(at));
    }
    let _ = writeln!(out, "decision     {}", e.decision);
    if let Some(t) = &e.failure_tail {
        let _ = writeln!(out, "failure (last lines)");
        for line in t.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::hold::QueueWorld;
    use crate::rq::{CasToken, Failure, Meta, MetaValue, Reads};

    fn policies(toml: &str) -> Vec<Policy> {
        crate::config::parse(toml, "t.toml").unwrap().policies
    }

    #[test]
    fn a_policys_match_result_serialises_as_the_json_always_spelled_it() {
        let spelled = |m: Match| serde_json::to_string(&m).unwrap();
        assert_eq!(spelled(Match::Matched), r#""matched""#);
        assert_eq!(spelled(Match::NotMatched), r#""not_matched""#);
        assert_eq!(spelled(Match::NotEvaluated), r#""not_evaluated""#);
    }

    fn failed_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn job(created_at: Option<DateTime<Utc>>, tenant: &str) -> JobFacts {
        JobFacts {
            job_id: "j".into(),
            queue: "default".into(),
            origin: "default".into(),
            status: Some("failed".into()),
            func_name: Some("app.tasks.work".into()),
            description: None,
            failed_at: failed_at(),
            failed_at_from: crate::rq::job::FailedAt::EndedAt,
            attempts: 0,
            exhausted: false,
            last_policy: None,
            requeued_at: None,
            failure: None,
            cas: CasToken::default(),
            reads: Reads::ALL,
            succeeded_at: None,
            created_at,
            meta: Some(Meta::Read(vec![(
                "tenant".into(),
                MetaValue::Text(tenant.into()),
            )])),
        }
    }

    const AGED: &str = "[[policy]]\nname = \"aged\"\nmax_attempts = 5\nmax_age = \"2d\"\nbackoff = { strategy = \"fixed\", delay = \"60s\" }\n";

    #[test]
    fn a_job_given_up_by_max_age_says_so_and_when() {
        let p = policies(AGED);
        let old = job(Some(failed_at() - chrono::Duration::days(3)), "x");
        let e = explain(&p, &old, failed_at());
        assert_eq!(
            e.decision,
            "mark exhausted (max_age used up: the job is older than it since 2024-04-30T12:00:00Z); keep in the failed registry"
        );
        assert_eq!(
            e.max_age.as_deref(),
            Some("2days: created at 2024-04-28T12:00:00Z, given up from 2024-04-30T12:00:00Z")
        );
        let text = render(&e);
        assert!(text.contains("created at   2024-04-28T12:00:00Z"), "{text}");
        assert!(text.contains("max age      2days"), "{text}");
    }

    #[test]
    fn max_age_without_created_at_says_it_cannot_apply() {
        let p = policies(AGED);
        let e = explain(&p, &job(None, "x"), failed_at());
        assert_eq!(
            e.max_age.as_deref(),
            Some("2days: cannot apply, the job has no readable created_at; retried up to max_attempts")
        );
        assert!(e.decision.starts_with("wait: attempt 1"), "{}", e.decision);
    }

    #[test]
    fn a_meta_mismatch_names_the_key_the_value_and_the_pattern() {
        let p = policies("[[policy]]\nname = \"acme\"\nmeta = { tenant = \"acme-*\" }\n");
        let e = explain(&p, &job(None, "other"), failed_at());
        assert_eq!(
            e.policies[0].reason.as_deref(),
            Some("meta tenant = \"other\" does not match \"acme-*\"")
        );
    }

    /// A job on `emails` that failed long ago (any backoff has ended).
    fn emails_job() -> JobFacts {
        JobFacts {
            job_id: "j1".to_string(),
            queue: "emails".to_string(),
            origin: "emails".to_string(),
            status: Some("failed".to_string()),
            func_name: Some("app.send".to_string()),
            description: None,
            failed_at: Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap(),
            failed_at_from: crate::rq::job::FailedAt::EndedAt,
            attempts: 0,
            exhausted: false,
            last_policy: None,
            requeued_at: None,
            failure: Some(Failure::from_text("ValueError: x\n".to_string())),
            cas: CasToken::default(),
            reads: Reads::ALL,
            succeeded_at: None,
            created_at: None,
            meta: None,
        }
    }

    /// See: issue 21.
    #[test]
    fn a_requeue_to_policy_says_where_the_job_goes() {
        let p = policies("[[policy]]\nname = \"slow-lane\"\nrequeue_to = \"slow\"\n");
        let e = explain(&p, &emails_job(), Utc::now());
        assert_eq!(e.requeue_to.as_deref(), Some("slow"));
        assert!(
            e.decision.contains("requeue to queue slow"),
            "{}",
            e.decision
        );
        assert!(render(&e).contains("requeue to queue slow"));
        // Without requeue_to the decision names no other queue.
        let plain = explain(
            &policies("[[policy]]\nname = \"r\"\n"),
            &emails_job(),
            Utc::now(),
        );
        assert!(!plain.decision.contains("to queue"), "{}", plain.decision);
        assert_eq!(plain.requeue_to, None);
    }

    /// See: issue 21.
    #[test]
    fn a_held_requeue_names_the_condition_and_the_target_queue() {
        let p = policies(
            "[[policy]]\nname = \"slow-lane\"\nrequeue_to = \"slow\"\nhold_when = { no_workers = true }\n",
        );
        let mut e = explain(&p, &emails_job(), Utc::now());
        let (hold, target) = pending_hold(&p, &e).expect("a due requeue with hold_when");
        assert_eq!(target, "slow");
        let working = QueueWorld {
            live_workers: 1,
            length: 0,
        };
        super::hold(&mut e, &hold, &target, working);
        assert_eq!(e.held, None, "a live worker: not held");
        assert!(e.decision.starts_with("requeue now"), "{}", e.decision);
        super::hold(&mut e, &hold, &target, QueueWorld::default());
        assert_eq!(
            e.held.as_deref(),
            Some("no live RQ worker listens to queue slow")
        );
        assert!(
            e.decision
                .starts_with("held: no live RQ worker listens to queue slow"),
            "{}",
            e.decision
        );
        // The origin is checked when the policy has no requeue_to.
        let p = policies("[[policy]]\nname = \"r\"\nhold_when = { queue_longer_than = 10000 }\n");
        let e = explain(&p, &emails_job(), Utc::now());
        assert_eq!(
            pending_hold(&p, &e).map(|(_, q)| q).as_deref(),
            Some("emails")
        );
        // Nothing to hold when no requeue is due.
        let p = policies(
            "[[policy]]\nname = \"r\"\nmax_attempts = 1\nhold_when = { no_workers = true }\n",
        );
        let mut used_up = emails_job();
        used_up.attempts = 1;
        assert!(pending_hold(&p, &explain(&p, &used_up, Utc::now())).is_none());
    }
}
