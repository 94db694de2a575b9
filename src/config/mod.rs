//! Configuration: an immutable snapshot, loaded once and replaced whole on reload.
//!
//! `load` reads a file and hands the text to the pure `parse`, so tests pass strings. Every error
//! is reported as `FILE:LINE:COL: key: message`; semantic checks collect every error, not just
//! the first.

mod duration;
mod file;
mod hosts;
mod identity;
mod platform_url;
mod tokens;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::{parse_duration, HumanDuration};
pub use file::{LogFormat, Rotation};
pub use hosts::{AllowedHost, Host, Origin, Scheme};
pub use identity::{Network, ProxyIdentity, DEFAULT_SESSION_TTL};
pub use tokens::{
    read_token_file_from_disk, ApiToken, Role, TokenSource, LEGACY_TOKEN_NAME, MIN_TOKEN_BYTES,
};

use crate::glob::{ExceptionPattern, GlobList};
use crate::policy::{
    Action, Backoff, BreakerSpec, HoldWhen, Matcher, MetaPattern, OnExhausted, Policy, RetrySpec,
};
use file::{
    ActionKind, BackoffSection, BreakerSection, FileConfig, HoldWhenSection, OnExhaustedKind,
    PolicySection, StrategyKind,
};

/// The configuration that runs when no file is found; also shipped as `config/default.toml`.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../../config/default.toml");

/// The file read when neither `--config` nor `RQ_RETRYD_CONFIG` names one and it exists.
pub const SYSTEM_CONFIG: &str = "/etc/rq-retryd/config.toml";

/// What operators' manual actions are recorded under where a policy's name goes (the job's
/// `retryd_policy`, the metrics' `policy` label, the audit): no policy may take this name.
pub const MANUAL: &str = "manual";

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from, for messages (`<embedded defaults>` or a path).
    pub source: String,
    pub redis: RedisSettings,
    pub supervisor: SupervisorSettings,
    pub http: HttpSettings,
    pub logging: LoggingSettings,
    /// In evaluation order: the first that matches decides.
    pub policies: Vec<Policy>,
    /// The secrets written in the config file itself (an inline token, a Redis URL with a
    /// password), for the warning about a file others can read; empty for the defaults.
    pub secrets_in_file: Vec<&'static str>,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    /// PEM CA bundle to verify a `rediss://` server with, instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key for mutual TLS (both or neither).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Redis Sentinel: the monitored master's name and the sentinels' `host:port` addresses.
    /// The master's address comes from the sentinels; `url` still gives scheme, auth and db.
    pub sentinel: Option<SentinelSettings>,
}

/// Where to ask for the current master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    pub master_name: String,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    pub scan_interval: Duration,
    pub batch_size: usize,
    pub queues: GlobList,
    pub dry_run: bool,
    pub max_requeues_per_second: u32,
    /// One active instance per Redis: only the holder of the lease scans and writes
    /// automatically (`supervisor.leader_election`, default on).
    pub leader_election: bool,
    /// How long the lease lasts without renewal (`supervisor.lease_ttl`, default 10 s); it is
    /// renewed every third of that, and a standby takes over within about one ttl of the
    /// holder's death.
    pub lease_ttl: Duration,
}

/// The default `supervisor.lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// `auth_token` as written, or `RQ_RETRYD_AUTH_TOKEN`; its token is in `tokens` too.
    pub auth_token: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    /// Every token the API accepts, secrets read: the one of `auth_token`/`auth_token_file`
    /// (named [`LEGACY_TOKEN_NAME`], role `operate`) first, then `[[http.tokens]]` in order.
    /// Empty: the API needs no token (only allowed on a loopback listen).
    pub tokens: Vec<ApiToken>,
    /// Hosts a request may name besides the local ones and the listen address
    /// (`http.allowed_hosts`): the names a reverse proxy or DNS gives the daemon.
    pub allowed_hosts: Vec<AllowedHost>,
    /// Origins besides the daemon's own whose pages may send it writes
    /// (`http.allowed_origins`).
    pub allowed_origins: Vec<Origin>,
    /// How long a browser session (a token exchanged for a cookie) lasts.
    pub session_ttl: Duration,
    /// `[http.proxy_identity]`: the user a trusted reverse proxy names in a header.
    pub proxy_identity: Option<ProxyIdentity>,
}

impl HttpSettings {
    /// Whether the API asks who is calling (a token, a session or a proxy's user); when not,
    /// everyone on the (loopback) listen address may do everything.
    pub fn needs_identity(&self) -> bool {
        !self.tokens.is_empty() || self.proxy_identity.is_some()
    }
}

/// Written by hand so that no secret reaches a log line or a test failure.
impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("listen", &self.listen)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "***"))
            .field("auth_token_file", &self.auth_token_file)
            .field("tokens", &self.tokens)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_origins", &self.allowed_origins)
            .field("session_ttl", &self.session_ttl)
            .field("proxy_identity", &self.proxy_identity)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct LoggingSettings {
    /// A level (`info`) or a tracing filter directive (`rq_retryd=debug,redis=warn`).
    pub level: String,
    pub format: LogFormat,
    pub directory: Option<PathBuf>,
    pub rotation: Rotation,
    pub max_files: usize,
}

