//! The console's audit page in a real headless Chromium against a real daemon and Redis: a
//! person finds a colleague's action of an hour ago among the supervisor's many entries with
//! the page's filters, and pages to older entries.
//!
//! See: issue 22, item 4 ("What did my colleague do an hour ago?" was impossible: the page
//! showed the last 100 entries, no filter, no paging).

use crate::support;

use chrono::Utc;
use redis::Commands;

use support::browser::Browser;
use support::http::{Daemon, DaemonConfig};
use support::jobs::FailedJob;
use support::RedisServer;

const POLICIES: &str = r#"
[[policy]]
name = "retry-now"
queues = ["auto"]
action = "retry"
max_attempts = 3
backoff = { strategy = "fixed", delay = "0s" }
"#;

const KEY: &str = "rq:retryd:audit";

/// Appends an entry at `ms` (its stream id) as the write scripts write one.
fn entry(con: &mut redis::Connection, ms: i64, who: &str, action: &str, why: &str, ids: &[&str]) {
    let at = chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339();
    let _: String = redis::cmd("XADD")
        .arg(KEY)
        .arg(format!("{ms}-0"))
        .arg("at")
        .arg(at)
        .arg("who")
        .arg(who)
        .arg("action")
        .arg(action)
        .arg("why")
        .arg(why)
        .arg("queue")
        .arg("emails")
        .arg("count")
        .arg(ids.len())
        .arg("job_ids")
        .arg(ids.join(","))
        .arg("job_ids_json")
        .arg(serde_json::to_string(ids).unwrap())
        .query(con)
        .unwrap();
}

#[tokio::test]
async fn a_person_finds_a_colleagues_action_of_an_hour_ago_among_the_supervisors() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    let mut con = redis.conn();
    // An hour ago Alice retried the emails TimeoutErrors; since then the supervisor wrote an
    // entry every 10 s, and one more for real just now.
    let now = Utc::now().timestamp_millis();
    let alice_ms = now - 3_600_000;
    let why = "POST /api/v1/jobs/failed/retry-all?queue=emails&exception=TimeoutError";
    entry(
        &mut con,
        alice_ms,
        "ops-alice@10.0.0.5",
        "requeue",
        why,
        &["mail-1", "mail-2"],
    );
    for i in 1..350 {
        let id = format!("auto-{i}");
        entry(
            &mut con,
            alice_ms + i * 10_000,
            "supervisor",
            "requeue",
            "retry-now",
            &[&id],
        );
    }
    FailedJob::new("fresh").queue("auto").write(&mut con);
    daemon.scan();
    let total: usize = con.xlen(KEY).unwrap();
    assert_eq!(total, 351);

    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/audit", daemon.base_url()))
        .await;
    browser.find("tr[data-audit-id]").await;
    // The newest 100 are all the supervisor's.
    let whos = browser
        .js(
            "return [...document.querySelectorAll('#audit tbody tr')].map((tr) => tr.children[1].textContent);",
            vec![],
        )
        .await;
    let whos: Vec<String> = serde_json::from_value(whos).unwrap();
    assert_eq!(whos.len(), 100);
    assert!(whos.iter().all(|w| w == "supervisor"), "{whos:?}");

    // Older pages go further back, without repeating a row.
    let first_page: Vec<String> = row_ids(&browser).await;
    browser.click("#older").await;
    browser
        .wait_until("the older page", || async {
            let ids = row_ids(&browser).await;
            match ids.first() {
                Some(id) if !first_page.contains(id) => Ok(ids),
                _ => Err(format!("{ids:?}")),
            }
        })
        .await;
    assert!(browser.is_shown("#newest").await);

    // People only, over the last day: Alice's retry, with the selection it used.
    browser
        .goto(&format!("{}/ui/audit", daemon.base_url()))
        .await;
    browser.find("tr[data-audit-id]").await;
    browser.click("#audit-filter [name=people_only]").await;
    browser.click("#audit-filter [data-since='1d']").await;
    let alice = format!("tr[data-audit-id='{alice_ms}-0']");
    browser.wait_shown(&alice).await;
    assert_eq!(row_ids(&browser).await, [format!("{alice_ms}-0")]);
    let text = browser.text(&alice).await;
    assert!(text.contains("ops-alice@10.0.0.5"), "{text}");
    assert!(text.contains(why), "{text}");
    assert!(text.contains("mail-1"), "{text}");
    let url = browser.client.current_url().await.unwrap();
    assert!(
        url.query().is_some_and(|q| q.contains("people_only=true")
            && q.contains("since=1d")
            && !q.contains("who=")),
        "the address says what was asked: {url}"
    );
    // The same through the who and job id fields; a wrong time is said, not ignored.
    browser
        .goto(&format!(
            "{}/ui/audit?who=ALICE&job_id=mail-2",
            daemon.base_url()
        ))
        .await;
    browser.wait_shown(&alice).await;
    browser
        .goto(&format!("{}/ui/audit?since=yesterday", daemon.base_url()))
        .await;
    browser
        .wait_until("the refusal", || async {
            let notice = browser.text("#notice").await;
            if notice.contains("since must be") {
                Ok(())
            } else {
                Err(notice)
            }
        })
        .await;

    browser
        .goto(&format!(
            "{}/ui/audit?people_only=true&since=1d",
            daemon.base_url()
        ))
        .await;
    browser.wait_shown(&alice).await;
    browser.save_screenshot("console-audit.png").await;
    browser.client.set_window_size(390, 844).await.unwrap();
    let width = browser
        .js("return document.documentElement.scrollWidth;", vec![])
        .await;
    assert!(
        width.as_f64().unwrap() <= 390.0,
        "the filters fit a phone: {width}"
    );
    browser.save_screenshot("console-audit-phone.png").await;
    browser.close().await;
}

/// The stream ids of the rows shown, top to bottom.
async fn row_ids(browser: &Browser) -> Vec<String> {
    let ids = browser
        .js(
            "return [...document.querySelectorAll('#audit tbody tr')].map((tr) => tr.dataset.auditId);",
            vec![],
        )
        .await;
    serde_json::from_value(ids).unwrap()
}

/// One of a thing is said in the singular: "of 1 entry" on the audit page, "1 audit entry
/// searched" under a job's history (they read "1 entries" before).
#[tokio::test]
async fn one_entry_is_one_entry() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    let mut con = redis.conn();
    let now = Utc::now().timestamp_millis();
    entry(
        &mut con,
        now,
        "ops-bob@10.0.0.6",
        "purge",
        "DELETE x",
        &["gone"],
    );

    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/audit", daemon.base_url()))
        .await;
    browser.find("tr[data-audit-id]").await;
    assert_eq!(
        browser.text("#audit-searched").await,
        "Newest first; looked through 1 of 1 entry."
    );
    browser
        .goto(&format!("{}/ui/job?id=gone", daemon.base_url()))
        .await;
    let note = browser
        .wait_until("the history's note", || async {
            let text = browser.text("#history-note").await;
            if text.is_empty() {
                Err(text)
            } else {
                Ok(text)
            }
        })
        .await;
    assert!(
        note.starts_with("newest first · 1 audit entry searched"),
        "{note}"
    );
    browser.close().await;
}
