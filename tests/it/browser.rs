//! The operator console (`/ui/`) and the API explorer (`/docs`) in a real headless Chromium,
//! against a real daemon (`rq-retryd run`), a real Redis and failed jobs written by RQ's own
//! code (`seed_failed_jobs.py`) or byte for byte as RQ writes them (`FailedJob`). What a test
//! reads from the page it checks against Redis, not against the API that fed the page.
//!
//! See: issue 13 §1 (the operator console) and §2 (`/docs`). The hooks used here
//! (`data-group`, `data-job-id`, `data-action`, `input[name=token]`, ...) are documented in
//! docs/console.md.

use crate::support;

use std::collections::BTreeSet;

use redis::Commands;
use serde_json::json;

use support::browser::Browser;
use support::http::{Daemon, DaemonConfig};
use support::jobs::{id_set, members, traceback, FailedJob};
use support::rq::Rq;
use support::RedisServer;

/// A retry policy that is never due during a test (1 h backoff) and a purge that waits a
/// week, so the daemon's own scans change nothing and the overview has policies to show.
const POLICIES: &str = r#"
[[policy]]
name = "network"
exceptions = ["ConnectionError", "TimeoutError", "smtplib.SMTPServerDisconnected"]
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "1h" }

[[policy]]
name = "bad-input"
exceptions = ["ValueError", "KeyError"]
action = "purge"
purge_after = "7d"
"#;

/// Writes `n` failed jobs `<prefix>-<i>` of `func` on `queue` failing with `exc`; their ids.
fn write_jobs(
    con: &mut redis::Connection,
    prefix: &str,
    n: usize,
    queue: &str,
    func: &str,
    exc: &str,
) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let mut job = FailedJob::new(&id)
                .queue(queue)
                .exception(exc, "it went wrong");
            job.func = func.to_string();
            job.write(con);
            id
        })
        .collect()
}

/// The number at the start of a text such as "4 failed jobs".
fn leading_number(text: &str) -> u64 {
    let digits: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number at the start of {text:?}"))
}

/// The browser console's errors that are bugs of the page: uncaught exceptions and
/// Content-Security-Policy violations (an API answering 401/403 is logged too, and expected).
async fn page_errors(browser: &Browser) -> Vec<String> {
    browser
        .errors()
        .await
        .into_iter()
        .filter(|e| !e.contains("Failed to load resource"))
        .collect()
}

/// Waits for the action panel's outcome to settle (past `working` and `preview`), asserts it
/// is `want` (`done`, `refused`, ...) and returns its text.
async fn outcome(browser: &Browser, want: &str) -> String {
    let (kind, text) = browser.settled_outcome().await;
    assert_eq!(kind, want, "the action's outcome: {text}");
    text
}

/// Signs in through the form the console shows after a 401.
async fn sign_in(browser: &Browser, token: &str) {
    browser.wait_shown("#sign-in input[name=token]").await;
    let field = browser.find("#sign-in input[name=token]").await;
    field.clear().await.unwrap();
    field.send_keys(token).await.unwrap();
    browser.click("#sign-in button[type=submit]").await;
}

/// Clicks the first element matching `css` even when it is disabled (as a read token's
/// buttons are): the page's own lock is only a courtesy, and the API must refuse anyway.
async fn force_click(browser: &Browser, css: &str) {
    browser.find(css).await;
    browser
        .js(
            "const b = document.querySelector(arguments[0]); b.disabled = false; b.click();",
            vec![json!(css)],
        )
        .await;
}

/// Waits until the first element matching `css` is disabled with a title saying the token may
/// only read.
async fn wait_locked(browser: &Browser, css: &str) {
    browser
        .wait_until(&format!("{css} to be locked for a read token"), || async {
            let element = browser.find(css).await;
            let disabled = element.prop("disabled").await.map_err(|e| e.to_string())?;
            let title = element
                .attr("title")
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            if disabled.as_deref() == Some("true") && title.contains("may only read") {
                Ok(())
            } else {
                Err(format!("disabled {disabled:?}, title {title:?}"))
            }
        })
        .await
}

