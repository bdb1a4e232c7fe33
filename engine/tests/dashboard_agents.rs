//! An `llm` step's page as a conversation, in a real browser (headless Chromium over
//! WebDriver), the step run by `plue serve` against `testkit`'s local Messages server:
//! - its turns in order, each with the model's text, its timing, its tokens and cost;
//! - each tool call folded (`<details>` closed) with a one-line summary, opening to the
//!   call's input and its result — an error result marked as one;
//! - the conversation's totals (tokens, cost, turns, tool calls), its budget
//!   (`max_turns`), the files the model wrote;
//! - what the model wrote is text: HTML in its answer or in a tool's input never becomes
//!   markup (no element, no script runs: the attacker's `document.title` stays put);
//! - the raw log is still there below it;
//! - a reviewing step (`result="verdict"`) shows its kind and, first, its verdict and
//!   reason.
//!
//! Screenshots go to `$PLUE_SCREENSHOT_DIR` (default `$TMPDIR/plue-team`) as
//! `dashboard-agents-*.png`. Without Chromium and chromedriver the test says so and
//! passes, unless `PLUE_REQUIRE_BROWSER=1`.

use crate::webdriver;
use std::time::Duration;

use crate::support::{wait_succeeded, Sandbox};
use crate::webdriver::Browser;
use serde_json::json;
use testkit::claude::{FakeClaude, Turn};

const HOSTILE_TEXT: &str = "Writing it. <img src=x onerror=\"document.title='pwned'\">";
const HOSTILE_ANSWER: &str = "Done <script>document.title='pwned'</script>";
const VERDICT_REASON: &str = "The summary keeps all <i>three</i> lines.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_step_reads_as_a_conversation() {
    webdriver::browser_test(240, conversation).await;
}

