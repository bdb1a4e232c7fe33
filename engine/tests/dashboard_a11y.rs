//! The dashboard's accessibility and polish, measured as a person (or a checker) would:
//! - every status badge — the real ones on a run's pages and one of each status the
//!   engine has — has text at WCAG AA contrast (≥ 4.5:1) against its own background, from
//!   the browser's computed styles, in the light and the dark theme; each carries its
//!   glyph beside the word, and pending and skipped never look alike;
//! - so does text on a tinted background: each DAG node's step id and state (one node of
//!   each status) on its node's fill, a log's search hits, a diff's added and removed
//!   lines, the approval and group panels;
//! - at a phone's width (375 px) no page scrolls sideways: wide tables scroll inside their
//!   own box;
//! - every page starts with a skip link to `main`, and names its landmarks;
//! - an unknown URL is an HTML 404 page with the header's sign-in corner (JSON under
//!   `/api/`); an error page keeps the corner for a signed-in user too;
//! - a fresh install's runs list says how to start a first run; a skipped step's page
//!   says why it was skipped instead of an empty log box.
//!
//! The ignored `screenshots_for_the_docs` saves the main pages, light and dark, desktop
//! and phone, into `docs/src/images/` (`cargo test -p engine --test dashboard_a11y --
//! --ignored`). Without Chromium and chromedriver the browser tests say so and pass,
//! unless `PLUE_REQUIRE_BROWSER=1`.
//!
//! One file past ~600 lines: the contrast walk and the docs' screenshots drive the same
//! pages through the same engine set-up (`engine_with_a_mixed_run`) and colour helpers; a
//! split would copy both.

use crate::support;
use crate::webdriver;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{
    client, dashboard_session, free_port, start_run, wait_final, wait_succeeded, Sandbox,
    ADMIN_TOKEN,
};
use crate::webdriver::{bounded, Browser};
use serde_json::{json, Value};
use testkit::claude::FakeClaude;

/// Every status a run, step or attempt can have.
const STATUSES: &[&str] = &[
    "queued",
    "pending",
    "claimed",
    "running",
    "waiting",
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
];

/// WCAG 2 AA for normal text.
const AA: f64 = 4.5;

/// A run with a step of each final kind: `ok` succeeds, `bad` fails, `after` (needing
/// `bad`) is skipped.
const MIXED: &str = "def workflow():\n    \
    return Plan(name='mixed', triggers=[Trigger.manual()], steps=[\n        \
    Step.bash('ok', 'echo fine'),\n        \
    Step.bash('bad', 'echo broken; exit 3'),\n        \
    Step.bash('after', 'echo never', depends_on=['bad']),\n    ])\n";

