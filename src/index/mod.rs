//! The failure index: one entry per failed job in a supervised registry, with what an operator
//! asks about it — queue, function, exception type, failure time, attempts, exhausted mark, the
//! deciding policy, its verdict and the next due time — so that counts, filtered pages at any
//! offset, groups and bulk selections are answered from memory in milliseconds at a million
//! failed jobs, and Redis is asked only for what a page returns.
//!
//! Pure and I/O-free: the scans feed it ([`FailureIndex::observe`]), actions and notifications
//! remove from it ([`FailureIndex::remove`]), a completed scan drops what it no longer saw
//! ([`FailureIndex::end_scan`]). Functions, exception types and policy names repeat across
//! hundreds of thousands of jobs, so they are interned: an entry holds small ids, and a query's
//! glob or exception pattern is matched once per distinct name, not once per job.
//!
//! Entries live densely in one [`JobMap`] (a vector plus a table of positions), so a query is
//! one linear pass over compact entries (a few milliseconds per million), ordering a page is a
//! selection over the matching positions (linear, not a sort of everything), and removing is a
//! swap with the last entry. What the filters read (the failure time, the search text's
//! reference, and one number for the queue, function, exception type, policy and state) is
//! kept in a 16-byte column of its own, so such a pass reads little else (see [`stored`]).
//!
//! See: issue 12.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::jobkey::JobKey;
use crate::jobmap::JobMap;

pub mod bisect;
pub mod events;
mod invalid;
mod job_state;
mod live;
mod parts;
mod rows;
pub mod search;
mod selection;
mod stored;
mod tallies;
mod texts;
mod trend;
pub use invalid::Invalid;
pub use job_state::{counts_by_name, State};
pub use live::{LiveIndex, Reading};
pub use rows::{GroupId, GroupNames, Row};
pub use search::{Needle, SearchText};
pub use selection::parse_time;
pub use selection::{Selection, Typed};
use stored::{EntryRef, Hot, Kinds, Stored};
use texts::{TextRef, Texts, TEXT_MISSING, TEXT_UNKNOWN};
pub use trend::{Buckets, Recent, RecentFailures, Timeline};

/// A fact that may not have been read: the scans read only what the deciding policies look at
/// (a queue-wide retry policy needs no traceback), so an answer must be able to say "not yet
/// known" rather than "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known<T> {
    /// Not read (yet).
    Unknown,
    /// Read, and the job has none (e.g. no failure text).
    Missing,
    Is(T),
}

/// What one read of one failure established.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation<'a> {
    pub queue: &'a str,
    pub job_id: &'a str,
    /// The registry score that names this failure (failure time + failure_ttl).
    pub score: f64,
    pub failed_at: DateTime<Utc>,
    pub function: Known<&'a str>,
    pub exception: Known<&'a str>,
    pub attempts: u32,
    pub exhausted: bool,
    /// The deciding policy (none when unmatched or undecodable).
    pub policy: Option<&'a str>,
    pub state: State,
    /// When the next automatic action is due (waiting jobs).
    pub next_due: Option<DateTime<Utc>>,
    /// What a `q=` search looks through besides the names and the id.
    pub text: Known<SearchText<'a>>,
}

impl<'a> Observation<'a> {
    /// What a decoded failure and the decision on it establish.
    pub fn decided(
        facts: &'a crate::rq::JobFacts,
        score: f64,
        policy: Option<&'a str>,
        decision: &crate::policy::Decision,
    ) -> Observation<'a> {
        fn known(v: Option<&str>) -> Known<&str> {
            v.map_or(Known::Missing, Known::Is)
        }
        let (state, next_due) = State::of(decision);
        Observation {
            queue: &facts.queue,
            job_id: &facts.job_id,
            score,
            failed_at: facts.failed_at,
            // Facts a read left out are not known, rather than missing.
            function: if facts.reads.function {
                known(facts.func_name.as_deref())
            } else {
                Known::Unknown
            },
            exception: if facts.reads.failure {
                known(facts.exc_type())
            } else {
                Known::Unknown
            },
            attempts: facts.attempts,
            exhausted: facts.exhausted,
            policy,
            state,
            next_due,
            text: if facts.reads.function && facts.reads.failure {
                Known::Is(SearchText::of(facts))
            } else {
                Known::Unknown
            },
        }
    }

    /// A job that cannot be decoded: listed so that an operator sees it, never acted on. Its
    /// failure time is guessed from the registry score with RQ's default failure_ttl.
    pub fn undecodable(queue: &'a str, job_id: &'a str, score: f64) -> Observation<'a> {
        let guess = (score - 31_536_000.0).max(0.0);
        Observation {
            queue,
            job_id,
            score,
            failed_at: DateTime::from_timestamp_millis((guess * 1000.0) as i64).unwrap_or_default(),
            function: Known::Unknown,
            exception: Known::Unknown,
            attempts: 0,
            exhausted: false,
            policy: None,
            state: State::Undecodable,
            next_due: None,
            text: Known::Missing,
        }
    }
}

/// A hasher for the small integer keys of the per-query tallies (groups, exception counts):
/// the standard SipHash took most of a `groups` answer's time at a million jobs (46% of the
/// samples), for keys that are interned ids.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Names that repeat, kept once. Id `UNKNOWN` and `MISSING` are reserved.
#[derive(Debug, Default)]
struct Interner {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

const UNKNOWN: u32 = u32::MAX;
const MISSING: u32 = u32::MAX - 1;

impl Interner {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let id = self.names.len() as u32;
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    fn known(&mut self, fact: Known<&str>) -> u32 {
        match fact {
            Known::Unknown => UNKNOWN,
            Known::Missing => MISSING,
            Known::Is(name) => self.id(name),
        }
    }

