//! Table and property tests of `decode`: what RQ 1.x and 2.x leave in Redis, and every way it can
//! be unusable.

use std::io::Write;

use base64::Engine;
use chrono::{TimeZone, Timelike};
use flate2::write::ZlibEncoder;
use proptest::prelude::*;

use super::*;

const JOB_ID: &str = "5f0c7d7e-1b1a-4a8e-9a57-3c1f6e0d2b11";
const ENDED_AT: &str = "2024-05-01T12:00:00.123456Z";

/// `pickle.dumps(('app.tasks.send', None, (42,), {'to': 'x'}), protocol=5)` from CPython 3.11.
const PICKLE5: &[u8] = b"\x80\x05\x95\x26\x00\x00\x00\x00\x00\x00\x00\x28\x8c\x0e\x61\x70\x70\x2e\x74\x61\x73\x6b\x73\x2e\x73\x65\x6e\x64\x94\x4e\x4b\x2a\x85\x94\x7d\x94\x8c\x02\x74\x6f\x94\x8c\x01\x78\x94\x73\x74\x94\x2e";

const TRACEBACK: &str = "Traceback (most recent call last):\n  File \"/app/tasks.py\", line 8, in send\n    conn.send(msg)\nredis.exceptions.TimeoutError: Timeout reading from socket\n";

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// What RQ 2.x writes as a result's `exc_string`: base64(zlib(traceback)).
fn exc_string(traceback: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(zlib(traceback))
        .into_bytes()
}

/// The HMGET answer for these fields, in the order of [`FIELDS`]; the rest are missing.
fn hash(fields: &[(&str, &[u8])]) -> Vec<Option<Vec<u8>>> {
    let mut values = vec![None; FIELDS.len()];
    for (name, value) in fields {
        let i = FIELDS
            .iter()
            .position(|f| f == name)
            .unwrap_or_else(|| panic!("{name} is not read by decode"));
        values[i] = Some(value.to_vec());
    }
    values
}

/// A newest results entry of a failed execution (type 2) carrying `exc_string`.
fn failed_result(exc_string: Vec<u8>) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    Some(vec![
        (b"type".to_vec(), b"2".to_vec()),
        (b"worker_name".to_vec(), b"w1".to_vec()),
        (b"exc_string".to_vec(), exc_string),
        (b"execution_ended_at".to_vec(), b"1714564800.1".to_vec()),
    ])
}

/// The fields an RQ 2.x worker leaves on a failed job (no `exc_info`).
fn rq2_fields() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("status", b"failed".to_vec()),
        ("origin", b"email".to_vec()),
        ("description", b"app.tasks.send(42, to='x')".to_vec()),
        ("data", zlib(PICKLE5)),
        ("ended_at", ENDED_AT.as_bytes().to_vec()),
        ("created_at", b"2024-05-01T11:59:00.000001Z".to_vec()),
    ]
}

fn raw(fields: &[(&str, Vec<u8>)], newest_result: Option<Vec<(Vec<u8>, Vec<u8>)>>) -> RawJob {
    let borrowed: Vec<(&str, &[u8])> = fields.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    RawJob {
        job_id: JOB_ID.to_string(),
        queue: "email".to_string(),
        reads: Reads::ALL,
        hash: Ok(hash(&borrowed)),
        score: None,
        results: as_read(Ok(newest_result)),
    }
}

