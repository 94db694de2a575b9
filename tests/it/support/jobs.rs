//! Writes failed jobs straight into Redis, byte for byte as an RQ 2.x worker's failure handler
//! leaves them (hash, failed registry entry, results stream entry), plus deliberately corrupt
//! variants. Used by tests that need exact control over the stored bytes; interop tests use
//! real RQ instead (see `rq.rs`).

use std::io::Write as _;

use base64::Engine;
use redis::Commands;

/// `pickle.dumps(('app.workers.reports.render_report', None, (42,), {'tenant': 'acme'}), protocol=5)`.
pub fn pickled_call(func: &str) -> Vec<u8> {
    // PROTO 5, FRAME, MARK, SHORT_BINUNICODE func, MEMOIZE, NONE, BININT1 42, TUPLE1, MEMOIZE,
    // EMPTY_DICT, MEMOIZE, SHORT_BINUNICODE 'tenant', SHORT_BINUNICODE 'acme', SETITEM, TUPLE, STOP.
    let mut body = vec![b'(', 0x8c, func.len() as u8];
    body.extend_from_slice(func.as_bytes());
    body.extend_from_slice(b"\x94NK\x2a\x85\x94}\x94\x8c\x06tenant\x94\x8c\x04acme\x94st\x94.");
    let mut out = vec![0x80, 0x05, 0x95];
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A Python-looking traceback ending in `exc_type: message`.
pub fn traceback(exc_type: &str, message: &str) -> String {
    format!("Traceback (most recent call last):\n  File \"/srv/app/tasks.py\", line 10, in run\n    do()\n{exc_type}: {message}\n")
}

/// RQ's timestamp format for a time `secs_ago` seconds in the past.
pub fn rq_time(secs_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(secs_ago))
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A failed job to write; defaults are a fresh ConnectionError failure on queue `default`.
#[derive(Debug, Clone)]
pub struct FailedJob {
    pub id: String,
    pub queue: String,
    pub func: String,
    pub exc_type: String,
    pub message: String,
    pub failed_secs_ago: i64,
    pub attempts: Option<u32>,
    pub extra: Vec<(String, Vec<u8>)>,
}

impl FailedJob {
    pub fn new(id: &str) -> FailedJob {
        FailedJob {
            id: id.to_string(),
            queue: "default".to_string(),
            func: "app.workers.reports.render_report".to_string(),
            exc_type: "ConnectionError".to_string(),
            message: "upstream timed out".to_string(),
            failed_secs_ago: 5,
            attempts: None,
            extra: Vec::new(),
        }
    }

    pub fn queue(mut self, q: &str) -> Self {
        self.queue = q.to_string();
        self
    }

    pub fn exception(mut self, exc_type: &str, message: &str) -> Self {
        self.exc_type = exc_type.to_string();
        self.message = message.to_string();
        self
    }

    pub fn failed_secs_ago(mut self, secs: i64) -> Self {
        self.failed_secs_ago = secs;
        self
    }

    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = Some(n);
        self
    }

    pub fn field(mut self, name: &str, value: &[u8]) -> Self {
        self.extra.push((name.to_string(), value.to_vec()));
        self
    }

    /// Writes hash, registry entry (score = now + 1 year, as RQ does), results entry and the
    /// queue's membership in `rq:queues`; the hash gets RQ's failure_ttl EXPIRE.
    pub fn write(&self, con: &mut redis::Connection) {
        let mut pipe = redis::pipe();
        self.push(&mut pipe);
        let _: () = pipe.query(con).unwrap();
    }

    /// Writes many jobs as [`write`](Self::write) does, a thousand to a pipeline: tens of
    /// thousands of failures in a second or two.
    pub fn write_all(con: &mut redis::Connection, jobs: impl IntoIterator<Item = FailedJob>) {
        let mut pipe = redis::pipe();
        let mut n = 0;
        for job in jobs {
            job.push(&mut pipe);
            n += 1;
            if n % 1000 == 0 {
                let _: () = pipe.query(con).unwrap();
                pipe.clear();
            }
        }
        if n % 1000 != 0 {
            let _: () = pipe.query(con).unwrap();
        }
    }

    /// The commands of [`write`](Self::write), in order, their replies ignored.
    fn push(&self, pipe: &mut redis::Pipeline) {
        let key = format!("rq:job:{}", self.id);
        let ended = rq_time(self.failed_secs_ago);
        let mut fields: Vec<(String, Vec<u8>)> = vec![
            ("status".into(), b"failed".to_vec()),
            ("origin".into(), self.queue.clone().into_bytes()),
            (
                "description".into(),
                format!("{}(42, tenant='acme')", self.func).into_bytes(),
            ),
            ("data".into(), zlib(&pickled_call(&self.func))),
            (
                "created_at".into(),
                rq_time(self.failed_secs_ago + 10).into_bytes(),
            ),
            (
                "enqueued_at".into(),
                rq_time(self.failed_secs_ago + 10).into_bytes(),
            ),
            (
                "started_at".into(),
                rq_time(self.failed_secs_ago + 1).into_bytes(),
            ),
            ("ended_at".into(), ended.into_bytes()),
            ("timeout".into(), b"180".to_vec()),
            ("failure_ttl".into(), b"31536000".to_vec()),
            ("worker_name".into(), b"test-worker".to_vec()),
        ];
        if let Some(n) = self.attempts {
            fields.push(("retryd_attempts".into(), n.to_string().into_bytes()));
        }
        for (name, value) in &self.extra {
            fields.retain(|(n, _)| n != name);
            fields.push((name.clone(), value.clone()));
        }
        pipe.hset_multiple(&key, &fields).ignore();
        pipe.expire(&key, 31_536_000).ignore();
        let expiry = chrono::Utc::now().timestamp() + 31_536_000;
        pipe.zadd(format!("rq:failed:{}", self.queue), &self.id, expiry)
            .ignore();
        let exc = base64::engine::general_purpose::STANDARD
            .encode(zlib(traceback(&self.exc_type, &self.message).as_bytes()));
        pipe.cmd("XADD")
            .arg(format!("rq:results:{}", self.id))
            .arg("MAXLEN")
            .arg("~")
            .arg(10)
            .arg("*")
            .arg("type")
            .arg(2)
            .arg("exc_string")
            .arg(exc)
            .arg("worker_name")
            .arg("test-worker")
            .ignore();
        pipe.sadd("rq:queues", format!("rq:queue:{}", self.queue))
            .ignore();
    }
}

