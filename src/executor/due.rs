//! Requeues decided in the script (`scripts/requeue_due.lua`): for a queue whose deciding
//! policy matches every job and requeues at once, the script reads each job and decides on
//! what it reads, in the same atomic step as its writes, so the client sends ids without
//! reading the jobs first. Jobs the script is not sure about are left to the client (read,
//! decided and written through [`Executor::apply_attributed`] as before). See: issue 24, item 1.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisResult, Script, ServerErrorKind, Value};

use super::{Attribution, Executor, Writer, SCRIPT_BATCH};
use crate::rq::job::format_rq_timestamp;

const REQUEUE_DUE: &str = concat!(
    include_str!("scripts/gate.lua"),
    include_str!("scripts/requeue_due.lua")
);

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REQUEUE_DUE));

/// A retry policy the script can decide for: it matches every job of the queue and requeues
/// each at once, to its origin, while `retryd_attempts < max_attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuePolicy<'a> {
    pub name: &'a str,
    pub max_attempts: u32,
    pub at_front: bool,
}

/// A job the script requeued: what it read (the job's compare-and-set token, as the client
/// would have read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRequeued {
    pub ended_at: String,
    /// `retryd_attempts` as it was ("" when unset).
    pub attempts: String,
}

impl Executor {
    /// Requeues the jobs `ids` of `queue`'s failed registry that `policy` requeues now, in
    /// script calls of [`SCRIPT_BATCH`] ids, all in one pipeline. One answer per id, in order:
    /// what the script read for a job it requeued, `None` for one it left to the client
    /// (including every job of a call Redis answered with an error: nothing was written).
    #[allow(clippy::too_many_arguments)]
    pub async fn requeue_due<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        queue: &str,
        ids: &[String],
        policy: &DuePolicy<'_>,
        now: DateTime<Utc>,
        writer: Writer<'_>,
        by: Attribution<'_>,
    ) -> RedisResult<Vec<Option<DueRequeued>>> {
        let stamp = (format_rq_timestamp(now), now.to_rfc3339());
        let chunks: Vec<&[String]> = ids.chunks(SCRIPT_BATCH).collect();
        let mut answers: Vec<Option<Vec<Option<DueRequeued>>>> = vec![None; chunks.len()];
        let mut pending: Vec<usize> = (0..chunks.len()).collect();
        for round in 0..2 {
            if pending.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &c in &pending {
                pipe.add_command(self.due_call(queue, chunks[c], policy, &stamp, writer, by));
            }
            let replies: Vec<RedisResult<Value>> = pipe.query_async(con).await?;
            let mut retry = Vec::new();
            for (&c, reply) in pending.iter().zip(replies) {
                match reply {
                    Err(e)
                        if round == 0
                            && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                    {
                        retry.push(c);
                    }
                    reply => answers[c] = Some(due_answers(reply, chunks[c].len())),
                }
            }
            // Not loaded (a user who may not run SCRIPT LOAD): those jobs go to the client.
            let loaded = retry.is_empty()
                || redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(REQUEUE_DUE)
                    .query_async::<String>(con)
                    .await
                    .is_ok();
            pending = if loaded { retry } else { Vec::new() };
        }
        Ok(chunks
            .iter()
            .zip(answers)
            .flat_map(|(chunk, a)| a.unwrap_or_else(|| vec![None; chunk.len()]))
            .collect())
    }

    /// One script call for `ids` (requeue.lua's keys; the ids as arguments).
    fn due_call(
        &self,
        queue: &str,
        ids: &[String],
        policy: &DuePolicy<'_>,
        stamp: &(String, String),
        writer: Writer<'_>,
        by: Attribution<'_>,
    ) -> redis::Cmd {
        let keys = &self.keys;
        let queue_key = keys.queue(queue);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(SCRIPT.get_hash())
            .arg(ids.len() * 4 + 6)
            .arg(&self.gate_keys())
            .arg(keys.failed(queue))
            .arg(&queue_key)
            .arg(keys.queues_set());
        for id in ids {
            cmd.arg(keys.job(id))
                .arg(keys.dependents(id))
                .arg(keys.dependencies(id))
                .arg(keys.results(id));
        }
        // The prologue (Call::prologue's, for a policy's requeue).
        cmd.arg(writer.arg())
            .arg(by.who)
            .arg(by.route.unwrap_or(policy.name))
            .arg(crate::audit::AuditAction::Requeue.name())
            .arg(&stamp.1)
            .arg(queue);
        cmd.arg(&stamp.0)
            .arg(policy.name)
            .arg(if policy.at_front { "1" } else { "0" })
            .arg(&queue_key)
            .arg(queue)
            .arg(policy.max_attempts)
            .arg(ids);
        cmd
    }
}

/// The script's answer for `n` jobs: each requeued job's `{ended_at, attempts}`, `None` for
/// the others; all `None` for an error or an answer of another shape.
fn due_answers(reply: RedisResult<Value>, n: usize) -> Vec<Option<DueRequeued>> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    };
    match reply {
        Ok(Value::Array(items)) if items.len() == n => items
            .iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => Some(DueRequeued {
                    ended_at: text(&pair[0])?,
                    attempts: text(&pair[1])?,
                }),
                _ => None,
            })
            .collect(),
        _ => vec![None; n],
    }
}