/// See: issue 13 §1, scenario 1: the overview shows the groups with the right counts, and
/// the per-queue counts; `GET /` leads there. Also saves the overview's screenshot.
#[tokio::test]
async fn the_overview_shows_each_group_and_each_queue_with_its_counts() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    let mut con = redis.conn();
    write_jobs(
        &mut con,
        "net",
        3,
        "default",
        "app.sync.pull",
        "ConnectionError",
    );
    write_jobs(
        &mut con,
        "bad",
        2,
        "default",
        "app.billing.charge",
        "ValueError",
    );
    write_jobs(
        &mut con,
        "smtp",
        1,
        "emails",
        "app.emails.send",
        "smtplib.SMTPServerDisconnected",
    );
    // Jobs failed through RQ's own code, over a queue of their own.
    Rq::rq2().seed_failed_jobs(&redis.url(), 40, &["reports"]);
    let _: () = con.rpush("rq:queue:emails", "waiting-to-run").unwrap();
    daemon.scan();
    let browser = Browser::start().await;

    browser.goto(&format!("{}/", daemon.base_url())).await;
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/ui/", "GET / leads to the console");

    for (group, count, policy) in [
        ("default|app.sync.pull|ConnectionError", "3", "network"),
        ("default|app.billing.charge|ValueError", "2", "bad-input"),
        (
            "emails|app.emails.send|smtplib.SMTPServerDisconnected",
            "1",
            "network",
        ),
    ] {
        let row = format!("tr[data-group=\"{group}\"]");
        browser
            .wait_for_text(&format!("{row} [data-field=count]"), count)
            .await;
        assert_eq!(
            browser
                .text(&format!("{row} [data-field=policy]"))
                .await
                .lines()
                .next(),
            Some(policy),
            "{group}"
        );
    }
    // The next automatic action, in the column of its kind (issue 22, item 8): the retry an
    // hour after the failure (5 s ago, FailedJob's default) under "Next retry", the purge a
    // week after it under "Purge at"; the other column of each says "—".
    for (group, field, other, delay) in [
        (
            "default|app.sync.pull|ConnectionError",
            "next",
            "purge-at",
            3600,
        ),
        (
            "default|app.billing.charge|ValueError",
            "purge-at",
            "next",
            7 * 86400,
        ),
    ] {
        assert_eq!(
            browser
                .text(&format!("tr[data-group=\"{group}\"] [data-field={other}]"))
                .await,
            "—",
            "{group}: {other}"
        );
        let time = browser
            .find(&format!(
                "tr[data-group=\"{group}\"] [data-field={field}] time"
            ))
            .await;
        let at = time.attr("datetime").await.unwrap().unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(&at).unwrap();
        let want = chrono::Utc::now() + chrono::Duration::seconds(delay - 5);
        let off = (at.timestamp() - want.timestamp()).abs();
        assert!(off <= 30, "{group}: next action at {at}, want about {want}");
    }
    // RQ's jobs: every one of them is in a group of its queue, the groups largest first.
    let reports: u64 = con.zcard("rq:failed:reports").unwrap();
    assert_eq!(reports, 40);
    let counts: Vec<(String, u64)> = {
        let mut out = Vec::new();
        for row in browser.find_all("tr[data-group]").await {
            let key = row.attr("data-group").await.unwrap().unwrap();
            let cell = row
                .find(fantoccini::Locator::Css("[data-field=count]"))
                .await
                .unwrap();
            out.push((key, leading_number(&cell.text().await.unwrap())));
        }
        out
    };
    let in_reports: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with("reports|"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(in_reports, reports, "groups: {counts:?}");
    assert!(
        counts.windows(2).all(|w| w[0].1 >= w[1].1),
        "largest first: {counts:?}"
    );
    assert_eq!(counts.len(), 3 + 5, "3 written groups + RQ's 5 functions");

    // Per queue: failed and queued from Redis now, waiting and exhausted as of the scan
    // (waiting: in backoff, or waiting for purge_after as bad-input's jobs are).
    for (queue, failed, waiting, queued) in [("default", "5", "5", "0"), ("emails", "1", "1", "1")]
    {
        let row = format!("tr[data-queue=\"{queue}\"]");
        browser
            .wait_for_text(&format!("{row} [data-field=failed]"), failed)
            .await;
        assert_eq!(
            browser.text(&format!("{row} [data-field=waiting]")).await,
            waiting
        );
        // Every job here has a policy: none unmatched, none ignored (issue 22, item 8).
        for field in ["exhausted", "unmatched", "ignored"] {
            assert_eq!(
                browser.text(&format!("{row} [data-field={field}]")).await,
                "0",
                "{queue}: {field}"
            );
        }
        assert_eq!(
            browser.text(&format!("{row} [data-field=queued]")).await,
            queued
        );
    }
    browser
        .wait_for_text("tr[data-queue=reports] [data-field=failed]", "40")
        .await;
    assert_eq!(
        browser.text("#supervisor-badge").await,
        "Running",
        "the supervisor's state"
    );
    assert!(
        !browser.is_shown("#sign-in").await,
        "no token configured: no sign-in"
    );

    browser.save_screenshot("console-overview.png").await;
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}

