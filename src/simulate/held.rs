//! `hold_when` in a simulation: a due requeue that a policy's `hold_when` holds back is `held`,
//! not `retry_now`. Whether it holds is judged by [`crate::hold::hold_reason`], the rule the
//! supervisor and `explain` apply, over the target queues as read once before the pass
//! ([`QueueWorlds`]); the pass itself stays pure.

use std::collections::HashMap;

use super::Unknown;
use crate::hold::{hold_reason, QueueWorld};
use crate::policy::{Action, Policy};

/// The target queues' workers and lengths, as read for one simulation.
#[derive(Debug, Clone, Default)]
pub enum QueueWorlds {
    /// Read: a queue absent from the map has no live worker and no job, as the supervisor
    /// takes it.
    Read(HashMap<String, QueueWorld>),
    /// Not read: whether a `hold_when` holds is not known (counted as uncertain, never guessed).
    #[default]
    Unread,
}

/// The queues a requeue by one of `policies` may target, among jobs of `queues`: the
/// `requeue_to` of a policy with `hold_when`, or every queue when such a policy requeues into
/// the job's origin. Empty when no policy has `hold_when` (nothing to read).
pub fn hold_targets<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    queues: &[String],
) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    for p in policies {
        let Action::Retry(spec) = &p.action else {
            continue;
        };
        if spec.hold_when.is_none() {
            continue;
        }
        let more = match &spec.requeue_to {
            Some(q) => std::slice::from_ref(q),
            None => queues,
        };
        for q in more {
            if !targets.contains(q) {
                targets.push(q.clone());
            }
        }
    }
    targets
}

impl QueueWorlds {
    /// Whether `action`'s `hold_when` holds back a due requeue of a job of queue `origin`:
    /// `Ok(false)` when the action has none, `Err` when it has one and the worlds are unread.
    pub fn holds(&self, action: &Action, origin: &str) -> Result<bool, Unknown> {
        let Action::Retry(spec) = action else {
            return Ok(false);
        };
        let Some(hold) = &spec.hold_when else {
            return Ok(false);
        };
        let target = spec.requeue_to.as_deref().unwrap_or(origin);
        match self {
            QueueWorlds::Read(worlds) => {
                let world = worlds.get(target).copied().unwrap_or_default();
                Ok(hold_reason(hold, target, world).is_some())
            }
            QueueWorlds::Unread => Err(Unknown::Hold),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_policy_file;

    fn policies(text: &str) -> Vec<Policy> {
        parse_policy_file(text, "test").unwrap().policies
    }

    #[test]
    fn only_policies_with_hold_when_need_their_target_queues_read() {
        let p = policies(
            "[[policy]]\nname = \"a\"\nexceptions = [\"A\"]\n\
             [[policy]]\nname = \"b\"\nexceptions = [\"B\"]\nrequeue_to = \"slow\"\nhold_when = { no_workers = true }\n",
        );
        let queues = vec!["emails".to_string(), "slow".to_string()];
        assert_eq!(hold_targets(&p, &queues), vec!["slow".to_string()]);
        let p = policies("[[policy]]\nname = \"c\"\nhold_when = { queue_longer_than = 5 }\n");
        assert_eq!(hold_targets(&p, &queues), queues);
    }

    #[test]
    fn the_supervisors_rule_decides_and_unread_worlds_are_not_guessed() {
        let p = policies("[[policy]]\nname = \"c\"\nhold_when = { queue_longer_than = 5 }\n");
        let long = QueueWorld {
            live_workers: 1,
            length: 6,
        };
        let short = QueueWorld {
            live_workers: 1,
            length: 5,
        };
        let read = |w| QueueWorlds::Read(HashMap::from([("emails".to_string(), w)]));
        assert_eq!(read(long).holds(&p[0].action, "emails"), Ok(true));
        assert_eq!(read(short).holds(&p[0].action, "emails"), Ok(false));
        assert_eq!(
            QueueWorlds::Unread.holds(&p[0].action, "emails"),
            Err(Unknown::Hold)
        );
        let plain = policies("[[policy]]\nname = \"d\"\n");
        assert_eq!(
            QueueWorlds::Unread.holds(&plain[0].action, "emails"),
            Ok(false)
        );
    }
}
