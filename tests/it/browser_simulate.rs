//! The console's simulate page (issue 22, item 5) in a real headless Chromium, as an operator
//! uses it before a reload: from the Policies page to the running policies in a text box,
//! edit, click, read which group would change and how. Signed in with a `read` token: a
//! simulation writes nothing, so whoever may look may ask.

use crate::support;

use redis::Commands;
use serde_json::json;

use support::browser::Browser;
use support::http::{Daemon, DaemonConfig};
use support::jobs::FailedJob;
use support::RedisServer;

const POLICIES: &str = r#"
[[policy]]
name = "network"
exceptions = ["ConnectionError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "1h" }

[[policy]]
name = "bad-input"
exceptions = ["ValueError"]
action = "purge"
purge_after = "7d"
"#;

const VIEWER: &str = "viewer-0123456789abcdef";

fn write(con: &mut redis::Connection, prefix: &str, n: usize, func: &str, exc: &str) {
    for i in 0..n {
        let mut job = FailedJob::new(&format!("{prefix}-{i}"))
            .queue("emails")
            .exception(exc, "it went wrong")
            .failed_secs_ago(600);
        job.func = func.to_string();
        job.write(con);
    }
}

#[tokio::test]
async fn an_operator_edits_the_running_policies_and_reads_which_group_would_be_retried_now() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    write(
        &mut con,
        "smtp",
        4,
        "app.mail.send_welcome",
        "ConnectionError",
    );
    write(&mut con, "input", 2, "app.mail.send_welcome", "ValueError");
    let tokens =
        format!("\n[[http.tokens]]\nname = \"viewer\"\nrole = \"read\"\ntoken = \"{VIEWER}\"\n");
    let mut config = DaemonConfig::new(&redis.url(), &format!("{POLICIES}{tokens}"));
    config.auth_token = Some("operator-0123456789abcdef".into());
    let daemon = Daemon::start_ready(&config);
    daemon.scan();

    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/policies", daemon.base_url()))
        .await;
    browser.wait_shown("#sign-in input[name=token]").await;
    let field = browser.find("#sign-in input[name=token]").await;
    field.send_keys(VIEWER).await.unwrap();
    browser.click("#sign-in button[type=submit]").await;
    browser.find("tr[data-policy=network]").await;
    browser.click("[data-action=simulate-change]").await;

    // The running policies are in the box, ready to edit.
    let running = browser
        .wait_until("the running policies in the box", || async {
            let value = browser
                .js("return document.querySelector('#candidate').value;", vec![])
                .await;
            let text = value.as_str().unwrap_or_default().to_string();
            if text.contains("name = \"network\"") {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .await;
    assert!(running.contains("delay = \"1h\""), "{running}");
    let edited = running.replace("delay = \"1h\"", "delay = \"5m\"");
    let box_ = browser.find("#candidate").await;
    box_.clear().await.unwrap();
    box_.send_keys(&edited).await.unwrap();
    browser.click("[data-action=simulate]").await;

    browser.wait_shown("#result").await;
    let row = "tr[data-group='emails|app.mail.send_welcome|ConnectionError']";
    let moves = browser.text(&format!("{row} [data-field=moves]")).await;
    assert_eq!(moves, "4 waiting to retry → retried now");
    let summary = browser.text("#summary").await;
    assert_eq!(summary, "4 of 6 failed jobs in 1 group would change");
    assert_eq!(
        browser.find_all("#changes tbody tr").await.len(),
        1,
        "only the ConnectionError group changes"
    );
    browser.save_screenshot("console-simulate.png").await;

    // A mistake is shown where it is, and nothing else.
    box_.clear().await.unwrap();
    box_.send_keys("[[policy]]\nname = \"x\"\nmax_attempts = 0\n")
        .await
        .unwrap();
    browser.click("[data-action=simulate]").await;
    browser.wait_shown("#problems").await;
    let problems = browser.text("#problems").await;
    assert!(
        problems.starts_with("candidate:3:16: policy[1].max_attempts: "),
        "{problems}"
    );
    assert!(!browser.is_shown("#result").await);

    // The page wrote nothing: the ConnectionErrors are still failed, none was requeued.
    let failed: Vec<String> = con.zrange("rq:failed:emails", 0, -1).unwrap();
    assert_eq!(failed.len(), 6);
    let queued: i64 = con.llen("rq:queue:emails").unwrap();
    assert_eq!(queued, 0);
    let errors: Vec<String> = browser
        .errors()
        .await
        .into_iter()
        .filter(|e| !e.contains("Failed to load resource"))
        .collect();
    assert_eq!(json!(errors), json!([]));
    browser.close().await;
}
