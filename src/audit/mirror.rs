//! The whole audit stream, summarized in memory, so that a filter over all of it answers in
//! a millisecond instead of reading every entry from Redis per request (10,000 entries of 50
//! job ids are about 40 MB: half a second to read, and Redis busy all that time).
//!
//! Each request first brings the mirror up to date with what was appended since the last one
//! (one MULTI of XLEN, the first entry and the new entries, [`READ_CHUNK`] at a time), drops
//! what the stream's cap trimmed and the entries a fold replaced (`replaces`), and reads the
//! whole stream again only when the count still disagrees with XLEN (an entry deleted by
//! hand, the key replaced). So the first request after start reads the whole stream once,
//! and the others only the tail. The page's entries themselves are then read back from Redis
//! by id (one pipeline of at most `limit` XRANGEs), so memory holds only the summaries.

use redis::aio::ConnectionLike;
use redis::RedisResult;
use tokio::sync::Mutex;

use super::filter::{replaces, AuditFilter, StreamId, Summary};
use super::names::Names;
use super::{entry_of, AuditEntry, RawEntry};

/// Why a page could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The audit key holds another type than a stream (nothing can be read until it is fixed).
    NotAStream,
    Redis(redis::RedisError),
}

impl From<redis::RedisError> for ReadError {
    fn from(e: redis::RedisError) -> ReadError {
        ReadError::Redis(e)
    }
}

/// Entries read from Redis per round trip while catching up.
pub const READ_CHUNK: usize = 1000;

/// The mirror of one daemon: requests take turns (the lock is held while catching up and
/// selecting, not while the page is read back).
#[derive(Debug, Default)]
pub struct AuditMirror {
    state: Mutex<Mirrored>,
}

#[derive(Debug, Default)]
struct Mirrored {
    /// The stream mirrored (a reload may change the key prefix).
    key: String,
    /// Oldest first, in stream order.
    entries: Vec<Summary>,
    /// The names the summaries use (see [`Mirrored::forget_unused_names`]).
    names: Names,
}

/// One page of filtered entries, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<AuditEntry>,
    /// Where the next (older) page starts, when there is one.
    pub next_cursor: Option<StreamId>,
    /// How many entries the filter looked at for this page.
    pub searched: usize,
    /// How many entries the stream holds now.
    pub stream_len: usize,
}

impl AuditMirror {
    /// Up to `limit` entries of stream `key` that `filter` asks for, newest first, older than
    /// `before` when given.
    pub async fn page<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        key: &str,
        filter: &AuditFilter,
        before: Option<StreamId>,
        limit: usize,
    ) -> Result<Page, ReadError> {
        match self.read_page(con, key, filter, before, limit).await {
            Ok(page) => Ok(page),
            // Redis tells a wrong type inside a pipeline's failures; ask once to say it plainly.
            Err(e) => {
                let kind: RedisResult<String> = redis::cmd("TYPE").arg(key).query_async(con).await;
                match kind {
                    Ok(k) if k != "stream" && k != "none" => Err(ReadError::NotAStream),
                    _ => Err(ReadError::Redis(e)),
                }
            }
        }
    }

    /// Brings the mirror of stream `key` up to date, as a request would before selecting: run
    /// once in the background at start ([`super::warm`]), so that the first request reads only
    /// the tail. A request meanwhile waits for its turn and then reads what is left, so it
    /// answers the same. Returns how many entries are mirrored.
    pub async fn warm<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        key: &str,
    ) -> RedisResult<usize> {
        let mut mirror = self.state.lock().await;
        mirror.catch_up(con, key).await?;
        Ok(mirror.entries.len())
    }

    async fn read_page<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        key: &str,
        filter: &AuditFilter,
        before: Option<StreamId>,
        limit: usize,
    ) -> RedisResult<Page> {
        let (ids, next_cursor, searched, stream_len) = {
            let mut mirror = self.state.lock().await;
            mirror.catch_up(con, key).await?;
            let (ids, next, searched) = mirror.select(filter, before, limit);
            (ids, next, searched, mirror.entries.len())
        };
        let entries = read_back(con, key, &ids)
            .await?
            .into_iter()
            .filter(|e| filter.confirms(e))
            .collect();
        Ok(Page {
            entries,
            next_cursor,
            searched,
            stream_len,
        })
    }
}