    fn name(&self, id: u32) -> Known<&Arc<str>> {
        match id {
            UNKNOWN => Known::Unknown,
            MISSING => Known::Missing,
            id => Known::Is(&self.names[id as usize]),
        }
    }

    /// Which ids' names `matches` (one test per distinct name).
    fn matching(&self, matches: impl Fn(&str) -> bool) -> Vec<bool> {
        self.names.iter().map(|n| matches(n)).collect()
    }
}

/// One indexed failure, whole, as the counts kept of it see it. It is kept in two parts, 40
/// bytes in all plus its key (queue id and job id, 32 bytes; a UUID id is kept in the key's 16
/// bytes, any other on the heap) and its search text (in [`Texts`]): see [`stored`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f64,
    failed_at_us: i64,
    /// Next due time for waiting jobs, else `i64::MAX`.
    due_us: i64,
    function: u32,
    exception: u32,
    attempts: u32,
    /// The scan that last saw this entry.
    seen: u32,
    /// Its search text (what would otherwise be padding).
    text: TextRef,
    /// Interned policy id + 1; 0 for none.
    policy: u16,
    state: State,
    exhausted: bool,
}

/// A failed job as an answer shows it (names resolved).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listed {
    pub job_id: String,
    pub queue: String,
    /// `None` when not known yet or the job has none; see `function_known`.
    pub function: Option<String>,
    pub function_known: bool,
    pub exception: Option<String>,
    pub exception_known: bool,
    pub failed_at: DateTime<Utc>,
    pub attempts: u32,
    pub exhausted: bool,
    pub policy: Option<String>,
    pub state: State,
    pub next_due: Option<DateTime<Utc>>,
}

/// Newest or oldest failure first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Newest,
    Oldest,
}

/// Up to this many matches (offset + limit), a page keeps only them while it filters.
/// (The unit tests take the other path past 16, so that their small indexes cover it.)
const TOP_K_MAX: usize = if cfg!(test) { 16 } else { 10_000 };

/// One page of a selection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// Jobs the selection matches in all.
    pub total: u64,
    /// Jobs left out because a fact the selection needs (function or exception type) is not
    /// known yet: they may match once it is read.
    pub unknown: u64,
    pub jobs: Vec<Listed>,
}

/// A bulk action's reads (see [`FailureIndex::to_read`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToRead {
    pub matches: Vec<KnownMatch>,
    pub check: Vec<String>,
    pub undecodable: u64,
}

/// A job the index matches, as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownMatch {
    pub id: String,
    /// Its registry score when listed: the read must still see it.
    pub score: f64,
    pub exception: String,
}

/// What a selection holds (see [`FailureIndex::tally`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tally {
    pub matched: u64,
    /// Jobs the selection may match once a fact it needs is read.
    pub unknown: u64,
    /// Undecodable jobs in the selection's queues.
    pub undecodable: u64,
    pub by_exception: std::collections::BTreeMap<String, u64>,
    /// Matched jobs by state.
    pub by_state: std::collections::BTreeMap<State, u64>,
    pub sample: Vec<String>,
}

/// Jobs of one queue × function × exception type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub queue: String,
    pub function: Option<String>,
    pub exception: Option<String>,
    /// False while some of the group's facts are not read yet (function or exception
    /// `None` then means "not known", not "none").
    pub known: bool,
    pub count: u64,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    /// The deciding policy of most of the group's jobs (none when unmatched).
    pub policy: Option<String>,
    /// The earliest next automatic action among the group's waiting jobs.
    pub next_due: Option<DateTime<Utc>>,
    pub by_state: std::collections::BTreeMap<State, u64>,
    /// How many of the group's jobs each policy decides (`None`: no policy).
    pub policies: Vec<(Option<String>, u64)>,
    /// Its identity in this index, to join it to [`RecentFailures`].
    #[serde(skip)]
    pub id: GroupId,
}

/// Per-queue counts by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub failed: u64,
    pub by_state: std::collections::BTreeMap<State, u64>,
}

/// The index. See the module documentation.
#[derive(Debug, Default)]
pub struct FailureIndex {
    /// The entries: their keys and [`Stored`] fields, their [`Hot`] fields in a column.
    entries: JobMap<Stored, (u16, JobKey), Hot>,
    /// The kinds the entries' hot fields name by number.
    kinds: Kinds,
    queues: Interner,
    functions: Interner,
    /// Each interned function's name lowercased, by id: the head a stored description may
    /// leave out (see [`texts`]).
    function_heads: Vec<Box<[u8]>>,
    exceptions: Interner,
    policies: Interner,
    /// The entries' search texts.
    texts: Texts,
    /// Bounds of the entries' failure times.
    times: TimeSpan,
    scan: u32,
    /// Bumped on every change, so derived answers can be cached by version.
    version: u64,
    /// Every group's counts, kept as the entries change (see [`tallies`]).
    tallies: std::sync::Mutex<tallies::Tallies>,
    /// Where the last search's bytes occur in the texts: the version and search they are of.
    occurrences: std::sync::Mutex<Option<KeptOccurrences>>,
    /// The recent failures [`FailureIndex::recent`] last gathered, kept as the entries change.
    recent_cache: std::sync::Mutex<Option<trend::RecentCache>>,
}

/// A search's occurrences in the texts (none when too many), with the version of the index
/// and the search they are of.
type KeptOccurrences = (u64, String, Option<Arc<texts::Occurrences>>);

/// Bounds of the entries' failure times (microseconds): widened as entries come, narrowed to
/// the entries left at the end of each full scan. A deep page counts its matches in slices of
/// this range (see [`parts`]).
#[derive(Debug, Clone, Copy)]
struct TimeSpan {
    lo: i64,
    hi: i64,
}

