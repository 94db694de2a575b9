//! "Retry the emails TimeoutErrors of the last hour" (issue 22's second incident task, item 7),
//! done in a real headless Chromium as a person would: open the failed jobs, type the queue and
//! the exception, press **Last hour**, read the rows, retry the selection after its preview and
//! check in Redis that exactly the jobs the page listed were requeued: not the older timeouts of
//! the same queue, not the other exception, not another queue's.

use crate::support;

use std::collections::BTreeSet;

use support::browser::Browser;
use support::http::{Daemon, DaemonConfig};
use support::jobs::{id_set, members, FailedJob};
use support::RedisServer;

/// Nothing becomes due during the test: every failure waits 30 days for its automatic retry.
const POLICIES: &str = r#"
[[policy]]
name = "network"
exceptions = ["TimeoutError", "ConnectionError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "30d" }
"#;

fn write(con: &mut redis::Connection, id: &str, queue: &str, exc: &str, ago: i64) {
    FailedJob::new(id)
        .queue(queue)
        .exception(exc, "it went wrong")
        .failed_secs_ago(ago)
        .write(con);
}

#[tokio::test]
async fn an_operator_retries_the_emails_timeouts_of_the_last_hour_and_only_those() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    let mut con = redis.conn();
    // The incident: emails time out since 40 minutes ago. Older timeouts of the same queue
    // (3 h and 2 days ago) were another matter; so are the connection errors and the
    // timeouts of another queue in the same hour.
    for (id, ago) in [("mail-1", 600), ("mail-2", 1_500), ("mail-3", 2_400)] {
        write(&mut con, id, "emails", "TimeoutError", ago);
    }
    write(&mut con, "mail-old-1", "emails", "TimeoutError", 3 * 3_600);
    write(&mut con, "mail-old-2", "emails", "TimeoutError", 2 * 86_400);
    write(&mut con, "mail-conn", "emails", "ConnectionError", 300);
    write(&mut con, "report-1", "reports", "TimeoutError", 300);
    daemon.scan();

    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/jobs", daemon.base_url()))
        .await;
    assert_eq!(browser.job_rows(7).await.len(), 7);
    browser
        .find("#filter input[name=queue]")
        .await
        .send_keys("emails")
        .await
        .unwrap();
    browser
        .find("#filter input[name=exception]")
        .await
        .send_keys("TimeoutError")
        .await
        .unwrap();
    browser.click("#filter [data-since='1h']").await;

    let listed = browser.job_rows(3).await;
    assert_eq!(listed, id_set(&["mail-1", "mail-2", "mail-3"]));
    let url = browser.client.current_url().await.unwrap();
    let query: BTreeSet<(String, String)> = url
        .query_pairs()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for pair in [
        ("queue", "emails"),
        ("exception", "TimeoutError"),
        ("failed_after", "1h"),
    ] {
        assert!(
            query.contains(&(pair.0.to_string(), pair.1.to_string())),
            "the address keeps {pair:?}: {url}"
        );
    }
    let after = browser.find("#filter input[name=failed_after]").await;
    assert_eq!(after.prop("value").await.unwrap().as_deref(), Some("1h"));
    browser.save_screenshot("console-jobs-last-hour.png").await;

    browser.click("[data-action=retry-group]").await;
    let preview = browser.text("[data-field=preview-count]").await;
    assert!(
        preview.starts_with("3 failed jobs"),
        "the preview counts what the page listed: {preview}"
    );
    let waiting = browser.text("[data-field=preview-waiting]").await;
    assert!(
        waiting.starts_with("3 of them are waiting"),
        "the preview says the three wait for an automatic retry: {waiting}"
    );
    browser.click("[data-action=confirm]").await;
    browser.find("#action .outcome[data-outcome=done]").await;

    assert_eq!(
        members(&mut con, "rq:queue:emails"),
        id_set(&["mail-1", "mail-2", "mail-3"])
    );
    assert_eq!(
        members(&mut con, "rq:failed:emails"),
        id_set(&["mail-old-1", "mail-old-2", "mail-conn"])
    );
    assert_eq!(
        members(&mut con, "rq:failed:reports"),
        id_set(&["report-1"])
    );
    assert_eq!(members(&mut con, "rq:queue:reports"), BTreeSet::new());
    browser.close().await;
}