/// A normal RQ 2.x failed job with `extra` fields set on top (replacing same-named ones).
fn rq2_job(extra: &[(&'static str, Vec<u8>)]) -> RawJob {
    let mut fields = rq2_fields();
    fields.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    fields.extend(extra.iter().cloned());
    raw(&fields, failed_result(exc_string(TRACEBACK.as_bytes())))
}

fn facts(outcome: DecodeOutcome) -> JobFacts {
    match outcome {
        DecodeOutcome::Job(facts) => *facts,
        other => panic!("expected a decoded job, got {other:?}"),
    }
}

fn corrupt(raw: &RawJob) -> CorruptReason {
    match decode(raw) {
        DecodeOutcome::Corrupt(reason) => reason,
        other => panic!("expected a corrupt job, got {other:?}"),
    }
}

fn ended_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + chrono::Duration::microseconds(123_456)
}

#[test]
fn an_rq2_failed_job_decodes_with_its_failure_from_the_results_stream() {
    let job = facts(decode(&rq2_job(&[])));
    assert_eq!(job.job_id, JOB_ID);
    assert_eq!(job.queue, "email");
    assert_eq!(job.origin, "email");
    assert_eq!(job.status.as_deref(), Some("failed"));
    assert_eq!(job.func_name.as_deref(), Some("app.tasks.send"));
    assert_eq!(
        job.description.as_deref(),
        Some("app.tasks.send(42, to='x')")
    );
    assert_eq!(job.failed_at, ended_at());
    assert_eq!(job.attempts, 0);
    assert!(!job.exhausted);
    assert_eq!(job.last_policy, None);
    assert_eq!(job.requeued_at, None);
    assert_eq!(job.failure_text(), Some(TRACEBACK));
    assert_eq!(job.exc_type(), Some("redis.exceptions.TimeoutError"));
    assert_eq!(
        job.cas,
        CasToken {
            origin: "email".to_string(),
            ended_at: ENDED_AT.to_string(),
            attempts: String::new(),
        }
    );
}

#[test]
fn the_state_rq_retryd_added_is_read_back() {
    let job = facts(decode(&rq2_job(&[
        ("retryd_attempts", b"2".to_vec()),
        ("retryd_policy", b"transient-network".to_vec()),
        (
            "retryd_requeued_at",
            b"2024-05-01T11:00:00.000000Z".to_vec(),
        ),
        ("retryd_exhausted", b"1".to_vec()),
    ])));
    assert_eq!(job.attempts, 2);
    assert_eq!(job.cas.attempts, "2");
    assert!(job.exhausted);
    assert_eq!(job.last_policy.as_deref(), Some("transient-network"));
    assert_eq!(
        job.requeued_at.as_deref(),
        Some("2024-05-01T11:00:00.000000Z")
    );

    let cleared = facts(decode(&rq2_job(&[
        ("retryd_attempts", b"".to_vec()),
        ("retryd_policy", b"".to_vec()),
        ("retryd_exhausted", b"0".to_vec()),
    ])));
    assert_eq!(cleared.attempts, 0);
    assert!(!cleared.exhausted);
    assert_eq!(cleared.last_policy, None);
}

#[test]
fn the_results_stream_wins_over_a_stale_exc_info() {
    let job = facts(decode(&rq2_job(&[(
        "exc_info",
        zlib(b"Traceback...\nOldError: from before"),
    )])));
    assert_eq!(job.exc_type(), Some("redis.exceptions.TimeoutError"));
}

#[test]
fn a_results_entry_without_exc_string_falls_back_to_exc_info() {
    let mut fields = rq2_fields();
    fields.push(("exc_info", b"Traceback...\nKeyError: 'id'".to_vec()));
    let entry = Some(vec![(b"type".to_vec(), b"2".to_vec())]);
    let job = facts(decode(&raw(&fields, entry)));
    assert_eq!(job.exc_type(), Some("KeyError"));
}

#[test]
fn a_legacy_rq1_job_reads_its_failure_from_exc_info_compressed_or_plain() {
    let tb = "Traceback (most recent call last):\n  File \"x.py\"\nValueError: bad input\n";
    for (what, stored) in [
        ("compressed", zlib(tb.as_bytes())),
        ("plain", tb.as_bytes().to_vec()),
    ] {
        let mut fields = rq2_fields();
        fields.push(("exc_info", stored));
        let job = facts(decode(&raw(&fields, None)));
        assert_eq!(job.failure_text(), Some(tb), "{what}");
        assert_eq!(job.exc_type(), Some("ValueError"), "{what}");
    }
}

#[test]
fn a_job_without_any_failure_text_decodes_without_a_failure() {
    let job = facts(decode(&raw(&rq2_fields(), None)));
    assert_eq!(job.failure, None);
    assert_eq!(job.exc_type(), None);
}

#[test]
fn a_missing_or_empty_origin_falls_back_to_the_registry_queue() {
    for origin in [None, Some(b"".to_vec())] {
        let mut fields = rq2_fields();
        fields.retain(|(k, _)| *k != "origin");
        if let Some(o) = &origin {
            fields.push(("origin", o.clone()));
        }
        let job = facts(decode(&raw(&fields, None)));
        assert_eq!(job.origin, "email", "origin {origin:?}");
        assert_eq!(job.cas.origin, "", "the CAS token keeps what is stored");
    }
}

#[test]
fn the_function_name_comes_from_data_or_else_from_the_description() {
    let json = facts(decode(&rq2_job(&[(
        "data",
        zlib(br#"["app.json_tasks.run", null, [], {}]"#),
    )])));
    assert_eq!(json.func_name.as_deref(), Some("app.json_tasks.run"));

    let mut fields = rq2_fields();
    fields.retain(|(k, _)| *k != "data");
    let from_description = facts(decode(&raw(&fields, None)));
    assert_eq!(
        from_description.func_name.as_deref(),
        Some("app.tasks.send")
    );

    let unreadable = facts(decode(&rq2_job(&[
        ("data", b"\xff\xfe not a payload".to_vec()),
        ("description", b"my custom description".to_vec()),
    ])));
    assert_eq!(unreadable.func_name, None);
}

/// What RQ's `StartedJobRegistry.cleanup` leaves after a worker died under the job: status
/// failed, no `ended_at`, registry score = when it was added + the job's `failure_ttl`.
/// `max_age` counts from `created_at`; a job without a readable one still decodes (policies
/// without `max_age` never look at it), with no creation time.
#[test]
fn created_at_is_read_and_an_unreadable_one_never_makes_the_job_corrupt() {
    let job = facts(decode(&rq2_job(&[])));
    assert_eq!(
        job.created_at,
        parse_rq_timestamp("2024-05-01T11:59:00.000001Z")
    );
    for bad in [&b"yesterday"[..], b"", b"\xff\xfe"] {
        let job = facts(decode(&rq2_job(&[("created_at", bad.to_vec())])));
        assert_eq!(job.created_at, None, "{bad:?}");
    }
    let mut missing = rq2_fields();
    missing.retain(|(k, _)| *k != "created_at");
    assert_eq!(facts(decode(&raw(&missing, None))).created_at, None);
}

/// `meta` is read with either serializer when asked for; unreadable meta is a value of the
/// facts (it only fails `meta` matchers), never a corrupt job; not asked for, it is not read.
#[test]
fn meta_is_decoded_when_read_and_unreadable_meta_is_not_corruption() {
    use crate::rq::{Meta, MetaValue};
    let pickled =
        b"\x80\x05\x95\x16\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x06tenant\x94\x8c\x06acme-1\x94s."
            .to_vec();
    for stored in [pickled, br#"{"tenant": "acme-1"}"#.to_vec()] {
        let job = facts(decode(&rq2_job(&[("meta", stored)])));
        let meta = job.meta.expect("meta is read by Reads::ALL");
        assert_eq!(
            meta.get("tenant"),
            Some(&MetaValue::Text("acme-1".to_string()))
        );
    }
    assert_eq!(facts(decode(&rq2_job(&[]))).meta, Some(Meta::Read(vec![])));
    let garbage = facts(decode(&rq2_job(&[("meta", b"\x80\x05\x93".to_vec())])));
    assert!(
        matches!(garbage.meta, Some(Meta::Unreadable(_))),
        "{:?}",
        garbage.meta
    );
    let not_read = facts(decode(&project(
        &rq2_job(&[("meta", b"\x80\x05\x93".to_vec())]),
        Reads::DECISION,
    )));
    assert_eq!(not_read.meta, None);
}

fn abandoned(failure_ttl: Option<&str>, score: Option<f64>) -> RawJob {
    let mut fields: Vec<(&str, Vec<u8>)> = rq2_fields()
        .into_iter()
        .filter(|(k, _)| *k != "ended_at")
        .collect();
    if let Some(ttl) = failure_ttl {
        fields.push(("failure_ttl", ttl.as_bytes().to_vec()));
    }
    RawJob {
        score,
        ..raw(
            &fields,
            failed_result(exc_string(
                b"Moved to FailedJobRegistry, due to AbandonedJobError, at 2024-05-01 12:00:00",
            )),
        )
    }
}

// See: issue 11 (the soak: jobs RQ failed after their workers died at a Redis restart had no
// ended_at, were read as undecodable and never retried).
#[test]
fn a_job_rq_failed_without_ended_at_is_dated_by_its_failed_registry_score() {
    let added = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    let t = added.timestamp() as f64;

    let default_ttl = facts(decode(&abandoned(None, Some(t + 31_536_000.0))));
    assert_eq!(default_ttl.failed_at, added);
    assert_eq!(default_ttl.failed_at_from, FailedAt::FailedRegistry);
    assert_eq!(
        default_ttl.cas.ended_at, "",
        "the scripts compare against no ended_at"
    );
    assert_eq!(default_ttl.status.as_deref(), Some("failed"));

    let own_ttl = facts(decode(&abandoned(Some("3600"), Some(t + 3600.0))));
    assert_eq!(own_ttl.failed_at, added);
    let zero_ttl = facts(decode(&abandoned(Some("0"), Some(t))));
    assert_eq!(zero_ttl.failed_at, added);

    let normal = facts(decode(&rq2_job(&[])));
    assert_eq!(normal.failed_at_from, FailedAt::EndedAt);
}

#[test]
fn a_job_without_ended_at_that_cannot_be_dated_or_is_not_failed_stays_undecodable() {
    let t = Utc
        .with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
        .unwrap()
        .timestamp() as f64;
    let missing = CorruptReason::MissingField("ended_at");
    let queued = RawJob {
        score: Some(t + 31_536_000.0),
        ..raw(
            &rq2_fields()
                .into_iter()
                .filter(|(k, _)| *k != "ended_at")
                .map(|(k, v)| {
                    if k == "status" {
                        (k, b"queued".to_vec())
                    } else {
                        (k, v)
                    }
                })
                .collect::<Vec<_>>(),
            None,
        )
    };
    for (what, job) in [
        ("not in the registry any more", abandoned(None, None)),
        ("status not failed (as after RQ's own requeue)", queued),
        ("a negative failure_ttl", abandoned(Some("-1"), Some(-1.0))),
        (
            "a failure_ttl that is no number",
            abandoned(Some("soon"), Some(t)),
        ),
        ("a score before 1970", abandoned(Some("3600"), Some(10.0))),
        ("an infinite score", abandoned(None, Some(f64::INFINITY))),
    ] {
        assert_eq!(corrupt(&job), missing, "{what}");
    }
}

#[test]
fn a_registry_entry_without_a_job_hash_is_an_orphan() {
    let orphan = RawJob {
        job_id: JOB_ID.to_string(),
        queue: "email".to_string(),
        reads: Reads::ALL,
        hash: Ok(vec![None; FIELDS.len()]),
        score: None,
        results: Ok(Vec::new()),
    };
    assert_eq!(decode(&orphan), DecodeOutcome::Orphan);
}

#[test]
fn every_unsafe_job_is_corrupt_with_its_reason() {
    let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
    let cases: Vec<(&str, RawJob, CorruptReason)> = vec![
        (
            "job key is not a hash",
            RawJob {
                hash: Err(wrongtype.to_string()),
                ..rq2_job(&[])
            },
            CorruptReason::WrongType(wrongtype.to_string()),
        ),
        (
            "origin is not UTF-8",
            rq2_job(&[("origin", b"em\xffail".to_vec())]),
            CorruptReason::NotUtf8("origin"),
        ),
        (
            "status is not UTF-8",
            rq2_job(&[("status", b"\xc3\x28".to_vec())]),
            CorruptReason::NotUtf8("status"),
        ),
        (
            "ended_at is missing",
            raw(
                &rq2_fields()
                    .into_iter()
                    .filter(|(k, _)| *k != "ended_at")
                    .collect::<Vec<_>>(),
                None,
            ),
            CorruptReason::MissingField("ended_at"),
        ),
        (
            "ended_at is empty (as after RQ's own requeue)",
            rq2_job(&[("ended_at", b"".to_vec())]),
            CorruptReason::MissingField("ended_at"),
        ),
        (
            "ended_at is garbled",
            rq2_job(&[("ended_at", b"yesterday".to_vec())]),
            CorruptReason::BadTimestamp {
                field: "ended_at",
                value: "yesterday".to_string(),
            },
        ),
        (
            "ended_at has no zone marker",
            rq2_job(&[("ended_at", b"2024-05-01T12:00:00".to_vec())]),
            CorruptReason::BadTimestamp {
                field: "ended_at",
                value: "2024-05-01T12:00:00".to_string(),
            },
        ),
        (
            "retryd_attempts is not a number",
            rq2_job(&[("retryd_attempts", b"abc".to_vec())]),
            CorruptReason::BadNumber {
                field: "retryd_attempts",
                value: "abc".to_string(),
            },
        ),
        (
            "retryd_attempts is negative",
            rq2_job(&[("retryd_attempts", b"-1".to_vec())]),
            CorruptReason::BadNumber {
                field: "retryd_attempts",
                value: "-1".to_string(),
            },
        ),
        (
            "exc_string is not base64",
            raw(&rq2_fields(), failed_result(b"!!not base64!!".to_vec())),
            CorruptReason::FailureText(FailureTextError::NotBase64),
        ),
        (
            "exc_string is base64 of something that is not zlib",
            raw(
                &rq2_fields(),
                failed_result(
                    base64::engine::general_purpose::STANDARD
                        .encode(TRACEBACK)
                        .into_bytes(),
                ),
            ),
            CorruptReason::FailureText(FailureTextError::BadZlib("exc_string")),
        ),
        (
            "the traceback in exc_string is not UTF-8",
            raw(
                &rq2_fields(),
                failed_result(exc_string(b"Traceback\n\xff\xfe: x")),
            ),
            CorruptReason::FailureText(FailureTextError::NotUtf8("exc_string")),
        ),
        (
            "exc_string inflates past the 16 MiB guard",
            raw(
                &rq2_fields(),
                failed_result(exc_string(&vec![b'x'; 17 * 1024 * 1024])),
            ),
            CorruptReason::FailureText(FailureTextError::TooLarge("exc_string")),
        ),
        (
            "the legacy exc_info is not UTF-8",
            raw(
                &[
                    rq2_fields(),
                    vec![("exc_info", b"ValueError: \xff".to_vec())],
                ]
                .concat(),
                None,
            ),
            CorruptReason::FailureText(FailureTextError::NotUtf8("exc_info")),
        ),
        (
            "the results stream cannot be read",
            RawJob {
                results: Err(wrongtype.to_string()),
                ..rq2_job(&[])
            },
            CorruptReason::Results(wrongtype.to_string()),
        ),
    ];
    for (what, raw, reason) in cases {
        assert_eq!(corrupt(&raw), reason, "{what}");
        assert!(!reason.to_string().is_empty());
    }
}

#[test]
fn a_five_mebibyte_traceback_decodes_and_names_its_exception() {
    let mut tb = String::from("Traceback (most recent call last):\n");
    while tb.len() < 5 * 1024 * 1024 {
        tb.push_str(
            "  File \"/app/deep/recursion.py\", line 42, in recurse\n    return recurse(n - 1)\n",
        );
    }
    tb.push_str("RecursionError: maximum recursion depth exceeded\n");
    let job = facts(decode(&raw(
        &rq2_fields(),
        failed_result(exc_string(tb.as_bytes())),
    )));
    assert_eq!(job.failure_text().map(str::len), Some(tb.len()));
    assert_eq!(job.exc_type(), Some("RecursionError"));
}

#[test]
fn rq_timestamps_round_trip_and_the_fraction_is_optional() {
    let at = parse_rq_timestamp(ENDED_AT).expect("RQ's own format");
    assert_eq!(at, ended_at());
    assert_eq!(format_rq_timestamp(at), ENDED_AT);

    let whole = parse_rq_timestamp("2024-05-01T12:00:00Z").expect("no fraction");
    assert_eq!(whole, Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap());
    assert_eq!(format_rq_timestamp(whole), "2024-05-01T12:00:00.000000Z");

    for bad in [
        "",
        "2024-05-01",
        "2024-05-01 12:00:00Z",
        "2024-13-01T12:00:00Z",
        "now",
    ] {
        assert_eq!(parse_rq_timestamp(bad), None, "{bad:?}");
    }
}

fn any_field() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
}

/// What the results stream read can answer: an error, no entry, or an entry's fields.
type NewestResult = Result<Option<Vec<(Vec<u8>, Vec<u8>)>>, String>;

/// The stream's entries as the read returns them, for an answer of [`any_results`].
fn as_read(newest: NewestResult) -> Result<Vec<(String, StreamFields)>, String> {
    newest.map(|fields| {
        fields
            .map(|fields| vec![("1714564800100-0".to_string(), fields)])
            .unwrap_or_default()
    })
}

fn any_results() -> impl Strategy<Value = NewestResult> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
    let key = prop_oneof![
        Just(b"exc_string".to_vec()),
        Just(b"type".to_vec()),
        bytes()
    ];
    let value = prop_oneof![
        bytes(),
        bytes().prop_map(|b| exc_string(&b)),
        bytes().prop_map(|b| base64::engine::general_purpose::STANDARD
            .encode(b)
            .into_bytes()),
    ];
    prop_oneof![
        ".{0,20}".prop_map(Err),
        proptest::option::of(proptest::collection::vec((key, value), 0..4)).prop_map(Ok),
    ]
}

