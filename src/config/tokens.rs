//! The HTTP API's bearer tokens: `http.auth_token` / `auth_token_file` (role `operate`, kept for
//! the configs written before roles existed) and `[[http.tokens]]`, each with a name and a role.
//!
//! Token files are read here, while the configuration is validated, so that `check-config`,
//! `run` and a SIGHUP reload refuse the same unreadable or empty file with the same message:
//! "valid" means "it starts".

use std::fmt;
use std::io::Read as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::file::{HttpSection, TokenSection};
use super::role::Role;

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

/// The shortest token accepted on a non-loopback listen: 16 bytes (128 bits of a random hex
/// or base64 token are many more), so that a guessable word is not the only guard of an
/// API that others can reach.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Why `secret` cannot be a token, with the byte offset of the offending character; `None`
/// when it can. Never quotes the secret. A client sends the token in an HTTP header, where
/// only visible ASCII arrives as written: a BOM left by an editor, a non-breaking space or a
/// tab inside would make a token that no client can present (or present as written).
fn unusable_character(secret: &str) -> Option<(usize, &'static str)> {
    secret.char_indices().find_map(|(i, c)| {
        let what = match c {
            '\u{feff}' => "a byte-order mark (U+FEFF): save the file as UTF-8 without BOM",
            c if c.is_whitespace() => "whitespace",
            c if c.is_control() => "a control character",
            c if !c.is_ascii() => "a non-ASCII character",
            _ => return None,
        };
        Some((i, what))
    })
}

/// The length rule: `None` when `secret` is long enough for `listen`.
fn too_short(secret: &str, listen: SocketAddr) -> Option<String> {
    (!listen.ip().is_loopback() && secret.len() < MIN_TOKEN_BYTES).then(|| {
        format!(
            "the token is {} bytes; on a non-loopback listen ({listen}) a token needs at least {MIN_TOKEN_BYTES} (e.g. `openssl rand -hex 32`)",
            secret.len()
        )
    })
}

/// Checks a token written in the config or the environment; the message says where in the
/// token (character N), never what it is.
fn check_secret(secret: &str, listen: SocketAddr) -> Result<(), String> {
    if let Some((i, what)) = unusable_character(secret) {
        let n = secret[..i].chars().count() + 1;
        return Err(format!(
            "the token holds {what} at character {n}; a token is visible ASCII characters only"
        ));
    }
    too_short(secret, listen).map_or(Ok(()), Err)
}

