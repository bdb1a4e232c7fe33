//! The run page's DAG in a real browser (headless Chromium over WebDriver), as a person
//! watching a big run sees it:
//! - a 60-step fan-out (`prepare → shard-0…59 → join`) opens with its root, its join and
//!   the one group node "shard — 60 steps" in the first view, each node saying its status
//!   in an icon and a word; clicking the group lists its 60 steps;
//! - zooming in and scrolling the page, then watching the 60 shards finish through live
//!   refreshes: the drawing stays where the user put it (same nodes, same place, same
//!   zoom, the group still open) while the counts and statuses change in place; dragging
//!   the graph moves it;
//! - a waiting approval's node links to the approval panel on the same page;
//! - a 992-step plan draws a bounded number of SVG elements (nodes ≤ 120, every element of
//!   the drawing ≤ 400); its page load and live refresh times are printed (bench notes,
//!   not asserted).
//!
//! Screenshots go to `$PLUE_SCREENSHOT_DIR` (default `$TMPDIR/plue-team`) as
//! `dashboard-dag-*.png`. Without Chromium and chromedriver the tests say so and pass,
//! unless `PLUE_REQUIRE_BROWSER=1`.

use crate::support;
use crate::webdriver;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::{wait_final, wait_succeeded, Sandbox, ADMIN_TOKEN};
use crate::webdriver::Browser;
use serde_json::{json, Value};

