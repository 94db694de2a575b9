//! Configuration: an immutable snapshot, loaded once and replaced whole on reload.
//!
//! `load` reads a file and hands the text to the pure `parse`, so tests pass strings. Every error
//! is reported as `FILE:LINE:COL: key: message`; semantic checks collect every error, not just
//! the first.

mod candidate;
mod duration;
mod file;
mod hosts;
mod identity;
mod platform_url;
mod policies;
mod role;
mod tokens;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use candidate::{parse_policy_file, PolicyFile};
pub use duration::{parse_duration, HumanDuration};
pub use file::{LogFormat, Rotation};
pub use hosts::{AllowedHost, Host, Origin, Scheme};
pub use identity::{Network, ProxyIdentity, DEFAULT_SESSION_TTL};
pub use role::Role;
pub use tokens::{
    read_token_file_from_disk, ApiToken, TokenSource, LEGACY_TOKEN_NAME, MIN_TOKEN_BYTES,
};

use crate::glob::GlobList;
use crate::policy::Policy;
use file::{FileConfig, HttpSection, LoggingSection, RedisSection, SupervisorSection};

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
    let mut err =
        |span: Option<Range<usize>>, message: String| problems.push(locator.problem(span, message));
    let config = build(&file, source, env, read_file, &mut err);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            source: source.to_string(),
            problems,
        })
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

/// The environment as the parser sees it: a lookup that tests can replace.
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// How the parser reads a token file: a function that tests can replace.
type ReadFile<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

/// The configuration from the file's sections, built one section after the other (redis,
/// supervisor, http, logging, policies) so that problems are always reported in that order;
/// every problem goes to `err`.
fn build(
    file: &FileConfig,
    source: &str,
    env: Env<'_>,
    read_file: ReadFile<'_>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Config {
    Config {
        source: source.to_string(),
        redis: build_redis(&file.redis, env, err),
        supervisor: build_supervisor(&file.supervisor, err),
        http: build_http(&file.http, env, read_file, err),
        logging: build_logging(&file.logging, err),
        policies: policies::build_policies(&file.policies, err),
        secrets_in_file: secrets_in_file(file),
    }
}

