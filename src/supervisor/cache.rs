//! What the supervisor remembers between scans, so a re-scan that finds nothing due costs one
//! ZRANGE per window of ids instead of re-reading every job and traceback, and so backoff ends
//! are timed without a second structure.
//!
//! RQ re-adds a job to its failed registry with a new score (failure time + `failure_ttl`) on
//! every failure, so (queue, id, score) names one failure: while it is unchanged, so are the
//! facts the decision was taken on. Entries are dropped when the config changes (a reload may
//! change every decision), when a job becomes due, and when a completed scan no longer sees it.
//! The executor's compare-and-set still guards every write, so a stale entry can delay an
//! action, never duplicate one. One entry is 56 bytes for RQ's default ids (UUIDs, kept as 16
//! bytes in the key) plus the id's text for other ids, in a dense [`JobMap`] whose table adds
//! 5 bytes a slot: 64 bytes a job at five million (issue 24, item 3). A waiting job's entry
//! also holds the write it gets when due (`plan::Plan`, in the same 32 bytes of value), so the
//! due-time pass need not read it again.

use std::collections::HashMap;

use crate::jobmap::JobMap;

pub(crate) use crate::jobkey::JobKey;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::plan::Plan;
use crate::index::State;
use crate::skip::SkipReason;

/// A decision that needs no write now, remembered for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// In backoff (or waiting for `purge_after`) until `due`.
    Waiting {
        due: DateTime<Utc>,
    },
    /// `max_attempts` used up and marked.
    Exhausted,
    Ignored,
    Unmatched,
    /// RQ marks it stopped: left to the operator (issue 21).
    Stopped,
    /// Its last run succeeded: left to the operator (issue 21). Remembered also when the
    /// requeue script found it so, so that it is not read and refused again every scan.
    Succeeded,
    /// A due requeue held back by its policy's `hold_when`: decided again at `due` (about a
    /// second later), so it goes as soon as the target queue can take it.
    Held {
        due: DateTime<Utc>,
    },
}

impl Verdict {
    /// Where the verdict leaves the job, in the index's terms.
    pub fn state(self) -> State {
        match self {
            Verdict::Waiting { .. } => State::Waiting,
            Verdict::Exhausted => State::Exhausted,
            Verdict::Ignored => State::Ignored,
            Verdict::Unmatched => State::Unmatched,
            Verdict::Stopped => State::Stopped,
            Verdict::Succeeded => State::Succeeded,
            Verdict::Held { .. } => State::Held,
        }
    }

    /// When the job is decided again (waiting and held jobs).
    fn due(self) -> Option<DateTime<Utc>> {
        match self {
            Verdict::Waiting { due } | Verdict::Held { due } => Some(due),
            _ => None,
        }
    }

    /// The verdict a job in `state` was remembered with (`due_ms` for waiting and held jobs).
    fn of(state: State, due_ms: i64) -> Verdict {
        match state {
            State::Waiting => Verdict::Waiting { due: time(due_ms) },
            State::Held => Verdict::Held { due: time(due_ms) },
            State::Exhausted => Verdict::Exhausted,
            State::Ignored => Verdict::Ignored,
            State::Stopped => Verdict::Stopped,
            State::Succeeded => Verdict::Succeeded,
            // Never remembered: a due job is written, an undecodable one is not decided.
            State::Unmatched | State::Due | State::Undecodable => Verdict::Unmatched,
        }
    }
}

/// One remembered failure, packed (32 bytes plus the id) because a daemon may remember
/// hundreds of thousands of them.
#[derive(Debug, Clone, Copy)]
struct Packed {
    score: f64,
    /// Microseconds, RQ's precision: a plan's compare-and-set rebuilds `ended_at` from it.
    failed_at_us: i64,
    /// The due time for `Waiting` and `Held`, else 0.
    due_ms: i64,
    /// The scan that last saw it (wrapping; a completed scan drops every entry it did not see).
    seen: u16,
    queue: u16,
    /// The verdict's [`State`] (one byte); with `due_ms`, the verdict.
    state: State,
    /// The write a waiting or held job gets when due, when three bytes can say it.
    plan: Option<Plan>,
}

