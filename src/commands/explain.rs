//! `explain JOB_ID`: why rq-retryd does what it does with one failed job.

use std::sync::Arc;

use chrono::Utc;

use super::EXIT_RUNTIME;
use crate::config::Config;
use crate::connection::{connect, require_supported_server};
use crate::explain::{explain as build, hold as hold_back, pending_hold, render};
use crate::rq::{JobFacts, Keys, Lookup, Registry};

pub async fn explain(config: Arc<Config>, job_id: &str, json: bool) -> u8 {
    let mut con = match connect(&config).await {
        Ok(con) => con,
        Err(e) => {
            eprintln!(
                "rq-retryd: cannot reach Redis at {}: {e}",
                config.redacted_redis_url()
            );
            return EXIT_RUNTIME;
        }
    };
    if let Err(refused) = require_supported_server(&mut con, &config).await {
        eprintln!("rq-retryd: {refused}");
        return EXIT_RUNTIME;
    }
    let registry = Registry::new(Keys::new(&config.redis.key_prefix));
    let facts = match registry.lookup(&mut con, job_id).await {
        Ok(found) => match failed_or_why_not(job_id, found) {
            Ok(facts) => facts,
            Err(why) => {
                eprintln!("rq-retryd: {why}");
                return EXIT_RUNTIME;
            }
        },
        Err(e) => {
            eprintln!("rq-retryd: {e}");
            return EXIT_RUNTIME;
        }
    };
    let mut explanation = build(&config.policies, &facts, Utc::now());
    if let Some((hold, target)) = pending_hold(&config.policies, &explanation) {
        match crate::hold::read_worlds(&mut con, registry.keys(), &[target.as_str()]).await {
            Ok(worlds) => {
                let world = worlds.get(&target).copied().unwrap_or_default();
                hold_back(&mut explanation, &hold, &target, world);
            }
            Err(e) => {
                eprintln!("rq-retryd: {e}");
                return EXIT_RUNTIME;
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&explanation).expect("explanation serializes")
        );
    } else {
        print!("{}", render(&explanation));
    }
    0
}

/// The failed job to explain, or why there is none, in the operator's words.
fn failed_or_why_not(job_id: &str, found: Lookup) -> Result<Box<JobFacts>, String> {
    match found {
        Lookup::Failed(facts) => Ok(facts),
        Lookup::NotFailed => Err(format!("job {job_id} is not in any failed registry")),
        Lookup::Moved { queue } => Err(format!(
            "job {job_id} was moved or deleted meanwhile: it left rq failed registry {queue:?} while it was being read"
        )),
        Lookup::Orphan { queue } => Err(format!(
            "job {job_id} is in rq failed registry {queue:?} but its hash is gone (orphan); it is skipped"
        )),
        Lookup::Corrupt { queue, reason } => Err(format!(
            "job {job_id} in failed registry {queue:?} cannot be decoded: {reason}; it is skipped and left untouched"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rq::CorruptReason;

    fn why_not(found: Lookup) -> String {
        failed_or_why_not("j1", found).expect_err("not a failed job")
    }

    // See: issue 20. The API answered 404 "moved" for a job that left its registry while it was
    // read; `explain` called it an orphan (or corrupt). Both now say it moved.
    #[test]
    fn a_job_moved_while_it_was_read_is_reported_moved_not_orphaned() {
        let why = why_not(Lookup::Moved {
            queue: "default".into(),
        });
        assert!(why.contains("moved or deleted meanwhile"), "{why}");
        assert!(!why.contains("orphan"), "{why}");
    }

    #[test]
    fn orphans_corrupt_jobs_and_unknown_ids_keep_their_messages() {
        assert_eq!(
            why_not(Lookup::NotFailed),
            "job j1 is not in any failed registry"
        );
        assert_eq!(
            why_not(Lookup::Orphan { queue: "default".into() }),
            "job j1 is in rq failed registry \"default\" but its hash is gone (orphan); it is skipped"
        );
        let why = why_not(Lookup::Corrupt {
            queue: "default".into(),
            reason: CorruptReason::MissingField("ended_at"),
        });
        assert_eq!(why, "job j1 in failed registry \"default\" cannot be decoded: field ended_at is missing; it is skipped and left untouched");
    }
}
