//! A run page that explains a failure, in headless Chromium against `plue serve`:
//! - the failed step is named in a sentence with its exit code and its command's last
//!   line, with the last 20 lines of its log under it;
//! - the steps' `::error` / `::warning` lines are annotations on the page: file, line,
//!   title and message (`%0A` a newline), a hostile message shown as text, an annotation
//!   whose title names another step still shown under the step that printed it, and a
//!   step printing 60 of them kept to 50 with the rest counted;
//! - the steps' outputs are listed, on the run page and on the step's page;
//! - a step's page lists the run's steps beside its log (icon, name, duration), the
//!   current one marked, each a link;
//! - "Re-run failed steps" starts a run in which the succeeded steps are carried over.
//!
//! Screenshots go to `$PLUE_SCREENSHOT_DIR` (default `$TMPDIR/plue-team`) as
//! `dashboard-failure-*.png`. Without Chromium and chromedriver the test says so and
//! passes, unless `PLUE_REQUIRE_BROWSER=1`.

use crate::webdriver;
use std::time::Duration;

use crate::support::{wait_final, wait_succeeded, Sandbox};
use crate::webdriver::Browser;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_says_why_and_reruns_its_failed_steps() {
    webdriver::browser_test(240, explain).await;
}

/// `test` prints 30 lines and annotations, then fails with exit code 3 until `flag`
/// exists.
fn workflow(flag: &str) -> String {
    let test = format!(
        "for i in $(seq 1 30); do echo line-$i; done\n\
         echo '::error file=src/lib.rs,line=3,col=7,title=Assertion::left != right%0Aat line 3'\n\
         echo '::error title=build::spoofed for another step'\n\
         echo '::warning::<img src=x onerror=\"document.title=1\">'\n\
         [ -s {flag} ] || exit 3"
    );
    format!(
        "def workflow():\n    return Plan(name='ci', triggers=[Trigger.manual()], steps=[\n        \
         Step.bash('build', 'echo version=1.2.3 >> $PLUE_OUTPUT; echo \"::notice file=Cargo.toml::built\"'),\n        \
         Step.bash('spam', 'for i in $(seq 1 60); do echo \"::warning::w$i\"; done'),\n        \
         Step.bash('test', {test:?}, depends_on=['build']),\n        \
         Step.bash('package', 'echo packaged', depends_on=['test']),\n        \
         Step.bash('big', 'seq 1 100000'),\n    ])\n"
    )
}

