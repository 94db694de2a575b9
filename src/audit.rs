//! The audit trail: every manual and automatic action appended to a capped Redis stream
//! (`<prefix>:retryd:audit`), newest last. One entry per action batch, naming who (the token's
//! name and the client's address, or `supervisor`), what, which jobs (every id in
//! `job_ids_json`, the first 100 in the comma-joined `job_ids` for older readers, and the
//! count) and why (a policy, or the route with the selection a bulk action used).
//!
//! Requeues, purges and exhaustion marks are appended by the write scripts themselves, one
//! entry per script call in the same atomic step as the writes (`executor/scripts/gate.lua`),
//! so none is ever unrecorded; the supervisor's automatic calls fold into the entry of the
//! same kind written in the same minute (up to [`AUDIT_MAX_IDS`] ids), so that its many small
//! batches do not push people's actions out of the capped stream. [`append`] is for the other
//! actions (pause, resume). Reading: [`recent`] for the newest entries, [`mirror`] to filter
//! and page through the whole stream.

pub mod action;
pub mod filter;
pub mod mirror;
pub mod names;
pub mod warm;

pub use action::AuditAction;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};
use serde::Serialize;
use utoipa::ToSchema;

/// Entries kept (approximately: `MAXLEN ~`).
pub const AUDIT_MAXLEN: usize = 10_000;
/// Job ids in an entry's comma-joined `job_ids` (for readers older than `job_ids_json`, which
/// lists them all), and the most ids automatic writes fold into one entry.
pub const AUDIT_MAX_IDS: usize = 100;
/// How many of the newest entries an automatic script call looks through for the entry to
/// fold into (gate.lua keeps its own copy; a test keeps the two equal).
pub const AUDIT_FOLD_LOOKBACK: usize = 16;
/// Who the automatic writers are in the audit: the scan loop, and writes made outside it
/// (`executor::Attribution::UNNAMED`). Everyone else is a person (a token, an address).
pub const AUTOMATIC_WHO: [&str; 2] = ["supervisor", "rq-retryd"];

/// The stream key for a prefix.
pub fn audit_key(prefix: &str) -> String {
    crate::rq::Keys::new(prefix).retryd_audit()
}

/// One action to record.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    /// `supervisor`, or the client's address for API calls.
    pub who: &'a str,
    pub action: AuditAction,
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
    let ids: Vec<&str> = record.job_ids.iter().map(String::as_str).collect();
    let joined = ids[..ids.len().min(AUDIT_MAX_IDS)].join(",");
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
        .arg(record.action.name())
        .arg("why")
        .arg(record.why)
        .arg("queue")
        .arg(record.queue)
        .arg("count")
        .arg(record.job_ids.len())
        .arg("job_ids")
        .arg(joined)
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
    /// For automatic writes folded into one entry (see the module's doc), when the last of
    /// them was written; `at` is the first. Absent for an entry written once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_at: Option<String>,
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

/// One entry's fields as Redis returns them: names and values are bytes, read lossily (a job
/// id that is not UTF-8 must not make the whole audit unreadable).
pub type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// The field `name` of a raw entry, if it has one.
pub(crate) fn field(fields: &[(Vec<u8>, Vec<u8>)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// An entry as the API shows it, from its stream id and fields; a field an entry lacks reads
/// as empty (entries written by older versions, or by hand).
pub fn entry_of((id, fields): RawEntry) -> AuditEntry {
    let get = |name: &str| field(&fields, name).unwrap_or_default();
    AuditEntry {
        at: get("at"),
        who: get("who"),
        action: get("action"),
        why: get("why"),
        queue: get("queue"),
        count: get("count").parse().unwrap_or(0),
        job_ids: job_ids(&get("job_ids_json"), &get("job_ids")),
        to_queue: field(&fields, "to_queue"),
        last_at: field(&fields, "last_at"),
        id,
    }
}

/// The newest `limit` entries, newest first.
pub async fn recent<C: ConnectionLike + Send>(
    con: &mut C,
    prefix: &str,
    limit: usize,
) -> RedisResult<Vec<AuditEntry>> {
    let entries: Vec<RawEntry> = redis::cmd("XREVRANGE")
        .arg(audit_key(prefix))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(limit)
        .query_async(con)
        .await?;
    Ok(entries.into_iter().map(entry_of).collect())
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