impl Default for TimeSpan {
    fn default() -> Self {
        TimeSpan {
            lo: i64::MAX,
            hi: i64::MIN,
        }
    }
}

impl TimeSpan {
    fn widen(&mut self, at: i64) {
        self.lo = self.lo.min(at);
        self.hi = self.hi.max(at);
    }
}

/// A cache's lock, also after a reader panicked while holding it: a cache is only replaced
/// whole, once its new answer is complete, so what it holds is always a whole answer.
fn lock<T>(cache: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a cache holds, to change it along with the entries (the index is written, so nobody
/// else holds the lock).
fn held<T>(cache: &mut std::sync::Mutex<T>) -> &mut T {
    cache
        .get_mut()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Microseconds since the epoch: RQ's timestamps are that precise, and answers must give back
/// exactly the `ended_at` that was read.
fn us(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

impl FailureIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Changes so far (every observe, remove and end of scan that changed something).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Makes room for `n` entries in all (once per scan, from the registries' sizes).
    pub fn reserve_total(&mut self, n: usize) {
        self.entries.reserve(n.saturating_sub(self.entries.len()));
    }

    /// Starts a full scan: what it does not see again is dropped by [`FailureIndex::end_scan`].
    pub fn begin_scan(&mut self) {
        self.scan = self.scan.wrapping_add(1);
    }

    /// Notes that the scan saw this failure again unchanged (same score): returns whether the
    /// index holds it (then nothing needs reading).
    pub fn still_there(&mut self, queue: &str, job_id: &str, score: f64) -> bool {
        let Some(&q) = self.queues.ids.get(queue) else {
            return false;
        };
        let key = (q as u16, JobKey::new(job_id));
        match self.entries.get_mut(&key) {
            Some(e) if e.score == score => {
                e.seen = self.scan;
                true
            }
            _ => false,
        }
    }

    /// Adds or replaces what a read established about one failure. Returns whether the
    /// failure is new to the index: the job was not indexed, or with another failure time (it
    /// failed again).
    pub fn observe(&mut self, o: &Observation<'_>) -> bool {
        let queue = self.queues.id(o.queue);
        let Ok(queue) = u16::try_from(queue) else {
            // Beyond 65,535 distinct queues nothing more is indexed (the metrics fold queues
            // into "overflow" long before that).
            return false;
        };
        let policy = o
            .policy
            .map_or(0, |p| u16::try_from(self.policies.id(p) + 1).unwrap_or(0));
        let function = self.function_id(o.function);
        let entry = Entry {
            score: o.score,
            failed_at_us: us(o.failed_at),
            due_us: o.next_due.map_or(i64::MAX, us),
            function,
            exception: self.exceptions.known(o.exception),
            attempts: o.attempts,
            seen: self.scan,
            text: self.store_text(o.text, function),
            policy,
            state: o.state,
            exhausted: o.exhausted,
        };
        self.times.widen(entry.failed_at_us);
        let (hot, stored) = self.kinds.split(queue, &entry);
        let was = self
            .entries
            .replace_with((queue, JobKey::new(o.job_id)), hot, stored)
            .map(|(h, s)| self.kinds.forget(&h, &s));
        if let Some(old) = was {
            self.texts.release(old.text);
            self.count_out(queue, &old);
        }
        self.count_in(queue, &entry);
        self.version += 1;
        self.rebuild_texts_if_worth_it();
        was.is_none_or(|was| was.failed_at_us != entry.failed_at_us)
    }

    /// Interns an observation's function, and its lowercased name once when it is new.
    fn function_id(&mut self, function: Known<&str>) -> u32 {
        let id = self.functions.known(function);
        let names = &self.functions.names;
        self.function_heads.extend(
            names[self.function_heads.len()..]
                .iter()
                .map(|n| search::lower(n).into_bytes().into_boxed_slice()),
        );
        id
    }

    /// Stores an observation's search text; a description that starts with the name of the
    /// job's function (interned id `function`) is stored without it (see [`texts`]).
    fn store_text(&mut self, text: Known<SearchText<'_>>, function: u32) -> TextRef {
        match text {
            Known::Unknown => TEXT_UNKNOWN,
            Known::Missing => TEXT_MISSING,
            Known::Is(t) => {
                let [line, description] = t.lowered();
                let head = self.function_heads.get(function as usize);
                match head.and_then(|h| description.strip_prefix(&h[..]).filter(|_| !h.is_empty()))
                {
                    Some(rest) => self.texts.push(&line, rest, true),
                    None => self.texts.push(&line, &description, false),
                }
            }
        }
    }

    /// Gives back the space of replaced and removed texts once it outweighs the live ones.
    fn rebuild_texts_if_worth_it(&mut self) {
        if self.texts.worth_rebuilding() {
            self.texts
                .rebuild(self.entries.hot_slice_mut().iter_mut().map(|h| &mut h.text));
        }
    }

    /// Bytes the search texts hold (for the benchmark's cost per job).
    pub fn search_text_bytes(&self) -> usize {
        self.texts.held_bytes()
    }

    /// Forgets one job (requeued, purged or gone): read-your-writes for the next answer.
    /// Returns whether it was indexed.
    pub fn remove(&mut self, queue: &str, job_id: &str) -> bool {
        self.take(queue, job_id).is_some()
    }

    /// Removes one failure: the job's entry only while it still records the failure at
    /// `failed_at` (a job that failed again since is a new failure, and stays).
    pub fn take_failure(
        &mut self,
        queue: &str,
        job_id: &str,
        failed_at: DateTime<Utc>,
    ) -> Option<State> {
        let q = *self.queues.ids.get(queue)?;
        let (hot, _) = self.entries.get_with(&(q as u16, JobKey::new(job_id)))?;
        if hot.failed_at_us != us(failed_at) {
            return None;
        }
        self.take(queue, job_id)
    }

    /// Marks one failure exhausted, while the job's entry still records it (see
    /// [`FailureIndex::take_failure`]).
    pub fn mark_failure_exhausted(
        &mut self,
        queue: &str,
        job_id: &str,
        failed_at: DateTime<Utc>,
    ) -> bool {
        let Some(&q) = self.queues.ids.get(queue) else {
            return false;
        };
        let same = self
            .entries
            .get_with(&(q as u16, JobKey::new(job_id)))
            .is_some_and(|(h, _)| h.failed_at_us == us(failed_at));
        same && self.set_state(queue, job_id, State::Exhausted, true)
    }

    /// Like [`remove`](Self::remove), returning the state the job was indexed in.
    pub fn take(&mut self, queue: &str, job_id: &str) -> Option<State> {
        let q = *self.queues.ids.get(queue)?;
        let (h, s) = self
            .entries
            .swap_remove_with(&(q as u16, JobKey::new(job_id)))?;
        let removed = self.kinds.forget(&h, &s);
        self.forget(q as u16, &removed);
        Some(removed.state)
    }

    /// Sets one indexed job's state to one without a next action (e.g. `stopped`, found by a
    /// write the script refused), keeping its exhausted mark. Returns whether it was indexed.
    pub fn settle(&mut self, queue: &str, job_id: &str, state: State) -> bool {
        let exhausted = match self.queues.ids.get(queue) {
            Some(&q) => self
                .entries
                .get_with(&(q as u16, JobKey::new(job_id)))
                .is_some_and(|(h, _)| self.kinds.get(h.kind).exhausted),
            None => return false,
        };
        self.set_state(queue, job_id, state, exhausted)
    }

    /// Sets one indexed job's state (e.g. just marked exhausted). Returns whether it was indexed.
    pub fn set_state(&mut self, queue: &str, job_id: &str, state: State, exhausted: bool) -> bool {
        let Some(&q) = self.queues.ids.get(queue) else {
            return false;
        };
        self.change(q as u16, job_id, |e| {
            e.state = state;
            e.exhausted = exhausted;
            e.due_us = i64::MAX;
        })
    }

    /// Changes one indexed job's entry, and the counts kept of it. Returns whether it was
    /// indexed.
    fn change(&mut self, queue: u16, job_id: &str, how: impl FnOnce(&mut Entry)) -> bool {
        let Some((h, s)) = self.entries.get_mut_with(&(queue, JobKey::new(job_id))) else {
            return false;
        };
        let old = self.kinds.forget(h, s);
        let mut new = old;
        how(&mut new);
        (*h, *s) = self.kinds.split(queue, &new);
        self.count_out(queue, &old);
        self.count_in(queue, &new);
        self.version += 1;
        true
    }

    /// Counts a new or changed entry in the kept counts (see [`tallies`], [`trend`]).
    fn count_in(&mut self, queue: u16, e: &Entry) {
        held(&mut self.tallies).add(queue, e);
        if let Some(recent) = held(&mut self.recent_cache) {
            recent.note(queue, e);
        }
    }

    /// Counts a removed entry, or an entry as it was before a change, out of the kept counts.
    fn count_out(&mut self, queue: u16, e: &Entry) {
        held(&mut self.tallies).remove(queue, e);
        if let Some(recent) = held(&mut self.recent_cache) {
            recent.unnote(queue, e);
        }
    }

    /// Marks a job `held`: its due requeue waits for the target queue (`hold_when`); the
    /// rest of what is known about it stays. Returns whether the job is indexed.
    pub fn set_held(&mut self, queue: &str, job_id: &str) -> bool {
        let Some(&q) = self.queues.ids.get(queue) else {
            return false;
        };
        self.change(q as u16, job_id, |e| {
            e.state = State::Held;
            e.due_us = i64::MAX;
        })
    }

    /// Ends a completed full scan of `queues`: their entries it did not see are gone from
    /// Redis (or expired) and are dropped. Entries of other queues are kept.
    pub fn end_scan(&mut self, queues: &[String]) {
        let scanned: Vec<bool> = self
            .queues
            .matching(|name| queues.iter().any(|q| q == name));
        let scan = self.scan;
        let before = self.entries.len();
        let texts = &mut self.texts;
        let tallies = held(&mut self.tallies);
        let mut recent = held(&mut self.recent_cache).as_mut();
        let mut times = TimeSpan::default();
        let kinds = &mut self.kinds;
        self.entries.retain_with(|(q, _), h, s| {
            let keep = s.seen == scan || !scanned[usize::from(*q)];
            if keep {
                times.widen(h.failed_at_us);
            } else {
                let e = kinds.forget(h, s);
                texts.release(e.text);
                tallies.remove(*q, &e);
                if let Some(recent) = recent.as_mut() {
                    recent.unnote(*q, &e);
                }
            }
            keep
        });
        self.times = times;
        if self.entries.len() != before {
            self.version += 1;
            self.rebuild_texts_if_worth_it();
        }
    }

    /// What removing an entry changes besides the map: its text is garbage, answers change.
    fn forget(&mut self, queue: u16, removed: &Entry) {
        self.texts.release(removed.text);
        self.count_out(queue, removed);
        self.version += 1;
        self.rebuild_texts_if_worth_it();
    }

    fn listed(&self, (queue, id): &(u16, JobKey), e: &Entry) -> Listed {
        let name = |k: Known<&Arc<str>>| match k {
            Known::Is(n) => (Some(n.to_string()), true),
            Known::Missing => (None, true),
            Known::Unknown => (None, false),
        };
        let (function, function_known) = name(self.functions.name(e.function));
        let (exception, exception_known) = name(self.exceptions.name(e.exception));
        Listed {
            job_id: id.to_id().into(),
            queue: self.queues.names[usize::from(*queue)].to_string(),
            function,
            function_known,
            exception,
            exception_known,
            failed_at: time(e.failed_at_us),
            attempts: e.attempts,
            exhausted: e.exhausted,
            policy: self.policy_name(e.policy),
            state: e.state,
            next_due: (e.due_us != i64::MAX).then(|| time(e.due_us)),
        }
    }

    /// The entry at position `at`, read as far as asked.
    fn entry_ref(&self, at: usize) -> EntryRef<'_> {
        EntryRef::new(
            &self.entries.hot_slice()[at],
            &self.entries.as_slice()[at],
            &self.kinds,
        )
    }

    fn policy_name(&self, id: u16) -> Option<String> {
        (id > 0).then(|| self.policies.names[usize::from(id - 1)].to_string())
    }

    /// The filter of `query`, compiled against the interned names.
    fn compile(&self, query: &Selection) -> Compiled<'_> {
        let queue = match &query.queue {
            None => Some(None),
            // A queue the index has never seen matches nothing.
            Some(q) => self.queues.ids.get(q.as_str()).map(|&id| Some(id as u16)),
        };
        let policy = match &query.policy {
            None => Some(None),
            Some(p) => self
                .policies
                .ids
                .get(p.as_str())
                .map(|&id| Some(id as u16 + 1)),
        };
        let functions = query
            .function
            .as_ref()
            .map(|g| self.functions.matching(|n| g.is_match(n)));
        let exceptions = query
            .exception
            .as_ref()
            .map(|p| self.exceptions.matching(|n| p.is_match(n)));
        let (policy_id, state) = (policy.flatten(), query.state);
        let kinds = self
            .kinds
            .all()
            .iter()
            .map(|k| {
                if policy_id.is_some_and(|p| p != k.policy) || state.is_some_and(|s| s != k.state) {
                    return Test::No;
                }
                group_test(
                    queue.flatten(),
                    functions.as_deref(),
                    exceptions.as_deref(),
                    &k.group,
                )
            })
            .collect();
        Compiled {
            nothing: queue.is_none() || policy.is_none(),
            queue: queue.flatten(),
            kinds,
            before: query.failed_before.map(us),
            after: query.failed_after.map(us),
            search: query.q.as_ref().map(|needle| self.search_filter(needle)),
        }
    }

    fn search_filter(&self, needle: &Needle) -> SearchFilter<'_> {
        let needle = search::Compiled::new(needle);
        let lines: Vec<bool> = self
            .texts
            .shared_lines()
            .map(|l| needle.in_text(l))
            .collect();
        SearchFilter {
            functions: self.functions.matching(|n| needle.in_name(n)),
            exceptions: self.exceptions.matching(|n| needle.in_name(n)),
            cuts: self
                .function_heads
                .iter()
                .map(|head| needle.cuts_after(head))
                .collect(),
            any_line: lines.iter().any(|&held| held),
            lines,
            near: self.occurrences_of(&needle),
            needle,
            texts: &self.texts,
        }
    }

    /// Where `needle` occurs in the texts (see [`texts::Occurrences`]): found once per
    /// version of the index and search, so that the parts of one answer, and the pages of one
    /// search, share them. `None` when it occurs in more places than an eighth of the entries
    /// (and 1,024): then most records must be read anyway.
    fn occurrences_of(&self, needle: &search::Compiled) -> Option<Arc<texts::Occurrences>> {
        let mut cache = lock(&self.occurrences);
        if let Some((version, q, found)) = &*cache {
            if *version == self.version && q == needle.as_str() {
                return found.clone();
            }
        }
        let found = self
            .texts
            .occurrences(
                needle.finder(),
                parts::parts_for(self.entries.len()),
                (self.entries.len() / 8).max(1024),
            )
            .map(Arc::new);
        *cache = Some((self.version, needle.as_str().to_string(), found.clone()));
        found
    }

    /// A bulk dry run's answer: what `query` selects, by exception type, a sample of up to
    /// `sample` ids, and the undecodable jobs of the queues it looks at (which no selection
    /// can match; a bulk action skips them).
    pub fn tally(&self, query: &Selection, sample: usize) -> Tally {
        // Counted in arrays by state and by interned exception id (the last two slots for
        // "not read" and "none"), not in maps: a dry run of everything adds up every entry,
        // and two map lookups an entry were most of its time at five million.
        let exception_slots = self.exceptions.names.len() + 2;
        let slot = move |id: u32| match id {
            UNKNOWN => exception_slots - 2,
            MISSING => exception_slots - 1,
            id => id as usize,
        };
        let parts = self.in_parts(|part| {
            let c = self.compile(query);
            let mut t = Tally::default();
            let mut by_exception = vec![0u64; exception_slots];
            let mut by_state = [0u64; State::ALL.len()];
            for (_, r) in part.refs() {
                if r.kind.state == State::Undecodable {
                    if !c.nothing && c.queue.is_none_or(|q| q == r.group().queue) {
                        t.undecodable += 1;
                    }
                    continue;
                }
                match c.test(r) {
                    Test::Match => {
                        t.matched += 1;
                        by_exception[slot(r.group().exception)] += 1;
                        by_state[r.kind.state as usize] += 1;
                        if t.sample.len() < sample {
                            t.sample.push(r.key().1.to_id().into());
                        }
                    }
                    Test::Unknown => t.unknown += 1,
                    Test::No => {}
                }
            }
            (t, by_exception, by_state)
        });
        let mut t = Tally::default();
        let mut by_exception = vec![0u64; exception_slots];
        let mut by_state = [0u64; State::ALL.len()];
        for (part, exceptions, states) in parts {
            t.matched += part.matched;
            t.unknown += part.unknown;
            t.undecodable += part.undecodable;
            for (sum, n) in by_state.iter_mut().zip(states) {
                *sum += n;
            }
            let room = sample.saturating_sub(t.sample.len());
            t.sample.extend(part.sample.into_iter().take(room));
            for (sum, n) in by_exception.iter_mut().zip(exceptions) {
                *sum += n;
            }
        }
        t.by_state = State::ALL
            .into_iter()
            .zip(by_state)
            .filter(|&(_, n)| n > 0)
            .collect();
        for (at, n) in by_exception.into_iter().enumerate() {
            if n == 0 {
                continue;
            }
            let name = match self.exceptions.names.get(at) {
                Some(name) => name.to_string(),
                None => "(unknown)".to_string(),
            };
            *t.by_exception.entry(name).or_default() += n;
        }
        t
    }

    /// Of one registry's ids as listed now (with their scores), what a bulk action with
    /// `query` must read: the ids the index matches as they are now (same score: the same
    /// failure), with their exception type, and those it must check whole (the selection may
    /// match them once read, or the index does not know them as they are now: not indexed, or
    /// another score, a new failure). Also how many it knows to be undecodable (skipped, never
    /// read). The action acts only through the compare-and-set scripts.
    pub fn to_read(
        &self,
        query: &Selection,
        queue: &str,
        ids: &[String],
        scores: &[f64],
    ) -> ToRead {
        let mut out = ToRead::default();
        let Some(&q) = self.queues.ids.get(queue) else {
            out.check = ids.to_vec();
            return out;
        };
        let q = q as u16;
        let c = self.compile(query);
        for (id, score) in ids.iter().zip(scores) {
            let at = self.entries.position(&(q, JobKey::new(id)));
            match at.map(|at| self.entry_ref(at)) {
                Some(r) if r.stored().score == *score => {
                    if r.kind.state == State::Undecodable {
                        out.undecodable += 1;
                        continue;
                    }
                    match c.test(r) {
                        Test::Match => out.matches.push(KnownMatch {
                            id: id.clone(),
                            score: *score,
                            exception: match self.exceptions.name(r.group().exception) {
                                Known::Is(n) => n.to_string(),
                                _ => "(unknown)".to_string(),
                            },
                        }),
                        Test::Unknown => out.check.push(id.clone()),
                        Test::No => {}
                    }
                }
                _ => out.check.push(id.clone()),
            }
        }
        out
    }

    /// The groups (queue × function × exception type), largest first: from the counts kept
    /// as the entries change (see [`tallies`]), not a pass over the entries.
    pub fn groups(&self) -> Vec<Group> {
        let mut out: Vec<Group> = self
            .group_sums()
            .into_iter()
            .map(|(id, sums)| self.group(id, sums))
            .collect();
        sort_groups(&mut out);
        out
    }

    /// The groups of the jobs `query` matches (a search's groups), largest first: one pass
    /// over the entries (a search is answered in one).
    pub fn groups_matching(&self, query: &Selection) -> Vec<Group> {
        let parts = self.in_parts(|part| {
            let c = self.compile(query);
            let mut groups: IdMap<GroupId, GroupSums> = IdMap::default();
            for (_, r) in part.refs() {
                if c.test(r) == Test::Match {
                    groups
                        .entry(*r.group())
                        .or_insert_with(GroupSums::new)
                        .add(&r.entry());
                }
            }
            groups
        });
        let mut groups: IdMap<GroupId, GroupSums> = IdMap::default();
        for part in parts {
            for (key, sums) in part {
                groups.entry(key).or_insert_with(GroupSums::new).merge(sums);
            }
        }
        let mut out: Vec<Group> = groups
            .into_iter()
            .map(|(id, sums)| self.group(id, sums))
            .collect();
        sort_groups(&mut out);
        out
    }

    /// One group's answer from its sums: names for the interned ids, the policy that decides
    /// most of its jobs (the lowest id on a tie), its jobs by state and by policy.
    fn group(&self, id: GroupId, sums: GroupSums) -> Group {
        let GroupId {
            queue: q,
            function: f,
            exception: x,
        } = id;
        let name = |i: &Interner, id| match i.name(id) {
            Known::Is(n) => Some(n.to_string()),
            _ => None,
        };
        let policy = sums
            .policies
            .iter()
            .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
            .unwrap_or(0);
        let mut policies: Vec<(Option<String>, u64)> = sums
            .policies
            .iter()
            .map(|(id, n)| (self.policy_name(*id), *n))
            .collect();
        policies.sort();
        Group {
            queue: self.queues.names[usize::from(q)].to_string(),
            function: name(&self.functions, f),
            exception: name(&self.exceptions, x),
            known: f != UNKNOWN && x != UNKNOWN,
            count: sums.count,
            first_failed_at: time(sums.first),
            last_failed_at: time(sums.last),
            policy: self.policy_name(policy),
            next_due: (sums.next_due != i64::MAX).then(|| time(sums.next_due)),
            by_state: State::ALL
                .into_iter()
                .zip(sums.by_state)
                .filter(|(_, n)| *n > 0)
                .collect(),
            policies,
            id,
        }
    }

    /// Counts per queue, by state: from the entries of each kind, not a pass.
    pub fn queue_counts(&self) -> std::collections::BTreeMap<String, QueueCounts> {
        let mut per: Vec<QueueCounts> = vec![QueueCounts::default(); self.queues.names.len()];
        for (kind, n) in self.kinds.held() {
            let c = &mut per[usize::from(kind.group.queue)];
            c.failed += n;
            *c.by_state.entry(kind.state).or_default() += n;
        }
        self.queues
            .names
            .iter()
            .zip(per)
            .filter(|(_, c)| c.failed > 0)
            .map(|(n, c)| (n.to_string(), c))
            .collect()
    }
}

/// Largest first, then by names.
fn sort_groups(groups: &mut [Group]) {
    groups.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| {
            (&a.queue, &a.function, &a.exception).cmp(&(&b.queue, &b.function, &b.exception))
        })
    });
}

