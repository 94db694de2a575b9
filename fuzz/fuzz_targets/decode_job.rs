//! Fuzzes the job decoder: `rq::decode` on a whole registry entry, plus the field decoders it
//! uses (`func_name_from_data`, `func_name_from_description`, `from_exc_string`,
//! `from_exc_info`) on every stored value. None of them may panic, and `decode` must keep the
//! promises its callers rely on (checked below).
//!
//! An input is read in one of two ways:
//! - starting with `RQJOB1\n`: the seed format written by `fuzz/make_seeds.py` (real RQ 1.x/2.x
//!   job fields, length-prefixed; see [`parse_seed`]), so libFuzzer mutates realistic jobs;
//! - anything else: an [`Input`] built with `arbitrary`, which generates both garbage and
//!   well-formed pieces (zlib, base64, pickles, RQ timestamps) so the fuzzer gets past the
//!   first checks.
#![no_main]

use std::io::Write;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use rq_retryd::rq::job::{format_rq_timestamp, parse_rq_timestamp, FailedAt, Reads, FIELDS};
use rq_retryd::rq::{decode, failure, payload, CorruptReason, DecodeOutcome, RawJob};

/// Magic that selects the seed format.
const SEED_MAGIC: &[u8] = b"RQJOB1\n";

/// One stored value, as raw bytes or as one of the encodings RQ really writes.
#[derive(Arbitrary, Debug)]
enum Value {
    Raw(Vec<u8>),
    Text(String),
    /// zlib(bytes), as RQ stores `data` and the legacy `exc_info`.
    Zlib(Vec<u8>),
    /// base64(zlib(text)), as RQ 2.x stores a result's `exc_string`.
    ExcString(String),
    /// base64 of arbitrary bytes (valid base64, probably not zlib).
    Base64(Vec<u8>),
    Timestamp(Timestamp),
    Count(u64),
    /// A pickled `(func_name, None, (), {})`, maybe compressed.
    Pickle(Pickle),
    /// A `JSONSerializer` payload `[func_name, null, [], {}]`, maybe compressed.
    Json {
        func: String,
        compress: bool,
    },
}

/// An RQ timestamp (`%Y-%m-%dT%H:%M:%S.%fZ`), with fields that may be out of range.
#[derive(Arbitrary, Debug)]
struct Timestamp {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    fraction: u32,
    fraction_digits: u8,
    padding: bool,
}

#[derive(Arbitrary, Debug)]
enum NameOp {
    /// Protocol 0 `UNICODE` (`V...\n`).
    Unicode,
    ShortBinUnicode,
    BinUnicode,
    BinUnicode8,
}

#[derive(Arbitrary, Debug)]
struct Pickle {
    protocol: Option<u8>,
    frame: Option<u64>,
    mark: bool,
    op: NameOp,
    name: String,
    /// Added to the length prefix: a wrong length must not make the reader panic.
    length_skew: i8,
    trailer: Vec<u8>,
    compress: bool,
}

#[derive(Arbitrary, Debug)]
enum Hash {
    /// The ten HMGET answers, each present or not.
    Fields(Box<[Option<Value>; 11]>),
    /// An answer of any length (the decoder must not index past it).
    AnyLength(Vec<Option<Vec<u8>>>),
    /// Redis's error, e.g. WRONGTYPE.
    Error(String),
}

#[derive(Arbitrary, Debug)]
enum Results {
    NoEntry,
    Entry(Vec<(Vec<u8>, Value)>),
    /// An entry with an `exc_string` field among others.
    WithExcString {
        before: Vec<(Vec<u8>, Vec<u8>)>,
        exc_string: Value,
    },
    Error(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    job_id: String,
    queue: String,
    hash: Hash,
    results: Results,
    /// The failed registry's score (dates a failure RQ recorded without `ended_at`).
    score: Option<f64>,
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

fn base64(bytes: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into_bytes()
}

impl Timestamp {
    fn render(&self) -> String {
        let digits = usize::from(self.fraction_digits % 10);
        let fraction = if digits == 0 {
            String::new()
        } else {
            let f = format!("{:09}", self.fraction % 1_000_000_000);
            format!(".{}", &f[..digits])
        };
        let text = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}Z",
            self.year % 10_000,
            self.month % 14,
            self.day % 33,
            self.hour % 25,
            self.minute % 61,
            self.second % 62,
        );
        if self.padding {
            format!(" {text}\n")
        } else {
            text
        }
    }
}

