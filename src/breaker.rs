//! Retry storms: a circuit breaker per retry policy. When most of the jobs a policy requeued
//! come back failed within a window (a dependency is down, or the policy matches permanent
//! errors), requeueing more only adds load; the breaker stops that policy's automatic requeues
//! for a cool-down, then lets them through again.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::policy::BreakerSpec;

/// One policy's recent requeues and failed-again observations.
#[derive(Debug, Default)]
struct PolicyBreaker {
    requeues: VecDeque<DateTime<Utc>>,
    failed_again: VecDeque<DateTime<Utc>>,
    open_until: Option<DateTime<Utc>>,
}

/// A breaker that is open now.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct OpenCircuit {
    pub policy: String,
    pub until: DateTime<Utc>,
    /// Requeues in the window when it opened.
    pub requeues: usize,
    /// How many of those failed again.
    pub failed_again: usize,
}

/// Breakers for every policy, keyed by name.
#[derive(Debug, Default)]
pub struct Breakers {
    policies: HashMap<String, PolicyBreaker>,
    open: HashMap<String, OpenCircuit>,
}

fn trim(events: &mut VecDeque<DateTime<Utc>>, since: DateTime<Utc>) {
    while events.front().is_some_and(|t| *t < since) {
        events.pop_front();
    }
}

impl Breakers {
    /// Whether `policy` may requeue now; closes a breaker whose cool-down has passed.
    pub fn allows(&mut self, policy: &str, now: DateTime<Utc>) -> bool {
        let Some(b) = self.policies.get_mut(policy) else {
            return true;
        };
        match b.open_until {
            Some(until) if now < until => false,
            Some(_) => {
                // Cool-down over: start afresh (half-open: the next window decides again).
                *b = PolicyBreaker::default();
                self.open.remove(policy);
                tracing::info!(policy, "circuit breaker closed: requeueing again");
                true
            }
            None => true,
        }
    }

    /// Records what one batch did for `policy` and opens its breaker when the share of retries
    /// that failed again reaches the threshold. Returns true when it opened now.
    pub fn record(
        &mut self,
        policy: &str,
        spec: &BreakerSpec,
        requeued: usize,
        failed_again: usize,
        now: DateTime<Utc>,
    ) -> bool {
        let b = self.policies.entry(policy.to_string()).or_default();
        b.requeues.extend(std::iter::repeat_n(now, requeued));
        b.failed_again
            .extend(std::iter::repeat_n(now, failed_again));
        let since = now - chrono::Duration::from_std(spec.window).unwrap_or(chrono::Duration::MAX);
        trim(&mut b.requeues, since);
        trim(&mut b.failed_again, since);
        let (r, f) = (b.requeues.len(), b.failed_again.len());
        if b.open_until.is_none()
            && r >= spec.min_requeues
            && r > 0
            && f as f64 / r as f64 >= spec.threshold
        {
            let until =
                now + chrono::Duration::from_std(spec.cool_down).unwrap_or(chrono::Duration::MAX);
            b.open_until = Some(until);
            self.open.insert(
                policy.to_string(),
                OpenCircuit {
                    policy: policy.to_string(),
                    until,
                    requeues: r,
                    failed_again: f,
                },
            );
            tracing::warn!(
                policy,
                requeues = r,
                failed_again = f,
                until = %until.to_rfc3339(),
                "circuit breaker opened: most retries fail again; automatic requeues paused for this policy"
            );
            return true;
        }
        false
    }

    /// The breakers open now, by policy name.
    pub fn open(&self) -> Vec<OpenCircuit> {
        let mut open: Vec<OpenCircuit> = self.open.values().cloned().collect();
        open.sort_by(|a, b| a.policy.cmp(&b.policy));
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            window: Duration::from_secs(60),
            threshold: 0.8,
            min_requeues: 10,
            cool_down: Duration::from_secs(300),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn opens_when_most_retries_fail_again_and_closes_after_the_cool_down() {
        let mut b = Breakers::default();
        assert!(!b.record("p", &spec(), 5, 5, at(0)), "below min_requeues");
        assert!(b.record("p", &spec(), 5, 4, at(1)), "9 of 10 failed again");
        assert!(!b.allows("p", at(2)));
        assert_eq!(b.open().len(), 1);
        assert!(b.allows("p", at(302)), "cool-down over");
        assert!(b.open().is_empty());
    }

    #[test]
    fn a_healthy_policy_stays_closed_and_old_events_leave_the_window() {
        let mut b = Breakers::default();
        assert!(
            !b.record("p", &spec(), 10, 5, at(0)),
            "half failing again is below 0.8"
        );
        assert!(
            !b.record("p", &spec(), 0, 8, at(120)),
            "the old requeues left the window: 0 requeues"
        );
        assert!(b.allows("p", at(121)));
        assert!(b.allows("other", at(0)));
    }
}
