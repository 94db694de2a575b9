//! The daemon's one [`FailureIndex`], shared by the scan loop (which builds it), the write path
//! (which keeps it current: read-your-writes) and the HTTP API (which answers from it).
//!
//! An index answers once a full pass has completed on this instance ([`LiveIndex::as_of`]): the
//! active instance's scans, or a standby's observing passes (which read and decide but do not
//! write). Until then the API waits a little for it (see `http::indexed::from_index`). See: issue 12.

use std::sync::{RwLock, RwLockReadGuard};

use chrono::{DateTime, Utc};

use super::{Dropped, FailureIndex, Observation, QueueSpan, State};

#[derive(Debug, Default)]
struct Inner {
    index: FailureIndex,
    /// When the last completed full scan ended; `None` until one has.
    as_of: Option<DateTime<Utc>>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct LiveIndex {
    inner: RwLock<Inner>,
}

/// A read of a built index, and when it was last complete.
pub struct Reading<'a> {
    guard: RwLockReadGuard<'a, Inner>,
    pub as_of: DateTime<Utc>,
}

impl std::ops::Deref for Reading<'_> {
    type Target = FailureIndex;
    fn deref(&self) -> &FailureIndex {
        &self.guard.index
    }
}

impl LiveIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().expect("index lock")
    }

    /// The index, when a full scan has built it (else the caller reads Redis).
    pub fn read(&self) -> Option<Reading<'_>> {
        let guard = self.inner.read().expect("index lock");
        let as_of = guard.as_of?;
        Some(Reading { guard, as_of })
    }

    /// When the index was last complete, if it ever was.
    pub fn as_of(&self) -> Option<DateTime<Utc>> {
        self.inner.read().expect("index lock").as_of
    }

    pub fn begin_scan(&self, expected_total: usize) {
        let mut inner = self.write();
        inner.index.begin_scan();
        inner.index.reserve_total(expected_total);
    }

    /// See [`FailureIndex::still_there`].
    pub fn still_there(&self, queue: &str, job_id: &str, score: f64) -> bool {
        self.write().index.still_there(queue, job_id, score)
    }

    /// See [`FailureIndex::observe`]: whether the failure is new to the index.
    pub fn observe(&self, observation: &Observation<'_>) -> bool {
        self.write().index.observe(observation)
    }

    pub fn observe_all(&self, observations: &[Observation<'_>]) {
        if observations.is_empty() {
            return;
        }
        let mut inner = self.write();
        for o in observations {
            inner.index.observe(o);
        }
    }

    /// Forgets jobs that left their failed registry (requeued, purged, gone); returns the
    /// state each was indexed in (`None`: not indexed).
    pub fn remove_all<'a>(
        &self,
        jobs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<Option<State>> {
        let mut inner = self.write();
        jobs.into_iter()
            .map(|(queue, id)| inner.index.take(queue, id))
            .collect()
    }

    /// Applies another instance's writes: each failure it took out of a registry is removed,
    /// each it marked exhausted is marked, as long as the entry still records that failure.
    pub fn apply_writes<'a>(
        &self,
        gone: impl IntoIterator<Item = (&'a str, &'a str, DateTime<Utc>)>,
        exhausted: impl IntoIterator<Item = (&'a str, &'a str, DateTime<Utc>)>,
    ) {
        let mut inner = self.write();
        for (queue, id, failed_at) in gone {
            inner.index.take_failure(queue, id, failed_at);
        }
        for (queue, id, failed_at) in exhausted {
            inner.index.mark_failure_exhausted(queue, id, failed_at);
        }
    }

    /// Notes jobs just marked exhausted.
    pub fn mark_exhausted_all<'a>(&self, jobs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut inner = self.write();
        for (queue, id) in jobs {
            inner.index.set_state(queue, id, State::Exhausted, true);
        }
    }

    /// Notes jobs a write found stopped or succeeded (the automatic requeue refused them).
    pub fn settle_all<'a>(&self, jobs: impl IntoIterator<Item = (&'a str, &'a str, State)>) {
        let mut inner = self.write();
        for (queue, id, state) in jobs {
            inner.index.settle(queue, id, state);
        }
    }

    /// Each queue's entries and score range, once the index is built (before that there is
    /// nothing to reconcile: the first full pass builds it from Redis).
    pub fn queue_spans(&self) -> Vec<QueueSpan> {
        self.read().map(|r| r.queue_spans()).unwrap_or_default()
    }

    /// See [`FailureIndex::scores_of`].
    pub fn scores_of(&self, queue: &str) -> Vec<f64> {
        self.inner
            .read()
            .expect("index lock")
            .index
            .scores_of(queue)
    }

    /// See [`FailureIndex::drop_absent`].
    pub fn drop_absent(
        &self,
        queue: &str,
        ranges: &[(f64, f64)],
        present: &[(Vec<u8>, f64)],
    ) -> Dropped {
        // Found under the read lock (a pass over every entry); removed under the write lock,
        // each only while it still records the failure found absent.
        let (absent, unknown) = self
            .inner
            .read()
            .expect("index lock")
            .index
            .absent_in(queue, ranges, present);
        if absent.is_empty() {
            return Dropped {
                gone: Vec::new(),
                unknown,
            };
        }
        let mut inner = self.write();
        let gone = absent
            .into_iter()
            .filter_map(|(id, score)| {
                let state = inner.index.take_scored(queue, &id, score)?;
                Some((id, score, state))
            })
            .collect();
        Dropped { gone, unknown }
    }

    /// Marks these jobs `held` (their due requeue is held back by `hold_when`).
    pub fn mark_held_all<'a>(&self, jobs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut inner = self.write();
        for (queue, id) in jobs {
            inner.index.set_held(queue, id);
        }
    }

    /// Ends a completed full scan of `queues` at `at`: from now on the index answers.
    pub fn end_scan(&self, queues: &[String], at: DateTime<Utc>) {
        let mut inner = self.write();
        inner.index.end_scan(queues);
        inner.as_of = Some(at);
    }
}
