//! The only writer. Every change to a job is one Lua script (loaded once, run with EVALSHA),
//! so each action is atomic and compare-and-set: it writes only if the job is still in its failed
//! registry and still the failure that the decision saw. A job someone else moved, deleted or
//! retried in the meantime is a typed no-op ([`Outcome`]), never an error and never a duplicate.
//! Many actions go to Redis in one pipeline; each script still runs atomically on its own.

use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisResult, Script, ServerErrorKind};
use serde::Serialize;

use crate::audit::AuditAction;
use crate::rq::job::format_rq_timestamp;
use crate::rq::keys::OtherRegistry;
use crate::rq::{CasToken, JobFacts, Keys};
use crate::skip::SkipReason;

// Every script starts with the gate (the shared switches and the lease), checked in the same
// atomic step as its writes.
const REQUEUE: &str = concat!(
    include_str!("scripts/gate.lua"),
    include_str!("scripts/requeue.lua")
);
const PURGE: &str = concat!(
    include_str!("scripts/gate.lua"),
    include_str!("scripts/purge.lua")
);
const MARK_EXHAUSTED: &str = concat!(
    include_str!("scripts/gate.lua"),
    include_str!("scripts/mark_exhausted.lua")
);

/// Who is writing, for the gate every script starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer<'a> {
    /// An operator's action (HTTP): works while paused and on any instance.
    Manual,
    /// An automatic write without a lease (`once`, or leader election turned off): stops while
    /// paused.
    Automatic,
    /// An automatic write by the instance holding the lease with this token: stops while
    /// paused, and when the lease is no longer this instance's.
    Leader(&'a str),
}

impl Writer<'_> {
    fn arg(&self) -> &str {
        match self {
            Writer::Manual => "",
            Writer::Automatic => "*",
            Writer::Leader(token) => token,
        }
    }
}

/// Who a write is audited as. Every script call appends its own audit entry, in the same atomic
/// step as its writes, so a requeue or purge is never unrecorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribution<'a> {
    /// `supervisor`, or the operator (token name and client address).
    pub who: &'a str,
    /// Why, for a manual action: its route. `None` for automatic writes, whose why is each
    /// write's policy.
    pub route: Option<&'a str>,
}

impl Attribution<'static> {
    /// What [`Executor::apply`] and [`Executor::apply_as`] audit writes as: not an operator's
    /// action through the API nor the scan loop (those go through `actions::Actor`).
    pub const UNNAMED: Attribution<'static> = Attribution {
        who: "rq-retryd",
        route: None,
    };
}

impl<'a> Attribution<'a> {
    /// The audit entry's why for `write`: the route, else the write's policy.
    fn why<'w>(&self, write: &'w Write) -> &'w str
    where
        'a: 'w,
    {
        self.route.unwrap_or(write.author.name())
    }
}

/// One write to perform on one failed job.
#[derive(Debug, Clone)]
pub struct Write {
    pub job_id: String,
    /// The queue whose failed registry holds the job.
    pub queue: String,
    /// The queue to requeue onto: the job's origin, or a policy's `requeue_to` (the requeue
    /// then makes it the job's origin). Compared against: `cas.origin`.
    pub origin: String,
    pub cas: CasToken,
    /// When the failure failed (the facts' `failed_at`): with the id, it names the failure the
    /// write settles, for the other instances' indexes.
    pub failed_at: chrono::DateTime<chrono::Utc>,
    /// On whose behalf: a policy, or an operator.
    pub author: Author,
    pub kind: WriteKind,
}

/// On whose behalf a write is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// The retry policy that decided it (an automatic write).
    Policy(String),
    /// An operator, through the HTTP API (a manual action).
    Operator,
}

impl Author {
    /// What names the author in `retryd_policy`, the metrics' `policy` label, the log and the
    /// audit: the policy's name, or `manual` (a name the config reserves for this).
    pub fn name(&self) -> &str {
        match self {
            Author::Policy(name) => name,
            Author::Operator => crate::config::MANUAL,
        }
    }
}

impl Write {
    /// The write of `kind` on the failure `facts` describes, compared against what was read.
    /// The same write, requeueing into `queue` instead (a policy's `requeue_to`).
    pub fn to_queue(mut self, queue: &str) -> Write {
        self.origin = queue.to_string();
        self
    }

