//! Table tests of the pure config parser: what parses, what is refused, and where the error
//! points (`cfg.toml:LINE:COL: key: message`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::policy::{Action, Backoff, OnExhausted};

const SOURCE: &str = "cfg.toml";

/// The example of docs/interface.md, verbatim (comments and all).
const INTERFACE_EXAMPLE: &str = r#"[redis]
url = "redis://127.0.0.1:6379/0"     # redis://, rediss:// (TLS), unix://; user/password in URL
key_prefix = "rq"                     # RQ's namespace
[supervisor]
scan_interval = "15s"
batch_size = 500
queues = ["*"]                        # glob patterns over queue names
dry_run = false                       # decide and report, never write
max_requeues_per_second = 500         # global ceiling on automatic requeues
[http]
listen = "127.0.0.1:9732"
auth_token_file = "/etc/rq-retryd/token"   # or auth_token; required for a non-loopback listen
[logging]
level = "info"                        # or a tracing filter directive
format = "text"                       # text | json
# directory = "/var/log/rq-retryd"; rotation = "daily" (never|hourly|daily); max_files = 7

[[policy]]                            # ordered; the first policy that matches a job decides
name = "transient-network"
queues = ["default", "email*"]        # globs (default: all)
functions = ["app.workers.*"]         # globs over the dotted function name (default: all)
exceptions = ["ConnectionError", "redis.exceptions.TimeoutError"]  # exception type, bare or dotted
error_pattern = "(?i)timed? ?out"     # regex over the whole traceback text
action = "retry"                      # retry | purge | ignore
max_attempts = 5                      # automatic requeues by rq-retryd for this job
backoff = { strategy = "exponential", initial = "30s", multiplier = 2.0, max = "1h", jitter = 0.1 }
                                      # strategy: fixed (delay) | linear (initial, step) | exponential
at_front = false
on_exhausted = "keep"                 # keep (leave in failed registry, marked) | purge
[[policy]]
name = "bad-input"
exceptions = ["ValueError"]
action = "purge"
purge_after = "7d"                    # age since failure before purging (default 0)
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

