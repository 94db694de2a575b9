//! Decoding a failed job's stored fields into [`JobFacts`]: pure, never panics, never guesses.
//!
//! Anything that prevents a safe decision (a field that is not UTF-8, a missing or unparseable
//! `ended_at`, an unreadable failure text, a key of the wrong type) makes the job
//! [`DecodeOutcome::Corrupt`]: it is skipped and counted, and no policy ever acts on it.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use super::failure::{self, Failure, FailureTextError};
use super::meta::{self, Meta};
use super::payload;

/// The hash fields read for every failed job, in this order (one HMGET).
pub const FIELDS: [&str; 13] = [
    "status",
    "origin",
    "description",
    "data",
    "ended_at",
    "exc_info",
    "retryd_attempts",
    "retryd_policy",
    "retryd_requeued_at",
    "retryd_exhausted",
    "failure_ttl",
    "created_at",
    "meta",
];

/// Which optional parts of a failed job a read fetches. Deciding needs only the fields in
/// [`Reads::fields`] with every flag off; a policy that matches on the function, the failure
/// or `meta` asks for more (see `policy::reads_for`), and explain and the HTTP API read
/// everything. A part that is not read cannot make a job undecodable, and is `None` in
/// [`JobFacts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    /// `data` and `description`, where the function name comes from.
    pub function: bool,
    /// The failure text: the newest `rq:results:<id>` entry and the legacy `exc_info` field;
    /// and from the two newest entries, whether the job's last run succeeded.
    pub failure: bool,
    /// `meta`, RQ's `job.meta` (see [`super::meta`]).
    pub meta: bool,
}

impl Reads {
    /// Only what every decision needs.
    pub const DECISION: Reads = Reads {
        function: false,
        failure: false,
        meta: false,
    };
    /// Every field in [`FIELDS`] and the newest result.
    pub const ALL: Reads = Reads {
        function: true,
        failure: true,
        meta: true,
    };

    /// The hash fields to HMGET, in reply order: those every decision needs (`created_at`
    /// among them, a few bytes, for `max_age`), then the parts asked for. `retryd_policy`
    /// and `retryd_requeued_at` are only shown, and fetched with both the function and the failure.
    /// Worked out once per combination: built per job, the list was three allocations a
    /// job in a first build (docs/benchmarks.md, session 22).
    pub fn fields(self) -> &'static [&'static str] {
        static LISTS: std::sync::LazyLock<[Vec<&'static str>; 8]> =
            std::sync::LazyLock::new(|| {
                std::array::from_fn(|bits| {
                    let reads = Reads {
                        function: bits & 1 != 0,
                        failure: bits & 2 != 0,
                        meta: bits & 4 != 0,
                    };
                    FIELDS
                        .iter()
                        .copied()
                        .filter(|field| match *field {
                            "description" | "data" => reads.function,
                            "exc_info" => reads.failure,
                            "meta" => reads.meta,
                            "retryd_policy" | "retryd_requeued_at" => {
                                reads.function && reads.failure
                            }
                            _ => true,
                        })
                        .collect()
                })
            });
        let bits = usize::from(self.function)
            | usize::from(self.failure) << 1
            | usize::from(self.meta) << 2;
        &LISTS[bits]
    }
}

/// The field/value pairs of one stream entry, as stored.
pub type StreamFields = Vec<(Vec<u8>, Vec<u8>)>;

/// What Redis returned for one registry entry, before any interpretation.
#[derive(Debug, Clone)]
pub struct RawJob {
    pub job_id: String,
    /// The queue whose failed registry holds the id.
    pub queue: String,
    /// What was read: `hash` holds `reads.fields()`, and `results` is empty unless
    /// `reads.failure`.
    pub reads: Reads,
    /// HMGET of `reads.fields()`; `Err` holds Redis's error (e.g. WRONGTYPE).
    pub hash: Result<Vec<Option<Vec<u8>>>, String>,
    /// The id's score in the failed registry (when it failed + its `failure_ttl`), read with
    /// the hash; `None` when the id was not in the registry at that moment.
    pub score: Option<f64>,
    /// The two newest `rq:results:<id>` entries (stream id, fields), newest first, when
    /// `reads.failure`: the failure text is the newest's, and whether the job's last run
    /// succeeded is read off both (see [`succeeded_at`]). `Err` holds Redis's error.
    pub results: Result<Vec<(String, StreamFields)>, String>,
}

