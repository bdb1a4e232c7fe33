//! Unit tests of the conversation view: turns, costs, diffs, limits, and the model as
//! the attacker (its text never becomes markup).

use plue_types::transcript::ToolRun;
use serde_json::json;

use super::*;

fn transcript() -> Transcript {
    let tool = |id: &str, name: &str, input: Value, content: &str| ToolRun {
        id: id.into(),
        name: name.into(),
        input,
        content: content.into(),
        is_error: false,
        duration_ms: 12,
    };
    Transcript {
        version: 1,
        step: Value::Null,
        truncated: false,
        turns: vec![
            Turn {
                turn: 1,
                request: json!({"model": "claude-sonnet-4-5", "system": "Be brief."}),
                messages_added: vec![json!({"role": "user", "content": "Fix the bug."})],
                response: json!({
                    "content": [
                        {"type": "text", "text": "Looking <b>now</b>."},
                        {"type": "tool_use", "id": "t1", "name": "write_file",
                         "input": {"path": "src/a.rs", "content": "fn a() {}"}},
                    ],
                    "stop_reason": "tool_use",
                    "usage": {"input_tokens": 100, "output_tokens": 20,
                              "cache_creation_input_tokens": 5, "cache_read_input_tokens": 0},
                }),
                started_ms: 0,
                duration_ms: 900,
                replayed: false,
                tools: vec![tool(
                    "t1",
                    "write_file",
                    json!({"path": "src/a.rs", "content": "fn a() {}"}),
                    "wrote src/a.rs",
                )],
            },
            Turn {
                turn: 2,
                request: json!({"model": "claude-sonnet-4-5"}),
                messages_added: vec![
                    json!({"role": "assistant", "content": []}),
                    json!({"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "wrote src/a.rs"}
                    ]}),
                ],
                response: json!({
                    "content": [
                        {"type": "tool_use", "id": "t2", "name": "git_diff", "input": {}},
                    ],
                    "stop_reason": "tool_use",
                    "usage": {"input_tokens": 150, "output_tokens": 10},
                }),
                started_ms: 1000,
                duration_ms: 500,
                replayed: false,
                tools: vec![tool(
                    "t2",
                    "git_diff",
                    json!({}),
                    "diff --git a/src/a.rs b/src/a.rs\n--- a/src/a.rs\n+++ b/src/a.rs\n@@ -1 +1 @@\n-fn b() {}\n+fn a() {}\n",
                )],
            },
        ],
    }
}

