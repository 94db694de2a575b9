//! Which audit entries name a job: the job ids of the capped audit stream
//! (`<prefix>:retryd:audit`, see [`crate::audit`]), held in memory and brought up to date
//! incrementally, so that one job's history does not read the whole stream per request.
//!
//! Why not read the stream each time: a full stream is ~10,000 entries of up to 100 job ids
//! each, listed twice (`job_ids` and `job_ids_json`), about 85 MB; reading it takes hundreds of
//! milliseconds. Here the first history request reads it once (newest first, in chunks of
//! [`CHUNK`]); later ones read only the entries appended since (XRANGE from the last id seen)
//! and drop those the stream has trimmed. What is kept is a 64-bit hash per listed id (8 bytes
//! a mention, ~8 MB for a full stream); a hit is read back from the stream by its entry id and
//! checked against the ids it really lists, so a hash collision never shows a stranger's entry.
//!
//! An entry lists at most [`crate::audit::AUDIT_MAX_IDS`] ids (its `count` is exact): a job
//! beyond the first 100 of one large batch is not found in it.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};

/// Entries read per round trip.
pub const CHUNK: usize = 1000;
/// Entries held at most: twice the stream's cap, so a stream someone else filled past its cap
/// costs a bounded read and bounded memory (the oldest are then not searched).
pub const MAX_INDEXED: usize = 2 * crate::audit::AUDIT_MAXLEN;
/// Entries naming one job read back at most (the newest).
pub const MAX_HITS: usize = 500;

/// A stream entry id (`<ms>-<seq>`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    pub fn parse(id: &str) -> Option<EntryId> {
        let (ms, seq) = id.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One audit entry as stored: its id and its fields (values as bytes).
pub type RawEntry = (String, Vec<(String, Vec<u8>)>);

/// The entries naming one job, newest first, and how much of the stream was searched.
#[derive(Debug, Default)]
pub struct Mentions {
    pub entries: Vec<RawEntry>,
    /// Audit entries searched (all the stream holds, up to [`MAX_INDEXED`]).
    pub searched: usize,
    /// Entries read from Redis to bring the index up to date for this request.
    pub read_now: usize,
    /// More than [`MAX_HITS`] entries named the job; the oldest were left out.
    pub truncated: bool,
}

/// The index: shared by every request, refreshed under its lock (one reader of the stream at a
/// time; a concurrent request waits for that read and then answers from memory).
#[derive(Default)]
pub struct AuditMentions {
    held: tokio::sync::Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// The stream these entries come from (the key prefix may change on reload).
    key: String,
    /// Oldest first.
    entries: VecDeque<Indexed>,
}

struct Indexed {
    id: EntryId,
    /// Hashes of the job ids the entry lists ([`id_hash`]).
    jobs: Box<[u64]>,
}

/// The hash an id is held as (SipHash with fixed keys: the same in every process).
fn id_hash(job_id: &str) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    job_id.hash(&mut h);
    h.finish()
}