/// One problem in a config, located in its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// The dotted key, e.g. `supervisor.scan_interval` or `policy[2].error_pattern`.
    pub key: Option<String>,
    pub message: String,
}

/// Why a configuration was refused: every problem found, with the file it was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.position {
                Some((line, col)) => write!(f, "{}:{line}:{col}: ", self.source)?,
                None => write!(f, "{}: ", self.source)?,
            }
            if let Some(key) = &p.key {
                write!(f, "{key}: ")?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Which file to read: `--config` > `RQ_RETRYD_CONFIG` > `/etc/rq-retryd/config.toml` when it
/// exists > `None` (the embedded defaults).
pub fn resolve_path(cli: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(path) = cli {
        return Some(path.to_path_buf());
    }
    if let Some(path) = env("RQ_RETRYD_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let system = Path::new(SYSTEM_CONFIG);
    system.exists().then(|| system.to_path_buf())
}

/// Loads the configuration the way the binary does: resolve the path, read, parse, apply the
/// process environment's overrides.
pub fn load(cli: Option<&Path>) -> Result<Config, ConfigError> {
    let env = |name: &str| std::env::var(name).ok();
    let path = resolve_path(cli, &env);
    let (source, text) = match &path {
        Some(p) => {
            let label = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                source: label.clone(),
                problems: vec![ConfigProblem {
                    position: None,
                    key: None,
                    message: format!("cannot read config file: {e}"),
                }],
            })?;
            (label, text)
        }
        None => (
            "<embedded defaults>".to_string(),
            EMBEDDED_DEFAULTS.to_string(),
        ),
    };
    parse_with_env(&text, &source, &env)
}

/// Parses a config text without environment overrides (token files are read from disk).
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, source, &|_| None)
}

/// Parses a config text and applies `RQ_RETRYD_REDIS_URL`, `RQ_RETRYD_HTTP_LISTEN` and
/// `RQ_RETRYD_AUTH_TOKEN` looked up through `env`; token files are read from disk.
pub fn parse_with_env(
    text: &str,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    parse_with(text, source, env, &read_token_file_from_disk)
}

/// The pure core: environment lookups and token-file reads go through `env` and `read_file`,
/// so tests can pass both.
pub fn parse_with(
    text: &str,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Config, ConfigError> {
    let locator = Locator { text };
    let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
        source: source.to_string(),
        problems: vec![locator.problem(e.span(), e.message().trim().to_string())],
    })?;
    let mut problems = Vec::new();
    let config = build(file, source, env, read_file, &locator, &mut problems);
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError {
            source: source.to_string(),
            problems,
        }),
    }
}

/// Turns byte offsets into `LINE:COL` and the dotted key at that place.
struct Locator<'t> {
    text: &'t str,
}

impl Locator<'_> {
    fn problem(&self, span: Option<Range<usize>>, message: String) -> ConfigProblem {
        match span {
            Some(span) => ConfigProblem {
                position: Some(self.line_col(span.start)),
                key: self.key_at(span.start),
                message,
            },
            None => ConfigProblem {
                position: None,
                key: None,
                message,
            },
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// The dotted key at `offset`, qualified by the table it is in: the key written on that
    /// line, the key of the multi-line array the line continues, or the table of a header line.
    fn key_at(&self, offset: usize) -> Option<String> {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line = &self.text[line_start..line_end];
        if header_name(line).is_some() {
            // A problem with the table itself (missing field, unknown table): name the table.
            return self.table_at(line_end);
        }
        let key = match line_key(line) {
            Some(key) => {
                let before = &line[..offset - line_start];
                match inline_key(before, &line[offset - line_start..]) {
                    Some(inner) if inner != key => format!("{key}.{inner}"),
                    _ => key.to_string(),
                }
            }
            // An element on a later line of a multi-line array: the key that opened it; else
            // a key written without `= value`.
            None => self.text[..line_start]
                .lines()
                .rev()
                .take_while(|l| header_name(l).is_none())
                .find(|l| line_key(l).is_some())
                .filter(|l| l.matches('[').count() > l.matches(']').count())
                .and_then(line_key)
                .or_else(|| Some(line.trim()).filter(|k| is_bare_key(k)))?
                .to_string(),
        };
        Some(match self.table_at(line_start) {
            Some(table) => format!("{table}.{key}"),
            None => key,
        })
    }

    /// `supervisor`, `policy[N]`, `policy[N].backoff` or `http.tokens[N]` for the last table
    /// header before `offset`.
    fn table_at(&self, offset: usize) -> Option<String> {
        let mut current = None;
        let mut policies = 0usize;
        let mut arrays = std::collections::HashMap::<String, usize>::new();
        for line in self.text[..offset].lines() {
            let Some((name, array)) = header_name(line) else {
                continue;
            };
            current = Some(if array && name == "policy" {
                policies += 1;
                format!("policy[{policies}]")
            } else if array {
                let n = arrays.entry(name.clone()).or_default();
                *n += 1;
                format!("{name}[{n}]")
            } else if policies > 0 && name.starts_with("policy.") {
                // A sub-table of the current `[[policy]]`, e.g. `[policy.backoff]`.
                format!("policy[{policies}]{}", &name["policy".len()..])
            } else {
                name
            });
        }
        current
    }
}

/// The name of a table header line (`[supervisor]`, `[[policy]]  # note`) and whether it is an
/// array of tables; `None` for any other line.
fn header_name(line: &str) -> Option<(String, bool)> {
    let t = line.trim();
    let (inner, array) = match t.strip_prefix("[[") {
        Some(rest) => (rest.split_once("]]")?.0, true),
        None => (t.strip_prefix('[')?.split_once(']')?.0, false),
    };
    let name = inner
        .split('.')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(".");
    (!name.is_empty()).then_some((name, array))
}

/// The (possibly dotted) bare key a `key = value` line starts with.
fn line_key(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    Some(key.trim()).filter(|k| is_bare_key(k))
}

/// A bare, possibly dotted TOML key such as `scan_interval` or `backoff.delay`.
fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Inside an inline table (`backoff = { max = "x" }`), the inner key whose value starts at the
/// offset (`before` ends there) or that is written at the offset (`after` starts with it).
fn inline_key<'l>(before: &'l str, after: &'l str) -> Option<&'l str> {
    if !before.contains('{') {
        return None;
    }
    let is_key = |k: &&str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    };
    let segment = before.rsplit(['{', ',']).next()?;
    match segment.split_once('=') {
        Some((k, _)) => Some(k.trim()).filter(is_key),
        None => {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
                .unwrap_or(after.len());
            Some(&after[..end]).filter(is_key)
        }
    }
}

