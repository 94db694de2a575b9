//! The audit trail: every manual and automatic action appended to a capped Redis stream
//! (`<prefix>:retryd:audit`), newest last. One entry per action batch, naming who (a remote
//! address or `supervisor`), what, which jobs (the first 100 ids and the count) and why.
//!
//! Requeues, purges and exhaustion marks are appended by the write scripts themselves, one
//! entry per script call in the same atomic step as the writes (`executor/scripts/gate.lua`),
//! so none is ever unrecorded; [`append`] is for the other actions (pause, resume).

use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};
use serde::Serialize;
use utoipa::ToSchema;

/// Entries kept (approximately: `MAXLEN ~`).
pub const AUDIT_MAXLEN: usize = 10_000;
/// Job ids listed per entry; the count is always exact.
pub const AUDIT_MAX_IDS: usize = 100;

/// The stream key for a prefix.
pub fn audit_key(prefix: &str) -> String {
    crate::rq::Keys::new(prefix).retryd_audit()
}

/// One action to record.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    /// `supervisor`, or the client's address for API calls.
    pub who: &'a str,
    /// `requeue`, `purge`, `mark_exhausted`, `pause`, `resume`, ...
    pub action: &'a str,
    /// The policy name, or the API route for manual actions.
    pub why: &'a str,
    pub queue: &'a str,
    pub job_ids: &'a [String],
}

/// Appends one entry (XADD with MAXLEN ~), in the fields the write scripts write too.
pub async fn append<C: ConnectionLike + Send>(
    con: &mut C,
    prefix: &str,
    record: &AuditRecord<'_>,
) -> RedisResult<()> {
    let ids: Vec<&str> = record
        .job_ids
        .iter()
        .take(AUDIT_MAX_IDS)
        .map(String::as_str)
        .collect();
    let _: Value = redis::cmd("XADD")
        .arg(audit_key(prefix))
        .arg("MAXLEN")
        .arg("~")
        .arg(AUDIT_MAXLEN)
        .arg("*")
        .arg("at")
        .arg(chrono::Utc::now().to_rfc3339())
        .arg("who")
        .arg(record.who)
        .arg("action")
        .arg(record.action)
        .arg("why")
        .arg(record.why)
        .arg("queue")
        .arg(record.queue)
        .arg("count")
        .arg(record.job_ids.len())
        .arg("job_ids")
        .arg(ids.join(","))
        .arg("job_ids_json")
        .arg(serde_json::to_string(&ids).expect("strings encode"))
        .query_async(con)
        .await?;
    Ok(())
}

/// One entry as read back.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: String,
    pub at: String,
    pub who: String,
    pub action: String,
    pub why: String,
    pub queue: String,
    pub count: u64,
    pub job_ids: Vec<String>,
    /// For a requeue, the queue the jobs went to: their origin, or a policy's `requeue_to`
    /// (absent in entries written before issue 21 and for other actions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_queue: Option<String>,
}

/// An entry's job ids: from `job_ids_json` (a JSON array: ids may contain commas), else, for
/// entries written before it existed, from the comma-joined `job_ids`.
fn job_ids(json: &str, joined: &str) -> Vec<String> {
    if let Ok(ids) = serde_json::from_str::<Vec<String>>(json) {
        return ids;
    }
    joined
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The newest `limit` entries, newest first.
pub async fn recent<C: ConnectionLike + Send>(
    con: &mut C,
    prefix: &str,
    limit: usize,
) -> RedisResult<Vec<AuditEntry>> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(audit_key(prefix))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(limit)
        .query_async(con)
        .await?;
    Ok(entries
        .into_iter()
        .map(|(id, fields)| {
            let get = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            AuditEntry {
                id,
                at: get("at"),
                who: get("who"),
                action: get("action"),
                why: get("why"),
                queue: get("queue"),
                count: get("count").parse().unwrap_or(0),
                job_ids: job_ids(&get("job_ids_json"), &get("job_ids")),
                to_queue: fields
                    .iter()
                    .find(|(k, _)| k == "to_queue")
                    .map(|(_, v)| v.clone()),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::job_ids;

    #[test]
    fn job_ids_come_from_the_json_array_when_there_is_one() {
        assert_eq!(job_ids(r#"["a,b","c"]"#, "a,b,c"), vec!["a,b", "c"]);
    }

    #[test]
    fn entries_without_the_json_array_fall_back_to_the_joined_ids() {
        assert_eq!(job_ids("", "a,b"), vec!["a", "b"]);
        assert_eq!(job_ids("", ""), Vec::<String>::new());
    }
}