/// What a read of `reads` would have returned for the job `full` read everything of.
fn project(full: &RawJob, reads: Reads) -> RawJob {
    let hash = full.hash.as_ref().map(|values| {
        reads
            .fields()
            .iter()
            .map(|name| values[FIELDS.iter().position(|f| f == name).unwrap()].clone())
            .collect()
    });
    RawJob {
        job_id: full.job_id.clone(),
        queue: full.queue.clone(),
        reads,
        hash: hash.map_err(Clone::clone),
        score: full.score,
        results: if reads.failure {
            full.results.clone()
        } else {
            Ok(Vec::new())
        },
    }
}

/// A valid RQ 2.x job's fields with those not in `keep` replaced by `garbage`, so that decoding
/// gets past its first checks.
fn garbled(garbage: Vec<Option<Vec<u8>>>, keep: &[bool]) -> Vec<Option<Vec<u8>>> {
    let mut fields = match rq2_job(&[]).hash {
        Ok(f) => f,
        Err(e) => unreachable!("{e}"),
    };
    for (i, g) in garbage.into_iter().enumerate() {
        if !keep[i] {
            fields[i] = g;
        }
    }
    fields
}

fn any_reads() -> impl Strategy<Value = Reads> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(function, failure, meta)| Reads {
        function,
        failure,
        meta,
    })
}

