//! The running policies written back as a policy file: what the console's simulate page
//! starts from, so that an operator edits what runs rather than retyping it. Parsing the
//! file gives the same policies again (a test checks it); settings at their defaults are
//! left out.

use std::fmt::Write as _;
use std::time::Duration;

use crate::policy::{Action, Backoff, BreakerSpec, OnExhausted, Policy, RetrySpec};

/// `[[policy]]` tables for `policies`, in order.
pub fn policy_file(policies: &[Policy]) -> String {
    let mut out = String::new();
    for (i, p) in policies.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "[[policy]]\nname = {}", quoted(&p.name));
        write_match(&mut out, p);
        let _ = writeln!(out, "action = \"{}\"", p.action.kind());
        match &p.action {
            Action::Retry(spec) => write_retry(&mut out, spec),
            Action::Purge { after } => {
                let _ = writeln!(out, "purge_after = \"{}\"", duration(*after));
            }
            Action::Ignore => {}
        }
    }
    out
}

/// A TOML string, escaped.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items.into_iter().map(quoted).collect();
    format!("[{}]", quoted.join(", "))
}

/// In the largest unit that is exact (`7d`, `90m`, `45s`, `1500ms`): what people write, and
/// what the config reads back exactly.
fn duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    let (size, unit) = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")]
        .into_iter()
        .find(|(size, _)| secs.is_multiple_of(*size) && secs > 0)
        .unwrap_or((1, "s"));
    format!("{}{unit}", secs / size)
}

fn write_match(out: &mut String, p: &Policy) {
    let m = &p.matcher;
    let strings = |g: &crate::glob::GlobList| list(g.patterns().iter().map(String::as_str));
    if let Some(q) = &m.queues {
        let _ = writeln!(out, "queues = {}", strings(q));
    }
    if let Some(f) = &m.functions {
        let _ = writeln!(out, "functions = {}", strings(f));
    }
    if let Some(e) = &m.exceptions {
        let _ = writeln!(out, "exceptions = {}", list(e.iter().map(|x| x.as_str())));
    }
    if let Some(r) = &m.error_pattern {
        let _ = writeln!(out, "error_pattern = {}", quoted(r.as_str()));
    }
    if let Some(meta) = &m.meta {
        let pairs: Vec<String> = meta
            .iter()
            .map(|p| {
                format!(
                    "{} = {}",
                    quoted(&p.key),
                    quoted(&p.value.patterns().join(","))
                )
            })
            .collect();
        let _ = writeln!(out, "meta = {{ {} }}", pairs.join(", "));
    }
}

fn write_retry(out: &mut String, s: &RetrySpec) {
    let _ = writeln!(out, "max_attempts = {}", s.max_attempts);
    let _ = writeln!(out, "backoff = {}", backoff(&s.backoff));
    if s.at_front {
        let _ = writeln!(out, "at_front = true");
    }
    if s.on_exhausted == OnExhausted::Purge {
        let _ = writeln!(out, "on_exhausted = \"purge\"");
    }
    match &s.circuit_breaker {
        None => {
            let _ = writeln!(out, "circuit_breaker = false");
        }
        Some(b) if *b == BreakerSpec::default() => {}
        Some(b) => {
            let _ = writeln!(
                out,
                "circuit_breaker = {{ window = \"{}\", threshold = {:?}, min_requeues = {}, cool_down = \"{}\" }}",
                duration(b.window),
                b.threshold,
                b.min_requeues,
                duration(b.cool_down)
            );
        }
    }
    if let Some(age) = s.max_age {
        let _ = writeln!(out, "max_age = \"{}\"", duration(age));
    }
    if let Some(q) = &s.requeue_to {
        let _ = writeln!(out, "requeue_to = {}", quoted(q));
    }
    if let Some(h) = &s.hold_when {
        let mut parts = vec![format!("no_workers = {}", h.no_workers)];
        if let Some(n) = h.queue_longer_than {
            parts.push(format!("queue_longer_than = {n}"));
        }
        let _ = writeln!(out, "hold_when = {{ {} }}", parts.join(", "));
    }
}

fn backoff(b: &Backoff) -> String {
    match *b {
        Backoff::Fixed { delay, jitter } => format!(
            "{{ strategy = \"fixed\", delay = \"{}\", jitter = {jitter:?} }}",
            duration(delay)
        ),
        Backoff::Linear {
            initial,
            step,
            max,
            jitter,
        } => {
            let max = max.map_or(String::new(), |m| format!(", max = \"{}\"", duration(m)));
            format!(
                "{{ strategy = \"linear\", initial = \"{}\", step = \"{}\"{max}, jitter = {jitter:?} }}",
                duration(initial),
                duration(step)
            )
        }
        Backoff::Exponential {
            initial,
            multiplier,
            max,
            jitter,
        } => format!(
            "{{ strategy = \"exponential\", initial = \"{}\", multiplier = {multiplier:?}, max = \"{}\", jitter = {jitter:?} }}",
            duration(initial),
            duration(max)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_policy_file;

    /// What a policy is, for comparing: its match and its action.
    fn shape(policies: &[Policy]) -> Vec<String> {
        policies
            .iter()
            .map(|p| {
                let matcher = super::super::over_index::match_signature(&p.matcher);
                format!("{} {matcher} {:?}", p.name, p.action)
            })
            .collect()
    }

    #[test]
    fn the_written_file_reads_back_as_the_same_policies() {
        let text = r#"
[[policy]]
name = "net \"work\""
queues = ["default", "email*"]
functions = ["app.workers.*"]
exceptions = ["ConnectionError", "redis.exceptions.TimeoutError"]
error_pattern = '(?i)timed? ?out\d'
max_attempts = 5
backoff = { strategy = "exponential", initial = "30s", multiplier = 2.5, max = "1h", jitter = 0.1 }
at_front = true
on_exhausted = "purge"
circuit_breaker = { window = "5m", threshold = 0.5, min_requeues = 3, cool_down = "1500ms" }
max_age = "2d"
requeue_to = "slow"
hold_when = { no_workers = true, queue_longer_than = 100 }
meta = { tenant = "acme-*" }
[[policy]]
name = "lin"
backoff = { strategy = "linear", initial = "1m", step = "30s", max = "10m" }
circuit_breaker = false
[[policy]]
name = "fixed"
backoff = { strategy = "fixed", delay = "10s", jitter = 0.0 }
[[policy]]
name = "bad-input"
exceptions = ["ValueError"]
action = "purge"
purge_after = "7d"
[[policy]]
name = "rest"
action = "ignore"
"#;
        let policies = parse_policy_file(text, "t").unwrap().policies;
        let written = policy_file(&policies);
        let again = parse_policy_file(&written, "written")
            .unwrap_or_else(|e| panic!("{e}\n{written}"))
            .policies;
        assert_eq!(shape(&again), shape(&policies), "{written}");
        assert!(
            written.contains("meta = { \"tenant\" = \"acme-*\" }"),
            "{written}"
        );
    }
}
