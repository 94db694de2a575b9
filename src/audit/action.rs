//! What an audit entry records: one typed name per kind of action, so that the filter refuses a
//! misspelt action instead of matching nothing, and writers cannot invent a spelling.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The kinds of action the audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// Jobs put back on a queue (a policy's retry, or an operator's).
    Requeue,
    /// Jobs deleted (a purge policy, or an operator's delete or clear).
    Purge,
    /// Jobs marked exhausted: their policy's attempts are used up.
    MarkExhausted,
    /// The shared pause switch turned on.
    Pause,
    /// The shared pause switch turned off.
    Resume,
}

impl AuditAction {
    /// Every action, in the order the console offers them.
    pub const ALL: [AuditAction; 5] = [
        AuditAction::Requeue,
        AuditAction::Purge,
        AuditAction::MarkExhausted,
        AuditAction::Pause,
        AuditAction::Resume,
    ];

    /// The name in the stream's `action` field and in the API.
    pub fn name(self) -> &'static str {
        match self {
            AuditAction::Requeue => "requeue",
            AuditAction::Purge => "purge",
            AuditAction::MarkExhausted => "mark_exhausted",
            AuditAction::Pause => "pause",
            AuditAction::Resume => "resume",
        }
    }

    /// The action an entry's `action` field names; `None` for a name this version does not
    /// know (an entry written by hand, or by a newer version), which no action filter matches.
    pub fn of_name(name: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::AuditAction;

    #[test]
    fn each_action_reads_back_from_its_name_and_serializes_as_it() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::of_name(action.name()), Some(action));
            let json = serde_json::to_string(&action).unwrap();
            assert_eq!(json, format!("\"{}\"", action.name()));
        }
        assert_eq!(AuditAction::of_name("Requeue"), None);
        assert_eq!(AuditAction::of_name(""), None);
    }
}
