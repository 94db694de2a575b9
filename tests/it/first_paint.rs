//! `bench/first_paint.py` (issue 22's first meaningful paint) end to end at a small size, for
//! the tool's sake, not for timing: it seeds a few hundred failed jobs with RQ's code, runs
//! `rq-retryd run` and real headless Chromium, and every console page must show its main
//! content (the benchmark's selectors) after its data arrived. A console page added to
//! `src/http/ui.rs` without a place in the benchmark, or a page whose markup no longer has what
//! the benchmark waits for, fails here rather than in the 100k run. rq-dashboard is left out
//! (its venv comes from PyPI); the timings are printed, never asserted.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::{self, rq::Rq};

/// The console's page paths (`path: "/ui/…"` in `src/http/ui.rs`'s `PAGES`).
fn console_paths() -> BTreeSet<String> {
    let source = std::fs::read_to_string(support::repo_root().join("src/http/ui.rs"))
        .expect("src/http/ui.rs");
    let paths: BTreeSet<String> = source
        .lines()
        .filter_map(|line| line.trim().strip_prefix("path: \""))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    assert!(
        paths.len() >= 6 && paths.contains("/ui/jobs"),
        "read the console's pages from src/http/ui.rs: {paths:?}"
    );
    paths
}

/// The page path of a measured URL: `/ui/jobs?queue=…` is `/ui/jobs`.
fn page_path(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[test]
fn first_paint_finds_every_console_page_content_after_its_data() {
    let out = tempfile::tempdir().expect("tempdir");
    let json = out.path().join("first_paint.json");
    let binary = support::binary();
    let run = Rq::rq2().bench_script(
        "first_paint.py",
        &[
            "--jobs",
            "300",
            "--reseed",
            "--rounds",
            "1",
            "--skip-dashboard",
            "--audit-entries",
            "4",
            "--timeout",
            "30",
            "--binary",
            binary.to_str().expect("a UTF-8 path"),
            "--json",
            json.to_str().expect("a UTF-8 path"),
        ],
        Duration::from_secs(300),
    );
    println!("{}", run.stdout);
    assert_eq!(
        run.code, 0,
        "first_paint.py failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the --json file"))
            .expect("JSON");
    let pages = report["pages"].as_object().expect("pages");
    let measured: BTreeSet<&str> = pages
        .values()
        .map(|p| page_path(p["path"].as_str().expect("path")))
        .collect();
    for path in console_paths() {
        assert!(
            measured.contains(path.as_str()),
            "console page {path} is not measured by bench/first_paint.py: {measured:?}"
        );
    }
    assert!(measured.contains("/docs"), "{measured:?}");
    for (name, page) in pages {
        assert_eq!(page["contender"], "retryd", "{name}: --skip-dashboard");
        assert_eq!(page["errors"], serde_json::json!([]), "{name}");
        let samples = page["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), 1, "{name}: one round");
        let s = &samples[0];
        let fmp = s["fmp_ms"].as_f64().expect("fmp_ms");
        let data = s["last_response_ms"].as_f64().expect("an API answer");
        let seen = s["seen_ms"].as_f64().expect("seen_ms");
        // Chromium reports presentation times to 4 ms.
        assert!(
            data <= seen && seen <= fmp + 4.0,
            "{name}: data {data} ms, seen {seen} ms, presented {fmp} ms"
        );
        assert!(
            s["api_requests"].as_u64().expect("api_requests") >= 1,
            "{name}"
        );
    }
}