/// A file system holding `files` (path, content) and nothing else.
fn files(
    files: &'static [(&'static str, &'static str)],
) -> impl Fn(&Path) -> std::io::Result<String> {
    move |path: &Path| {
        files
            .iter()
            .find(|(p, _)| Path::new(p) == path)
            .map(|(_, text)| text.to_string())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

/// Parses `text` against the files of [`files`], expecting a refusal.
fn problems_with(text: &str, fs: &dyn Fn(&Path) -> std::io::Result<String>) -> Vec<ConfigProblem> {
    match parse_with(text, SOURCE, &no_env, fs) {
        Ok(config) => panic!("expected an invalid config, got {config:?}"),
        Err(e) => e.problems,
    }
}

/// Parses `text`, expecting a refusal, and returns its problems.
fn problems(text: &str) -> Vec<ConfigProblem> {
    match parse(text, SOURCE) {
        Ok(config) => panic!("expected an invalid config, got {config:?}"),
        Err(e) => {
            assert_eq!(e.source, SOURCE);
            e.problems
        }
    }
}

/// Parses `text`, expecting exactly one problem, and returns it.
fn only_problem(text: &str) -> ConfigProblem {
    let mut all = problems(text);
    assert_eq!(all.len(), 1, "expected one problem, got {all:#?}");
    all.remove(0)
}

/// Asserts a problem's place, key and (part of) its message.
fn assert_problem(p: &ConfigProblem, line: usize, col: usize, key: &str, says: &str) {
    assert_eq!(p.position, Some((line, col)), "position of {p:?}");
    assert_eq!(p.key.as_deref(), Some(key), "key of {p:?}");
    assert!(
        p.message.contains(says),
        "{:?} should say {says:?}",
        p.message
    );
}

#[test]
fn the_embedded_defaults_parse_into_one_conservative_retry_policy() {
    let config = parse(EMBEDDED_DEFAULTS, "<embedded defaults>").expect("defaults are valid");
    assert_eq!(config.redis.url, "redis://127.0.0.1:6379/0");
    assert_eq!(config.redis.key_prefix, "rq");
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:9732");
    assert!(config.supervisor.queues.is_match("any-queue"));
    assert!(!config.supervisor.dry_run);
    assert_eq!(config.policies.len(), 1);
    let policy = &config.policies[0];
    assert_eq!(policy.name, "default-retry");
    match &policy.action {
        Action::Retry(spec) => {
            assert_eq!(spec.max_attempts, 3);
            assert_eq!(spec.on_exhausted, OnExhausted::Keep);
            assert!(matches!(spec.backoff, Backoff::Exponential { .. }));
        }
        other => panic!("the default policy must retry, got {other:?}"),
    }
}

#[test]
fn the_interface_example_parses_with_two_policies_in_order() {
    // The example names a token file; here it holds a token (an unreadable one is refused).
    let fs = files(&[("/etc/rq-retryd/token", "example-token\n")]);
    let config = parse_with(INTERFACE_EXAMPLE, SOURCE, &no_env, &fs)
        .expect("the documented example is valid");
    assert_eq!(config.source, SOURCE);
    assert_eq!(config.supervisor.scan_interval, Duration::from_secs(15));
    assert_eq!(config.supervisor.batch_size, 500);
    assert_eq!(config.supervisor.max_requeues_per_second, 500);
    assert_eq!(
        config.http.auth_token_file.as_deref(),
        Some(Path::new("/etc/rq-retryd/token"))
    );
    assert_eq!(config.logging.format, LogFormat::Text);
    let names: Vec<&str> = config.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["transient-network", "bad-input"]);

    match &config.policies[0].action {
        Action::Retry(spec) => {
            assert_eq!(spec.max_attempts, 5);
            assert!(!spec.at_front);
            assert_eq!(spec.on_exhausted, OnExhausted::Keep);
            assert_eq!(
                spec.backoff,
                Backoff::Exponential {
                    initial: Duration::from_secs(30),
                    multiplier: 2.0,
                    max: Duration::from_secs(3600),
                    jitter: 0.1,
                }
            );
        }
        other => panic!("transient-network must retry, got {other:?}"),
    }
    match &config.policies[1].action {
        Action::Purge { after } => assert_eq!(*after, Duration::from_secs(7 * 24 * 3600)),
        other => panic!("bad-input must purge, got {other:?}"),
    }
}

#[test]
fn an_empty_file_means_all_defaults_and_no_policies() {
    let config = parse("", SOURCE).expect("an empty file is valid");
    assert_eq!(config.redis.url, "redis://127.0.0.1:6379/0");
    assert_eq!(config.supervisor.scan_interval, Duration::from_secs(15));
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:9732");
    assert!(config.policies.is_empty());
}

#[test]
fn a_misspelled_supervisor_key_is_an_unknown_field_error_naming_it() {
    let text = "[supervisor]\nscan_intervall = \"15s\"\n";
    let p = only_problem(text);
    assert_problem(
        &p,
        2,
        1,
        "supervisor.scan_intervall",
        "unknown field `scan_intervall`",
    );
    let shown = parse(text, SOURCE).unwrap_err().to_string();
    assert!(
        shown.starts_with("cfg.toml:2:1: supervisor.scan_intervall: unknown field"),
        "{shown}"
    );
}

#[test]
fn an_unclosed_regex_in_the_second_policy_points_at_its_error_pattern() {
    let text =
        "[[policy]]\nname = \"first\"\n\n[[policy]]\nname = \"second\"\nerror_pattern = \"(foo\"\n";
    let p = only_problem(text);
    assert_problem(&p, 6, 17, "policy[2].error_pattern", "invalid regex");
    let shown = parse(text, SOURCE).unwrap_err().to_string();
    assert!(
        shown.starts_with("cfg.toml:6:17: policy[2].error_pattern: invalid regex"),
        "{shown}"
    );
    assert!(!shown.contains('\n'), "one line per problem: {shown:?}");
}

#[test]
fn each_invalid_value_is_reported_at_its_line_column_and_key() {
    // (what is wrong, file text, line, col, key, part of the message)
    let cases: &[(&str, &str, usize, usize, &str, &str)] = &[
        (
            "max_attempts = 0",
            "[[policy]]\nname = \"a\"\nmax_attempts = 0\n",
            3,
            16,
            "policy[1].max_attempts",
            "max_attempts must be between 1 and 1000000, got 0",
        ),
        (
            "a duration in parsecs",
            "[supervisor]\nscan_interval = \"5 parsecs\"\n",
            2,
            17,
            "supervisor.scan_interval",
            "invalid duration \"5 parsecs\"",
        ),
        (
            "a bad duration inside an inline backoff table",
            "[[policy]]\nname = \"a\"\nbackoff = { strategy = \"exponential\", initial = \"30s\", max = \"5 parsecs\" }\n",
            3,
            62,
            "policy[1].backoff.max",
            "invalid duration",
        ),
        (
            "a parameter of another strategy",
            "[[policy]]\nname = \"a\"\nbackoff = { strategy = \"exponential\", initial = \"1s\", step = \"5s\" }\n",
            3,
            11,
            "policy[1].backoff",
            "step is not a parameter of strategy \"exponential\"",
        ),
        (
            "jitter above 1",
            "[[policy]]\nname = \"a\"\nbackoff = { strategy = \"fixed\", delay = \"1s\", jitter = 1.5 }\n",
            3,
            56,
            "policy[1].backoff.jitter",
            "jitter must be between 0.0 and 1.0, got 1.5",
        ),
        (
            "a multiplier that shrinks",
            "[[policy]]\nname = \"a\"\nbackoff = { strategy = \"exponential\", initial = \"1s\", multiplier = 0.5 }\n",
            3,
            68,
            "policy[1].backoff.multiplier",
            "multiplier must be between 1.0 and 100.0, got 0.5",
        ),
        (
            "fixed without delay",
            "[[policy]]\nname = \"a\"\nbackoff = { strategy = \"fixed\" }\n",
            3,
            11,
            "policy[1].backoff",
            "needs delay",
        ),
        (
            "purge_after on a retry policy",
            "[[policy]]\nname = \"a\"\naction = \"retry\"\npurge_after = \"7d\"\n",
            4,
            15,
            "policy[1].purge_after",
            "purge_after has no effect with action = \"retry\"",
        ),
        (
            "max_attempts on a purge policy",
            "[[policy]]\nname = \"a\"\naction = \"purge\"\nmax_attempts = 2\n",
            4,
            16,
            "policy[1].max_attempts",
            "max_attempts has no effect with action = \"purge\"",
        ),
        (
            "a duplicate policy name",
            "[[policy]]\nname = \"same\"\n[[policy]]\nname = \"same\"\n",
            4,
            8,
            "policy[2].name",
            "duplicate policy name \"same\"",
        ),
        (
            "the reserved policy name",
            "[[policy]]\nname = \"manual\"\n",
            2,
            8,
            "policy[1].name",
            "policy name \"manual\" is reserved",
        ),
        (
            "an unknown action",
            "[[policy]]\nname = \"a\"\naction = \"bogus\"\n",
            3,
            10,
            "policy[1].action",
            "unknown variant `bogus`",
        ),
        (
            "an empty exceptions list",
            "[[policy]]\nname = \"a\"\nexceptions = []\n",
            3,
            14,
            "policy[1].exceptions",
            "empty list",
        ),
        (
            "an invalid queue glob",
            "[supervisor]\nqueues = [\"ok\", \"[\"]\n",
            2,
            10,
            "supervisor.queues",
            "invalid glob \"[\"",
        ),
        (
            "batch_size = 0",
            "[supervisor]\nbatch_size = 0\n",
            2,
            14,
            "supervisor.batch_size",
            "batch_size must be between 1 and 100000, got 0",
        ),
        (
            "a listen address without a port",
            "[http]\nlisten = \"nope\"\n",
            2,
            10,
            "http.listen",
            "invalid listen address \"nope\"",
        ),
        (
            "a log format that does not exist",
            "[logging]\nformat = \"xml\"\n",
            2,
            10,
            "logging.format",
            "unknown variant `xml`",
        ),
        (
            "a key given twice",
            "[supervisor]\nbatch_size = 1\nbatch_size = 2\n",
            3,
            1,
            "supervisor.batch_size",
            "duplicate key",
        ),
    ];
    assert_each_refused_at_its_place(cases);
}

#[test]
fn keys_are_found_past_comments_sub_tables_and_line_breaks() {
    // See: Locator fixes — header comments, [policy.x] sub-tables, multi-line arrays, inline keys,
    // unknown tables and missing fields used to lose or garble the key.
    let cases: &[(&str, &str, usize, usize, &str)] = &[
        (
            "a comment after the table header",
            "[supervisor] # the scan loop\nscan_interval = \"5 parsecs\"\n",
            2,
            17,
            "supervisor.scan_interval",
        ),
        (
            "a comment after a [[policy]] header keeps the policy count",
            "[[policy]] # first\nname = \"a\"\n[[policy]]   # second\nname = \"b\"\nmax_attempts = 0\n",
            5,
            16,
            "policy[2].max_attempts",
        ),
        (
            "a [policy.backoff] sub-table",
            "[[policy]]\nname = \"a\"\n[policy.backoff]\nstrategy = \"fixed\"\ndelay = \"5 parsecs\"\n",
            5,
            9,
            "policy[1].backoff.delay",
        ),
        (
            "an element on a later line of a multi-line array",
            "[supervisor]\nqueues = [\n  \"a\",\n  1,\n]\n",
            4,
            3,
            "supervisor.queues",
        ),
        (
            "an unknown key inside an inline table",
            "[[policy]]\nname = \"a\"\nbackoff = { strategy = \"fixed\", delay = \"1s\", delya = \"2s\" }\n",
            3,
            47,
            "policy[1].backoff.delya",
        ),
        (
            "an unknown table",
            "[supervsor]\nscan_interval = \"1s\"\n",
            1,
            2,
            "supervsor",
        ),
        (
            "a policy without a name",
            "[[policy]]\nname = \"a\"\n[[policy]]\naction = \"retry\"\n",
            3,
            1,
            "policy[2]",
        ),
        (
            "a top-level dotted key",
            "redis.url = 5\n",
            1,
            13,
            "redis.url",
        ),
    ];
    for (what, text, line, col, key) in cases {
        let all = problems(text);
        assert_eq!(all.len(), 1, "{what}: expected one problem, got {all:#?}");
        assert_eq!(all[0].position, Some((*line, *col)), "{what}: {:?}", all[0]);
        assert_eq!(all[0].key.as_deref(), Some(*key), "{what}: {:?}", all[0]);
    }
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = "# größe\n[[policy]]\nname = \"ü\"\nexceptions = [\"Ü[\"]\n";
    let p = only_problem(text);
    assert_problem(
        &p,
        4,
        14,
        "policy[1].exceptions",
        "invalid exception pattern",
    );
    let text = "[[policy]]\nname = \"ä\"; error_pattern = \"(\"\n";
    // Not valid TOML (two keys on one line): still located, never a panic on a multi-byte char.
    let p = only_problem(text);
    assert_eq!(p.position.map(|(line, _)| line), Some(2), "{p:?}");
}

#[test]
fn semantic_checks_report_every_mistake_at_once() {
    let text = "[supervisor]\nbatch_size = 0\n\n[[policy]]\nname = \"a\"\nmax_attempts = 0\nerror_pattern = \"(\"\n";
    let all = problems(text);
    assert!(all.len() >= 2, "expected several problems, got {all:#?}");
    let keys: Vec<&str> = all.iter().filter_map(|p| p.key.as_deref()).collect();
    assert!(keys.contains(&"supervisor.batch_size"), "{keys:?}");
    assert!(keys.contains(&"policy[1].max_attempts"), "{keys:?}");
    assert!(keys.contains(&"policy[1].error_pattern"), "{keys:?}");
    let shown = parse(text, SOURCE).unwrap_err().to_string();
    assert_eq!(
        shown.lines().count(),
        all.len(),
        "one line per problem: {shown}"
    );
    assert!(shown.lines().all(|l| l.starts_with("cfg.toml:")), "{shown}");
}

#[test]
fn a_non_loopback_listen_needs_a_token() {
    let open = "[http]\nlisten = \"0.0.0.0:9732\"\n";
    let p = only_problem(open);
    assert_problem(
        &p,
        2,
        10,
        "http.listen",
        "non-loopback address 0.0.0.0:9732 requires auth_token",
    );

    let with_token = "[http]\nlisten = \"0.0.0.0:9732\"\nauth_token = \"s3cret-long-enough\"\n";
    let config = parse(with_token, SOURCE).expect("a token makes it valid");
    assert_eq!(
        config.http.auth_token.as_deref(),
        Some("s3cret-long-enough")
    );

    let with_file = "[http]\nlisten = \"0.0.0.0:9732\"\nauth_token_file = \"/run/token\"\n";
    let fs = files(&[("/run/token", "from-file-0123456\n")]);
    assert!(parse_with(with_file, SOURCE, &no_env, &fs).is_ok());

    let env =
        |name: &str| (name == "RQ_RETRYD_AUTH_TOKEN").then(|| "from-env-01234567".to_string());
    let config = parse_with_env(open, SOURCE, &env).expect("an env token makes it valid");
    assert_eq!(config.http.auth_token.as_deref(), Some("from-env-01234567"));

    let empty_env = |name: &str| (name == "RQ_RETRYD_AUTH_TOKEN").then(String::new);
    assert!(
        parse_with_env(open, SOURCE, &empty_env).is_err(),
        "an empty RQ_RETRYD_AUTH_TOKEN is no token"
    );
}

#[test]
fn env_overrides_win_over_the_file() {
    let text = "[redis]\nurl = \"redis://file-host:6379/0\"\n[http]\nlisten = \"127.0.0.1:1111\"\n";
    let env = |name: &str| match name {
        "RQ_RETRYD_REDIS_URL" => Some("redis://env-host:6380/2".to_string()),
        "RQ_RETRYD_HTTP_LISTEN" => Some("127.0.0.1:2222".to_string()),
        _ => None,
    };
    let config = parse_with_env(text, SOURCE, &env).expect("valid");
    assert_eq!(config.redis.url, "redis://env-host:6380/2");
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:2222");

    let config = parse_with_env(text, SOURCE, &no_env).expect("valid");
    assert_eq!(config.redis.url, "redis://file-host:6379/0");
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:1111");
}

#[test]
fn a_platforms_redis_url_and_port_apply_only_where_nothing_else_says() {
    let platform = |name: &str| match name {
        "REDIS_URL" => Some("rediss://:pw@platform:6380?ssl_cert_reqs=none".to_string()),
        "PORT" => Some("5000".to_string()),
        "RQ_RETRYD_AUTH_TOKEN" => Some("a-token-of-twenty-bytes".to_string()),
        "RQ_RETRYD_ALLOWED_HOSTS" => Some("myapp.example.com, other.example.com".to_string()),
        _ => None,
    };
    let config = parse_with_env("", SOURCE, &platform).expect("valid");
    assert_eq!(config.redis.url, "rediss://:pw@platform:6380#insecure");
    assert_eq!(config.http.listen.to_string(), "0.0.0.0:5000");
    assert_eq!(config.http.allowed_hosts.len(), 2);

    // The file and rq-retryd's own variables win over the platform's.
    let text = "[redis]\nurl = \"redis://file-host:6379/0\"\n[http]\nlisten = \"127.0.0.1:1111\"\n";
    let config = parse_with_env(text, SOURCE, &platform).expect("valid");
    assert_eq!(config.redis.url, "redis://file-host:6379/0");
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:1111");
    let own = |name: &str| match name {
        "RQ_RETRYD_REDIS_URL" => Some("redis://own:6379/1".to_string()),
        "RQ_RETRYD_HTTP_LISTEN" => Some("127.0.0.1:2222".to_string()),
        other => platform(other),
    };
    let config = parse_with_env("", SOURCE, &own).expect("valid");
    assert_eq!(config.redis.url, "redis://own:6379/1");
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:2222");
}

#[test]
fn a_platforms_port_without_a_token_or_with_a_bad_value_is_refused_naming_it() {
    let port_only = |name: &str| (name == "PORT").then(|| "5000".to_string());
    let err = parse_with_env("", SOURCE, &port_only).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.problems[0].message.starts_with("env PORT:")
            && err.problems[0].message.contains("requires auth_token"),
        "{err}"
    );
    let bad = |name: &str| match name {
        "PORT" => Some("http".to_string()),
        "REDIS_URL" => Some("redis://h:1?ssl_cert_reqs=none".to_string()),
        "RQ_RETRYD_ALLOWED_HOSTS" => Some("ok.example.com,bad host".to_string()),
        _ => None,
    };
    let err = parse_with_env("", SOURCE, &bad).unwrap_err();
    let messages: Vec<&str> = err.problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("env PORT: invalid listen address")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("env REDIS_URL:") && m.contains("rediss://")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("env RQ_RETRYD_ALLOWED_HOSTS:")),
        "{messages:?}"
    );
}