    pub fn of(facts: &JobFacts, author: Author, kind: WriteKind) -> Write {
        Write {
            job_id: facts.job_id.clone(),
            queue: facts.queue.clone(),
            origin: facts.origin.clone(),
            cas: facts.cas.clone(),
            failed_at: facts.failed_at,
            author,
            kind,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `attempt` is the new `retryd_attempts`; `None` for a manual retry, which does not count.
    Requeue {
        attempt: Option<u32>,
        at_front: bool,
    },
    Purge,
    MarkExhausted,
}

impl WriteKind {
    /// The audit entry's action for the writes of this kind that changed something.
    pub fn action(&self) -> AuditAction {
        match self {
            WriteKind::Requeue { .. } => AuditAction::Requeue,
            WriteKind::Purge => AuditAction::Purge,
            WriteKind::MarkExhausted => AuditAction::MarkExhausted,
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Requeued,
    Purged,
    MarkedExhausted,
    AlreadyExhausted,
    /// The job is no longer in the failed registry (requeued or deleted by someone else).
    NotInRegistry,
    /// The registry entry has no job hash.
    JobMissing,
    /// The job failed again, was retried or moved since the decision: decide again next scan.
    Changed,
    /// The shared pause switch is on: an automatic write did nothing.
    Paused,
    /// This instance no longer holds the lease: its automatic write did nothing (the active
    /// instance decides again).
    NotActive,
    /// A policy's requeue found the job marked stopped by RQ (an operator stopped it): never
    /// retried automatically, nothing written. See: issue 21.
    Stopped,
    /// A policy's requeue found the job's last run a success in RQ's results (rq/rq#2424):
    /// never retried automatically, nothing written. See: issue 21.
    Succeeded,
    /// The script found, before its first write, a key it cannot write whole (e.g. of the
    /// wrong type): nothing was written for this job, which is exactly where and as it was.
    Refused(Refusal),
    /// Redis answered the script call with an error: the scripts check everything data can
    /// make fail before their first write, so this is a server-wide refusal (OOM, READONLY,
    /// MISCONF, a missing command) that hit the first write, and nothing was written.
    Error(String),
}

/// Why a script left a job as it was, and the key that made it so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub reason: RefusalReason,
    /// The Redis key that cannot be written (for logs: operators fix that key).
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// A key holds another type than RQ gives it (a stray `SET rq:queue:default ...`).
    WrongType,
    /// The job's `ttl` field is a number Redis's EXPIRE cannot take.
    InvalidTtl,
    /// The Redis user may not run `command` on the key (an ACL rule: a command, a key pattern
    /// or a selector). Redis checks that only when the command runs, after a script's earlier
    /// writes, so the scripts ask first and write nothing for the whole call. Redis before 7.0
    /// cannot be asked (see `docs/reliability.md`).
    ForbiddenByAcl { command: String },
}

impl RefusalReason {
    /// The skip reason a refused job counts under in reports and
    /// `rq_retryd_skipped_total{reason}`.
    pub fn skip_reason(&self) -> SkipReason {
        match self {
            RefusalReason::WrongType => SkipReason::WrongType,
            RefusalReason::InvalidTtl => SkipReason::InvalidTtl,
            RefusalReason::ForbiddenByAcl { .. } => SkipReason::ForbiddenByAcl,
        }
    }

    /// The skip reason's label, for the log.
    pub fn name(&self) -> &'static str {
        self.skip_reason().label()
    }

    /// The error code of a single-job action's 409 answer: `forbidden_by_acl` names a
    /// permission the operator must grant; every other refusal is `write_refused`.
    pub fn error_code(&self) -> &'static str {
        match self {
            RefusalReason::ForbiddenByAcl { .. } => "forbidden_by_acl",
            _ => "write_refused",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            RefusalReason::WrongType => write!(f, "key {} has the wrong type", self.key),
            RefusalReason::InvalidTtl => {
                write!(
                    f,
                    "the ttl field of {} is out of range for EXPIRE",
                    self.key
                )
            }
            // The script call itself was refused: Redis does not say which key.
            RefusalReason::ForbiddenByAcl { command } if self.key.is_empty() => {
                write!(f, "user may not run {command} on the keys of this call")
            }
            RefusalReason::ForbiddenByAcl { command } => {
                write!(f, "user may not run {command} on {}", self.key)
            }
        }
    }
}

impl Outcome {
    /// A stable lowercase name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Requeued => "requeued",
            Outcome::Purged => "purged",
            Outcome::MarkedExhausted => "marked_exhausted",
            Outcome::AlreadyExhausted => "already_exhausted",
            Outcome::NotInRegistry => "not_in_registry",
            Outcome::JobMissing => "job_missing",
            Outcome::Changed => "changed",
            Outcome::Paused => "paused",
            Outcome::NotActive => "not_active",
            Outcome::Stopped => "stopped",
            Outcome::Succeeded => "succeeded",
            Outcome::Refused(_) => "refused",
            Outcome::Error(_) => "error",
        }
    }

    /// Whether the write was refused (by the script's checks or by Redis): the job was left
    /// as it was, and `once` exits with [`crate::commands::EXIT_REFUSED`].
    pub fn is_refused(&self) -> bool {
        self.meaning() == Meaning::Refused
    }

    /// What this outcome means to the caller that asked for the write.
    pub fn meaning(&self) -> Meaning {
        match self {
            Outcome::Requeued
            | Outcome::Purged
            | Outcome::MarkedExhausted
            | Outcome::AlreadyExhausted => Meaning::Done,
            Outcome::NotInRegistry | Outcome::JobMissing => Meaning::Gone,
            Outcome::Changed => Meaning::Conflict,
            Outcome::Refused(_) | Outcome::Error(_) => Meaning::Refused,
            Outcome::Paused | Outcome::NotActive => Meaning::HeldBack,
            Outcome::Stopped | Outcome::Succeeded => Meaning::LeftToOperator,
        }
    }
}

