//! Why a failed job was skipped without an action: one enum for the scan report's
//! `skipped_by_reason`, the `reason` label of `rq_retryd_skipped_total` and
//! `rq_retryd_skipped_jobs`, and the log, so that a reason is spelled once.

use std::cmp::Ordering;

use serde::Serialize;

/// Why a failed job (or a registry entry) was skipped: nothing was written for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The registry entry's score is in the past: RQ has not cleaned it up yet.
    Expired,
    /// The registry member is not UTF-8, so it names no job RQ could have written.
    InvalidId,
    /// A key holds another type than RQ gives it: a failed registry that is not a sorted set
    /// (the whole queue is skipped), or a key a write script found of the wrong type.
    WrongType,
    /// No policy matches the job.
    Unmatched,
    /// The registry entry has no job hash.
    Orphan,
    /// The stored job cannot be decoded.
    DecodeError,
    /// The shared pause switch held the write back.
    Paused,
    /// This instance no longer holds the lease: the active instance decides again.
    NotActive,
    /// The policy's circuit breaker is open: its requeues wait.
    CircuitOpen,
    /// The target queues of a `hold_when` policy could not be read: its requeues wait.
    HoldUnknown,
    /// The job's `ttl` is a number Redis's EXPIRE cannot take (a refused write).
    InvalidTtl,
    /// The Redis user may not run a command the write needs (a refused write).
    ForbiddenByAcl,
    /// Redis refused the script call (OOM, READONLY, ...): nothing was written.
    WriteError,
}

impl SkipReason {
    /// The reason as the report, the metrics' `reason` label and the log spell it (public:
    /// dashboards and alerts select on these).
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::Expired => "expired",
            SkipReason::InvalidId => "invalid_id",
            SkipReason::WrongType => "wrong_type",
            SkipReason::Unmatched => "unmatched",
            SkipReason::Orphan => "orphan",
            SkipReason::DecodeError => "decode_error",
            SkipReason::Paused => "paused",
            SkipReason::NotActive => "not_active",
            SkipReason::CircuitOpen => "circuit_open",
            SkipReason::HoldUnknown => "hold_unknown",
            SkipReason::InvalidTtl => "invalid_ttl",
            SkipReason::ForbiddenByAcl => "forbidden_by_acl",
            SkipReason::WriteError => "write_error",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Serialised as its label: `skipped_by_reason` keeps the keys it always had.
impl Serialize for SkipReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.label())
    }
}

/// Ordered by label, so a map keyed by reason lists its keys in the order the JSON report
/// has always had (alphabetical), whatever the order of the variants.
impl Ord for SkipReason {
    fn cmp(&self, other: &Self) -> Ordering {
        self.label().cmp(other.label())
    }
}

impl PartialOrd for SkipReason {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SkipReason; 13] = [
        SkipReason::Expired,
        SkipReason::InvalidId,
        SkipReason::WrongType,
        SkipReason::Unmatched,
        SkipReason::Orphan,
        SkipReason::DecodeError,
        SkipReason::Paused,
        SkipReason::NotActive,
        SkipReason::CircuitOpen,
        SkipReason::HoldUnknown,
        SkipReason::InvalidTtl,
        SkipReason::ForbiddenByAcl,
        SkipReason::WriteError,
    ];

    #[test]
    fn every_skip_reason_serialises_as_its_metric_label() {
        for reason in ALL {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.label()));
        }
    }

    #[test]
    fn a_report_keyed_by_reason_lists_reasons_alphabetically() {
        let map: std::collections::BTreeMap<SkipReason, u64> =
            ALL.iter().map(|r| (*r, 1)).collect();
        let labels: Vec<&str> = map.keys().map(|r| r.label()).collect();
        let mut sorted = labels.clone();
        sorted.sort_unstable();
        assert_eq!(labels, sorted);
        assert_eq!(labels.len(), ALL.len(), "labels are distinct");
    }
}