/// The most nodes and SVG elements a drawing may have (`web/dag`'s bound and what it
/// draws per node and edge).
const MAX_NODES: i64 = 120;
const MAX_SVG_ELEMENTS: i64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_step_fan_out_stays_readable_and_still_while_it_runs() {
    webdriver::browser_test(300, fan_out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_step_plan_draws_a_bounded_number_of_elements() {
    webdriver::browser_test(240, thousand).await;
}

/// Whether the element `css` selects lies wholly inside the DAG's box, and the box starts
/// on the first screen.
const IN_FIRST_VIEW: &str =
    "const wrap = document.querySelector('#dag-block .dag-wrap.zoomable'); \
     if (!wrap) return null; const box = wrap.getBoundingClientRect(); \
     const e = document.querySelector(arguments[0]); if (!e) return null; \
     const r = e.getBoundingClientRect(); \
     return r.width > 0 && r.left >= box.left && r.right <= box.right && r.top >= box.top \
     && r.bottom <= box.bottom && box.top < window.innerHeight;";

async fn fan_out(chromium: PathBuf, driver: PathBuf) {
    let sandbox = Sandbox::new("dashboard-dag");
    let go = sandbox.shared("go");
    let go_path = go.to_str().expect("a UTF-8 path");
    let workflow = sandbox.write(
        "ws/fan.plue.py",
        &format!(
            "def workflow():\n    \
             shards = [Step.bash('shard-%d' % i, 'while [ ! -s {go_path} ]; do sleep 0.05; done', \
             depends_on=['prepare']) for i in range(60)]\n    \
             return Plan(name='fan', triggers=[Trigger.manual()], \
             steps=[Step.bash('prepare', 'echo ready')] + shards + \
             [Step.bash('join', 'echo joined', depends_on=['shard-%d' % i for i in range(60)])])\n"
        ),
    );
    let (engine, http, run_id) = sandbox.serve_and_run(&["--runners", "4"], &workflow).await;
    let browser = Browser::admin_on_run(&sandbox, (&chromium, &driver), &engine.url, run_id).await;

    // The first view: root, group and join, each inside the graph's box; the group counts
    // its running shards by icon once some run.
    let name = browser
        .wait(
            Duration::from_secs(30),
            "the DAG with shards running",
            "const g = document.querySelector('#dag g.node.group'); \
             return g && document.querySelector('#dag-block .dag-wrap.zoomable') \
             && g.querySelector('text.state').textContent.includes('\u{25F7}') \
             ? g.querySelector('text.name').textContent : null;",
        )
        .await;
    assert_eq!(name, "shard \u{2014} 60 steps");
    for node in [
        "#dag a.node[data-step=\"prepare\"]",
        "#dag g.node.group",
        "#dag a.node[data-step=\"join\"]",
    ] {
        let seen = browser.run(IN_FIRST_VIEW, json!([node])).await;
        assert_eq!(seen, true, "{node} is in the first view");
    }
    let drawn = browser
        .eval(
            "return [document.querySelectorAll('#dag .node').length, \
             document.querySelector('#dag a.node[data-step=\"prepare\"] text.state').textContent, \
             document.querySelector('#dag a.node[data-step=\"join\"] text.state').textContent, \
             document.querySelector('#dag g.node.group title').textContent];",
        )
        .await;
    assert_eq!(drawn[0], 3, "{drawn}");
    assert_eq!(drawn[1], "\u{2713} succeeded", "icon and word: {drawn}");
    assert_eq!(drawn[2], "\u{25CB} pending", "icon and word: {drawn}");
    assert!(
        drawn[3].as_str().unwrap().contains("running"),
        "the group's counts in words: {drawn}"
    );
    browser.shot("dashboard-dag-fan-out.png").await;

    // The group opens on a click and lists its 60 steps with their statuses.
    browser.click("#dag g.node.group").await;
    let listed = browser
        .wait(
            Duration::from_secs(5),
            "the group's steps listed",
            "const p = document.getElementById('dag-group-0'); \
             return p && !p.hidden && p.getBoundingClientRect().height > 0 ? \
             [p.querySelectorAll('li').length, \
              document.querySelector('#dag g.node.group').getAttribute('aria-expanded'), \
              p.querySelector('li[data-member=\"shard-7\"] a').getAttribute('href'), \
              p.querySelectorAll('li .badge').length] : null;",
        )
        .await;
    assert_eq!(
        listed,
        json!([60, "true", format!("/runs/{run_id}/steps/shard-7"), 60])
    );
    browser.shot("dashboard-dag-group-open.png").await;

    // Zoom in twice, drag the graph a little, scroll the page: where the user put things.
    browser.click("#dag-zoom-in").await;
    browser.click("#dag-zoom-in").await;
    let moved = browser
        .eval("const wrap = document.querySelector('#dag-block .dag-wrap'); \
             const node = () => document.querySelector('#dag a.node[data-step=\"prepare\"]').getBoundingClientRect(); \
             const before = node(); const b = wrap.getBoundingClientRect(); \
             const at = (type, x, y) => wrap.dispatchEvent(new PointerEvent(type, \
               {bubbles: true, pointerId: 7, button: 0, clientX: b.left + x, clientY: b.top + y})); \
             at('pointerdown', 20, 20); at('pointermove', 40, 30); at('pointermove', 60, 40); at('pointerup', 60, 40); \
             const after = node(); return [Math.round(after.left - before.left), Math.round(after.top - before.top)];")
        .await;
    assert_eq!(moved, json!([40, 20]), "dragging moves the graph");
    let viewport = "const r = document.querySelector('#dag a.node[data-step=\"prepare\"]').getBoundingClientRect(); \
         return [document.getElementById('dag-view').getAttribute('transform'), \
         Math.round(r.left), Math.round(r.top), Math.round(window.scrollY), \
         document.getElementById('dag-block').dataset.scale];";
    let before = browser
        .eval(&format!(
            "window.scrollTo(0, 150); window.keptGroup = document.querySelector('#dag g.node.group'); {viewport}"
        ))
        .await;
    assert_eq!(before[4], "1.563", "two zoom steps from 100%: {before}");
    assert_eq!(before[3], 150, "the page scrolled: {before}");

    // The shards finish; the open page follows through its live refreshes.
    std::fs::write(&go, "go\n").expect("write the go file");
    wait_succeeded(&http, &engine.url, run_id, Duration::from_secs(180)).await;
    browser
        .wait(
            Duration::from_secs(15),
            "the open page to show every shard and the join succeeded",
            "const g = document.querySelector('#dag g.node.group text.state'); \
             const j = document.querySelector('#dag a.node[data-step=\"join\"]'); \
             return g && g.textContent === '60 \u{2713} succeeded' && j.dataset.status === 'succeeded' \
             && document.querySelector('#dag a.node[data-step=\"join\"] text.state').textContent === '\u{2713} succeeded';",
        )
        .await;
    let after = browser.eval(viewport).await;
    assert_eq!(after, before, "the viewport and the page's scroll stayed");
    let kept = browser
        .eval(
            "const p = document.getElementById('dag-group-0'); \
             return [window.keptGroup === document.querySelector('#dag g.node.group'), \
             !p.hidden, p.querySelectorAll('li .badge.succeeded').length, \
             document.querySelector('#dag g.node.group').getAttribute('class')];",
        )
        .await;
    assert_eq!(
        kept,
        json!([true, true, 60, "node group succeeded"]),
        "the same node, updated in place, its list still open"
    );
    browser.shot("dashboard-dag-fan-out-done.png").await;

    // Fit shows the whole graph in the box.
    browser.click("#dag-fit").await;
    for node in [
        "#dag a.node[data-step=\"prepare\"]",
        "#dag a.node[data-step=\"join\"]",
    ] {
        let seen = browser
            .run(
                "window.scrollTo(0, 0); const wrap = document.querySelector('#dag-block .dag-wrap'); \
                 const box = wrap.getBoundingClientRect(); \
                 const r = document.querySelector(arguments[0]).getBoundingClientRect(); \
                 return r.top >= box.top && r.bottom <= box.bottom && r.left >= box.left && r.right <= box.right;",
                json!([node]),
            )
            .await;
        assert_eq!(seen, true, "{node} after Fit");
    }

    // A phone in dark mode: the graph fits the screen, root and join in the first view.
    browser.emulate(390, 844, true).await;
    browser.goto(&format!("{}/runs/{run_id}", engine.url)).await;
    let fits = browser
        .wait(
            Duration::from_secs(10),
            "the run page on a phone",
            "return document.querySelector('#dag-block .dag-wrap.zoomable') ? \
             [document.documentElement.scrollWidth <= window.innerWidth, \
             document.querySelector('#dag g.node.group text.state').textContent] : null;",
        )
        .await;
    assert_eq!(
        fits,
        json!([true, "60 \u{2713} succeeded"]),
        "no sideways scrolling"
    );
    for node in [
        "#dag a.node[data-step=\"prepare\"]",
        "#dag a.node[data-step=\"join\"]",
    ] {
        let seen = browser.run(IN_FIRST_VIEW, json!([node])).await;
        assert_eq!(seen, true, "{node} is in the phone's first view");
    }
    browser.shot("dashboard-dag-phone-dark.png").await;

    browser.close_without_console_errors().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_approval_node_opens_its_panel() {
    webdriver::browser_test(120, approval).await;
}

/// `build → ship (approval) → deploy`: the waiting approval's node is a link to the
/// approval panel on the same page.
async fn approval(chromium: PathBuf, driver: PathBuf) {
    let sandbox = Sandbox::new("dashboard-dag-approval");
    let workflow = sandbox.write_workflow(
        "gate",
        &[
            "Step.bash('build', 'echo built')",
            "Step.approval('ship', message='Ship it?', depends_on=['build'])",
            "Step.bash('deploy', 'echo deployed', depends_on=['ship'])",
        ],
    );
    let (engine, http, run_id) = sandbox.serve_and_run(&["--runners", "1"], &workflow).await;
    let browser = Browser::admin_on_run(&sandbox, (&chromium, &driver), &engine.url, run_id).await;
    let node = browser
        .wait(
            Duration::from_secs(30),
            "the approval node waiting",
            "const n = document.querySelector('#dag a.node[data-step=\"ship\"]'); \
             return n && n.dataset.status === 'waiting' && document.getElementById('approval-ship') \
             ? [n.getAttribute('href'), n.querySelector('text.state').textContent] : null;",
        )
        .await;
    assert_eq!(node, json!(["#approval-ship", "\u{2016} waiting"]));
    browser.click("#dag a.node[data-step=\"ship\"]").await;
    let landed = browser
        .wait(
            Duration::from_secs(5),
            "the approval panel in view",
            "const p = document.getElementById('approval-ship'); const r = p.getBoundingClientRect(); \
             return location.hash === '#approval-ship' && r.top >= 0 && r.top < window.innerHeight \
             ? location.pathname : null;",
        )
        .await;
    assert_eq!(landed, format!("/runs/{run_id}"), "the same page");
    let cancelled = http
        .post(format!("{}/api/runs/{run_id}/cancel", engine.url))
        .send()
        .await
        .expect("cancel");
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    wait_final(&http, &engine.url, run_id, Duration::from_secs(30)).await;
    browser.close_without_console_errors().await;
}

/// `setup` (which waits) → 9 lanes of `build-L → test-L-0…107 → report-L` → `release`:
/// 992 steps.
const THOUSAND: &str = "def workflow():\n    \
    steps = [Step.bash('setup', 'while [ ! -s GO ]; do sleep 0.05; done')]\n    \
    for lane in range(9):\n        \
        steps.append(Step.bash('build-%d' % lane, 'true', depends_on=['setup']))\n        \
        tests = ['test-%d-%d' % (lane, j) for j in range(108)]\n        \
        steps += [Step.bash(t, 'true', depends_on=['build-%d' % lane]) for t in tests]\n        \
        steps.append(Step.bash('report-%d' % lane, 'true', depends_on=tests))\n    \
    steps.append(Step.bash('release', 'true', depends_on=['report-%d' % l for l in range(9)]))\n    \
    return Plan(name='thousand', triggers=[Trigger.manual()], steps=steps)\n";

async fn thousand(chromium: PathBuf, driver: PathBuf) {
    let sandbox = Sandbox::new("dashboard-dag-1000");
    let go = sandbox.shared("never");
    let workflow = sandbox.write(
        "ws/thousand.plue.py",
        &THOUSAND.replace("GO", go.to_str().expect("a UTF-8 path")),
    );
    let (engine, http, run_id) = sandbox.serve_and_run(&["--runners", "1"], &workflow).await;
    support::wait_for(Duration::from_secs(60), "the run's 992 steps", || async {
        let run = support::run_view(&http, &engine.url, run_id).await?;
        (run["steps"].as_array()?.len() == 992).then_some(())
    })
    .await;

    // The server's side: the page's HTML (a session cookie, as a browser sends it).
    let session = support::dashboard_session(&engine.url, ADMIN_TOKEN).await;
    let mut served = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let page = http
            .get(format!("{}/runs/{run_id}", engine.url))
            .header(reqwest::header::COOKIE, &session)
            .send()
            .await
            .expect("the run page");
        assert_eq!(page.status(), 200);
        let html = page.text().await.expect("HTML");
        served.push((started.elapsed(), html.len()));
    }
    served.sort();

    let browser = Browser::admin_on_run(&sandbox, (&chromium, &driver), &engine.url, run_id).await;
    let drawn = browser
        .wait(
            Duration::from_secs(20),
            "the 992-step DAG",
            "if (!document.querySelector('#dag-block .dag-wrap.zoomable')) return null; \
             const t = performance.getEntriesByType('navigation')[0]; \
             return [document.querySelectorAll('#dag .node').length, \
             document.querySelectorAll('#dag *').length, \
             document.querySelectorAll('#dag g.node.group').length, \
             Math.round(t.responseEnd - t.startTime), Math.round(t.domContentLoadedEventEnd - t.startTime), \
             Math.round(t.loadEventEnd - t.startTime)];",
        )
        .await;
    eprintln!(
        "bench note: a 992-step run page — served in {:?} (median of 5, {} bytes); in \
         Chromium: response end {} ms, DOMContentLoaded {} ms, load {} ms; {} nodes, {} SVG elements",
        served[2].0, served[2].1, drawn[3], drawn[4], drawn[5], drawn[0], drawn[1]
    );
    let nodes = drawn[0].as_i64().unwrap();
    let elements = drawn[1].as_i64().unwrap();
    assert!(nodes <= MAX_NODES, "{nodes} nodes drawn: {drawn}");
    assert!(
        elements <= MAX_SVG_ELEMENTS,
        "{elements} SVG elements: {drawn}"
    );
    assert_eq!(drawn[2], 9, "one group per lane's tests: {drawn}");
    let names = browser
        .eval("return Array.from(document.querySelectorAll('#dag g.node.group text.name')).map(t => t.textContent).sort();")
        .await;
    let expected: Vec<String> = (0..9)
        .map(|lane| format!("test-{lane} \u{2014} 108 steps"))
        .collect();
    assert_eq!(names, json!(expected));
    let root = browser
        .run(IN_FIRST_VIEW, json!(["#dag a.node[data-step=\"setup\"]"]))
        .await;
    assert_eq!(root, true, "the root is in the first view");
    browser.shot("dashboard-dag-1000.png").await;

    // A group lists its 108 steps.
    browser.click("#dag g.node.group").await;
    let listed = browser
        .wait(
            Duration::from_secs(5),
            "a lane's tests listed",
            "const p = document.querySelector('.dag-members:not([hidden])'); \
             return p ? p.querySelectorAll('li').length : null;",
        )
        .await;
    assert_eq!(listed, 108);

    let cancelled = http
        .post(format!("{}/api/runs/{run_id}/cancel", engine.url))
        .send()
        .await
        .expect("cancel");
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    let run = wait_final(&http, &engine.url, run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    // The open page follows the cancel: one live refresh of the 992-step section.
    let refresh = browser
        .wait(
            Duration::from_secs(15),
            "the open page to show the run cancelled",
            "const s = document.getElementById('run-status'); \
             if (!s || !s.textContent.includes('cancelled')) return null; \
             const last = n => { const e = performance.getEntriesByName(n); \
               return e.length ? Math.round(e[e.length - 1].duration) : -1; }; \
             return [last('plue-live-fetch'), last('plue-live-parse'), last('plue-live-keep'), \
               last('plue-live-swap'), document.querySelectorAll('#dag .node').length];",
        )
        .await;
    eprintln!(
        "bench note: a live refresh of the 992-step run page in Chromium: fetch {} ms, parse {} ms, \
         swap {} ms of which {} ms updating the kept DAG in place",
        refresh[0], refresh[1], refresh[3], refresh[2]
    );
    assert_eq!(refresh[4], drawn[0], "the same drawing after the refresh");
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let _: Value = browser.eval("return null;").await;
    browser.close().await;
}