/// One queue's share of the index, as the reconcile's size check compares it with Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpan {
    pub queue: String,
    /// Entries the index holds for the queue.
    pub indexed: u64,
    /// Their lowest and highest registry scores.
    pub lo: f64,
    pub hi: f64,
}

/// What dropping the absent entries of some score ranges found (see
/// [`FailureIndex::drop_absent`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dropped {
    /// (job id, registry score, the state it was in) of each entry dropped.
    pub gone: Vec<(String, f64, State)>,
    /// Registry members of those ranges the index does not hold as they are (new failures).
    pub unknown: usize,
}

/// Reconciling with the registries (see [`bisect`]). See: issue 21, item 4.
impl FailureIndex {
    /// The registry scores of one queue's entries, in no order.
    pub fn scores_of(&self, queue: &str) -> Vec<f64> {
        let Some(&q) = self.queues.ids.get(queue) else {
            return Vec::new();
        };
        let q = q as u16;
        self.entries
            .iter()
            .filter(|((eq, _), _)| *eq == q)
            .map(|(_, e)| e.score)
            .collect()
    }

    /// Per queue with entries: how many, and their lowest and highest score, by one pass
    /// (what [`FailureIndex::queue_spans`] keeps).
    #[cfg(test)]
    fn spans_now(&self) -> Vec<QueueSpan> {
        let mut per: Vec<(u64, f64, f64)> =
            vec![(0, f64::INFINITY, f64::NEG_INFINITY); self.queues.names.len()];
        for ((q, _), e) in self.entries.iter() {
            let p = &mut per[usize::from(*q)];
            p.0 += 1;
            p.1 = p.1.min(e.score);
            p.2 = p.2.max(e.score);
        }
        self.queues
            .names
            .iter()
            .zip(per)
            .filter(|(_, p)| p.0 > 0)
            .map(|(name, (indexed, lo, hi))| QueueSpan {
                queue: name.to_string(),
                indexed,
                lo,
                hi,
            })
            .collect()
    }

