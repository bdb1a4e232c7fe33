//! End to end: agents that can say no, through the real `plue run` binary and a scripted
//! Messages API (`testkit::claude`):
//! - a reviewer WITHOUT `bash` (`result="verdict"`, tools `read_file` only) rejects in round
//!   1 through the `finish` tool, which fails its step so `loop_to` goes back to the coder;
//!   the coder's round-2 prompt reads the rejection's reason; the reviewer's wrong `finish`
//!   shape goes back to it as a tool error, it corrects it and approves in round 2; the
//!   verdict's fields are outputs later steps read;
//! - a reply cut at `max_tokens` fails its step, saying so.

#[allow(dead_code)] // each test binary uses part of the support module
mod support;

use std::process::Output;

use serde_json::{json, Value};
use support::Sandbox;
use testkit::claude::{FakeClaude, Turn};

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The tool names a request offered.
fn offered(request: &testkit::claude::Recorded) -> Vec<String> {
    request.body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn first_prompt(request: &testkit::claude::Recorded) -> String {
    request.body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

const REVIEW_LOOP: &str = r#"def workflow():
    return Plan(name="verdicts", triggers=[Trigger.manual()], steps=[
        Step.llm("code", prompt="CODER: write hello.txt. Last review: [{{ steps.review.outputs.reason }}]",
                 tools=["read_file", "write_file"], max_turns=4),
        Step.llm("review", prompt="REVIEWER: review hello.txt", result="verdict",
                 tools=["read_file"], depends_on=["code"], loop_to="code", max_loops=2),
        Step.bash("ship", 'echo "shipped after {{ steps.review.outputs.verdict }}: {{ steps.review.outputs.reason }}"',
                  depends_on=["review"]),
    ])
"#;

#[test]
fn a_reviewer_without_bash_rejects_then_approves_and_the_loop_follows_its_verdict() {
    let server = FakeClaude::start(vec![
        // Round 1: the coder writes v1, the reviewer rejects.
        Turn::new()
            .tool_use(
                "toolu_c1",
                "write_file",
                &json!({"path": "hello.txt", "content": "v1\n"}),
            )
            .reply(),
        Turn::text(&["wrote v1"]).reply(),
        Turn::new()
            .tool_use(
                "toolu_r1",
                "finish",
                &json!({"verdict": "reject", "reason": "hello.txt must say v2"}),
            )
            .reply(),
        // Round 2: the coder writes v2; the reviewer's first finish is the wrong shape.
        Turn::new()
            .tool_use(
                "toolu_c2",
                "write_file",
                &json!({"path": "hello.txt", "content": "v2\n"}),
            )
            .reply(),
        Turn::text(&["wrote v2"]).reply(),
        Turn::new()
            .tool_use("toolu_r2", "finish", &json!({"verdict": "LGTM"}))
            .reply(),
        Turn::new()
            .tool_use(
                "toolu_r3",
                "finish",
                &json!({"verdict": "approve", "reason": "says v2"}),
            )
            .reply(),
    ]);
    let sandbox = Sandbox::new("verdicts");
    sandbox.write("w.plue.py", REVIEW_LOOP);
    let output = sandbox.plue_run_llm(
        server.url(),
        &[
            "w.plue.py",
            "--runners",
            "1",
            "--summary-json",
            "summary.json",
        ],
    );
    let text = printed(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("shipped after approve: says v2"),
        "the verdict's fields are outputs: {text}"
    );
    assert!(
        text.contains("verdict \"reject\": hello.txt must say v2"),
        "round 1's rejection is the review's failure reason: {text}"
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(sandbox.path("summary.json")).unwrap())
            .unwrap();
    let review = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "review")
        .unwrap();
    assert_eq!(
        (&review["status"], &review["iteration"]),
        (&json!("succeeded"), &json!(2)),
        "{summary}"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 7, "{requests:#?}");
    let reviews: Vec<_> = requests
        .iter()
        .filter(|r| first_prompt(r).starts_with("REVIEWER"))
        .collect();
    assert_eq!(reviews.len(), 3);
    for review in &reviews {
        assert_eq!(
            offered(review),
            ["read_file", "finish"],
            "no bash for the reviewer"
        );
    }
    let correction = reviews[2].tool_results();
    assert_eq!(correction[0]["is_error"], true, "{correction:?}");
    assert!(
        correction[0]["content"]
            .as_str()
            .unwrap()
            .contains("\"LGTM\" is not one of"),
        "{correction:?}"
    );
    let coder_prompts: Vec<String> = requests
        .iter()
        .map(first_prompt)
        .filter(|p| p.starts_with("CODER"))
        .collect();
    assert!(coder_prompts[0].ends_with("Last review: []"), "{coder_prompts:?}");
    assert!(
        coder_prompts[2].ends_with("Last review: [hello.txt must say v2]"),
        "{coder_prompts:?}"
    );
}

#[test]
fn a_reply_cut_at_max_tokens_fails_the_step_saying_so() {
    let server = FakeClaude::start(vec![Turn::text(&["The summary is"])
        .stop_reason("max_tokens")
        .reply()]);
    let sandbox = Sandbox::new("cut");
    sandbox.write(
        "w.plue.py",
        r#"def workflow():
    return Plan(name="cut", triggers=[Trigger.manual()], steps=[
        Step.llm("summarise", prompt="Summarise.", tools=[]),
    ])
"#,
    );
    let output = sandbox.plue_run_llm(server.url(), &["w.plue.py", "--runners", "1"]);
    let text = printed(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("the model's reply was cut at max_tokens (8192) before it ended"),
        "{text}"
    );
}