impl Mirrored {
    /// Brings the summaries up to date with the stream (see the module's doc).
    async fn catch_up<C: ConnectionLike + Send>(
        &mut self,
        con: &mut C,
        key: &str,
    ) -> RedisResult<()> {
        if self.key != key {
            self.key = key.to_string();
            self.entries.clear();
            self.names = Names::default();
        }
        for _ in 0..2 {
            let len = self.read_tail(con, key).await?;
            if self.entries.len() == len {
                self.forget_unused_names();
                return Ok(());
            }
            tracing::debug!(
                mirrored = self.entries.len(),
                len,
                "the audit stream changed in a way its tail does not tell; reading it whole"
            );
            self.entries.clear();
            self.names = Names::default();
        }
        Ok(())
    }

    /// Builds the names table again from the summaries once it holds many more names than
    /// they can use (at most three each: who, queue, to_queue), so that the names of trimmed
    /// entries (one per client address, say) do not pile up over months.
    fn forget_unused_names(&mut self) {
        if self.names.len() <= 3 * self.entries.len() + 1024 {
            return;
        }
        let old = std::mem::take(&mut self.names);
        for s in &mut self.entries {
            *s = s.renamed(&old, &mut self.names);
        }
    }

    /// Reads what was appended since the newest summary; returns the stream's length as of
    /// the last read.
    async fn read_tail<C: ConnectionLike + Send>(
        &mut self,
        con: &mut C,
        key: &str,
    ) -> RedisResult<usize> {
        loop {
            let after = self
                .entries
                .last()
                .map_or_else(|| "-".to_string(), |s| format!("({}", s.id));
            let (len, first, tail): (usize, Vec<RawEntry>, Vec<RawEntry>) = redis::pipe()
                .atomic()
                .cmd("XLEN")
                .arg(key)
                .cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .cmd("XRANGE")
                .arg(key)
                .arg(after)
                .arg("+")
                .arg("COUNT")
                .arg(READ_CHUNK)
                .query_async(con)
                .await?;
            self.trim_before(first.first().and_then(|(id, _)| StreamId::parse(id)));
            let complete = tail.len() < READ_CHUNK;
            for raw in &tail {
                self.push(raw);
            }
            if complete {
                return Ok(len);
            }
        }
    }

    /// Drops the summaries of entries older than `first` (the cap trimmed them); all of them
    /// when the stream is empty.
    fn trim_before(&mut self, first: Option<StreamId>) {
        let keep_from = match first {
            Some(first) => self.entries.partition_point(|s| s.id < first),
            None => self.entries.len(),
        };
        self.entries.drain(..keep_from);
    }

    /// Adds one new entry, dropping the one it replaces (a fold).
    fn push(&mut self, raw: &RawEntry) {
        let Some(summary) = Summary::of(raw, &mut self.names) else {
            return;
        };
        if let Some(old) = replaces(raw) {
            if let Ok(i) = self.entries.binary_search_by(|s| s.id.cmp(&old)) {
                self.entries.remove(i);
            }
        }
        self.entries.push(summary);
    }

    /// The ids of up to `limit` entries `filter` asks for, newest first and older than
    /// `before`; the cursor of the next page when more match; how many were looked at.
    fn select(
        &self,
        filter: &AuditFilter,
        before: Option<StreamId>,
        limit: usize,
    ) -> (Vec<StreamId>, Option<StreamId>, usize) {
        let end = match before {
            Some(b) => self.entries.partition_point(|s| s.id < b),
            None => self.entries.len(),
        };
        let end = match filter.until_ms {
            Some(t) => end.min(self.entries.partition_point(|s| s.id.ms <= t)),
            None => end,
        };
        let compiled = filter.compile(&self.names);
        let mut found: Vec<StreamId> = Vec::new();
        let mut searched = 0;
        for s in self.entries[..end].iter().rev() {
            if filter.since_ms.is_some_and(|t| s.id.ms < t) {
                break;
            }
            searched += 1;
            if compiled.matches(s) {
                if found.len() == limit {
                    return (found.clone(), found.last().copied(), searched);
                }
                found.push(s.id);
            }
        }
        (found, None, searched)
    }
}