#[test]
fn every_read_fetches_what_deciding_needs_and_all_reads_everything() {
    for function in [false, true] {
        for failure in [false, true] {
            let fields = Reads {
                function,
                failure,
                meta: false,
            }
            .fields();
            for needed in [
                "status",
                "origin",
                "ended_at",
                "retryd_attempts",
                "retryd_exhausted",
            ] {
                assert!(fields.contains(&needed), "{needed} in {fields:?}");
            }
            assert_eq!(fields.contains(&"data"), function, "{fields:?}");
            assert_eq!(fields.contains(&"exc_info"), failure, "{fields:?}");
        }
    }
    assert_eq!(Reads::ALL.fields(), &FIELDS[..]);
}

#[test]
fn a_part_that_is_not_read_neither_decodes_nor_makes_the_job_corrupt() {
    let bad_text = rq2_job(&[]);
    let bad_text = RawJob {
        results: as_read(Ok(failed_result(b"not base64 zlib".to_vec()))),
        ..bad_text
    };
    assert!(matches!(
        decode(&bad_text),
        DecodeOutcome::Corrupt(CorruptReason::FailureText(_))
    ));
    let job = facts(decode(&project(&bad_text, Reads::DECISION)));
    assert_eq!(job.failure, None);
    assert_eq!(job.func_name, None);
    assert_eq!(job.reads, Reads::DECISION);
    let with_function = facts(decode(&project(
        &bad_text,
        Reads {
            function: true,
            failure: false,
            meta: false,
        },
    )));
    assert!(with_function.func_name.is_some());
}