    /// Drops the queue's entries whose score lies in one of `ranges` (inclusive, sorted and
    /// disjoint) but which `present` (the registry's members of those ranges with their
    /// scores, read after the entries were indexed) does not hold with that score: the job
    /// left the registry, or failed again (a new failure, for the next pass to read).
    pub fn drop_absent(
        &mut self,
        queue: &str,
        ranges: &[(f64, f64)],
        present: &[(Vec<u8>, f64)],
    ) -> Dropped {
        let (absent, unknown) = self.absent_in(queue, ranges, present);
        let gone = absent
            .into_iter()
            .filter_map(|(id, score)| {
                let state = self.take_scored(queue, &id, score)?;
                Some((id, score, state))
            })
            .collect();
        Dropped { gone, unknown }
    }

    /// What [`FailureIndex::drop_absent`] would drop (id, score), and how many of `present`
    /// the index does not hold as they are; one pass that changes nothing, so that the index
    /// is locked for writing only for the removals.
    pub fn absent_in(
        &self,
        queue: &str,
        ranges: &[(f64, f64)],
        present: &[(Vec<u8>, f64)],
    ) -> (Vec<(String, f64)>, usize) {
        let Some(&q) = self.queues.ids.get(queue) else {
            return (Vec::new(), present.len());
        };
        let q = q as u16;
        let there: std::collections::HashSet<(JobKey, u64)> = present
            .iter()
            .map(|(member, score)| (JobKey::from_bytes(member), score.to_bits()))
            .collect();
        let unknown = present
            .iter()
            .filter(|(member, score)| {
                self.entries
                    .get(&(q, JobKey::from_bytes(member)))
                    .is_none_or(|e| e.score != *score)
            })
            .count();
        let in_ranges = |score: f64| {
            let i = ranges.partition_point(|(_, hi)| *hi < score);
            ranges.get(i).is_some_and(|(lo, _)| *lo <= score)
        };
        let absent = self
            .entries
            .iter()
            .filter(|((eq, key), e)| {
                *eq == q && in_ranges(e.score) && !there.contains(&(key.clone(), e.score.to_bits()))
            })
            .map(|((_, key), e)| (key.to_id().into(), e.score))
            .collect();
        (absent, unknown)
    }