/// An environment variable that is set to something besides white space.
fn env_set(env: Env<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

/// A value that the file or the environment gives: where a problem with it is reported (the
/// file's span, or else the env variable named).
struct Overridable {
    value: String,
    span: Option<Range<usize>>,
    env_name: &'static str,
}

impl Overridable {
    fn new(value: String, span: Option<Range<usize>>, env_name: &'static str) -> Overridable {
        Overridable {
            value,
            span,
            env_name,
        }
    }

    fn report(&self, err: &mut impl FnMut(Option<Range<usize>>, String), message: String) {
        report_at(err, self.span.clone(), message, self.env_name);
    }
}

/// `[redis]`: the URL, the key prefix, the TLS files and Sentinel.
fn build_redis(
    r: &RedisSection,
    env: Env<'_>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> RedisSettings {
    let url = redis_url(r.url.as_ref(), env, err);
    let key_prefix = r
        .key_prefix
        .as_ref()
        .map_or("rq".to_string(), |p| p.get_ref().clone());
    if let Some(p) = &r.key_prefix {
        if p.get_ref().is_empty() || p.get_ref().contains(char::is_whitespace) {
            err(
                Some(p.span()),
                "key_prefix must be non-empty and without spaces".into(),
            );
        }
    }
    check_tls_files(r, &url, err);
    let sentinel = build_sentinel(r.sentinel_master.as_ref(), r.sentinels.as_ref(), err);
    if r.tls_cert_file.is_some() != r.tls_key_file.is_some() {
        let span = r.tls_cert_file.as_ref().or(r.tls_key_file.as_ref());
        err(
            span.map(|f| f.span()),
            "tls_cert_file and tls_key_file go together (mutual TLS needs both)".into(),
        );
    }
    let tls_path =
        |field: &Option<toml::Spanned<String>>| field.as_ref().map(|p| PathBuf::from(p.get_ref()));
    RedisSettings {
        url,
        key_prefix,
        tls_ca_file: tls_path(&r.tls_ca_file),
        tls_cert_file: tls_path(&r.tls_cert_file),
        tls_key_file: tls_path(&r.tls_key_file),
        sentinel,
    }
}

/// The Redis URL: RQ_RETRYD_REDIS_URL > the file's url > the platform's REDIS_URL (Heroku,
/// Render, Dokku and compose files set it) > local Redis; a platform's URL is translated.
fn redis_url(
    file_url: Option<&toml::Spanned<String>>,
    env: Env<'_>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> String {
    let url = match (env_set(env, "RQ_RETRYD_REDIS_URL"), file_url) {
        (Some(v), _) => Overridable::new(v, None, "RQ_RETRYD_REDIS_URL"),
        (None, Some(s)) => {
            Overridable::new(s.get_ref().clone(), Some(s.span()), "RQ_RETRYD_REDIS_URL")
        }
        (None, None) => match env_set(env, "REDIS_URL") {
            Some(v) => Overridable::new(v, None, "REDIS_URL"),
            None => Overridable::new(
                "redis://127.0.0.1:6379/0".to_string(),
                None,
                "RQ_RETRYD_REDIS_URL",
            ),
        },
    };
    match platform_url::translate(&url.value) {
        Ok(translated) => {
            if let Err(e) = redis::Client::open(translated.as_str()) {
                let message = format!(
                    "invalid Redis URL: {}",
                    e.detail().unwrap_or(&e.to_string())
                );
                url.report(err, message);
            }
            translated
        }
        Err(message) => {
            url.report(err, message);
            url.value
        }
    }
}

/// Each TLS file needs a `rediss://` URL and must be readable.
fn check_tls_files(
    r: &RedisSection,
    url: &str,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) {
    for field in [&r.tls_ca_file, &r.tls_cert_file, &r.tls_key_file]
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
}

/// `sentinel_master` and `sentinels` go together; each address is `host:port`.
fn build_sentinel(
    master: Option<&toml::Spanned<String>>,
    sentinels: Option<&toml::Spanned<Vec<String>>>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<SentinelSettings> {
    match (master, sentinels) {
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
    }
}

/// `[supervisor]`: the scan's pace and reach, and leader election.
fn build_supervisor(
    sup: &SupervisorSection,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> SupervisorSettings {
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
    let batch_size = positive(&sup.batch_size, 500, 100_000, "batch_size", err);
    let max_rps = positive(
        &sup.max_requeues_per_second,
        500,
        1_000_000,
        "max_requeues_per_second",
        err,
    );
    SupervisorSettings {
        scan_interval,
        batch_size: batch_size as usize,
        queues: supervised_queues(sup.queues.as_ref(), err),
        dry_run: sup.dry_run.unwrap_or(false),
        max_requeues_per_second: max_rps as u32,
        leader_election: sup.leader_election.unwrap_or(true),
        lease_ttl,
    }
}

/// `supervisor.queues`: globs over queue names, all of them when not given; never empty.
fn supervised_queues(
    queues: Option<&toml::Spanned<Vec<String>>>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> GlobList {
    let patterns = queues.map_or(vec!["*".to_string()], |q| q.get_ref().clone());
    let globs = match GlobList::new(&patterns) {
        Ok(g) => g,
        Err(e) => {
            err(queues.map(|q| q.span()), e);
            GlobList::new(&["*".to_string()]).expect("static glob")
        }
    };
    if patterns.is_empty() {
        err(
            queues.map(|q| q.span()),
            "queues is empty: nothing would be supervised (use [\"*\"] for all)".into(),
        );
    }
    globs
}

/// `[http]`: where the API listens and who may call it.
fn build_http(
    http: &HttpSection,
    env: Env<'_>,
    read_file: ReadFile<'_>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> HttpSettings {
    let (listen, listen_given) = listen_address(http.listen.as_ref(), env, err);
    let auth_token = env("RQ_RETRYD_AUTH_TOKEN")
        .filter(|t| !t.is_empty())
        .or(http.auth_token.as_ref().map(|t| t.get_ref().clone()));
    let (tokens, any_token) = tokens::build_tokens(http, listen, env, read_file, err);
    let session_ttl = identity::session_ttl(http.session_ttl.as_ref(), err);
    let proxy_identity = identity::build_proxy_identity(http.proxy_identity.as_ref(), err);
    if !listen.ip().is_loopback() && !any_token && http.proxy_identity.is_none() {
        let message = format!(
            "listening on non-loopback address {listen} requires auth_token, auth_token_file, [[http.tokens]], [http.proxy_identity] or RQ_RETRYD_AUTH_TOKEN"
        );
        listen_given.report(err, message);
    }
    HttpSettings {
        listen,
        auth_token,
        auth_token_file: http
            .auth_token_file
            .as_ref()
            .map(|f| PathBuf::from(f.get_ref())),
        tokens,
        allowed_hosts: allowed_hosts(http, env, err),
        allowed_origins: each_entry(&http.allowed_origins, Origin::parse, err),
        session_ttl,
        proxy_identity,
    }
}

/// The listen address, and where it was given: RQ_RETRYD_HTTP_LISTEN > the file's listen >
/// the platform's PORT (on every address, as a platform's router must reach it; a token is
/// then required like any non-loopback listen) > 127.0.0.1:9732.
fn listen_address(
    file_listen: Option<&toml::Spanned<String>>,
    env: Env<'_>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> (SocketAddr, Overridable) {
    let text = match (env_set(env, "RQ_RETRYD_HTTP_LISTEN"), file_listen) {
        (Some(v), _) => Overridable::new(v, None, "RQ_RETRYD_HTTP_LISTEN"),
        (None, Some(l)) => {
            Overridable::new(l.get_ref().clone(), Some(l.span()), "RQ_RETRYD_HTTP_LISTEN")
        }
        (None, None) => match env_set(env, "PORT") {
            Some(port) => Overridable::new(platform_url::listen_on_port(&port), None, "PORT"),
            None => Overridable::new("127.0.0.1:9732".to_string(), None, "RQ_RETRYD_HTTP_LISTEN"),
        },
    };
    let listen = match text.value.parse() {
        Ok(a) => a,
        Err(_) => {
            let message = format!(
                "invalid listen address {:?}; expected HOST:PORT such as 127.0.0.1:9732",
                text.value
            );
            text.report(err, message);
            "127.0.0.1:9732".parse().expect("static address")
        }
    };
    (listen, text)
}

/// `http.allowed_hosts`, then the names a platform's router sends (`myapp.onrender.com`) in
/// RQ_RETRYD_ALLOWED_HOSTS, for a config without a file.
fn allowed_hosts(
    http: &HttpSection,
    env: Env<'_>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Vec<AllowedHost> {
    let mut hosts = each_entry(&http.allowed_hosts, AllowedHost::parse, err);
    for entry in env_set(env, "RQ_RETRYD_ALLOWED_HOSTS")
        .iter()
        .flat_map(|v| v.split(','))
    {
        match AllowedHost::parse(entry.trim()) {
            Ok(host) => hosts.push(host),
            Err(message) => err(None, format!("env RQ_RETRYD_ALLOWED_HOSTS: {message}")),
        }
    }
    hosts
}

/// `[logging]`: the level or filter, the format, and the files.
fn build_logging(
    lg: &LoggingSection,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> LoggingSettings {
    let level = lg
        .level
        .as_ref()
        .map_or("info".to_string(), |l| l.get_ref().clone());
    if let Some(l) = &lg.level {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(l.get_ref()) {
            err(Some(l.span()), format!("invalid log level or filter: {e}"));
        }
    }
    LoggingSettings {
        level,
        format: lg.format.unwrap_or_default(),
        directory: lg.directory.as_ref().map(PathBuf::from),
        rotation: lg.rotation.unwrap_or_default(),
        max_files: positive(&lg.max_files, 7, 10_000, "max_files", err) as usize,
    }
}

/// What secrets the file itself holds, for the warning about a file others can read.
fn secrets_in_file(file: &FileConfig) -> Vec<&'static str> {
    let mut secrets = Vec::new();
    if file.http.auth_token.is_some() || file.http.tokens.iter().any(|t| t.token.is_some()) {
        secrets.push("an API token");
    }
    if let Some(url) = &file.redis.url {
        if redact_url(url.get_ref()) != *url.get_ref() {
            secrets.push("a Redis URL with a password");
        }
    }
    secrets
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