/// The secret of a token file: its first line, trimmed. The one check `run` and `check-config`
/// share; the message names the path (and `PATH:1:COL` of a bad character) but never the
/// content.
fn secret_from_file(
    path: &Path,
    listen: SocketAddr,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<String, String> {
    let text = read_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("");
    let secret = line.trim();
    if secret.is_empty() {
        return Err(format!(
            "{} has an empty first line; the token is its first line",
            path.display()
        ));
    }
    if let Some((i, what)) = unusable_character(secret) {
        let lead = line.len() - line.trim_start().len();
        let col = line[..lead + i].chars().count() + 1;
        return Err(format!(
            "{}:1:{col}: the token (the first line) holds {what}; a token is visible ASCII characters only",
            path.display()
        ));
    }
    if let Some(message) = too_short(secret, listen) {
        return Err(format!("{}: {message}", path.display()));
    }
    Ok(secret.to_string())
}

/// Builds every configured token, reporting each problem at its key. Returns the tokens that
/// are valid and whether any token is configured at all (for the non-loopback check, so that
/// an unreadable file is reported once, not also as "no token").
pub(super) fn build_tokens(
    http: &HttpSection,
    listen: SocketAddr,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> (Vec<ApiToken>, bool) {
    let legacy = legacy_token(http, listen, env, read_file, err);
    let configured = legacy.is_some() || !http.tokens.is_empty();
    let mut tokens: Vec<ApiToken> = legacy.flatten().into_iter().collect();
    for section in &http.tokens {
        if let Some(token) = named_token(section, listen, read_file, &tokens, err) {
            tokens.push(token);
        }
    }
    (tokens, configured)
}

/// The token of before roles, named [`LEGACY_TOKEN_NAME`] with role `operate`: `None` when
/// none is configured, `Some(None)` when the configured one is refused (reported through
/// `err`). The env variable wins over `auth_token`, which wins over the file (which is then
/// not read, as `run` never read it).
fn legacy_token(
    http: &HttpSection,
    listen: SocketAddr,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Option<ApiToken>> {
    let from_env = env("RQ_RETRYD_AUTH_TOKEN").filter(|t| !t.is_empty());
    let secret = match (from_env, &http.auth_token, &http.auth_token_file) {
        (Some(secret), _, _) => match check_secret(&secret, listen) {
            Ok(()) => Some((secret, TokenSource::Env)),
            Err(message) => {
                err(None, format!("env RQ_RETRYD_AUTH_TOKEN: {message}"));
                None
            }
        },
        (None, Some(inline), _) => {
            let empty = "auth_token cannot be empty; leave it out for no token";
            inline_secret(inline, listen, empty, err).map(|s| (s, TokenSource::Inline))
        }
        (None, None, Some(file)) => {
            let (secret, path) = file_secret(file, listen, read_file, err);
            secret.map(|s| (s, TokenSource::File(path)))
        }
        (None, None, None) => return None,
    };
    Some(secret.map(|(secret, source)| ApiToken {
        name: LEGACY_TOKEN_NAME.to_string(),
        role: Role::Operate,
        secret,
        source,
    }))
}

/// One `[[http.tokens]]` table as a token, or `None` when it is refused (every reason reported
/// through `err`). `earlier` are the tokens accepted before it, which its name and its secret
/// must not repeat.
fn named_token(
    section: &TokenSection,
    listen: SocketAddr,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
    earlier: &[ApiToken],
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<ApiToken> {
    let name = section.name.get_ref().trim().to_string();
    let mut ok = check_token_name(&name, section.name.span(), earlier, err);
    let (secret, source, place) = token_secret(section, &name, listen, read_file, err)?;
    if let Some(other) = earlier.iter().find(|t| t.secret == secret) {
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
    ok.then(|| ApiToken {
        name,
        role: *section.role.get_ref(),
        secret,
        source,
    })
}

/// Whether a token's (trimmed) name can name it in the audit: not empty, one word without '@',
/// and not taken by an `earlier` token. A refusal is reported at `span`.
fn check_token_name(
    name: &str,
    span: Range<usize>,
    earlier: &[ApiToken],
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> bool {
    let problem = if name.is_empty() {
        "a token name cannot be empty".to_string()
    } else if name.contains(|c: char| c.is_whitespace() || c.is_control() || c == '@') {
        format!("token name {name:?} cannot contain whitespace, control characters or '@' (the audit writes NAME@ADDRESS)")
    } else if earlier.iter().any(|t| t.name == name) {
        let by = if name == LEGACY_TOKEN_NAME {
            "the token of http.auth_token"
        } else {
            "an earlier token"
        };
        format!("duplicate token name {name:?}: {by} has it")
    } else {
        return true;
    };
    err(Some(span), problem);
    false
}

/// The secret of one `[[http.tokens]]` table, where it came from and the place to blame for
/// it; `None` when there is none to use (reported through `err`): exactly one of `token` and
/// `token_file` must give one.
fn token_secret(
    section: &TokenSection,
    name: &str,
    listen: SocketAddr,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<(String, TokenSource, Range<usize>)> {
    match (&section.token, &section.token_file) {
        (Some(_), Some(file)) => {
            err(
                Some(file.span()),
                "give token or token_file, not both".into(),
            );
            None
        }
        (None, None) => {
            err(
                Some(section.name.span()),
                format!("token {name:?} needs token or token_file"),
            );
            None
        }
        (Some(inline), None) => inline_secret(inline, listen, "token cannot be empty", err)
            .map(|secret| (secret, TokenSource::Inline, inline.span())),
        (None, Some(file)) => {
            let (secret, path) = file_secret(file, listen, read_file, err);
            secret.map(|secret| (secret, TokenSource::File(path), file.span()))
        }
    }
}

/// A token written in the config (`auth_token`, `token`), or `None` when it is refused at its
/// place: blank (`empty` says so) or failing [`check_secret`].
fn inline_secret(
    inline: &Spanned<String>,
    listen: SocketAddr,
    empty: &str,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<String> {
    let problem = if inline.get_ref().trim().is_empty() {
        empty.to_string()
    } else if let Err(message) = check_secret(inline.get_ref(), listen) {
        message
    } else {
        return Some(inline.get_ref().clone());
    };
    err(Some(inline.span()), problem);
    None
}

/// The secret of a token file named in the config (`auth_token_file`, `token_file`), with its
/// path; `None` when [`secret_from_file`] refuses it, reported at the key.
fn file_secret(
    file: &Spanned<String>,
    listen: SocketAddr,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> (Option<String>, PathBuf) {
    let path = PathBuf::from(file.get_ref());
    match secret_from_file(&path, listen, read_file) {
        Ok(secret) => (Some(secret), path),
        Err(message) => {
            err(Some(file.span()), message);
            (None, path)
        }
    }
}