impl RawJob {
    /// Fields of the newest `rq:results:<id>` entry, if any; `Err` holds Redis's error.
    pub fn newest_result(&self) -> Result<Option<&StreamFields>, &str> {
        match &self.results {
            Ok(entries) => Ok(entries.first().map(|(_, fields)| fields)),
            Err(e) => Err(e),
        }
    }
}

/// Everything the policy engine needs to know about one failed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobFacts {
    pub job_id: String,
    /// The queue whose failed registry holds the job.
    pub queue: String,
    /// The queue the job is requeued onto (`origin`; the registry's queue when missing).
    pub origin: String,
    pub status: Option<String>,
    pub func_name: Option<String>,
    pub description: Option<String>,
    /// When the job failed: `ended_at`, or, for a failure RQ recorded without one, when RQ
    /// added it to the failed registry (see [`FailedAt`]).
    pub failed_at: DateTime<Utc>,
    /// Where `failed_at` comes from.
    pub failed_at_from: FailedAt,
    /// Automatic requeues so far (`retryd_attempts`).
    pub attempts: u32,
    pub exhausted: bool,
    pub last_policy: Option<String>,
    pub requeued_at: Option<String>,
    /// When RQ recorded the job's last run as a success, although the job is in the failed
    /// registry (rq/rq#2424: a finished job later failed as abandoned; see [`succeeded_at`]).
    /// Known only when the results were read (`reads.failure`); `None` otherwise.
    pub succeeded_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub failure: Option<Failure>,
    /// The stored values the executor compares before writing (compare-and-set).
    #[serde(skip)]
    pub cas: CasToken,
    /// What was read: without `function`, `func_name` and `description` are `None`; without
    /// `failure`, `failure` is; without `meta`, `meta` is.
    #[serde(skip)]
    pub reads: Reads,
    /// When RQ created the job (`created_at`); `None` when it is missing or not an RQ
    /// timestamp, which never makes the job undecodable (only `max_age` looks at it).
    #[serde(skip)]
    pub created_at: Option<DateTime<Utc>>,
    /// RQ's `job.meta`, when read; unreadable meta only fails `meta` matchers.
    #[serde(skip)]
    pub meta: Option<Meta>,
}

/// The stored values that identify one failure of one job. A script writes only when all three
/// still hold, so a decision taken on stale facts is a no-op instead of a double requeue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CasToken {
    pub origin: String,
    pub ended_at: String,
    pub attempts: String,
}

impl JobFacts {
    pub fn exc_type(&self) -> Option<&str> {
        self.failure.as_ref().and_then(|f| f.exc_type.as_deref())
    }

    pub fn failure_text(&self) -> Option<&str> {
        self.failure.as_ref().map(|f| f.text.as_str())
    }

    /// RQ marks the job stopped (`status=stopped`): an operator stopped it (`rq job stop`,
    /// `send_stop_job_command`). Never retried automatically.
    pub fn stopped(&self) -> bool {
        self.status.as_deref() == Some(STOPPED)
    }
}

/// The status RQ's worker gives a job an operator stopped (`JobStatus.STOPPED`).
pub const STOPPED: &str = "stopped";

/// The result of decoding one registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeOutcome {
    Job(Box<JobFacts>),
    /// The registry holds the id but the job hash is gone (expired or deleted).
    Orphan,
    Corrupt(CorruptReason),
}

