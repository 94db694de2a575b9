//! Read-only queries over RQ's registries: which queues exist, which ids are in a failed
//! registry, and the stored fields of a batch of jobs (one pipelined round trip per batch).

use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};

use super::job::{decode, CorruptReason, DecodeOutcome, JobFacts, RawJob, Reads, StreamFields};
use super::keys::Keys;
use crate::glob::GlobList;

/// Reads RQ's keys through any async connection.
#[derive(Debug, Clone)]
pub struct Registry {
    keys: Keys,
}

/// The ids of one failed registry, split by whether RQ still considers them live.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FailedIds {
    pub live: Vec<String>,
    /// The registry score of each live id (same order): it changes with every new failure.
    pub scores: Vec<f64>,
    /// Entries whose expiry score has passed: RQ's `cleanup()` treats them as gone.
    pub expired: usize,
    /// Members that are not UTF-8 and so cannot be a job id RQ wrote.
    pub invalid: usize,
}

/// What looking for one failed job found ([`Registry::lookup`]): the one answer the `explain`
/// command and the single-job HTTP routes put in their own words.
#[derive(Debug)]
pub enum Lookup {
    /// In a failed registry, decoded.
    Failed(Box<JobFacts>),
    /// In no failed registry: never failed, or requeued, deleted or expired since.
    NotFailed,
    /// In `queue`'s failed registry when looked for, gone from it by the time its hash was
    /// read: requeued or deleted by someone else meanwhile. Its hash then looks orphaned or
    /// corrupt (`ended_at` cleared), which it is not.
    Moved { queue: String },
    /// In `queue`'s failed registry, but its hash is gone (expired or deleted).
    Orphan { queue: String },
    /// In `queue`'s failed registry, but its hash cannot be decoded safely; left untouched.
    Corrupt {
        queue: String,
        reason: CorruptReason,
    },
}

/// Any job's stored fields, failed or not ([`Registry::read_job`]).
#[derive(Debug, Clone, PartialEq)]
pub enum StoredJob {
    /// There is no job hash.
    Missing,
    /// The job key holds another type than a hash.
    NotAHash,
    /// The fields asked for, in order (`None` where unset), and the fields of the job's newest
    /// result (empty when it has none or they cannot be read).
    Hash {
        fields: Vec<Option<Vec<u8>>>,
        newest_result: StreamFields,
    },
}

/// One queue's counts, as RQ counts them (see [`Registry::queue_counts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub queued: u64,
    pub started: u64,
    pub failed: u64,
    pub finished: u64,
    pub deferred: u64,
    pub scheduled: u64,
}