/// What an [`Outcome`] means to a caller, whatever the script said in detail: the one
/// classification the scan loop, the write path and the HTTP handlers share. Callers still
/// look at the outcome for details (a refusal's key, which registry count to raise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// The write did what was asked: the job was requeued or purged, or is marked exhausted
    /// (now or before).
    Done,
    /// Nothing to write any more: the job left the failed registry meanwhile, or its hash is
    /// gone.
    Gone,
    /// The job failed again, was retried or moved since it was read: decide again.
    Conflict,
    /// Refused before any change (a script's check, or Redis): the job is exactly as it was.
    Refused,
    /// The gate held an automatic write back (the pause switch, a lost lease): nothing was
    /// written, and the next pass decides again.
    HeldBack,
    /// A policy's requeue found the job stopped or succeeded: nothing was written, and the
    /// job is left to the operator.
    LeftToOperator,
}

/// Runs writes against Redis.
#[derive(Debug, Clone)]
pub struct Executor {
    keys: Keys,
    requeue: Script,
    purge: Script,
    mark_exhausted: Script,
}

impl Executor {
    pub fn new(keys: Keys) -> Executor {
        Executor {
            keys,
            requeue: Script::new(REQUEUE),
            purge: Script::new(PURGE),
            mark_exhausted: Script::new(MARK_EXHAUSTED),
        }
    }