#[test]
fn turns_carry_text_tool_calls_results_and_usage() {
    let view = build(&transcript(), &Prices::default());
    assert_eq!(view.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(view.system.as_deref(), Some("Be brief."));
    assert_eq!(view.prompt.as_deref(), Some("Fix the bug."));
    assert_eq!(view.turns.len(), 2);
    let first = &view.turns[0];
    assert!(first.user_text.is_empty(), "the prompt is shown once");
    assert_eq!(first.blocks[0].text.as_deref(), Some("Looking <b>now</b>."));
    let call = first.blocks[1].tool.as_ref().expect("a tool call");
    assert_eq!(call.name, "write_file");
    assert_eq!(call.gist, "src/a.rs");
    assert_eq!(call.result.as_deref(), Some("wrote src/a.rs"));
    assert_eq!(first.usage.tokens, 125);
    // $3 / $15 / $3.75 per MTok: 300 + 300 + 18.75 micro-dollars, rounded up.
    assert_eq!(first.cost_usd, Some(0.000619));
    assert_eq!(view.turns[1].cost_usd, Some(0.0006));
    assert_eq!(view.total.cost_usd, Some(0.001219));
    assert!(
        view.turns[1].user_text.is_empty(),
        "tool results are not user text"
    );
    assert_eq!(view.total.usage.input_tokens, 250);
    assert_eq!(view.total.usage.tokens, 285);
    assert_eq!(view.total.tool_calls, 2);
    assert_eq!(view.total.duration_ms, 1500);
    assert_eq!(view.files_written, vec!["src/a.rs".to_string()]);
    let diff = view.diff.expect("the git_diff result");
    assert_eq!(diff.source, "git_diff in turn 2");
    assert_eq!(diff.files, vec!["src/a.rs".to_string()]);
    let classes: Vec<&str> = diff.lines.iter().map(|l| l.class).collect();
    assert_eq!(classes, ["meta", "meta", "meta", "hunk", "del", "add"]);
}

#[test]
fn what_the_model_wrote_is_text_on_the_page() {
    // The attacker is the model (or a prompt injection steering it): HTML in its text,
    // in a tool's input and result, in a diff, in a file name.
    let hostile = "<img src=x onerror=alert(1)><script>alert(2)</script>";
    let mut transcript = transcript();
    transcript.turns[0].response["content"][0]["text"] = json!(hostile);
    transcript.turns[0].tools[0].content = hostile.into();
    transcript.turns[0].tools[0].input = json!({"path": hostile, "content": hostile});
    transcript.turns[0].response["content"][1]["input"] = json!({"path": hostile});
    transcript.turns[1].tools[0].content =
        format!("diff --git a/x b/x\n+++ b/{hostile}\n@@ -1 +1 @@\n+{hostile}\n");
    let mut view = build(&transcript, &Prices::default());
    view.system = Some(hostile.into());
    view.prompt = Some(hostile.into());
    let html = super::super::render::page(
        "log_conversation.html",
        &minijinja::context! { conversation => view, run => minijinja::context! { id => 1 } },
    )
    .expect("renders");
    assert!(html.contains("Turn 2"), "{html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    for markup in ["<img", "<script"] {
        assert!(!html.contains(markup), "{markup} reached the page: {html}");
    }
}

#[test]
fn a_proposed_pull_request_shows_its_diff() {
    let proposal = |kind: &str, payload: Value| ProposalView {
        id: 1,
        step_id: "write".into(),
        attempt_id: 1,
        kind: kind.into(),
        payload,
        state: plue_types::status::ProposalState::Waiting,
        reason: None,
        decided_by: None,
        decided_at: None,
        applied_url: None,
        applied_at: None,
        created_at: 0,
        threat: None,
    };
    let proposals = [
        proposal("comment", json!({"body": "hi"})),
        proposal(
            "pull_request",
            json!({"title": "t", "diff": "diff --git a/f b/f\n+++ b/f\n+x\n"}),
        ),
    ];
    let diff = proposal_diff(&proposals).expect("the pull request's diff");
    assert_eq!(diff.source, "the pull request it proposed");
    assert_eq!(diff.files, ["f"]);
    assert!(proposal_diff(&proposals[..1]).is_none());
}

#[test]
fn a_long_diff_is_cut() {
    let diff: String = (0..MAX_DIFF_LINES + 10)
        .map(|i| format!("+{i}\n"))
        .collect();
    let view = diff_view(&diff, "x".into());
    assert_eq!(view.lines.len(), MAX_DIFF_LINES);
    assert!(view.cut);
}

#[test]
fn long_tool_results_are_cut_on_a_character() {
    let text = "é".repeat(MAX_SHOWN_BYTES);
    let cut = shown(text);
    assert!(cut.ends_with(&format!(
        "… {} more bytes in the transcript",
        MAX_SHOWN_BYTES
    )));
    assert!(cut.len() < MAX_SHOWN_BYTES + 64);
    assert_eq!(shown("short".into()), "short");
}

#[test]
fn gists_are_one_short_line() {
    assert_eq!(gist(&json!({"command": "ls\nrm -rf /"})), "ls…");
    assert_eq!(gist(&json!({"path": "a"})), "a");
    let long = "x".repeat(200);
    assert_eq!(gist(&json!({"path": long})).chars().count(), 121);
}

/// A conversation that ends with `finish`: the first call sent back for correction, the
/// second (`input`) accepted.
fn finished(input: Value) -> Transcript {
    let call = |turn: u32, id: &str, input: Value, error: bool| Turn {
        turn,
        request: json!({"model": "claude-sonnet-4-5"}),
        messages_added: vec![],
        response: json!({
            "content": [{"type": "tool_use", "id": id, "name": "finish", "input": input}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }),
        started_ms: 0,
        duration_ms: 10,
        replayed: false,
        tools: vec![ToolRun {
            id: id.into(),
            name: "finish".into(),
            input,
            content: if error {
                "verdict: not one of"
            } else {
                "accepted"
            }
            .into(),
            is_error: error,
            duration_ms: 0,
        }],
    };
    let mut transcript = transcript();
    transcript
        .turns
        .push(call(3, "t3", json!({"verdict": "maybe"}), true));
    transcript.turns.push(call(4, "t4", input, false));
    transcript
}

fn with_result(result: evaluator::result::ResultSpec) -> evaluator::plan::LlmAction {
    evaluator::plan::LlmAction {
        result: Some(result),
        ..evaluator::plan::LlmAction::default()
    }
}

fn page(view: &Conversation) -> String {
    super::super::render::page(
        "log_conversation.html",
        &minijinja::context! { conversation => view, run => minijinja::context! { id => 1 } },
    )
    .expect("renders")
}

#[test]
fn a_verdict_is_shown_first_from_the_accepted_finish_call() {
    use evaluator::result::{ResultSpec, Shorthand};
    let verdict = ResultSpec::Shorthand(Shorthand::Verdict);
    let reason = "The <b>tests</b> fail on Windows.";
    let mut view = build(
        &finished(json!({"verdict": "reject", "reason": reason})),
        &Prices::default(),
    );
    judge(&mut view, &with_result(verdict.clone()), false);
    let result = view.result.as_ref().expect("the accepted call's input");
    assert_eq!(result.turn, 4, "not the call sent back in turn 3");
    assert_eq!(result.verdict.as_deref(), Some("reject"));
    assert_eq!(result.reason.as_deref(), Some(reason));
    assert!(result.fields.is_empty(), "{:?}", result.fields);
    assert_eq!(result.fails, ["verdict = \"reject\""]);
    assert_eq!(result.tone, "failed");
    let html = page(&view);
    let panel = html.find("id=\"conversation-result\"").expect(&html);
    assert!(
        panel < html.find("class=\"turn\"").unwrap(),
        "the verdict comes before the turns: {html}"
    );
    assert!(
        html.contains("Verdict: <span class=\"badge failed verdict\" id=\"verdict\">"),
        "{html}"
    );
    assert!(
        html.contains("The &lt;b&gt;tests&lt;&#x2f;b&gt; fail on Windows."),
        "the reason is text: {html}"
    );
    assert!(!html.contains("<b>tests"), "{html}");
    assert!(html.contains("This result failed the step"), "{html}");

    let mut approved = build(
        &finished(json!({"verdict": "approve", "reason": "Looks right."})),
        &Prices::default(),
    );
    judge(&mut approved, &with_result(verdict), false);
    let result = approved.result.as_ref().unwrap();
    assert_eq!(result.tone, "succeeded");
    assert!(result.fails.is_empty());
    let html = page(&approved);
    assert!(
        html.contains("<span class=\"badge succeeded verdict\" id=\"verdict\"><span aria-hidden=\"true\">✓</span> approve</span>"),
        "{html}"
    );
    assert!(html.contains("Looks right."), "{html}");
    assert!(!html.contains("failed the step"), "{html}");
}

#[test]
fn a_schema_result_shows_its_fields_and_a_missing_one_says_so() {
    use evaluator::result::ResultSpec;
    let schema: std::collections::BTreeMap<String, Value> = serde_json::from_value(json!({
        "type": "object",
        "properties": {"score": {"type": "integer"}, "summary": {"type": "string"}},
    }))
    .unwrap();
    let mut action = with_result(ResultSpec::Schema(schema));
    action.fail_when = Some([("score".to_string(), vec![json!(0)])].into());
    let mut view = build(
        &finished(json!({"score": 7, "summary": "two <i>nits</i>", "tags": ["a", "b"]})),
        &Prices::default(),
    );
    judge(&mut view, &action, false);
    let result = view.result.as_ref().unwrap();
    assert_eq!(result.verdict, None);
    let fields: Vec<(&str, &str)> = result
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.value.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("score", "7"),
            ("summary", "two <i>nits</i>"),
            ("tags", "[\"a\",\"b\"]")
        ]
    );
    assert_eq!(result.tone, "neutral");
    assert!(result.fails.is_empty());
    let html = page(&view);
    assert!(
        html.contains("<h3 id=\"result-title\">Result</h3>"),
        "{html}"
    );
    assert!(html.contains("data-field=\"score\""), "{html}");
    assert!(html.contains("two &lt;i&gt;nits"), "{html}");
    assert!(html.contains("&quot;score&quot;: 7"), "the JSON: {html}");

    // Ended without an accepted call: said, once the attempt is over.
    let mut none = build(&transcript(), &Prices::default());
    judge(&mut none, &action, true);
    assert!(
        none.result.is_none() && !none.result_missing,
        "still running"
    );
    judge(&mut none, &action, false);
    assert!(none.result_missing);
    assert!(page(&none).contains("No result: the conversation ended without an accepted"));
    // No result= (no finish tool offered): no panel.
    let mut plain = build(&finished(json!({"verdict": "approve"})), &Prices::default());
    judge(&mut plain, &evaluator::plan::LlmAction::default(), false);
    assert!(plain.result.is_none() && !plain.result_missing);
    assert!(!page(&plain).contains("conversation-result"));
}

#[test]
fn an_mcp_tool_call_names_its_server_and_marks_its_result_untrusted() {
    let mut with_mcp = transcript();
    with_mcp.turns[0].response["content"][1]["name"] = json!("mcp__docs__search");
    with_mcp.turns[0].tools[0].name = "mcp__docs__search".into();
    let view = build(&with_mcp, &Prices::default());
    let call = view.turns[0].blocks[1].tool.as_ref().expect("a tool call");
    assert_eq!(call.mcp_server.as_deref(), Some("docs"));
    let html = page(&view);
    assert!(html.contains("MCP docs"), "{html}");
    assert!(
        html.contains("from MCP server docs: untrusted text"),
        "{html}"
    );
    assert_eq!(super::mcp_server_of("mcp__a"), None);
    assert_eq!(super::mcp_server_of("read_file"), None);
}
