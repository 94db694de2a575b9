//! The TOML file as written by people: serde types that mirror `docs/interface.md` one to one.
//! Unknown keys are errors everywhere (`deny_unknown_fields`), so a typo such as
//! `scan_intervall` is reported instead of silently ignored.

use serde::Deserialize;
use toml::Spanned;

use super::duration::HumanDuration;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub redis: RedisSection,
    #[serde(default)]
    pub supervisor: SupervisorSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub logging: LoggingSection,
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicySection>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RedisSection {
    pub url: Option<Spanned<String>>,
    pub key_prefix: Option<Spanned<String>>,
    pub tls_ca_file: Option<Spanned<String>>,
    pub tls_cert_file: Option<Spanned<String>>,
    pub tls_key_file: Option<Spanned<String>>,
    pub sentinel_master: Option<Spanned<String>>,
    pub sentinels: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct SupervisorSection {
    pub scan_interval: Option<Spanned<HumanDuration>>,
    pub batch_size: Option<Spanned<i64>>,
    pub queues: Option<Spanned<Vec<String>>>,
    pub dry_run: Option<bool>,
    pub max_requeues_per_second: Option<Spanned<i64>>,
    pub leader_election: Option<bool>,
    pub lease_ttl: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpSection {
    pub listen: Option<Spanned<String>>,
    pub auth_token: Option<Spanned<String>>,
    pub auth_token_file: Option<Spanned<String>>,
    /// `[[http.tokens]]`: named tokens with a role.
    #[serde(default)]
    pub tokens: Vec<TokenSection>,
    /// Names besides the local ones that a request's `Host` may give (DNS rebinding guard).
    pub allowed_hosts: Option<Vec<Spanned<String>>>,
    /// Origins besides the daemon's own whose pages may send writes (`scheme://host[:port]`).
    pub allowed_origins: Option<Vec<Spanned<String>>>,
    pub session_ttl: Option<Spanned<HumanDuration>>,
    pub proxy_identity: Option<super::identity::ProxyIdentitySection>,
}

/// One `[[http.tokens]]` table: a name, a role and exactly one of `token` and `token_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenSection {
    pub name: Spanned<String>,
    pub role: Spanned<super::role::Role>,
    pub token: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LoggingSection {
    pub level: Option<Spanned<String>>,
    pub format: Option<LogFormat>,
    pub directory: Option<String>,
    pub rotation: Option<Rotation>,
    pub max_files: Option<Spanned<i64>>,
}

/// How log lines are written.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How often a log file in `logging.directory` is rotated.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    Never,
    Hourly,
    #[default]
    Daily,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicySection {
    pub name: Spanned<String>,
    #[serde(default)]
    pub queues: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub functions: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub exceptions: Option<Spanned<Vec<String>>>,
    pub error_pattern: Option<Spanned<String>>,
    pub action: Option<Spanned<ActionKind>>,
    pub max_attempts: Option<Spanned<i64>>,
    pub backoff: Option<Spanned<BackoffSection>>,
    pub at_front: Option<Spanned<bool>>,
    pub on_exhausted: Option<Spanned<OnExhaustedKind>>,
    pub purge_after: Option<Spanned<HumanDuration>>,
    pub circuit_breaker: Option<Spanned<BreakerSection>>,
    /// Retry policies: give up once the job is this old since RQ created it.
    pub max_age: Option<Spanned<HumanDuration>>,
    /// Match on top-level `job.meta` values: key -> glob.
    pub meta: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    pub requeue_to: Option<Spanned<String>>,
    pub hold_when: Option<Spanned<HoldWhenSection>>,
}

/// `hold_when = { no_workers = true, queue_longer_than = 10000 }`: when not to requeue into
/// the target queue (issue 21).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HoldWhenSection {
    pub no_workers: Option<bool>,
    pub queue_longer_than: Option<i64>,
}

/// `circuit_breaker = { window = "10m", threshold = 0.9, min_requeues = 20, cool_down = "10m" }`
/// or `circuit_breaker = false`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum BreakerSection {
    Enabled(bool),
    Settings(BreakerSettings),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BreakerSettings {
    pub window: Option<HumanDuration>,
    pub threshold: Option<f64>,
    pub min_requeues: Option<i64>,
    pub cool_down: Option<HumanDuration>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum ActionKind {
    Retry,
    Purge,
    Ignore,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum OnExhaustedKind {
    Keep,
    Purge,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackoffSection {
    pub strategy: Spanned<StrategyKind>,
    pub delay: Option<HumanDuration>,
    pub initial: Option<HumanDuration>,
    pub step: Option<HumanDuration>,
    pub multiplier: Option<Spanned<f64>>,
    pub max: Option<HumanDuration>,
    pub jitter: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum StrategyKind {
    Fixed,
    Linear,
    Exponential,
}