    /// Loads the scripts (SCRIPT LOAD); done once at start and again after Redis lost them.
    pub async fn load_scripts<C: ConnectionLike + Send>(&self, con: &mut C) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for script in [REQUEUE, PURGE, MARK_EXHAUSTED] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(script);
        }
        let _: Vec<String> = pipe.query_async(con).await?;
        Ok(())
    }

    /// Performs `writes` in one pipeline and returns one outcome per write, in order. Writes
    /// that can share a call (same kind; for requeues also the same registry, queue, policy and
    /// end of the queue) go to Redis [`SCRIPT_BATCH`] at a time in one script call, so the
    /// per-call cost is shared while no call holds Redis for long. A script that Redis no longer knows
    /// (restart, SCRIPT FLUSH) is loaded and only those calls are sent again: a NOSCRIPT reply
    /// means the call did not run.
    ///
    /// These are manual writes ([`Writer::Manual`]); automatic ones go through
    /// [`Executor::apply_as`]. Each script call audits what it changed as
    /// [`Attribution::UNNAMED`].
    pub async fn apply<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        writes: &[Write],
        now: DateTime<Utc>,
    ) -> RedisResult<Vec<Outcome>> {
        self.apply_as(con, writes, now, Writer::Manual).await
    }

    /// [`Executor::apply`] for `writer`: every script call first passes the gate (pause switch,
    /// lease) in the same atomic step as its writes.
    pub async fn apply_as<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        writes: &[Write],
        now: DateTime<Utc>,
        writer: Writer<'_>,
    ) -> RedisResult<Vec<Outcome>> {
        self.apply_attributed(con, writes, now, writer, Attribution::UNNAMED)
            .await
    }

    /// [`Executor::apply_as`], each script call appending one audit entry (at `now`, by `by`)
    /// for the jobs it changed, in the same atomic step as its writes.
    pub async fn apply_attributed<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        writes: &[Write],
        now: DateTime<Utc>,
        writer: Writer<'_>,
        by: Attribution<'_>,
    ) -> RedisResult<Vec<Outcome>> {
        let stamp = Stamp {
            now: format_rq_timestamp(now),
            at: now.to_rfc3339(),
            by,
        };
        let calls = calls_of(writes, &by);
        let mut outcomes: Vec<Option<Outcome>> = vec![None; writes.len()];
        let mut pending: Vec<usize> = (0..calls.len()).collect();
        for round in 0..2 {
            if pending.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &c in &pending {
                pipe.add_command(self.command(writes, &calls[c], &stamp, writer));
            }
            let replies: Vec<RedisResult<redis::Value>> = pipe.query_async(con).await?;
            let mut retry = Vec::new();
            for (&c, reply) in pending.iter().zip(replies) {
                match reply {
                    Err(e)
                        if round == 0
                            && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                    {
                        retry.push(c)
                    }
                    reply => self.read_reply(writes, &calls[c], reply, &mut outcomes),
                }
            }
            if !retry.is_empty() {
                self.load_scripts(con).await?;
            }
            pending = retry;
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Error("script could not be loaded".into())))
            .collect())
    }

    /// Sets the outcomes of the writes at `members` from their script call's reply: one code
    /// per write, or one error for all of them.
    fn read_reply(
        &self,
        writes: &[Write],
        members: &[usize],
        reply: RedisResult<redis::Value>,
        outcomes: &mut [Option<Outcome>],
    ) {
        match reply {
            Err(e) => {
                let outcome = forbidden_script(&e).unwrap_or_else(|| Outcome::Error(e.to_string()));
                for &i in members {
                    outcomes[i] = Some(outcome.clone());
                }
            }
            Ok(redis::Value::Array(codes)) if codes.len() == members.len() => {
                for (&i, code) in members.iter().zip(codes) {
                    outcomes[i] = Some(match code {
                        redis::Value::Int(code) => self.outcome_of(&writes[i], code),
                        redis::Value::Array(refused) => refused_with_key(&refused),
                        other => Outcome::Error(format!("unexpected script reply {other:?}")),
                    });
                }
            }
            Ok(other) => {
                for &i in members {
                    outcomes[i] =
                        Some(Outcome::Error(format!("unexpected script reply {other:?}")));
                }
            }
        }
    }

    /// The outcome a script's return code stands for; refusals name the key.
    fn outcome_of(&self, write: &Write, code: i64) -> Outcome {
        let keys = &self.keys;
        let refused = |reason, key| Outcome::Refused(Refusal { reason, key });
        let wrong_type = |key| refused(RefusalReason::WrongType, key);
        match (write.kind, code) {
            (WriteKind::Requeue { .. }, 1) => Outcome::Requeued,
            (WriteKind::Purge, 1) => Outcome::Purged,
            (WriteKind::MarkExhausted, 1) => Outcome::MarkedExhausted,
            (WriteKind::MarkExhausted, 2) => Outcome::AlreadyExhausted,
            (_, 0) => Outcome::NotInRegistry,
            (_, -1) => Outcome::JobMissing,
            (_, -2) => Outcome::Changed,
            (_, -3) => wrong_type(keys.job(&write.job_id)),
            (WriteKind::Requeue { .. }, -4) => wrong_type(keys.queue(&write.origin)),
            (WriteKind::Requeue { .. }, -5) => wrong_type(keys.queues_set()),
            (_, -6) => wrong_type(keys.failed(&write.queue)),
            (WriteKind::Requeue { .. }, -7) => {
                refused(RefusalReason::InvalidTtl, keys.job(&write.job_id))
            }
            (WriteKind::Requeue { .. } | WriteKind::Purge, -8) => {
                wrong_type(keys.dependents(&write.job_id))
            }
            (WriteKind::Requeue { .. } | WriteKind::Purge, -9) => {
                wrong_type(keys.dependencies(&write.job_id))
            }
            (WriteKind::Requeue { .. } | WriteKind::Purge, -10) => {
                wrong_type(keys.results(&write.job_id))
            }
            (_, -11) => Outcome::Paused,
            (_, -12) => Outcome::NotActive,
            (_, -13) => wrong_type(keys.retryd_switches()),
            (_, -14) => wrong_type(keys.retryd_lease()),
            (_, -16) => wrong_type(keys.retryd_audit()),
            (WriteKind::Requeue { .. }, -18) => Outcome::Stopped,
            (WriteKind::Requeue { .. }, -19) => Outcome::Succeeded,
            (_, other) => Outcome::Error(format!("unexpected script reply {other}")),
        }
    }

    /// One script call for the writes at `members` (all of one [`CallKey`]).
    fn command(
        &self,
        writes: &[Write],
        members: &[usize],
        stamp: &Stamp<'_>,
        writer: Writer<'_>,
    ) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        let call = Call {
            writes,
            members,
            stamp,
            writer,
        };
        match call.first().kind {
            WriteKind::Requeue { at_front, .. } => self.requeue_call(&mut cmd, &call, at_front),
            WriteKind::Purge => self.purge_call(&mut cmd, &call),
            WriteKind::MarkExhausted => self.mark_exhausted_call(&mut cmd, &call),
        }
        cmd
    }

    /// The gate's two keys and the audit stream, which come first in every script's keys.
    fn gate_keys(&self) -> [String; 3] {
        let keys = &self.keys;
        [
            keys.retryd_switches(),
            keys.retryd_lease(),
            keys.retryd_audit(),
        ]
    }

    /// The requeue script's keys and arguments: one failed registry and one target queue per
    /// call, then four keys and four arguments per job.
    fn requeue_call(&self, cmd: &mut redis::Cmd, call: &Call<'_>, at_front: bool) {
        let keys = &self.keys;
        let first = call.first();
        let queue_key = keys.queue(&first.origin);
        cmd.arg(self.requeue.get_hash())
            .arg(call.members.len() * 4 + 6)
            .arg(&self.gate_keys())
            .arg(keys.failed(&first.queue))
            .arg(&queue_key)
            .arg(keys.queues_set());
        for w in call.writes() {
            let id = &w.job_id;
            cmd.arg(keys.job(id))
                .arg(keys.dependents(id))
                .arg(keys.dependencies(id))
                .arg(keys.results(id));
        }
        call.prologue(cmd);
        cmd.arg(call.stamp.now.as_str())
            .arg(first.author.name())
            .arg(if at_front { "1" } else { "0" })
            .arg(&queue_key)
            .arg(&first.origin);
        for w in call.writes() {
            let WriteKind::Requeue { attempt, .. } = w.kind else {
                unreachable!("grouped by kind")
            };
            cmd.arg(&w.job_id)
                .arg(&w.cas.origin)
                .arg(&w.cas.ended_at)
                .arg(&w.cas.attempts);
            match attempt {
                Some(a) => cmd.arg(a),
                None => cmd.arg(""),
            };
        }
    }

    /// The purge script's keys and arguments: seven keys and four arguments per job.
    fn purge_call(&self, cmd: &mut redis::Cmd, call: &Call<'_>) {
        let keys = &self.keys;
        cmd.arg(self.purge.get_hash())
            .arg(call.members.len() * 7 + 3)
            .arg(&self.gate_keys());
        for w in call.writes() {
            cmd.arg(keys.failed(&w.queue))
                .arg(keys.job(&w.job_id))
                .arg(keys.dependents(&w.job_id))
                .arg(keys.dependencies(&w.job_id))
                .arg(keys.results(&w.job_id))
                .arg(keys.executions(&w.job_id))
                .arg(keys.registry(OtherRegistry::Started, &w.origin));
        }
        call.prologue(cmd);
        cmd.arg(keys.group_prefix()).arg(keys.execution_prefix());
        for w in call.writes() {
            cmd.arg(&w.job_id)
                .arg(&w.cas.origin)
                .arg(&w.cas.ended_at)
                .arg(&w.cas.attempts);
        }
    }

    /// The mark-exhausted script's keys and arguments: two keys and five arguments per job.
    fn mark_exhausted_call(&self, cmd: &mut redis::Cmd, call: &Call<'_>) {
        let keys = &self.keys;
        cmd.arg(self.mark_exhausted.get_hash())
            .arg(call.members.len() * 2 + 3)
            .arg(&self.gate_keys());
        for w in call.writes() {
            cmd.arg(keys.failed(&w.queue)).arg(keys.job(&w.job_id));
        }
        call.prologue(cmd);
        for w in call.writes() {
            cmd.arg(&w.job_id)
                .arg(&w.cas.origin)
                .arg(&w.cas.ended_at)
                .arg(&w.cas.attempts)
                .arg(w.author.name());
        }
    }
}