impl Registry {
    pub fn new(keys: Keys) -> Registry {
        Registry { keys }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Queue names from `rq:queues` (read now) and from the `rq:failed:*` keys (SCAN, never
    /// KEYS; now or remembered, as `scan` says), filtered by `filter`, sorted and deduplicated:
    /// the one way every part of the daemon finds the queues and their failed registries.
    pub async fn discover_queues<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        filter: &GlobList,
        scan: RegistryScan<'_>,
    ) -> RedisResult<Vec<String>> {
        let mut names = self.known_queues(con).await?;
        match scan {
            RegistryScan::Now => names.extend(self.scan_failed_registries(con).await?),
            RegistryScan::Reuse { found, max_age } => match found.younger_than(max_age) {
                Some(remembered) => names.extend(remembered),
                None => {
                    let scanned = self.scan_failed_registries(con).await?;
                    names.extend(scanned.iter().cloned());
                    found.remember(scanned);
                }
            },
            RegistryScan::Remembered(found) => names.extend(found.remembered()),
        }
        Ok(select_queues(names, filter))
    }

    /// The queues RQ registered in `rq:queues` (every enqueue adds its queue): one SMEMBERS.
    async fn known_queues<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
    ) -> RedisResult<Vec<String>> {
        let members: Vec<Vec<u8>> = match redis::cmd("SMEMBERS")
            .arg(self.keys.queues_set())
            .query_async(con)
            .await
        {
            Ok(members) => members,
            // Not RQ's data: the SCAN for failed registries still finds every queue.
            Err(e) if is_wrong_type(&e) => {
                tracing::warn!(key = %self.keys.queues_set(), "the set of known queues has the wrong type; finding queues by their failed registries only");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        Ok(members
            .iter()
            .filter_map(|m| std::str::from_utf8(m).ok())
            .filter_map(|key| self.keys.queue_name_from_key(key))
            .map(str::to_string)
            .collect())
    }

    /// The queue of every `rq:failed:*` key, including registries whose queue left
    /// `rq:queues`. SCAN walks the whole keyspace (about a microsecond of Redis time per key),
    /// so callers that repeat it should not do so on every pass.
    async fn scan_failed_registries<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
    ) -> RedisResult<Vec<String>> {
        let mut names = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.keys.failed_pattern())
                .arg("COUNT")
                .arg(1000)
                .query_async(con)
                .await?;
            names.extend(
                keys.iter()
                    .filter_map(|k| std::str::from_utf8(k).ok())
                    .filter_map(|k| self.keys.queue_name_from_failed_key(k))
                    .map(str::to_string),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(names)
    }

    /// Every id in `rq:failed:<queue>`, read in windows of `window` by rank (each ZRANGE is
    /// O(log N + window), so no single command blocks Redis for long).
    pub async fn failed_ids<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        now_unix: f64,
        window: usize,
    ) -> RedisResult<FailedIds> {
        let window = window.max(1);
        let mut out = FailedIds::default();
        let mut anchors = Anchors::default();
        loop {
            // Each page resumes after the previous one's last entry still there, so entries
            // removed meanwhile by anyone shift nothing (see `failed_window_after`).
            let page = self
                .failed_window_after(con, queue, &anchors, window, false)
                .await?;
            anchors = anchors_of(&page);
            for (member, score) in &page {
                if *score < now_unix {
                    out.expired += 1;
                    continue;
                }
                match String::from_utf8(member.clone()) {
                    Ok(id) => {
                        out.live.push(id);
                        out.scores.push(*score);
                    }
                    Err(_) => out.invalid += 1,
                }
            }
            if page.len() < window {
                break;
            }
        }
        Ok(out)
    }

