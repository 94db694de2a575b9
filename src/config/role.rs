//! What a caller of the HTTP API may do. Both ways of naming a caller grant a role: a bearer
//! token (`[[http.tokens]]`, see `tokens`) and a trusted proxy's user (`[http.proxy_identity]`,
//! see `identity`); the file's types deserialize it directly. It lives below all three so that
//! none of them imports another for it.

use std::fmt;

use serde::Deserialize;

/// What a token may do. `read` may send every GET (and HEAD); `operate` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Operate,
}

impl Role {
    /// The name written in the config, the audit trail and the API's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