/// The entries with `ids`, in that order; an entry gone meanwhile (trimmed, folded) is left
/// out.
async fn read_back<C: ConnectionLike + Send>(
    con: &mut C,
    key: &str,
    ids: &[StreamId],
) -> RedisResult<Vec<AuditEntry>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        let id = id.to_string();
        pipe.cmd("XRANGE").arg(key).arg(&id).arg(&id);
    }
    let found: Vec<Vec<RawEntry>> = pipe.query_async(con).await?;
    Ok(found.into_iter().flatten().map(entry_of).collect())
}

#[cfg(test)]
mod size;

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ms: u64, who: &str) -> RawEntry {
        (
            format!("{ms}-0"),
            vec![(b"who".to_vec(), who.as_bytes().to_vec())],
        )
    }

    fn mirrored(n: u64) -> Mirrored {
        let mut m = Mirrored {
            key: "k".into(),
            ..Default::default()
        };
        for ms in 1..=n {
            m.push(&raw(ms, if ms % 3 == 0 { "ops" } else { "supervisor" }));
        }
        m
    }

    #[test]
    fn the_names_of_trimmed_entries_are_forgotten_and_the_rest_still_match() {
        let mut m = Mirrored::default();
        for ms in 1..=3000 {
            m.push(&raw(ms, &format!("ops@10.0.{}.{}", ms / 256, ms % 256)));
        }
        m.trim_before(StreamId::parse("2991-0"));
        assert_eq!(m.names.len(), 3001, "3000 people and the empty queue");
        m.forget_unused_names();
        assert_eq!(m.names.len(), 11);
        let who = AuditFilter {
            who: Some("10.0.11.175".into()),
            ..Default::default()
        };
        let (ids, _, _) = m.select(&who, None, 10);
        assert_eq!(ids.iter().map(|i| i.ms).collect::<Vec<_>>(), vec![2991]);
    }

    #[test]
    fn paging_walks_every_match_once_newest_first() {
        let m = mirrored(100);
        let people = AuditFilter {
            people_only: true,
            ..Default::default()
        };
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (ids, next, _) = m.select(&people, cursor, 7);
            seen.extend(ids.iter().map(|id| id.ms));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let expected: Vec<u64> = (1..=100).rev().filter(|ms| ms % 3 == 0).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_time_range_bounds_the_search_itself() {
        let m = mirrored(100);
        let range = AuditFilter {
            since_ms: Some(40),
            until_ms: Some(49),
            ..Default::default()
        };
        let (ids, next, searched) = m.select(&range, None, 100);
        assert_eq!(ids.len(), 10);
        assert_eq!((ids[0].ms, ids[9].ms), (49, 40));
        assert_eq!(next, None);
        assert_eq!(searched, 10, "only the range is looked at");
    }

    #[test]
    fn a_fold_replaces_its_entry_and_the_cap_trims_the_oldest() {
        let mut m = mirrored(10);
        let fold: RawEntry = ("11-0".into(), vec![(b"replaces".to_vec(), b"4-0".to_vec())]);
        m.push(&fold);
        assert_eq!(m.entries.len(), 10);
        assert!(!m.entries.iter().any(|s| s.id.ms == 4));
        m.trim_before(StreamId::parse("6-0"));
        let left: Vec<u64> = m.entries.iter().map(|s| s.id.ms).collect();
        assert_eq!(left, vec![6, 7, 8, 9, 10, 11]);
        m.trim_before(None);
        assert!(m.entries.is_empty());
    }
}
