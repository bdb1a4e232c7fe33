//! A small WebDriver client over plain HTTP: `chromedriver` driving Debian's headless
//! Chromium, for the dashboard's browser tests. Only the W3C commands the tests use (open a
//! page, find elements, click, type, run a script, take a screenshot, read the console).
//!
//! Invariants: the driver and the browser are started inside the test's sandbox (they
//! carry its mark, so the sandbox's cleanup kills them); every wait has a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{free_port, Sandbox};

/// The launch flags the dashboard's tests use.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// The element key of W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Chromium and its driver are, or why the browser tests cannot run.
pub(crate) fn browser() -> Result<(PathBuf, PathBuf), String> {
    let find = |names: &[&str]| {
        names
            .iter()
            .flat_map(|n| ["/usr/bin", "/usr/local/bin"].map(|d| Path::new(d).join(n)))
            .find(|p| p.is_file())
    };
    let chromium = find(&["chromium", "chromium-browser"]);
    let driver = find(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Ok((c, d)),
        _ => Err("Chromium or chromedriver is not installed \
             (apt-get install chromium chromium-driver)"
            .to_string()),
    }
}

/// One browser session on a chromedriver of its own.
pub(crate) struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
}

impl Browser {
    pub(crate) async fn start(sandbox: &Sandbox, chromium: &Path, driver: &Path) -> Browser {
        let port = free_port();
        let mut command = Command::new(driver);
        command.arg(format!("--port={port}")).env(
            "PLUE_TEST_SANDBOX",
            sandbox.path("x").parent().expect("the sandbox"),
        );
        sandbox.spawn("chromedriver", command);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .is_some_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start\n{}",
                sandbox.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = sandbox.path("chromium-profile");
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("POST /session")
            .json()
            .await
            .expect("a session");
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"));
        Browser {
            http,
            session: format!("{base}/session/{id}"),
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status}: {value}");
        value["value"].clone()
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub(crate) async fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs `script` (a function body, without arguments) in the page; what it returns.
    pub(crate) async fn eval(&self, script: &str) -> Value {
        self.run(script, json!([])).await
    }

    /// Polls `script` until it returns something truthy; panics after `limit` saying `what`.
    pub(crate) async fn wait(&self, limit: Duration, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(script).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what} (last: {value})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    /// Clicks the element `css` selects. A live page may replace the element between
    /// finding and clicking it (WebDriver's "stale element reference"): it is found again,
    /// as a person would aim again.
    pub(crate) async fn click(&self, css: &str) {
        for _ in 0..20 {
            let id = self.element(css).await;
            let url = format!("{}/element/{id}/click", self.session);
            let response = self
                .http
                .post(&url)
                .json(&json!({}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("click {css}: {e}"));
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return;
            }
            let stale = value["value"]["error"] == "stale element reference";
            assert!(stale, "click {css}: {status}: {value}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("click {css}: the element went stale 20 times");
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Resizes the window and makes the page see `prefers-color-scheme: dark` (or light).
    pub(crate) async fn emulate(&self, width: u32, height: u32, dark: bool) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
        let scheme = if dark { "dark" } else { "light" };
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {
                "features": [{"name": "prefers-color-scheme", "value": scheme}],
            }})),
        )
        .await;
    }

    /// Runs the Chrome DevTools Protocol command `cmd` with `params` (input through the
    /// browser's own pipeline: touches, gestures); its answer.
    pub(crate) async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
        .await
    }

    /// Saves a PNG of the viewport.
    pub(crate) async fn screenshot(&self, path: &Path) {
        let data = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64_decode(data.as_str().expect("base64 PNG"));
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// The console's messages since the last call (`level`, `message`).
    pub(crate) async fn console(&self) -> Vec<Value> {
        let value = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        value.as_array().cloned().unwrap_or_default()
    }

    pub(crate) async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    out
}

/// Chromium and chromedriver, or `None` (after saying why) when they are missing and
/// `PLUE_REQUIRE_BROWSER` is not `1`.
pub(crate) fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    match browser() {
        Ok(found) => Some(found),
        Err(why) if std::env::var("PLUE_REQUIRE_BROWSER").as_deref() != Ok("1") => {
            eprintln!("skipping a browser test: {why}");
            None
        }
        Err(why) => panic!("PLUE_REQUIRE_BROWSER=1 but {why}"),
    }
}

/// Where screenshots go: `$PLUE_SCREENSHOT_DIR`, default `$TMPDIR/plue-team`.
pub(crate) fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("PLUE_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("plue-team"));
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir
}