#[test]
fn a_bad_env_override_is_blamed_on_the_variable_not_the_file() {
    let env = |name: &str| (name == "RQ_RETRYD_HTTP_LISTEN").then(|| "0.0.0.0:80".to_string());
    let err = parse_with_env("", SOURCE, &env).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    let p = &err.problems[0];
    assert_eq!(p.position, None);
    assert!(
        p.message.starts_with("env RQ_RETRYD_HTTP_LISTEN:"),
        "{:?}",
        p.message
    );
}

#[test]
fn redacting_a_url_hides_the_password_and_keeps_the_rest() {
    let cases = [
        ("redis://user:secret@h:1/0", "redis://user:***@h:1/0"),
        ("redis://:secret@h:1", "redis://:***@h:1"),
        ("rediss://token@h:6380/3", "rediss://***@h:6380/3"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ];
    for (url, shown) in cases {
        let redacted = redact_url(url);
        assert_eq!(redacted, shown, "{url}");
        assert!(!redacted.contains("secret"), "{redacted}");
    }
    let config = parse("[redis]\nurl = \"redis://u:pw123@h:1/0\"\n", SOURCE).unwrap();
    assert_eq!(config.redacted_redis_url(), "redis://u:***@h:1/0");
}

#[test]
fn the_config_path_is_cli_then_env_then_system_file_then_none() {
    let cli = Path::new("/cli/config.toml");
    let env = |name: &str| (name == "RQ_RETRYD_CONFIG").then(|| "/env/config.toml".to_string());
    assert_eq!(
        resolve_path(Some(cli), &env),
        Some(PathBuf::from("/cli/config.toml"))
    );
    assert_eq!(
        resolve_path(None, &env),
        Some(PathBuf::from("/env/config.toml"))
    );

    // Without --config or RQ_RETRYD_CONFIG (or with it empty): the system file when it exists.
    let system = Path::new(SYSTEM_CONFIG)
        .exists()
        .then(|| PathBuf::from(SYSTEM_CONFIG));
    assert_eq!(resolve_path(None, &no_env), system);
    let empty = |name: &str| (name == "RQ_RETRYD_CONFIG").then(String::new);
    assert_eq!(resolve_path(None, &empty), system);
}

/// See: issue 13 part 3 (roles).
const TWO_ROLES: &str = r#"[http]
listen = "0.0.0.0:9732"

[[http.tokens]]
name = "ops-alice"
role = "operate"
token_file = "/run/alice"

[[http.tokens]]
name = "dashboard"
role = "read"
token = "read-secret-0123456"
"#;

#[test]
fn named_tokens_have_a_role_and_read_their_secret_from_the_first_line_of_a_file() {
    let fs = files(&[(
        "/run/alice",
        "  alice-secret-0123456  \nsecond line is ignored\n",
    )]);
    let config = parse_with(TWO_ROLES, SOURCE, &no_env, &fs).expect("valid");
    let tokens: Vec<(&str, Role, &str)> = config
        .http
        .tokens
        .iter()
        .map(|t| (t.name.as_str(), t.role, t.secret.as_str()))
        .collect();
    assert_eq!(
        tokens,
        [
            ("ops-alice", Role::Operate, "alice-secret-0123456"),
            ("dashboard", Role::Read, "read-secret-0123456")
        ]
    );
    assert_eq!(
        config.http.tokens[0].source,
        TokenSource::File(PathBuf::from("/run/alice"))
    );
    // A named token is enough for a non-loopback listen, and no secret is in Debug.
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("alice-secret") && !shown.contains("read-secret"),
        "{shown}"
    );
}