/// A key's type, its content items, and whether it has an expiry.
pub type KeyContent = (String, Vec<Vec<u8>>, bool);

/// The logical content of one key: every byte of every field/member/value, order-independent
/// where Redis's own order is not stable (hash and set iteration order can change on mere reads
/// while a dict rehashes, so DUMP of a hash is not a stable fingerprint).
pub fn key_content(con: &mut redis::Connection, key: &[u8]) -> KeyContent {
    let kind: String = redis::cmd("TYPE").arg(key).query(con).unwrap();
    let mut items: Vec<Vec<u8>> = match kind.as_str() {
        "hash" => {
            let flat: Vec<Vec<u8>> = redis::cmd("HGETALL").arg(key).query(con).unwrap();
            flat.chunks(2)
                .map(|p| [p[0].as_slice(), b"=", p[1].as_slice()].concat())
                .collect()
        }
        "set" => redis::cmd("SMEMBERS").arg(key).query(con).unwrap(),
        "none" => Vec::new(),
        _ => {
            let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(key).query(con).unwrap();
            dump.into_iter().collect()
        }
    };
    if kind == "hash" || kind == "set" {
        items.sort();
    }
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(con).unwrap();
    (kind, items, ttl >= 0)
}

/// Every key with its content and whether it has an expiry, for byte-for-byte comparisons.
pub fn snapshot(con: &mut redis::Connection) -> std::collections::BTreeMap<Vec<u8>, KeyContent> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(con).unwrap();
    keys.into_iter()
        .map(|k| {
            let content = key_content(con, &k);
            (k, content)
        })
        .collect()
}

/// An async connection to `server`, as the library's reads and the executor take one.
pub async fn async_con(server: &super::RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The decoded facts of failed job `id` of `queue` (panics when it does not decode).
pub async fn read_facts(
    con: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    id: &str,
) -> rq_retryd::rq::JobFacts {
    use rq_retryd::rq::{decode, DecodeOutcome, Keys, Registry};
    let raw = Registry::new(Keys::new("rq"))
        .read_jobs(con, queue, &[id.to_string()])
        .await
        .unwrap()
        .remove(0);
    match decode(&raw) {
        DecodeOutcome::Job(f) => *f,
        other => panic!("job {id} did not decode: {other:?}"),
    }
}

/// The ids a queue (list) or registry (sorted set) holds now; empty for a missing key.
pub fn members(con: &mut redis::Connection, key: &str) -> std::collections::BTreeSet<String> {
    let kind: String = redis::cmd("TYPE").arg(key).query(con).unwrap();
    match kind.as_str() {
        "list" => con.lrange::<_, Vec<String>>(key, 0, -1).unwrap(),
        "zset" => con.zrange::<_, Vec<String>>(key, 0, -1).unwrap(),
        _ => Vec::new(),
    }
    .into_iter()
    .collect()
}

/// `ids` as the set [`members`] answers, to compare with it.
pub fn id_set<S: AsRef<str>>(ids: &[S]) -> std::collections::BTreeSet<String> {
    ids.iter().map(|s| s.as_ref().to_string()).collect()
}
