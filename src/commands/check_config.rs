//! `check-config`: the effective configuration and the policy table.

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::{
    ApiToken, Config, HttpSettings, LoggingSettings, ProxyIdentity, SupervisorSettings, TokenSource,
};
use crate::policy::{Action, Policy};

/// Renders the effective configuration (secrets redacted) and the policies in evaluation order.
pub fn render_config(c: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config: {} (valid)", c.source);
    let sections = [
        redis_rows(c),
        supervisor_rows(&c.supervisor),
        http_rows(&c.http),
        logging_rows(&c.logging),
    ];
    for (key, value) in sections.concat() {
        let _ = writeln!(out, "{key:<36} {value}");
    }
    render_policies(&mut out, &c.policies);
    out
}

/// A key of the effective configuration and its value as shown.
type Row = (&'static str, String);

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn redis_rows(c: &Config) -> Vec<Row> {
    let sentinel = c.redis.sentinel.as_ref().map_or("none".to_string(), |s| {
        format!("master {:?} via {}", s.master_name, s.addresses.join(", "))
    });
    vec![
        ("redis.url", c.redacted_redis_url()),
        ("redis.key_prefix", c.redis.key_prefix.clone()),
        ("redis.sentinel", sentinel),
    ]
}

fn supervisor_rows(s: &SupervisorSettings) -> Vec<Row> {
    vec![
        ("supervisor.scan_interval", duration(s.scan_interval)),
        ("supervisor.batch_size", s.batch_size.to_string()),
        ("supervisor.queues", s.queues.patterns().join(", ")),
        ("supervisor.dry_run", s.dry_run.to_string()),
        (
            "supervisor.max_requeues_per_second",
            s.max_requeues_per_second.to_string(),
        ),
    ]
}

fn http_rows(h: &HttpSettings) -> Vec<Row> {
    vec![
        ("http.listen", h.listen.to_string()),
        ("http.auth", describe_tokens(&h.tokens)),
        (
            "http.allowed_hosts",
            listed(&h.allowed_hosts, "none (local names and addresses only)"),
        ),
        (
            "http.allowed_origins",
            listed(&h.allowed_origins, "none (the daemon's own only)"),
        ),
        ("http.session_ttl", duration(h.session_ttl)),
        (
            "http.proxy_identity",
            h.proxy_identity
                .as_ref()
                .map_or("none".to_string(), describe_proxy_identity),
        ),
    ]
}

/// The header a trusted proxy names the user in, and the proxies trusted.
fn describe_proxy_identity(p: &ProxyIdentity) -> String {
    let proxies: Vec<String> = p
        .trusted_proxies
        .iter()
        .map(|n| format!("{}/{}", n.addr, n.prefix))
        .collect();
    format!("header {} from {}", p.header, proxies.join(", "))
}

fn logging_rows(l: &LoggingSettings) -> Vec<Row> {
    let directory = l.directory.as_ref().map_or("(stderr)".to_string(), |p| {
        format!(
            "{} (rotation {:?}, max_files {})",
            p.display(),
            l.rotation,
            l.max_files
        )
        .to_lowercase()
    });
    vec![
        ("logging.level", l.level.clone()),
        ("logging.format", format!("{:?}", l.format).to_lowercase()),
        ("logging.directory", directory),
    ]
}

/// The policy table: each policy's number, name and action kind, what it matches and what it
/// then does.
fn render_policies(out: &mut String, policies: &[Policy]) {
    let _ = writeln!(
        out,
        "\npolicies (evaluated in order; the first that matches decides):"
    );
    if policies.is_empty() {
        let _ = writeln!(
            out,
            "  (none: every failed job is unmatched and left alone)"
        );
    }
    for (i, p) in policies.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}. {:<24} {:<7} match: {}",
            i + 1,
            p.name,
            p.action.kind(),
            describe_match(p)
        );
        let _ = writeln!(
            out,
            "     {:<24} {:<7} then:  {}",
            "",
            "",
            describe_action(p)
        );
    }
}

/// A list as `a, b`, or `empty` when it has nothing.
fn listed<T: std::fmt::Display>(items: &[T], empty: &str) -> String {
    if items.is_empty() {
        return empty.to_string();
    }
    let shown: Vec<String> = items.iter().map(T::to_string).collect();
    shown.join(", ")
}

/// The tokens by name, role and where the secret comes from; never the secret.
fn describe_tokens(tokens: &[ApiToken]) -> String {
    if tokens.is_empty() {
        return "none (no token needed)".to_string();
    }
    tokens
        .iter()
        .map(|t| {
            let from = match &t.source {
                TokenSource::Inline => "in the config".to_string(),
                TokenSource::File(path) => format!("from {}", path.display()),
                TokenSource::Env => "from RQ_RETRYD_AUTH_TOKEN".to_string(),
            };
            format!("{} (role {}, {from})", t.name, t.role)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_match(p: &Policy) -> String {
    let m = &p.matcher;
    let mut parts = Vec::new();
    if let Some(q) = &m.queues {
        parts.push(format!("queues={}", q.patterns().join("|")));
    }
    if let Some(f) = &m.functions {
        parts.push(format!("functions={}", f.patterns().join("|")));
    }
    if let Some(e) = &m.exceptions {
        parts.push(format!(
            "exceptions={}",
            e.iter().map(|x| x.as_str()).collect::<Vec<_>>().join("|")
        ));
    }
    if let Some(r) = &m.error_pattern {
        parts.push(format!("error_pattern={:?}", r.as_str()));
    }
    for meta in m.meta.iter().flatten() {
        parts.push(format!(
            "meta.{}={}",
            meta.key,
            meta.value.patterns().join("|")
        ));
    }
    if parts.is_empty() {
        "every failed job".to_string()
    } else {
        parts.join(" AND ")
    }
}

fn describe_action(p: &Policy) -> String {
    match &p.action {
        Action::Retry(s) => {
            let mut text = format!(
                "max_attempts={} backoff={} at_front={} on_exhausted={}",
                s.max_attempts,
                s.backoff.describe(),
                s.at_front,
                format!("{:?}", s.on_exhausted).to_lowercase()
            );
            if let Some(a) = s.max_age {
                let _ = write!(text, " max_age={}", humantime::format_duration(a));
            }
            if let Some(q) = &s.requeue_to {
                let _ = write!(text, " requeue_to={q}");
            }
            if let Some(h) = &s.hold_when {
                let _ = write!(text, " hold_when={}", h.describe());
            }
            text
        }
        Action::Purge { after } => format!("purge_after={}", humantime::format_duration(*after)),
        Action::Ignore => "leave alone".to_string(),
    }
}

#[cfg(test)]
mod tests {
    /// Issue 21: `meta` is part of what a policy matches, `max_age` of what it then does.
    #[test]
    fn the_policy_table_shows_meta_and_max_age() {
        let config = crate::config::parse(
            "[[policy]]\nname = \"acme\"\nmax_age = \"2d\"\nmeta = { tenant = \"acme-*\" }\n",
            "t.toml",
        )
        .unwrap();
        let out = super::render_config(&config);
        assert!(out.contains("match: meta.tenant=acme-*\n"), "{out}");
        assert!(out.contains("on_exhausted=keep max_age=2days\n"), "{out}");
    }
}
