//! `[[policy]]` tables as the policy engine's [`Policy`] values, in the order written. A
//! refused table is left out and each of its problems is reported at its place, so that one
//! run of `check-config` names every mistake.

use std::ops::Range;
use std::time::Duration;

use super::duration::HumanDuration;
use super::file::{
    ActionKind, BackoffSection, BreakerSection, HoldWhenSection, OnExhaustedKind, PolicySection,
    StrategyKind,
};
use super::MANUAL;
use crate::glob::{ExceptionPattern, GlobList};
use crate::policy::{
    Action, Backoff, BreakerSpec, HoldWhen, Matcher, MetaPattern, OnExhausted, Policy, RetrySpec,
};

/// `[[policy]]` in order: the valid ones; each name once.
pub(super) fn build_policies(
    sections: &[PolicySection],
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Vec<Policy> {
    let mut policies = Vec::with_capacity(sections.len());
    let mut names = std::collections::HashSet::new();
    for section in sections {
        if !names.insert(section.name.get_ref().clone()) {
            err(
                Some(section.name.span()),
                format!("duplicate policy name {:?}", section.name.get_ref()),
            );
        }
        if let Some(policy) = build_policy(section, err) {
            policies.push(policy);
        }
    }
    policies
}

/// One `[[policy]]` table as a policy, or `None` when anything in it is refused; every
/// problem is reported through `err`, in the order of the checks: name, match, action, meta.
fn build_policy(
    s: &PolicySection,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Policy> {
    let name = policy_name(&s.name, err);
    let matcher = build_matcher(s, err);
    let action = build_action(s, err);
    let meta = build_meta(s.meta.as_ref(), err);
    let mut matcher = matcher?;
    matcher.meta = meta?;
    Some(Policy {
        name: name?,
        matcher,
        action: action?,
    })
}

/// The policy's (trimmed) name; not empty and not [`MANUAL`].
fn policy_name(
    name: &toml::Spanned<String>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<String> {
    let trimmed = name.get_ref().trim().to_string();
    if trimmed.is_empty() {
        err(Some(name.span()), "policy name cannot be empty".into());
        return None;
    }
    if trimmed == MANUAL {
        err(
            Some(name.span()),
            format!("policy name {MANUAL:?} is reserved: it names operators' manual actions in the metrics, the audit and retryd_policy"),
        );
        return None;
    }
    Some(trimmed)
}

/// What the policy matches, but for `meta` (checked after the action, see [`build_policy`]).
fn build_matcher(
    s: &PolicySection,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Matcher> {
    let queues = match_globs(&s.queues, "queues", err);
    let functions = match_globs(&s.functions, "functions", err);
    let exceptions = exception_patterns(&s.exceptions, err);
    let error_pattern = error_regex(&s.error_pattern, err);
    Some(Matcher {
        queues: queues?,
        functions: functions?,
        exceptions: exceptions?,
        error_pattern: error_pattern?,
        meta: None,
    })
}

/// A list of globs (`queues`, `functions`): `Some(None)` when not given (match all), `None`
/// when refused: empty (which would match nothing) or not a glob.
fn match_globs(
    field: &Option<toml::Spanned<Vec<String>>>,
    what: &str,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Option<GlobList>> {
    let Some(list) = field else {
        return Some(None);
    };
    if list.get_ref().is_empty() {
        err(
            Some(list.span()),
            format!(
                "{what} is an empty list, which would match nothing; leave it out to match all"
            ),
        );
        return None;
    }
    match GlobList::new(list.get_ref()) {
        Ok(g) => Some(Some(g)),
        Err(e) => {
            err(Some(list.span()), e);
            None
        }
    }
}

/// `exceptions`: `Some(None)` when not given (match all), `None` when refused.
fn exception_patterns(
    field: &Option<toml::Spanned<Vec<String>>>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Option<Vec<ExceptionPattern>>> {
    let Some(list) = field else {
        return Some(None);
    };
    if list.get_ref().is_empty() {
        err(
            Some(list.span()),
            "exceptions is an empty list, which would match nothing; leave it out to match all"
                .into(),
        );
        return None;
    }
    let patterns = list.get_ref().iter().map(|p| ExceptionPattern::new(p));
    match patterns.collect::<Result<Vec<_>, _>>() {
        Ok(v) => Some(Some(v)),
        Err(e) => {
            err(Some(list.span()), e);
            None
        }
    }
}

/// `error_pattern`: `Some(None)` when not given, `None` when it is not a regex (or too big).
fn error_regex(
    field: &Option<toml::Spanned<String>>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Option<regex::Regex>> {
    let Some(p) = field else {
        return Some(None);
    };
    match regex::RegexBuilder::new(p.get_ref())
        .size_limit(10 << 20)
        .build()
    {
        Ok(r) => Some(Some(r)),
        Err(e) => {
            err(
                Some(p.span()),
                format!("invalid regex: {}", one_line(&e.to_string())),
            );
            None
        }
    }
}

/// What the policy does with a job it matches; `None` when refused, e.g. a retry setting on a
/// purge policy.
fn build_action(
    s: &PolicySection,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Action> {
    let kind = s
        .action
        .as_ref()
        .map_or(ActionKind::Retry, |a| *a.get_ref());
    let fields_ok = check_action_fields(s, kind, err);
    let action = match kind {
        ActionKind::Ignore => Some(Action::Ignore),
        ActionKind::Purge => Some(Action::Purge {
            after: s
                .purge_after
                .as_ref()
                .map_or(Duration::ZERO, |d| d.get_ref().0),
        }),
        ActionKind::Retry => build_retry(s, err).map(Action::Retry),
    };
    action.filter(|_| fields_ok)
}

/// Refuses, at its place, each setting the policy's action does not use; `false` if any.
fn check_action_fields(
    s: &PolicySection,
    kind: ActionKind,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> bool {
    let kind_name = match kind {
        ActionKind::Retry => "retry",
        ActionKind::Purge => "purge",
        ActionKind::Ignore => "ignore",
    };
    let mut unused: Vec<(&str, Option<Range<usize>>)> = Vec::new();
    if kind != ActionKind::Retry {
        unused.extend([
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
        ]);
    }
    if kind != ActionKind::Purge {
        unused.push(("purge_after", s.purge_after.as_ref().map(|v| v.span())));
    }
    let mut ok = true;
    for (field, span) in unused {
        if let Some(span) = span {
            err(
                Some(span),
                format!("{field} has no effect with action = \"{kind_name}\"; remove it"),
            );
            ok = false;
        }
    }
    ok
}

/// A retry policy's settings, or `None` when any is refused (each reported through `err`).
fn build_retry(
    s: &PolicySection,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<RetrySpec> {
    let max_attempts = match &s.max_attempts {
        None => Some(3),
        Some(v) if (1..=1_000_000).contains(v.get_ref()) => Some(*v.get_ref() as u32),
        Some(v) => {
            err(Some(v.span()), format!("max_attempts must be between 1 and 1000000, got {} (use action = \"ignore\" to never retry)", v.get_ref()));
            None
        }
    };
    let backoff = match &s.backoff {
        None => Some(Backoff::conservative()),
        Some(b) => build_backoff(b.get_ref(), b.span(), err),
    };
    let circuit_breaker = build_breaker(s.circuit_breaker.as_ref(), err);
    let max_age = build_max_age(s.max_age.as_ref(), err);
    let requeue_to = match &s.requeue_to {
        None => Some(None),
        Some(q) => build_requeue_to(q, err).map(Some),
    };
    let hold_when = match &s.hold_when {
        None => Some(None),
        Some(h) => build_hold_when(h, err).map(Some),
    };
    Some(RetrySpec {
        max_attempts: max_attempts?,
        backoff: backoff?,
        at_front: s.at_front.as_ref().is_some_and(|a| *a.get_ref()),
        on_exhausted: match s.on_exhausted.as_ref().map(|o| *o.get_ref()) {
            Some(OnExhaustedKind::Purge) => OnExhausted::Purge,
            _ => OnExhausted::Keep,
        },
        circuit_breaker: circuit_breaker?,
        max_age: max_age?,
        requeue_to: requeue_to?,
        hold_when: hold_when?,
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

/// A retry policy's `backoff` table, or `None` when refused; each problem is reported at its
/// field when it has a span of its own, else at the backoff table (`span`).
fn build_backoff(
    b: &BackoffSection,
    span: Range<usize>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Backoff> {
    let mut ok = true;
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
    check_strategy_parameters(b, &mut problem_at);
    let backoff = strategy_backoff(b, jitter, &mut problem_at)?;
    ok.then_some(backoff)
}

/// Refuses each parameter that the strategy does not take.
fn check_strategy_parameters(
    b: &BackoffSection,
    problem_at: &mut impl FnMut(Option<Range<usize>>, String),
) {
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
}

/// The backoff of the table's strategy, or `None` when a parameter it needs is missing.
fn strategy_backoff(
    b: &BackoffSection,
    jitter: f64,
    problem_at: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<Backoff> {
    let d = |v: Option<HumanDuration>| v.map(|h| h.0);
    let (backoff, needs) = match *b.strategy.get_ref() {
        StrategyKind::Fixed => (
            d(b.delay).map(|delay| Backoff::Fixed { delay, jitter }),
            "strategy \"fixed\" needs delay, e.g. delay = \"30s\"",
        ),
        StrategyKind::Linear => (
            d(b.initial)
                .zip(d(b.step))
                .map(|(initial, step)| Backoff::Linear {
                    initial,
                    step,
                    max: d(b.max),
                    jitter,
                }),
            "strategy \"linear\" needs initial and step, e.g. initial = \"30s\", step = \"30s\"",
        ),
        StrategyKind::Exponential => {
            let multiplier = b.multiplier.as_ref().map_or(2.0, |m| *m.get_ref());
            if !(1.0..=100.0).contains(&multiplier) {
                problem_at(
                    b.multiplier.as_ref().map(|m| m.span()),
                    format!("multiplier must be between 1.0 and 100.0, got {multiplier}"),
                );
            }
            (
                d(b.initial).map(|initial| Backoff::Exponential {
                    initial,
                    multiplier,
                    max: d(b.max).unwrap_or(Duration::from_secs(3600)),
                    jitter,
                }),
                "strategy \"exponential\" needs initial, e.g. initial = \"30s\"",
            )
        }
    };
    if backoff.is_none() {
        problem_at(None, needs.into());
    }
    backoff
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