/// See: issue 13 §1, scenario 2: retrying a group goes through a dry-run preview whose count
/// is the group's size, then a confirmation; exactly that group's jobs end up queued.
#[tokio::test]
async fn retrying_a_group_previews_its_exact_count_then_queues_exactly_its_jobs() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    let mut con = redis.conn();
    let group = write_jobs(
        &mut con,
        "g",
        4,
        "default",
        "app.sync.pull",
        "ConnectionError",
    );
    let same_function = write_jobs(&mut con, "v", 2, "default", "app.sync.pull", "ValueError");
    let same_exception = write_jobs(
        &mut con,
        "o",
        2,
        "default",
        "app.sync.push",
        "ConnectionError",
    );
    let other_queue = write_jobs(
        &mut con,
        "e",
        1,
        "emails",
        "app.sync.pull",
        "ConnectionError",
    );
    // The API answers from the failure index; a scan brings the jobs written above in.
    daemon.scan();
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/", daemon.base_url())).await;

    let row = "tr[data-group=\"default|app.sync.pull|ConnectionError\"]";
    browser
        .wait_for_text(&format!("{row} [data-field=count]"), "4")
        .await;
    browser
        .click(&format!("{row} [data-action=retry-group]"))
        .await;
    let preview = browser.text("[data-field=preview-count]").await;
    assert_eq!(leading_number(&preview), 4, "the preview counts the group");
    // All four are in their policy's 1 h backoff: the preview says a retry takes them early
    // (issue 22, item 8).
    let waiting = browser.text("[data-field=preview-waiting]").await;
    assert!(
        waiting.starts_with("4 of them are waiting for an automatic retry"),
        "{waiting}"
    );
    assert_eq!(
        members(&mut con, "rq:queue:default"),
        BTreeSet::new(),
        "the preview is a dry run"
    );
    assert_eq!(members(&mut con, "rq:failed:default").len(), 8);

    browser.click("[data-action=confirm]").await;
    let text = outcome(&browser, "done").await;
    assert!(text.starts_with("Requeued 4 jobs"), "{text}");

    assert_eq!(members(&mut con, "rq:queue:default"), id_set(&group));
    let mut still_failed = id_set(&same_function);
    still_failed.extend(same_exception.iter().cloned());
    assert_eq!(members(&mut con, "rq:failed:default"), still_failed);
    assert_eq!(members(&mut con, "rq:failed:emails"), id_set(&other_queue));
    assert_eq!(members(&mut con, "rq:queue:emails"), BTreeSet::new());
    for id in &group {
        let status: String = con.hget(format!("rq:job:{id}"), "status").unwrap();
        assert_eq!(status, "queued", "{id}");
    }
    // The overview redraws without the group.
    browser
        .wait_until("the retried group to leave the overview", || async {
            match browser.find_all(row).await.len() {
                0 => Ok(()),
                n => Err(format!("{n} rows")),
            }
        })
        .await;
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}

/// The keys a console action could change: RQ's jobs, registries and queues, and the shared
/// switches, with their content.
fn job_state(con: &mut redis::Connection) -> Vec<(Vec<u8>, support::jobs::KeyContent)> {
    support::jobs::snapshot(con)
        .into_iter()
        .filter(|(key, _)| {
            ["rq:job:", "rq:failed:", "rq:queue:", "rq:retryd:switches"]
                .iter()
                .any(|p| key.starts_with(p.as_bytes()))
        })
        .collect()
}

