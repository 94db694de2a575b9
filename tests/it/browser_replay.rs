//! A slow replay from the console, as an on-call operator on a phone does it: a bulk retry
//! with a rate and a reason, its progress, and Cancel. Real headless Chromium, real daemon,
//! real Redis, failed jobs written by RQ's own code (`seed_failed_jobs.py`). What the page
//! says is checked against Redis.
//!
//! See: issue 22, item 6 ("Requeue these 50,000 slowly, and stop if it goes wrong").

use crate::support;

use redis::Commands;
use support::browser::Browser;
use support::http::{Daemon, DaemonConfig, HANDS_OFF};
use support::rq::Rq;
use support::RedisServer;

/// Opens the console's list of the `replay` queue, asks to retry its group, and waits for the
/// preview to count `jobs` failed jobs.
async fn open_the_replay_preview(browser: &Browser, daemon: &Daemon, jobs: usize) {
    browser
        .goto(&format!("{}/ui/jobs?queue=replay", daemon.base_url()))
        .await;
    browser.find("tr[data-job-id]").await;
    browser.click("[data-action=retry-group]").await;
    browser
        .wait_for_text("[data-field=preview-count]", &format!("{jobs} failed jobs"))
        .await;
}

/// The first number in `text` after `word` (e.g. "requeued 12").
fn number_after(text: &str, word: &str) -> u64 {
    let rest = &text[text
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} in {text:?}"))
        + word.len()..];
    rest.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {word:?} in {text:?}"))
}

#[tokio::test]
async fn a_slow_retry_with_a_reason_shows_its_progress_and_cancel_leaves_the_rest_failed() {
    let redis = RedisServer::start();
    Rq::rq2().seed_failed_jobs(&redis.url(), 200, &["replay"]);
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), HANDS_OFF));
    let mut con = redis.conn();

    let browser = Browser::start().await;
    browser.client.set_window_size(390, 844).await.unwrap();
    open_the_replay_preview(&browser, &daemon, 200).await;
    let rate = browser.find("#action input[name=rate]").await;
    rate.send_keys("10").await.unwrap();
    let reason = browser.find("#action input[name=reason]").await;
    reason.send_keys("INC-7: replay slowly").await.unwrap();
    browser.click("[data-action=confirm]").await;

    // The progress: a bar and the counts, moving.
    browser
        .wait_shown("[data-field=task-progress] progress")
        .await;
    let counts = browser
        .wait_until("some jobs requeued", || async {
            let text = browser.text("[data-field=task-counts]").await;
            match text.contains("of 200") && number_after(&text, "requeued") >= 10 {
                true => Ok(text),
                false => Err(text),
            }
        })
        .await;
    assert!(
        counts.contains("conflicts 0") && counts.contains("refused 0"),
        "{counts}"
    );
    assert!(
        browser
            .text("[data-field=task-progress]")
            .await
            .contains("INC-7: replay slowly"),
        "the reason is shown"
    );
    let width = browser
        .js("return document.documentElement.scrollWidth;", vec![])
        .await;
    assert!(
        width.as_f64().unwrap() <= 390.0,
        "the page is {width} px wide at 390"
    );
    browser.save_screenshot("console-replay-progress.png").await;

    // Cancel asks once more, then stops the task.
    browser.click("[data-action=cancel-task]").await;
    browser.click("[data-action=confirm-cancel-task]").await;
    let (kind, text) = browser.settled_outcome().await;
    assert_eq!(kind, "done", "{text}");
    assert!(text.starts_with("Cancelled by "), "{text}");
    browser
        .save_screenshot("console-replay-cancelled.png")
        .await;

    let requeued = number_after(&text, "requeued");
    assert!((10..200).contains(&requeued), "{text}");
    assert!(
        text.contains(&format!("the other {} stay failed", 200 - requeued)),
        "{text}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let queued: u64 = con.llen("rq:queue:replay").unwrap();
    let failed: u64 = con.zcard("rq:failed:replay").unwrap();
    assert_eq!(
        (queued, failed),
        (requeued, 200 - requeued),
        "Redis agrees with the page"
    );

    let audit = daemon.get("/api/v1/audit").expect(200);
    let whys: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "requeue")
        .map(|e| e["why"].as_str().unwrap())
        .collect();
    assert!(!whys.is_empty(), "{audit}");
    assert!(
        whys.iter()
            .all(|w| w.starts_with("api: INC-7: replay slowly; ")),
        "{whys:?}"
    );
    let errors: Vec<String> = browser
        .errors()
        .await
        .into_iter()
        .filter(|e| !e.contains("Failed to load resource"))
        .collect();
    assert_eq!(errors, Vec::<String>::new());
    browser.close().await;
}

/// The replay form knows the global requeue limit: it says "at most N/s" beside the rate, and
/// a rate above it is refused on the page (nothing sent, the jobs still failed, the buttons
/// there to try again); the limit itself is accepted.
#[tokio::test]
async fn the_replay_form_says_the_rate_limit_and_refuses_a_rate_above_it_before_sending() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    for i in 0..5 {
        support::jobs::FailedJob::new(&format!("limited-{i}"))
            .queue("replay")
            .write(&mut con);
    }
    let mut config = DaemonConfig::new(&redis.url(), HANDS_OFF);
    config.max_requeues_per_second = 40;
    let daemon = Daemon::start_ready(&config);

    let browser = Browser::start().await;
    open_the_replay_preview(&browser, &daemon, 5).await;
    assert_eq!(
        browser.text("#action [data-field=rate-limit]").await,
        "at most 40/s"
    );
    let rate = browser.find("#action input[name=rate]").await;
    rate.send_keys("41").await.unwrap();
    browser.click("[data-action=confirm]").await;
    let (kind, text) = browser.settled_outcome().await;
    assert_eq!(kind, "refused", "{text}");
    assert!(text.contains("from 1 to 40"), "{text}");
    browser
        .save_screenshot("console-replay-rate-refused.png")
        .await;
    let failed: u64 = con.zcard("rq:failed:replay").unwrap();
    let queued: u64 = con.llen("rq:queue:replay").unwrap();
    assert_eq!((failed, queued), (5, 0), "nothing was sent");

    rate.clear().await.unwrap();
    rate.send_keys("40").await.unwrap();
    browser.click("[data-action=confirm]").await;
    let (kind, text) = browser.settled_outcome().await;
    assert_eq!(kind, "done", "{text}");
    let queued: u64 = con.llen("rq:queue:replay").unwrap();
    assert_eq!(queued, 5, "{text}");
    browser.close().await;
}