#[test]
fn auth_token_is_an_operate_token_and_the_env_variable_still_overrides_it() {
    let text = "[http]\nauth_token = \"from-file\"\n[[http.tokens]]\nname = \"r\"\nrole = \"read\"\ntoken = \"r-secret\"\n";
    let config = parse(text, SOURCE).expect("valid");
    assert_eq!(config.http.tokens[0].name, LEGACY_TOKEN_NAME);
    assert_eq!(config.http.tokens[0].role, Role::Operate);
    assert_eq!(config.http.tokens[0].secret, "from-file");
    let env = |name: &str| (name == "RQ_RETRYD_AUTH_TOKEN").then(|| "from-env".to_string());
    let config = parse_with_env(text, SOURCE, &env).expect("valid");
    assert_eq!(config.http.tokens[0].secret, "from-env");
    assert_eq!(config.http.tokens[0].source, TokenSource::Env);
    assert_eq!(config.http.tokens.len(), 2);
    // Without any token the list is empty: the API is open (loopback only).
    assert!(parse("", SOURCE).unwrap().http.tokens.is_empty());
}

#[test]
fn an_unreadable_or_empty_token_file_is_refused_at_its_key() {
    let text = "[http]\nauth_token_file = \"/run/missing\"\n";
    let p = &problems_with(text, &files(&[]))[..];
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_problem(
        &p[0],
        2,
        19,
        "http.auth_token_file",
        "cannot read /run/missing",
    );

    for empty in ["", "\n", "   \nsecond\n"] {
        let fs = move |_: &Path| Ok(empty.to_string());
        let p = &problems_with(text, &fs)[..];
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_problem(
            &p[0],
            2,
            19,
            "http.auth_token_file",
            "/run/missing has an empty first line",
        );
    }

    let named = "[[http.tokens]]\nname = \"a\"\nrole = \"read\"\ntoken_file = \"/run/a\"\n";
    let p = &problems_with(named, &files(&[("/run/a", "\n")]))[..];
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_problem(
        &p[0],
        4,
        14,
        "http.tokens[1].token_file",
        "/run/a has an empty first line",
    );
    let p = &problems_with(named, &files(&[]))[..];
    assert_problem(
        &p[0],
        4,
        14,
        "http.tokens[1].token_file",
        "cannot read /run/a",
    );
}