/// See: issue 13 §1, scenario 3: with a read token the pages show everything, and every
/// action is refused, on the page, with Redis unchanged. Signing in is asked for only
/// because the API answers 401, and a wrong token is said to be wrong.
#[tokio::test]
async fn a_read_token_sees_the_pages_and_every_action_it_tries_is_refused() {
    let redis = RedisServer::start();
    let tokens = r#"
[[http.tokens]]
name = "viewer"
role = "read"
token = "viewer-s3cret"
"#;
    let mut config = DaemonConfig::new(&redis.url(), &format!("{POLICIES}\n{tokens}"));
    config.auth_token = Some("operator-s3cret".into());
    let daemon = Daemon::start_ready(&config);
    let mut con = redis.conn();
    let ids = write_jobs(
        &mut con,
        "r",
        2,
        "default",
        "app.sync.pull",
        "ConnectionError",
    );
    // The API answers from the failure index; a scan brings the jobs written above in.
    daemon.scan();
    let before = job_state(&mut con);
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/", daemon.base_url())).await;

    sign_in(&browser, "not-a-token").await;
    browser
        .wait_for_text("#sign-in-error", "That token was not accepted.")
        .await;
    sign_in(&browser, "viewer-s3cret").await;
    let row = "tr[data-group=\"default|app.sync.pull|ConnectionError\"]";
    browser
        .wait_for_text(&format!("{row} [data-field=count]"), "2")
        .await;
    // See: issue 19: the header says who is signed in, and a read token's buttons are
    // disabled, saying why.
    browser.wait_for_text("#whoami", "viewer · read").await;
    for css in [
        format!("{row} [data-action=retry-group]"),
        format!("{row} [data-action=delete-group]"),
        "[data-action=scan]".to_string(),
        "[data-action=pause]".to_string(),
        "[data-action=resume]".to_string(),
    ] {
        wait_locked(&browser, &css).await;
    }

    // The lock is a courtesy: a button clicked anyway is refused by the API.
    // (Its preview is a dry run, a POST: refused already.)
    force_click(&browser, &format!("{row} [data-action=retry-group]")).await;
    let text = outcome(&browser, "refused").await;
    assert!(
        text.starts_with("Refused:") && text.contains("viewer") && text.contains("role read"),
        "the page says why: {text}"
    );
    // Pausing asks first (issue 22, item 8); the API refuses the confirmed pause.
    force_click(&browser, "[data-action=pause]").await;
    force_click(&browser, "#action [data-action=confirm]").await;
    outcome(&browser, "refused").await;
    force_click(&browser, "[data-action=scan]").await;
    outcome(&browser, "refused").await;

    // The jobs page lists them (the token is kept for the tab); a row's retry is refused.
    browser
        .goto(&format!("{}/ui/jobs", daemon.base_url()))
        .await;
    let retry = format!("tr[data-job-id=\"{}\"] [data-action=retry]", ids[0]);
    wait_locked(&browser, &retry).await;
    wait_locked(&browser, "[data-action=retry-group]").await;
    wait_locked(&browser, "[data-action=delete-group]").await;
    force_click(&browser, &retry).await;
    outcome(&browser, "refused").await;
    let delete = format!("tr[data-job-id=\"{}\"] [data-action=delete]", ids[1]);
    wait_locked(&browser, &delete).await;
    force_click(&browser, &delete).await;
    wait_locked(&browser, "[data-action=confirm]").await;
    force_click(&browser, "[data-action=confirm]").await;
    outcome(&browser, "refused").await;
    browser.wait_for_text("#whoami", "viewer · read").await;
    browser
        .goto(&format!("{}/ui/policies", daemon.base_url()))
        .await;
    browser.find("tr[data-policy=network]").await;
    browser
        .goto(&format!("{}/ui/audit", daemon.base_url()))
        .await;
    // Refused actions are not in the audit: it is empty.
    browser.wait_shown("#audit-empty").await;

    assert_eq!(job_state(&mut con), before, "Redis is unchanged");
    let state = daemon.get("/api/v1/supervisor").expect(200);
    assert_eq!(state["paused"], false);
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}