proptest! {
    #[test]
    fn a_narrower_read_decodes_the_same_facts_minus_what_it_left_out(
        garbage in proptest::collection::vec(any_field(), FIELDS.len()),
        keep in proptest::collection::vec(any::<bool>(), FIELDS.len()),
        results in any_results(),
        reads in any_reads(),
    ) {
        let fields = garbled(garbage, &keep);
        let full = RawJob {
            job_id: "j".to_string(),
            queue: "q".to_string(),
            reads: Reads::ALL,
            hash: Ok(fields),
            score: Some(1_800_000_000.0),
            results: as_read(results),
        };
        // Reading less never turns a decodable job corrupt or an orphan.
        if let DecodeOutcome::Job(all) = decode(&full) {
            let DecodeOutcome::Job(part) = decode(&project(&full, reads)) else {
                return Err(TestCaseError::fail("a narrower read of a decodable job must decode"));
            };
            prop_assert_eq!(&part.origin, &all.origin);
            prop_assert_eq!(&part.status, &all.status);
            prop_assert_eq!(part.failed_at, all.failed_at);
            prop_assert_eq!(part.attempts, all.attempts);
            prop_assert_eq!(part.exhausted, all.exhausted);
            prop_assert_eq!(&part.cas, &all.cas);
            prop_assert_eq!(&part.func_name, if reads.function { &all.func_name } else { &None });
            prop_assert_eq!(&part.failure, if reads.failure { &all.failure } else { &None });
            prop_assert_eq!(&part.meta, if reads.meta { &all.meta } else { &None });
            prop_assert_eq!(part.created_at, all.created_at);
        }
    }

    #[test]
    fn rq_timestamps_round_trip_at_microsecond_precision(secs in 0i64..4_000_000_000, micros in 0u32..1_000_000) {
        let at = DateTime::from_timestamp(secs, micros * 1000).unwrap();
        prop_assert_eq!(at.nanosecond() % 1000, 0);
        prop_assert_eq!(parse_rq_timestamp(&format_rq_timestamp(at)), Some(at));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        fields in proptest::collection::vec(any_field(), FIELDS.len()),
        results in any_results(),
    ) {
        let _ = decode(&RawJob {
            job_id: "j".to_string(),
            queue: "q".to_string(),
            reads: Reads::ALL,
            hash: Ok(fields),
            score: Some(1_800_000_000.0),
            results: as_read(results),
        });
    }

    #[test]
    fn decode_never_panics_when_only_some_fields_are_garbage(
        garbage in proptest::collection::vec(any_field(), FIELDS.len()),
        keep in proptest::collection::vec(any::<bool>(), FIELDS.len()),
        results in any_results(),
    ) {
        let fields = garbled(garbage, &keep);
        let outcome = decode(&RawJob {
            job_id: "j".to_string(),
            queue: "q".to_string(),
            reads: Reads::ALL,
            hash: Ok(fields.clone()),
            score: Some(1_800_000_000.0),
            results: as_read(results.clone()),
        });
        if let DecodeOutcome::Job(job) = outcome {
            // Whatever was decoded is what is stored: the CAS token never invents values.
            let ended_at = fields[FIELDS.iter().position(|f| *f == "ended_at").unwrap()].clone();
            // (A missing ended_at is compared as "", as the scripts read it.)
            if ended_at.as_deref().unwrap_or_default().is_empty() {
                prop_assert_eq!(job.failed_at_from, FailedAt::FailedRegistry);
                prop_assert_eq!(job.status.as_deref(), Some("failed"));
            }
            prop_assert_eq!(job.cas.ended_at.into_bytes(), ended_at.unwrap_or_default());
        }
    }
}