fn build(
    file: FileConfig,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
    loc: &Locator<'_>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Config> {
    let mut err =
        |span: Option<Range<usize>>, message: String| problems.push(loc.problem(span, message));

    // [redis]
    // RQ_RETRYD_REDIS_URL > the file's url > the platform's REDIS_URL (Heroku, Render, Dokku
    // and compose files set it) > local Redis.
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let (url, url_span, url_env) = match (set("RQ_RETRYD_REDIS_URL"), &file.redis.url) {
        (Some(v), _) => (v, None, "RQ_RETRYD_REDIS_URL"),
        (None, Some(s)) => (s.get_ref().clone(), Some(s.span()), "RQ_RETRYD_REDIS_URL"),
        (None, None) => match set("REDIS_URL") {
            Some(v) => (v, None, "REDIS_URL"),
            None => (
                "redis://127.0.0.1:6379/0".to_string(),
                None,
                "RQ_RETRYD_REDIS_URL",
            ),
        },
    };
    let url = match platform_url::translate(&url) {
        Ok(url) => {
            if let Err(e) = redis::Client::open(url.as_str()) {
                let message = format!(
                    "invalid Redis URL: {}",
                    e.detail().unwrap_or(&e.to_string())
                );
                report_at(&mut err, url_span, message, url_env);
            }
            url
        }
        Err(message) => {
            report_at(&mut err, url_span, message, url_env);
            url
        }
    };
    let key_prefix = file
        .redis
        .key_prefix
        .as_ref()
        .map_or("rq".to_string(), |p| p.get_ref().clone());
    if let Some(p) = &file.redis.key_prefix {
        if p.get_ref().is_empty() || p.get_ref().contains(char::is_whitespace) {
            err(
                Some(p.span()),
                "key_prefix must be non-empty and without spaces".into(),
            );
        }
    }
    let tls_path =
        |field: &Option<toml::Spanned<String>>| field.as_ref().map(|p| PathBuf::from(p.get_ref()));
    let (tls_ca_file, tls_cert_file, tls_key_file) = (
        tls_path(&file.redis.tls_ca_file),
        tls_path(&file.redis.tls_cert_file),
        tls_path(&file.redis.tls_key_file),
    );
    for field in [
        &file.redis.tls_ca_file,
        &file.redis.tls_cert_file,
        &file.redis.tls_key_file,
    ]
    .into_iter()
    .flatten()
    {
        if !url.starts_with("rediss://") {
            err(Some(field.span()), "TLS files need a rediss:// url".into());
        } else if let Err(e) = std::fs::metadata(field.get_ref()) {
            err(
                Some(field.span()),
                format!("cannot read {}: {e}", field.get_ref()),
            );
        }
    }
    let sentinel = match (&file.redis.sentinel_master, &file.redis.sentinels) {
        (None, None) => None,
        (Some(name), Some(addresses)) => {
            if name.get_ref().trim().is_empty() {
                err(Some(name.span()), "sentinel_master cannot be empty".into());
            }
            if addresses.get_ref().is_empty() {
                err(
                    Some(addresses.span()),
                    "sentinels needs at least one host:port".into(),
                );
            }
            for a in addresses.get_ref() {
                let ok = a
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !ok {
                    err(
                        Some(addresses.span()),
                        format!("sentinel address {a:?} is not host:port"),
                    );
                }
            }
            Some(SentinelSettings {
                master_name: name.get_ref().clone(),
                addresses: addresses.get_ref().clone(),
            })
        }
        (Some(f), None) => {
            err(
                Some(f.span()),
                "sentinel_master needs sentinels = [\"host:port\", ...]".into(),
            );
            None
        }
        (None, Some(f)) => {
            err(
                Some(f.span()),
                "sentinels needs sentinel_master (the monitored master's name)".into(),
            );
            None
        }
    };
    if tls_cert_file.is_some() != tls_key_file.is_some() {
        let span = file
            .redis
            .tls_cert_file
            .as_ref()
            .or(file.redis.tls_key_file.as_ref())
            .map(|f| f.span());
        err(
            span,
            "tls_cert_file and tls_key_file go together (mutual TLS needs both)".into(),
        );
    }

    // [supervisor]
    let sup = &file.supervisor;
    let scan_interval = sup
        .scan_interval
        .as_ref()
        .map_or(Duration::from_secs(15), |d| d.get_ref().0);
    if let Some(d) = &sup.scan_interval {
        if d.get_ref().0 < Duration::from_millis(100) {
            err(
                Some(d.span()),
                "scan_interval must be at least 100ms".into(),
            );
        }
    }
    let lease_ttl = sup
        .lease_ttl
        .as_ref()
        .map_or(DEFAULT_LEASE_TTL, |d| d.get_ref().0);
    if let Some(d) = &sup.lease_ttl {
        let ttl = d.get_ref().0;
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(600) {
            err(
                Some(d.span()),
                "lease_ttl must be between 1s and 10m".into(),
            );
        }
    }
    let batch_size = positive(&sup.batch_size, 500, 100_000, "batch_size", &mut err);
    let max_rps = positive(
        &sup.max_requeues_per_second,
        500,
        1_000_000,
        "max_requeues_per_second",
        &mut err,
    );
    let queue_patterns = sup
        .queues
        .as_ref()
        .map_or(vec!["*".to_string()], |q| q.get_ref().clone());
    let queues = match GlobList::new(&queue_patterns) {
        Ok(g) => g,
        Err(e) => {
            err(sup.queues.as_ref().map(|q| q.span()), e);
            GlobList::new(&["*".to_string()]).expect("static glob")
        }
    };
    if queue_patterns.is_empty() {
        err(
            sup.queues.as_ref().map(|q| q.span()),
            "queues is empty: nothing would be supervised (use [\"*\"] for all)".into(),
        );
    }

    // [http]
    // RQ_RETRYD_HTTP_LISTEN > the file's listen > the platform's PORT (on every address, as a
    // platform's router must reach it; a token is then required like any non-loopback listen)
    // > 127.0.0.1:9732.
    let (listen_text, listen_span, listen_env) =
        match (set("RQ_RETRYD_HTTP_LISTEN"), &file.http.listen) {
            (Some(v), _) => (v, None, "RQ_RETRYD_HTTP_LISTEN"),
            (None, Some(l)) => (l.get_ref().clone(), Some(l.span()), "RQ_RETRYD_HTTP_LISTEN"),
            (None, None) => match set("PORT") {
                Some(port) => (platform_url::listen_on_port(&port), None, "PORT"),
                None => ("127.0.0.1:9732".to_string(), None, "RQ_RETRYD_HTTP_LISTEN"),
            },
        };
    let listen: SocketAddr = match listen_text.parse() {
        Ok(a) => a,
        Err(_) => {
            let message = format!(
                "invalid listen address {listen_text:?}; expected HOST:PORT such as 127.0.0.1:9732"
            );
            report_at(&mut err, listen_span.clone(), message, listen_env);
            "127.0.0.1:9732".parse().expect("static address")
        }
    };
    let auth_token = env("RQ_RETRYD_AUTH_TOKEN")
        .filter(|t| !t.is_empty())
        .or(file.http.auth_token.as_ref().map(|t| t.get_ref().clone()));
    let auth_token_file = file
        .http
        .auth_token_file
        .as_ref()
        .map(|f| PathBuf::from(f.get_ref()));
    let (tokens, any_token) = tokens::build_tokens(&file.http, listen, env, read_file, &mut err);
    let session_ttl = identity::session_ttl(file.http.session_ttl.as_ref(), &mut err);
    let proxy_identity =
        identity::build_proxy_identity(file.http.proxy_identity.as_ref(), &mut err);
    if !listen.ip().is_loopback() && !any_token && file.http.proxy_identity.is_none() {
        let message = format!(
            "listening on non-loopback address {listen} requires auth_token, auth_token_file, [[http.tokens]], [http.proxy_identity] or RQ_RETRYD_AUTH_TOKEN"
        );
        report_at(&mut err, listen_span, message, listen_env);
    }
    let mut allowed_hosts = each_entry(&file.http.allowed_hosts, AllowedHost::parse, &mut err);
    // The names a platform's router sends (`myapp.onrender.com`), for a config without a file.
    for entry in set("RQ_RETRYD_ALLOWED_HOSTS")
        .iter()
        .flat_map(|v| v.split(','))
    {
        match AllowedHost::parse(entry.trim()) {
            Ok(host) => allowed_hosts.push(host),
            Err(message) => err(None, format!("env RQ_RETRYD_ALLOWED_HOSTS: {message}")),
        }
    }
    let allowed_origins = each_entry(&file.http.allowed_origins, Origin::parse, &mut err);

    // [logging]
    let lg = &file.logging;
    let level = lg
        .level
        .as_ref()
        .map_or("info".to_string(), |l| l.get_ref().clone());
    if let Some(l) = &lg.level {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(l.get_ref()) {
            err(Some(l.span()), format!("invalid log level or filter: {e}"));
        }
    }
    let max_files = positive(&lg.max_files, 7, 10_000, "max_files", &mut err) as usize;

    // [[policy]]
    let mut policies = Vec::with_capacity(file.policies.len());
    let mut names = std::collections::HashSet::new();
    for section in &file.policies {
        if !names.insert(section.name.get_ref().clone()) {
            err(
                Some(section.name.span()),
                format!("duplicate policy name {:?}", section.name.get_ref()),
            );
        }
        if let Some(policy) = build_policy(section, &mut err) {
            policies.push(policy);
        }
    }

    let mut secrets_in_file = Vec::new();
    if file.http.auth_token.is_some() || file.http.tokens.iter().any(|t| t.token.is_some()) {
        secrets_in_file.push("an API token");
    }
    if let Some(url) = &file.redis.url {
        if redact_url(url.get_ref()) != *url.get_ref() {
            secrets_in_file.push("a Redis URL with a password");
        }
    }

    Some(Config {
        source: source.to_string(),
        redis: RedisSettings {
            url,
            key_prefix,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            sentinel,
        },
        supervisor: SupervisorSettings {
            scan_interval,
            batch_size: batch_size as usize,
            queues,
            dry_run: sup.dry_run.unwrap_or(false),
            max_requeues_per_second: max_rps as u32,
            leader_election: sup.leader_election.unwrap_or(true),
            lease_ttl,
        },
        http: HttpSettings {
            listen,
            auth_token,
            auth_token_file,
            tokens,
            allowed_hosts,
            allowed_origins,
            session_ttl,
            proxy_identity,
        },
        logging: LoggingSettings {
            level,
            format: lg.format.unwrap_or_default(),
            directory: lg.directory.as_ref().map(PathBuf::from),
            rotation: lg.rotation.unwrap_or_default(),
            max_files,
        },
        policies,
        secrets_in_file,
    })
}