#[test]
fn a_token_file_is_read_from_disk_and_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "disk-secret\n").unwrap();
    let text = format!("[http]\nauth_token_file = \"{}\"\n", path.display());
    let config = parse(&text, SOURCE).expect("valid");
    assert_eq!(config.http.tokens[0].secret, "disk-secret");

    let text = format!("[http]\nauth_token_file = \"{}\"\n", dir.path().display());
    let p = only_problem(&text);
    assert_eq!(p.key.as_deref(), Some("http.auth_token_file"));
    assert!(p.message.starts_with("cannot read "), "{p:?}");
}

#[test]
fn each_bad_token_table_is_refused_with_its_place() {
    let cases: &[(&str, usize, usize, &str, &str)] = &[
        (
            "[[http.tokens]]\nname = \"\"\nrole = \"read\"\ntoken = \"x\"\n",
            2,
            8,
            "http.tokens[1].name",
            "a token name cannot be empty",
        ),
        (
            "[[http.tokens]]\nname = \"  \"\nrole = \"read\"\ntoken = \"x\"\n",
            2,
            8,
            "http.tokens[1].name",
            "a token name cannot be empty",
        ),
        (
            "[[http.tokens]]\nname = \"a b\"\nrole = \"read\"\ntoken = \"x\"\n",
            2,
            8,
            "http.tokens[1].name",
            "cannot contain whitespace",
        ),
        (
            "[[http.tokens]]\nname = \"a\"\nrole = \"admin\"\ntoken = \"x\"\n",
            3,
            8,
            "http.tokens[1].role",
            "unknown variant `admin`, expected `read` or `operate`",
        ),
        (
            "[[http.tokens]]\nname = \"a\"\nrole = \"read\"\ntoken = \"x\"\ntoken_file = \"/f\"\n",
            5,
            14,
            "http.tokens[1].token_file",
            "give token or token_file, not both",
        ),
        (
            "[[http.tokens]]\nname = \"a\"\nrole = \"read\"\n",
            2,
            8,
            "http.tokens[1].name",
            "needs token or token_file",
        ),
        (
            "[[http.tokens]]\nname = \"a\"\nrole = \"read\"\ntoken = \" \"\n",
            4,
            9,
            "http.tokens[1].token",
            "token cannot be empty",
        ),
        (
            "[[http.tokens]]\nname = \"a\"\nrole = \"read\"\ntoken = \"x\"\nscope = \"all\"\n",
            5,
            1,
            "http.tokens[1].scope",
            "unknown field `scope`",
        ),
        (
            "[[http.tokens]]\nname = \"a\"\ntoken = \"x\"\n",
            1,
            1,
            "http.tokens[1]",
            "missing field `role`",
        ),
        (
            "[http]\nauth_token = \"\"\n",
            2,
            14,
            "http.auth_token",
            "auth_token cannot be empty",
        ),
    ];
    for (text, line, col, key, says) in cases {
        let p = only_problem(text);
        assert_problem(&p, *line, *col, key, says);
    }
}