/// What RQ's worker leaves when an operator stops a job (`send_stop_job_command`): status
/// stopped, no `ended_at`, the failure text `Job stopped by user, work-horse terminated.`.
fn stopped_job(score: Option<f64>) -> RawJob {
    let mut fields: Vec<(&str, Vec<u8>)> = rq2_fields()
        .into_iter()
        .filter(|(k, _)| *k != "ended_at" && *k != "status")
        .collect();
    fields.push(("status", b"stopped".to_vec()));
    RawJob {
        score,
        ..raw(
            &fields,
            failed_result(exc_string(b"Job stopped by user, work-horse terminated.")),
        )
    }
}

// See: issue 21, item 2 (a stopped job was listed undecodable: "field ended_at is missing").
#[test]
fn a_stopped_job_decodes_dated_by_its_failed_registry_score() {
    let added = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    let t = added.timestamp() as f64;
    let f = facts(decode(&stopped_job(Some(t + 31_536_000.0))));
    assert!(f.stopped());
    assert_eq!(f.failed_at, added);
    assert_eq!(f.failed_at_from, FailedAt::FailedRegistry);
    assert_eq!(f.cas.ended_at, "");
    assert_eq!(f.exc_type(), Some(crate::rq::failure::JOB_STOPPED));
    assert_eq!(f.succeeded_at, None);

    // Read the way a scan decides (no failure text): still a stopped job.
    let narrow = facts(decode(&project(
        &stopped_job(Some(t + 60.0)),
        Reads::DECISION,
    )));
    assert!(narrow.stopped());
    assert!(!facts(decode(&rq2_job(&[]))).stopped());
    // Without a score it cannot be dated, as for any failure without ended_at.
    assert_eq!(
        corrupt(&stopped_job(None)),
        CorruptReason::MissingField("ended_at")
    );
}