async fn explain(chromium: std::path::PathBuf, driver: std::path::PathBuf) {
    let sandbox = Sandbox::new("dashboard-failure");
    let flag = sandbox.shared("flag");
    let workflow = sandbox.write(
        "ws/ci.plue.py",
        &workflow(flag.to_str().expect("a UTF-8 path")),
    );
    let (engine, http, run) = sandbox.serve_and_run(&["--runners", "1"], &workflow).await;
    let url = engine.url.as_str();
    let view = wait_final(&http, url, run, Duration::from_secs(60)).await;
    assert_eq!(view["status"], "failed", "{view}");
    let browser = Browser::admin_on_run(&sandbox, (&chromium, &driver), url, run).await;

    // The failure, in a sentence, with the log's last 20 lines.
    let sentence = browser
        .wait(
            Duration::from_secs(10),
            "the failure's sentence",
            "const e = document.querySelector('[data-failure=\"test\"] .failure-text'); \
             return e ? e.textContent : null;",
        )
        .await;
    let sentence = sentence.as_str().unwrap();
    assert!(
        sentence.starts_with("test failed: its command (last line [ -s ")
            && sentence.ends_with("|| exit 3) exited with code 3."),
        "{sentence}"
    );
    // The step and its command's last line are shown as code.
    let code = browser
        .eval("return Array.from(document.querySelectorAll('[data-failure=\"test\"] .failure-text code')).map(c => c.textContent);")
        .await;
    assert_eq!(code[0], "test", "{code}");
    assert!(code[1].as_str().unwrap().ends_with("|| exit 3"), "{code}");
    let tail = browser
        .eval("return Array.from(document.querySelectorAll('[data-tail=\"test\"] span')).map(s => s.textContent);")
        .await;
    let tail: Vec<&str> = tail
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(tail.len(), 20, "{tail:?}");
    assert_eq!(tail[0], "line-14", "{tail:?}");
    assert!(tail.contains(&"line-30"), "{tail:?}");

    // Annotations: decoded, as text, under the step that printed them, capped.
    let annotations = browser
        .eval("return Array.from(document.querySelectorAll('#annotations li.annotation')).map(li => ({\
               key: li.dataset.annotation, level: li.dataset.level, \
               file: (li.querySelector('.annotation-file') || {}).textContent || null, \
               title: (li.querySelector('.annotation-title') || {}).textContent || null, \
               message: li.querySelector('.annotation-message').textContent}));")
        .await;
    let list = annotations.as_array().unwrap();
    let of = |step: &str| -> Vec<&serde_json::Value> {
        list.iter()
            .filter(|a| a["key"].as_str().unwrap().starts_with(&format!("{step}:")))
            .collect()
    };
    assert_eq!(of("build").len(), 1, "{annotations}");
    assert_eq!(of("build")[0]["level"], "notice");
    assert_eq!(of("spam").len(), 50, "{annotations}");
    let test = of("test");
    assert_eq!(test.len(), 3, "{annotations}");
    assert_eq!(test[0]["file"], "src/lib.rs:3:7");
    assert_eq!(test[0]["title"], "Assertion");
    assert_eq!(test[0]["message"], "left != right\nat line 3");
    // Its title names `build`, but it is test's: nothing of it is under build.
    assert_eq!(test[1]["title"], "build");
    assert_eq!(test[2]["level"], "warning");
    assert_eq!(
        test[2]["message"],
        "<img src=x onerror=\"document.title=1\">"
    );
    let injected = browser
        .eval("return [document.querySelectorAll('#annotations img').length, document.title];")
        .await;
    assert_eq!(injected[0], 0, "the message became markup");
    assert_ne!(injected[1], "1", "the message ran");
    let dropped = browser
        .eval("const e = document.querySelector('[data-dropped=\"spam:1\"]'); return e && e.textContent;")
        .await;
    assert!(
        dropped
            .as_str()
            .unwrap_or("")
            .contains("10 more annotations"),
        "{dropped}"
    );
    // The steps' outputs.
    let output = browser
        .eval("const e = document.querySelector('[data-output=\"build.version\"] .output-value'); return e && e.textContent;")
        .await;
    assert_eq!(output, "1.2.3");
    browser.shot("dashboard-failure-run.png").await;
    browser
        .eval("document.querySelector('#annotations').scrollIntoView();")
        .await;
    browser.shot("dashboard-failure-annotations.png").await;

    // A step's page: the steps beside the log, the current one marked, its outputs.
    browser.goto(&format!("{url}/runs/{run}/steps/build")).await;
    let listed = browser
        .wait(
            Duration::from_secs(10),
            "the step list",
            "const l = document.querySelectorAll('#step-list li'); \
             return l.length ? Array.from(l).map(li => [li.dataset.stepLink, \
               li.querySelector('.icon').textContent, li.querySelector('.sr-only').textContent, \
               !!li.querySelector('a[aria-current=page]')]) : null;",
        )
        .await;
    assert_eq!(
        listed,
        json!([
            ["build", "✓", "succeeded", true],
            ["spam", "✓", "succeeded", false],
            ["test", "✗", "failed", false],
            ["package", "⤼", "skipped", false],
            ["big", "✓", "succeeded", false],
        ])
    );
    let beside = browser
        .eval(
            "const l = document.querySelector('#step-list').getBoundingClientRect(); \
             const g = document.querySelector('#log').getBoundingClientRect(); \
             return l.right <= g.left && l.top < g.bottom;",
        )
        .await;
    assert_eq!(beside, true, "the step list is not beside the log");
    let output = browser
        .eval("const e = document.querySelector('#step-outputs [data-output=\"version\"] .output-value'); return e && e.textContent;")
        .await;
    assert_eq!(output, "1.2.3");
    browser.shot("dashboard-failure-step.png").await;
    // Beside the list, a 100,000-line log still loads and scrolls to its end.
    browser
        .goto(&format!("{url}/runs/{run}/steps/big#L100000"))
        .await;
    let last = browser
        .wait(
            Duration::from_secs(20),
            "line 100000 in view",
            "const l = document.getElementById('L100000'); return l ? l.querySelector('.tx').textContent : null;",
        )
        .await;
    assert_eq!(last, "100000");
    browser.click("[data-step-link=\"test\"] a").await;
    browser
        .wait(
            Duration::from_secs(10),
            "the test step's page",
            "return location.pathname.endsWith('/steps/test') \
             && document.querySelector('[data-step-link=\"test\"] a[aria-current=page]') ? true : null;",
        )
        .await;

    // Fixed: "Re-run failed steps" carries build and spam over and runs test again.
    std::fs::write(&flag, "fixed").unwrap();
    browser.goto(&format!("{url}/runs/{run}")).await;
    browser.click("#rerun-failed").await;
    let rerun = browser
        .wait_for_run_page(Duration::from_secs(10), "the re-run's page", Some(run))
        .await;
    wait_succeeded(&http, url, rerun, Duration::from_secs(60)).await;
    let reason = browser
        .wait(
            Duration::from_secs(10),
            "the carried step's reason",
            "const e = document.querySelector('tr[data-step=\"build\"] td.reason'); \
             return e && e.textContent.trim() ? e.textContent.trim() : null;",
        )
        .await;
    assert_eq!(reason, format!("carried over from run #{run}"));
    // The carried step's page says where its log is.
    browser
        .goto(&format!("{url}/runs/{rerun}/steps/build"))
        .await;
    let from = browser
        .wait(
            Duration::from_secs(10),
            "the carried step's origin",
            "const a = document.querySelector('#carried-from a'); return a && a.getAttribute('href');",
        )
        .await;
    assert_eq!(from, format!("/runs/{run}/steps/build"));
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    browser.close().await;
}