/// A remembered failure as the supervisor uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub failed_at: DateTime<Utc>,
    pub verdict: Verdict,
}

/// A job whose backoff has ended.
#[derive(Debug, Clone, PartialEq)]
pub struct DueJob {
    pub queue: Arc<str>,
    pub job_id: Box<str>,
    /// Its remembered write, when it has one: written without reading the job first.
    pub planned: Option<DuePlan>,
}

/// A due job's remembered write and what it was remembered with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DuePlan {
    pub plan: Plan,
    /// The registry score that named the failure.
    pub score: f64,
    pub failed_at: DateTime<Utc>,
    /// The config generation it was planned under: valid only under the same one.
    pub generation: u64,
}

/// Remembered verdicts by job id, valid for one config snapshot (its
/// [`generation`](crate::state::Snapshot::generation)).
#[derive(Debug, Default)]
pub struct FactsCache {
    /// 0 until the first scan: generations start at 1.
    generation: u64,
    scan: u16,
    /// Dense (see [`JobMap`]): 64 bytes a job at five million where a `HashMap` took 96.
    entries: JobMap<Packed>,
    queues: Vec<Arc<str>>,
    queue_index: HashMap<Arc<str>, u16>,
    next_due_ms: Option<i64>,
    /// The failures a pass is reading or writing now, so that the due pass (on its own task)
    /// and a scan never both act on one (see [`Claim`]).
    claims: HashMap<JobKey, Claim>,
    /// How many claims the last prune left.
    claims_after_prune: usize,
}