/// Why a job could not be decoded safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorruptReason {
    WrongType(String),
    NotUtf8(&'static str),
    MissingField(&'static str),
    BadTimestamp { field: &'static str, value: String },
    BadNumber { field: &'static str, value: String },
    FailureText(FailureTextError),
    Results(String),
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptReason::WrongType(e) => write!(f, "job key has the wrong type: {e}"),
            CorruptReason::NotUtf8(field) => write!(f, "field {field} is not UTF-8"),
            CorruptReason::MissingField(field) => write!(f, "field {field} is missing"),
            CorruptReason::BadTimestamp { field, value } => {
                write!(f, "field {field} is not an RQ timestamp: {value:?}")
            }
            CorruptReason::BadNumber { field, value } => {
                write!(f, "field {field} is not a count: {value:?}")
            }
            CorruptReason::FailureText(e) => write!(f, "failure text unreadable: {e}"),
            CorruptReason::Results(e) => write!(f, "results stream unreadable: {e}"),
        }
    }
}

/// Decodes what was read for one registry entry.
pub fn decode(raw: &RawJob) -> DecodeOutcome {
    match decode_facts(raw) {
        Ok(Some(facts)) => DecodeOutcome::Job(Box::new(facts)),
        Ok(None) => DecodeOutcome::Orphan,
        Err(reason) => DecodeOutcome::Corrupt(reason),
    }
}

fn decode_facts(raw: &RawJob) -> Result<Option<JobFacts>, CorruptReason> {
    let values = raw
        .hash
        .as_ref()
        .map_err(|e| CorruptReason::WrongType(e.clone()))?;
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let hash = Hash {
        fields: raw.reads.fields(),
        values,
    };
    let origin_raw = hash.text("origin")?.unwrap_or_default();
    let origin = if origin_raw.is_empty() {
        raw.queue.clone()
    } else {
        origin_raw.clone()
    };
    let status = hash.text("status")?;
    let ended_at = hash.text("ended_at")?.unwrap_or_default();
    let (failed_at, failed_at_from) = failure_time(raw, &hash, status.as_deref(), &ended_at)?;
    let attempts_raw = hash.text("retryd_attempts")?.unwrap_or_default();
    let attempts = parse_attempts(&attempts_raw)?;
    let description = hash.text("description")?;
    let func_name = hash
        .field("data")
        .and_then(payload::func_name_from_data)
        .or_else(|| {
            description
                .as_deref()
                .and_then(payload::func_name_from_description)
        });
    let failure = if raw.reads.failure {
        read_failure(raw, hash.field("exc_info"))?
    } else {
        None
    };

    Ok(Some(JobFacts {
        job_id: raw.job_id.clone(),
        queue: raw.queue.clone(),
        origin,
        status,
        func_name,
        description,
        failed_at,
        failed_at_from,
        attempts,
        exhausted: hash.text("retryd_exhausted")?.as_deref() == Some("1"),
        last_policy: hash.text("retryd_policy")?.filter(|p| !p.is_empty()),
        requeued_at: hash.text("retryd_requeued_at")?.filter(|p| !p.is_empty()),
        succeeded_at: if raw.reads.failure {
            succeeded_at(raw.results.as_deref().unwrap_or_default())
        } else {
            None
        },
        failure,
        cas: CasToken {
            origin: origin_raw,
            ended_at,
            attempts: attempts_raw,
        },
        reads: raw.reads,
        created_at: hash
            .field("created_at")
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(parse_rq_timestamp),
        meta: raw.reads.meta.then(|| meta::decode(hash.field("meta"))),
    }))
}

/// The HMGET reply of one job: the values of `fields`, in order.
struct Hash<'a> {
    fields: &'static [&'static str],
    values: &'a [Option<Vec<u8>>],
}

impl Hash<'_> {
    /// The stored bytes of `name`, when it is set (and was read).
    fn field(&self, name: &'static str) -> Option<&[u8]> {
        let index = self.fields.iter().position(|f| *f == name)?;
        self.values.get(index).and_then(|v| v.as_deref())
    }

    /// `name` as text; a field that is not UTF-8 makes the job corrupt.
    fn text(&self, name: &'static str) -> Result<Option<String>, CorruptReason> {
        self.field(name)
            .map(|b| String::from_utf8(b.to_vec()).map_err(|_| CorruptReason::NotUtf8(name)))
            .transpose()
    }
}

/// When the job failed, and where that time comes from: its `ended_at`, or for a job RQ
/// failed without one, the time it was added to the failed registry.
fn failure_time(
    raw: &RawJob,
    hash: &Hash<'_>,
    status: Option<&str>,
    ended_at: &str,
) -> Result<(DateTime<Utc>, FailedAt), CorruptReason> {
    if ended_at.is_empty() {
        // RQ fails a job whose worker died (StartedJobRegistry.cleanup: AbandonedJobError;
        // 2.x's intermediate queue cleanup) without an ended_at, and so it fails a job an
        // operator stopped (status stopped). Such a job is a failure all the same when RQ
        // says so; anything else without ended_at is not safe to act on.
        let failure_ttl = hash.text("failure_ttl")?;
        let added = matches!(status, Some("failed" | STOPPED))
            .then(|| added_to_failed_registry(raw.score, failure_ttl.as_deref()))
            .flatten();
        Ok((
            added.ok_or(CorruptReason::MissingField("ended_at"))?,
            FailedAt::FailedRegistry,
        ))
    } else {
        let at = parse_rq_timestamp(ended_at).ok_or_else(|| CorruptReason::BadTimestamp {
            field: "ended_at",
            value: ended_at.to_string(),
        })?;
        Ok((at, FailedAt::EndedAt))
    }
}