/// The job ids an entry lists: `job_ids_json` (a JSON array: ids may hold commas), else the
/// comma-joined `job_ids` of entries written before it existed.
pub fn listed_ids(fields: &[(String, Vec<u8>)]) -> Vec<String> {
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    if let Some(ids) = get("job_ids_json").and_then(|j| serde_json::from_slice(j).ok()) {
        return ids;
    }
    get("job_ids")
        .map(|joined| {
            String::from_utf8_lossy(joined)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl AuditMentions {
    /// The entries of stream `key` that name `job_id`, newest first, after reading what was
    /// appended since the last call. A Redis error (the key is not a stream, the connection
    /// broke) is returned as it is; the index keeps what it had.
    pub async fn naming<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        key: &str,
        job_id: &str,
    ) -> RedisResult<Mentions> {
        let mut held = self.held.lock().await;
        if held.key != key {
            *held = Held {
                key: key.to_string(),
                entries: VecDeque::new(),
            };
        }
        let read_now = held.refresh(con).await?;
        let wanted = id_hash(job_id);
        let hits: Vec<EntryId> = held
            .entries
            .iter()
            .rev()
            .filter(|e| e.jobs.contains(&wanted))
            .map(|e| e.id)
            .collect();
        let searched = held.entries.len();
        drop(held);
        let truncated = hits.len() > MAX_HITS;
        let mut entries = read_entries(con, key, &hits[..hits.len().min(MAX_HITS)]).await?;
        entries.retain(|(_, fields)| listed_ids(fields).iter().any(|id| id == job_id));
        Ok(Mentions {
            entries,
            searched,
            read_now,
            truncated,
        })
    }
}

impl Held {
    /// Drops what the stream no longer holds and reads what it gained; returns the entries read.
    async fn refresh<C: ConnectionLike + Send>(&mut self, con: &mut C) -> RedisResult<usize> {
        let (first, last) = edges(con, &self.key).await?;
        let (Some(first), Some(last)) = (first, last) else {
            self.entries.clear();
            return Ok(0);
        };
        let held_last = self.entries.back().map(|e| e.id);
        if held_last.is_some_and(|held| held > last) {
            // The stream was deleted and written anew: what is held names other entries.
            self.entries.clear();
        }
        while self.entries.front().is_some_and(|e| e.id < first) {
            self.entries.pop_front();
        }
        match self.entries.back().map(|e| e.id) {
            Some(held) if held == last => Ok(0),
            Some(held) => self.read_forward(con, held).await,
            None => self.read_backward(con).await,
        }
    }

    /// Reads the entries after `after`, oldest first; starts over from the newest when more
    /// than [`MAX_INDEXED`] were appended since.
    async fn read_forward<C: ConnectionLike + Send>(
        &mut self,
        con: &mut C,
        after: EntryId,
    ) -> RedisResult<usize> {
        let mut read = 0;
        let mut from = format!("({after}");
        loop {
            let chunk = read_chunk(con, "XRANGE", &self.key, &from, "+").await?;
            let full = chunk.len() == CHUNK;
            read += chunk.len();
            if let Some(next) = chunk.last().map(|e| format!("({}", e.id)) {
                from = next;
            }
            self.entries.extend(chunk);
            if read > MAX_INDEXED {
                self.entries.clear();
                return Ok(read + self.read_backward(con).await?);
            }
            if !full {
                break;
            }
        }
        while self.entries.len() > MAX_INDEXED {
            self.entries.pop_front();
        }
        Ok(read)
    }

    /// Reads the newest [`MAX_INDEXED`] entries, newest first, into an empty index.
    async fn read_backward<C: ConnectionLike + Send>(&mut self, con: &mut C) -> RedisResult<usize> {
        let mut read = 0;
        let mut from = "+".to_string();
        while self.entries.len() < MAX_INDEXED {
            let chunk = read_chunk(con, "XREVRANGE", &self.key, &from, "-").await?;
            let full = chunk.len() == CHUNK;
            read += chunk.len();
            if let Some(next) = chunk.last().map(|e| format!("({}", e.id)) {
                from = next;
            }
            for entry in chunk {
                self.entries.push_front(entry);
            }
            if !full {
                break;
            }
        }
        Ok(read)
    }
}

/// The first and the last entry id of the stream; `None` when it is empty or missing. Two
/// commands, not one pipeline: a pipeline's error would hide the WRONGTYPE the caller reports.
async fn edges<C: ConnectionLike + Send>(
    con: &mut C,
    key: &str,
) -> RedisResult<(Option<EntryId>, Option<EntryId>)> {
    let mut ids = [None, None];
    for (slot, (command, start, end)) in [("XRANGE", "-", "+"), ("XREVRANGE", "+", "-")]
        .into_iter()
        .enumerate()
    {
        let entries: Vec<(String, Value)> = redis::cmd(command)
            .arg(key)
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(1)
            .query_async(con)
            .await?;
        ids[slot] = entries.first().and_then(|(id, _)| EntryId::parse(id));
    }
    Ok((ids[0], ids[1]))
}

/// Up to [`CHUNK`] entries from `start` to `end`, each with the hashes of the ids it lists.
async fn read_chunk<C: ConnectionLike + Send>(
    con: &mut C,
    command: &str,
    key: &str,
    start: &str,
    end: &str,
) -> RedisResult<Vec<Indexed>> {
    let entries: Vec<RawEntry> = redis::cmd(command)
        .arg(key)
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(CHUNK)
        .query_async(con)
        .await?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, fields)| {
            Some(Indexed {
                id: EntryId::parse(&id)?,
                jobs: listed_ids(&fields).iter().map(|j| id_hash(j)).collect(),
            })
        })
        .collect())
}

/// The entries `ids` (newest first), read back in one pipelined round trip; an entry trimmed
/// meanwhile is left out.
async fn read_entries<C: ConnectionLike + Send>(
    con: &mut C,
    key: &str,
    ids: &[EntryId],
) -> RedisResult<Vec<RawEntry>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        let id = id.to_string();
        pipe.cmd("XRANGE").arg(key).arg(&id).arg(&id);
    }
    let read: Vec<Vec<RawEntry>> = pipe.query_async(con).await?;
    Ok(read.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_as_redis_orders_them() {
        let a = EntryId::parse("1700000000000-9").unwrap();
        let b = EntryId::parse("1700000000001-0").unwrap();
        let c = EntryId::parse("1700000000001-10").unwrap();
        assert!(a < b && b < c);
        assert_eq!(c.to_string(), "1700000000001-10");
        assert_eq!(EntryId::parse("x-1"), None);
        assert_eq!(EntryId::parse("17"), None);
    }

    #[test]
    fn listed_ids_come_from_the_json_array_else_the_joined_field() {
        let fields = |pairs: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(
            listed_ids(&fields(&[
                ("job_ids", "a,b,c"),
                ("job_ids_json", r#"["a,b","c"]"#)
            ])),
            vec!["a,b", "c"]
        );
        assert_eq!(listed_ids(&fields(&[("job_ids", "a,b")])), vec!["a", "b"]);
        assert_eq!(listed_ids(&fields(&[])), Vec::<String>::new());
    }

    #[test]
    fn an_id_hashes_the_same_every_time() {
        assert_eq!(id_hash("clear"), id_hash("clear"));
        assert_ne!(id_hash("clear"), id_hash("clear "));
    }
}
