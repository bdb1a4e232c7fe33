//! The dashboard in a real browser: `plue serve` runs a workflow while headless Chromium
//! (driven over WebDriver by `chromedriver`) looks at it as a person would —
//! - the run page draws the plan's DAG (nodes and edges) and its colours follow the run
//!   live until it succeeds;
//! - a step's log page shows lines as the step prints them, ANSI colours as spans, a line
//!   with HTML in it as text (no script of the log runs), and a 100,000-line log loads and
//!   scrolls to its end within a second or two;
//! - an `llm` step (against `testkit`'s scripted Messages server) reads as a timeline: the
//!   model's text, folded tool calls and results (whole in a panel), usage per turn;
//! - signing in and pressing Cancel cancels a run (the CSRF-protected form, in a browser);
//! - a repository's manual workflow is dispatched from the form built from its inputs;
//! - no page logs a console error (a CSP violation would be one).
//!
//! Screenshots of each page are saved to `$PLUE_SCREENSHOT_DIR` (default
//! `$TMPDIR/plue-team`) as `dashboard-*.png`. Without Chromium and chromedriver the test
//! says so and passes, unless `PLUE_REQUIRE_BROWSER=1`.
//!
//! Why one file past ~600 lines: a person's walk through the dashboard in one browser
//! session per test (watch a run, read a log, cancel, dispatch), sharing the browser and
//! engine fixture.

use crate::support;
use crate::webdriver;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::{client, start_run, wait_final, wait_succeeded, Sandbox, ADMIN_TOKEN};
use crate::webdriver::Browser;
use serde_json::{json, Value};
use testkit::claude::{FakeClaude, Turn};

