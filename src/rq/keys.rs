//! RQ's key names. Everything is under a prefix (`rq` by default, `redis.key_prefix`).

/// RQ's registries besides the failed one (whose key is [`Keys::failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherRegistry {
    Started,
    Finished,
    Deferred,
    Scheduled,
}

impl OtherRegistry {
    fn name(self) -> &'static str {
        match self {
            OtherRegistry::Started => "wip",
            OtherRegistry::Finished => "finished",
            OtherRegistry::Deferred => "deferred",
            OtherRegistry::Scheduled => "scheduled",
        }
    }
}

/// Builds RQ key names for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// `rq:queues`: the set of known queue keys.
    pub fn queues_set(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// `rq:queue:<q>`: the list workers pop from.
    pub fn queue(&self, queue: &str) -> String {
        format!("{}:queue:{queue}", self.prefix)
    }

    /// `rq:workers:<q>`: RQ's worker registry of one queue, the set of the keys
    /// (`rq:worker:<name>`) of the workers listening to it. A worker's key lives while its
    /// heartbeat renews its expiry; a worker that died keeps its member until RQ cleans up.
    pub fn workers_of(&self, queue: &str) -> String {
        format!("{}:workers:{queue}", self.prefix)
    }

    /// `rq:failed:<q>`: the FailedJobRegistry (score = expiry time, not failure time).
    pub fn failed(&self, queue: &str) -> String {
        format!("{}:failed:{queue}", self.prefix)
    }

    /// `rq:<registry>:<q>` for RQ's other registries: `wip` (StartedJobRegistry), `finished`,
    /// `deferred`, `scheduled`.
    pub fn registry(&self, registry: OtherRegistry, queue: &str) -> String {
        format!("{}:{}:{queue}", self.prefix, registry.name())
    }

    /// The `SCAN MATCH` pattern for every failed registry.
    pub fn failed_pattern(&self) -> String {
        format!("{}:failed:*", glob_escape(&self.prefix))
    }

    /// `rq:job:<id>`: the job hash.
    pub fn job(&self, job_id: &str) -> String {
        // Joined rather than formatted: the read path builds this key and the results key
        // for every job, and `format!` interprets its pattern each time (docs/benchmarks.md,
        // session 21).
        [self.prefix.as_str(), ":job:", job_id].concat()
    }

    pub fn dependents(&self, job_id: &str) -> String {
        format!("{}:job:{job_id}:dependents", self.prefix)
    }

    pub fn dependencies(&self, job_id: &str) -> String {
        format!("{}:job:{job_id}:dependencies", self.prefix)
    }

    /// `rq:executions:<id>`: the job's ExecutionRegistry (RQ 2.x; a sorted set of execution
    /// ids). A worker removes its execution when the run ends; one whose worker died stays
    /// until it expires.
    pub fn executions(&self, job_id: &str) -> String {
        format!("{}:executions:{job_id}", self.prefix)
    }

    /// `rq:execution:`: what an execution record's key (`rq:execution:<job id>:<execution
    /// id>`, a hash) starts with.
    pub fn execution_prefix(&self) -> String {
        format!("{}:execution:", self.prefix)
    }

    /// `rq:group:`: what a group's key (`rq:group:<name>`, the set of its job ids; RQ 2.x) starts
    /// with. A job names its group in its hash's `group_id` field.
    pub fn group_prefix(&self) -> String {
        format!("{}:group:", self.prefix)
    }

    /// `rq:results:<id>`: the results stream (RQ >= 1.12).
    pub fn results(&self, job_id: &str) -> String {
        [self.prefix.as_str(), ":results:", job_id].concat()
    }

    /// `rq:retryd:switches`: rq-retryd's own switches shared by every instance on this Redis
    /// (field `paused` = "1", with `paused_by`, `paused_at`). RQ never reads it.
    pub fn retryd_switches(&self) -> String {
        format!("{}:retryd:switches", self.prefix)
    }

    /// `rq:retryd:lease`: the token of the instance that does the automatic scans and writes.
    pub fn retryd_lease(&self) -> String {
        format!("{}:retryd:lease", self.prefix)
    }

    /// `rq:retryd:audit`: the audit trail, a capped stream (see `crate::audit`); the write
    /// scripts append to it in the same atomic step as their writes.
    pub fn retryd_audit(&self) -> String {
        format!("{}:retryd:audit", self.prefix)
    }

    /// `rq:retryd:index-events`: the pub/sub channel on which each instance announces what its
    /// writes took out of the failed registries (`crate::index::events`). A channel, not a key.
    pub fn retryd_index_events(&self) -> String {
        format!("{}:retryd:index-events", self.prefix)
    }

    /// `rq:retryd:session:<digest>`: one browser session of the console (a string: its token's
    /// name and role as JSON, expiring with the session). The key holds the SHA-256 of the
    /// cookie's value, never the value itself, so reading Redis does not sign anyone in.
    pub fn retryd_session(&self, digest: &str) -> String {
        format!("{}:retryd:session:{digest}", self.prefix)
    }

    /// `rq:retryd:task:<id>`: one bulk task as every instance reads it (a hash: `state`,
    /// `owner`, `updated_at`, `result` as JSON, `cancel_requested_by`/`_at`; expires a day after
    /// its last write; see `http::tasks`).
    pub fn retryd_task(&self, id: &str) -> String {
        format!("{}:retryd:task:{id}", self.prefix)
    }

    /// `rq:retryd:task:<id>:alive`: the owner's beat for a running task (a string expiring
    /// within seconds unless renewed): without it a task that says `running` is interrupted.
    pub fn retryd_task_alive(&self, id: &str) -> String {
        format!("{}:retryd:task:{id}:alive", self.prefix)
    }

    /// The queue name in a queue key from `rq:queues`, if it is one of ours.
    pub fn queue_name_from_key<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.prefix)?.strip_prefix(":queue:")
    }

    /// The queue name in a failed registry key.
    pub fn queue_name_from_failed_key<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.prefix)?.strip_prefix(":failed:")
    }
}

/// Escapes SCAN glob metacharacters so a prefix such as `rq[x]` is taken literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rq_layout() {
        let k = Keys::new("rq");
        assert_eq!(k.failed("default"), "rq:failed:default");
        assert_eq!(k.queue("emails"), "rq:queue:emails");
        assert_eq!(k.job("abc"), "rq:job:abc");
        assert_eq!(k.results("abc"), "rq:results:abc");
        assert_eq!(k.queue_name_from_key("rq:queue:a:b"), Some("a:b"));
        assert_eq!(k.queue_name_from_failed_key("rq:failed:x"), Some("x"));
        assert_eq!(k.queue_name_from_key("other:queue:x"), None);
        assert_eq!(Keys::new("a*b").failed_pattern(), "a\\*b:failed:*");
    }
}
