//! The console's search box (issue 22, item 1) in a real headless Chromium, against a real
//! daemon and Redis, done as a person would: type into the box on any page, press Enter, read
//! the rows; retry what the search shows and check in Redis that exactly those jobs moved; type
//! an odd job id and land on that job's page.

use crate::support;

use std::collections::BTreeSet;

use support::browser::Browser;
use support::http::{Daemon, DaemonConfig, HANDS_OFF};
use support::jobs::{id_set, members, FailedJob};
use support::RedisServer;

/// WebDriver's Enter key.
const ENTER: &str = "\u{E007}";

fn write(con: &mut redis::Connection, id: &str, queue: &str, exc: &str, message: &str) {
    FailedJob::new(id)
        .queue(queue)
        .exception(exc, message)
        .write(con);
}

/// Types `text` into the top bar's search box and presses Enter.
async fn search(browser: &Browser, text: &str) {
    let field = browser.find("#search input[name=q]").await;
    field.clear().await.unwrap();
    field.send_keys(&format!("{text}{ENTER}")).await.unwrap();
}

async fn path_and_query(browser: &Browser) -> String {
    let url = browser.client.current_url().await.unwrap();
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

#[tokio::test]
async fn a_search_typed_on_any_page_lists_its_jobs_and_retries_exactly_them() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), HANDS_OFF));
    let mut con = redis.conn();
    let declined = "Your card was declined (card_declined)";
    write(
        &mut con,
        "pay-1",
        "default",
        "stripe.error.CardError",
        declined,
    );
    write(
        &mut con,
        "pay-2",
        "emails",
        "stripe.error.CardError",
        declined,
    );
    write(
        &mut con,
        "pay-3",
        "default",
        "stripe.error.CardError",
        "insufficient funds",
    );
    write(
        &mut con,
        "sync-4",
        "default",
        "ConnectionError",
        "CARD_DECLINED by upstream",
    );
    write(
        &mut con,
        "sync-5",
        "default",
        "ConnectionError",
        "timed out",
    );
    daemon.scan();
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/policies", daemon.base_url()))
        .await;

    search(&browser, "Card_Declined").await;
    let found = browser.job_rows(3).await;
    assert_eq!(found, id_set(&["pay-1", "pay-2", "sync-4"]));
    assert_eq!(path_and_query(&browser).await, "/ui/jobs?q=Card_Declined");
    browser.wait_shown("#searching").await;
    assert_eq!(
        browser.text("#searching [data-field=q]").await,
        "Card_Declined"
    );
    let in_form = browser.find("#filter input[name=q]").await;
    assert_eq!(
        in_form.prop("value").await.unwrap().as_deref(),
        Some("Card_Declined")
    );
    browser.save_screenshot("console-search.png").await;

    browser.click("[data-action=retry-group]").await;
    let preview = browser.text("[data-field=preview-count]").await;
    assert!(
        preview.starts_with('3'),
        "the preview counts the search: {preview}"
    );
    browser.click("[data-action=confirm]").await;
    browser.find("#action .outcome[data-outcome=done]").await;
    assert_eq!(
        members(&mut con, "rq:queue:default"),
        id_set(&["pay-1", "sync-4"])
    );
    assert_eq!(members(&mut con, "rq:queue:emails"), id_set(&["pay-2"]));
    assert_eq!(
        members(&mut con, "rq:failed:default"),
        id_set(&["pay-3", "sync-5"])
    );
    assert_eq!(members(&mut con, "rq:failed:emails"), BTreeSet::new());

    browser.click("#unsearch").await;
    assert_eq!(browser.job_rows(2).await, id_set(&["pay-3", "sync-5"]));
    assert!(!browser.is_shown("#searching").await);
    browser.close().await;
}

#[tokio::test]
async fn an_exact_job_id_in_the_search_box_opens_that_jobs_page() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), HANDS_OFF));
    let mut con = redis.conn();
    let odd = ["clear", "a/b 50%", "jöb-ジョブ"];
    for id in odd {
        write(&mut con, id, "default", "ValueError", "bad input");
    }
    daemon.scan();
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/", daemon.base_url())).await;
    for id in odd {
        search(&browser, id).await;
        browser
            .wait_until(&format!("the page of {id:?}"), || async {
                let url = browser.client.current_url().await.unwrap();
                let shown: Vec<(String, String)> = url.query_pairs().into_owned().collect();
                if url.path() == "/ui/job" && shown == vec![("id".to_string(), id.to_string())] {
                    Ok(())
                } else {
                    Err(url.to_string())
                }
            })
            .await;
        browser
            .wait_for_text("#explain-facts [data-field=policy]", "hands-off")
            .await;
    }
    // Part of an id is a search, not a jump.
    search(&browser, "CLEA").await;
    assert_eq!(browser.job_rows(1).await, id_set(&["clear"]));
    assert_eq!(path_and_query(&browser).await, "/ui/jobs?q=CLEA");
    browser.close().await;
}

/// "Find the job whose traceback mentions `card_declined`" (issue 22's incident task), when the
/// mention is not on the exception line: the search lists nothing, and "Search whole
/// tracebacks…" reads the failure texts and shows the job with its line, and how far it got.
#[tokio::test]
async fn a_mention_deep_in_a_traceback_is_found_by_searching_whole_tracebacks() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), HANDS_OFF));
    let mut con = redis.conn();
    write(
        &mut con,
        "deep-1",
        "default",
        "RuntimeError",
        "payment failed\n  gateway said card_declined",
    );
    write(
        &mut con,
        "other-2",
        "default",
        "RuntimeError",
        "payment failed",
    );
    write(&mut con, "other-3", "emails", "ValueError", "bad input");
    daemon.scan();
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/jobs", daemon.base_url()))
        .await;
    search(&browser, "card_declined").await;
    browser.wait_for_text("#total", "(0)").await;
    browser.click("#deep-search").await;
    browser
        .wait_for_text("#deep-progress", "1 match; searched 3 of 3")
        .await;
    let hit = browser.find("#deep-hits tr[data-hit-id]").await;
    assert_eq!(
        hit.attr("data-hit-id").await.unwrap().as_deref(),
        Some("deep-1")
    );
    assert_eq!(
        browser.text("#deep-hits .line").await,
        "gateway said card_declined"
    );
    browser.click("#deep-hits a.job-id").await;
    browser
        .wait_for_text("#explain-facts [data-field=policy]", "hands-off")
        .await;
    assert_eq!(
        members(&mut con, "rq:failed:default"),
        id_set(&["deep-1", "other-2"])
    );
    browser.close().await;
}
