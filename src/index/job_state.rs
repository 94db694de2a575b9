//! The one job-state type: where a failed job stands. The index keeps it per job, the scan
//! loop's remembered verdicts map to it, the API filters by it (the `state` parameter) and
//! answers with it (a listed job's `state`, a group's and a dry run's `by_state`). Its wire
//! names are serde's (snake_case); [`State::name`] is the same table for logs and metrics,
//! and a test holds the two equal.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a failed job stands, as the deciding policy sees it: the one job-state type, which
/// the index keeps, the scan loop's remembered verdicts map to, and the API filters by (the
/// listing's `state` parameter) and answers with. The schema's description is the API's.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(
    description = "Where a failed job stands: a write is due now, it waits (backoff, `purge_after`), it is
exhausted, no policy matches, an `ignore` policy matches, it cannot be decoded, RQ marks it
stopped, or its last run succeeded (the last two are never retried automatically); `held`:
a requeue is due but its policy's `hold_when` holds it back. Bulk actions never touch an
undecodable job: with `undecodable` they select none and count them as skipped."
)]
pub enum State {
    /// A write is due now (requeue, purge or the exhausted mark).
    Due,
    /// In backoff, or waiting for `purge_after`, until `next_due`.
    Waiting,
    /// `max_attempts` used up and marked.
    Exhausted,
    /// No policy matches.
    Unmatched,
    /// An `ignore` policy matches.
    Ignored,
    /// The stored job cannot be decoded (or its hash is gone): listed so an operator sees it,
    /// never acted on.
    Undecodable,
    /// RQ marks it stopped (an operator stopped it): never retried automatically, left to the
    /// operator (who may retry or delete it).
    Stopped,
    /// Its last run succeeded (its newest RQ result is a success, rq/rq#2424): never retried
    /// automatically, left to the operator.
    Succeeded,
    /// A requeue is due, but its policy's `hold_when` holds it back: the target queue has no
    /// live RQ worker or is too long. Requeued as soon as that clears (issue 21).
    Held,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Due,
        State::Waiting,
        State::Exhausted,
        State::Unmatched,
        State::Ignored,
        State::Undecodable,
        State::Stopped,
        State::Succeeded,
        State::Held,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Due => "due",
            State::Waiting => "waiting",
            State::Exhausted => "exhausted",
            State::Unmatched => "unmatched",
            State::Ignored => "ignored",
            State::Undecodable => "undecodable",
            State::Stopped => "stopped",
            State::Succeeded => "succeeded",
            State::Held => "held",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.name() == text)
    }

    /// Where a decision leaves a job, and when its next automatic action is due.
    pub fn of(decision: &crate::policy::Decision) -> (State, Option<DateTime<Utc>>) {
        use crate::policy::Decision;
        match decision {
            Decision::RequeueNow { .. } | Decision::PurgeNow { .. } | Decision::MarkExhausted => {
                (State::Due, None)
            }
            Decision::RequeueAt { due, .. } | Decision::PurgeAt { due } => {
                (State::Waiting, Some(*due))
            }
            Decision::Exhausted => (State::Exhausted, None),
            Decision::Ignore => (State::Ignored, None),
            Decision::Unmatched => (State::Unmatched, None),
            Decision::Stopped => (State::Stopped, None),
            Decision::Succeeded { .. } => (State::Succeeded, None),
        }
    }
}

/// Counts by state as the API sends them (`by_state`): keyed by the state's name and in name
/// order, the order the console lists them in, whatever the order of the enum's variants.
pub fn counts_by_name<S: serde::Serializer>(
    counts: &BTreeMap<State, u64>,
    to: S,
) -> Result<S::Ok, S::Error> {
    let by_name: BTreeMap<&str, u64> = counts.iter().map(|(s, n)| (s.name(), *n)).collect();
    by_name.serialize(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name` and serde's names are one table: logs, metrics and the API spell a state alike.
    #[test]
    fn every_state_is_named_as_serde_sends_it() {
        for state in State::ALL {
            let wire = serde_json::to_value(state).unwrap();
            assert_eq!(wire, state.name(), "{state:?}");
            assert_eq!(serde_json::from_value::<State>(wire).unwrap(), state);
            assert_eq!(State::parse(state.name()), Some(state));
        }
        assert_eq!(State::ALL.map(|s| s as usize), std::array::from_fn(|i| i));
    }

    #[test]
    fn counts_are_sent_by_name_in_name_order() {
        let counts = BTreeMap::from([(State::Waiting, 3), (State::Exhausted, 1), (State::Due, 2)]);
        let mut out = Vec::new();
        counts_by_name(&counts, &mut serde_json::Serializer::new(&mut out)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"due":2,"exhausted":1,"waiting":3}"#
        );
    }
}
