//! The dashboard on a phone (390×844 CSS pixels) and on a desktop (1280×900), in headless
//! Chromium over WebDriver, as a person reads it:
//! - the runs list shows every run's status, name, time, duration and reason, with
//!   nothing scrolling sideways (neither the page nor the list's own box); names break
//!   between words, never inside one (a word too long for the line ends in "…");
//! - a run's steps table shows every step's status, name, duration and reason the same way;
//! - the DAG zooms with a two-finger pinch (pointer events of two touches), about the
//!   point between the fingers, and still pans with a mouse drag;
//! - a visitor who is not signed in, on an engine whose only runs are hidden from them (a
//!   local run: admins only), is told that signing in may show more, with the sign-in
//!   link, and not to register a repository — on the runs list and the repositories list.
//!
//! Screenshots go to `$PLUE_SCREENSHOT_DIR` (default `$TMPDIR/plue-team`) as
//! `dashboard-phone-*.png`. Without Chromium and chromedriver the test says so and passes,
//! unless `PLUE_REQUIRE_BROWSER=1`.

use crate::support;
use crate::webdriver;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::{wait_final, Sandbox};
use crate::webdriver::Browser;
use serde_json::{json, Value};

/// A workflow name of many words (breaks after its hyphens) and one of a single word
/// longer than a phone's line.
const WORDS: &str = "nightly-integration-suite-for-the-payments-service";
const ONE_WORD: &str = "a_single_workflow_name_without_any_place_to_break_it";
/// A step id longer than a phone's line, in one word.
const LONG_STEP: &str = "compile_the_whole_monorepo_with_every_feature_enabled";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_out_visitor_is_told_that_signing_in_may_show_more() {
    webdriver::browser_test(180, signed_out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_shows_every_runs_facts_on_a_phone_and_a_desktop() {
    webdriver::browser_test(180, runs_list).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_steps_table_shows_every_steps_facts_on_a_phone_and_a_desktop() {
    webdriver::browser_test(180, steps_table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fingers_pinch_the_dag() {
    webdriver::browser_test(180, pinch).await;
}

/// Whether nothing scrolls sideways: the page, and the box `arguments[0]` selects.
const NO_SIDEWAYS: &str = "\
    const page = document.scrollingElement; \
    const box = document.querySelector(arguments[0]); \
    return [page.scrollWidth <= window.innerWidth, \
            !!box && box.scrollWidth <= box.clientWidth, \
            page.scrollWidth, window.innerWidth, box && box.scrollWidth, box && box.clientWidth];";

/// For each row `arguments[0]` selects, each cell `arguments[1]` names (what → selector
/// inside the row): whether it is shown — has a size, lies inside the window and inside
/// every box that clips it — and its text. `{row: {what: [shown, text]}}`, keyed by the
/// row's `arguments[2]` attribute.
const CELLS: &str = "\
    const clipped = (e, r) => { for (let p = e.parentElement; p; p = p.parentElement) { \
        const s = getComputedStyle(p); \
        if (s.overflowX !== 'visible' || s.overflowY !== 'visible') { \
          const b = p.getBoundingClientRect(); \
          if (r.left < b.left - 1 || r.right > b.right + 1) return true; } } return false; }; \
    const out = {}; \
    for (const row of document.querySelectorAll(arguments[0])) { \
      const cells = {}; \
      for (const [what, css] of Object.entries(arguments[1])) { \
        const e = row.querySelector(css); \
        if (!e) { cells[what] = [false, null]; continue; } \
        const r = e.getBoundingClientRect(); \
        const shown = r.width > 0 && r.height > 0 && r.left >= -1 && r.right <= window.innerWidth + 1 \
          && getComputedStyle(e).visibility === 'visible' && !clipped(e, r); \
        cells[what] = [shown, e.textContent.trim()]; } \
      out[row.getAttribute(arguments[2])] = cells; } \
    return out;";

/// For each element `arguments[0]` selects: its text, whether a line break falls between
/// two letters or digits of it (a word broken), and its computed `overflow-wrap` and
/// `word-break`.
const WORD_BREAKS: &str = "\
    const out = []; \
    for (const e of document.querySelectorAll(arguments[0])) { \
      const text = e.firstChild; const s = getComputedStyle(e); \
      let broken = null; \
      if (text && text.nodeType === 3) { \
        const range = document.createRange(); let last = null; \
        for (let i = 0; i < text.length; i++) { \
          range.setStart(text, i); range.setEnd(text, i + 1); \
          const r = range.getClientRects()[0]; if (!r) continue; \
          const c = text.data[i]; \
          if (last && /[A-Za-z0-9]/.test(c) && /[A-Za-z0-9]/.test(last.c) && r.top > last.top + 2) \
            { broken = text.data.slice(0, i) + '|' + text.data.slice(i); break; } \
          last = {c, top: r.top}; } } \
      out.push([e.textContent, broken, s.overflowWrap, s.wordBreak]); } \
    return out;";

/// Asserts the runs list at the browser's width (`size`): every run's facts shown, no
/// sideways scrolling, no name broken inside a word.
async fn check_runs_list(browser: &Browser, size: &str, failed_run: i64) {
    let fits = browser.run(NO_SIDEWAYS, json!(["#runs"])).await;
    assert_eq!(
        (&fits[0], &fits[1]),
        (&json!(true), &json!(true)),
        "{size}: the runs list scrolls sideways: {fits}"
    );
    let cells = browser
        .run(
            CELLS,
            json!([
                "#runs tr[data-run]",
                {"status": ".badge", "name": "td:nth-child(3) > a", "time": "td:nth-child(6) time",
                 "duration": "td:nth-child(7)", "reason": "td:nth-child(3) .reason"},
                "data-run"
            ]),
        )
        .await;
    let rows = cells.as_object().expect("rows");
    assert_eq!(rows.len(), 3, "{size}: {cells}");
    for (run, row) in rows {
        for what in ["status", "name", "time", "duration"] {
            assert_eq!(
                row[what][0], true,
                "{size}: run {run}'s {what} is hidden: {row}"
            );
            let text = row[what][1].as_str().unwrap_or_default();
            assert!(
                !text.is_empty(),
                "{size}: run {run}'s {what} is empty: {row}"
            );
        }
    }
    let failed = &rows[&failed_run.to_string()];
    assert_eq!(
        failed["reason"][0], true,
        "{size}: the failed run's reason is hidden: {failed}"
    );
    assert!(
        failed["reason"][1].as_str().unwrap().contains("check"),
        "{size}: the reason names the failed step: {failed}"
    );
    let names = browser
        .run(WORD_BREAKS, json!(["#runs td:nth-child(3) > a"]))
        .await;
    for name in names.as_array().unwrap() {
        assert!(
            name[1].is_null(),
            "{size}: a name broken inside a word: {name}"
        );
        assert_eq!(name[2], "normal", "{size}: overflow-wrap of {name}");
        assert_eq!(name[3], "normal", "{size}: word-break of {name}");
    }
}

/// Asserts the run page's steps table at the browser's width: every step's status, name,
/// duration and reason (when it has one) shown, no sideways scrolling, no id broken.
async fn check_steps(browser: &Browser, size: &str) {
    let fits = browser.run(NO_SIDEWAYS, json!(["table.steps"])).await;
    assert_eq!(
        (&fits[0], &fits[1]),
        (&json!(true), &json!(true)),
        "{size}: the steps table scrolls sideways: {fits}"
    );
    let cells = browser
        .run(
            CELLS,
            json!([
                "table.steps tr[data-step]",
                {"status": ".badge", "name": "td:nth-child(2) a", "duration": "td:nth-child(6)",
                 "reason": "td:nth-child(7)"},
                "data-step"
            ]),
        )
        .await;
    let rows = cells.as_object().expect("rows");
    assert_eq!(rows.len(), 4, "{size}: {cells}");
    for (step, row) in rows {
        for what in ["status", "name"] {
            assert_eq!(
                row[what][0], true,
                "{size}: {step}'s {what} is hidden: {row}"
            );
        }
        if step != "after" {
            // A step that ran has a duration; a skipped one none.
            assert_eq!(row["duration"][0], true, "{size}: {step}'s duration: {row}");
        }
        if step == "check" || step == "after" {
            assert_eq!(row["reason"][0], true, "{size}: {step}'s reason: {row}");
            assert!(
                !row["reason"][1].as_str().unwrap().is_empty(),
                "{size}: {step}'s reason is empty: {row}"
            );
        }
    }
    let names = browser
        .run(WORD_BREAKS, json!(["table.steps td:nth-child(2) > a"]))
        .await;
    for name in names.as_array().unwrap() {
        assert!(
            name[1].is_null(),
            "{size}: a step id broken inside a word: {name}"
        );
    }
}

/// Two touches pinching apart by `factor` about the graph's middle, as pointer events
/// (what a phone's browser sends); the DAG's scale before and after, and the click it
/// must not become (the page stays).
const PINCH: &str = "\
    const wrap = document.querySelector('#dag-block .dag-wrap.zoomable'); \
    const block = document.getElementById('dag-block'); \
    const before = parseFloat(block.dataset.scale); \
    const b = wrap.getBoundingClientRect(); \
    const cx = b.left + b.width / 2, cy = b.top + Math.min(b.height, 200) / 2; \
    const at = (type, id, x, y) => wrap.dispatchEvent(new PointerEvent(type, {bubbles: true, \
      cancelable: true, pointerId: id, pointerType: 'touch', isPrimary: id === 11, button: type === 'pointermove' ? -1 : 0, \
      clientX: x, clientY: y})); \
    at('pointerdown', 11, cx - 30, cy); at('pointerdown', 12, cx + 30, cy); \
    for (let i = 1; i <= 10; i++) { const d = 30 * (1 + (arguments[0] - 1) * i / 10); \
      at('pointermove', 11, cx - d, cy); at('pointermove', 12, cx + d, cy); } \
    at('pointerup', 11, cx - 30 * arguments[0], cy); at('pointerup', 12, cx + 30 * arguments[0], cy); \
    return [before, parseFloat(block.dataset.scale), location.pathname];";

/// An engine (with users: the sandbox's admin token) holding three finished local runs:
/// of [`ONE_WORD`], of `short`, and of [`WORDS`] (failed: its `check` exits 3, so `after`
/// is skipped); the engine and the failed run's id.
async fn engine_with_runs(sandbox: &Sandbox) -> (support::Engine, i64) {
    let steps = [
        format!("Step.bash('{LONG_STEP}', 'sleep 1.1; echo built')"),
        format!("Step.bash('check', 'echo checking; exit 3', depends_on=['{LONG_STEP}'])"),
        format!("Step.bash('lint', 'echo linted', depends_on=['{LONG_STEP}'])"),
        "Step.bash('after', 'echo never', depends_on=['check'])".to_string(),
    ];
    let failing = sandbox.write_workflow(WORDS, &steps);
    let plain = sandbox.write_workflow(ONE_WORD, &["Step.bash('hello', 'echo hello')"]);
    let other = sandbox.write_workflow("short", &["Step.bash('hello', 'echo hi')"]);
    let engine = sandbox.serve_engine(&["--runners", "2"]).await;
    let http = support::client();
    let ws = sandbox.path("ws");
    let mut last = 0;
    for file in [&plain, &other, &failing] {
        last = support::start_run(&http, &engine.url, file, &ws).await;
        wait_final(&http, &engine.url, last, Duration::from_secs(90)).await;
    }
    (engine, last)
}

async fn signed_out(chromium: PathBuf, driver: PathBuf) {
    let sandbox = Sandbox::new("dashboard-phone-signed-out");
    let (engine, _) = engine_with_runs(&sandbox).await;
    // Not signed in: only admins read local runs, so the lists hide them and say so.
    let visitor = Browser::start(&sandbox, &chromium, &driver).await;
    visitor.emulate(390, 844, false).await;
    for (path, link, shot) in [
        ("/", "/login?next=%2F", "runs"),
        ("/repos", "/login?next=%2Frepos", "repos"),
    ] {
        visitor.goto(&format!("{}{path}", engine.url)).await;
        let said = visitor
            .wait(
                Duration::from_secs(10),
                "the signed-out list",
                "const e = document.getElementById('signed-out-empty'); \
                 const a = document.getElementById('sign-in-for-more'); \
                 return e && a ? [e.getBoundingClientRect().height > 0, a.getAttribute('href'), \
                   document.querySelector('main').innerText] : null;",
            )
            .await;
        assert_eq!(said[0], true, "{path}: {said}");
        assert_eq!(said[1], link, "{path}: {said}");
        let text = said[2].as_str().unwrap();
        assert!(text.contains("Sign in to see the"), "{path}: {text}");
        for told in ["plue repo add", "Register a repository", "No runs yet"] {
            assert!(
                !text.contains(told),
                "{path} tells a visitor {told:?}: {text}"
            );
        }
        assert!(!text.contains(WORDS), "{path} shows a hidden run: {text}");
        let fits = visitor.run(NO_SIDEWAYS, json!(["main"])).await;
        assert_eq!(fits[0], true, "{path}: {fits}");
        visitor
            .shot(&format!("dashboard-phone-signed-out-{shot}.png"))
            .await;
    }
    visitor.click("#sign-in-for-more").await;
    visitor
        .wait(
            Duration::from_secs(5),
            "the sign-in page, returning to the list",
            "return location.pathname === '/login' && location.search === '?next=%2Frepos' \
             && document.getElementById('token');",
        )
        .await;
    visitor.close_without_console_errors().await;
}

async fn runs_list(chromium: PathBuf, driver: PathBuf) {
    let sandbox = Sandbox::new("dashboard-phone-runs");
    let (engine, failed_run) = engine_with_runs(&sandbox).await;
    let browser = Browser::admin_on(&sandbox, (&chromium, &driver), &engine.url, "/").await;
    for (width, height, size) in [(390, 844, "phone"), (1280, 900, "desktop")] {
        browser.emulate(width, height, false).await;
        browser.goto(&format!("{}/", engine.url)).await;
        browser
            .wait(
                Duration::from_secs(10),
                "the runs list",
                &format!(
                    "return window.innerWidth === {width} && \
                     document.querySelectorAll('#runs tr[data-run]').length === 3;"
                ),
            )
            .await;
        browser
            .shot(&format!("dashboard-phone-runs-{size}.png"))
            .await;
        check_runs_list(&browser, size, failed_run).await;
    }
    browser.close_without_console_errors().await;
}

async fn steps_table(chromium: PathBuf, driver: PathBuf) {
    let sandbox = Sandbox::new("dashboard-phone-steps");
    let (engine, failed_run) = engine_with_runs(&sandbox).await;
    let page = format!("/runs/{failed_run}");
    let browser = Browser::admin_on(&sandbox, (&chromium, &driver), &engine.url, &page).await;
    for (width, height, size) in [(390, 844, "phone"), (1280, 900, "desktop")] {
        browser.emulate(width, height, false).await;
        browser.goto(&format!("{}{page}", engine.url)).await;
        browser
            .wait(
                Duration::from_secs(10),
                "the run page",
                &format!(
                    "return window.innerWidth === {width} \
                     && document.querySelectorAll('table.steps tr[data-step]').length === 4;"
                ),
            )
            .await;
        browser
            .eval("document.querySelector('table.steps').scrollIntoView(); return null;")
            .await;
        browser
            .shot(&format!("dashboard-phone-steps-{size}.png"))
            .await;
        check_steps(&browser, size).await;
    }
    browser.close_without_console_errors().await;
}

async fn pinch(chromium: PathBuf, driver: PathBuf) {
    let sandbox = Sandbox::new("dashboard-phone-pinch");
    let (engine, failed_run) = engine_with_runs(&sandbox).await;
    let page = format!("/runs/{failed_run}");
    let browser = Browser::admin_on(&sandbox, (&chromium, &driver), &engine.url, &page).await;
    // The DAG on a phone: two fingers pinch it larger, then smaller; a drag still pans.
    browser.emulate(390, 844, false).await;
    browser.goto(&format!("{}{page}", engine.url)).await;
    browser
        .wait(
            Duration::from_secs(10),
            "the DAG",
            "return window.innerWidth === 390 && document.getElementById('dag-block') \
             && document.getElementById('dag-block').dataset.scale;",
        )
        .await;
    let grown: Value = browser.run(PINCH, json!([2.0])).await;
    let (before, after) = (grown[0].as_f64().unwrap(), grown[1].as_f64().unwrap());
    assert!(
        after > before * 1.8 && after < before * 2.2,
        "pinching apart twice as wide doubles the scale: {grown}"
    );
    assert_eq!(grown[2], page, "a pinch is no click");
    let shrunk: Value = browser.run(PINCH, json!([0.5])).await;
    let (before, after) = (shrunk[0].as_f64().unwrap(), shrunk[1].as_f64().unwrap());
    assert!(
        after < before * 0.6 && after > before * 0.4,
        "pinching together halves it: {shrunk}"
    );
    // The same through the browser's own touch input (touch-action, the page's scrolling
    // and zooming all in play): two fingers moving apart zoom the graph, not the page.
    browser
        .eval("document.getElementById('dag-block').scrollIntoView(); return null;")
        .await;
    let middle = browser
        .eval(
            "const b = document.querySelector('#dag-block .dag-wrap').getBoundingClientRect(); \
             return [b.left + b.width / 2, b.top + Math.min(b.height, 200) / 2, \
                     parseFloat(document.getElementById('dag-block').dataset.scale)];",
        )
        .await;
    let (x, y) = (middle[0].as_f64().unwrap(), middle[1].as_f64().unwrap());
    let touch = |kind: &str, d: f64| {
        let points = if kind == "touchEnd" {
            json!([])
        } else {
            json!([{"x": x - d, "y": y, "id": 1}, {"x": x + d, "y": y, "id": 2}])
        };
        json!({"type": kind, "touchPoints": points})
    };
    browser
        .cdp("Input.dispatchTouchEvent", touch("touchStart", 30.0))
        .await;
    for i in 1..=10 {
        let d = 30.0 + 3.0 * f64::from(i);
        browser
            .cdp("Input.dispatchTouchEvent", touch("touchMove", d))
            .await;
    }
    browser
        .cdp("Input.dispatchTouchEvent", touch("touchEnd", 60.0))
        .await;
    let touched = browser
        .eval(
            "return [parseFloat(document.getElementById('dag-block').dataset.scale), \
             window.visualViewport.scale, location.pathname];",
        )
        .await;
    let (before, after) = (middle[2].as_f64().unwrap(), touched[0].as_f64().unwrap());
    assert!(
        after > before * 1.6,
        "touches moving apart zoom the graph: {before} then {touched}"
    );
    assert_eq!(touched[1], 1.0, "the page itself is not zoomed: {touched}");
    assert_eq!(touched[2], page, "a pinch is no tap: {touched}");
    browser.shot("dashboard-phone-dag-pinched.png").await;
    let moved = browser
        .eval(
            "const wrap = document.querySelector('#dag-block .dag-wrap'); \
             const t = () => document.getElementById('dag-view').getAttribute('transform'); \
             const before = t(); const b = wrap.getBoundingClientRect(); \
             const at = (type, x, y) => wrap.dispatchEvent(new PointerEvent(type, \
               {bubbles: true, pointerId: 1, pointerType: 'mouse', button: 0, \
                clientX: b.left + x, clientY: b.top + y})); \
             at('pointerdown', 40, 40); at('pointermove', 60, 50); at('pointermove', 80, 60); \
             at('pointerup', 80, 60); return [before, t()];",
        )
        .await;
    assert_ne!(moved[0], moved[1], "a drag still pans: {moved}");
    let scale = browser
        .eval("return document.getElementById('dag-block').dataset.scale;")
        .await;
    browser.click("#dag-zoom-in").await;
    let zoomed = browser
        .eval("return document.getElementById('dag-block').dataset.scale;")
        .await;
    assert_ne!(scale, zoomed, "the buttons still zoom");
    let fits = browser.run(NO_SIDEWAYS, json!(["#dag-block"])).await;
    assert_eq!(
        fits[0], true,
        "the pinched DAG makes no page scroll sideways: {fits}"
    );
    browser.close_without_console_errors().await;
}
