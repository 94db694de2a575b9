//! The job page in a real headless Chromium, read as an operator reads it: the error first,
//! the traceback at its end with library frames folded, then the job's history. The job
//! fails twice on a real RQ worker, with a real rq-retryd requeue in between. See: issue 22,
//! item 3.

use crate::support;

use serde_json::json;

use support::browser::Browser;
use support::http::{enc, Daemon, DaemonConfig};
use support::jobs::FailedJob;
use support::rq::{JobSpec, Rq};
use support::RedisServer;

/// ValueErrors retried a second after they fail, the next time an hour later.
const RETRY_ONCE: &str = r#"
[[policy]]
name = "card-retry"
exceptions = ["ValueError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "linear", initial = "1s", step = "1h" }
"#;

/// The kinds of the history list's items, top to bottom.
async fn history_kinds(browser: &Browser) -> serde_json::Value {
    browser
        .js(
            "return [...document.querySelectorAll('#history li[data-kind]')].map((li) => li.dataset.kind)",
            vec![],
        )
        .await
}

#[tokio::test]
async fn the_job_page_leads_with_the_final_exception_folds_library_frames_and_shows_the_history() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), RETRY_ONCE));
    let rq = Rq::rq2();
    let url = redis.url();
    let id = rq.enqueue(&url, &JobSpec::new("default", "tasks.chained_fail"));
    rq.burst_worker(&url, &["default"]);
    daemon.wait_until("rq-retryd requeued the job", |d| {
        d.scan();
        rq.status(&url, &id) == "queued"
    });
    rq.burst_worker(&url, &["default"]);
    assert_eq!(rq.status(&url, &id), "failed");

    let browser = Browser::start().await;
    browser.client.set_window_size(390, 844).await.unwrap();
    browser
        .goto(&format!("{}/ui/job?id={}", daemon.base_url(), enc(&id)))
        .await;

    // The top of the page: the final exception of the chained traceback, not the first one.
    browser
        .wait_for_text("#error [data-field=exc-type]", "ValueError")
        .await;
    assert_eq!(
        browser.text("#error [data-field=exc-message]").await,
        "order 42: card_declined (gateway said no)"
    );
    let header_first = browser
        .js(
            "const e = document.getElementById('error').getBoundingClientRect(); \
             const t = document.getElementById('traceback').getBoundingClientRect(); \
             return e.top < t.top && e.bottom <= window.innerHeight",
            vec![],
        )
        .await;
    assert_eq!(
        header_first,
        json!(true),
        "the error is on the first screen, above the traceback"
    );

    // The traceback: the JSONDecodeError's json frames and RQ's own frames folded away.
    browser
        .wait_until("the history to load", || async {
            let kinds = history_kinds(&browser).await;
            if kinds == json!(["failed_run", "requeue", "failed_run"]) {
                Ok(())
            } else {
                Err(kinds.to_string())
            }
        })
        .await;
    let folds = browser.find_all("#traceback details.library-frames").await;
    assert!(
        folds.len() >= 2,
        "json's frames and RQ's frames are folded: {}",
        folds.len()
    );
    let hidden = browser
        .js(
            "return [...document.querySelectorAll('#traceback details')].every((d) => !d.open) \
             && !document.getElementById('traceback').innerText.includes('json/decoder.py')",
            vec![],
        )
        .await;
    assert_eq!(hidden, json!(true), "library frames start folded");
    let whole = browser
        .js(
            "return document.getElementById('traceback').textContent",
            vec![],
        )
        .await;
    let whole = whole.as_str().unwrap();
    assert!(
        whole.contains("json/decoder.py") && whole.contains("site-packages/rq/"),
        "{whole}"
    );
    assert!(
        whole
            .trim_end()
            .ends_with("ValueError: order 42: card_declined (gateway said no)"),
        "{whole}"
    );
    browser
        .click("#traceback details.library-frames > summary")
        .await;
    let opened = browser
        .js(
            "const d = document.querySelector('#traceback details.library-frames'); \
             return [d.open, d.innerText.includes('json/')]",
            vec![],
        )
        .await;
    assert_eq!(
        opened,
        json!([true, true]),
        "the first fold opened shows json's frames"
    );
    assert!(
        browser
            .text("#traceback-note")
            .await
            .contains("library frames folded"),
        "the folding is said"
    );

    // The history, newest first: the second failure, rq-retryd's requeue, the first failure.
    let items = browser.find_all("#history li[data-kind]").await;
    let mut texts = Vec::new();
    for item in &items {
        texts.push(item.text().await.unwrap());
    }
    assert!(
        texts[0].contains("Failed") && texts[0].contains("ValueError: order 42: card_declined"),
        "{texts:?}"
    );
    assert!(
        texts[1].contains("Requeued by rq-retryd") && texts[1].contains("card-retry"),
        "{texts:?}"
    );
    assert!(
        texts[2].contains("Failed") && texts[2].contains("ValueError"),
        "{texts:?}"
    );

    // At 390 px nothing of the page is wider than the screen.
    let fits = browser
        .js(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await;
    assert_eq!(fits, json!(true));
    browser.save_screenshot("console-job-error.png").await;
    let history_card = browser.find("#history").await;
    // The history card alone (an element's screenshot), beside the page's.
    std::fs::write(
        support::repo_root().join("target/ci-artifacts/console-job-history.png"),
        history_card.screenshot().await.unwrap(),
    )
    .unwrap();
    browser.close().await;
}

#[tokio::test]
async fn a_long_traceback_opens_at_its_end() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), RETRY_ONCE));
    let message: String = (1..=300).map(|i| format!("detail line {i}\n")).collect();
    FailedJob::new("long-1")
        .exception("psycopg2.errors.UniqueViolation", message.trim_end())
        .write(&mut redis.conn());
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/job?id=long-1", daemon.base_url()))
        .await;
    browser
        .wait_for_text(
            "#error [data-field=exc-type]",
            "psycopg2.errors.UniqueViolation",
        )
        .await;
    assert!(
        browser
            .text("#error [data-field=exc-message]")
            .await
            .ends_with("detail line 300"),
        "the whole message, to its last line"
    );
    let at_end = browser
        .wait_until("the traceback scrolled to its end", || async {
            let state = browser
                .js(
                    "const b = document.getElementById('traceback'); \
                     return [b.scrollHeight > b.clientHeight + 100, \
                             b.scrollTop + b.clientHeight >= b.scrollHeight - 2]",
                    vec![],
                )
                .await;
            if state == json!([true, true]) {
                Ok(state)
            } else {
                Err(state.to_string())
            }
        })
        .await;
    assert_eq!(
        at_end,
        json!([true, true]),
        "it overflows, and shows its end"
    );
    browser.close().await;
}
