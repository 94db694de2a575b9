//! Every instance's index follows every instance's writes: after each write batch, the one
//! write path (the actor in `actions`, a layer up) PUBLISHes what left the failed registries
//! and what was marked exhausted on `<prefix>:retryd:index-events`; every instance subscribes
//! (with the keyspace notifications) and applies what the others did. A standby's index thus
//! forgets a job the moment the active instance requeues it, and the active's forgets one an
//! operator retried on a standby. One PUBLISH per write batch, nothing when idle; a message
//! lost on the way (a reconnect) is repaired by the next full scan, as before.
//!
//! See: issue 12 (standbys answer from their own index) and issue 11 ("standbys keep whatever
//! they need for the HTTP API current cheaply").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::LiveIndex;

/// One failure a write batch settled: (queue, job id, when it failed). The failure time makes
/// the event precise: a job that failed again since is a new failure, which the event leaves.
pub type WrittenFailure = (String, String, DateTime<Utc>);

/// One write batch's effect on the failed registries, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEvent {
    /// The instance that wrote (it applied the batch to its own index already).
    pub from: String,
    /// Failures no longer in their failed registry: requeued, purged, or found gone by the
    /// write.
    #[serde(default)]
    pub gone: Vec<WrittenFailure>,
    /// Failures now marked exhausted.
    #[serde(default)]
    pub exhausted: Vec<WrittenFailure>,
}

impl IndexEvent {
    pub fn is_empty(&self) -> bool {
        self.gone.is_empty() && self.exhausted.is_empty()
    }

    /// Applies another instance's event to `index`; returns how many jobs it named, or why the
    /// payload is not an event. An instance's own events are ignored (0).
    pub fn apply(payload: &[u8], own: &str, index: &LiveIndex) -> Result<usize, String> {
        let event: IndexEvent = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        if event.from == own {
            return Ok(0);
        }
        index.apply_writes(each(&event.gone), each(&event.exhausted));
        Ok(event.gone.len() + event.exhausted.len())
    }
}

fn each(list: &[WrittenFailure]) -> impl Iterator<Item = (&str, &str, DateTime<Utc>)> {
    list.iter()
        .map(|(q, id, at)| (q.as_str(), id.as_str(), *at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Known, Observation, Order, Selection, State};

    fn states(index: &LiveIndex) -> Vec<(String, State)> {
        let reading = index.read().expect("built");
        let mut jobs: Vec<(String, State)> = reading
            .page(&Selection::default(), Order::Newest, 0, 10)
            .jobs
            .into_iter()
            .map(|j| (j.job_id, j.state))
            .collect();
        jobs.sort();
        jobs
    }

    #[test]
    fn another_instances_event_removes_and_marks_its_own_is_ignored() {
        let index = LiveIndex::default();
        index.begin_scan(3);
        let now = chrono::Utc::now();
        let observations: Vec<Observation> = ["a", "b", "c"]
            .iter()
            .map(|id| Observation {
                queue: "q",
                job_id: id,
                score: 1e10,
                failed_at: now,
                function: Known::Is("app.f"),
                exception: Known::Is("ValueError"),
                attempts: 0,
                exhausted: false,
                policy: None,
                state: State::Unmatched,
                next_due: None,
                text: Known::Unknown,
            })
            .collect();
        index.observe_all(&observations);
        index.end_scan(&["q".to_string()], now);
        let event = IndexEvent {
            from: "other".into(),
            gone: vec![
                ("q".into(), "a".into(), now),
                // c failed again since the other instance's write: a new failure, left.
                ("q".into(), "c".into(), now - chrono::Duration::seconds(60)),
            ],
            exhausted: vec![("q".into(), "b".into(), now)],
        };
        let payload = serde_json::to_vec(&event).unwrap();
        assert_eq!(IndexEvent::apply(&payload, "me", &index), Ok(3));
        assert_eq!(
            states(&index),
            [
                ("b".to_string(), State::Exhausted),
                ("c".to_string(), State::Unmatched)
            ]
        );
        // Its own event was applied when it wrote: ignored here.
        let own = IndexEvent {
            from: "me".into(),
            gone: vec![("q".into(), "c".into(), now)],
            exhausted: vec![],
        };
        let payload = serde_json::to_vec(&own).unwrap();
        assert_eq!(IndexEvent::apply(&payload, "me", &index), Ok(0));
        assert_eq!(states(&index).len(), 2);
        assert!(IndexEvent::apply(b"{not json", "me", &index).is_err());
        assert!(IndexEvent::apply(b"\xff\xfe", "me", &index).is_err());
        assert_eq!(states(&index).len(), 2);
    }
}