fn entry(id: &str, fields: &[(&str, &str)]) -> (String, StreamFields) {
    (
        id.to_string(),
        fields
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
    )
}

// See: issue 21, item 6 (rq/rq#2424). The entries are what RQ 1.16.2 and 2.12.0 wrote for a
// finished job moved to the failed registry by StartedJobRegistry.cleanup.
#[test]
fn a_failed_job_whose_last_run_succeeded_is_known_by_its_results() {
    let success_2x = entry(
        "1796288544045-0",
        &[
            ("type", "1"),
            ("worker_name", "fff2a902"),
            ("return_value", "gAWVBgAAAAAAAACMAm9rlC4="),
            ("execution_id", "79bd8ff7"),
        ],
    );
    let cleanup_2x = entry(
        "1796288544053-0",
        &[("type", "2"), ("worker_name", ""), ("exc_string", "eJzz")],
    );
    let at = DateTime::from_timestamp_millis(1_796_288_544_045).unwrap();
    // RQ 2.x: cleanup's failure result on top of the success.
    assert_eq!(
        succeeded_at(&[cleanup_2x.clone(), success_2x.clone()]),
        Some(at)
    );
    // RQ 1.16: cleanup writes no result; the newest is the success.
    let success_1x = entry(
        "1796288544239-0",
        &[("type", "1"), ("return_value", "gA==")],
    );
    assert_eq!(
        succeeded_at(std::slice::from_ref(&success_1x)),
        DateTime::from_timestamp_millis(1_796_288_544_239)
    );
    // A worker's own failure after a success (the job ran again and failed) is a failure.
    let worker_failure = entry(
        "1796288544999-0",
        &[("type", "2"), ("worker_name", "w2"), ("execution_id", "e2")],
    );
    assert_eq!(succeeded_at(&[worker_failure, success_2x.clone()]), None);
    // RQ 1.16's failure results name no worker: not cleanup's.
    let failure_1x = entry("1796288544999-0", &[("type", "2"), ("exc_string", "eJzz")]);
    assert_eq!(succeeded_at(&[failure_1x, success_1x]), None);
    // Cleanup's failure on top of a failure, and no results at all.
    let failed = entry("1-0", &[("type", "2"), ("worker_name", "w")]);
    assert_eq!(succeeded_at(&[cleanup_2x.clone(), failed]), None);
    assert_eq!(succeeded_at(&[cleanup_2x]), None);
    assert_eq!(succeeded_at(&[]), None);

    // Decoded with everything read; unknown (None) when the results were not read.
    let mut raw = abandoned(None, Some(2e9));
    // Cleanup's failure result (its text abandoned()'s, its worker_name empty, no
    // execution_id) on top of the success.
    let mut cleanup = raw.results.clone().unwrap().remove(0);
    cleanup
        .1
        .retain(|(k, _)| k != b"worker_name" && k != b"execution_id");
    cleanup.1.push((b"worker_name".to_vec(), Vec::new()));
    raw.results = Ok(vec![cleanup, success_2x]);
    assert_eq!(facts(decode(&raw)).succeeded_at, Some(at));
    assert_eq!(
        facts(decode(&project(&raw, Reads::DECISION))).succeeded_at,
        None
    );
}