const HOSTILE_LINE: &str = r#"<script>document.title="pwned"</script><img src=x onerror=alert(1)>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_watches_a_run_in_the_dashboard() {
    webdriver::browser_test(240, watch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_dispatches_a_workflow_from_its_form() {
    webdriver::browser_test(180, dispatch).await;
}

const DEPLOY: &str = r#"
def workflow(ctx):
    return Plan(name="Deploy",
                triggers=[Trigger.manual(inputs={
                    "target": {"default": "staging", "options": ["staging", "production"]},
                    "version": {"required": True, "description": "what to deploy"},
                })],
                steps=[Step.bash("deploy", "echo deploying %s to %s" % (ctx.inputs.get("version"), ctx.inputs.get("target")))])
"#;

/// A repository registered with a manual workflow; one run started through the API makes
/// it known to the dashboard; then a person fills in its form.
async fn dispatch(chromium: PathBuf, driver: PathBuf) {
    let sandbox = Sandbox::new("dashboard-dispatch");
    let origin = sandbox.path("origin");
    support::git_repo(&origin, &[(".plue/deploy.plue.py", DEPLOY)]);
    let engine = sandbox.serve_engine(&["--runners", "1"]).await;
    let http = client();
    support::register_origin(&engine.url, &origin, "a-webhook-secret-of-the-test").await;
    let inputs = json!({"version": "1.0"});
    let first = support::dispatch_retrying(&http, &engine.url, "deploy", inputs).await;
    wait_final(&http, &engine.url, first, Duration::from_secs(60)).await;

    let installed = (chromium.as_path(), driver.as_path());
    let browser = Browser::admin_on(&sandbox, installed, &engine.url, "/repos/acme/app").await;
    let form = browser
        .wait(
            Duration::from_secs(10),
            "the dispatch form",
            "const f = document.querySelector('form.dispatch'); if (!f) return null; \
             const t = f.querySelector('select[name=\"input.target\"]'); \
             const v = f.querySelector('input[name=\"input.version\"]'); \
             return [Array.from(t.options).map(o => o.value), t.value, v.required];",
        )
        .await;
    assert_eq!(form, json!([["staging", "production"], "staging", true]));
    browser
        .eval("document.querySelector('select[name=\"input.target\"]').value = 'production';")
        .await;
    browser
        .type_into("input[name=\"input.version\"]", "2.5")
        .await;
    browser.shot("dashboard-dispatch.png").await;
    browser.click("form.dispatch button").await;
    let run_id = browser
        .wait_for_run_page(Duration::from_secs(20), "the new run's page", Some(first))
        .await;
    wait_succeeded(&http, &engine.url, run_id, Duration::from_secs(60)).await;
    // The dashboard reads its session cookie, never a bearer token.
    let session = support::dashboard_session(&engine.url, ADMIN_TOKEN).await;
    let log = http
        .get(format!("{}/runs/{run_id}/steps/deploy/raw", engine.url))
        .header(reqwest::header::COOKIE, session)
        .send()
        .await
        .expect("the raw log")
        .text()
        .await
        .expect("text");
    assert!(log.contains("deploying 2.5 to production"), "{log}");
    browser.close_without_console_errors().await;
}

async fn watch(chromium: PathBuf, driver: PathBuf) {
    let sandbox = Sandbox::new("dashboard");
    let go = sandbox.shared("go");
    let go = go.to_str().expect("a UTF-8 path");
    let flag = sandbox.shared("flaky");
    let flag = flag.to_str().expect("a UTF-8 path");
    let print = format!(
        "echo first-line; echo '{HOSTILE_LINE}'; printf '\\033[31mred-text\\033[0m\\n'; \
         while [ ! -s {go} ]; do sleep 0.05; done; echo after-go"
    );
    let workflow = sandbox.write(
        "ws/watch.plue.py",
        &format!(
            "def workflow():\n    return Plan(name='watch', triggers=[Trigger.manual()], steps=[\n        \
             Step.bash('prepare', 'echo ready'),\n        \
             Step.bash('print', {print:?}, depends_on=['prepare']),\n        \
             Step.bash('big', 'seq 1 100000', depends_on=['prepare']),\n        \
             Step.bash('flaky', 'if [ ! -s {flag} ]; then echo x > {flag}; exit 7; fi', \
             retries=1, backoff=0, depends_on=['prepare']),\n        \
             Step.bash('report', 'echo done', depends_on=['print', 'big', 'flaky']),\n        \
             Step.llm('review', prompt='Review notes.txt', tools=['read_file'], max_turns=3, \
             depends_on=['prepare']),\n    ])\n"
        ),
    );
    let waits = sandbox.write(
        "ws/wait.plue.py",
        &format!(
            "def workflow():\n    return Plan(name='waits', triggers=[Trigger.manual()], steps=[\n        \
             Step.bash('forever', 'while [ ! -s {go}x ]; do sleep 0.05; done'),\n    ])\n"
        ),
    );
    sandbox.write("ws/notes.txt", "one\ntwo\nthree\n");
    let claude = FakeClaude::start(vec![
        Turn::new()
            .text_block(&["I'll read ", "the notes."])
            .tool_use("toolu_01", "read_file", &json!({"path": "notes.txt"}))
            .usage(120, 30)
            .reply(),
        Turn::text(&["Looks ", "good: 3 li", "nes.\nShip it ", "<b>now</b>"])
            .usage(180, 12)
            .reply(),
    ]);
    // The engine hands its own ANTHROPIC_BASE_URL to its runners.
    let base_url = claude.url();
    let key = "ANTHROPIC_API_KEY=sk-ant-dashboard-test-key";
    let (engine, http, run_id) = sandbox
        .serve_and_run_with_env(
            &["--runners", "2", "--secret", key],
            &[("ANTHROPIC_BASE_URL", base_url)],
            &workflow,
        )
        .await;
    // The run page: the plan's four steps and four edges, coloured by state. A local run
    // is the admin's: sign in first, and the sign-in returns to it.
    let browser = Browser::admin_on_run(&sandbox, (&chromium, &driver), &engine.url, run_id).await;
    let nodes = browser
        .wait(
            Duration::from_secs(10),
            "the DAG's nodes",
            "const n = document.querySelectorAll('#dag a.node'); \
             return n.length === 6 ? Array.from(n).map(e => e.dataset.step) : null;",
        )
        .await;
    assert_eq!(
        nodes,
        json!(["prepare", "print", "big", "flaky", "report", "review"])
    );
    let edges = browser
        .eval("return document.querySelectorAll('#dag path.edge').length;")
        .await;
    assert_eq!(edges, 7);
    // `print` starts running while the page is open; the live part shows it.
    browser
        .wait(
            Duration::from_secs(30),
            "'print' to show as running on the open page",
            "const n = document.querySelector('#dag a.node[data-step=\"print\"]'); \
             return n && n.dataset.status === 'running';",
        )
        .await;
    browser.shot("dashboard-run-running.png").await;

    // The step's log page while the step prints.
    browser
        .goto(&format!("{}/runs/{run_id}/steps/print", engine.url))
        .await;
    browser
        .wait(
            Duration::from_secs(10),
            "the printed lines",
            "return Array.from(document.querySelectorAll('#lines .tx')).map(e => e.textContent).includes('first-line');",
        )
        .await;
    let texts = browser
        .eval("return Array.from(document.querySelectorAll('#lines .tx')).map(e => e.textContent);")
        .await;
    assert!(
        texts.as_array().unwrap().contains(&json!(HOSTILE_LINE)),
        "the HTML line is shown as text: {texts}"
    );
    let injected = browser
        .eval("return [document.title, document.querySelectorAll('#lines img, #lines script').length, \
             Array.from(document.querySelectorAll('script')).filter(e => !(e.getAttribute('src') || '').startsWith('/assets/')).length];")
        .await;
    assert!(
        !injected[0].as_str().unwrap().contains("pwned"),
        "{injected}"
    );
    assert_eq!(injected[1], 0, "no element came from the log: {injected}");
    assert_eq!(injected[2], 0, "only the engine's own scripts: {injected}");
    let red = browser
        .eval("const s = Array.from(document.querySelectorAll('#lines .tx span')).find(e => e.textContent === 'red-text'); \
             return s ? s.className : null;")
        .await;
    assert_eq!(red, "f1", "ANSI red is a span");
    // A line printed now appears on the open page, live.
    let printed = Instant::now();
    std::fs::write(go, "go\n").expect("write the go file");
    browser
        .wait(
            Duration::from_secs(10),
            "the line printed after the page opened",
            "return Array.from(document.querySelectorAll('#lines .tx')).map(e => e.textContent).includes('after-go');",
        )
        .await;
    eprintln!(
        "a live line reached the page {:?} after the step was released",
        printed.elapsed()
    );
    browser
        .wait(
            Duration::from_secs(10),
            "the log to end",
            "return document.getElementById('state').textContent.startsWith('Complete');",
        )
        .await;
    browser.shot("dashboard-log.png").await;

    // The run succeeds; the open run page follows it to the end.
    browser.goto(&format!("{}/runs/{run_id}", engine.url)).await;
    wait_succeeded(&http, &engine.url, run_id, Duration::from_secs(60)).await;
    let states = browser
        .wait(
            Duration::from_secs(10),
            "every node to turn succeeded",
            "const n = Array.from(document.querySelectorAll('#dag a.node')).map(e => e.dataset.status); \
             return n.length === 6 && n.every(s => s === 'succeeded') && \
             document.getElementById('run-status').lastChild.textContent.trim() === 'succeeded' ? n : null;",
        )
        .await;
    assert_eq!(states.as_array().unwrap().len(), 6);
    // The retried step lists both attempts: the first failed with its exit code.
    let attempts = browser
        .eval("return Array.from(document.querySelectorAll('tr.attempt')).map(r => \
             [r.dataset.attempt, r.children[0].textContent, r.querySelector('td.exit').textContent]);")
        .await;
    assert_eq!(
        attempts,
        json!([
            ["flaky:1", "✗ failed", "7"],
            ["flaky:2", "✓ succeeded", "0"]
        ])
    );
    browser.shot("dashboard-run.png").await;

    // 100,000 lines: loaded and at the last line quickly.
    let opened = Instant::now();
    browser
        .goto(&format!("{}/runs/{run_id}/steps/big#L100000", engine.url))
        .await;
    browser
        .wait(
            Duration::from_secs(10),
            "the 100,000-line log",
            "return document.getElementById('state').textContent === 'Complete · 100000 lines';",
        )
        .await;
    let last = browser
        .wait(
            Duration::from_secs(5),
            "line 100000 in view",
            "const l = document.getElementById('L100000'); return l ? l.querySelector('.tx').textContent : null;",
        )
        .await;
    let usable = opened.elapsed();
    assert_eq!(last, "100000");
    eprintln!("a 100,000-line log was usable after {usable:?}");
    assert!(usable < Duration::from_secs(5), "took {usable:?}");
    // Search finds one line among them.
    browser.type_into("#search", "99999").await;
    browser
        .wait(
            Duration::from_secs(5),
            "the search to find line 99999",
            "return document.getElementById('hits').textContent === '1 / 1' && !!document.querySelector('#L99999.current');",
        )
        .await;
    browser.shot("dashboard-log-big.png").await;

    // The llm step as a timeline: the model's text, the tool call and its result folded on
    // one row each (whole in the detail panel), usage per turn.
    browser
        .goto(&format!("{}/runs/{run_id}/steps/review", engine.url))
        .await;
    let rows = browser
        .wait(
            Duration::from_secs(10),
            "the llm step's timeline",
            // The state says Complete before the queued render draws the lines: wait for both.
            "const lines = document.querySelectorAll('#lines .line'); \
             return document.getElementById('state').textContent.startsWith('Complete') \
             && lines.length ? Array.from(lines).map(l => \
             [l.className.replace('line', '').trim(), l.querySelector('.tx').textContent]) : null;",
        )
        .await;
    let rows = rows.as_array().unwrap();
    let has = |class: &str, start: &str| {
        rows.iter()
            .any(|r| r[0] == class && r[1].as_str().unwrap().starts_with(start))
    };
    assert!(has("answer", "I'll read the notes."), "{rows:?}");
    assert!(has("tool tool_call", "\u{2192} read_file"), "{rows:?}");
    assert!(
        has("tool tool_result", "\u{2190} (14 bytes) one"),
        "{rows:?}"
    );
    assert!(has("tool usage", "usage: "), "{rows:?}");
    assert!(has("answer", "Looks good: 3 lines."), "{rows:?}");
    assert!(has("answer", "Ship it <b>now</b>"), "{rows:?}");
    browser.click("#lines .line.tool_result .tx").await;
    let detail = browser
        .eval(
            "const d = document.getElementById('detail'); \
             return d.hidden ? null : document.getElementById('detail-text').textContent;",
        )
        .await;
    assert!(
        detail
            .as_str()
            .unwrap_or_default()
            .contains("one\ntwo\nthree"),
        "{detail}"
    );
    browser.shot("dashboard-llm.png").await;

    // The runs page lists the run.
    browser.goto(&format!("{}/", engine.url)).await;
    browser
        .wait(
            Duration::from_secs(5),
            "the run in the list",
            &format!("return !!document.querySelector('tr[data-run=\"{run_id}\"]');"),
        )
        .await;
    browser.shot("dashboard-runs.png").await;

    // A new run and its state changes appear on the open list without a reload, pushed by
    // the engine's event stream (its safety-net poll waits 10 s while the stream is open).
    browser
        .wait(
            Duration::from_secs(10),
            "the list's event stream to open",
            "return document.documentElement.dataset.liveStream === 'open' || null;",
        )
        .await;
    let _: Value = browser
        .eval("window.notReloaded = true; return null;")
        .await;
    let started = Instant::now();
    let waiting = start_run(&http, &engine.url, &waits, &sandbox.path("ws")).await;
    let row = format!(
        "const r = document.querySelector('tr[data-run=\"{waiting}\"]'); \
         return r && window.notReloaded ? r.querySelector('.badge').textContent : null;"
    );
    browser
        .wait(
            Duration::from_secs(10),
            "the new run in the open list",
            &row,
        )
        .await;
    let appeared = started.elapsed();
    eprintln!("a new run appeared on the open list {appeared:?} after it started");
    assert!(
        appeared < Duration::from_millis(2500),
        "pushed, not polled: {appeared:?}"
    );
    browser
        .wait(
            Duration::from_secs(20),
            "the new run to show as running in the open list",
            &format!(
                "const r = document.querySelector('tr[data-run=\"{waiting}\"]'); \
                 return r && window.notReloaded && r.querySelector('.badge').lastChild.textContent.trim() === 'running';"
            ),
        )
        .await;

    // Sign in, open the run that waits forever, press Cancel.
    let waiting_page = format!("/runs/{waiting}");
    browser
        .sign_in_to(&engine.url, ADMIN_TOKEN, &waiting_page)
        .await;
    browser
        .wait(
            Duration::from_secs(10),
            "the run page with a Cancel button",
            "return !!document.getElementById('cancel');",
        )
        .await;
    browser.click("#cancel").await;
    let cancelled = wait_final(&http, &engine.url, waiting, Duration::from_secs(30)).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    browser
        .wait(
            Duration::from_secs(10),
            "the page to show the run cancelled",
            "const s = document.getElementById('run-status'); return s && s.lastChild.textContent.trim() === 'cancelled';",
        )
        .await;
    browser.shot("dashboard-cancelled.png").await;

    // The runners page: the local pool's counts and its runners. A local runner takes one
    // step and leaves, so the one that ran the cancelled step is gone and its replacement
    // may still be starting (counted, not yet listed): wait until both are registered.
    support::wait_for(Duration::from_secs(10), "two live runners", || async {
        let runners = support::poll_json(&http, &format!("{}/api/runners", engine.url)).await?;
        let live = runners
            .as_array()?
            .iter()
            .filter(|r| r["state"] != "gone")
            .count();
        (live >= 2).then_some(())
    })
    .await;
    browser.goto(&format!("{}/runners", engine.url)).await;
    let pool = browser
        .wait(
            Duration::from_secs(5),
            "the pool's counts",
            "const p = document.getElementById('pool'); \
             return p ? document.querySelectorAll('table.runners tbody tr').length : null;",
        )
        .await;
    assert!(
        pool.as_i64().unwrap() >= 2,
        "the pool's runners are listed: {pool}"
    );
    browser.shot("dashboard-runners.png").await;

    // A phone in dark mode: the layout fits, the theme follows the system.
    browser.emulate(390, 844, true).await;
    browser.goto(&format!("{}/runs/{run_id}", engine.url)).await;
    let fits = browser
        .eval(
            "return [document.documentElement.scrollWidth, window.innerWidth, \
             getComputedStyle(document.body).backgroundColor];",
        )
        .await;
    assert!(
        fits[0].as_i64() <= fits[1].as_i64(),
        "no sideways scrolling: {fits}"
    );
    assert_eq!(fits[2], "rgb(13, 17, 23)", "the dark theme: {fits}");
    browser.shot("dashboard-run-phone-dark.png").await;

    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let _: Value = browser.eval("return null;").await;
    browser.close().await;
}