    /// Removes one entry while it still has `score` (the failure it recorded); returns
    /// whether it did.
    pub fn take_scored(&mut self, queue: &str, job_id: &str, score: f64) -> Option<State> {
        let &q = self.queues.ids.get(queue)?;
        let key = (q as u16, JobKey::new(job_id));
        if self.entries.get(&key).is_none_or(|e| e.score != score) {
            return None;
        }
        let (h, s) = self.entries.swap_remove_with(&key)?;
        let removed = self.kinds.forget(&h, &s);
        self.forget(key.0, &removed);
        Some(removed.state)
    }
}

/// A query compiled against the interned names.
struct Compiled<'t> {
    /// The query names a queue or policy the index has never seen.
    nothing: bool,
    queue: Option<u16>,
    /// By kind number: what the kind (queue, function, exception type, policy, state) makes
    /// of the query (`Unknown`: its function or exception type is not read yet).
    kinds: Vec<Test>,
    before: Option<i64>,
    after: Option<i64>,
    search: Option<SearchFilter<'t>>,
}

/// A `q=` search compiled against the interned names: which functions and exception types
/// hold it (one test per distinct name), and the finder for texts and ids.
struct SearchFilter<'t> {
    needle: search::Compiled,
    functions: Vec<bool>,
    exceptions: Vec<bool>,
    /// For each function, where the search may be cut so that the function's name (the head
    /// of a description stored without it) ends with its first part (see
    /// [`search::Compiled::cuts_after`]); mostly nowhere.
    cuts: Vec<Vec<usize>>,
    /// Which shared exception lines hold the search, by number.
    lines: Vec<bool>,
    /// Whether any does.
    any_line: bool,
    /// Which records may hold it in their stored fields (`None`: any).
    near: Option<Arc<texts::Occurrences>>,
    texts: &'t Texts,
}