/// RQ's timestamp read by chrono's format alone, as `parse_rq_timestamp` did before its
/// digit-by-digit path (session 21).
fn rq_timestamp_by_chrono(text: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M:%S%.fZ")
        .ok()
        .map(|naive| naive.and_utc())
}

proptest! {
    /// The digit-by-digit path reads what chrono reads, and refuses what it refuses: RQ's own
    /// shape with every field from 0 to 99 (days and months that do not exist, second 60),
    /// fractions of 0 to 12 digits, stray spaces, signs and letters in any place.
    #[test]
    fn rq_timestamps_read_digit_by_digit_as_chrono_reads_them(
        text in "[ ]?[0-9+-]{4,5}-[0-9]{1,2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?[Z ]?[ ]?",
        mangled in "[0-9:.TZ a-]{0,32}",
    ) {
        for t in [&text, &mangled] {
            prop_assert_eq!(parse_rq_timestamp(t), rq_timestamp_by_chrono(t), "{:?}", t);
        }
    }
}

#[test]
fn rq_timestamps_at_the_edges_read_as_chrono_reads_them() {
    for t in [
        "2024-02-29T23:59:59.999999999Z",
        "2023-02-29T00:00:00Z",
        "2024-12-31T23:59:60Z",
        "2024-01-01T00:00:00.Z",
        "2024-01-01T00:00:00.1234567891Z",
        "0000-01-01T00:00:00Z",
        "+2024-01-01T00:00:00Z",
        "2024-1-01T00:00:00Z",
        " 2024-05-01T12:00:00.000001Z\n",
    ] {
        assert_eq!(parse_rq_timestamp(t), rq_timestamp_by_chrono(t), "{t:?}");
    }
}

proptest! {
    /// RQ's timestamps are written as chrono's `%Y-%m-%dT%H:%M:%S%.6fZ` writes them, for any
    /// time from year 0 to 9999 (and past it, where chrono writes them itself).
    #[test]
    fn rq_timestamps_are_written_as_chrono_writes_them(
        secs in -70_000_000_000i64..260_000_000_000i64,
        nanos in 0u32..1_000_000_000,
    ) {
        let at = DateTime::from_timestamp(secs, nanos).expect("in range");
        let chrono_text = at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        prop_assert_eq!(format_rq_timestamp(at), chrono_text.clone());
        // The comparison a plan makes agrees, and a microsecond off is another time.
        prop_assert!(is_rq_timestamp_of(&chrono_text, at));
        let other = at + chrono::Duration::microseconds(1);
        prop_assert!(!is_rq_timestamp_of(&chrono_text, other));
    }
}

#[test]
fn a_leap_second_is_written_as_chrono_writes_it() {
    let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
        .unwrap()
        .and_hms_micro_opt(23, 59, 59, 1_500_000)
        .unwrap()
        .and_utc();
    assert_eq!(
        format_rq_timestamp(leap),
        leap.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    );
    assert_eq!(format_rq_timestamp(leap), "2016-12-31T23:59:60.500000Z");
}