#[test]
fn duplicate_token_names_and_duplicate_secrets_are_refused() {
    let names = "[[http.tokens]]\nname = \"a\"\nrole = \"read\"\ntoken = \"x\"\n\n[[http.tokens]]\nname = \"a\"\nrole = \"operate\"\ntoken = \"y\"\n";
    let p = only_problem(names);
    assert_problem(
        &p,
        7,
        8,
        "http.tokens[2].name",
        "duplicate token name \"a\"",
    );

    let legacy = "[http]\nauth_token = \"x\"\n[[http.tokens]]\nname = \"auth_token\"\nrole = \"read\"\ntoken = \"y\"\n";
    let p = only_problem(legacy);
    assert_problem(
        &p,
        4,
        8,
        "http.tokens[1].name",
        "the token of http.auth_token has it",
    );

    let secrets = "[http]\nauth_token = \"same\"\n[[http.tokens]]\nname = \"a\"\nrole = \"read\"\ntoken = \"other\"\n[[http.tokens]]\nname = \"b\"\nrole = \"read\"\ntoken = \"same\"\n";
    let p = only_problem(secrets);
    assert_problem(
        &p,
        10,
        9,
        "http.tokens[2].token",
        "same secret as token \"auth_token\"",
    );
    assert!(
        !p.message.contains("same\""),
        "the secret is not in the message: {p:?}"
    );
}

#[test]
fn a_non_loopback_listen_is_satisfied_by_a_named_token_and_not_by_nothing() {
    let open = "[http]\nlisten = \"0.0.0.0:9732\"\n";
    let p = only_problem(open);
    assert!(p.message.contains("[[http.tokens]]"), "{p:?}");
    // An unreadable file is one problem (the file), not also "no token".
    let text = "[http]\nlisten = \"0.0.0.0:9732\"\n[[http.tokens]]\nname = \"a\"\nrole = \"read\"\ntoken_file = \"/none\"\n";
    let p = &problems_with(text, &files(&[]))[..];
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].message.contains("cannot read /none"), "{p:?}");
}

/// See: issue 19 (the Host allowlist and the origins allowed to write).
#[test]
fn allowed_hosts_and_origins_are_parsed_and_each_bad_entry_is_refused_at_its_place() {
    let text = "[http]\nallowed_hosts = [\"RQ.example.com.\", \"*.ops.example\", \"10.0.0.5\"]\nallowed_origins = [\"https://ops.example.com\", \"http://[::1]:8080\"]\n";
    let config = parse(text, SOURCE).expect("valid");
    let shown: Vec<String> = config
        .http
        .allowed_hosts
        .iter()
        .map(|h| h.to_string())
        .collect();
    assert_eq!(shown, ["rq.example.com", "*.ops.example", "10.0.0.5"]);
    let shown: Vec<String> = config
        .http
        .allowed_origins
        .iter()
        .map(|o| o.to_string())
        .collect();
    assert_eq!(shown, ["https://ops.example.com", "http://[::1]:8080"]);
    assert!(parse("", SOURCE).unwrap().http.allowed_hosts.is_empty());

    let text = "[http]\nallowed_hosts = [\"ok.example\", \"rq.example.com:9732\", \"a.*.example\"]\nallowed_origins = [\"https://ok.example\", \"ops.example.com\", \"https://x.example/console\"]\n";
    let all = problems(text);
    assert_eq!(all.len(), 4, "{all:#?}");
    assert_problem(&all[0], 2, 32, "http.allowed_hosts", "has a port");
    assert_problem(&all[1], 2, 55, "http.allowed_hosts", "wildcard");
    assert_problem(&all[2], 3, 42, "http.allowed_origins", "not an origin");
    assert_problem(&all[3], 3, 61, "http.allowed_origins", "no path");
}

/// See: issue 19 ("Tokens shorter than 16 bytes on a non-loopback listen are refused at
/// start"): wherever the token comes from, at its place; a loopback listen keeps taking them.
#[test]
fn a_short_token_is_refused_on_a_non_loopback_listen_only() {
    let inline = "[http]\nlisten = \"0.0.0.0:9732\"\nauth_token = \"s3cret\"\n";
    let p = only_problem(inline);
    assert_problem(&p, 3, 14, "http.auth_token", "the token is 6 bytes");
    assert!(p.message.contains("at least 16"), "{p:?}");
    assert!(
        !p.message.contains("s3cret"),
        "the secret is not shown: {p:?}"
    );
    assert!(parse(&inline.replace("0.0.0.0", "127.0.0.1"), SOURCE).is_ok());
    assert!(parse(&inline.replace("0.0.0.0", "[::1]"), SOURCE).is_ok());

    let named = "[http]\nlisten = \"0.0.0.0:9732\"\n[[http.tokens]]\nname = \"a\"\nrole = \"read\"\ntoken = \"fifteen-bytes-x\"\n";
    assert_problem(
        &only_problem(named),
        6,
        9,
        "http.tokens[1].token",
        "the token is 15 bytes",
    );
    let sixteen = named.replace("fifteen-bytes-x", "sixteen-bytes-xy");
    assert!(parse(&sixteen, SOURCE).is_ok());

    let file = "[http]\nlisten = \"0.0.0.0:9732\"\nauth_token_file = \"/run/t\"\n";
    let p = &problems_with(file, &files(&[("/run/t", "  short  \n")]))[..];
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_problem(
        &p[0],
        3,
        19,
        "http.auth_token_file",
        "/run/t: the token is 5 bytes",
    );

    let env = |name: &str| (name == "RQ_RETRYD_AUTH_TOKEN").then(|| "short".to_string());
    let open = "[http]\nlisten = \"0.0.0.0:9732\"\n";
    let e = parse_with_env(open, SOURCE, &env).unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert!(
        e.problems[0]
            .message
            .starts_with("env RQ_RETRYD_AUTH_TOKEN: the token is 5 bytes"),
        "{e}"
    );
}