/// See: issue 13 §1, scenario 4: the console's pause acts for every instance: a second
/// daemon on the same Redis says it is paused (the switch lives in `rq:retryd:switches`),
/// and the resume undoes it there too.
#[tokio::test]
async fn pausing_from_the_console_pauses_a_second_daemon_on_the_same_redis() {
    let redis = RedisServer::start();
    let tokens = r#"
[[http.tokens]]
name = "ops-alice"
role = "operate"
token = "alice-s3cret"
"#;
    let mut config = DaemonConfig::new(&redis.url(), &format!("{POLICIES}\n{tokens}"));
    // The harness's own requests (readiness, the checks below) use auth_token.
    config.auth_token = Some("harness-s3cret".into());
    let first = Daemon::start_ready(&config);
    // A standby (the first holds the lease): it observes and never writes, but it answers.
    let second = Daemon::start(&config);
    second.wait_ready();
    let mut con = redis.conn();
    // A job in backoff, whose next retry must not count down while automatic actions are
    // paused (issue 22, item 8).
    write_jobs(
        &mut con,
        "p",
        1,
        "default",
        "app.sync.pull",
        "ConnectionError",
    );
    first.scan();
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/", first.base_url())).await;
    sign_in(&browser, "alice-s3cret").await;
    let next = "tr[data-group=\"default|app.sync.pull|ConnectionError\"] [data-field=next]";
    browser.find(&format!("{next} time")).await;
    // See: issue 19: an operate token is named in the header and its buttons are enabled.
    browser
        .wait_for_text("#whoami", "ops-alice · operate")
        .await;
    for css in ["[data-action=pause]", "[data-action=scan]"] {
        let disabled = browser.find(css).await.prop("disabled").await.unwrap();
        assert_eq!(disabled.as_deref(), Some("false"), "{css} is enabled");
    }

    // Pausing asks first and takes a reason (issue 22, item 8): nothing is paused before the
    // confirmation.
    browser.click("[data-action=pause]").await;
    let reason = browser.find("#action input[name=reason]").await;
    let paused: Option<String> = con.hget("rq:retryd:switches", "paused").unwrap();
    assert_eq!(paused, None, "paused before the confirmation");
    reason
        .send_keys("payments API down, INC-1234")
        .await
        .unwrap();
    browser.click("#action [data-action=confirm]").await;
    let text = outcome(&browser, "done").await;
    assert!(text.contains("paused on every instance"), "{text}");
    browser.wait_for_text("#supervisor-badge", "Paused").await;
    let switched: Option<String> = con.hget("rq:retryd:switches", "paused").unwrap();
    assert_eq!(switched.as_deref(), Some("1"));
    browser
        .wait_for_text("[data-field=paused-reason]", "payments API down, INC-1234")
        .await;
    let state = second.get("/api/v1/supervisor").expect(200);
    assert_eq!(state["paused"], true, "{state}");
    let by = state["paused_by"].as_str().unwrap_or_default();
    assert!(
        by.starts_with("ops-alice@"),
        "the audit names the token: {state}"
    );
    assert_eq!(
        state["paused_reason"], "payments API down, INC-1234",
        "{state}"
    );
    let audit = second.get("/api/v1/audit").expect(200);
    assert!(
        audit
            .to_string()
            .contains("api: payments API down, INC-1234"),
        "the audit keeps the reason: {audit}"
    );
    browser
        .wait_for_text(&format!("{next} [data-field=paused]"), "paused")
        .await;
    let counting = browser
        .js(
            "return document.querySelectorAll(arguments[0]).length",
            vec![json!(format!("{next} time"))],
        )
        .await;
    assert_eq!(counting, json!(0), "no countdown while paused");
    assert!(browser
        .text("#supervisor-state")
        .await
        .contains("nothing while paused"));

    browser.click("[data-action=resume]").await;
    browser.wait_for_text("#supervisor-badge", "Running").await;
    browser.find(&format!("{next} time")).await;
    assert_eq!(
        second.get("/api/v1/supervisor").expect(200)["paused"],
        false
    );
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}

/// See: issue 13 §2, scenario 5: `/docs` (the vendored Swagger UI) lists every operation of
/// the daemon's own OpenAPI document.
#[tokio::test]
async fn the_api_explorer_lists_every_endpoint_of_the_openapi_document() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    let doc = daemon.get("/api/v1/openapi.json").expect(200);
    let mut want = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            want.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(want.len() >= 20, "{want:?}");
    let browser = Browser::start().await;
    browser.goto(&format!("{}/docs", daemon.base_url())).await;
    let shown = browser
        .wait_until("Swagger UI to list every operation", || async {
            let listed = browser
                .js(
                    "return [...document.querySelectorAll('.opblock')].map(b => \
                     b.querySelector('.opblock-summary-method').textContent.trim() + ' ' + \
                     b.querySelector('.opblock-summary-path').getAttribute('data-path'))",
                    vec![],
                )
                .await;
            let listed: BTreeSet<String> = serde_json::from_value(listed).unwrap();
            if listed == want {
                Ok(listed)
            } else {
                Err(format!("{listed:?}"))
            }
        })
        .await;
    assert_eq!(shown, want);
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}