    /// One window of a failed registry by rank, lowest score first or (`newest_first`) highest
    /// first: (member, score) pairs, O(log N + count).
    async fn failed_window<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        start: usize,
        count: usize,
        newest_first: bool,
    ) -> RedisResult<Vec<(Vec<u8>, f64)>> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(self.keys.failed(queue))
            .arg(start)
            .arg(start + count.max(1) - 1);
        if newest_first {
            cmd.arg("REV");
        }
        cmd.arg("WITHSCORES").query_async(con).await
    }

    /// The window of `count` entries that follows the first of `anchors` (the previous
    /// window's last members, last first) still in the registry, at its rank now, in one atomic
    /// script call (`window.lua`): entries removed meanwhile shift nothing, so a scan skips
    /// none. When none of the anchors is there any more (everything up to them was removed),
    /// right after where the last one was, found by its score. A plain ZRANGE from the start
    /// when there are no anchors (a listing's first window).
    pub async fn failed_window_after<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        anchors: &Anchors,
        count: usize,
        newest_first: bool,
    ) -> RedisResult<Vec<(Vec<u8>, f64)>> {
        let Some(last_score) = anchors.last_score else {
            return self.failed_window(con, queue, 0, count, newest_first).await;
        };
        static WINDOW: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(include_str!("window.lua")));
        let mut invocation = WINDOW.key(self.keys.failed(queue));
        invocation
            .arg(count.max(1))
            .arg(if newest_first { "1" } else { "0" })
            // Rust's shortest round-trip form: Redis parses back the very same double.
            .arg(last_score.to_string());
        for anchor in &anchors.members {
            invocation.arg(anchor);
        }
        invocation.invoke_async(con).await
    }

    /// The registry score of each id (`None` when it is no longer there), in one ZMSCORE.
    pub async fn scores<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        ids: &[String],
    ) -> RedisResult<Vec<Option<f64>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        redis::cmd("ZMSCORE")
            .arg(self.keys.failed(queue))
            .arg(ids)
            .query_async(con)
            .await
    }

    /// Which of `ids` are no longer in the queue's failed registry. Reading the registry and then
    /// the hash are two round trips: a job requeued or deleted by someone else in between looks
    /// corrupt (`ended_at` cleared) or orphaned, and this tells the two apart.
    pub async fn moved_meanwhile<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        ids: &[String],
    ) -> RedisResult<std::collections::HashSet<String>> {
        let scores = self.scores(con, queue, ids).await?;
        Ok(ids
            .iter()
            .zip(scores)
            .filter(|(_, s)| s.is_none())
            .map(|(id, _)| id.clone())
            .collect())
    }

    /// Everything stored about each job ([`Reads::ALL`]), in one pipelined round trip.
    pub async fn read_jobs<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        ids: &[String],
    ) -> RedisResult<Vec<RawJob>> {
        self.read_jobs_with(con, queue, ids, Reads::ALL).await
    }

    /// The fields `reads` asks for of each job, and its newest result when `reads.failure`, in
    /// one pipelined round trip. Errors of individual commands (e.g. WRONGTYPE) stay with their
    /// job; only a connection-level failure is an `Err`.
    pub async fn read_jobs_with<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        ids: &[String],
        reads: Reads,
    ) -> RedisResult<Vec<RawJob>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::Pipeline::with_capacity(ids.len() * 2 + 1);
        pipe.ignore_errors();
        let fields = reads.fields();
        let fields_len: usize = fields.iter().map(|f| f.len()).sum();
        for id in ids {
            // Each command sized up front: grown argument by argument, the two commands'
            // buffers were reallocated 12 times a job (docs/benchmarks.md, session 21).
            let key = self.keys.job(id);
            let mut hmget = redis::Cmd::with_capacity(fields.len() + 2, key.len() + 5 + fields_len);
            hmget.arg("HMGET").arg(key).arg(fields);
            pipe.add_command(hmget);
            if reads.failure {
                let key = self.keys.results(id);
                let mut xrevrange = redis::Cmd::with_capacity(6, key.len() + 20);
                xrevrange
                    .arg("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(2);
                pipe.add_command(xrevrange);
            }
        }
        // Each id's score in the same round trip: it dates a failure RQ recorded without an
        // ended_at (see `job::FailedAt`).
        pipe.cmd("ZMSCORE").arg(self.keys.failed(queue)).arg(ids);
        let replies: Vec<RedisResult<Value>> = pipe.query_async(con).await?;
        let mut replies = replies.into_iter();
        let scores: Vec<Option<f64>> = match replies.next_back() {
            Some(Ok(value)) => redis::from_redis_value(value).unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut jobs = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let hash = replies.next().unwrap_or(Ok(Value::Nil));
            let results = if reads.failure {
                let result = replies.next().unwrap_or(Ok(Value::Nil));
                result.map_err(|e| e.to_string()).and_then(stream_entries)
            } else {
                Ok(Vec::new())
            };
            jobs.push(RawJob {
                job_id: id.clone(),
                queue: queue.to_string(),
                reads,
                hash: hash.map_err(|e| e.to_string()).and_then(hash_fields),
                score: scores.get(i).copied().flatten(),
                results,
            });
        }
        Ok(jobs)
    }

    /// Each queue's counts the way RQ counts them (`Queue.count`; the started, failed and
    /// finished registries' live entries, as after their cleanup; every deferred and scheduled
    /// entry), in one round trip. A key of the wrong type counts 0.
    pub async fn queue_counts<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queues: &[String],
        now_unix: f64,
    ) -> RedisResult<Vec<QueueCounts>> {
        use super::keys::OtherRegistry;
        let live_after = format!("({now_unix}");
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for q in queues {
            pipe.cmd("LLEN").arg(self.keys.queue(q));
            for key in [
                self.keys.registry(OtherRegistry::Started, q),
                self.keys.failed(q),
                self.keys.registry(OtherRegistry::Finished, q),
            ] {
                pipe.cmd("ZCOUNT").arg(key).arg(&live_after).arg("+inf");
            }
            pipe.cmd("ZCARD")
                .arg(self.keys.registry(OtherRegistry::Deferred, q));
            pipe.cmd("ZCARD")
                .arg(self.keys.registry(OtherRegistry::Scheduled, q));
        }
        let replies: Vec<RedisResult<u64>> = pipe.query_async(con).await?;
        let mut numbers = replies.into_iter().map(|r| r.unwrap_or(0));
        Ok(queues
            .iter()
            .map(|_| {
                let mut next = || numbers.next().unwrap_or(0);
                QueueCounts {
                    queued: next(),
                    started: next(),
                    failed: next(),
                    finished: next(),
                    deferred: next(),
                    scheduled: next(),
                }
            })
            .collect())
    }

    /// `ZCARD rq:failed:<q>` for each queue, in one round trip.
    pub async fn registry_sizes<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queues: &[String],
    ) -> RedisResult<Vec<Count>> {
        count_each(con, queues, |q| {
            let mut cmd = redis::cmd("ZCARD");
            cmd.arg(self.keys.failed(q));
            cmd
        })
        .await
    }

    /// `ZCOUNT rq:failed:<q> lo hi` (inclusive) for each range, in one round trip.
    pub async fn count_by_score<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        ranges: &[(f64, f64)],
    ) -> RedisResult<Vec<u64>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.failed(queue);
        let mut pipe = redis::pipe();
        for (lo, hi) in ranges {
            pipe.cmd("ZCOUNT").arg(&key).arg(*lo).arg(*hi);
        }
        pipe.query_async(con).await
    }

    /// `ZCOUNT rq:failed:<q> lo hi` for each (queue, lo, hi), in one round trip (a key of the
    /// wrong type counts `None`).
    pub async fn count_by_score_each<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        spans: &[(String, f64, f64)],
    ) -> RedisResult<Vec<Count>> {
        count_each(con, spans, |(queue, lo, hi)| {
            let mut cmd = redis::cmd("ZCOUNT");
            cmd.arg(self.keys.failed(queue)).arg(*lo).arg(*hi);
            cmd
        })
        .await
    }

    /// Every member of a failed registry with a score in `lo..=hi`, with its score, in
    /// ZRANGEBYSCORE pages of `window`.
    pub async fn failed_by_score<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        (lo, hi): (f64, f64),
        window: usize,
    ) -> RedisResult<Vec<(Vec<u8>, f64)>> {
        let key = self.keys.failed(queue);
        let mut out: Vec<(Vec<u8>, f64)> = Vec::new();
        loop {
            let page: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg(lo)
                .arg(hi)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(out.len())
                .arg(window.max(1))
                .query_async(con)
                .await?;
            let short = page.len() < window.max(1);
            out.extend(page);
            if short {
                return Ok(out);
            }
        }
    }

    /// `LLEN rq:queue:<q>` for each queue, in one round trip.
    pub async fn queue_lengths<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queues: &[String],
    ) -> RedisResult<Vec<Count>> {
        count_each(con, queues, |q| {
            let mut cmd = redis::cmd("LLEN");
            cmd.arg(self.keys.queue(q));
            cmd
        })
        .await
    }

    /// Every live id of a failed registry as of now (see [`Registry::failed_ids`]).
    pub async fn live_failed_ids<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        window: usize,
    ) -> RedisResult<FailedIds> {
        let now_unix = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        self.failed_ids(con, queue, now_unix, window).await
    }

    /// The `fields` of any job's hash and its newest result, in one pipelined round trip
    /// (unlike [`Registry::read_jobs`], for a job in any state, not one failed registry's).
    pub async fn read_job<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        job_id: &str,
        fields: &[&str],
    ) -> RedisResult<StoredJob> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("HMGET").arg(self.keys.job(job_id)).arg(fields);
        pipe.cmd("XREVRANGE")
            .arg(self.keys.results(job_id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        pipe.cmd("EXISTS").arg(self.keys.job(job_id));
        let replies: Vec<RedisResult<Value>> = pipe.query_async(con).await?;
        let mut replies = replies.into_iter();
        let hash = replies.next().unwrap_or(Ok(Value::Nil));
        let newest_result = match replies.next() {
            Some(Ok(v)) => stream_entries(v)
                .ok()
                .and_then(|entries| entries.into_iter().next())
                .map(|(_, fields)| fields)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if !matches!(replies.next(), Some(Ok(Value::Int(n))) if n != 0) {
            return Ok(StoredJob::Missing);
        }
        let Ok(Value::Array(items)) = hash else {
            return Ok(StoredJob::NotAHash);
        };
        let fields = items
            .into_iter()
            .map(|v| match v {
                Value::BulkString(b) => Some(b),
                _ => None,
            })
            .collect();
        Ok(StoredJob::Hash {
            fields,
            newest_result,
        })
    }

    /// Finds `job_id` in a failed registry, reads everything stored about it and decodes it.
    /// The registry and the hash are read in separate round trips, so a job that did not
    /// decode is checked once more: if it left the registry meanwhile, it was moved, not broken.
    pub async fn lookup<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        job_id: &str,
    ) -> RedisResult<Lookup> {
        let Some(queue) = self.find_failed(con, job_id).await? else {
            return Ok(Lookup::NotFailed);
        };
        let ids = [job_id.to_string()];
        let raw = self.read_jobs(con, &queue, &ids).await?.remove(0);
        let outcome = decode(&raw);
        if !matches!(outcome, DecodeOutcome::Job(_))
            && !self.moved_meanwhile(con, &queue, &ids).await?.is_empty()
        {
            return Ok(Lookup::Moved { queue });
        }
        Ok(match outcome {
            DecodeOutcome::Job(facts) => Lookup::Failed(facts),
            DecodeOutcome::Orphan => Lookup::Orphan { queue },
            DecodeOutcome::Corrupt(reason) => Lookup::Corrupt { queue, reason },
        })
    }

    /// The queue whose failed registry holds `job_id`: the job's `origin` first, then every
    /// failed registry (a job may sit in another queue's registry after a move).
    pub async fn find_failed<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        job_id: &str,
    ) -> RedisResult<Option<String>> {
        let origin: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.keys.job(job_id))
            .arg("origin")
            .query_async(con)
            .await
            .unwrap_or(None);
        if let Some(origin) = origin.and_then(|o| String::from_utf8(o).ok()) {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(self.keys.failed(&origin))
                .arg(job_id)
                .query_async(con)
                .await?;
            if score.is_some() {
                return Ok(Some(origin));
            }
        }
        let everything = GlobList::new(&["*".to_string()]).expect("static glob");
        for queue in self
            .discover_queues(con, &everything, RegistryScan::Now)
            .await?
        {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(self.keys.failed(&queue))
                .arg(job_id)
                .query_async(con)
                .await?;
            if score.is_some() {
                return Ok(Some(queue));
            }
        }
        Ok(None)
    }
}

