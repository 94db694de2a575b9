//! Dry runs write nothing: with `once --dry-run` (or `dry_run = true` in the config) every key
//! in Redis keeps its type, value (DUMP) and expiry, while the `--json` summary still reports
//! what a real pass would have done.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use support::rq::{config_with_policies, retryd_once, write_config, Rq};
use support::RedisServer;

/// How many failed jobs to seed, and where.
const SEEDED: usize = 200;
const QUEUES: [&str; 3] = ["default", "emails", "reports"];

/// Purge the seed's `ValueError` jobs (app.workers.billing.charge_card); retry everything else
/// at once. Every seeded job is therefore due for one action.
const PURGE_BAD_INPUT_RETRY_THE_REST: &str = r#"
[[policy]]
name = "bad-input"
exceptions = ["ValueError"]
action = "purge"

[[policy]]
name = "retry-everything-now"
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "0s" }
"#;

#[test]
fn once_with_dry_run_flag_changes_no_key_and_reports_would_be_actions() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &config_with_policies(&server.url(), PURGE_BAD_INPUT_RETRY_THE_REST),
    );
    assert_dry_run_writes_nothing(&server, &config, &["--dry-run"]);
}

#[test]
fn dry_run_in_the_config_file_changes_no_key_and_reports_would_be_actions() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = config_with_policies(&server.url(), PURGE_BAD_INPUT_RETRY_THE_REST)
        .replace("[supervisor]\n", "[supervisor]\ndry_run = true\n");
    assert!(toml.contains("dry_run = true"));
    let config = write_config(dir.path(), &toml);
    assert_dry_run_writes_nothing(&server, &config, &[]);
}

/// Seeds the failed jobs, runs `once --json EXTRA...`, and checks that the snapshot of the
/// whole database is identical before and after, and that the summary counts every due job.
fn assert_dry_run_writes_nothing(server: &RedisServer, config: &std::path::Path, extra: &[&str]) {
    Rq::rq2().seed_failed_jobs(&server.url(), SEEDED, &QUEUES);
    let bad_input = count_jobs_of(server, "app.workers.billing.charge_card(");
    assert!(
        bad_input > 0 && bad_input < SEEDED,
        "the seed should mix ValueError jobs with others, got {bad_input} of {SEEDED}"
    );

    let before = snapshot(server);
    assert!(
        before.len() > SEEDED,
        "seed wrote only {} keys",
        before.len()
    );

    let run = retryd_once(config, extra);
    let summary = run.summary();
    let after = snapshot(server);

    let changed: BTreeSet<String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .map(|key| String::from_utf8_lossy(key).into_owned())
        .collect();
    assert!(
        changed.is_empty(),
        "a dry run changed {} keys, e.g. {:?}",
        changed.len(),
        changed.iter().take(10).collect::<Vec<_>>()
    );

    assert_eq!(summary["dry_run"], true, "{summary}");
    assert_eq!(run.count("scanned"), SEEDED as u64, "{summary}");
    assert_eq!(run.count("purged"), bad_input as u64, "{summary}");
    assert_eq!(
        run.count("requeued"),
        (SEEDED - bad_input) as u64,
        "{summary}"
    );
}

/// What a key is, as far as any reader could tell: its type, its content (every byte of every
/// field or member; hashes and sets compared by content because their DUMP order can change on
/// mere reads while a dict rehashes), and its absolute expiry (ms since the epoch, -1 without one). PEXPIRETIME rather than PTTL, so that
/// a key whose TTL was reset is caught and time passing is not.
#[derive(Debug, PartialEq, Eq)]
struct KeyState {
    kind: String,
    content: Vec<Vec<u8>>,
    expires_at_ms: i64,
}

/// Every key in the database (SCAN) with its [`KeyState`].
fn snapshot(server: &RedisServer) -> BTreeMap<Vec<u8>, KeyState> {
    let mut con = server.conn();
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.into_iter()
        .map(|key| {
            let (kind, content, _) = support::jobs::key_content(&mut con, &key);
            let expires_at_ms: i64 = redis::cmd("PEXPIRETIME")
                .arg(&key)
                .query(&mut con)
                .expect("PEXPIRETIME (needs Redis >= 7)");
            (
                key,
                KeyState {
                    kind,
                    content,
                    expires_at_ms,
                },
            )
        })
        .collect()
}

/// How many seeded jobs call the function whose description starts with `call_prefix`. The seed
/// leaves RQ's default description, the call string, in plain text on every job hash.
fn count_jobs_of(server: &RedisServer, call_prefix: &str) -> usize {
    let mut con = server.conn();
    let job_keys: Vec<String> = redis::cmd("KEYS")
        .arg("rq:job:*")
        .query(&mut con)
        .expect("KEYS");
    job_keys
        .iter()
        .filter(|key| {
            let description: Option<String> = redis::cmd("HGET")
                .arg(key.as_str())
                .arg("description")
                .query(&mut con)
                .expect("HGET description");
            description.is_some_and(|d| d.starts_with(call_prefix))
        })
        .count()
}
