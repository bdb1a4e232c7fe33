//! Time and progress in a real browser (headless Chromium over WebDriver), as a person
//! watching a run sees them:
//! - every time shown is a `<time datetime="…">` whose title becomes the reader's local
//!   time (the runs list, the run page, the step page), relative text beside it;
//! - a running run's and a running step's duration tick while nothing else changes;
//! - the runs list and the run page say how far the run got (`n/m` steps finished);
//! - the timeline (`/runs/{id}/timeline`) draws a bar per attempt — a retried step two —
//!   each with its queued, claimed and running stretches, queueing visible when more
//!   steps are ready than there are runners.
//!
//! Screenshots go to `$PLUE_SCREENSHOT_DIR` (default `$TMPDIR/plue-team`) as
//! `dashboard-time-*.png`. Without Chromium and chromedriver the test says so and passes,
//! unless `PLUE_REQUIRE_BROWSER=1`.

use crate::webdriver;
use std::time::Duration;

use crate::support::{wait_succeeded, Sandbox};
use crate::webdriver::Browser;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_tick_progress_counts_and_the_timeline_shows_every_attempt() {
    webdriver::browser_test(240, watch).await;
}

/// Every `<time>` of the page, as `[datetime, title, text]`; `null` when there is none.
const TIMES: &str = "const t = Array.from(document.querySelectorAll('time')); \
     return t.length && t.every(e => e.hasAttribute('data-local')) ? t.map(e => [e.getAttribute('datetime'), e.getAttribute('title'), \
     e.textContent, e.hasAttribute('data-local')]) : null;";

/// Checks that each time carries an RFC 3339 `datetime`, a relative text and (once
/// `time.js` ran) a local title.
fn assert_times(page: &str, times: &Value) {
    let times = times
        .as_array()
        .unwrap_or_else(|| panic!("{page}: no <time>"));
    for time in times {
        let datetime = time[0].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(datetime).is_ok(),
            "{page}: <time datetime={datetime:?}> is not RFC 3339: {time}"
        );
        let text = time[2].as_str().unwrap_or_default();
        assert!(
            text == "just now" || text.ends_with(" ago") || text.starts_with("in "),
            "{page}: relative text {text:?}"
        );
        assert_eq!(
            time[3], true,
            "{page}: time.js gave it a local title: {time}"
        );
        assert!(
            !time[1].as_str().unwrap_or_default().is_empty(),
            "{page}: {time}"
        );
    }
}