/// See: issue 19: a BOM, a non-ASCII character, whitespace or a control character in a token
/// make a token no client sends as written; refused at the token, and in a token file at
/// FILE:1:COL, without showing the token. Loopback or not.
#[test]
fn a_token_with_a_bom_non_ascii_or_whitespace_inside_is_refused_where_it_is() {
    let file = "[[http.tokens]]\nname = \"a\"\nrole = \"read\"\ntoken_file = \"/run/t\"\n";
    for (content, says) in [
        (
            "\u{feff}0123456789abcdef\n",
            "/run/t:1:1: the token (the first line) holds a byte-order mark (U+FEFF)",
        ),
        (
            "  0123 456789abcdef\n",
            "/run/t:1:7: the token (the first line) holds whitespace",
        ),
        (
            "0123456789abcdef\u{a0}x\n",
            "/run/t:1:17: the token (the first line) holds whitespace",
        ),
        (
            "0123456789ab\u{e9}cdef\n",
            "/run/t:1:13: the token (the first line) holds a non-ASCII character",
        ),
        (
            "0123456789abc\u{1b}def\n",
            "/run/t:1:14: the token (the first line) holds a control character",
        ),
    ] {
        let fs = move |_: &Path| Ok(content.to_string());
        let p = &problems_with(file, &fs)[..];
        assert_eq!(p.len(), 1, "{content:?}: {p:#?}");
        assert_problem(&p[0], 4, 14, "http.tokens[1].token_file", says);
        assert!(!p[0].message.contains("0123"), "{p:?}");
    }

    for (written, says) in [
        ("0123456789 abcdef", "whitespace at character 11"),
        ("0123456789abcdef ", "whitespace at character 17"),
        ("0123456789\\tabcdef", "whitespace at character 11"),
        (
            "0123456789\\u0000abcdef",
            "a control character at character 11",
        ),
        ("0123456789abcdéf", "a non-ASCII character at character 15"),
        ("\\uFEFF0123456789abcdef", "a byte-order mark"),
    ] {
        let text = format!("[http]\nauth_token = \"{written}\"\n");
        let p = only_problem(&text);
        assert_problem(&p, 2, 14, "http.auth_token", says);
        assert!(!p.message.contains("0123"), "{p:?}");
    }
}

/// See: issue 19: `check-config` and `run` warn about a file holding a secret that others can
/// read, naming the file and `chmod 600` (group access is how the packaged service reads it).
#[test]
fn secret_files_readable_by_others_are_named_with_the_fix() {
    let text = "[redis]\nurl = \"redis://:pw@h:6379/0\"\n[[http.tokens]]\nname = \"a\"\nrole = \"read\"\ntoken_file = \"/run/t\"\n";
    let config = parse_with(
        text,
        "/etc/rq-retryd/config.toml",
        &no_env,
        &files(&[("/run/t", "0123456789abcdef\n")]),
    )
    .unwrap();
    let secret_files = config.secret_files();
    assert_eq!(
        secret_files
            .iter()
            .map(|(p, _)| p.to_str().unwrap())
            .collect::<Vec<_>>(),
        ["/etc/rq-retryd/config.toml", "/run/t"]
    );
    let modes = |path: &Path| {
        Some(if path == Path::new("/run/t") {
            0o100600
        } else {
            0o100644
        })
    };
    let warnings = loose_secret_warnings(&secret_files, &modes);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("/etc/rq-retryd/config.toml holds a Redis URL with a password")
            && warnings[0].contains("mode 644")
            && warnings[0].contains("chmod 600 /etc/rq-retryd/config.toml"),
        "{warnings:?}"
    );
    // The packaged layout (root:rq-retryd 0640, read through the group) is quiet.
    let group = |_: &Path| Some(0o100640);
    assert!(loose_secret_warnings(&secret_files, &group).is_empty());
    let others = |_: &Path| Some(0o100604);
    assert_eq!(loose_secret_warnings(&secret_files, &others).len(), 2);

    // No secret in the file: nothing to say about it.
    let plain = parse("[redis]\nurl = \"redis://h:6379/0\"\n", "/etc/x.toml").unwrap();
    assert!(plain.secret_files().is_empty());
    let inline = parse("[http]\nauth_token = \"t\"\n", "/etc/x.toml").unwrap();
    assert_eq!(inline.secret_files()[0].1, "an API token");

    // On disk.
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[http]\nauth_token = \"t\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
    let config = parse("[http]\nauth_token = \"t\"\n", path.to_str().unwrap()).unwrap();
    assert_eq!(loose_secret_files(&config).len(), 1);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(loose_secret_files(&config).is_empty());
}

/// Issue 21: `max_age` and `meta`, each mistake refused at its place.
#[test]
fn max_age_and_meta_mistakes_are_refused_at_their_place() {
    let cases: &[(&str, &str, usize, usize, &str, &str)] = &[
        (
            "max_age on a purge policy",
            "[[policy]]\nname = \"a\"\naction = \"purge\"\nmax_age = \"2d\"\n",
            4,
            11,
            "policy[1].max_age",
            "max_age has no effect with action = \"purge\"",
        ),
        (
            "max_age on an ignore policy",
            "[[policy]]\nname = \"a\"\naction = \"ignore\"\nmax_age = \"2d\"\n",
            4,
            11,
            "policy[1].max_age",
            "max_age has no effect with action = \"ignore\"",
        ),
        (
            "max_age of zero",
            "[[policy]]\nname = \"a\"\nmax_age = \"0s\"\n",
            3,
            11,
            "policy[1].max_age",
            "max_age must be more than 0",
        ),
        (
            "max_age that is no duration",
            "[[policy]]\nname = \"a\"\nmax_age = \"two days\"\n",
            3,
            11,
            "policy[1].max_age",
            "invalid duration",
        ),
        (
            "an empty meta table",
            "[[policy]]\nname = \"a\"\nmeta = {}\n",
            3,
            8,
            "policy[1].meta",
            "meta is an empty table",
        ),
        (
            "an invalid meta glob",
            "[[policy]]\nname = \"a\"\nmeta = { tenant = \"[\" }\n",
            3,
            19,
            "policy[1].meta.tenant",
            "invalid glob \"[\"",
        ),
        (
            "an empty meta key",
            "[[policy]]\nname = \"a\"\nmeta = { \"\" = \"x\" }\n",
            3,
            15,
            "policy[1].meta",
            "a meta key cannot be empty",
        ),
        (
            "a meta value that is not a string",
            "[[policy]]\nname = \"a\"\nmeta = { priority = 1 }\n",
            3,
            21,
            "policy[1].meta.priority",
            "invalid type: integer `1`, expected a string",
        ),
    ];
    assert_each_refused_at_its_place(cases);
}