/// See: issue 13 §1, scenario 6: a job's page shows its whole traceback as text (a
/// `<script>` in it is not run), its call, and the explain view with the deciding policy;
/// deleting it there takes a confirmation and removes it from Redis.
#[tokio::test]
async fn a_job_page_shows_the_whole_traceback_as_text_and_the_deciding_policy() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    let mut con = redis.conn();
    let hostile = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> & upstream timed out";
    let mut job =
        FailedJob::new("evil-1").exception("requests.exceptions.ConnectionError", hostile);
    job.func = "app.sync.pull".into();
    job.write(&mut con);
    // The API answers from the failure index; a scan brings the jobs written above in.
    daemon.scan();
    let browser = Browser::start().await;

    browser
        .goto(&format!("{}/ui/job?id=evil-1", daemon.base_url()))
        .await;
    let want = json!(traceback("requests.exceptions.ConnectionError", hostile));
    browser
        .wait_until("the whole traceback, byte for byte", || async {
            let shown = browser
                .js(
                    "return document.getElementById('traceback').textContent",
                    vec![],
                )
                .await;
            if shown == want {
                Ok(())
            } else {
                Err(shown.to_string())
            }
        })
        .await;
    let inside = browser
        .js(
            "return [document.querySelectorAll('#traceback *').length, \
             document.querySelectorAll('img, script:not([src])').length, \
             window.__pwned === undefined]",
            vec![],
        )
        .await;
    assert_eq!(inside, json!([0, 0, true]), "the markup stayed text");

    browser
        .wait_for_text("#explain-facts [data-field=policy]", "network")
        .await;
    assert_eq!(
        browser
            .find("#verdicts tr[data-policy=network]")
            .await
            .attr("class")
            .await
            .unwrap()
            .as_deref(),
        Some("matched")
    );
    let bad_input = browser.text("#verdicts tr[data-policy=bad-input]").await;
    assert!(bad_input.contains("not evaluated"), "{bad_input}");
    browser
        .wait_for_text("#description", "app.sync.pull(42, tenant='acme')")
        .await;

    browser.click("[data-action=delete]").await;
    assert!(
        con.exists::<_, bool>("rq:job:evil-1").unwrap(),
        "nothing is deleted before the confirmation"
    );
    browser.click("[data-action=confirm]").await;
    browser.find("#action .outcome[data-outcome=done]").await;
    assert!(!con.exists::<_, bool>("rq:job:evil-1").unwrap());
    assert_eq!(members(&mut con, "rq:failed:default"), BTreeSet::new());
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}

/// See: issue 13 §1 (live refresh that is cheap): an open overview sends at most one API
/// request per 5 s, and none while the tab is hidden; it resumes when the tab is shown.
#[tokio::test]
async fn the_live_refresh_sends_one_request_per_tick_and_none_while_hidden() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    write_jobs(
        &mut redis.conn(),
        "l",
        1,
        "default",
        "app.sync.pull",
        "ConnectionError",
    );
    // The API answers from the failure index; a scan brings the jobs written above in.
    daemon.scan();
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/", daemon.base_url())).await;
    browser.find("tr[data-group] [data-field=count]").await;
    // Count the page's API requests from now on (the console calls the global fetch).
    browser
        .js(
            "window.__requests = []; const real = window.fetch; \
             window.fetch = (url, init) => { window.__requests.push([Date.now(), String(url)]); \
             return real(url, init); }; \
             window.__hide = (hidden) => { Object.defineProperty(document, 'hidden', \
             {configurable: true, get: () => hidden}); \
             document.dispatchEvent(new Event('visibilitychange')); };",
            vec![],
        )
        .await;
    let requests = || async {
        browser
            .js("return window.__requests.map(r => r[1])", vec![])
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    tokio::time::sleep(std::time::Duration::from_millis(10_500)).await;
    let visible = requests().await;
    assert!(
        (1..=2).contains(&visible.len()),
        "one request per 5 s tick in 10.5 s: {visible:?}"
    );
    assert!(
        visible.iter().all(|u| u.contains("/api/v1/")),
        "{visible:?}"
    );

    browser.js("window.__hide(true)", vec![]).await;
    let before = requests().await.len();
    tokio::time::sleep(std::time::Duration::from_millis(6_000)).await;
    assert_eq!(requests().await.len(), before, "nothing while hidden");

    browser.js("window.__hide(false)", vec![]).await;
    browser
        .wait_until("a request after the tab is shown again", || async {
            let n = requests().await.len();
            if n > before {
                Ok(())
            } else {
                Err(format!("{n} requests"))
            }
        })
        .await;
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}