async fn watch(chromium: std::path::PathBuf, driver: std::path::PathBuf) {
    let sandbox = Sandbox::new("dashboard-time");
    let go = sandbox.path("go");
    let go = go.to_str().unwrap();
    // Three steps ready at once for two runners: one of them waits in the queue.
    let workflow = sandbox.write(
        "ws/time.plue.py",
        &format!(
            "def workflow():\n    return Plan(name='timed', triggers=[Trigger.manual()], steps=[\n        \
             Step.bash('slow', 'while [ ! -s {go} ]; do sleep 0.05; done; echo slow done'),\n        \
             Step.bash('quick', 'sleep 1; echo quick'),\n        \
             Step.bash('flaky', 'sleep 0.5; if [ \"$PLUE_ATTEMPT\" = 1 ]; then exit 7; fi', \
             retries=1, backoff=0),\n        \
             Step.bash('after', 'echo after', depends_on=['slow', 'quick', 'flaky']),\n    ])\n"
        ),
    );
    let (engine, http, run_id) = sandbox.serve_and_run(&["--runners", "2"], &workflow).await;
    let browser = Browser::admin_on(&sandbox, (&chromium, &driver), &engine.url, "/").await;

    // The runs list: the run's progress, its creation as a <time>, its duration ticking.
    let row = format!("tr[data-run=\"{run_id}\"]");
    let progress = browser
        .wait(
            Duration::from_secs(15),
            "the run's progress in the list",
            &format!(
                "const p = document.querySelector('{row} .progress'); \
                 return p && document.querySelector('{row} .elapsed:not([data-until])') \
                 ? p.textContent : null;"
            ),
        )
        .await;
    let progress = progress.as_str().unwrap();
    assert!(
        progress.ends_with("/4") && progress.len() == 3,
        "n/m progress in the list: {progress}"
    );
    let times = browser.wait(Duration::from_secs(5), "times", TIMES).await;
    assert_times("runs list", &times);
    let first = elapsed(&browser, &format!("{row} .elapsed")).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let later = elapsed(&browser, &format!("{row} .elapsed")).await;
    assert!(
        later > first,
        "the list's elapsed time ticks: {first} then {later}"
    );
    browser.shot("dashboard-time-runs.png").await;

    // The run page: progress, the run's and the running step's durations ticking.
    browser.goto(&format!("{}/runs/{run_id}", engine.url)).await;
    let progress = browser
        .wait(
            Duration::from_secs(10),
            "the run page's progress",
            "const p = document.getElementById('run-progress'); \
             return p && document.querySelector('tr[data-step=\"slow\"] .elapsed') \
             ? p.textContent : null;",
        )
        .await;
    assert!(
        progress.as_str().unwrap().ends_with("/4"),
        "n/m on the run page: {progress}"
    );
    let times = browser.wait(Duration::from_secs(5), "times", TIMES).await;
    assert_times("run page", &times);
    let run_first = elapsed(&browser, "#run-duration .elapsed").await;
    let step_first = elapsed(&browser, "tr[data-step=\"slow\"] .elapsed").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let run_later = elapsed(&browser, "#run-duration .elapsed").await;
    let step_later = elapsed(&browser, "tr[data-step=\"slow\"] .elapsed").await;
    assert!(run_later > run_first, "{run_first} then {run_later}");
    assert!(step_later > step_first, "{step_first} then {step_later}");
    browser.shot("dashboard-time-run.png").await;

    // The step page of the running step: its start as a <time>, its duration ticking.
    browser
        .goto(&format!("{}/runs/{run_id}/steps/slow", engine.url))
        .await;
    let times = browser.wait(Duration::from_secs(5), "times", TIMES).await;
    assert_times("step page", &times);
    let step_page = elapsed(&browser, ".log-head .elapsed").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(elapsed(&browser, ".log-head .elapsed").await > step_page);

    // The timeline while the run runs: the running step's bar is open.
    browser
        .goto(&format!("{}/runs/{run_id}/timeline", engine.url))
        .await;
    browser
        .wait(
            Duration::from_secs(10),
            "the open bar of the running step",
            "return !!document.querySelector('g.attempt[data-attempt=\"slow:1\"] rect.running.open');",
        )
        .await;
    std::fs::write(sandbox.path("go"), "go").unwrap();
    wait_succeeded(&http, &engine.url, run_id, Duration::from_secs(60)).await;

    // The finished timeline: every step a row, a bar per attempt (flaky's two), each bar
    // with its queued, claimed and running stretches inside the lane.
    let bars = browser
        .wait(
            Duration::from_secs(15),
            "the final timeline",
            "const p = document.getElementById('timeline-progress'); \
             if (!p || p.textContent !== '4/4') return null; \
             return Array.from(document.querySelectorAll('g.attempt')).map(g => [ \
               g.dataset.attempt, \
               Array.from(g.querySelectorAll('rect')).map(r => [r.dataset.phase, \
                 parseFloat(r.getAttribute('x')), parseFloat(r.getAttribute('width')), \
                 r.getBoundingClientRect().width > 0]), \
               g.querySelector('title').textContent]);",
        )
        .await;
    let bars = bars.as_array().expect("bars");
    let names: Vec<&str> = bars.iter().map(|b| b[0].as_str().unwrap()).collect();
    for attempt in ["slow:1", "quick:1", "flaky:1", "flaky:2", "after:1"] {
        assert!(names.contains(&attempt), "a bar for {attempt}: {names:?}");
    }
    assert_eq!(bars.len(), 5, "one bar per attempt: {names:?}");
    for bar in bars {
        let rects = bar[1].as_array().unwrap();
        let phases: Vec<&str> = rects.iter().map(|r| r[0].as_str().unwrap()).collect();
        assert!(
            phases.contains(&"queued")
                && phases.contains(&"claimed")
                && phases.contains(&"running"),
            "{}: queued, claimed and running: {phases:?}",
            bar[0]
        );
        for rect in rects {
            let (x, width) = (rect[1].as_f64().unwrap(), rect[2].as_f64().unwrap());
            assert!(x >= 0.0 && width > 0.0 && x + width <= 1000.01, "{bar}");
            assert_eq!(rect[3], true, "drawn with a width on screen: {bar}");
        }
        let title = bar[2].as_str().unwrap();
        assert!(title.contains("queued") && title.contains("ran"), "{title}");
    }
    // Three steps were ready for two runners: the timeline says how long one waited.
    let longest = browser
        .eval("return document.querySelector('.timeline-head .sub').textContent;")
        .await;
    assert!(
        longest
            .as_str()
            .unwrap()
            .contains("longest wait for a runner"),
        "{longest}"
    );
    let flaky = browser
        .eval("return Array.from(document.querySelectorAll('g.attempt[data-attempt^=\"flaky:\"]')).map(g => g.dataset.status);")
        .await;
    assert_eq!(flaky, json!(["failed", "succeeded"]));
    browser.shot("dashboard-time-timeline.png").await;
    // On a phone, in the dark: nothing scrolls sideways.
    browser.assert_fits_a_dark_phone("timeline").await;
    browser.shot("dashboard-time-timeline-phone-dark.png").await;
    browser.close_without_console_errors().await;
}

/// The milliseconds an elapsed span shows (`850 ms`, `12.3 s`, `3m 04s`), read back.
async fn elapsed(browser: &Browser, css: &str) -> f64 {
    let text = browser
        .run(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .await;
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("no {css} on the page"));
    parse_duration(text).unwrap_or_else(|| panic!("{css}: {text:?} is not a duration"))
}

fn parse_duration(text: &str) -> Option<f64> {
    if let Some(ms) = text.strip_suffix(" ms") {
        return ms.parse().ok();
    }
    if let Some(s) = text.strip_suffix(" s") {
        return s.parse::<f64>().ok().map(|s| s * 1000.0);
    }
    if let Some((m, s)) = text.split_once("m ") {
        let s = s.strip_suffix('s')?;
        return Some(m.parse::<f64>().ok()? * 60_000.0 + s.parse::<f64>().ok()? * 1000.0);
    }
    let (h, m) = text.split_once("h ")?;
    let m = m.strip_suffix('m')?;
    Some(h.parse::<f64>().ok()? * 3_600_000.0 + m.parse::<f64>().ok()? * 60_000.0)
}