#[test]
fn max_age_and_meta_compile_into_the_policy() {
    let config = crate::config::parse(
        "[[policy]]\nname = \"a\"\nmax_age = \"2d\"\nmeta = { tenant = \"acme-*\", tier = \"1\" }\n",
        "t.toml",
    )
    .unwrap();
    let p = &config.policies[0];
    let crate::policy::Action::Retry(spec) = &p.action else {
        panic!("{:?}", p.action)
    };
    assert_eq!(spec.max_age, Some(Duration::from_secs(2 * 86_400)));
    let meta = p.matcher.meta.as_ref().unwrap();
    let keys: Vec<(&str, &[String])> = meta
        .iter()
        .map(|m| (m.key.as_str(), m.value.patterns()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("tenant", &["acme-*".to_string()][..]),
            ("tier", &["1".to_string()][..])
        ]
    );
}

/// See: issue 21 (`requeue_to`, `hold_when`).
#[test]
fn requeue_to_and_hold_when_parse_into_the_retry_spec() {
    let text = "[[policy]]\nname = \"slow-lane\"\nrequeue_to = \"slow\"\nhold_when = { no_workers = true, queue_longer_than = 10000 }\n";
    let config = parse(text, SOURCE).expect("valid");
    match &config.policies[0].action {
        Action::Retry(spec) => {
            assert_eq!(spec.requeue_to.as_deref(), Some("slow"));
            assert_eq!(
                spec.hold_when,
                Some(crate::policy::HoldWhen {
                    no_workers: true,
                    queue_longer_than: Some(10_000),
                })
            );
        }
        other => panic!("must retry, got {other:?}"),
    }
    let shown = crate::commands::render_config(&config);
    assert!(
        shown.contains("requeue_to=slow hold_when=no_workers|queue_longer_than=10000"),
        "{shown}"
    );
}

/// See: issue 21. Each invalid `requeue_to` or `hold_when` is refused where it is written.
#[test]
fn an_invalid_requeue_to_or_hold_when_is_refused_at_its_place() {
    let cases: &[(&str, &str, usize, usize, &str, &str)] = &[
        (
            "an empty queue name",
            "[[policy]]\nname = \"a\"\nrequeue_to = \"  \"\n",
            3,
            14,
            "policy[1].requeue_to",
            "requeue_to cannot be empty",
        ),
        (
            "a glob",
            "[[policy]]\nname = \"a\"\nrequeue_to = \"slow*\"\n",
            3,
            14,
            "policy[1].requeue_to",
            "glob character '*'",
        ),
        (
            "a bracket",
            "[[policy]]\nname = \"a\"\nrequeue_to = \"s[lo]w\"\n",
            3,
            14,
            "policy[1].requeue_to",
            "glob character '['",
        ),
        (
            "white space around the name",
            "[[policy]]\nname = \"a\"\nrequeue_to = \"slow \"\n",
            3,
            14,
            "policy[1].requeue_to",
            "white space",
        ),
        (
            "requeue_to on a purge policy",
            "[[policy]]\nname = \"a\"\naction = \"purge\"\nrequeue_to = \"slow\"\n",
            4,
            14,
            "policy[1].requeue_to",
            "requeue_to has no effect with action = \"purge\"",
        ),
        (
            "hold_when on an ignore policy",
            "[[policy]]\nname = \"a\"\naction = \"ignore\"\nhold_when = { no_workers = true }\n",
            4,
            13,
            "policy[1].hold_when",
            "hold_when has no effect with action = \"ignore\"",
        ),
        (
            "a hold_when that holds nothing",
            "[[policy]]\nname = \"a\"\nhold_when = { no_workers = false }\n",
            3,
            13,
            "policy[1].hold_when",
            "hold_when holds nothing",
        ),
        (
            "a negative queue length",
            "[[policy]]\nname = \"a\"\nhold_when = { queue_longer_than = -1 }\n",
            3,
            13,
            "policy[1].hold_when",
            "queue_longer_than must be between 0 and",
        ),
    ];
    assert_each_refused_at_its_place(cases);
    let long = format!(
        "[[policy]]\nname = \"a\"\nrequeue_to = \"{}\"\n",
        "q".repeat(201)
    );
    assert!(only_problem(&long).message.contains("at most 200"));
}

/// See: issue 21. A misspelled condition inside `hold_when` is refused, not ignored.
#[test]
fn an_unknown_key_inside_hold_when_is_refused() {
    let text = "[[policy]]\nname = \"a\"\nhold_when = { no_worker = true }\n";
    let p = only_problem(text);
    assert!(
        p.message.contains("unknown field `no_worker`"),
        "{:?}",
        p.message
    );
    assert_eq!(p.position.map(|(l, _)| l), Some(3), "{p:?}");
}

/// One invalid config per case (what, text, line, column, key, message part): each is refused
/// with exactly one problem, at that place, naming that key, saying that.
fn assert_each_refused_at_its_place(cases: &[(&str, &str, usize, usize, &str, &str)]) {
    for (what, text, line, col, key, says) in cases {
        let all = problems(text);
        assert_eq!(all.len(), 1, "{what}: expected one problem, got {all:#?}");
        let p = &all[0];
        assert_eq!(p.position, Some((*line, *col)), "{what}: position of {p:?}");
        assert_eq!(p.key.as_deref(), Some(*key), "{what}: key of {p:?}");
        assert!(p.message.contains(says), "{what}: {:?}", p.message);
    }
}