/// See: issue 19 §1: deleting a job named `clear` from its page sent the bulk route's
/// `DELETE /api/v1/jobs/failed/clear` and purged every failed job. From the console, a job
/// named `clear`, `groups`, with `/`, `%`, a space or beyond ASCII is retried or deleted alone.
#[tokio::test]
async fn jobs_with_any_id_are_retried_and_deleted_alone_from_their_page() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), POLICIES));
    let mut con = redis.conn();
    let awkward = ["clear", "groups", "a/b 50%", "jöb-ジョブ"];
    for id in awkward {
        FailedJob::new(id)
            .exception("ConnectionError", "it went wrong")
            .write(&mut con);
    }
    let bystanders = write_jobs(&mut con, "keep", 5, "emails", "app.mail.send", "ValueError");
    daemon.scan();
    let browser = Browser::start().await;
    let mut left: BTreeSet<String> = awkward.iter().map(|s| s.to_string()).collect();
    for (i, id) in awkward.iter().enumerate() {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("id", id)
            .finish();
        browser
            .goto(&format!("{}/ui/job?{query}", daemon.base_url()))
            .await;
        browser
            .wait_for_text("#explain-facts [data-field=policy]", "network")
            .await;
        let action = if i % 2 == 0 { "delete" } else { "retry" };
        browser.click(&format!("[data-action={action}]")).await;
        if action == "delete" {
            browser.click("[data-action=confirm]").await;
        }
        browser.find("#action .outcome[data-outcome=done]").await;
        left.remove(*id);
        assert_eq!(
            members(&mut con, "rq:failed:default"),
            left,
            "after {action} of {id:?}"
        );
        assert_eq!(
            members(&mut con, "rq:failed:emails"),
            id_set(&bystanders),
            "after {id:?}"
        );
        let gone = !con.exists::<_, bool>(format!("rq:job:{id}")).unwrap();
        assert_eq!(gone, action == "delete", "{id:?}");
    }
    let queued: Vec<String> = con.lrange("rq:queue:default", 0, -1).unwrap();
    assert_eq!(queued, vec!["groups".to_string(), "jöb-ジョブ".to_string()]);
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}

/// See: issue 19 ("signing in once serves every tab of that browser until sign-out"): the
/// token typed once is exchanged for an HttpOnly session cookie; a second tab is signed in
/// without asking, the page holds no token anywhere a script can read, and signing out in one
/// tab signs the other out.
#[tokio::test]
async fn signing_in_once_serves_every_tab_until_sign_out() {
    let redis = RedisServer::start();
    let mut config = DaemonConfig::new(&redis.url(), POLICIES);
    config.auth_token = Some("operator-0123456789abcdef".into());
    let daemon = Daemon::start_ready(&config);
    let browser = Browser::start().await;
    let overview = format!("{}/ui/", daemon.base_url());
    browser.goto(&overview).await;
    sign_in(&browser, "operator-0123456789abcdef").await;
    browser
        .wait_for_text("#whoami", "auth_token · operate")
        .await;
    assert!(browser.is_shown("#sign-out").await);
    let stored = browser
        .js(
            "return [document.cookie, JSON.stringify(sessionStorage), JSON.stringify(localStorage)]",
            vec![],
        )
        .await;
    let stored = stored.to_string();
    assert!(
        !stored.contains("operator-0123"),
        "no token in the page: {stored}"
    );
    assert!(!stored.contains("rq_retryd_session"), "HttpOnly: {stored}");

    // A second tab of the same browser is signed in.
    let first = browser.client.window().await.unwrap();
    let second = browser.client.new_window(true).await.unwrap();
    browser
        .client
        .switch_to_window(second.handle)
        .await
        .unwrap();
    browser
        .goto(&format!("{}/ui/jobs", daemon.base_url()))
        .await;
    browser
        .wait_for_text("#whoami", "auth_token · operate")
        .await;
    assert!(
        !browser.is_shown("#sign-in").await,
        "no sign-in in the second tab"
    );

    // Signing out there signs the first tab out too.
    browser.click("#sign-out").await;
    browser.wait_shown("#sign-in input[name=token]").await;
    browser.client.switch_to_window(first).await.unwrap();
    browser.goto(&overview).await;
    browser.wait_shown("#sign-in input[name=token]").await;
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}

/// A job whose requeue `hold_when` holds: the list shows it `held`, its page names the
/// condition and the policy's `requeue_to`, and a retry from the page goes ahead and shows the
/// answer's warning. See: issue 21.
#[tokio::test]
async fn a_held_job_shows_why_and_its_retry_warns() {
    const HOLD: &str = r#"
[[policy]]
name = "slow-lane"
queues = ["lonely"]
backoff = { strategy = "fixed", delay = "0s" }
requeue_to = "slow"
hold_when = { no_workers = true }
"#;
    let redis = RedisServer::start();
    let daemon = Daemon::start_ready(&DaemonConfig::new(&redis.url(), HOLD));
    let mut con = redis.conn();
    FailedJob::new("held-1")
        .queue("lonely")
        .exception("ConnectionError", "down")
        .write(&mut con);
    daemon.scan();
    let browser = Browser::start().await;

    browser
        .goto(&format!("{}/ui/jobs?state=held", daemon.base_url()))
        .await;
    browser.wait_for_text("[data-field=state]", "held").await;
    // See: issue 20: retry-all and clear take every filter the listing takes, `state` too.
    for css in ["[data-action=retry-group]", "[data-action=delete-group]"] {
        let disabled = browser.find(css).await.prop("disabled").await.unwrap();
        assert_eq!(disabled.as_deref(), Some("false"), "{css} is enabled");
    }

    browser
        .goto(&format!("{}/ui/job?id=held-1", daemon.base_url()))
        .await;
    browser
        .wait_for_text(
            "#explain-facts [data-field=held]",
            "no live RQ worker listens to queue slow (requeued as soon as that clears)",
        )
        .await;
    browser
        .wait_for_text("#explain-facts [data-field=requeue-to]", "slow")
        .await;

    browser.click("[data-action=retry]").await;
    browser.find("#action .outcome[data-outcome=done]").await;
    browser
        .wait_for_text(
            "#action .outcome",
            "Job held-1 is queued again on lonely. Warning: no live RQ worker listens to queue lonely.",
        )
        .await;
    let queued: Vec<String> = con.lrange("rq:queue:lonely", 0, -1).unwrap();
    assert_eq!(
        queued,
        vec!["held-1"],
        "an operator's retry goes to the origin"
    );
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}