impl Pickle {
    fn render(&self) -> Vec<u8> {
        let mut p = Vec::new();
        if let Some(protocol) = self.protocol {
            p.extend([0x80, protocol]);
        }
        if let Some(frame) = self.frame {
            p.push(0x95);
            p.extend(frame.to_le_bytes());
        }
        if self.mark {
            p.push(b'(');
        }
        let name = self.name.as_bytes();
        let skewed = |len: usize| (len as i64 + i64::from(self.length_skew)).max(0) as u64;
        match self.op {
            NameOp::Unicode => {
                p.push(b'V');
                p.extend(name);
                p.push(b'\n');
            }
            NameOp::ShortBinUnicode => {
                p.extend([0x8c, skewed(name.len()).min(255) as u8]);
                p.extend(name);
            }
            NameOp::BinUnicode => {
                p.push(b'X');
                p.extend((skewed(name.len()).min(u64::from(u32::MAX)) as u32).to_le_bytes());
                p.extend(name);
            }
            NameOp::BinUnicode8 => {
                p.push(0x8d);
                p.extend(skewed(name.len()).to_le_bytes());
                p.extend(name);
            }
        }
        // The rest of `(func_name, None, (), {})`, then the caller's trailer.
        p.extend(b"\x94N)}\x94t\x94.");
        p.extend(&self.trailer);
        if self.compress {
            zlib(&p)
        } else {
            p
        }
    }
}

impl Value {
    fn render(&self) -> Vec<u8> {
        match self {
            Value::Raw(b) => b.clone(),
            Value::Text(t) => t.clone().into_bytes(),
            Value::Zlib(b) => zlib(b),
            Value::ExcString(t) => base64(&zlib(t.as_bytes())),
            Value::Base64(b) => base64(b),
            Value::Timestamp(t) => t.render().into_bytes(),
            Value::Count(n) => n.to_string().into_bytes(),
            Value::Pickle(p) => p.render(),
            Value::Json { func, compress } => {
                let json = serde_json::json!([func, null, [], {}]).to_string();
                if *compress {
                    zlib(json.as_bytes())
                } else {
                    json.into_bytes()
                }
            }
        }
    }
}

impl Input {
    fn into_raw(self) -> RawJob {
        let hash = match self.hash {
            Hash::Fields(fields) => Ok(fields
                .iter()
                .map(|v| v.as_ref().map(Value::render))
                .collect()),
            Hash::AnyLength(values) => Ok(values),
            Hash::Error(e) => Err(e),
        };
        let newest = match self.results {
            Results::NoEntry => Ok(None),
            Results::Entry(fields) => Ok(Some(
                fields.into_iter().map(|(k, v)| (k, v.render())).collect(),
            )),
            Results::WithExcString {
                mut before,
                exc_string,
            } => {
                before.push((b"exc_string".to_vec(), exc_string.render()));
                Ok(Some(before))
            }
            Results::Error(e) => Err(e),
        };
        RawJob {
            job_id: self.job_id,
            queue: self.queue,
            reads: Reads::ALL,
            hash,
            score: self.score,
            results: results_of(newest),
        }
    }
}

