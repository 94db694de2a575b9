//! The answer of a simulation: totals, each candidate policy's share, and every group with
//! what the running and the candidate policies do with its jobs, changed groups first.

use std::collections::BTreeMap;
use std::hash::Hash;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{GroupLabel, GroupSums, Outcome, Tally, Unknown};
use crate::policy::Policy;

/// What a candidate policy file would do with the failed jobs of now. Nothing is written.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    /// The moment both files were applied at.
    pub as_of: DateTime<Utc>,
    /// `index` (the daemon's failure index, as of its last complete scan) or `redis` (every
    /// failed job read now, `check-config --simulate`).
    pub source: &'static str,
    /// For `index`: when the index was last complete (kept current since by notifications
    /// and writes); null for `redis`.
    pub index_as_of: Option<DateTime<Utc>>,
    /// Failed jobs looked at.
    pub jobs: u64,
    /// Jobs by what the running policies do with them.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub running: BTreeMap<Outcome, u64>,
    /// Jobs by what the candidate policies would do with them (uncertain ones left out).
    #[schema(value_type = BTreeMap<String, u64>)]
    pub candidate: BTreeMap<Outcome, u64>,
    /// Jobs whose candidate decision depends on a fact the source does not hold.
    pub uncertain: u64,
    /// The uncertain jobs by the fact that is missing.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub uncertain_because: BTreeMap<Unknown, u64>,
    /// Jobs whose outcome would change (uncertain ones not counted).
    pub changed_jobs: u64,
    /// Groups with a job whose outcome would change.
    pub changed_groups: u64,
    /// The candidate policies in evaluation order, with the jobs each would decide.
    pub policies: Vec<PolicyTally>,
    /// Every group (queue × function × exception type), changed ones first, then largest first.
    pub groups: Vec<GroupDiff>,
    /// Config sections of the candidate file that a simulation does not look at.
    pub ignored_sections: Vec<&'static str>,
}

/// One candidate policy's share.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyTally {
    pub name: String,
    /// `retry`, `purge` or `ignore`.
    pub action: &'static str,
    /// Jobs it would decide (uncertain ones not counted).
    pub jobs: u64,
    #[schema(value_type = BTreeMap<String, u64>)]
    pub outcomes: BTreeMap<Outcome, u64>,
}

/// One group's jobs under the running and the candidate policies.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupDiff {
    pub queue: String,
    /// Null when the jobs have none, or when it is not known (`known` false).
    pub function: Option<String>,
    pub exception: Option<String>,
    /// False while the function or exception type of the group was not read.
    pub known: bool,
    pub jobs: u64,
    #[schema(value_type = BTreeMap<String, u64>)]
    pub running: BTreeMap<Outcome, u64>,
    #[schema(value_type = BTreeMap<String, u64>)]
    pub candidate: BTreeMap<Outcome, u64>,
    pub uncertain: u64,
    #[schema(value_type = BTreeMap<String, u64>)]
    pub uncertain_because: BTreeMap<Unknown, u64>,
    /// Jobs whose outcome would change.
    pub changed: u64,
    /// How they would change, largest first.
    pub moves: Vec<Move>,
    /// Candidate policy name (`""`: none matches) → jobs it would decide.
    pub policies: BTreeMap<String, u64>,
}

/// Jobs whose outcome goes from `from` (running) to `to` (candidate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Move {
    pub from: Outcome,
    pub to: Outcome,
    pub jobs: u64,
}

/// The nonzero counts of an array indexed like `all`.
fn nonzero<T: Ord + Copy>(all: &[T], counts: &[u64]) -> BTreeMap<T, u64> {
    all.iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (*k, *n))
        .collect()
}

fn add_into<T: Ord + Copy>(total: &mut BTreeMap<T, u64>, part: &BTreeMap<T, u64>) {
    for (k, n) in part {
        *total.entry(*k).or_default() += n;
    }
}

impl<K: Hash + Eq> Tally<K> {
    /// The answer, with each group named by `label`.
    pub fn report(
        self,
        label: impl Fn(&K) -> GroupLabel,
        candidate: &[Policy],
        as_of: DateTime<Utc>,
        source: &'static str,
    ) -> Report {
        let mut policies: Vec<PolicyTally> = candidate
            .iter()
            .map(|p| PolicyTally {
                name: p.name.clone(),
                action: p.action.kind(),
                jobs: 0,
                outcomes: BTreeMap::new(),
            })
            .collect();
        let mut groups: Vec<GroupDiff> = self
            .groups
            .iter()
            .map(|(key, sums)| {
                tally_policies(&mut policies, sums);
                group_diff(label(key), sums, candidate)
            })
            .collect();
        groups.sort_by(|a, b| {
            (b.changed > 0, b.jobs, &a.queue, &a.function, &a.exception).cmp(&(
                a.changed > 0,
                a.jobs,
                &b.queue,
                &b.function,
                &b.exception,
            ))
        });
        totals(groups, policies, as_of, source)
    }
}

/// Adds a group's candidate decisions to the policies' shares.
fn tally_policies(policies: &mut [PolicyTally], sums: &GroupSums) {
    for (&(p, outcome), &n) in sums.policies.iter() {
        let Some(tally) = p.map(|p| &mut policies[p]) else {
            continue;
        };
        tally.jobs += n;
        *tally.outcomes.entry(outcome).or_default() += n;
    }
}

fn group_diff(label: GroupLabel, sums: &GroupSums, candidate: &[Policy]) -> GroupDiff {
    let mut moves: Vec<Move> = sums
        .moves
        .iter()
        .map(|(&(from, to), &jobs)| Move { from, to, jobs })
        .collect();
    moves.sort_by(|a, b| (b.jobs, a.from, a.to).cmp(&(a.jobs, b.from, b.to)));
    GroupDiff {
        queue: label.queue,
        function: label.function,
        exception: label.exception,
        known: label.known,
        jobs: sums.jobs,
        running: nonzero(&Outcome::ALL, &sums.running),
        candidate: nonzero(&Outcome::ALL, &sums.candidate),
        uncertain: sums.uncertain.iter().sum(),
        uncertain_because: nonzero(&Unknown::ALL, &sums.uncertain),
        changed: moves.iter().map(|m| m.jobs).sum(),
        moves,
        policies: sums
            .policies
            .iter()
            .fold(BTreeMap::new(), |mut by, ((p, _), n)| {
                let name = p.map_or(String::new(), |p| candidate[p].name.clone());
                *by.entry(name).or_default() += n;
                by
            }),
    }
}

fn totals(
    groups: Vec<GroupDiff>,
    policies: Vec<PolicyTally>,
    as_of: DateTime<Utc>,
    source: &'static str,
) -> Report {
    let mut report = Report {
        as_of,
        source,
        index_as_of: None,
        jobs: 0,
        running: BTreeMap::new(),
        candidate: BTreeMap::new(),
        uncertain: 0,
        uncertain_because: BTreeMap::new(),
        changed_jobs: 0,
        changed_groups: 0,
        policies,
        groups: Vec::new(),
        ignored_sections: Vec::new(),
    };
    for g in &groups {
        report.jobs += g.jobs;
        add_into(&mut report.running, &g.running);
        add_into(&mut report.candidate, &g.candidate);
        report.uncertain += g.uncertain;
        add_into(&mut report.uncertain_because, &g.uncertain_because);
        report.changed_jobs += g.changed;
        report.changed_groups += u64::from(g.changed > 0);
    }
    report.groups = groups;
    report
}