/// One script call being built: the writes at `members`, all of one [`CallKey`].
struct Call<'a> {
    writes: &'a [Write],
    members: &'a [usize],
    stamp: &'a Stamp<'a>,
    writer: Writer<'a>,
}

impl Call<'_> {
    /// The call's first write, which speaks for all of them where they agree.
    fn first(&self) -> &Write {
        &self.writes[self.members[0]]
    }

    /// The call's writes, in order.
    fn writes(&self) -> impl Iterator<Item = &Write> {
        self.members.iter().map(|&i| &self.writes[i])
    }

    /// The prologue's arguments, after the keys in every script: the writer, then the audit
    /// entry's who, why, action, at and queue.
    fn prologue(&self, cmd: &mut redis::Cmd) {
        let first = self.first();
        cmd.arg(self.writer.arg())
            .arg(self.stamp.by.who)
            .arg(self.stamp.by.why(first))
            .arg(first.kind.action().name())
            .arg(&self.stamp.at)
            .arg(&first.queue);
    }
}

/// The outcome of a script's array in place of a job's code: `{-15, COMMAND, key}`
/// (forbidden_by_acl), or `{-17, key}` (a key of the wrong type whose name only the script
/// knows, e.g. the group a job's hash names).
fn refused_with_key(refused: &[redis::Value]) -> Outcome {
    let text = |v: Option<&redis::Value>| match v {
        Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Some(redis::Value::SimpleString(s)) => Some(s.clone()),
        _ => None,
    };
    match (refused.first(), text(refused.get(1)), text(refused.get(2))) {
        (Some(redis::Value::Int(-15)), Some(command), Some(key)) => Outcome::Refused(Refusal {
            reason: RefusalReason::ForbiddenByAcl { command },
            key,
        }),
        (Some(redis::Value::Int(-17)), Some(key), None) => Outcome::Refused(Refusal {
            reason: RefusalReason::WrongType,
            key,
        }),
        _ => Outcome::Error(format!("unexpected script reply {refused:?}")),
    }
}

