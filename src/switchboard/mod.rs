//! What every rq-retryd instance on one Redis shares: the switches (pause, a requested scan)
//! and the lease that makes one instance the active one.
//!
//! Both live in Redis under rq-retryd's own keys ([`Keys::retryd_switches`],
//! [`Keys::retryd_lease`]), never in one process's memory, so pausing through any instance
//! pauses them all, an instance that starts while paused stays paused, and exactly one
//! instance (the lease holder) scans and writes automatically while the others stand by and
//! serve the HTTP API. The write scripts check both in the same atomic step as their writes
//! (`executor/scripts/gate.lua`): the state held here is only each instance's view of it, for
//! its loops, its answers and its metrics. These keys are rq-retryd's own; RQ's data is still
//! written only by the executor. [`Lease`] is this instance's side of it: its token, the
//! last beat it saw, and the two round trips (beat, release) that change them.

pub mod lease;

pub use lease::{BeatChange, Lease};

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script, Value};
use serde::Serialize;

use crate::rq::Keys;

const HEARTBEAT: &str = include_str!("heartbeat.lua");
const RELEASE: &str = include_str!("release.lua");

/// The shared switches as one beat or read saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Switches {
    /// Automatic writes stop on every instance (manual actions keep working).
    pub paused: bool,
    /// Who paused (the audit's "who") and when (RFC 3339), while paused.
    pub paused_by: Option<String>,
    pub paused_at: Option<String>,
    /// Why, as the operator who paused said it (`POST …/pause?reason=`), while paused.
    pub paused_reason: Option<String>,
    /// The last `POST /api/v1/supervisor/scan` on any instance (RFC 3339): the active
    /// instance scans when it changes.
    #[serde(skip)]
    pub scan_requested_at: Option<String>,
    /// The switches key holds another type than a hash: automatic writes are refused (as if
    /// paused) until it is fixed.
    pub corrupt: bool,
}

impl Switches {
    fn from_flat(items: Vec<Value>) -> Switches {
        let mut s = Switches::default();
        for pair in items.chunks(2) {
            let [field, value] = pair else { continue };
            let (Some(field), Some(value)) = (text(field), text(value)) else {
                continue;
            };
            match field.as_str() {
                "paused" => s.paused = value == "1",
                "paused_by" => s.paused_by = Some(value),
                "paused_at" => s.paused_at = Some(value),
                "paused_reason" => s.paused_reason = Some(value),
                "scan_requested_at" => s.scan_requested_at = Some(value),
                _ => {}
            }
        }
        if !s.paused {
            s.paused_by = None;
            s.paused_at = None;
            s.paused_reason = None;
        }
        s
    }

    /// Whether automatic writes stop (paused, or a switches key no instance can read).
    pub fn holds_writes(&self) -> bool {
        self.paused || self.corrupt
    }
}

/// Who holds the lease, as one beat or read saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// The holder's token (instance id); `None` when nobody holds it.
    pub holder: Option<String>,
    /// Remaining lease time.
    pub remaining: Option<Duration>,
    /// The lease key holds another type than a string: nobody can be active until it is fixed.
    pub corrupt: bool,
}

/// One beat's or read's view of the shared state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Beat {
    pub switches: Switches,
    pub lease: LeaseView,
}

/// This instance's place on the switchboard.
#[derive(Debug, Clone)]
pub struct Switchboard {
    keys: Keys,
    heartbeat: Script,
    release: Script,
}

impl Switchboard {
    pub fn new(keys: Keys) -> Switchboard {
        Switchboard {
            keys,
            heartbeat: Script::new(HEARTBEAT),
            release: Script::new(RELEASE),
        }
    }