/// Reads the seed format: `RQJOB1\n`, then records `tag (1 byte), length (u32 LE), bytes`.
/// Tags: `i` job id, `q` queue, `0`..`9` the value of `FIELDS[n]`, `W` the hash's Redis error,
/// `N` an empty results entry, `r` a results field (`u32 LE key length, key, value`), `R` the
/// results stream's Redis error. A truncated record ends the input; unknown tags are skipped.
fn parse_seed(mut data: &[u8]) -> RawJob {
    let mut raw = RawJob {
        job_id: String::new(),
        queue: String::new(),
        reads: Reads::ALL,
        hash: Ok(vec![None; FIELDS.len()]),
        score: None,
        results: Ok(Vec::new()),
    };
    let mut newest: Result<Option<Vec<(Vec<u8>, Vec<u8>)>>, String> = Ok(None);
    while data.len() >= 5 {
        let tag = data[0];
        let len = u32::from_le_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let Some(value) = data.get(5..5usize.saturating_add(len)) else {
            break;
        };
        data = &data[5 + len..];
        match tag {
            b'i' => raw.job_id = String::from_utf8_lossy(value).into_owned(),
            b'q' => raw.queue = String::from_utf8_lossy(value).into_owned(),
            b'0'..=b'9' => {
                if let Ok(values) = raw.hash.as_mut() {
                    values[usize::from(tag - b'0')] = Some(value.to_vec());
                }
            }
            b'W' => raw.hash = Err(String::from_utf8_lossy(value).into_owned()),
            b'N' => {
                if let Ok(entry @ None) = newest.as_mut() {
                    *entry = Some(Vec::new());
                }
            }
            b'r' => {
                if value.len() < 4 {
                    continue;
                }
                let key_len = u32::from_le_bytes([value[0], value[1], value[2], value[3]]) as usize;
                let rest = &value[4..];
                let (key, val) = rest.split_at(key_len.min(rest.len()));
                if let Ok(entry) = newest.as_mut() {
                    entry
                        .get_or_insert_with(Vec::new)
                        .push((key.to_vec(), val.to_vec()));
                }
            }
            b'R' => newest = Err(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
    raw.results = results_of(newest);
    raw
}

/// The newest entry (or the stream's error) as the read returns the entries (stream id,
/// fields), so that whether the last run succeeded is decoded from fuzzed fields too.
fn results_of(
    newest: Result<Option<Vec<(Vec<u8>, Vec<u8>)>>, String>,
) -> Result<Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>, String> {
    newest.map(|fields| {
        fields
            .map(|fields| vec![("1714564800100-0".to_string(), fields)])
            .unwrap_or_default()
    })
}

fn field<'a>(raw: &'a RawJob, name: &str) -> Option<&'a [u8]> {
    let index = FIELDS.iter().position(|f| *f == name)?;
    raw.hash.as_ref().ok()?.get(index)?.as_deref()
}

/// Runs every decoder on `raw` and checks what `decode` promises.
fn check(raw: &RawJob) {
    // The field decoders on every value, whether or not `decode` would reach them.
    if let Ok(values) = &raw.hash {
        for value in values.iter().flatten() {
            let _ = payload::func_name_from_data(value);
            let _ = rq_retryd::rq::meta::decode(Some(value));
            let _ = rq_retryd::rq::pickle::second_element_class(value);
            let _ = failure::from_exc_info(value).map_err(|e| e.to_string());
            let _ = failure::from_exc_string(value).map_err(|e| e.to_string());
            if let Ok(text) = std::str::from_utf8(value) {
                let _ = payload::func_name_from_description(text);
            }
        }
    }
    if let Ok(Some(entry)) = raw.newest_result() {
        for (_, value) in entry {
            let _ = failure::from_exc_string(value).map_err(|e| e.to_string());
        }
    }

    let outcome = decode(raw);
    assert_eq!(outcome, decode(raw), "decode is deterministic");
    match &outcome {
        DecodeOutcome::Orphan => {
            let values = raw.hash.as_ref().expect("an orphan has a readable hash");
            assert!(values.iter().all(Option::is_none), "orphan with fields");
        }
        DecodeOutcome::Corrupt(reason) => {
            assert!(!reason.to_string().is_empty());
            if raw.hash.is_err() {
                assert!(matches!(reason, CorruptReason::WrongType(_)), "{reason:?}");
            }
        }
        DecodeOutcome::Job(facts) => {
            assert!(raw.hash.is_ok(), "a job from a WRONGTYPE answer");
            assert!(
                raw.results.is_ok(),
                "a job despite an unreadable results stream"
            );
            assert_eq!(facts.job_id, raw.job_id);
            assert_eq!(facts.queue, raw.queue);
            // The compare-and-set token is exactly what is stored.
            let stored = |name| field(raw, name).unwrap_or_default();
            assert_eq!(facts.cas.origin.as_bytes(), stored("origin"));
            assert_eq!(facts.cas.ended_at.as_bytes(), stored("ended_at"));
            if facts.cas.ended_at.is_empty() {
                // Only a failure RQ recorded without ended_at (a dead worker's, or a stopped
                // job's: issue 21), dated by its registry score.
                assert_eq!(facts.failed_at_from, FailedAt::FailedRegistry);
                assert!(
                    matches!(facts.status.as_deref(), Some("failed" | "stopped")),
                    "{:?}",
                    facts.status
                );
                assert!(raw.score.is_some(), "dated without a score");
            }
            assert_eq!(facts.cas.attempts.as_bytes(), stored("retryd_attempts"));
            if facts.cas.origin.is_empty() {
                assert_eq!(facts.origin, raw.queue);
            } else {
                assert_eq!(facts.origin, facts.cas.origin);
            }
            // A decoded failure time survives RQ's own format (to the microsecond).
            let again = parse_rq_timestamp(&format_rq_timestamp(facts.failed_at))
                .expect("a formatted timestamp parses");
            assert_eq!(again.timestamp_micros(), facts.failed_at.timestamp_micros());
            assert_eq!(facts.exhausted, stored("retryd_exhausted") == b"1");
            // What the HTTP API serves.
            serde_json::to_string(facts).expect("JobFacts serializes");
            // What a scan reads for its policies: less never turns a job corrupt, and what it
            // decodes agrees with the full read.
            for reads in [
                Reads::DECISION,
                Reads {
                    function: true,
                    failure: false,
                    meta: false,
                },
                Reads {
                    function: false,
                    failure: true,
                    meta: false,
                },
                Reads {
                    function: false,
                    failure: false,
                    meta: true,
                },
            ] {
                match decode(&project(raw, reads)) {
                    DecodeOutcome::Job(part) => {
                        assert_eq!(part.cas, facts.cas);
                        assert_eq!(part.failed_at, facts.failed_at);
                        assert_eq!(part.attempts, facts.attempts);
                        assert_eq!(part.exhausted, facts.exhausted);
                        assert_eq!(part.origin, facts.origin);
                    }
                    other => panic!("a read of {reads:?} of a decodable job gave {other:?}"),
                }
            }
        }
    }
}

/// What a read of `reads` would have returned for `raw`, a read of everything.
fn project(raw: &RawJob, reads: Reads) -> RawJob {
    RawJob {
        job_id: raw.job_id.clone(),
        queue: raw.queue.clone(),
        reads,
        score: raw.score,
        hash: raw.hash.as_ref().map_err(Clone::clone).map(|_| {
            reads
                .fields()
                .iter()
                .map(|name| field(raw, name).map(<[u8]>::to_vec))
                .collect()
        }),
        results: if reads.failure {
            raw.results.clone()
        } else {
            Ok(Vec::new())
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = match data.strip_prefix(SEED_MAGIC) {
        Some(seed) => parse_seed(seed),
        None => match Input::arbitrary_take_rest(Unstructured::new(data)) {
            Ok(input) => input.into_raw(),
            Err(_) => return,
        },
    };
    check(&raw);
});