/// How long a failure the due pass finished with stays claimed: a scan whose listing was
/// taken before the due pass's write (the entry is still in it) must not read the failure and
/// count its absence as a conflict. The gap between a listing and its claims is one step of
/// one task; two seconds is far beyond it, and short enough not to hold up a new failure.
pub const CLAIM_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Who is acting on a failure outside the remembered verdicts, by its registry score.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Claim {
    /// A scan (full or notified) is reading and deciding it.
    Scan { score: f64 },
    /// A scan finished with it at this instant: a pass whose listing is older must not read
    /// it (its write may have come after that listing).
    ScanDone { score: f64, at: std::time::Instant },
    /// The due pass is writing it or reading it again.
    Due { score: f64 },
    /// The due pass finished with it at this instant (see [`CLAIM_LINGER`]).
    DueDone { score: f64, at: std::time::Instant },
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn time_us(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl FactsCache {
    /// Starts a scan under config `generation`; a different generation forgets everything.
    pub fn begin_scan(&mut self, generation: u64) {
        self.align(generation);
        self.scan = self.scan.wrapping_add(1);
    }

    /// Forgets everything if it was remembered under another config `generation` (a partial
    /// pass uses this: it marks what it sees as seen by the current scan).
    pub fn align(&mut self, generation: u64) {
        if self.generation != generation {
            self.entries.clear();
            self.next_due_ms = None;
            self.generation = generation;
        }
    }

    /// Like [`align`](Self::align), but only to a later generation: the due pass runs beside
    /// the scans, and one that began before a reload must not take the cache back to the
    /// configuration the scans already left (what it decided is then not remembered).
    pub fn align_forward(&mut self, generation: u64) {
        if generation > self.generation {
            self.align(generation);
        }
    }

    /// The config generation the remembered verdicts belong to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Makes room for `n` entries at once, so the table does not grow step by step (each step
    /// briefly holds the old and the new table).
    pub fn reserve_total(&mut self, n: usize) {
        self.entries.reserve(n.saturating_sub(self.entries.len()));
    }

    fn unpack(p: &Packed) -> CacheEntry {
        CacheEntry {
            failed_at: time_us(p.failed_at_us),
            verdict: Verdict::of(p.state, p.due_ms),
        }
    }

    /// The remembered entry for this exact failure, marked as seen by the current scan.
    pub fn hit(&mut self, queue: &str, job_id: &str, score: f64) -> Option<CacheEntry> {
        let scan = self.scan;
        let index = *self.queue_index.get(queue)?;
        let entry = self
            .entries
            .get_mut(&JobKey::new(job_id))
            .filter(|e| e.score == score && e.queue == index)?;
        entry.seen = scan;
        Some(Self::unpack(entry))
    }

    /// Remembers a decision taken in the current scan (or a due-time pass), with the write a
    /// waiting or held job gets when due (`plan`). Beyond 65,536 distinct queues nothing more
    /// is remembered (those jobs are simply read every scan).
    pub fn remember(
        &mut self,
        queue: &Arc<str>,
        job_id: &str,
        score: f64,
        failed_at: DateTime<Utc>,
        verdict: Verdict,
        plan: Option<Plan>,
    ) {
        let index = match self.queue_index.get(queue) {
            Some(i) => *i,
            None => {
                let Ok(i) = u16::try_from(self.queues.len()) else {
                    return;
                };
                self.queues.push(queue.clone());
                self.queue_index.insert(queue.clone(), i);
                i
            }
        };
        let due_ms = verdict.due().map_or(0, ms);
        if verdict.due().is_some() {
            self.next_due_ms = Some(self.next_due_ms.map_or(due_ms, |d| d.min(due_ms)));
        }
        let packed = Packed {
            score,
            failed_at_us: failed_at.timestamp_micros(),
            due_ms,
            seen: self.scan,
            queue: index,
            state: verdict.state(),
            plan: plan.filter(|_| verdict.due().is_some()),
        };
        self.entries.insert(JobKey::new(job_id), packed);
    }

    pub fn forget(&mut self, job_id: &str) {
        self.entries.swap_remove(&JobKey::new(job_id));
    }

    /// After a completed scan: drops what it did not see (the job left the registry).
    pub fn end_scan(&mut self) {
        let scan = self.scan;
        self.entries.retain(|_, e| e.seen == scan);
        self.recompute_next_due();
        self.prune_claims();
    }

    /// The earliest backoff end among remembered jobs.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.next_due_ms.map(time)
    }

    /// Removes and returns every waiting job due at or before `now`, and claims each for the
    /// due pass (until [`release_due`](Self::release_due)); a job a scan is reading now is
    /// left to that scan.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<DueJob> {
        self.prune_claims();
        let now_ms = ms(now);
        let claims = &mut self.claims;
        // Found first, then taken one by one: `retain` would rebuild the whole hash table
        // whenever it removes anything, on every due pass.
        let ready: Vec<usize> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (id, e))| {
                matches!(e.state, State::Waiting | State::Held)
                    && e.due_ms <= now_ms
                    && !matches!(claims.get(*id), Some(Claim::Scan { .. }))
            })
            .map(|(at, _)| at)
            .collect();
        let mut due = Vec::with_capacity(ready.len());
        // From the last: a swap_remove moves only entries after the ones still to take.
        for at in ready.into_iter().rev() {
            let (id, e) = self.entries.swap_remove_index(at);
            claims.insert(id.clone(), Claim::Due { score: e.score });
            due.push(DueJob {
                queue: self.queues[usize::from(e.queue)].clone(),
                job_id: id.to_id(),
                planned: e.plan.map(|plan| DuePlan {
                    plan,
                    score: e.score,
                    failed_at: time_us(e.failed_at_us),
                    generation: self.generation,
                }),
            });
        }
        due.reverse();
        self.recompute_next_due();
        due
    }

    /// Claims a failure a scan listed at `listed` and is about to read (`false`: the due
    /// pass or another scan is acting on this failure, the due pass just did, or another
    /// scan finished with it after this listing was taken; the scan leaves it alone). A
    /// remembered verdict it had is dropped: the scan decides it afresh, and the due pass
    /// must not take it meanwhile. Notified passes run beside the full scans, so two scans
    /// may list one failure.
    pub fn claim_for_scan(&mut self, job_id: &str, score: f64, listed: std::time::Instant) -> bool {
        let key = JobKey::new(job_id);
        match self.claims.get(&key) {
            Some(Claim::Due { score: s } | Claim::Scan { score: s }) if *s == score => {
                return false
            }
            Some(Claim::DueDone { score: s, at }) if *s == score && at.elapsed() < CLAIM_LINGER => {
                return false
            }
            Some(Claim::ScanDone { score: s, at }) if *s == score && *at > listed => return false,
            _ => {}
        }
        self.entries.swap_remove(&key);
        self.claims.insert(key, Claim::Scan { score });
        true
    }

    /// Ends a scan's claims on these failures: each is remembered as done for
    /// [`CLAIM_LINGER`] more, for a pass that listed it before now.
    pub fn release_scan<'a>(&mut self, job_ids: impl IntoIterator<Item = &'a str>) {
        let at = std::time::Instant::now();
        for id in job_ids {
            if let Some(claim) = self.claims.get_mut(&JobKey::new(id)) {
                if let Claim::Scan { score } = *claim {
                    *claim = Claim::ScanDone { score, at };
                }
            }
        }
        // A full scan releases every failure it reads: pruned as they pile up, not only
        // when a due pass runs (at five million jobs, millions of done claims otherwise).
        if self.claims.len() >= 2 * self.claims_after_prune.max(1024) {
            self.prune_claims();
        }
    }

    /// Ends the due pass's claims on these failures: each stays claimed for
    /// [`CLAIM_LINGER`] more.
    pub fn release_due<'a>(&mut self, job_ids: impl IntoIterator<Item = &'a str>) {
        let at = std::time::Instant::now();
        for id in job_ids {
            if let Some(claim) = self.claims.get_mut(&JobKey::new(id)) {
                if let Claim::Due { score } = *claim {
                    *claim = Claim::DueDone { score, at };
                }
            }
        }
    }

    /// How many failures are claimed (in flight, or lingering after the due pass).
    pub fn claimed(&self) -> usize {
        self.claims.len()
    }

    /// Drops the done claims older than [`CLAIM_LINGER`].
    fn prune_claims(&mut self) {
        self.claims.retain(|_, c| {
            !matches!(c, Claim::DueDone { at, .. } | Claim::ScanDone { at, .. } if at.elapsed() >= CLAIM_LINGER)
        });
        self.claims_after_prune = self.claims.len();
    }

    fn recompute_next_due(&mut self) {
        self.next_due_ms = self
            .entries
            .values()
            .filter(|e| matches!(e.state, State::Waiting | State::Held))
            .map(|e| e.due_ms)
            .min();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Which failures recent scans skipped, and why, so that `skipped_total{reason}` counts a job
/// once when it becomes skipped for a reason instead of on every scan that sees it still
/// skipped (a corrupt job, a job held back by the pause or by an open circuit, an expired
/// entry RQ has not cleaned up yet). Keyed like the verdicts by (queue, id, score): a new
/// failure of the same job is a new event. Unlike the verdicts it survives reloads: a corrupt
/// job is corrupt under any policy. Entries a completed scan did not see skipped are dropped,
/// so a job skipped again later is counted again. See: issue 11.
#[derive(Debug, Default)]
pub struct SkipMemory {
    scan: u32,
    entries: HashMap<(u16, JobKey), Skip>,
    queue_index: HashMap<Arc<str>, u16>,
}

#[derive(Debug, Clone, Copy)]
struct Skip {
    score: f64,
    reason: SkipReason,
    /// The scan that last saw it skipped.
    seen: u32,
}

impl SkipMemory {
    /// Starts a full scan (see [`end_scan`](Self::end_scan)).
    pub fn begin_scan(&mut self) {
        self.scan = self.scan.wrapping_add(1);
    }

    /// Notes that this failure is skipped for `reason` now; `true` when that is news (it was
    /// not skipped for that reason when last seen). Beyond 65,536 queues
    /// nothing more is remembered and every skip counts as news.
    pub fn note(&mut self, queue: &str, member: &[u8], score: f64, reason: SkipReason) -> bool {
        let Some(queue) = self.queue_index(queue) else {
            return true;
        };
        let skip = Skip {
            score,
            reason,
            seen: self.scan,
        };
        match self
            .entries
            .insert((queue, JobKey::from_bytes(member)), skip)
        {
            Some(before) => before.score != score || before.reason != reason,
            None => true,
        }
    }

    /// Whether this failure is remembered as skipped for `reason` already (nothing noted).
    pub fn knows(&self, queue: &str, member: &[u8], score: f64, reason: SkipReason) -> bool {
        let Some(queue) = self.queue_index.get(queue) else {
            return false;
        };
        self.entries
            .get(&(*queue, JobKey::from_bytes(member)))
            .is_some_and(|e| e.score == score && e.reason == reason)
    }

    fn queue_index(&mut self, queue: &str) -> Option<u16> {
        if let Some(i) = self.queue_index.get(queue) {
            return Some(*i);
        }
        let i = u16::try_from(self.queue_index.len()).ok()?;
        self.queue_index.insert(Arc::from(queue), i);
        Some(i)
    }

    /// After a completed full scan: forgets the skips it did not see (the job left the
    /// registry, was acted on, or is decided on now).
    pub fn end_scan(&mut self) {
        let scan = self.scan;
        self.entries.retain(|_, e| e.seen == scan);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn every_verdict_is_remembered_as_it_was_through_its_state() {
        let q: Arc<str> = Arc::from("default");
        let verdicts = [
            Verdict::Waiting { due: at(50) },
            Verdict::Exhausted,
            Verdict::Ignored,
            Verdict::Unmatched,
            Verdict::Stopped,
            Verdict::Succeeded,
            Verdict::Held { due: at(60) },
        ];
        let mut cache = FactsCache::default();
        cache.begin_scan(1);
        for (i, verdict) in verdicts.into_iter().enumerate() {
            let id = format!("j{i}");
            cache.remember(&q, &id, 1.0, at(0), verdict, None);
            let entry = cache.hit("default", &id, 1.0).unwrap();
            assert_eq!(entry.verdict, verdict);
            assert_eq!(entry.verdict.state(), verdict.state());
        }
        assert_eq!(cache.next_due(), Some(at(50)));
    }

    #[test]
    fn a_new_failure_of_the_same_job_is_a_miss() {
        let q: Arc<str> = Arc::from("default");
        let mut cache = FactsCache::default();
        cache.begin_scan(1);
        cache.remember(&q, "j", 100.0, at(0), Verdict::Unmatched, None);
        assert!(cache.hit("default", "j", 100.0).is_some());
        assert!(
            cache.hit("default", "j", 200.0).is_none(),
            "a new score is a new failure"
        );
        assert!(cache.hit("other", "j", 100.0).is_none());
    }

    #[test]
    fn uuid_ids_are_packed_and_read_back_byte_for_byte() {
        let id = "03f04a78-62a7-4007-8832-3389c586dc1f";
        assert!(matches!(JobKey::new(id), JobKey::Uuid(_)));
        assert_eq!(&*JobKey::new(id).to_id(), id);
        // Anything that would not read back identically stays text.
        for other in [
            "03F04A78-62A7-4007-8832-3389C586DC1F",
            "03f04a7862a740078832-3389c586dc1f---",
            "03f04a78-62a7-4007-8832-3389c586dc1",
            "03f04a78-62a7-4007-8832-3389c586dc1g",
            "{3f04a78-62a7-4007-8832-3389c586dc1f",
            "my-job",
            "",
        ] {
            assert_eq!(JobKey::new(other), JobKey::Text(other.into()), "{other:?}");
            assert_eq!(&*JobKey::new(other).to_id(), other);
        }
    }

    #[test]
    fn uuid_and_text_ids_are_remembered_and_taken_due_alike() {
        let q: Arc<str> = Arc::from("default");
        let mut cache = FactsCache::default();
        cache.begin_scan(1);
        let uuid = "8a1c2a55-0000-4bcd-9fff-00000000abcd";
        cache.remember(&q, uuid, 1.0, at(0), Verdict::Waiting { due: at(5) }, None);
        cache.remember(
            &q,
            "custom-id",
            1.0,
            at(0),
            Verdict::Waiting { due: at(5) },
            None,
        );
        assert!(cache.hit("default", uuid, 1.0).is_some());
        let mut due: Vec<String> = cache
            .take_due(at(5))
            .into_iter()
            .map(|d| d.job_id.into())
            .collect();
        due.sort();
        assert_eq!(due, vec![uuid.to_string(), "custom-id".to_string()]);
    }

    #[test]
    fn a_config_change_forgets_everything() {
        let q: Arc<str> = Arc::from("default");
        let mut cache = FactsCache::default();
        cache.begin_scan(1);
        cache.remember(&q, "j", 1.0, at(0), Verdict::Ignored, None);
        cache.begin_scan(2);
        assert!(cache.is_empty());
    }

    // See: issue 11: a partial pass under a new config generation must not trust verdicts
    // of the old one either, and going back to an earlier generation number is a change too.
    #[test]
    fn align_to_another_generation_drops_every_verdict() {
        let q: Arc<str> = Arc::from("default");
        let mut cache = FactsCache::default();
        cache.begin_scan(7);
        cache.remember(&q, "j", 1.0, at(0), Verdict::Unmatched, None);
        cache.remember(&q, "w", 1.0, at(0), Verdict::Waiting { due: at(9) }, None);
        cache.align(7);
        assert!(cache.hit("default", "j", 1.0).is_some(), "same generation");
        cache.align(8);
        assert!(cache.hit("default", "j", 1.0).is_none());
        assert_eq!(cache.next_due(), None, "no timer of the old generation");
        cache.remember(&q, "j", 1.0, at(0), Verdict::Ignored, None);
        cache.begin_scan(7);
        assert!(cache.is_empty());
    }

    #[test]
    fn jobs_not_seen_by_a_completed_scan_are_dropped() {
        let q: Arc<str> = Arc::from("default");
        let mut cache = FactsCache::default();
        cache.begin_scan(1);
        cache.remember(&q, "stays", 1.0, at(0), Verdict::Unmatched, None);
        cache.remember(&q, "leaves", 1.0, at(0), Verdict::Unmatched, None);
        cache.begin_scan(1);
        assert!(cache.hit("default", "stays", 1.0).is_some());
        cache.end_scan();
        assert_eq!(cache.len(), 1);
    }

    // See: issue 11: skipped_total counted every sighting of the same skipped job.
    #[test]
    fn a_skip_is_news_once_per_failure_and_reason() {
        let mut skips = SkipMemory::default();
        skips.begin_scan();
        assert!(skips.note("default", b"corrupt", 1.0, SkipReason::DecodeError));
        assert!(
            !skips.note("default", b"corrupt", 1.0, SkipReason::DecodeError),
            "same pass"
        );
        assert!(
            skips.note("other", b"corrupt", 1.0, SkipReason::DecodeError),
            "another queue"
        );
        assert!(skips.note("default", b"\xff\xfe", 1.0, SkipReason::InvalidId));
        skips.end_scan();
        skips.begin_scan();
        assert!(
            !skips.note("default", b"corrupt", 1.0, SkipReason::DecodeError),
            "next scan"
        );
        assert!(!skips.note("default", b"\xff\xfe", 1.0, SkipReason::InvalidId));
        assert!(
            skips.note("default", b"corrupt", 2.0, SkipReason::DecodeError),
            "a new failure"
        );
        assert!(
            skips.note("default", b"corrupt", 2.0, SkipReason::Paused),
            "another reason"
        );
        skips.end_scan();
        assert_eq!(skips.len(), 2, "`other` was not seen skipped by this scan");
        skips.begin_scan();
        skips.end_scan();
        assert!(skips.is_empty());
        skips.begin_scan();
        assert!(
            skips.note("default", b"corrupt", 2.0, SkipReason::Paused),
            "skipped again after a scan that did not skip it"
        );
    }

    // See: issue 11 (the soak: one corrupt job's WARN on every pass).
    #[test]
    fn knows_answers_for_the_same_failure_and_reason_only_and_notes_nothing() {
        let mut skips = SkipMemory::default();
        assert!(!skips.knows("default", b"corrupt", 1.0, SkipReason::DecodeError));
        skips.begin_scan();
        assert!(!skips.knows("default", b"corrupt", 1.0, SkipReason::DecodeError));
        assert!(
            skips.note("default", b"corrupt", 1.0, SkipReason::DecodeError),
            "knows noted nothing"
        );
        assert!(skips.knows("default", b"corrupt", 1.0, SkipReason::DecodeError));
        assert!(
            !skips.knows("default", b"corrupt", 2.0, SkipReason::DecodeError),
            "a new failure"
        );
        assert!(
            !skips.knows("default", b"corrupt", 1.0, SkipReason::Paused),
            "another reason"
        );
        assert!(
            !skips.knows("other", b"corrupt", 1.0, SkipReason::DecodeError),
            "another queue"
        );
        assert!(
            !skips.knows("default", b"other", 1.0, SkipReason::DecodeError),
            "another job"
        );
    }

    #[test]
    fn a_remembered_entry_with_its_plan_stays_32_bytes() {
        // Issue 24, item 3: one small entry per job. The plan fits in the padding.
        assert_eq!(std::mem::size_of::<Packed>(), 32);
    }

    // Issue 24, item 4: the due pass runs beside the scans; one failure is acted on by one.
    #[test]
    fn a_failure_a_scan_is_reading_is_not_taken_due_and_its_old_verdict_is_dropped() {
        let q: Arc<str> = Arc::from("default");
        let mut cache = FactsCache::default();
        cache.begin_scan(1);
        cache.remember(&q, "a", 1.0, at(0), Verdict::Waiting { due: at(5) }, None);
        cache.remember(&q, "b", 1.0, at(0), Verdict::Waiting { due: at(5) }, None);
        // The scan found "a" due (a miss for it) and reads it itself.
        assert!(cache.claim_for_scan("a", 1.0, std::time::Instant::now()));
        assert!(cache.hit("default", "a", 1.0).is_none(), "decided afresh");
        let due = cache.take_due(at(6));
        assert_eq!(due.len(), 1);
        assert_eq!(&*due[0].job_id, "b");
        // What the scan decides it remembers; released, the due pass may take it again.
        cache.remember(&q, "a", 1.0, at(0), Verdict::Held { due: at(7) }, None);
        assert!(cache.take_due(at(8)).is_empty(), "still the scan's");
        cache.release_scan(["a"]);
        assert_eq!(cache.take_due(at(8)).len(), 1);
    }

    #[test]
    fn a_failure_the_due_pass_took_is_left_alone_by_scans_until_shortly_after_it_is_done() {
        let q: Arc<str> = Arc::from("default");
        let mut cache = FactsCache::default();
        cache.begin_scan(1);
        cache.remember(&q, "a", 1.0, at(0), Verdict::Waiting { due: at(5) }, None);
        assert_eq!(cache.take_due(at(6)).len(), 1);
        assert!(
            !cache.claim_for_scan("a", 1.0, std::time::Instant::now()),
            "in flight"
        );
        assert!(
            !cache.claim_for_scan("a", 1.0, std::time::Instant::now()),
            "a refusal claims nothing"
        );
        cache.release_due(["a"]);
        // A listing taken before the due pass's write still holds it: not read, no conflict.
        assert!(
            !cache.claim_for_scan("a", 1.0, std::time::Instant::now()),
            "just done"
        );
        assert_eq!(cache.claimed(), 1);
        // A new failure of the same job (another score) is the scan's at once.
        assert!(cache.claim_for_scan("a", 2.0, std::time::Instant::now()));
        cache.release_scan(["a"]);
        assert_eq!(cache.claimed(), 1, "done, for listings older than that");
        // After CLAIM_LINGER a done claim lapses.
        cache.remember(&q, "c", 1.0, at(0), Verdict::Waiting { due: at(5) }, None);
        assert_eq!(cache.take_due(at(6)).len(), 1);
        cache.release_due(["c"]);
        let long_ago = std::time::Instant::now()
            .checked_sub(CLAIM_LINGER * 2)
            .expect("an instant this far back");
        cache.claims.insert(
            JobKey::new("c"),
            Claim::DueDone {
                score: 1.0,
                at: long_ago,
            },
        );
        assert!(cache.claim_for_scan("c", 1.0, std::time::Instant::now()));
        cache.release_scan(["c"]);
        cache.claims.insert(
            JobKey::new("c"),
            Claim::DueDone {
                score: 1.0,
                at: long_ago,
            },
        );
        cache.claims.insert(
            JobKey::new("a"),
            Claim::ScanDone {
                score: 2.0,
                at: long_ago,
            },
        );
        cache.end_scan();
        assert_eq!(cache.claimed(), 0, "pruned");
    }

    // Issue 24, item 4: notified passes run beside a long full scan (the first at 5M jobs).
    #[test]
    fn two_scans_never_both_read_a_failure_nor_one_whose_listing_is_older_than_the_others_write() {
        let tick = || std::thread::sleep(std::time::Duration::from_millis(1));
        let mut cache = FactsCache::default();
        cache.begin_scan(1);
        let full_listed = std::time::Instant::now();
        tick();
        assert!(cache.claim_for_scan("x", 1.0, std::time::Instant::now()));
        assert!(
            !cache.claim_for_scan("x", 1.0, full_listed),
            "the notified pass is reading it"
        );
        tick();
        cache.release_scan(["x"]);
        assert!(
            !cache.claim_for_scan("x", 1.0, full_listed),
            "listed before the notified pass's write: not read, no conflict"
        );
        tick();
        let listed_after = std::time::Instant::now();
        assert!(
            cache.claim_for_scan("x", 1.0, listed_after),
            "a listing after the write sees what it left (a job still failed is decided again)"
        );
        cache.release_scan(["x"]);
        assert!(
            cache.claim_for_scan("x", 2.0, full_listed),
            "a new failure of the job is any listing's"
        );
    }

    #[test]
    fn done_claims_are_pruned_as_a_long_scan_releases_them() {
        let mut cache = FactsCache::default();
        cache.begin_scan(1);
        let long_ago = std::time::Instant::now()
            .checked_sub(CLAIM_LINGER * 2)
            .expect("an instant this far back");
        for i in 0..10_000 {
            let id = format!("j{i}");
            assert!(cache.claim_for_scan(&id, 1.0, std::time::Instant::now()));
            cache.release_scan([id.as_str()]);
            // As if it had been released long ago.
            cache.claims.insert(
                JobKey::new(&id),
                Claim::ScanDone {
                    score: 1.0,
                    at: long_ago,
                },
            );
        }
        assert!(cache.claimed() < 2048, "{} claims left", cache.claimed());
    }

    #[test]
    fn the_due_pass_aligns_forward_only_and_remembers_nothing_under_an_older_config() {
        let q: Arc<str> = Arc::from("default");
        let mut cache = FactsCache::default();
        cache.begin_scan(8);
        cache.remember(&q, "j", 1.0, at(0), Verdict::Ignored, None);
        cache.align_forward(7);
        assert_eq!(cache.generation(), 8, "a pass begun before a reload");
        assert!(cache.hit("default", "j", 1.0).is_some());
        cache.align_forward(9);
        assert_eq!(cache.generation(), 9);
        assert!(cache.is_empty());
    }

    #[test]
    fn due_jobs_are_taken_in_one_pass_and_the_next_due_time_follows() {
        let q: Arc<str> = Arc::from("default");
        let mut cache = FactsCache::default();
        cache.begin_scan(1);
        cache.remember(
            &q,
            "early",
            1.0,
            at(0),
            Verdict::Waiting { due: at(10) },
            None,
        );
        cache.remember(
            &q,
            "late",
            1.0,
            at(0),
            Verdict::Waiting { due: at(20) },
            None,
        );
        assert_eq!(cache.next_due(), Some(at(10)));
        let due = cache.take_due(at(15));
        assert_eq!(
            due,
            vec![DueJob {
                queue: q.clone(),
                job_id: "early".into(),
                planned: None,
            }]
        );
        assert_eq!(cache.next_due(), Some(at(20)));
        assert!(cache.take_due(at(15)).is_empty());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_id_reads_back_unchanged(id in "([0-9a-fA-F-]{34,38}|\\PC{0,40})") {
            prop_assert_eq!(&*JobKey::new(&id).to_id(), id.as_str());
        }

        #[test]
        fn every_lowercase_uuid_is_packed(bytes in proptest::array::uniform16(any::<u8>())) {
            let id = JobKey::Uuid(bytes).to_id();
            prop_assert_eq!(JobKey::new(&id), JobKey::Uuid(bytes));
        }
    }
}
