//! "What is failing and is it getting worse?" in the console (issue 22, item 2): a person opens
//! the overview during an incident, reads the failure chart's text alternative (the sentence
//! a screen reader says, shown under the chart too) and sees the group that just appeared
//! marked new, with its last quarter hour rising. In headless Chromium against a real daemon
//! and Redis, with failures written at chosen `ended_at` times; what the page says is checked
//! against what was written. Also at 390 px (a phone): the charts fit the screen.

use crate::support;

use serde_json::{json, Value};
use support::browser::Browser;
use support::http::{Daemon, DaemonConfig};
use support::jobs::FailedJob;
use support::RedisServer;

/// Nothing becomes due during the test: timeouts retry after an hour, bad input is purged
/// after a week.
const POLICIES: &str = r#"
[[policy]]
name = "network"
exceptions = ["TimeoutError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "1h" }

[[policy]]
name = "bad-input"
exceptions = ["ValueError"]
action = "purge"
purge_after = "7d"
"#;

const CHARGE: &str = "app.workers.billing.charge_card";
const REPORT: &str = "app.workers.reports.render_report";

fn write(con: &mut redis::Connection, id: &str, queue: &str, func: &str, exc: &str, ago: i64) {
    let mut job = FailedJob::new(id)
        .queue(queue)
        .exception(exc, "it went wrong")
        .failed_secs_ago(ago);
    job.func = func.to_string();
    job.write(con);
}

async fn page_errors(browser: &Browser) -> Vec<String> {
    browser
        .errors()
        .await
        .into_iter()
        .filter(|e| !e.contains("Failed to load resource"))
        .collect()
}

/// The chart in `figure`: its caption, its SVG's accessible name, its role and its bars.
async fn chart(browser: &Browser, figure: &str) -> Value {
    browser
        .js(
            "const f = document.querySelector(arguments[0]); \
             const svg = f.querySelector('svg'); \
             const title = document.getElementById(svg.getAttribute('aria-labelledby')); \
             return { caption: f.querySelector('figcaption').textContent, \
               name: title.textContent, role: svg.getAttribute('role'), \
               bars: [...svg.querySelectorAll('rect')].map((r) => Number(r.dataset.count)), \
               right: svg.getBoundingClientRect().right, inner: window.innerWidth, \
               page: document.documentElement.scrollWidth };",
            vec![json!(figure)],
        )
        .await
}

#[tokio::test]
async fn an_operator_reads_the_failure_chart_and_sees_the_new_group_marked() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    let mut con = redis.conn();
    // The old trouble: reports failing with ValueError three and five hours ago.
    write(
        &mut con,
        "report-3h",
        "reports",
        REPORT,
        "ValueError",
        3 * 3600,
    );
    write(
        &mut con,
        "report-5h",
        "reports",
        REPORT,
        "ValueError",
        5 * 3600,
    );
    // The incident: card charges timing out in the last five minutes, one in the busiest
    // minute twice.
    for (id, ago) in [("charge-1", 40), ("charge-2", 45), ("charge-3", 4 * 60)] {
        write(&mut con, id, "billing", CHARGE, "TimeoutError", ago);
    }
    daemon.scan();

    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/", daemon.base_url())).await;
    browser.find("#trend-minutes figcaption").await;
    let minutes = chart(&browser, "#trend-minutes").await;
    let caption = minutes["caption"].as_str().unwrap();
    assert!(
        caption.starts_with("3 failures in the last hour, the most "),
        "{minutes}"
    );
    assert!(
        caption.ends_with("; 3 in the last 15 minutes, 0 in the 15 before."),
        "{minutes}"
    );
    assert_eq!(
        minutes["name"], minutes["caption"],
        "the SVG's text alternative"
    );
    assert_eq!(minutes["role"], "img");
    let bars: u64 = minutes["bars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(bars, 3, "{minutes}");
    let hours = chart(&browser, "#trend-hours").await;
    assert!(
        hours["caption"]
            .as_str()
            .unwrap()
            .starts_with("5 failures in the last 24 hours, the most "),
        "{hours}"
    );

    // The billing group is new, and rising; the reports group is neither.
    let billing = format!("tr[data-group='billing|{CHARGE}|TimeoutError']");
    let reports = format!("tr[data-group='reports|{REPORT}|ValueError']");
    browser
        .wait_for_text(&format!("{billing} [data-field=new]"), "new")
        .await;
    browser
        .wait_for_text(&format!("{billing} [data-field=recent]"), "3 in 15 min ↑")
        .await;
    browser
        .wait_for_text(&format!("{billing} [data-field=count]"), "3")
        .await;
    let marks = browser
        .js(
            "const row = document.querySelector(arguments[0]); \
             return [row.querySelector('[data-field=new]'), row.querySelector('[data-field=recent]')] \
               .map((e) => e === null);",
            vec![json!(reports)],
        )
        .await;
    assert_eq!(
        marks,
        json!([true, true]),
        "the old group is neither new nor recent"
    );

    browser.save_screenshot("console-trend.png").await;

    // On a phone the charts stack and fit the screen.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.goto(&format!("{}/ui/", daemon.base_url())).await;
    browser.find("#trend-hours figcaption").await;
    for figure in ["#trend-minutes", "#trend-hours"] {
        let c = chart(&browser, figure).await;
        let inner = c["inner"].as_f64().unwrap();
        assert!(inner <= 400.0, "{c}");
        assert!(c["right"].as_f64().unwrap() <= inner, "{figure}: {c}");
        assert!(c["page"].as_f64().unwrap() <= inner, "{figure}: {c}");
    }
    browser.save_screenshot("console-trend-phone.png").await;
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}