/// Parses each entry of a list with `parse`, reporting every entry it refuses at its place.
fn each_entry<T>(
    list: &Option<Vec<toml::Spanned<String>>>,
    parse: impl Fn(&str) -> Result<T, String>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Vec<T> {
    let entries = list.iter().flatten();
    entries
        .filter_map(|entry| match parse(entry.get_ref()) {
            Ok(value) => Some(value),
            Err(message) => {
                err(Some(entry.span()), message);
                None
            }
        })
        .collect()
}

/// Reports a problem at `span` in the file, or against the env variable that overrode it.
fn report_at(
    err: &mut impl FnMut(Option<Range<usize>>, String),
    span: Option<Range<usize>>,
    message: String,
    env_name: &str,
) {
    match span {
        Some(span) => err(Some(span), message),
        None => err(None, format!("env {env_name}: {message}")),
    }
}

fn positive(
    value: &Option<toml::Spanned<i64>>,
    default: i64,
    max: i64,
    name: &str,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> i64 {
    match value {
        None => default,
        Some(v) if (1..=max).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            err(
                Some(v.span()),
                format!("{name} must be between 1 and {max}, got {}", v.get_ref()),
            );
            default
        }
    }
}

fn build_policy(
    s: &PolicySection,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Policy> {
    let mut ok = true;
    let name = s.name.get_ref().trim().to_string();
    if name.is_empty() {
        err(Some(s.name.span()), "policy name cannot be empty".into());
        ok = false;
    }
    if name == MANUAL {
        err(
            Some(s.name.span()),
            format!("policy name {MANUAL:?} is reserved: it names operators' manual actions in the metrics, the audit and retryd_policy"),
        );
        ok = false;
    }
    let mut globs = |field: &Option<toml::Spanned<Vec<String>>>, what: &str| -> Option<GlobList> {
        let list = field.as_ref()?;
        if list.get_ref().is_empty() {
            err(
                Some(list.span()),
                format!(
                    "{what} is an empty list, which would match nothing; leave it out to match all"
                ),
            );
            ok = false;
            return None;
        }
        match GlobList::new(list.get_ref()) {
            Ok(g) => Some(g),
            Err(e) => {
                err(Some(list.span()), e);
                ok = false;
                None
            }
        }
    };
    let queues = globs(&s.queues, "queues");
    let functions = globs(&s.functions, "functions");
    let exceptions = match &s.exceptions {
        None => None,
        Some(list) if list.get_ref().is_empty() => {
            err(
                Some(list.span()),
                "exceptions is an empty list, which would match nothing; leave it out to match all"
                    .into(),
            );
            ok = false;
            None
        }
        Some(list) => match list
            .get_ref()
            .iter()
            .map(|p| ExceptionPattern::new(p))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(v) => Some(v),
            Err(e) => {
                err(Some(list.span()), e);
                ok = false;
                None
            }
        },
    };
    let error_pattern = match &s.error_pattern {
        None => None,
        Some(p) => match regex::RegexBuilder::new(p.get_ref())
            .size_limit(10 << 20)
            .build()
        {
            Ok(r) => Some(r),
            Err(e) => {
                err(
                    Some(p.span()),
                    format!("invalid regex: {}", one_line(&e.to_string())),
                );
                ok = false;
                None
            }
        },
    };

    let action_kind = s
        .action
        .as_ref()
        .map_or(ActionKind::Retry, |a| *a.get_ref());
    let not_for = |field: &str, kind: &str| {
        format!("{field} has no effect with action = \"{kind}\"; remove it")
    };
    let kind_name = match action_kind {
        ActionKind::Retry => "retry",
        ActionKind::Purge => "purge",
        ActionKind::Ignore => "ignore",
    };
    if action_kind != ActionKind::Retry {
        let retry_only: [(&str, Option<Range<usize>>); 8] = [
            ("max_attempts", s.max_attempts.as_ref().map(|v| v.span())),
            ("backoff", s.backoff.as_ref().map(|v| v.span())),
            ("at_front", s.at_front.as_ref().map(|v| v.span())),
            ("on_exhausted", s.on_exhausted.as_ref().map(|v| v.span())),
            (
                "circuit_breaker",
                s.circuit_breaker.as_ref().map(|v| v.span()),
            ),
            ("max_age", s.max_age.as_ref().map(|v| v.span())),
            ("requeue_to", s.requeue_to.as_ref().map(|v| v.span())),
            ("hold_when", s.hold_when.as_ref().map(|v| v.span())),
        ];
        for (field, span) in retry_only {
            if let Some(span) = span {
                err(Some(span), not_for(field, kind_name));
                ok = false;
            }
        }
    }
    if action_kind != ActionKind::Purge {
        if let Some(p) = &s.purge_after {
            err(Some(p.span()), not_for("purge_after", kind_name));
            ok = false;
        }
    }
    let action = match action_kind {
        ActionKind::Ignore => Action::Ignore,
        ActionKind::Purge => Action::Purge {
            after: s
                .purge_after
                .as_ref()
                .map_or(Duration::ZERO, |d| d.get_ref().0),
        },
        ActionKind::Retry => {
            let max_attempts = match &s.max_attempts {
                None => 3,
                Some(v) if (1..=1_000_000).contains(v.get_ref()) => *v.get_ref() as u32,
                Some(v) => {
                    err(Some(v.span()), format!("max_attempts must be between 1 and 1000000, got {} (use action = \"ignore\" to never retry)", v.get_ref()));
                    ok = false;
                    1
                }
            };
            let backoff = match &s.backoff {
                None => Some(Backoff::conservative()),
                Some(b) => build_backoff(b.get_ref(), b.span(), err),
            };
            ok &= backoff.is_some();
            Action::Retry(RetrySpec {
                max_attempts,
                backoff: backoff.unwrap_or_else(Backoff::conservative),
                at_front: s.at_front.as_ref().is_some_and(|a| *a.get_ref()),
                on_exhausted: match s.on_exhausted.as_ref().map(|o| *o.get_ref()) {
                    Some(OnExhaustedKind::Purge) => OnExhausted::Purge,
                    _ => OnExhausted::Keep,
                },
                circuit_breaker: build_breaker(s.circuit_breaker.as_ref(), err).unwrap_or_else(
                    || {
                        ok = false;
                        None
                    },
                ),
                max_age: build_max_age(s.max_age.as_ref(), err).unwrap_or_else(|| {
                    ok = false;
                    None
                }),
                requeue_to: s.requeue_to.as_ref().and_then(|q| {
                    let name = build_requeue_to(q, err);
                    ok &= name.is_some();
                    name
                }),
                hold_when: s.hold_when.as_ref().and_then(|h| {
                    let hold = build_hold_when(h, err);
                    ok &= hold.is_some();
                    hold
                }),
            })
        }
    };
    let meta = build_meta(s.meta.as_ref(), err);
    ok &= meta.is_some();
    ok.then_some(Policy {
        name,
        matcher: Matcher {
            queues,
            functions,
            exceptions,
            error_pattern,
            meta: meta.flatten(),
        },
        action,
    })
}

/// A retry policy's `max_age`: more than zero and at most ten years (the longest time the
/// policy engine computes with). `None` (outer) when invalid (reported through `err`).
fn build_max_age(
    max_age: Option<&toml::Spanned<HumanDuration>>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Option<Duration>> {
    let Some(v) = max_age else {
        return Some(None);
    };
    let age = v.get_ref().0;
    if age.is_zero() || age > crate::policy::MAX_DELAY {
        err(
            Some(v.span()),
            format!(
                "max_age must be more than 0 and at most 3650 days, got {}",
                v.get_ref()
            ),
        );
        return None;
    }
    Some(Some(age))
}

/// A policy's `meta = { key = "glob", ... }`: at least one key, no empty key, valid globs.
/// `None` (outer) when invalid (reported through `err`).
fn build_meta(
    meta: Option<&toml::Spanned<std::collections::BTreeMap<String, toml::Spanned<String>>>>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Option<Vec<MetaPattern>>> {
    let Some(table) = meta else {
        return Some(None);
    };
    if table.get_ref().is_empty() {
        err(
            Some(table.span()),
            "meta is an empty table, which would match everything; leave it out to match all"
                .into(),
        );
        return None;
    }
    let mut patterns = Vec::new();
    let mut ok = true;
    for (key, value) in table.get_ref() {
        if key.trim().is_empty() {
            err(Some(value.span()), "a meta key cannot be empty".into());
            ok = false;
            continue;
        }
        match GlobList::new(std::slice::from_ref(value.get_ref())) {
            Ok(glob) => patterns.push(MetaPattern {
                key: key.clone(),
                value: glob,
            }),
            Err(e) => {
                err(Some(value.span()), e);
                ok = false;
            }
        }
    }
    ok.then_some(Some(patterns))
}

/// The longest queue name `requeue_to` takes: RQ sets no limit, but a name this long is a
/// mistake (a pasted value), and every key of the queue repeats it.
const MAX_QUEUE_NAME: usize = 200;

/// `requeue_to`: one queue, named exactly (the queue RQ's workers listen to), or `None` when
/// invalid (reported through `err`).
fn build_requeue_to(
    q: &toml::Spanned<String>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<String> {
    let name = q.get_ref();
    let problem = if name.trim().is_empty() {
        Some("requeue_to cannot be empty; leave it out to requeue into the job's own queue".into())
    } else if name.trim() != name {
        Some(format!(
            "requeue_to {name:?} starts or ends with white space; RQ's queue names do not"
        ))
    } else if let Some(c) = name.chars().find(|c| matches!(c, '*' | '?' | '[' | ']')) {
        Some(format!(
            "requeue_to {name:?} contains the glob character {c:?}: it names one queue, exactly as RQ's workers listen to it"
        ))
    } else if name.chars().any(char::is_control) {
        Some(format!("requeue_to {name:?} contains a control character"))
    } else if name.len() > MAX_QUEUE_NAME {
        Some(format!(
            "requeue_to is {} bytes long; at most {MAX_QUEUE_NAME}",
            name.len()
        ))
    } else {
        None
    };
    match problem {
        Some(p) => {
            err(Some(q.span()), p);
            None
        }
        None => Some(name.clone()),
    }
}

/// `hold_when`, or `None` when invalid (reported through `err`): at least one condition, and
/// `queue_longer_than` a count of jobs.
fn build_hold_when(
    h: &toml::Spanned<HoldWhenSection>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<HoldWhen> {
    let section = h.get_ref();
    let queue_longer_than = match section.queue_longer_than {
        None => None,
        Some(n) if (0..=1_000_000_000_000).contains(&n) => Some(n as u64),
        Some(n) => {
            err(
                Some(h.span()),
                format!(
                    "hold_when.queue_longer_than must be between 0 and 1000000000000 jobs, got {n}"
                ),
            );
            return None;
        }
    };
    let hold = HoldWhen {
        no_workers: section.no_workers.unwrap_or(false),
        queue_longer_than,
    };
    if hold == HoldWhen::default() {
        err(
            Some(h.span()),
            "hold_when holds nothing: set no_workers = true or queue_longer_than = N, or remove it"
                .into(),
        );
        return None;
    }
    Some(hold)
}

/// The policy's circuit breaker: the default when not configured, `None` when disabled, and
/// `None` (outer) when the settings are invalid (reported through `err`).
fn build_breaker(
    section: Option<&toml::Spanned<BreakerSection>>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Option<BreakerSpec>> {
    let default = BreakerSpec::default();
    let Some(section) = section else {
        return Some(Some(default));
    };
    match section.get_ref() {
        BreakerSection::Enabled(true) => Some(Some(default)),
        BreakerSection::Enabled(false) => Some(None),
        BreakerSection::Settings(b) => {
            let spec = BreakerSpec {
                window: b.window.map_or(default.window, |d| d.0),
                threshold: b.threshold.unwrap_or(default.threshold),
                min_requeues: b
                    .min_requeues
                    .map_or(Ok(default.min_requeues), usize::try_from)
                    .unwrap_or(0),
                cool_down: b.cool_down.map_or(default.cool_down, |d| d.0),
            };
            let mut problems = Vec::new();
            if !(spec.threshold > 0.0 && spec.threshold <= 1.0) {
                problems.push(format!(
                    "threshold must be above 0.0 and at most 1.0, got {}",
                    spec.threshold
                ));
            }
            if spec.min_requeues == 0 {
                problems.push("min_requeues must be at least 1".to_string());
            }
            if spec.window.is_zero() || spec.cool_down.is_zero() {
                problems.push("window and cool_down must be longer than 0s".to_string());
            }
            if problems.is_empty() {
                return Some(Some(spec));
            }
            for p in problems {
                err(Some(section.span()), p);
            }
            None
        }
    }
}

fn build_backoff(
    b: &BackoffSection,
    span: Range<usize>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Backoff> {
    let mut ok = true;
    // Reported at the field when it has a span of its own, else at the backoff table.
    let mut problem_at = |at: Option<Range<usize>>, message: String| {
        err(Some(at.unwrap_or_else(|| span.clone())), message);
        ok = false;
    };
    let jitter = b.jitter.as_ref().map_or(0.0, |j| *j.get_ref());
    if !(0.0..=1.0).contains(&jitter) {
        problem_at(
            b.jitter.as_ref().map(|j| j.span()),
            format!("jitter must be between 0.0 and 1.0, got {jitter}"),
        );
    }

    let strategy = *b.strategy.get_ref();
    let allowed: &[&str] = match strategy {
        StrategyKind::Fixed => &["delay", "jitter"],
        StrategyKind::Linear => &["initial", "step", "max", "jitter"],
        StrategyKind::Exponential => &["initial", "multiplier", "max", "jitter"],
    };
    let present = [
        ("delay", b.delay.is_some()),
        ("initial", b.initial.is_some()),
        ("step", b.step.is_some()),
        ("multiplier", b.multiplier.is_some()),
        ("max", b.max.is_some()),
    ];
    let strategy_name = format!("{strategy:?}").to_lowercase();
    for (field, is_set) in present {
        if is_set && !allowed.contains(&field) {
            problem_at(
                None,
                format!(
                    "{field} is not a parameter of strategy \"{strategy_name}\" (it takes {})",
                    allowed.join(", ")
                ),
            );
        }
    }
    let d = |v: Option<HumanDuration>| v.map(|h| h.0);
    let backoff = match strategy {
        StrategyKind::Fixed => match d(b.delay) {
            Some(delay) => Backoff::Fixed { delay, jitter },
            None => {
                problem_at(
                    None,
                    "strategy \"fixed\" needs delay, e.g. delay = \"30s\"".into(),
                );
                return None;
            }
        },
        StrategyKind::Linear => match (d(b.initial), d(b.step)) {
            (Some(initial), Some(step)) => Backoff::Linear {
                initial,
                step,
                max: d(b.max),
                jitter,
            },
            _ => {
                problem_at(None, "strategy \"linear\" needs initial and step, e.g. initial = \"30s\", step = \"30s\"".into());
                return None;
            }
        },
        StrategyKind::Exponential => {
            let multiplier = b.multiplier.as_ref().map_or(2.0, |m| *m.get_ref());
            if !(1.0..=100.0).contains(&multiplier) {
                problem_at(
                    b.multiplier.as_ref().map(|m| m.span()),
                    format!("multiplier must be between 1.0 and 100.0, got {multiplier}"),
                );
            }
            match d(b.initial) {
                Some(initial) => Backoff::Exponential {
                    initial,
                    multiplier,
                    max: d(b.max).unwrap_or(Duration::from_secs(3600)),
                    jitter,
                },
                None => {
                    problem_at(
                        None,
                        "strategy \"exponential\" needs initial, e.g. initial = \"30s\"".into(),
                    );
                    return None;
                }
            }
        }
    };
    ok.then_some(backoff)
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Config {
    /// The files that hold a secret, with what it is: the config file when it has one written
    /// in it, and each token file.
    pub fn secret_files(&self) -> Vec<(PathBuf, String)> {
        let mut files = Vec::new();
        if !self.secrets_in_file.is_empty() && self.source != "<embedded defaults>" {
            files.push((
                PathBuf::from(&self.source),
                self.secrets_in_file.join(" and "),
            ));
        }
        for token in &self.http.tokens {
            if let TokenSource::File(path) = &token.source {
                files.push((path.clone(), format!("the API token {:?}", token.name)));
            }
        }
        files
    }

    /// The Redis URL with any password replaced by `***`, safe to print and log.
    pub fn redacted_redis_url(&self) -> String {
        redact_url(&self.redis.url)
    }
}

/// A warning for each of `config`'s [secret files](Config::secret_files) that others (not its
/// owner, not its group) may read or write (`mode & 0o007`), naming the file and the fix.
/// `check-config` and `run` show them; a file that cannot be examined is left to the checks
/// that read it.
///
/// Group access is not warned about: the Debian package's layout is `root:rq-retryd` with mode
/// 0640, and the service (user `rq-retryd`) reads its config and tokens through that group, so
/// a warning there would fire on every packaged install, and its fix (`chmod 600` on a file
/// owned by root) would lock the service out.
pub fn loose_secret_files(config: &Config) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode_of = |path: &Path| std::fs::metadata(path).ok().map(|m| m.permissions().mode());
    loose_secret_warnings(&config.secret_files(), &mode_of)
}

/// The pure core of [`loose_secret_files`]: `mode_of` answers a file's Unix mode.
fn loose_secret_warnings(
    files: &[(PathBuf, String)],
    mode_of: &dyn Fn(&Path) -> Option<u32>,
) -> Vec<String> {
    files
        .iter()
        .filter_map(|(path, what)| {
            let mode = mode_of(path)? & 0o777;
            (mode & 0o007 != 0).then(|| {
                format!(
                    "{} holds {what} and others can read it (mode {mode:03o}); make it private: chmod 600 {} (or 640 with the group the service reads it through, as the Debian package sets up)",
                    path.display(),
                    path.display()
                )
            })
        })
        .collect()
}

/// Replaces the password (or lone user token) of a URL with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest
        .split_once('/')
        .map_or((rest, None), |(a, t)| (a, Some(t)));
    let redacted = match authority.rsplit_once('@') {
        Some((creds, host)) => match creds.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_string(),
    };
    match tail {
        Some(t) => format!("{scheme}://{redacted}/{t}"),
        None => format!("{scheme}://{redacted}"),
    }
}

#[cfg(test)]
mod tests;
