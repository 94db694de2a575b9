//! Fuzzes the config loader: `config::parse_with` without and with the environment overrides
//! set, on any text. It must never panic; a refused config must carry at least one
//! problem and render with `Display`, starting with the source's name.
//!
//! The input is the config text itself (invalid UTF-8 is replaced), so the corpus holds plain
//! TOML files: `fuzz/corpus/parse_config/` starts from `config/*.toml` and broken variants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rq_retryd::config::{self, Config, ConfigError};

const SOURCE: &str = "fuzz.toml";

fn check(result: Result<Config, ConfigError>) {
    match result {
        Ok(config) => {
            assert_eq!(config.source, SOURCE);
            let _ = format!("{config:?}");
        }
        Err(error) => {
            assert_eq!(error.source, SOURCE);
            assert!(!error.problems.is_empty(), "an error without a problem");
            let rendered = error.to_string();
            assert!(!rendered.is_empty());
            assert!(rendered.starts_with(SOURCE), "{rendered:?}");
        }
    }
}

/// The overrides the daemon reads from its environment, set to values that are valid.
fn env(name: &str) -> Option<String> {
    match name {
        "RQ_RETRYD_REDIS_URL" => Some("redis://user:secret@127.0.0.1:6380/1".to_string()),
        "RQ_RETRYD_HTTP_LISTEN" => Some("0.0.0.0:9999".to_string()),
        "RQ_RETRYD_AUTH_TOKEN" => Some("fuzz-token".to_string()),
        _ => None,
    }
}

/// Token files (`auth_token_file`, `token_file`) are never read from the fuzzing machine's disk
/// (a path such as a FIFO could block): one path holds a token, every other one is missing.
fn read_file(path: &std::path::Path) -> std::io::Result<String> {
    match path.to_str() {
        Some("/run/token") => Ok("fuzz-file-token\n".to_string()),
        Some("/run/empty") => Ok("\n".to_string()),
        _ => Err(std::io::ErrorKind::NotFound.into()),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(config::parse_with(&text, SOURCE, &|_| None, &read_file));
    check(config::parse_with(&text, SOURCE, &env, &read_file));
});