/// Redis refused the script call itself (NOPERM): the user may not run EVALSHA, or may not
/// read and write one of the keys the call declares (Redis checks a script's declared keys
/// for read and write access before running it). The script did not run, so nothing was
/// written. A command denied inside a script is a plain ERR, never NOPERM, and the scripts
/// ask before running one.
fn forbidden_script(e: &redis::RedisError) -> Option<Outcome> {
    (e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)).then(|| {
        Outcome::Refused(Refusal {
            reason: RefusalReason::ForbiddenByAcl {
                command: "EVALSHA".into(),
            },
            key: String::new(),
        })
    })
}

/// Writes per script call: enough to share the call's fixed cost (per job, most of a call's
/// cost is per job anyway), few enough that a call takes under a millisecond of Redis time
/// (about 0.8 ms on the 2-core bench machine). A longer call is also likelier to be the one a
/// host stall stretches past 10 ms.
pub const SCRIPT_BATCH: usize = 50;

/// What writes must share to go in one script call: its audit entry names one queue, one
/// action and one why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKey<'a> {
    /// The requeue script takes one failed registry, one target queue, one policy and one end
    /// of the queue per call.
    Requeue {
        queue: &'a str,
        origin: &'a str,
        policy: &'a str,
        at_front: bool,
    },
    Purge {
        queue: &'a str,
        why: &'a str,
    },
    MarkExhausted {
        queue: &'a str,
        why: &'a str,
    },
}