/// Runs `test` under the binary-wide lock and fails it after `limit`.
pub(crate) async fn bounded<F: std::future::Future<Output = ()>>(limit: Duration, test: F) {
    let _serial = crate::support::serial().await;
    if tokio::time::timeout(limit, test).await.is_err() {
        panic!("the test did not finish within {limit:?}");
    }
}

/// A browser test: `test` given Chromium and its driver ([`browser_or_skip`]: skipped
/// without them), [`bounded`] by `secs` seconds.
pub(crate) async fn browser_test<F, Fut>(secs: u64, test: F)
where
    F: FnOnce(PathBuf, PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some((chromium, driver)) = browser_or_skip() else {
        return;
    };
    bounded(Duration::from_secs(secs), test(chromium, driver)).await;
}

impl Browser {
    /// Console messages at level SEVERE (errors, CSP violations, failed loads).
    pub(crate) async fn console_errors(&self) -> Vec<String> {
        self.console()
            .await
            .into_iter()
            .filter(|m| m["level"] == "SEVERE")
            .map(|m| m["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Asserts that the page logged no console error, and closes the browser.
    pub(crate) async fn close_without_console_errors(self) {
        let errors = self.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");
        self.close().await;
    }

    /// Emulates a phone in the dark and asserts that the page (showing `what`) does not
    /// scroll sideways there.
    pub(crate) async fn assert_fits_a_dark_phone(&self, what: &str) {
        self.emulate(390, 844, true).await;
        let overflow = self
            .wait(
                Duration::from_secs(5),
                "the phone layout",
                "return window.innerWidth <= 400 ? \
                 [document.documentElement.scrollWidth, window.innerWidth] : null;",
            )
            .await;
        assert!(
            overflow[0].as_i64() <= overflow[1].as_i64(),
            "the {what} scrolls sideways on a phone: {overflow}"
        );
    }

    /// A browser signed in on `engine` with `token`, on `path` (see [`Browser::sign_in_to`]).
    pub(crate) async fn signed_in_on(
        sandbox: &Sandbox,
        (chromium, driver): (&Path, &Path),
        engine: &str,
        token: &str,
        path: &str,
    ) -> Browser {
        let browser = Browser::start(sandbox, chromium, driver).await;
        browser.sign_in_to(engine, token, path).await;
        browser
    }

    /// [`Browser::signed_in_on`] as the admin.
    pub(crate) async fn admin_on(
        sandbox: &Sandbox,
        installed: (&Path, &Path),
        engine: &str,
        path: &str,
    ) -> Browser {
        let admin = crate::support::ADMIN_TOKEN;
        Browser::signed_in_on(sandbox, installed, engine, admin, path).await
    }

    /// [`Browser::admin_on`] the page of run `run_id`.
    pub(crate) async fn admin_on_run(
        sandbox: &Sandbox,
        browser: (&Path, &Path),
        engine: &str,
        run_id: i64,
    ) -> Browser {
        Browser::admin_on(sandbox, browser, engine, &format!("/runs/{run_id}")).await
    }

    /// Waits (at most `limit`, saying `what`) until the browser shows the page of a run,
    /// `/runs/ID`, other than run `not`; that ID.
    pub(crate) async fn wait_for_run_page(
        &self,
        limit: Duration,
        what: &str,
        not: Option<i64>,
    ) -> i64 {
        let not = not.map_or(String::new(), |id| id.to_string());
        let script = format!(
            "const m = /^\\/runs\\/(\\d+)$/.exec(location.pathname); \
             return m && m[1] !== '{not}' ? parseInt(m[1], 10) : null;"
        );
        let id = self.wait(limit, what, &script).await;
        id.as_i64().expect("a run id")
    }

    /// A screenshot saved as `name` in [`screenshot_dir`].
    pub(crate) async fn shot(&self, name: &str) {
        self.screenshot(&screenshot_dir().join(name)).await;
    }

    /// Signs in on `engine` with `token` and lands on `path` (the sign-in's `next`).
    pub(crate) async fn sign_in_to(&self, engine: &str, token: &str, path: &str) {
        let next: String = path
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.goto(&format!("{engine}/login?next={next}")).await;
        // On a busy machine the page may not be there yet when goto returns.
        self.wait(
            Duration::from_secs(20),
            "the sign-in form",
            "return document.querySelector('#token') ? true : null;",
        )
        .await;
        self.type_into("#token", token).await;
        self.click("form.login button").await;
        // Landed on `path`, signed in: a navigation before then raced the sign-in, and the
        // page it loaded unauthenticated logged a 401 (a flaky console error).
        let landed = format!(
            "return location.pathname + location.search === {} \
             && !document.querySelector('#token') ? true : null;",
            serde_json::to_string(path).expect("a path")
        );
        self.wait(Duration::from_secs(20), "the signed-in page", &landed)
            .await;
    }
}
