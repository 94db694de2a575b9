//! A real headless Chromium for the console's tests, driven over WebDriver: chromedriver on a
//! free loopback port, one browser session per [`Browser`], with the `fantoccini` client.
//!
//! The binaries are Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`; `$RQ_RETRYD_CHROMIUM` and `$RQ_RETRYD_CHROMEDRIVER` override them).
//! A missing one is a test failure that says to run `./scripts/test.sh`, never a skip.
//! chromedriver runs in a process group of its own, killed whole on drop, so a failed test
//! leaves no browser behind.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::free_port;

/// How long a page may take to show what a test waits for.
pub const UI_DEADLINE: Duration = Duration::from_secs(15);
/// How long chromedriver may take to answer `/status`.
const DRIVER_DEADLINE: Duration = Duration::from_secs(20);

fn binary(var: &str, default: &str, package: &str) -> PathBuf {
    let path = match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(default),
    };
    assert!(
        path.is_file(),
        "{} is missing (set ${var} to use another): run ./scripts/test.sh, which installs \
         Debian's {package} package",
        path.display()
    );
    path
}

/// chromedriver, in a process group of its own (Chromium runs in it too), killed whole on drop.
struct Driver {
    child: Child,
    log: PathBuf,
}

impl Driver {
    fn spawn(chromedriver: &Path, port: u16, log: PathBuf) -> Driver {
        use std::os::unix::process::CommandExt;
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run ./scripts/test.sh",
                    chromedriver.display()
                )
            });
        let mut driver = Driver { child, log };
        driver.wait_ready(port);
        driver
    }

    fn wait_ready(&mut self, port: u16) {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + DRIVER_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "chromedriver exited with {status} while starting:\n{}",
                    self.log_tail()
                );
            }
            // It listens once it is ready for sessions. (Its HTTP server keeps the connection
            // open despite `Connection: close`, so support::http's client cannot ask /status.)
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "chromedriver did not get ready within {DRIVER_DEADLINE:?}:\n{}",
            self.log_tail()
        );
    }

    /// The end of chromedriver's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut start = text.len().saturating_sub(4000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_string()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session, with the chromedriver that runs it.
pub struct Browser {
    pub client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session of headless Chromium (a fresh
    /// profile, 1400x1000 window, browser console logs kept for [`errors`](Self::errors)).
    pub async fn start() -> Browser {
        super::machine::take_a_seat();
        let chromium = binary("RQ_RETRYD_CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = binary(
            "RQ_RETRYD_CHROMEDRIVER",
            "/usr/bin/chromedriver",
            "chromium-driver",
        );
        let profile = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let driver = Driver::spawn(&chromedriver, port, profile.path().join("chromedriver.log"));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start {} ({e}); its log:\n{}",
                    chromium.display(),
                    driver.log_tail()
                )
            });
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Opens `url` (waits for the load event).
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The first element matching `css`, waiting for it up to [`UI_DEADLINE`].
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(UI_DEADLINE)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} within {UI_DEADLINE:?}: {e}"))
    }

    /// Every element matching `css` now.
    pub async fn find_all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find_all {css}: {e}"))
    }

    /// The rendered text of the first element matching `css` (waiting for it). A live refresh
    /// may redraw the element between finding and reading it (a stale element): then it is
    /// found again.
    pub async fn text(&self, css: &str) -> String {
        self.wait_until(&format!("the text of {css}"), || async {
            self.find(css).await.text().await.map_err(|e| e.to_string())
        })
        .await
    }

    /// The action panel's outcome once it has settled past `working` and `preview`: its kind
    /// (`data-outcome`: `done`, `refused`, ...) and its text. A panel redrawn while it is read
    /// is read again.
    pub async fn settled_outcome(&self) -> (String, String) {
        self.wait_until("the action's outcome", || async {
            let outcome = self.find("#action .outcome").await;
            let kind = outcome
                .attr("data-outcome")
                .await
                .map_err(|e| e.to_string())?;
            let text = outcome.text().await.map_err(|e| e.to_string())?;
            match kind.unwrap_or_default() {
                kind if kind == "working" || kind == "preview" => Err(format!("{kind}: {text}")),
                kind => Ok((kind, text)),
            }
        })
        .await
    }

    /// Clicks the first element matching `css` once it exists and is shown. A live refresh
    /// may redraw the element between finding and clicking it: then it is found again.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + UI_DEADLINE;
        loop {
            let element = self.find(css).await;
            let last = match element.is_displayed().await {
                Ok(true) => match element.click().await {
                    Ok(()) => return,
                    Err(e) => e.to_string(),
                },
                Ok(false) => "not shown".to_string(),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "cannot click {css} within {UI_DEADLINE:?}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `check` every 50 ms until it answers `Some`, up to [`UI_DEADLINE`]; panics with
    /// `what` and the last value seen otherwise.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + UI_DEADLINE;
        loop {
            match check().await {
                Ok(value) => return value,
                Err(last) if Instant::now() > deadline => {
                    panic!("timed out after {UI_DEADLINE:?} waiting for {what}; last: {last}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The ids of the job rows (`tr[data-job-id]`) a listing shows, once it shows `want` of
    /// them. A redraw between finding the rows and reading one (a stale element) reads them
    /// all again, as [`Self::text`] does.
    pub async fn job_rows(&self, want: usize) -> std::collections::BTreeSet<String> {
        self.wait_until(&format!("{want} job rows"), || async {
            let mut ids = std::collections::BTreeSet::new();
            for row in self.find_all("tr[data-job-id]").await {
                let id = row.attr("data-job-id").await.map_err(|e| e.to_string())?;
                ids.insert(id.unwrap_or_default());
            }
            if ids.len() == want {
                Ok(ids)
            } else {
                Err(format!("{ids:?}"))
            }
        })
        .await
    }

    /// Waits until the first element matching `css` is shown (exists and is not hidden).
    pub async fn wait_shown(&self, css: &str) {
        self.wait_until(&format!("{css} to be shown"), || async {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => match element.is_displayed().await {
                    Ok(true) => Ok(()),
                    other => Err(format!("{other:?}")),
                },
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Whether the first element matching `css` is shown now.
    pub async fn is_shown(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Waits until the first element matching `css` has exactly `want` as its text.
    pub async fn wait_for_text(&self, css: &str, want: &str) {
        self.wait_until(&format!("{css} to read {want:?}"), || async {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.map_err(|e| e.to_string())?,
                Err(e) => return Err(e.to_string()),
            };
            if text == want {
                Ok(())
            } else {
                Err(text)
            }
        })
        .await
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.expect("screenshot")
    }

    /// Saves a PNG of the viewport as `target/ci-artifacts/<name>`, where CI keeps it for a
    /// person to look at.
    pub async fn save_screenshot(&self, name: &str) {
        let dir = super::repo_root().join("target").join("ci-artifacts");
        std::fs::create_dir_all(&dir).expect("create target/ci-artifacts");
        std::fs::write(dir.join(name), self.screenshot().await).expect("write the screenshot");
    }

    /// The browser console's errors since the last call: uncaught exceptions, CSP violations,
    /// failed loads (chromedriver's `goog:loggingPrefs` log).
    pub async fn errors(&self) -> Vec<String> {
        let entries = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("read the browser log");
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Ends the session (Chromium exits), then chromedriver.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// chromedriver's `POST /session/{id}/se/log` for the `browser` log (not in W3C WebDriver).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(r#"{"type":"browser"}"#.to_string()),
        )
    }
}