/// See: issue 22, item 8: at 390 px (a phone during an on-call page) no page is wider than
/// the screen, the nav and Sign out stay on the screen, and names in tables are never broken
/// (a table too wide for its card scrolls inside it).
#[tokio::test]
async fn every_page_fits_a_phone_screen_with_its_nav_and_sign_out_on_it() {
    const TOKEN: &str = "operator-0123456789abcdef";
    let redis = RedisServer::start();
    let mut config = DaemonConfig::new(&redis.url(), POLICIES);
    config.auth_token = Some(TOKEN.into());
    let daemon = Daemon::start_ready(&config);
    let ids = write_jobs(
        &mut redis.conn(),
        "on-call",
        2,
        "notifications-high-priority",
        "app.workers.notifications.deliver_push_notification",
        "smtplib.SMTPServerDisconnected",
    );
    daemon.scan();
    let browser = Browser::start().await;
    browser.client.set_window_size(390, 844).await.unwrap();
    let base = format!("{}/ui/", daemon.base_url());
    browser.goto(&base).await;
    sign_in(&browser, TOKEN).await;
    browser.wait_shown("#sign-out").await;
    // Each page, and an element that shows its data has arrived.
    let job_page = format!("job?id={}", ids[0]);
    for (page, loaded) in [
        ("", "tr[data-group]"),
        ("jobs", "tr[data-job-id]"),
        ("policies", "tr[data-policy]"),
        ("audit", "#updated"),
        ("simulate", "#candidate"),
        (job_page.as_str(), "#explain-facts [data-field=policy]"),
    ] {
        browser.goto(&format!("{base}{page}")).await;
        browser.find(loaded).await;
        browser
            .wait_until(&format!("/ui/{page} to load"), || async {
                let stamp = browser.text("#updated").await;
                if stamp.starts_with("updated") {
                    Ok(())
                } else {
                    Err(format!("#updated is {stamp:?}"))
                }
            })
            .await;
        let fit = browser
            .js(
                "const inner = window.innerWidth; \
                 const right = (css) => document.querySelector(css).getBoundingClientRect().right; \
                 const links = [...document.querySelectorAll('.topbar nav a')]; \
                 return { inner, page: document.documentElement.scrollWidth, \
                   nav: right('.topbar nav'), signOut: right('#sign-out'), \
                   brand: right('.brand'), links: links.length, \
                   reachable: links.filter((a) => a.offsetParent !== null).length };",
                vec![],
            )
            .await;
        let inner = fit["inner"].as_f64().unwrap();
        assert!(inner <= 400.0, "/ui/{page}: the window is {inner} px wide");
        for part in ["page", "nav", "signOut", "brand"] {
            let right = fit[part].as_f64().unwrap();
            assert!(
                right <= inner,
                "/ui/{page}: {part} ends at {right} px of {inner}: {fit}"
            );
        }
        assert_eq!(fit["links"], fit["reachable"], "/ui/{page}: {fit}");
        assert_eq!(fit["links"], 5, "/ui/{page}: {fit}");
        // A name in a table is one piece: an inline element broken across lines has more
        // than one client rectangle.
        let broken = browser
            .js(
                "return [...document.querySelectorAll('.table td code, .table td .exc')] \
                   .filter((e) => e.getClientRects().length > 1).map((e) => e.textContent);",
                vec![],
            )
            .await;
        assert_eq!(broken, json!([]), "/ui/{page}: names broken across lines");
    }
    assert_eq!(page_errors(&browser).await, Vec::<String>::new());
    browser.close().await;
}