/// rq-retryd's attempt count as stored (`retryd_attempts`; unset is 0).
fn parse_attempts(stored: &str) -> Result<u32, CorruptReason> {
    if stored.is_empty() {
        return Ok(0);
    }
    stored
        .trim()
        .parse::<u32>()
        .map_err(|_| CorruptReason::BadNumber {
            field: "retryd_attempts",
            value: stored.to_string(),
        })
}

/// Where a job's failure time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailedAt {
    /// The job's `ended_at`, as RQ's worker wrote it.
    #[default]
    EndedAt,
    /// RQ failed the job without `ended_at` (its worker died): the time RQ added it to the
    /// failed registry, its score minus its `failure_ttl` (RQ's default of a year when unset).
    FailedRegistry,
}

/// When RQ added a job to a failed registry: `FailedJobRegistry.add` scores it
/// `now + failure_ttl` (whole seconds), `DEFAULT_FAILURE_TTL` when the job has none. `None` when
/// that cannot be told: no score, a negative or unreadable ttl, a score that is no time.
fn added_to_failed_registry(
    score: Option<f64>,
    failure_ttl: Option<&str>,
) -> Option<DateTime<Utc>> {
    const DEFAULT_FAILURE_TTL: i64 = 31_536_000;
    let ttl = match failure_ttl.map(str::trim).filter(|t| !t.is_empty()) {
        None => DEFAULT_FAILURE_TTL,
        Some(text) => text.parse::<i64>().ok().filter(|t| *t >= 0)?,
    };
    let score = score.filter(|s| s.is_finite())?;
    let at = score - ttl as f64;
    if !(0.0..1e11).contains(&at) {
        return None;
    }
    DateTime::from_timestamp_millis((at * 1000.0).round() as i64)
}

/// The newest results entry's `exc_string` (RQ >= 1.12), else the legacy `exc_info` field.
fn read_failure(raw: &RawJob, exc_info: Option<&[u8]>) -> Result<Option<Failure>, CorruptReason> {
    let entry = raw
        .newest_result()
        .map_err(|e| CorruptReason::Results(e.to_string()))?;
    let exc_string = entry
        .and_then(|fields| fields.iter().find(|(k, _)| k == b"exc_string"))
        .map(|(_, v)| v.as_slice())
        .filter(|v| !v.is_empty());
    if let Some(encoded) = exc_string {
        return failure::from_exc_string(encoded)
            .map(Some)
            .map_err(CorruptReason::FailureText);
    }
    match exc_info.filter(|v| !v.is_empty()) {
        Some(stored) => failure::from_exc_info(stored)
            .map(Some)
            .map_err(CorruptReason::FailureText),
        None => Ok(None),
    }
}

/// The `type` RQ's `Result` stores for a success (`Result.Type.SUCCESSFUL`, the same in RQ
/// 1.16 and 2.x, written as the integer's text).
const RESULT_SUCCESSFUL: &[u8] = b"1";
/// The `type` of a failure (`Result.Type.FAILED`).
const RESULT_FAILED: &[u8] = b"2";

