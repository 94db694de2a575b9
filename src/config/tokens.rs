//! The HTTP API's bearer tokens: `http.auth_token` / `auth_token_file` (role `operate`, kept for
//! the configs written before roles existed) and `[[http.tokens]]`, each with a name and a role.
//!
//! Token files are read here, while the configuration is validated, so that `check-config`,
//! `run` and a SIGHUP reload refuse the same unreadable or empty file with the same message:
//! "valid" means "it starts".

use std::fmt;
use std::io::Read as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::file::HttpSection;

/// What a token may do. `read` may send every GET (and HEAD); `operate` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Operate,
}

impl Role {
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

/// Where a token's secret came from, shown by `check-config` instead of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Written in the config file (`auth_token`, `token`).
    Inline,
    /// The first line of this file (`auth_token_file`, `token_file`).
    File(PathBuf),
    /// `RQ_RETRYD_AUTH_TOKEN`.
    Env,
}

/// One bearer token the API accepts. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Named in the audit trail and the logs (`ops-alice@10.0.0.5:51234`).
    pub name: String,
    pub role: Role,
    pub secret: String,
    pub source: TokenSource,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &"***")
            .field("source", &self.source)
            .finish()
    }
}

/// The name the audit trail gives the token of `auth_token` / `auth_token_file`.
pub const LEGACY_TOKEN_NAME: &str = "auth_token";

/// How much of a token file is read: a token is one short line, and a path such as `/dev/zero`
/// must not make validation read forever.
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// Reads a file the way token files are read by the binary: at most [`MAX_TOKEN_FILE_BYTES`].
pub fn read_token_file_from_disk(path: &Path) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_TOKEN_FILE_BYTES)
        .read_to_end(&mut bytes)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// The secret of a token file: its first line, trimmed. The one check `run` and `check-config`
/// share; the message names the path but never the content.
fn secret_from_file(
    path: &Path,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<String, String> {
    let text = read_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(format!(
            "{} has an empty first line; the token is its first line",
            path.display()
        ));
    }
    Ok(secret.to_string())
}

/// Builds every configured token, reporting each problem at its key. Returns the tokens that
/// are valid and whether any token is configured at all (for the non-loopback check, so that
/// an unreadable file is reported once, not also as "no token").
pub(super) fn build_tokens(
    http: &HttpSection,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> (Vec<ApiToken>, bool) {
    let mut tokens: Vec<ApiToken> = Vec::new();
    let mut configured = false;

    // The token of before roles: the env variable wins over `auth_token`, which wins over the
    // file (which is then not read, as `run` never read it).
    let legacy = match (
        env("RQ_RETRYD_AUTH_TOKEN").filter(|t| !t.is_empty()),
        &http.auth_token,
    ) {
        (Some(secret), _) => Some((secret, TokenSource::Env)),
        (None, Some(inline)) => {
            configured = true;
            if inline.get_ref().trim().is_empty() {
                err(
                    Some(inline.span()),
                    "auth_token cannot be empty; leave it out for no token".into(),
                );
                None
            } else {
                Some((inline.get_ref().clone(), TokenSource::Inline))
            }
        }
        (None, None) => http.auth_token_file.as_ref().and_then(|file| {
            configured = true;
            let path = PathBuf::from(file.get_ref());
            match secret_from_file(&path, read_file) {
                Ok(secret) => Some((secret, TokenSource::File(path))),
                Err(message) => {
                    err(Some(file.span()), message);
                    None
                }
            }
        }),
    };
    if let Some((secret, source)) = legacy {
        configured = true;
        tokens.push(ApiToken {
            name: LEGACY_TOKEN_NAME.to_string(),
            role: Role::Operate,
            secret,
            source,
        });
    }

    for section in &http.tokens {
        configured = true;
        let name = section.name.get_ref().trim().to_string();
        let mut ok = true;
        if name.is_empty() {
            err(
                Some(section.name.span()),
                "a token name cannot be empty".into(),
            );
            ok = false;
        } else if name.contains(|c: char| c.is_whitespace() || c.is_control() || c == '@') {
            err(
                Some(section.name.span()),
                format!("token name {name:?} cannot contain whitespace, control characters or '@' (the audit writes NAME@ADDRESS)"),
            );
            ok = false;
        } else if tokens.iter().any(|t| t.name == name) {
            let by = if name == LEGACY_TOKEN_NAME {
                "the token of http.auth_token"
            } else {
                "an earlier token"
            };
            err(
                Some(section.name.span()),
                format!("duplicate token name {name:?}: {by} has it"),
            );
            ok = false;
        }
        let (secret, source, place) = match (&section.token, &section.token_file) {
            (Some(_), Some(file)) => {
                err(
                    Some(file.span()),
                    "give token or token_file, not both".into(),
                );
                (None, TokenSource::Inline, section.name.span())
            }
            (None, None) => {
                err(
                    Some(section.name.span()),
                    format!("token {name:?} needs token or token_file"),
                );
                (None, TokenSource::Inline, section.name.span())
            }
            (Some(inline), None) => {
                if inline.get_ref().trim().is_empty() {
                    err(Some(inline.span()), "token cannot be empty".into());
                    (None, TokenSource::Inline, inline.span())
                } else {
                    (
                        Some(inline.get_ref().clone()),
                        TokenSource::Inline,
                        inline.span(),
                    )
                }
            }
            (None, Some(file)) => {
                let path = PathBuf::from(file.get_ref());
                match secret_from_file(&path, read_file) {
                    Ok(secret) => (Some(secret), TokenSource::File(path), file.span()),
                    Err(message) => {
                        err(Some(file.span()), message);
                        (None, TokenSource::File(path), file.span())
                    }
                }
            }
        };
        let Some(secret) = secret else { continue };
        if let Some(other) = tokens.iter().find(|t| t.secret == secret) {
            // Two names for one secret would make the audit name the wrong person.
            err(
                Some(place),
                format!(
                    "token {name:?} has the same secret as token {:?}; every token needs its own",
                    other.name
                ),
            );
            ok = false;
        }
        if ok {
            tokens.push(ApiToken {
                name,
                role: *section.role.get_ref(),
                secret,
                source,
            });
        }
    }
    (tokens, configured)
}
