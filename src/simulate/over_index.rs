//! A simulation over the daemon's failure index: every indexed failure decided again by the
//! running and by the candidate policies, from what the index holds (see the module above for
//! what it does not hold and how that is answered).

use chrono::{DateTime, Utc};

use super::{GroupLabel, GroupSums, Outcome, QueueWorlds, Tally, Unknown, Verdict};
use crate::index::{FailureIndex, GroupId, GroupNames, Known, Row, State};
use crate::policy::{self, Action, Matcher, Policy, RetrySpec};
use crate::rq::{JobFacts, Reads};

/// Which running policy decided a job, as the index records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Decider {
    /// None matched (the job is unmatched, stopped or succeeded).
    Nobody,
    /// The running policy at this position.
    Policy(usize),
    /// A policy the running file no longer has (decided before a reload): nothing is inferred.
    Stale,
}

/// Whether a matcher matches a group's jobs, as far as the index can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Unknown(Unknown),
}

/// Which candidate policy decides a group's jobs (`None`: none), or why that is not known.
type Plan = Result<Option<usize>, Unknown>;

/// The running and candidate policies, with what is known of their likeness.
struct Simulator<'p> {
    running: &'p [Policy],
    candidate: &'p [Policy],
    /// The target queues as read for `hold_when`.
    worlds: &'p QueueWorlds,
    now: DateTime<Utc>,
    /// For each candidate policy, the first running one that matches exactly the same jobs.
    same_match: Vec<Option<usize>>,
    /// For each candidate policy, the first running one that is the same policy (match and
    /// action): it decides every job the same way.
    same_policy: Vec<Option<usize>>,
}

/// Every job of `index` decided again by `running` and by `candidate` at `now`, with the
/// target queues not read: a candidate's due requeue that `hold_when` may hold back is
/// uncertain ([`Unknown::Hold`]).
pub fn over_index(
    index: &FailureIndex,
    running: &[Policy],
    candidate: &[Policy],
    now: DateTime<Utc>,
) -> Tally<GroupLabel> {
    over_index_held(index, (running, candidate), &QueueWorlds::Unread, now)
}

/// Like [`over_index`], a due requeue held back (`held`) when its policy's `hold_when` holds
/// for its target queue as `worlds` has it (read for [`super::hold_targets`]).
pub fn over_index_held(
    index: &FailureIndex,
    (running, candidate): (&[Policy], &[Policy]),
    worlds: &QueueWorlds,
    now: DateTime<Utc>,
) -> Tally<GroupLabel> {
    let sim = Simulator::new(running, candidate, worlds, now);
    // The rows in parts at once (one per core); each part keeps its own memos.
    let parts = index.rows_in_parts(|rows| {
        // The decider depends on the row's policy, the plan on its group and decider: both
        // are kept per kind number (a vector, not a map lookup per job).
        let mut memo: Vec<Option<(Decider, Plan)>> = vec![None; index.kind_numbers()];
        // Summed per kind too, then per group once at the end.
        let mut sums: Vec<Option<(GroupId, GroupSums)>> = vec![None; index.kind_numbers()];
        let mut facts = blank_facts(now);
        for row in rows {
            let (decider, plan) = *memo[row.kind as usize].get_or_insert_with(|| {
                let decider = sim.decider(index.policy_named(row.policy));
                (decider, sim.plan(index.group_names(row.group), decider))
            });
            fill(&mut facts, &row);
            let queue = index.group_names(row.group).queue;
            let running = sim.running_outcome(&row, decider, &facts, queue);
            let candidate = sim.candidate_verdict(&row, (decider, running), plan, &facts, queue);
            sums[row.kind as usize]
                .get_or_insert_with(|| (row.group, GroupSums::default()))
                .1
                .add(running, candidate);
        }
        let mut tally: Tally<GroupId> = Tally::default();
        for (group, kind_sums) in sums.into_iter().flatten() {
            tally.add_sums(group, kind_sums);
        }
        tally
    });
    let mut tally: Tally<GroupId> = Tally::default();
    for part in parts {
        tally.merge(part);
    }
    relabel(tally, index)
}

/// The tally keyed by names instead of interned ids.
fn relabel(tally: Tally<GroupId>, index: &FailureIndex) -> Tally<GroupLabel> {
    let name = |k: Known<&str>| match k {
        Known::Is(n) => Some(n.to_string()),
        _ => None,
    };
    let groups = tally
        .groups
        .into_iter()
        .map(|(id, sums)| {
            let n = index.group_names(id);
            let label = GroupLabel {
                queue: n.queue.to_string(),
                function: name(n.function),
                exception: name(n.exception),
                known: n.function != Known::Unknown && n.exception != Known::Unknown,
            };
            (label, sums)
        })
        .collect();
    Tally { groups }
}