async fn conversation(chromium: std::path::PathBuf, driver: std::path::PathBuf) {
    let sandbox = Sandbox::new("dashboard-agents");
    sandbox.write("ws/notes.txt", "one\ntwo\nthree\n");
    let workflow = sandbox.write(
        "ws/agent.plue.py",
        "def workflow():\n    return Plan(name='agent', triggers=[Trigger.manual()], steps=[\n        \
         Step.llm('write', prompt='Summarise notes.txt into summary.txt', \
         tools=['read_file', 'write_file'], max_turns=3),\n        \
         Step.llm('review', prompt='Review summary.txt', result='verdict', \
         depends_on=['write']),\n    ])\n",
    );
    let claude = FakeClaude::start(vec![
        Turn::new()
            .text_block(&[HOSTILE_TEXT])
            .tool_use(
                "toolu_01",
                "write_file",
                &json!({"path": "summary.txt", "content": "<b>three</b> lines\n"}),
            )
            .tool_use("toolu_02", "read_file", &json!({"path": "missing.txt"}))
            .usage(120, 30)
            .reply(),
        Turn::text(&[HOSTILE_ANSWER]).usage(200, 15).reply(),
        // `review` hands in its verdict.
        Turn::new()
            .tool_use(
                "toolu_03",
                "finish",
                &json!({"verdict": "approve", "reason": VERDICT_REASON}),
            )
            .usage(80, 20)
            .reply(),
    ]);
    // The engine hands its own ANTHROPIC_BASE_URL to its runners.
    let base_url = claude.url();
    let key = "ANTHROPIC_API_KEY=sk-ant-dashboard-agents-key";
    let (engine, http, run_id) = sandbox
        .serve_and_run_with_env(
            &["--runners", "1", "--secret", key],
            &[("ANTHROPIC_BASE_URL", base_url)],
            &workflow,
        )
        .await;
    wait_succeeded(&http, &engine.url, run_id, Duration::from_secs(90)).await;

    let write_page = format!("/runs/{run_id}/steps/write");
    let browser = Browser::admin_on(&sandbox, (&chromium, &driver), &engine.url, &write_page).await;
    let turns = browser
        .wait(
            Duration::from_secs(10),
            "the conversation's turns",
            "const t = document.querySelectorAll('#conversation li.turn'); \
             return t.length ? Array.from(t).map(e => ({ \
               turn: e.dataset.turn, \
               text: Array.from(e.querySelectorAll('.text.model')).map(x => x.textContent), \
               tokens: parseInt(e.querySelector('.turn-usage').dataset.tokens, 10), \
               usage: e.querySelector('.turn-usage').textContent, \
               timing: e.querySelector('.turn-head .muted').textContent, \
               tools: Array.from(e.querySelectorAll('details.tool-call')).map(d => ({ \
                 name: d.dataset.tool, open: d.open, error: d.classList.contains('error'), \
                 summary: d.querySelector('summary').textContent.trim(), \
                 shown: d.querySelector('.tool-input').checkVisibility() })) \
             })) : null;",
        )
        .await;
    let turns = turns.as_array().expect("turns");
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert_eq!(turns[0]["turn"], "1");
    assert_eq!(
        turns[0]["text"],
        json!([HOSTILE_TEXT]),
        "the model's text, as text"
    );
    assert_eq!(turns[1]["text"], json!([HOSTILE_ANSWER]));
    // Tokens per turn: what the server reported (input + output; no cache in this script).
    assert_eq!(turns[0]["tokens"], 150);
    assert_eq!(turns[1]["tokens"], 215);
    for turn in turns {
        let usage = turn["usage"].as_str().unwrap();
        assert!(
            usage.contains("tokens") && usage.contains('$'),
            "tokens and cost per turn: {usage}"
        );
        assert!(
            turn["timing"].as_str().unwrap().contains("answered in"),
            "{turn}"
        );
    }
    // Tool calls folded, summarised by their path; the failing read marked as an error.
    let tools = turns[0]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 2, "{tools:?}");
    assert_eq!(tools[0]["name"], "write_file");
    assert_eq!(tools[0]["open"], false, "folded");
    assert_eq!(tools[0]["shown"], false, "its input hidden until opened");
    assert!(
        tools[0]["summary"]
            .as_str()
            .unwrap()
            .contains("summary.txt"),
        "{tools:?}"
    );
    assert_eq!(tools[0]["error"], false);
    assert_eq!(tools[1]["name"], "read_file");
    assert_eq!(
        tools[1]["error"], true,
        "a failed call is marked: {tools:?}"
    );

    // Opening a call shows its input and its result.
    browser
        .click("details.tool-call[data-tool=\"write_file\"] summary")
        .await;
    let opened = browser
        .wait(
            Duration::from_secs(5),
            "the opened tool call",
            "const d = document.querySelector('details.tool-call[data-tool=\"write_file\"]'); \
             return d.open ? [d.querySelector('.tool-input').textContent, \
               d.querySelector('.tool-result').textContent] : null;",
        )
        .await;
    let input = opened[0].as_str().unwrap();
    assert!(
        input.contains("\"path\": \"summary.txt\"") && input.contains("<b>three</b> lines"),
        "the call's input, as text: {input}"
    );
    assert!(
        !opened[1].as_str().unwrap().is_empty(),
        "the call's result: {opened}"
    );

    // Totals, budget, files written.
    let totals = browser
        .eval("return [parseInt(document.getElementById('total-tokens').dataset.tokens, 10), \
             document.getElementById('total-cost').textContent, \
             document.getElementById('total-turns').textContent, \
             document.getElementById('total-tool-calls').textContent, \
             document.getElementById('conversation-budget').textContent.replace(/\\s+/g, ' ').trim(), \
             Array.from(document.querySelectorAll('#conversation-diff li')).map(l => l.textContent), \
             document.getElementById('conversation-prompt').textContent];")
        .await;
    assert_eq!(totals[0], 365, "the total is the turns' sum: {totals}");
    // claude-sonnet-4-5 at $3 / $15 per MTok: 320 × 3 + 45 × 15 = 1,635 micro-dollars.
    assert_eq!(totals[1], "$0.001635", "{totals}");
    assert_eq!(totals[2], "2");
    assert_eq!(totals[3], "2");
    assert!(
        totals[4].as_str().unwrap().contains("2 of 3 turns"),
        "the budget: {totals}"
    );
    assert_eq!(totals[5], json!(["summary.txt"]));
    assert!(totals[6].as_str().unwrap().contains("Summarise notes.txt"));

    // The attacker's markup stayed text: no element of it exists, no script of it ran.
    let hostile = browser
        .eval("return [document.title, document.querySelectorAll('#conversation img, #conversation script, #conversation b').length];")
        .await;
    assert!(!hostile[0].as_str().unwrap().contains("pwned"), "{hostile}");
    assert_eq!(hostile[1], 0, "{hostile}");
    // The raw log is still there, under the conversation.
    browser
        .wait(
            Duration::from_secs(10),
            "the log below the conversation",
            "return document.querySelectorAll('#lines .line').length > 0;",
        )
        .await;
    browser.shot("dashboard-agents-conversation.png").await;
    // On a phone, in the dark: nothing scrolls sideways.
    browser.assert_fits_a_dark_phone("conversation").await;
    browser
        .shot("dashboard-agents-conversation-phone-dark.png")
        .await;
    // The reviewing step: its kind and its verdict first, with the reason as text.
    browser.emulate(1280, 900, false).await;
    browser
        .goto(&format!("{}/runs/{run_id}/steps/review", engine.url))
        .await;
    let verdict = browser
        .wait(
            Duration::from_secs(10),
            "the review's verdict",
            "const v = document.getElementById('verdict'); \
             const r = document.getElementById('conversation-result'); \
             return v ? [document.getElementById('step-kind').textContent, \
               r.querySelector('h3').textContent.replace(/\\s+/g, ' ').trim(), \
               document.getElementById('verdict-reason').textContent, \
               r.compareDocumentPosition(document.querySelector('li.turn')) \
                 === Node.DOCUMENT_POSITION_FOLLOWING, \
               r.querySelectorAll('i').length] : null;",
        )
        .await;
    assert_eq!(
        verdict,
        json!(["llm", "Verdict: ✓ approve", VERDICT_REASON, true, 0]),
        "kind, verdict, reason as text, before the turns"
    );
    browser.shot("dashboard-agents-verdict.png").await;
    browser.close_without_console_errors().await;
}