/// How many of a listed page's last entries may anchor the next page
/// ([`Registry::failed_window_after`]): enough that removals of a few at the end still leave one.
pub const ANCHORS: usize = 64;

/// Where the next page of a registry listing resumes: the listed page's last [`ANCHORS`]
/// members, last first, and the score of the last one.
#[derive(Debug, Clone, Default)]
pub struct Anchors {
    members: Vec<Vec<u8>>,
    /// The last listed entry's score: when every anchor was removed meanwhile, the next page
    /// starts after where that entry was, found by its score.
    last_score: Option<f64>,
}

/// A listed page's last [`ANCHORS`] members, last first: where the next page resumes.
pub fn anchors_of(page: &[(Vec<u8>, f64)]) -> Anchors {
    Anchors {
        members: page
            .iter()
            .rev()
            .take(ANCHORS)
            .map(|(member, _)| member.clone())
            .collect(),
        last_score: page.last().map(|(_, score)| *score),
    }
}

/// Where [`Registry::discover_queues`] takes the failed registries whose queue is not in
/// `rq:queues` from. The SCAN that finds them walks the whole keyspace (at 200,000 failed jobs,
/// about 400,000 keys), so only one-off lookups run it every time.
#[derive(Debug, Clone, Copy)]
pub enum RegistryScan<'a> {
    /// A SCAN now, remembered nowhere (one job's lookup, the CLI).
    Now,
    /// The SCAN `found` remembers when it is younger than `max_age`; else a SCAN now, which
    /// `found` then remembers (the scan loop).
    Reuse {
        found: &'a FoundRegistries,
        max_age: std::time::Duration,
    },
    /// Only what `found` remembers, nothing when no SCAN ran yet (HTTP requests: none walks
    /// the keyspace).
    Remembered(&'a FoundRegistries),
}