/// An engine with the mixed run ended; its URL and the run's id.
async fn engine_with_a_mixed_run(sandbox: &Sandbox) -> (support::Engine, i64) {
    let workflow = sandbox.write("ws/mixed.plue.py", MIXED);
    let (engine, http, run_id) = sandbox.serve_and_run(&["--runners", "1"], &workflow).await;
    wait_final(&http, &engine.url, run_id, Duration::from_secs(60)).await;
    (engine, run_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_url_is_an_html_page_with_the_sign_in_corner() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("a11y-404");
    let engine = sandbox.serve_engine(&["--runners", "1"]).await;
    let anonymous = reqwest::Client::new();
    // `GET path` without a token, with the session `cookie` when given.
    let get = |path: &str, cookie: Option<&str>| {
        let request = anonymous.get(format!("{}{path}", engine.url));
        let request = match cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };
    for path in ["/no/such/page", "/runs/12/nothing/here", "/repos/a/b/c/d"] {
        let answer = get(path, None).await;
        assert_eq!(answer.status(), 404, "{path}");
        let kind = answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(kind.starts_with("text/html"), "{path}: {kind}");
        assert!(
            answer.headers().contains_key("content-security-policy"),
            "{path}: the page's CSP"
        );
        let page = answer.text().await.unwrap();
        assert!(page.contains("<h1>404 · Not Found</h1>"), "{page}");
        let next = path.replace('/', "%2F");
        assert!(
            page.contains(&format!("href=\"/login?next={next}\">Sign in</a>")),
            "the sign-in corner returns here: {page}"
        );
        assert!(page.contains("class=\"skip-link\""), "{page}");
    }
    // The machine interfaces keep their JSON.
    for path in [
        "/api/no-such-endpoint",
        "/internal/nothing",
        "/webhooks/nowhere",
    ] {
        let answer = get(path, None).await;
        assert_eq!(answer.status(), 404, "{path}");
        let body: Value = answer.json().await.expect("a JSON 404");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    // Signed in, an error page (an unknown URL, a missing run) shows who and Sign out.
    let cookie = dashboard_session(&engine.url, ADMIN_TOKEN).await;
    for path in ["/no/such/page", "/runs/987654"] {
        let answer = get(path, Some(&cookie)).await;
        assert_eq!(answer.status(), 404, "{path}");
        let page = answer.text().await.unwrap();
        assert!(
            page.contains("Sign out") && !page.contains(">Sign in</a>"),
            "{path}: {page}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_states_say_what_to_do() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("a11y-empty");
    let engine = sandbox.serve_engine(&["--runners", "1"]).await;
    let cookie = dashboard_session(&engine.url, ADMIN_TOKEN).await;
    let get = |path: String| {
        let cookie = cookie.clone();
        async move { support::dashboard_page(&path, &cookie).await }
    };
    let fresh = get(format!("{}/", engine.url)).await;
    assert!(fresh.contains("id=\"first-run\""), "{fresh}");
    assert!(fresh.contains("No runs yet"), "{fresh}");
    assert!(fresh.contains("plue repo add"), "{fresh}");
    assert!(!fresh.contains("No runs match"), "{fresh}");
    let filtered = get(format!("{}/?branch=nowhere", engine.url)).await;
    assert!(
        filtered.contains("No runs match these filters"),
        "{filtered}"
    );
    assert!(!filtered.contains("id=\"first-run\""), "{filtered}");

    let workflow = sandbox.write("ws/mixed.plue.py", MIXED);
    let run_id = start_run(&client(), &engine.url, &workflow, &sandbox.path("ws")).await;
    wait_final(&client(), &engine.url, run_id, Duration::from_secs(60)).await;
    let skipped = get(format!("{}/runs/{run_id}/steps/after", engine.url)).await;
    assert!(skipped.contains("This step was skipped"), "{skipped}");
    assert!(
        skipped.contains("bad"),
        "the reason names the failed need: {skipped}"
    );
    assert!(
        !skipped.contains("id=\"viewport\""),
        "no empty log box: {skipped}"
    );
    let ran = get(format!("{}/runs/{run_id}/steps/ok", engine.url)).await;
    assert!(ran.contains("id=\"viewport\""), "{ran}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badges_are_readable_and_phones_never_scroll_sideways() {
    webdriver::browser_test(240, walk).await;
}

/// Every badge on the page (after one of each status is added to it): its class, text
/// colour, the first opaque background behind its text, border style and glyph.
const BADGES: &str = "\
    const main = document.querySelector('main'); \
    const probe = document.createElement('p'); probe.id = 'probe'; \
    for (const s of arguments[0]) probe.appendChild(window.PlueStatus.badge(s)); \
    main.prepend(probe); \
    const solid = (e) => { for (; e; e = e.parentElement) { \
      const c = getComputedStyle(e).backgroundColor; \
      if (c !== 'transparent' && !/rgba\\(.*, 0\\)$/.test(c)) return c; } \
      return getComputedStyle(document.documentElement).backgroundColor; }; \
    const out = Array.from(document.querySelectorAll('.badge')).map(b => { \
      const style = getComputedStyle(b); \
      const glyph = b.querySelector('[aria-hidden=\"true\"]'); \
      return {class: b.className, text: b.textContent.trim(), color: style.color, \
              background: solid(b), border: style.borderStyle, \
              glyph: glyph ? glyph.textContent : null, probe: !!b.closest('#probe')}; }); \
    probe.remove(); return out;";

/// Text on tinted backgrounds: every DAG node's step id and state (SVG `fill` against its
/// node's rect `fill`, with a probe node of each status), and probes of the other tinted
/// blocks (search hits in a log, a diff's added and removed lines, the approval panel, a
/// group's member list) plus the real ones on the page (the step list's current entry, a
/// failure's last lines). Each: what, its text, and the text and background colours as
/// painted — composited on a canvas from the page's root down, so `color-mix()` and
/// translucent layers count as the browser draws them.
const TINTED: &str = "\
    const statuses = arguments[0]; \
    const canvas = document.createElement('canvas'); canvas.width = canvas.height = 1; \
    const ctx = canvas.getContext('2d', {willReadFrequently: true}); \
    const pixel = () => Array.from(ctx.getImageData(0, 0, 1, 1).data.slice(0, 3)); \
    const paint = (layers) => { ctx.globalCompositeOperation = 'source-over'; \
      ctx.fillStyle = '#ffffff'; ctx.fillRect(0, 0, 1, 1); \
      for (const c of layers) { ctx.fillStyle = '#010203'; ctx.fillStyle = c; \
        if (ctx.fillStyle === '#010203') throw new Error('a colour the canvas cannot read: ' + c); \
        ctx.fillRect(0, 0, 1, 1); } return pixel(); }; \
    const backgrounds = (e) => { const chain = []; \
      for (let p = e; p; p = p.parentElement) chain.unshift(getComputedStyle(p).backgroundColor); \
      return chain; }; \
    const probe = document.createElement('div'); probe.id = 'tint-probe'; \
    probe.innerHTML = '<section class=\"approval\"><p class=\"why-not\">why not</p></section>' + \
      '<section class=\"dag-members\"><h3><span class=\"counts\">3 succeeded</span></h3></section>' + \
      '<div class=\"conversation\"><pre class=\"diff\"><span class=\"add\">+added</span>' + \
      '<span class=\"del\">-removed</span><span class=\"hunk\">@@ -1 +1 @@</span>' + \
      '<span class=\"meta\">+++ b/x</span><span class=\"ctx\"> same</span></pre></div>' + \
      '<div class=\"viewport\">' + ['hit', 'current', 'target', 'err hit', 'err current', \
        'tool tool_use current', 'tool tool_result current', 'usage current', 'marker current'] \
        .map(c => '<div class=\"line ' + c + '\"><a class=\"ln\" href=\"#L1\">1</a>' + \
          '<span class=\"ts\">12:00:00.000</span><span class=\"tx\">line ' + c + \
          ' <span class=\"f4\">blue</span> <span class=\"a-b f2\">green</span></span></div>') \
        .join('') + '</div>'; \
    document.querySelector('main').prepend(probe); \
    const view = document.getElementById('dag-view'); \
    const model = view && view.querySelector('a.node'); \
    const clones = []; \
    if (model) for (const s of statuses) { const c = model.cloneNode(true); \
      c.setAttribute('class', 'node ' + s); c.removeAttribute('data-k'); \
      c.querySelector('text.state').textContent = s; view.appendChild(c); clones.push(c); } \
    const out = []; \
    for (const t of document.querySelectorAll('svg.dag .node text')) { \
      const rect = t.parentElement.querySelector(':scope > rect:not(.stack)'); \
      const bg = paint(backgrounds(t.closest('svg').parentElement) \
        .concat([getComputedStyle(rect).fill])); \
      out.push({what: 'DAG ' + t.parentElement.getAttribute('class') + ' ' + t.getAttribute('class'), \
        text: t.textContent, background: bg, color: paint([`rgb(${bg.join(',')})`, getComputedStyle(t).fill])}); } \
    const html = '#tint-probe .why-not, #tint-probe .counts, #tint-probe .diff span, \
      #tint-probe .line, #tint-probe .line .ln, #tint-probe .line .ts, #tint-probe .line .tx, \
      #tint-probe .line .tx span, .step-list li.current a, .failure-tail, .failure-tail .stderr'; \
    for (const e of document.querySelectorAll(html)) { \
      const bg = paint(backgrounds(e)); \
      const where = e.closest('.line') ? e.closest('.line').className + ' ' : ''; \
      out.push({what: where + e.tagName.toLowerCase() + '.' + e.className, \
        text: e.textContent.slice(0, 40), background: bg, \
        color: paint([`rgb(${bg.join(',')})`, getComputedStyle(e).color])}); } \
    probe.remove(); for (const c of clones) c.remove(); \
    return out;";

/// Whether the page scrolls sideways: its width, the window's, and the widest offender.
const OVERFLOW: &str = "\
    const doc = document.documentElement; \
    let worst = null; \
    for (const e of document.body.querySelectorAll('*')) { \
      const r = e.getBoundingClientRect(); \
      if (r.right > doc.clientWidth + 1 && (!worst || r.right > worst[1])) { \
        let scrolled = false; \
        for (let p = e.parentElement; p; p = p.parentElement) { \
          const o = getComputedStyle(p).overflowX; \
          if (o === 'auto' || o === 'scroll' || o === 'hidden') { scrolled = true; break; } } \
        if (!scrolled) worst = [e.tagName + '.' + e.className, r.right]; } } \
    return [doc.scrollWidth, doc.clientWidth, worst];";

async fn walk(chromium: PathBuf, driver: PathBuf) {
    let sandbox = Sandbox::new("a11y-browser");
    let (engine, run_id) = engine_with_a_mixed_run(&sandbox).await;
    let browser = Browser::admin_on(&sandbox, (&chromium, &driver), &engine.url, "/").await;
    browser
        .wait(
            Duration::from_secs(10),
            "signed in",
            "return document.getElementById('user') ? true : null;",
        )
        .await;
    let run_page = format!("{}/runs/{run_id}", engine.url);
    let (mut measured, mut tinted) = (0, 0);
    for dark in [false, true] {
        let theme = if dark { "dark" } else { "light" };
        browser.emulate(1280, 900, dark).await;
        for page in [
            run_page.clone(),
            format!("{run_page}/steps/bad"),
            format!("{}/", engine.url),
        ] {
            browser.goto(&page).await;
            wait_loaded(&browser).await;
            let badges = browser.run(BADGES, json!([STATUSES])).await;
            let badges = badges.as_array().expect("badges");
            assert!(badges.len() >= STATUSES.len(), "{badges:?}");
            for badge in badges {
                let ratio = contrast(
                    &rgb(badge["color"].as_str().unwrap()),
                    &rgb(badge["background"].as_str().unwrap()),
                );
                assert!(
                    ratio >= AA,
                    "{theme} {page}: '{}' ({}) at {ratio:.2}:1 ({} on {})",
                    badge["text"],
                    badge["class"],
                    badge["color"],
                    badge["background"]
                );
                let glyph = badge["glyph"].as_str().unwrap_or_default();
                assert!(!glyph.trim().is_empty(), "{theme}: no glyph in {badge}");
                measured += 1;
            }
            // Pending (not started yet) and skipped (never will) never look alike.
            let look = |status: &str| -> (String, String, String) {
                let b = badges
                    .iter()
                    .find(|b| b["probe"] == true && b["class"] == format!("badge {status}"))
                    .unwrap_or_else(|| panic!("no probe badge {status} in {badges:?}"));
                (
                    b["background"].to_string(),
                    b["border"].to_string(),
                    b["glyph"].to_string(),
                )
            };
            let (pending, skipped) = (look("pending"), look("skipped"));
            assert_ne!(pending.0, skipped.0, "{theme}: same background");
            assert_ne!(pending.1, skipped.1, "{theme}: same border");
            assert_ne!(pending.2, skipped.2, "{theme}: same glyph");
            tinted += measure_tinted(&browser, theme, &page).await;
        }
        browser.goto(&run_page).await;
        wait_loaded(&browser).await;
        browser
            .shot(&format!("dashboard-a11y-run-{theme}.png"))
            .await;
    }
    eprintln!("{measured} badges and {tinted} texts on tints measured at >= {AA}:1");

    // Phones: no page scrolls sideways, in either theme.
    for dark in [false, true] {
        let theme = if dark { "dark" } else { "light" };
        browser.emulate(375, 800, dark).await;
        for path in [
            "/".to_string(),
            format!("/runs/{run_id}"),
            format!("/runs/{run_id}/steps/bad"),
            format!("/runs/{run_id}/steps/after"),
            "/repos".to_string(),
            "/runners".to_string(),
            "/no/such/page".to_string(),
            "/login".to_string(),
        ] {
            browser.goto(&format!("{}{path}", engine.url)).await;
            wait_loaded(&browser).await;
            let found = browser.eval(OVERFLOW).await;
            let (page, window) = (found[0].as_i64().unwrap(), found[1].as_i64().unwrap());
            assert!(
                page <= window && found[2].is_null(),
                "{theme} {path} scrolls sideways at 375 px: page {page} px in {window} px, \
                 widest {}",
                found[2]
            );
        }
        browser
            .shot(&format!("dashboard-a11y-phone-run-{theme}.png"))
            .await;
    }
    // The measure finds a page that does scroll sideways (a wide block in `main`).
    let wide = browser
        .eval(&format!(
            "const d = document.createElement('div'); d.className = 'probe'; \
             d.textContent = 'x'; d.style.width = '900px'; \
             document.querySelector('main').appendChild(d); {} d.remove(); return found;",
            OVERFLOW.replace("return ", "const found = ")
        ))
        .await;
    assert!(
        wide[0].as_i64() > wide[1].as_i64() && !wide[2].is_null(),
        "the overflow measure missed a 900 px block: {wide}"
    );

    // A skip link first, to `main`; named landmarks.
    browser.emulate(1280, 900, false).await;
    browser.goto(&format!("{}/", engine.url)).await;
    wait_loaded(&browser).await;
    let before = browser
        .eval(
            "const first = document.querySelector('body a, body button, body input'); \
             return [first.className, first.getBoundingClientRect().bottom <= 0];",
        )
        .await;
    assert_eq!(
        before,
        json!(["skip-link", true]),
        "the skip link: the first control, out of sight"
    );
    // Tab from the page's start: the skip link takes the focus and shows.
    browser.type_into("body", "\u{E004}").await;
    let skip = browser
        .eval(
            "const a = document.activeElement; const r = a.getBoundingClientRect(); \
             const target = document.getElementById((a.getAttribute('href') || '#').slice(1)); \
             return [a.className, a.getAttribute('href'), a.textContent, \
                     r.top >= 0 && r.bottom <= innerHeight, !!target && target.tagName];",
        )
        .await;
    assert_eq!(
        skip,
        json!(["skip-link", "#main", "Skip to content", true, "MAIN"]),
        "Tab first reaches the skip link, in view, to main"
    );
    let landmarks = browser
        .eval(
            "return ['header', 'nav', 'main'].map(t => { const e = document.querySelector(t); \
             return e && (e.getAttribute('aria-label') || '').length > 0; });",
        )
        .await;
    assert_eq!(landmarks, json!([true, true, true]), "named landmarks");
    // The 404 page's own status is logged; nothing else may be (a CSP violation would).
    let errors: Vec<String> = browser
        .console_errors()
        .await
        .into_iter()
        .filter(|e| !e.contains("/no/such/page - Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
}

/// Measures [`TINTED`] on the open page: every text at AA. Returns how many were measured;
/// on the run page, every node of the DAG (real and one probe of each status) counts.
async fn measure_tinted(browser: &Browser, theme: &str, page: &str) -> usize {
    let texts = browser.run(TINTED, json!([STATUSES])).await;
    let texts = texts.as_array().expect("tinted texts");
    let channels = |v: &Value| -> [f64; 3] {
        let c: Vec<f64> = v
            .as_array()
            .expect("a colour")
            .iter()
            .map(|x| x.as_f64().expect("a channel"))
            .collect();
        [c[0], c[1], c[2]]
    };
    let mut low = Vec::new();
    for text in texts {
        let ratio = contrast(&channels(&text["color"]), &channels(&text["background"]));
        if ratio < AA {
            low.push(format!(
                "{} '{}' at {ratio:.2}:1 ({} on {})",
                text["what"], text["text"], text["color"], text["background"]
            ));
        }
    }
    assert!(
        low.is_empty(),
        "{theme} {page}: under {AA}:1:\n{}",
        low.join("\n")
    );
    let nodes = texts
        .iter()
        .filter(|t| t["what"].as_str().is_some_and(|w| w.starts_with("DAG ")))
        .count();
    if !page.contains("/steps/") && page.contains("/runs/") {
        // 3 steps and a probe of each status, each with its id and its state.
        assert!(
            nodes >= 2 * (3 + STATUSES.len()),
            "{theme} {page}: {texts:?}"
        );
    }
    // 9 probe lines of 3 parts and 2 ANSI spans each, 5 diff lines, 2 panel texts.
    assert!(
        texts.len() - nodes >= 9 * 6 + 5 + 2,
        "{theme} {page}: {texts:?}"
    );
    texts.len()
}

/// Waits for the page's document to be complete.
async fn wait_loaded(browser: &Browser) {
    browser
        .wait(
            Duration::from_secs(10),
            "the page",
            "return document.readyState === 'complete' && window.PlueStatus ? true : null;",
        )
        .await;
}

/// `rgb(r, g, b)` or `rgba(r, g, b, a)` as three channels 0–255.
fn rgb(css: &str) -> [f64; 3] {
    let inner = css
        .trim()
        .trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')');
    let parts: Vec<f64> = inner
        .split(',')
        .map(|p| {
            p.trim()
                .parse()
                .unwrap_or_else(|_| panic!("a colour: {css}"))
        })
        .collect();
    assert!(parts.len() >= 3, "a colour: {css}");
    [parts[0], parts[1], parts[2]]
}

/// WCAG 2's contrast ratio of two sRGB colours.
fn contrast(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let luminance = |c: &[f64; 3]| {
        let lin = |v: f64| {
            let v = v / 255.0;
            if v <= 0.03928 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
    };
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

#[test]
fn contrast_is_measured_as_wcag_does() {
    let black = [0.0, 0.0, 0.0];
    let white = [255.0, 255.0, 255.0];
    assert!((contrast(&black, &white) - 21.0).abs() < 1e-9);
    assert!((contrast(&white, &white) - 1.0).abs() < 1e-9);
    // GitHub's old white-on-#afb8c1 "skipped" badge: the 2:1 the issue measured.
    let grey = rgb("rgb(175, 184, 193)");
    assert!(contrast(&white, &grey) < 2.1);
}

/// The docs' screenshots: a demo engine (a registered repository and a finished run with a
/// success, a failure and a skip), its main pages in light and dark, desktop and phone,
/// into `docs/src/images/`; then the tour's other pages — a run waiting for an approval
/// (its banner), a grouped 60-step DAG, that run's timeline, an `llm` review's
/// conversation with its verdict (the model is `testkit`'s scripted Messages server) and
/// a dispatch form with typed inputs — in light and dark on a desktop, light on a phone. Run by hand: `cargo test -p engine --test dashboard_a11y --
/// --ignored screenshots_for_the_docs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/src/images; run by hand when the dashboard's look changes"]
async fn screenshots_for_the_docs() {
    let (chromium, driver) = webdriver::browser().expect("Chromium and chromedriver");
    bounded(Duration::from_secs(480), docs_screenshots(chromium, driver)).await;
}

async fn docs_screenshots(chromium: PathBuf, driver: PathBuf) {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/images");
    std::fs::create_dir_all(&images).expect("docs/src/images");
    let sandbox = Sandbox::new("a11y-docs");
    let origin = sandbox.path("origin");
    sandbox.write("origin/.plue/ci.plue.py", DEMO);
    sandbox.write("origin/.plue/release.plue.py", RELEASE);
    sandbox.write("origin/.plue/shards.plue.py", SHARDS);
    sandbox.write("origin/.plue/review.plue.py", REVIEW);
    sandbox.write("origin/README.md", README);
    let ada = "GIT_AUTHOR_NAME=Ada GIT_AUTHOR_EMAIL=ada@example.com \
               GIT_COMMITTER_NAME=Ada GIT_COMMITTER_EMAIL=ada@example.com";
    let commit =
        format!("git init -q -b main . && git add -A && {ada} git commit -qm 'The demo workflow'");
    support::git_sh(&origin, &commit);
    let claude = FakeClaude::start(review_turns());
    let engine = sandbox
        .serve_with_env(
            "engine",
            free_port(),
            &[
                "--runners",
                "2",
                "--secret",
                "ANTHROPIC_API_KEY=sk-ant-docs-demo",
                "--secret-repos",
                "ANTHROPIC_API_KEY=acme/app",
            ],
            &[("ANTHROPIC_BASE_URL", claude.url())],
        )
        .await;
    let http = client();
    support::register_origin(&engine.url, &origin, "a-webhook-secret-of-the-demo").await;
    let run_id = support::dispatch_retrying(&http, &engine.url, "ci", json!({})).await;
    wait_final(&http, &engine.url, run_id, Duration::from_secs(120)).await;
    let inputs = json!({"target": "production", "version": "1.4.0"});
    let release = support::dispatch_retrying(&http, &engine.url, "release", inputs).await;
    let shards = support::dispatch_retrying(&http, &engine.url, "shards", json!({})).await;
    wait_final(&http, &engine.url, shards, Duration::from_secs(180)).await;
    let review = support::dispatch_retrying(&http, &engine.url, "review", json!({})).await;
    wait_succeeded(&http, &engine.url, review, Duration::from_secs(60)).await;
    support::wait_for(Duration::from_secs(30), "the release waiting", || async {
        let run = support::run_view(&http, &engine.url, release).await?;
        (run["status"] == "waiting").then_some(())
    })
    .await;

    let browser = Browser::admin_on(&sandbox, (&chromium, &driver), &engine.url, "/").await;
    let pages = [
        ("runs", "/".to_string()),
        ("run", format!("/runs/{run_id}")),
        ("step-log", format!("/runs/{run_id}/steps/test")),
        ("repos", "/repos/acme/app".to_string()),
    ];
    for (width, height, size) in [(1280, 800, "desktop"), (375, 760, "phone")] {
        for dark in [false, true] {
            let theme = if dark { "dark" } else { "light" };
            browser.emulate(width, height, dark).await;
            for (name, path) in &pages {
                browser.goto(&format!("{}{path}", engine.url)).await;
                wait_loaded(&browser).await;
                // Let the log page load its lines and the run page draw.
                tokio::time::sleep(Duration::from_millis(600)).await;
                browser
                    .screenshot(&images.join(format!("dashboard-{name}-{size}-{theme}.png")))
                    .await;
            }
        }
    }
    // The tour's other pages, each with what brings its subject into view.
    let tour = [
        ("approval", format!("/runs/{release}"), ""),
        ("dag", format!("/runs/{shards}"), OPEN_THE_GROUP),
        ("timeline", format!("/runs/{shards}/timeline"), ""),
        ("conversation", format!("/runs/{review}/steps/review"), ""),
        (
            "dispatch",
            "/repos/acme/app".to_string(),
            TO_THE_RELEASE_FORM,
        ),
    ];
    for (width, height, size, dark) in [
        (1280, 800, "desktop", false),
        (1280, 800, "desktop", true),
        (375, 760, "phone", false),
    ] {
        let theme = if dark { "dark" } else { "light" };
        browser.emulate(width, height, dark).await;
        for (name, path, show) in &tour {
            browser.goto(&format!("{}{path}", engine.url)).await;
            wait_loaded(&browser).await;
            tokio::time::sleep(Duration::from_millis(600)).await;
            if !show.is_empty() {
                let shown = browser.eval(show).await;
                assert_eq!(shown, true, "{name}: {show}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            browser
                .screenshot(&images.join(format!("dashboard-{name}-{size}-{theme}.png")))
                .await;
        }
    }
    browser.close().await;
}

/// Scrolls the run page to its DAG and opens the shards' group (its member list).
const OPEN_THE_GROUP: &str = "\
    const g = document.querySelector('#dag g.node.group'); if (!g) return false; \
    g.dispatchEvent(new MouseEvent('click', {bubbles: true})); \
    document.getElementById('dag-block').scrollIntoView(); \
    return true;";

/// Scrolls the repository page to the release workflow's dispatch form.
const TO_THE_RELEASE_FORM: &str = "\
    const f = document.querySelector('form[aria-label=\"Run release\"]'); if (!f) return false; \
    f.closest('.workflow').scrollIntoView(); return true;";

/// A release by hand with typed inputs (the dispatch form), held by an approval.
const RELEASE: &str = r#"
def workflow(ctx):
    i = ctx.inputs
    return Plan(name="release",
                triggers=[Trigger.manual(inputs={
                    "target": {"default": "staging", "options": ["staging", "production"]},
                    "version": {"required": True, "description": "the version to release"},
                    "dry_run": False,
                })],
                steps=[
                    Step.bash("build", "echo building %s" % i.get("version")),
                    Step.approval("ship", message="Ship %s to %s? The canary has been green for an hour." % (i.get("version"), i.get("target")), depends_on=["build"]),
                    Step.bash("deploy", "echo deploying", depends_on=["ship"]),
                ])
"#;

/// A 60-way fan-out: three shards fail, the report runs anyway.
const SHARDS: &str = r#"
def workflow(ctx):
    shards = [Step.bash("shard-%d" % i, "echo shard %d; exit %d" % (i, 1 if i in (7, 23, 41) else 0), depends_on=["prepare"]) for i in range(60)]
    return Plan(name="shards",
                triggers=[Trigger.manual()],
                steps=[Step.bash("prepare", "echo splitting the suite in 60")] + shards +
                      [Step.bash("report", "echo 57 of 60 passed", depends_on=["shard-%d" % i for i in range(60)], when="always")])
"#;

/// An `llm` review that hands in a verdict.
const REVIEW: &str = r#"
def workflow(ctx):
    return Plan(name="review",
                triggers=[Trigger.manual()],
                steps=[
                    Step.bash("test", "echo 42 passed"),
                    Step.llm("review", prompt="Review the change to README.md: is the new flag explained?",
                             tools=["read_file"], result="verdict", depends_on=["test"]),
                ])
"#;

const README: &str = "# app\n\n`--fast` skips the slow integration tests (about 4 minutes).\n";

/// The review's two turns: it reads the README, then approves.
fn review_turns() -> Vec<testkit::claude::Reply> {
    use testkit::claude::Turn;
    vec![
        Turn::new()
            .text_block(&["I'll read the README to see how the flag is described."])
            .tool_use("toolu_01", "read_file", &json!({"path": "README.md"}))
            .usage(1840, 62)
            .reply(),
        Turn::new()
            .text_block(&["The flag is documented with what it skips and what it saves."])
            .tool_use(
                "toolu_02",
                "finish",
                &json!({"verdict": "approve",
                        "reason": "README.md explains --fast: what it skips and how long it saves."}),
            )
            .usage(1985, 48)
            .reply(),
    ]
}

/// The docs' demo workflow: a build, tests that print coloured output, a lint that fails,
/// and a deploy skipped because the lint failed.
const DEMO: &str = r#"
def workflow(ctx):
    return Plan(name="ci",
                triggers=[Trigger.manual()],
                steps=[
                    Step.bash("build", "echo compiling 42 crates; sleep 1; echo done"),
                    Step.bash("test", "for i in $(seq 1 40); do printf '\\033[32mok\\033[0m test_%s\\n' $i; done", depends_on=["build"]),
                    Step.bash("lint", "echo 'src/main.rs:3:5: unused variable'; exit 1", depends_on=["build"]),
                    Step.bash("deploy", "echo shipping", depends_on=["test", "lint"]),
                ])
"#;