impl<'a> CallKey<'a> {
    fn of(write: &'a Write, by: &Attribution<'a>) -> CallKey<'a> {
        let queue = write.queue.as_str();
        let why = by.why(write);
        match write.kind {
            // The policy is stored in the jobs; the why (the same but for a manual action,
            // whose route is the same for every write) follows it.
            WriteKind::Requeue { at_front, .. } => CallKey::Requeue {
                queue,
                origin: &write.origin,
                policy: write.author.name(),
                at_front,
            },
            WriteKind::Purge => CallKey::Purge { queue, why },
            WriteKind::MarkExhausted => CallKey::MarkExhausted { queue, why },
        }
    }
}

/// The script calls for `writes`, each the indexes of the writes it carries: writes that can
/// share one call (see [`CallKey`]) in order of first appearance, at most [`SCRIPT_BATCH`]
/// per call.
fn calls_of(writes: &[Write], by: &Attribution<'_>) -> Vec<Vec<usize>> {
    let mut groups: Vec<(CallKey<'_>, Vec<usize>)> = Vec::new();
    for (i, write) in writes.iter().enumerate() {
        let key = CallKey::of(write, by);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups
        .iter()
        .flat_map(|(_, members)| members.chunks(SCRIPT_BATCH).map(<[usize]>::to_vec))
        .collect()
}

/// The times and the attribution every script call of one `apply` carries.
struct Stamp<'a> {
    /// In RQ's timestamp format, for the job hashes.
    now: String,
    /// RFC 3339, for the audit entries.
    at: String,
    by: Attribution<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one classification callers share: a manual write's answer, the bulk counts and
    /// the scan report all start from it.
    #[test]
    fn each_outcome_means_one_thing_to_a_caller() {
        let refused = Outcome::Refused(Refusal {
            reason: RefusalReason::WrongType,
            key: "rq:job:x".into(),
        });
        let table = [
            (Outcome::Requeued, Meaning::Done),
            (Outcome::Purged, Meaning::Done),
            (Outcome::MarkedExhausted, Meaning::Done),
            (Outcome::AlreadyExhausted, Meaning::Done),
            (Outcome::NotInRegistry, Meaning::Gone),
            (Outcome::JobMissing, Meaning::Gone),
            (Outcome::Changed, Meaning::Conflict),
            (refused, Meaning::Refused),
            (Outcome::Error("OOM".into()), Meaning::Refused),
            (Outcome::Paused, Meaning::HeldBack),
            (Outcome::NotActive, Meaning::HeldBack),
            (Outcome::Stopped, Meaning::LeftToOperator),
            (Outcome::Succeeded, Meaning::LeftToOperator),
        ];
        for (outcome, meaning) in table {
            assert_eq!(outcome.meaning(), meaning, "{outcome:?}");
            assert_eq!(
                outcome.is_refused(),
                meaning == Meaning::Refused,
                "{outcome:?}"
            );
        }
    }

    /// The scripts append their audit entries themselves, with their own copy of the bounds
    /// `audit::append` uses: the two must not drift apart.
    #[test]
    fn the_scripts_bound_the_audit_as_audit_rs_does() {
        let lines = [
            format!(
                "local AUDIT_MAX_IDS, AUDIT_MAXLEN = {}, {}\n",
                crate::audit::AUDIT_MAX_IDS,
                crate::audit::AUDIT_MAXLEN
            ),
            format!(
                "local AUDIT_FOLD_LOOKBACK = {}\n",
                crate::audit::AUDIT_FOLD_LOOKBACK
            ),
        ];
        for line in lines {
            assert!(
                include_str!("scripts/gate.lua").contains(&line),
                "gate.lua should say {line:?}"
            );
        }
    }
}
