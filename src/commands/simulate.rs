//! `check-config --simulate FILE`: what the policies of FILE would do with every failed job in
//! Redis, against the config's own policies, without a daemon. Every job is read whole (as
//! `once --dry-run` reads it), so both files decide it exactly; nothing is written.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use redis::aio::ConnectionManager;

use super::{EXIT_CONFIG, EXIT_RUNTIME};
use crate::config::{parse_policy_file, Config};
use crate::connection::connect;
use crate::hold::read_worlds;
use crate::policy::Policy;
use crate::rq::{decode, DecodeOutcome, Registry, RegistryScan};
use crate::simulate::{hold_targets, GroupLabel, Outcome, QueueWorlds, Report, Tally};
use crate::state::Snapshot;

pub async fn simulate(config: Arc<Config>, file: &Path, json: bool) -> u8 {
    let label = file.display().to_string();
    let candidate = match std::fs::read_to_string(file)
        .map_err(|e| format!("{label}: cannot read the policy file: {e}"))
        .and_then(|text| parse_policy_file(&text, &label).map_err(|e| e.to_string()))
    {
        Ok(candidate) => candidate,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("rq-retryd: invalid policy file; nothing simulated");
            return EXIT_CONFIG;
        }
    };
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
    let now = Utc::now();
    let snapshot = Snapshot::new(config.clone());
    let tally = match read_all(&mut con, &snapshot, &candidate.policies, now).await {
        Ok(tally) => tally,
        Err(e) => {
            eprintln!("rq-retryd: reading the failed registries failed: {e}");
            return EXIT_RUNTIME;
        }
    };
    let mut report = tally.report(GroupLabel::clone, &candidate.policies, now, "redis");
    report.ignored_sections = candidate.ignored_sections;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serializes")
        );
    } else {
        print!("{}", render(&report));
    }
    0
}

/// Every live failed job of the supervised queues, decided by both files.
async fn read_all(
    con: &mut ConnectionManager,
    snapshot: &Snapshot,
    candidate: &[Policy],
    now: chrono::DateTime<Utc>,
) -> redis::RedisResult<Tally<GroupLabel>> {
    let config = &snapshot.config;
    let registry: &Registry = &snapshot.registry;
    let batch = config.supervisor.batch_size;
    let queues = registry
        .discover_queues(con, &config.supervisor.queues, RegistryScan::Now)
        .await?;
    // The target queues of `hold_when`, read once as the supervisor reads them; when they
    // cannot be (an ACL), the jobs a hold may hold back are uncertain, not the whole answer.
    let targets = hold_targets(config.policies.iter().chain(candidate), &queues);
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let worlds = match read_worlds(con, registry.keys(), &targets).await {
        Ok(worlds) => QueueWorlds::Read(worlds),
        Err(e) => {
            eprintln!("rq-retryd: cannot read the target queues of hold_when ({e}); the jobs it may hold are counted as uncertain");
            QueueWorlds::Unread
        }
    };
    let mut tally = Tally::default();
    for queue in &queues {
        let ids = registry.live_failed_ids(con, queue, batch).await?;
        for chunk in ids.live.chunks(batch) {
            for raw in registry.read_jobs(con, queue, chunk).await? {
                match decode(&raw) {
                    DecodeOutcome::Job(job) => {
                        tally.add_facts(&job, (&config.policies, candidate), &worlds, now)
                    }
                    DecodeOutcome::Corrupt(_) | DecodeOutcome::Orphan => {
                        tally.add_undecodable(queue)
                    }
                }
            }
        }
    }
    Ok(tally)
}

/// Counts as `retry_now 5, wait 2`.
fn counts(by: &std::collections::BTreeMap<Outcome, u64>) -> String {
    if by.is_empty() {
        return "none".to_string();
    }
    let parts: Vec<String> = by
        .iter()
        .map(|(o, n)| format!("{} {n}", o.name()))
        .collect();
    parts.join(", ")
}

/// The human answer: totals, each candidate policy, then every changed group.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "simulated {} failed jobs as of {}",
        r.jobs,
        r.as_of.to_rfc3339()
    );
    if !r.ignored_sections.is_empty() {
        let _ = writeln!(out, "ignored sections: {}", r.ignored_sections.join(", "));
    }
    let _ = writeln!(out, "running:   {}", counts(&r.running));
    let _ = writeln!(out, "candidate: {}", counts(&r.candidate));
    if r.uncertain > 0 {
        let _ = writeln!(out, "uncertain: {}", r.uncertain);
    }
    let _ = writeln!(out, "\ncandidate policies:");
    for p in &r.policies {
        let _ = writeln!(
            out,
            "  {:<24} {:<7} {} job{}: {}",
            p.name,
            p.action,
            p.jobs,
            if p.jobs == 1 { "" } else { "s" },
            counts(&p.outcomes)
        );
    }
    let _ = writeln!(
        out,
        "\n{} job{} in {} group{} would change:",
        r.changed_jobs,
        if r.changed_jobs == 1 { "" } else { "s" },
        r.changed_groups,
        if r.changed_groups == 1 { "" } else { "s" }
    );
    for g in r.groups.iter().filter(|g| g.changed > 0) {
        let name = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
        let moves: Vec<String> = g
            .moves
            .iter()
            .map(|m| format!("{} {} -> {}", m.jobs, m.from.name(), m.to.name()))
            .collect();
        let _ = writeln!(
            out,
            "  {} {} {}: {}",
            g.queue,
            name(&g.function),
            name(&g.exception),
            moves.join(", ")
        );
    }
    out
}