    /// Takes or renews the lease for `token` (`None`: only read, for an instance that does not
    /// take part in the election) and reads the switches, in one script call.
    pub async fn beat<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        token: Option<&str>,
        lease_ttl: Duration,
    ) -> RedisResult<Beat> {
        let reply: Vec<Value> = self
            .heartbeat
            .key(self.keys.retryd_switches())
            .key(self.keys.retryd_lease())
            .arg(token.unwrap_or(""))
            .arg(lease_ttl.as_millis() as u64)
            .invoke_async(con)
            .await?;
        Ok(parse_beat(reply))
    }

    /// Reads the shared state without taking part (for `GET /api/v1/supervisor`): one
    /// pipelined round trip of three commands.
    pub async fn read<C: ConnectionLike + Send>(&self, con: &mut C) -> RedisResult<Beat> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .cmd("HGETALL")
            .arg(self.keys.retryd_switches())
            .cmd("GET")
            .arg(self.keys.retryd_lease())
            .cmd("PTTL")
            .arg(self.keys.retryd_lease());
        let replies: Vec<RedisResult<Value>> = pipe.query_async(con).await?;
        let mut it = replies.into_iter();
        let switches = match it.next() {
            Some(Ok(Value::Array(items))) => Switches::from_flat(items),
            Some(Ok(Value::Map(pairs))) => {
                Switches::from_flat(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
            }
            Some(Err(e)) if crate::rq::registry::is_wrong_type(&e) => Switches {
                corrupt: true,
                ..Switches::default()
            },
            Some(Err(e)) => return Err(e),
            _ => Switches::default(),
        };
        let lease = match (it.next(), it.next()) {
            (Some(Err(e)), _) if crate::rq::registry::is_wrong_type(&e) => LeaseView {
                corrupt: true,
                ..LeaseView::default()
            },
            (Some(Err(e)), _) => return Err(e),
            (Some(Ok(holder)), pttl) => LeaseView {
                holder: text(&holder),
                remaining: match pttl {
                    Some(Ok(Value::Int(ms))) if ms >= 0 => Some(Duration::from_millis(ms as u64)),
                    _ => None,
                },
                corrupt: false,
            },
            _ => LeaseView::default(),
        };
        Ok(Beat { switches, lease })
    }

    /// Turns the shared pause on (`paused`) or off, naming who did it and, for a pause, why
    /// (`reason`; a pause without one clears an earlier one's).
    pub async fn set_paused<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        paused: bool,
        who: &str,
        reason: Option<&str>,
    ) -> RedisResult<()> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let key = self.keys.retryd_switches();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if paused {
            pipe.cmd("HSET")
                .arg(&key)
                .arg("paused")
                .arg("1")
                .arg("paused_by")
                .arg(who)
                .arg("paused_at")
                .arg(&now)
                .ignore();
            match reason {
                Some(reason) => pipe
                    .cmd("HSET")
                    .arg(&key)
                    .arg("paused_reason")
                    .arg(reason)
                    .ignore(),
                None => pipe.cmd("HDEL").arg(&key).arg("paused_reason").ignore(),
            };
        } else {
            pipe.cmd("HSET")
                .arg(&key)
                .arg("paused")
                .arg("0")
                .arg("resumed_by")
                .arg(who)
                .arg("resumed_at")
                .arg(&now)
                .ignore()
                .cmd("HDEL")
                .arg(&key)
                .arg("paused_by")
                .arg("paused_at")
                .arg("paused_reason")
                .ignore();
        }
        pipe.query_async(con).await
    }

    /// Asks the active instance, wherever it runs, for a scan now.
    pub async fn request_scan<C: ConnectionLike + Send>(&self, con: &mut C) -> RedisResult<()> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        redis::cmd("HSET")
            .arg(self.keys.retryd_switches())
            .arg("scan_requested_at")
            .arg(now)
            .query_async(con)
            .await
    }

    /// Gives the lease up if it is still `token`'s; returns whether it was.
    pub async fn release<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        token: &str,
    ) -> RedisResult<bool> {
        let released: i64 = self
            .release
            .key(self.keys.retryd_lease())
            .arg(token)
            .invoke_async(con)
            .await?;
        Ok(released == 1)
    }
}

fn parse_beat(reply: Vec<Value>) -> Beat {
    let mut it = reply.into_iter();
    let (holder, pttl, switches) = (it.next(), it.next(), it.next());
    let switches = match switches {
        Some(Value::Array(items)) => Switches::from_flat(items),
        Some(Value::Int(-1)) => Switches {
            corrupt: true,
            ..Switches::default()
        },
        _ => Switches::default(),
    };
    let lease = match holder {
        Some(Value::Int(-1)) => LeaseView {
            corrupt: true,
            ..LeaseView::default()
        },
        Some(v) => LeaseView {
            holder: text(&v),
            remaining: match pttl {
                Some(Value::Int(ms)) if ms >= 0 => Some(Duration::from_millis(ms as u64)),
                _ => None,
            },
            corrupt: false,
        },
        None => LeaseView::default(),
    };
    Beat { switches, lease }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// A name for this instance that is unique among all instances on one Redis and says where it
/// runs: `host:pid:random`. It is also the lease token.
pub fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    // RandomState is seeded from the OS's randomness per process: enough to tell two
    // instances with the same host and pid apart (containers), without another crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        hasher.finish() as u32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_beat_reply_gives_holder_remaining_time_and_switches() {
        let beat = parse_beat(vec![
            bulk("host:1:ab"),
            Value::Int(9500),
            Value::Array(vec![
                bulk("paused"),
                bulk("1"),
                bulk("paused_by"),
                bulk("ops@127.0.0.1:5555"),
                bulk("paused_at"),
                bulk("2026-12-01T08:00:00.000Z"),
            ]),
        ]);
        assert_eq!(beat.lease.holder.as_deref(), Some("host:1:ab"));
        assert_eq!(beat.lease.remaining, Some(Duration::from_millis(9500)));
        assert!(beat.switches.paused && beat.switches.holds_writes());
        assert_eq!(
            beat.switches.paused_by.as_deref(),
            Some("ops@127.0.0.1:5555")
        );
    }

    #[test]
    fn a_resumed_switchboard_names_nobody_and_wrong_types_hold_writes() {
        let beat = parse_beat(vec![
            Value::Nil,
            Value::Int(-2),
            Value::Array(vec![
                bulk("paused"),
                bulk("0"),
                bulk("paused_by"),
                bulk("x"),
            ]),
        ]);
        assert_eq!(beat.lease, LeaseView::default());
        assert!(!beat.switches.paused && beat.switches.paused_by.is_none());
        let corrupt = parse_beat(vec![Value::Int(-1), Value::Int(-2), Value::Int(-1)]);
        assert!(corrupt.lease.corrupt && corrupt.switches.corrupt);
        assert!(corrupt.switches.holds_writes());
    }

    #[test]
    fn instance_ids_differ_between_calls() {
        assert_ne!(instance_id(), instance_id());
    }
}