/// What every decision needs, with nothing read: filled per job by [`fill`].
fn blank_facts(now: DateTime<Utc>) -> JobFacts {
    JobFacts {
        job_id: String::new(),
        queue: String::new(),
        origin: String::new(),
        status: None,
        func_name: None,
        description: None,
        failed_at: now,
        failed_at_from: Default::default(),
        attempts: 0,
        exhausted: false,
        last_policy: None,
        requeued_at: None,
        succeeded_at: None,
        failure: None,
        cas: Default::default(),
        reads: Reads::DECISION,
        created_at: None,
        meta: None,
    }
}

/// The facts of one row that the actions look at (the id for the backoff's jitter).
fn fill(facts: &mut JobFacts, row: &Row<'_>) {
    facts.job_id.clear();
    row.job.push_id(&mut facts.job_id);
    facts.failed_at = row.failed_at;
    facts.attempts = row.attempts;
    facts.exhausted = row.exhausted;
    facts.status = (row.state == State::Stopped).then(|| crate::rq::job::STOPPED.to_string());
    facts.succeeded_at = (row.state == State::Succeeded).then_some(row.failed_at);
}

/// A matcher's identity: two matchers with the same one match the same jobs.
pub(super) fn match_signature(m: &Matcher) -> String {
    let exceptions = m
        .exceptions
        .as_ref()
        .map(|e| e.iter().map(|p| p.as_str()).collect::<Vec<_>>());
    let meta = m.meta.as_ref().map(|patterns| {
        patterns
            .iter()
            .map(|p| (p.key.as_str(), p.value.patterns()))
            .collect::<Vec<_>>()
    });
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        m.queues.as_ref().map(|g| g.patterns()),
        m.functions.as_ref().map(|g| g.patterns()),
        exceptions,
        m.error_pattern.as_ref().map(|r| r.as_str()),
        meta
    )
}

/// Whether a `max_age` may give the job up: only `created_at` can tell, which the index
/// does not keep. A job with its attempts used up is given up whatever its age.
fn needs_created_at(spec: &RetrySpec, row: &Row<'_>) -> bool {
    spec.max_age.is_some() && row.attempts < spec.max_attempts
}

impl<'p> Simulator<'p> {
    fn new(
        running: &'p [Policy],
        candidate: &'p [Policy],
        worlds: &'p QueueWorlds,
        now: DateTime<Utc>,
    ) -> Simulator<'p> {
        let running_match: Vec<String> = running
            .iter()
            .map(|p| match_signature(&p.matcher))
            .collect();
        let running_action: Vec<String> =
            running.iter().map(|p| format!("{:?}", p.action)).collect();
        let mut same_match = Vec::with_capacity(candidate.len());
        let mut same_policy = Vec::with_capacity(candidate.len());
        for c in candidate {
            let m = match_signature(&c.matcher);
            let a = format!("{:?}", c.action);
            same_match.push(running_match.iter().position(|r| *r == m));
            same_policy.push(
                (0..running.len()).find(|&j| running_match[j] == m && running_action[j] == a),
            );
        }
        Simulator {
            running,
            candidate,
            worlds,
            now,
            same_match,
            same_policy,
        }
    }

    fn decider(&self, name: Option<&str>) -> Decider {
        match name {
            None => Decider::Nobody,
            Some(name) => self
                .running
                .iter()
                .position(|p| p.name == name)
                .map_or(Decider::Stale, Decider::Policy),
        }
    }

    /// Which candidate policy decides the jobs of a group that `decider` decides today.
    fn plan(&self, names: GroupNames<'_>, decider: Decider) -> Plan {
        let mut unknown = None;
        for (i, c) in self.candidate.iter().enumerate() {
            let tri = self
                .inferred(i, decider)
                .unwrap_or_else(|| tri(&c.matcher, names));
            match tri {
                Tri::Yes => return unknown.map_or(Ok(Some(i)), Err),
                Tri::No => {}
                Tri::Unknown(fact) => {
                    unknown.get_or_insert(fact);
                }
            }
        }
        unknown.map_or(Ok(None), Err)
    }

    /// What the running decision says about candidate policy `i`: one that matches like a
    /// running policy before the decider did not match, like the decider did.
    fn inferred(&self, i: usize, decider: Decider) -> Option<Tri> {
        let j = self.same_match[i]?;
        match decider {
            Decider::Nobody => Some(Tri::No),
            Decider::Policy(p) if j < p => Some(Tri::No),
            Decider::Policy(p) if j == p => Some(Tri::Yes),
            _ => None,
        }
    }

    /// What the running policies do with the job of `queue` now: a due requeue is held when
    /// the index says so or the target queue, as read, holds it.
    fn running_outcome(
        &self,
        row: &Row<'_>,
        decider: Decider,
        facts: &JobFacts,
        queue: &str,
    ) -> Outcome {
        let policy = match decider {
            Decider::Policy(p) => &self.running[p],
            _ => return from_state(row, None),
        };
        if row.state == State::Undecodable {
            return Outcome::Undecodable;
        }
        if let Action::Retry(spec) = &policy.action {
            if needs_created_at(spec, row) {
                // The scan decided it with `created_at` read: its verdict stands.
                return from_state(row, Some(&policy.action));
            }
        }
        match Outcome::of(&policy::apply(&policy.action, facts, self.now)) {
            Outcome::RetryNow
                if row.state == State::Held
                    || self.worlds.holds(&policy.action, queue) == Ok(true) =>
            {
                Outcome::Held
            }
            outcome => outcome,
        }
    }

    /// What the candidate policies would do with the job of `queue` now (`running`: what the
    /// running policies do, as `decider` decided it).
    fn candidate_verdict(
        &self,
        row: &Row<'_>,
        (decider, running): (Decider, Outcome),
        plan: Plan,
        facts: &JobFacts,
        queue: &str,
    ) -> Verdict {
        if row.state == State::Undecodable {
            return Verdict::Decided {
                outcome: Outcome::Undecodable,
                policy: None,
            };
        }
        let chosen = match plan {
            Err(fact) => return Verdict::Uncertain(fact),
            Ok(chosen) => chosen,
        };
        if let (Some(i), Decider::Policy(p)) = (chosen, decider) {
            if self.same_policy[i] == Some(p) {
                return Verdict::Decided {
                    outcome: running,
                    policy: chosen,
                };
            }
        }
        // A retry policy, or none, leaves stopped and succeeded jobs to the operator.
        let retry = chosen.map(|i| &self.candidate[i].action);
        if !matches!(retry, Some(Action::Purge { .. } | Action::Ignore))
            && !self.knows_status(decider)
        {
            return Verdict::Uncertain(Unknown::RqStatus);
        }
        let outcome = match retry {
            None => from_state(row, None),
            Some(Action::Retry(spec)) if needs_created_at(spec, row) => {
                return Verdict::Uncertain(Unknown::CreatedAt)
            }
            Some(action) => match Outcome::of(&policy::apply(action, facts, self.now)) {
                Outcome::RetryNow => match self.worlds.holds(action, queue) {
                    Ok(true) => Outcome::Held,
                    Ok(false) => Outcome::RetryNow,
                    Err(fact) => return Verdict::Uncertain(fact),
                },
                outcome => outcome,
            },
        };
        Verdict::Decided {
            outcome,
            policy: chosen,
        }
    }

    /// Whether the running decision established if RQ stopped the job or its last run
    /// succeeded: a retry policy or none decided it (and would have said so).
    fn knows_status(&self, decider: Decider) -> bool {
        match decider {
            Decider::Nobody => true,
            Decider::Policy(p) => matches!(self.running[p].action, Action::Retry(_)),
            Decider::Stale => false,
        }
    }
}

