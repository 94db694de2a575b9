//! Who a request was let in as: what authentication (`auth.rs`, or the console's session,
//! `session.rs`) establishes and handlers read. Its own module so that those two, which both
//! make callers, need not import each other.

use std::sync::Arc;

use crate::config::Role;

/// Who a request was let in as, put into the request's extensions by `auth::require_token` for
/// handlers (the audit's "who", `whoami`) to read. Absent when the API asks nobody (no token
/// and no proxy identity configured).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name, or the user a trusted proxy named.
    pub name: Arc<str>,
    pub role: Role,
    pub via: Via,
}

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer <token>`.
    Token,
    /// The console's session cookie (`session.rs`).
    Session,
    /// The user header of a trusted reverse proxy (`[http.proxy_identity]`).
    Proxy,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Token => "token",
            Via::Session => "session",
            Via::Proxy => "proxy",
        }
    }
}

/// The name of everyone when the API asks nobody who they are.
pub const ANONYMOUS: &str = "anonymous";