impl SearchFilter<'_> {
    fn test(&self, r: EntryRef<'_>) -> Test {
        let named = |hits: &[bool], id: u32| hits.get(id as usize).copied().unwrap_or(false);
        let g = r.group();
        let text = r.hot.text;
        if named(&self.functions, g.function)
            || named(&self.exceptions, g.exception)
            || (text < TEXT_MISSING && self.in_texts(g.function, text))
            || self.needle.in_id(&r.key().1)
        {
            Test::Match
        } else if text == TEXT_UNKNOWN {
            Test::Unknown
        } else {
            Test::No
        }
    }
}

impl SearchFilter<'_> {
    /// Whether the entry's stored texts hold the search: its exception line, or its
    /// description put back together behind the function's name when stored without it (a
    /// search may span the two; one within the name alone is the function's own match).
    ///
    /// A record none of whose stored fields may hold it (see [`texts::Occurrences`]) is read
    /// only when a shared line holds the search or its function's name may hold the search's
    /// start: most records are then not read at all.
    fn in_texts(&self, function: u32, text: TextRef) -> bool {
        let stored = self.near.as_ref().is_none_or(|o| o.may_hold(text));
        let cuts = self
            .cuts
            .get(function as usize)
            .filter(|cuts| !cuts.is_empty());
        if !stored && !self.any_line && cuts.is_none() {
            return false;
        }
        // A shared line is known by its number (the record's first four bytes): most records
        // are then decided without reading further.
        let shared = self.texts.shared_line(text);
        if let Some(number) = shared {
            if self.lines.get(number).copied().unwrap_or(false) {
                return true;
            }
            if !stored && cuts.is_none() {
                return false;
            }
        }
        let t = self.texts.get(text);
        let in_line = shared.is_none() && stored && self.needle.in_text(t.line);
        if in_line || (stored && self.needle.in_text(t.description)) {
            return true;
        }
        t.after_function
            && cuts.is_some_and(|cuts| {
                cuts.iter()
                    .any(|&k| self.needle.rest_starts(k, t.description))
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    Match,
    No,
    /// It would depend on a fact not read yet.
    Unknown,
}

impl Compiled<'_> {
    /// Whether the query matches the entry: its hot fields decide, but for a search.
    fn test(&self, r: EntryRef<'_>) -> Test {
        let h = r.hot;
        let kind = self.kinds[h.kind as usize];
        if self.nothing
            || kind == Test::No
            || self.before.is_some_and(|t| h.failed_at_us >= t)
            || self.after.is_some_and(|t| h.failed_at_us <= t)
        {
            return Test::No;
        }
        let found = self.search.as_ref().map_or(Test::Match, |s| s.test(r));
        match found {
            Test::No => Test::No,
            _ if kind == Test::Unknown => Test::Unknown,
            found => found,
        }
    }
}

/// What a group's queue, function and exception type make of a query's filters on them.
fn group_test(
    queue: Option<u16>,
    functions: Option<&[bool]>,
    exceptions: Option<&[bool]>,
    g: &GroupId,
) -> Test {
    if queue.is_some_and(|q| q != g.queue) {
        return Test::No;
    }
    let mut unknown = false;
    for (wanted, id) in [(functions, g.function), (exceptions, g.exception)] {
        let Some(wanted) = wanted else { continue };
        match id {
            UNKNOWN => unknown = true,
            MISSING => return Test::No,
            id if !wanted[id as usize] => return Test::No,
            _ => {}
        }
    }
    if unknown {
        Test::Unknown
    } else {
        Test::Match
    }
}

/// What [`FailureIndex::groups`] adds up per group while it walks the entries.
struct GroupSums {
    count: u64,
    first: i64,
    last: i64,
    next_due: i64,
    policies: IdMap<u16, u64>,
    by_state: [u64; State::ALL.len()],
}

impl GroupSums {
    fn new() -> GroupSums {
        GroupSums {
            count: 0,
            first: i64::MAX,
            last: i64::MIN,
            next_due: i64::MAX,
            policies: IdMap::default(),
            by_state: [0; State::ALL.len()],
        }
    }

    /// Adds another part's sums of the same group.
    fn merge(&mut self, other: GroupSums) {
        self.count += other.count;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.next_due = self.next_due.min(other.next_due);
        for (policy, n) in other.policies {
            *self.policies.entry(policy).or_default() += n;
        }
        for (sum, n) in self.by_state.iter_mut().zip(other.by_state) {
            *sum += n;
        }
    }

    fn add(&mut self, e: &Entry) {
        self.count += 1;
        self.first = self.first.min(e.failed_at_us);
        self.last = self.last.max(e.failed_at_us);
        self.next_due = self.next_due.min(e.due_us);
        *self.policies.entry(e.policy).or_default() += 1;
        self.by_state[e.state as usize] += 1;
    }
}

#[cfg(test)]
mod tests;