/// What the index's state says the job undergoes, given the deciding policy's action.
fn from_state(row: &Row<'_>, action: Option<&Action>) -> Outcome {
    match row.state {
        State::Due => match action {
            Some(Action::Purge { .. }) => Outcome::Purge,
            Some(Action::Retry(spec)) if row.attempts >= spec.max_attempts => {
                match spec.on_exhausted {
                    policy::OnExhausted::Purge => Outcome::Purge,
                    policy::OnExhausted::Keep => Outcome::Exhaust,
                }
            }
            _ => Outcome::RetryNow,
        },
        State::Waiting => match action {
            Some(Action::Purge { .. }) => Outcome::PurgeLater,
            _ => Outcome::Wait,
        },
        State::Exhausted => Outcome::Exhaust,
        State::Unmatched => Outcome::Unmatched,
        State::Ignored => Outcome::Ignore,
        State::Undecodable => Outcome::Undecodable,
        State::Stopped => Outcome::Stopped,
        State::Succeeded => Outcome::Succeeded,
        State::Held => Outcome::Held,
    }
}

/// Whether `m` matches the jobs of a group, from the group's names alone. A field that does
/// not match settles it, whatever else is unknown.
fn tri(m: &Matcher, names: GroupNames<'_>) -> Tri {
    let mut unknown = None;
    if m.queues.as_ref().is_some_and(|q| !q.is_match(names.queue)) {
        return Tri::No;
    }
    if let Some(functions) = &m.functions {
        match names.function {
            Known::Is(f) if functions.is_match(f) => {}
            Known::Unknown => unknown = unknown.or(Some(Unknown::Function)),
            _ => return Tri::No,
        }
    }
    if let Some(exceptions) = &m.exceptions {
        match names.exception {
            Known::Is(x) if exceptions.iter().any(|p| p.is_match(x)) => {}
            Known::Unknown => unknown = unknown.or(Some(Unknown::Exception)),
            _ => return Tri::No,
        }
    }
    if m.error_pattern.is_some() {
        unknown = unknown.or(Some(Unknown::Traceback));
    }
    if m.meta.is_some() {
        unknown = unknown.or(Some(Unknown::Meta));
    }
    unknown.map_or(Tri::Yes, Tri::Unknown)
}