/// When the job's last run succeeded, from its two newest results entries (newest first), or
/// `None`. A failed job whose last run succeeded was moved to the failed registry afterwards:
/// RQ's `StartedJobRegistry.cleanup` found it still listed as started (rq/rq#2424) and failed
/// it as abandoned. RQ 1.16 writes no result for that, so the newest entry is the success;
/// RQ 2.x writes a failure result on top of it, the one a registry cleanup writes
/// (`worker_name` present and empty, no `execution_id`; a worker's own failure results name
/// the worker). The job's work was done: running it again repeats its side effects.
/// The time is the success entry's (its stream id's milliseconds). `requeue.lua` applies the
/// same rule (keep the two in step).
pub fn succeeded_at(latest: &[(String, StreamFields)]) -> Option<DateTime<Utc>> {
    fn field<'f>(fields: &'f StreamFields, name: &[u8]) -> Option<&'f [u8]> {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
    let success = |(id, fields): &(String, StreamFields)| {
        (field(fields, b"type") == Some(RESULT_SUCCESSFUL)).then(|| stream_time(id))
    };
    let newest = latest.first()?;
    if let Some(at) = success(newest) {
        return Some(at);
    }
    let by_cleanup = field(&newest.1, b"type") == Some(RESULT_FAILED)
        && field(&newest.1, b"worker_name") == Some(b"".as_slice())
        && field(&newest.1, b"execution_id").is_none();
    if by_cleanup {
        return latest.get(1).and_then(success);
    }
    None
}

/// The time a stream entry id (`<ms>-<seq>`) names; the epoch for an id that is no time.
fn stream_time(id: &str) -> DateTime<Utc> {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_default()
}

/// RQ's timestamp format, `%Y-%m-%dT%H:%M:%S.%fZ` in UTC (fraction optional, as RQ accepts).
pub fn parse_rq_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    // What RQ writes, read digit by digit; anything else goes through chrono's format, which
    // was 4 % of the daemon's instructions in a first build (docs/benchmarks.md, session 21).
    rq_timestamp_as_written(text.as_bytes()).or_else(|| {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.fZ")
            .ok()
            .map(|naive| naive.and_utc())
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` exactly (RQ writes six digits of fraction), or `None`, also
/// for a date or time that does not exist, which [`parse_rq_timestamp`] then leaves to chrono.
fn rq_timestamp_as_written(b: &[u8]) -> Option<DateTime<Utc>> {
    let num = |at: usize, len: usize| -> Option<u32> {
        let digits = b.get(at..at + len)?;
        digits.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if b.len() < 20 || punctuation.iter().any(|&(at, c)| b[at] != c) || b.last() != Some(&b'Z') {
        return None;
    }
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            num(20, digits.len())? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 2)?, num(8, 2)?)?;
    let time = chrono::NaiveTime::from_hms_nano_opt(num(11, 2)?, num(14, 2)?, num(17, 2)?, nanos)?;
    Some(date.and_time(time).and_utc())
}

/// Formats a time the way RQ writes `enqueued_at` (microseconds, `Z`).
pub fn format_rq_timestamp(at: DateTime<Utc>) -> String {
    match RqTimestamp::of(at) {
        Some(text) => text.as_str().to_owned(),
        // chrono's own form of years past four digits (a sign, more digits); RQ never writes one.
        None => at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    }
}

/// Whether `text` is [`format_rq_timestamp`]'s text of `at`, compared without allocating
/// (a plan is checked against its job's stored `ended_at` once per waiting job).
pub fn is_rq_timestamp_of(text: &str, at: DateTime<Utc>) -> bool {
    match RqTimestamp::of(at) {
        Some(written) => written.as_str() == text,
        None => format_rq_timestamp(at) == text,
    }
}

/// RQ's text of a time in years 0 to 9999 (see [`format_rq_timestamp`]), on the stack.
struct RqTimestamp([u8; 27]);

impl RqTimestamp {
    /// The same text as chrono's `%Y-%m-%dT%H:%M:%S%.6fZ`, written digit by digit: through
    /// chrono's format interpreter, and then through `write!`, this was 2-3 % of a first
    /// build's instructions (docs/benchmarks.md, sessions 21 and 22). A leap second's
    /// nanoseconds (1e9 and up) print as 60 seconds, as chrono does. `None` for other years.
    fn of(at: DateTime<Utc>) -> Option<RqTimestamp> {
        use chrono::{Datelike, Timelike};
        let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
        let (second, nanos) = match at.nanosecond() {
            n if n >= 1_000_000_000 => (at.second() + 1, n - 1_000_000_000),
            n => (at.second(), n),
        };
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, at.month());
        put(8, 2, at.day());
        put(11, 2, at.hour());
        put(14, 2, at.minute());
        put(17, 2, second);
        put(20, 6, nanos / 1_000);
        Some(RqTimestamp(out))
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits and separators")
    }
}

#[cfg(test)]
mod tests;
