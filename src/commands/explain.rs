//! `explain JOB_ID`: why rq-retryd does what it does with one failed job.

use std::sync::Arc;

use chrono::Utc;

use super::EXIT_RUNTIME;
use crate::config::Config;
use crate::connection::{connect, require_supported_server};
use crate::explain::{explain as build, hold as hold_back, pending_hold, render};
use crate::rq::{decode, DecodeOutcome, Keys, Registry};

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
    let queue = match registry.find_failed(&mut con, job_id).await {
        Ok(Some(queue)) => queue,
        Ok(None) => {
            eprintln!("rq-retryd: job {job_id} is not in any failed registry");
            return EXIT_RUNTIME;
        }
        Err(e) => {
            eprintln!("rq-retryd: {e}");
            return EXIT_RUNTIME;
        }
    };
    let raw = match registry
        .read_jobs(&mut con, &queue, &[job_id.to_string()])
        .await
    {
        Ok(mut raws) => raws.remove(0),
        Err(e) => {
            eprintln!("rq-retryd: {e}");
            return EXIT_RUNTIME;
        }
    };
    let facts = match decode(&raw) {
        DecodeOutcome::Job(facts) => facts,
        DecodeOutcome::Orphan => {
            eprintln!("rq-retryd: job {job_id} is in rq failed registry {queue:?} but its hash is gone (orphan); it is skipped");
            return EXIT_RUNTIME;
        }
        DecodeOutcome::Corrupt(reason) => {
            eprintln!("rq-retryd: job {job_id} in failed registry {queue:?} cannot be decoded: {reason}; it is skipped and left untouched");
            return EXIT_RUNTIME;
        }
    };
    let mut explanation = build(&config.policies, &facts, Utc::now());
    if let Some((hold, target)) = pending_hold(&config.policies, &explanation) {
        match crate::hold::read_worlds(&mut con, registry.keys(), &[target.as_str()]).await {
            Ok(worlds) => {
                let world = worlds.get(&target).copied().unwrap_or_default();
                if let Some(reason) = crate::hold::hold_reason(&hold, &target, world) {
                    hold_back(&mut explanation, &reason);
                }
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