/// The queues of the `rq:failed:*` keys the last registry SCAN found, and when it ran: one
/// memory shared by the scan loop, which refreshes it at most every few minutes, and the HTTP
/// handlers, which read it.
#[derive(Debug, Default)]
pub struct FoundRegistries(std::sync::Mutex<Option<(std::time::Instant, Vec<String>)>>);

impl FoundRegistries {
    /// Whether a SCAN has run (and so [`RegistryScan::Remembered`] knows something).
    pub fn scanned(&self) -> bool {
        self.0.lock().expect("found registries lock").is_some()
    }

    fn younger_than(&self, max_age: std::time::Duration) -> Option<Vec<String>> {
        self.0
            .lock()
            .expect("found registries lock")
            .as_ref()
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, found)| found.clone())
    }

    fn remembered(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("found registries lock")
            .as_ref()
            .map(|(_, found)| found.clone())
            .unwrap_or_default()
    }

    fn remember(&self, found: Vec<String>) {
        *self.0.lock().expect("found registries lock") = Some((std::time::Instant::now(), found));
    }
}

/// The names `filter` accepts, sorted and deduplicated.
fn select_queues(mut names: Vec<String>, filter: &GlobList) -> Vec<String> {
    names.retain(|q| filter.is_match(q));
    names.sort();
    names.dedup();
    names
}

/// One count per queue: `None` where the key holds another type than RQ gives it (a stray
/// `SET rq:queue:default ...`): that is not RQ's data, and one such key must not fail the
/// counts of every other queue.
pub type Count = Option<u64>;

/// One counting command per queue (or per queue and range), pipelined; an empty list sends
/// nothing. A WRONGTYPE reply is that item's `None`; any other error fails the whole call.
async fn count_each<C: ConnectionLike + Send, T>(
    con: &mut C,
    queues: &[T],
    command: impl Fn(&T) -> redis::Cmd,
) -> RedisResult<Vec<Count>> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for q in queues {
        pipe.add_command(command(q));
    }
    let replies: Vec<RedisResult<u64>> = pipe.query_async(con).await?;
    replies
        .into_iter()
        .map(|r| match r {
            Ok(n) => Ok(Some(n)),
            Err(e) if is_wrong_type(&e) => Ok(None),
            Err(e) => Err(e),
        })
        .collect()
}

/// Whether Redis refused a command because its key holds another type.
pub fn is_wrong_type(e: &redis::RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

fn hash_fields(value: Value) -> Result<Vec<Option<Vec<u8>>>, String> {
    match value {
        Value::Array(items) => Ok(items.into_iter().map(bytes_of).collect()),
        other => Err(format!("unexpected HMGET reply {other:?}")),
    }
}

/// The entries of an XRANGE/XREVRANGE reply (stream id, fields), in reply order.
fn stream_entries(value: Value) -> Result<Vec<(String, StreamFields)>, String> {
    let Value::Array(entries) = value else {
        return Err(format!("unexpected XREVRANGE reply {value:?}"));
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut entry) = entry else {
            return Err("malformed stream entry".into());
        };
        let fields = entry.pop();
        let id = entry.pop().and_then(bytes_of).unwrap_or_default();
        let Some(Value::Array(fields)) = fields.map(|f| match f {
            Value::Map(pairs) => {
                Value::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
            }
            other => other,
        }) else {
            return Err("malformed stream entry".into());
        };
        let mut pairs = Vec::with_capacity(fields.len() / 2);
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let (Some(k), Some(v)) = (bytes_of(k), bytes_of(v)) {
                pairs.push((k, v));
            }
        }
        // Redis's stream ids are ASCII: the reply's bytes become the text without a copy.
        let id = String::from_utf8(id)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        out.push((id, pairs));
    }
    Ok(out)
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::aio::ConnectionLike;
    use redis::{Arg, Cmd, Pipeline, RedisFuture};

    /// A connection that answers each command with `reply(words of the command)`: enough to
    /// play a sequence of reads in which another client moves a job in between.
    struct Scripted<F>(F);

    fn words(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "0".to_string(),
            })
            .collect()
    }

    impl<F: FnMut(&[String]) -> Value + Send> ConnectionLike for Scripted<F> {
        fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
            let reply = (self.0)(&words(cmd));
            Box::pin(async move { Ok(reply) })
        }

        fn req_packed_commands<'a>(
            &'a mut self,
            pipe: &'a Pipeline,
            offset: usize,
            count: usize,
        ) -> RedisFuture<'a, Vec<Value>> {
            let replies: Vec<Value> = pipe.cmd_iter().map(|c| (self.0)(&words(c))).collect();
            let replies = replies.into_iter().skip(offset).take(count).collect();
            Box::pin(async move { Ok(replies) })
        }

        fn get_db(&self) -> i64 {
            0
        }
    }

    /// Job `j` of queue `default` is in the failed registry when looked for; its hash reads as
    /// `hash` (one value per field); the registry still holds it at the second look when
    /// `still_there`.
    async fn look_up(hash: Value, still_there: bool) -> Lookup {
        let mut zmscores = 0;
        let mut con = Scripted(move |words: &[String]| match words[0].as_str() {
            "HGET" => Value::BulkString(b"default".to_vec()),
            "ZSCORE" => Value::BulkString(b"1e10".to_vec()),
            "HMGET" => hash.clone(),
            "XREVRANGE" => Value::Array(Vec::new()),
            "ZMSCORE" => {
                zmscores += 1;
                Value::Array(vec![if zmscores == 1 || still_there {
                    Value::BulkString(b"1e10".to_vec())
                } else {
                    Value::Nil
                }])
            }
            other => panic!("unexpected command {other}"),
        });
        let registry = Registry::new(Keys::new("rq"));
        registry
            .lookup(&mut con, "j")
            .await
            .expect("scripted replies")
    }

    fn gone_hash() -> Value {
        Value::Array(vec![Value::Nil; Reads::ALL.fields().len()])
    }

    #[tokio::test]
    async fn a_job_whose_hash_vanished_while_it_stayed_in_the_registry_is_an_orphan() {
        let found = look_up(gone_hash(), true).await;
        assert!(
            matches!(&found, Lookup::Orphan { queue } if queue == "default"),
            "{found:?}"
        );
    }

    #[tokio::test]
    async fn a_job_that_left_the_registry_while_it_was_read_is_moved_not_an_orphan() {
        let found = look_up(gone_hash(), false).await;
        assert!(
            matches!(&found, Lookup::Moved { queue } if queue == "default"),
            "{found:?}"
        );
    }

    #[tokio::test]
    async fn a_requeued_job_whose_ended_at_was_cleared_meanwhile_is_moved_not_corrupt() {
        // RQ's requeue clears ended_at: read halfway through, the hash looks corrupt.
        let mut hash = vec![Value::Nil; Reads::ALL.fields().len()];
        let status = Reads::ALL.fields().iter().position(|f| *f == "status");
        hash[status.expect("status is read")] = Value::BulkString(b"queued".to_vec());
        let found = look_up(Value::Array(hash.clone()), false).await;
        assert!(matches!(&found, Lookup::Moved { .. }), "{found:?}");
        let found = look_up(Value::Array(hash), true).await;
        assert!(matches!(&found, Lookup::Corrupt { .. }), "{found:?}");
    }

    #[tokio::test]
    async fn a_job_in_no_failed_registry_is_not_failed() {
        let mut con = Scripted(|words: &[String]| match words[0].as_str() {
            "HGET" => Value::BulkString(b"default".to_vec()),
            "ZSCORE" => Value::Nil,
            "SMEMBERS" => Value::Array(vec![Value::BulkString(b"rq:queue:default".to_vec())]),
            "SCAN" => Value::Array(vec![
                Value::BulkString(b"0".to_vec()),
                Value::Array(vec![Value::BulkString(b"rq:failed:other".to_vec())]),
            ]),
            other => panic!("unexpected command {other}"),
        });
        let registry = Registry::new(Keys::new("rq"));
        let found = registry
            .lookup(&mut con, "j")
            .await
            .expect("scripted replies");
        assert!(matches!(found, Lookup::NotFailed), "{found:?}");
    }

    /// `rq:queues` names `default`; the only failed registry is `gone`'s (its queue left
    /// `rq:queues`). Counts the SCANs.
    fn keyspace(scans: &std::sync::atomic::AtomicUsize) -> impl FnMut(&[String]) -> Value + '_ {
        move |words: &[String]| match words[0].as_str() {
            "SMEMBERS" => Value::Array(vec![Value::BulkString(b"rq:queue:default".to_vec())]),
            "SCAN" => {
                scans.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Value::Array(vec![
                    Value::BulkString(b"0".to_vec()),
                    Value::Array(vec![Value::BulkString(b"rq:failed:gone".to_vec())]),
                ])
            }
            other => panic!("unexpected command {other}"),
        }
    }

    #[tokio::test]
    async fn the_scan_loop_scans_for_registries_once_per_interval_and_requests_never() {
        let scans = std::sync::atomic::AtomicUsize::new(0);
        let mut con = Scripted(keyspace(&scans));
        let registry = Registry::new(Keys::new("rq"));
        let all = GlobList::new(&["*".to_string()]).unwrap();
        let found = FoundRegistries::default();
        // A request before any scan loop pass: rq:queues only.
        let remembered = RegistryScan::Remembered(&found);
        let queues = registry
            .discover_queues(&mut con, &all, remembered)
            .await
            .unwrap();
        assert_eq!(queues, ["default"]);
        assert!(!found.scanned());
        let hour = std::time::Duration::from_secs(3600);
        let reuse = RegistryScan::Reuse {
            found: &found,
            max_age: hour,
        };
        let mut con = Scripted(keyspace(&scans));
        for _ in 0..2 {
            let queues = registry
                .discover_queues(&mut con, &all, reuse)
                .await
                .unwrap();
            assert_eq!(queues, ["default", "gone"]);
        }
        assert_eq!(scans.load(std::sync::atomic::Ordering::SeqCst), 1);
        let remembered = RegistryScan::Remembered(&found);
        let queues = registry
            .discover_queues(&mut con, &all, remembered)
            .await
            .unwrap();
        assert_eq!(queues, ["default", "gone"]);
        assert_eq!(scans.load(std::sync::atomic::Ordering::SeqCst), 1);
        let now = registry
            .discover_queues(&mut con, &all, RegistryScan::Now)
            .await
            .unwrap();
        assert_eq!(now, ["default", "gone"]);
        assert_eq!(scans.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    /// `read_job` of a job whose hash replies `hash` and whose key exists when `exists`; its
    /// results stream holds one entry with an `exc_string`.
    async fn read_any(hash: Value, exists: i64) -> StoredJob {
        let mut con = Scripted(move |words: &[String]| match words[0].as_str() {
            "HMGET" => hash.clone(),
            "XREVRANGE" => Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("exc_string"), bulk("eJw=")]),
            ])]),
            "EXISTS" => Value::Int(exists),
            other => panic!("unexpected command {other}"),
        });
        let registry = Registry::new(Keys::new("rq"));
        registry
            .read_job(&mut con, "j", &["status", "origin"])
            .await
            .expect("scripted replies")
    }

    #[tokio::test]
    async fn any_job_is_read_with_its_newest_result_missing_or_not_a_hash() {
        let hash = Value::Array(vec![bulk("finished"), Value::Nil]);
        assert_eq!(
            read_any(hash.clone(), 1).await,
            StoredJob::Hash {
                fields: vec![Some(b"finished".to_vec()), None],
                newest_result: vec![(b"exc_string".to_vec(), b"eJw=".to_vec())],
            }
        );
        assert_eq!(read_any(hash, 0).await, StoredJob::Missing);
        assert_eq!(read_any(Value::Int(3), 1).await, StoredJob::NotAHash);
    }
}
