//! End to end: agents that can say no, through the real `plue run` binary and a scripted
//! Messages API (`testkit::claude`):
//! - a reviewer WITHOUT `bash` (`result="verdict"`, tools `read_file` only) rejects in round
//!   1 through the `finish` tool, which fails its step so `loop_to` goes back to the coder;
//!   the coder's round-2 prompt reads the rejection's reason; the reviewer's wrong `finish`
//!   shape goes back to it as a tool error, it corrects it and approves in round 2; the
//!   verdict's fields are outputs later steps read;
//! - the coder starts round N from its own round N−1 workspace (`loop_workspace`, default
//!   `previous`; `fresh` starts over) and its prompt reads every earlier review
//!   (`{{ steps.review.rounds }}`);
//! - a reply cut at `max_tokens` fails its step, saying so.

use crate::support::{printed, Sandbox};
use serde_json::{json, Value};
use testkit::claude::{FakeClaude, Recorded, Reply, Turn};

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
        Step.llm("code", prompt="CODER: write hello.txt. Last review: [{{ steps.review.outputs.reason }}] All reviews: {{ steps.review.rounds }}",
                 tools=["read_file", "write_file"], max_turns=4),
        Step.llm("review", prompt="REVIEWER: review hello.txt", result="verdict",
                 tools=["read_file"], depends_on=["code"], loop_to="code", max_loops=2),
        Step.bash("ship", 'echo "shipped after {{ steps.review.outputs.verdict }}: {{ steps.review.outputs.reason }}"',
                  depends_on=["review"]),
    ])
"#;

/// The coder's turn writing `content` to hello.txt, then its closing text.
fn coder_writes(id: &str, content: &str) -> [Reply; 2] {
    [
        Turn::new()
            .tool_use(
                id,
                "write_file",
                &json!({"path": "hello.txt", "content": content}),
            )
            .reply(),
        Turn::text(&["done"]).reply(),
    ]
}

/// The reviewer's `finish` call.
fn review(id: &str, input: Value) -> Reply {
    Turn::new().tool_use(id, "finish", &input).reply()
}

/// The reviewer's [`review`] handing in `verdict` for `reason`.
fn verdict(id: &str, verdict: &str, reason: &str) -> Reply {
    review(id, json!({"verdict": verdict, "reason": reason}))
}

/// `plue run w.plue.py` in `sandbox` with one runner, its llm steps talking to `server`,
/// which must succeed.
fn run_succeeds(sandbox: &Sandbox, server: &FakeClaude) {
    let output = sandbox.plue_run_llm(server.url(), &["w.plue.py", "--runners", "1"]);
    let text = printed(&output);
    assert!(output.status.success(), "{text}");
}

/// The result of tool use `id` sent back to the model in `requests`, or a panic naming
/// `what`.
fn tool_result(requests: &[Recorded], id: &str, what: &str) -> Value {
    requests
        .iter()
        .flat_map(|r| r.tool_results())
        .find(|r| r["tool_use_id"] == id)
        .expect(what)
}

#[test]
fn a_reviewer_without_bash_rejects_then_approves_and_the_loop_follows_its_verdict() {
    let mut script = Vec::new();
    // Round 1: the coder writes v1, the reviewer rejects.
    script.extend(coder_writes("toolu_c1", "v1\n"));
    script.push(verdict("toolu_r1", "reject", "hello.txt must say v2"));
    // Round 2: the coder finds its round-1 file and writes v2; the reviewer's first finish
    // is the wrong shape, the corrected one rejects again.
    script.push(
        Turn::new()
            .tool_use("toolu_c2r", "read_file", &json!({"path": "hello.txt"}))
            .reply(),
    );
    script.extend(coder_writes("toolu_c2", "v2\n"));
    script.push(review("toolu_r2", json!({"verdict": "LGTM"})));
    script.push(verdict("toolu_r3", "reject", "now say v3"));
    // Round 3: v3, approved.
    script.extend(coder_writes("toolu_c3", "v3\n"));
    script.push(verdict("toolu_r4", "approve", "says v3"));
    let server = FakeClaude::start(script);
    let sandbox = Sandbox::new("verdicts");
    sandbox.write("w.plue.py", REVIEW_LOOP);
    let output = sandbox.plue_run_llm_summary(server.url(), "1", &[]);
    let text = printed(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("shipped after approve: says v3"),
        "the verdict's fields are outputs: {text}"
    );
    assert!(
        text.contains("verdict \"reject\": hello.txt must say v2"),
        "round 1's rejection is the review's failure reason: {text}"
    );
    let summary = sandbox.summary();
    let review = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "review")
        .unwrap();
    assert_eq!(
        (&review["status"], &review["iteration"]),
        (&json!("succeeded"), &json!(3)),
        "{summary}"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 11, "{requests:#?}");
    let reviews: Vec<_> = requests
        .iter()
        .filter(|r| first_prompt(r).starts_with("REVIEWER"))
        .collect();
    assert_eq!(reviews.len(), 4);
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
    // Each coder round's prompt (the first request of its conversation).
    let mut coder_prompts: Vec<String> = requests
        .iter()
        .map(first_prompt)
        .filter(|p| p.starts_with("CODER"))
        .collect();
    coder_prompts.dedup();
    assert_eq!(coder_prompts.len(), 3, "{coder_prompts:#?}");
    assert!(
        coder_prompts[0].ends_with("Last review: [] All reviews: []"),
        "{coder_prompts:?}"
    );
    assert!(
        coder_prompts[1].contains("Last review: [hello.txt must say v2]"),
        "{coder_prompts:?}"
    );
    // The whole history: every earlier round's outputs, not only the last.
    let history = coder_prompts[2]
        .split_once("All reviews: ")
        .map(|(_, h)| h)
        .unwrap();
    let history: Value = serde_json::from_str(history).unwrap();
    assert_eq!(history[0]["round"], 1, "{history}");
    assert_eq!(history[0]["outputs"]["reason"], "hello.txt must say v2");
    assert_eq!(history[1]["round"], 2, "{history}");
    assert_eq!(history[1]["outputs"]["reason"], "now say v3");
    assert_eq!(history[1]["outputs"]["verdict"], "reject");
    // loop_workspace="previous" (the default): round 2 started from round 1's workspace.
    let read_back = tool_result(&requests, "toolu_c2r", "the coder's read_file result");
    assert_eq!(read_back["is_error"], false, "{read_back}");
    assert!(
        read_back["content"].as_str().unwrap().contains("v1"),
        "round 2 starts from round 1's files: {read_back}"
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

/// `loop_workspace="fresh"`: every round starts as round 1 did (what every round did before
/// `previous` became the default), so round 2 does not find round 1's file.
#[test]
fn a_fresh_loop_workspace_starts_each_round_from_scratch() {
    let server = FakeClaude::start(vec![
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
                &json!({"verdict": "reject", "reason": "again"}),
            )
            .reply(),
        Turn::new()
            .tool_use("toolu_c2r", "read_file", &json!({"path": "hello.txt"}))
            .reply(),
        Turn::text(&["nothing there"]).reply(),
        Turn::new()
            .tool_use(
                "toolu_r2",
                "finish",
                &json!({"verdict": "approve", "reason": "fine"}),
            )
            .reply(),
    ]);
    let sandbox = Sandbox::new("fresh-rounds");
    sandbox.write(
        "w.plue.py",
        &REVIEW_LOOP.replace("max_turns=4)", "max_turns=4, loop_workspace=\"fresh\")"),
    );
    run_succeeds(&sandbox, &server);
    let read_back = tool_result(
        &server.requests(),
        "toolu_c2r",
        "the coder's read_file result",
    );
    assert_eq!(read_back["is_error"], true, "{read_back}");
}

/// A coder retried inside round 2 starts again from round 1's workspace, not from what its
/// failed attempt of round 2 left (which it also kept).
#[test]
fn a_retry_inside_a_round_starts_from_the_previous_rounds_workspace() {
    let mut script = Vec::new();
    script.extend(coder_writes("toolu_c1", "v1\n"));
    script.push(verdict("toolu_r1", "reject", "again"));
    // Round 2, attempt 1: breaks the file, then its reply is cut: the attempt fails.
    script.push(
        Turn::new()
            .tool_use(
                "toolu_c2",
                "write_file",
                &json!({"path": "hello.txt", "content": "broken\n"}),
            )
            .reply(),
    );
    script.push(Turn::text(&["and then"]).stop_reason("max_tokens").reply());
    // Round 2, attempt 2: reads what it starts from.
    script.push(
        Turn::new()
            .tool_use("toolu_c3r", "read_file", &json!({"path": "hello.txt"}))
            .reply(),
    );
    script.push(Turn::text(&["fine"]).reply());
    script.push(verdict("toolu_r2", "approve", "ok"));
    let server = FakeClaude::start(script);
    let sandbox = Sandbox::new("round-retry");
    sandbox.write(
        "w.plue.py",
        &REVIEW_LOOP.replace("max_turns=4)", "max_turns=4, retries=1, backoff=0)"),
    );
    run_succeeds(&sandbox, &server);
    let read_back = tool_result(
        &server.requests(),
        "toolu_c3r",
        "the retried coder's read_file result",
    );
    assert_eq!(read_back["content"], "v1\n", "{read_back}");
}

/// The attacker's view: a model that hands a secret of its step back through `finish` —
/// in a field's value, then as a field's name — gets it stored and shown nowhere: values
/// are masked like every output and reason, and a name holding it is refused.
#[test]
fn a_secret_handed_in_through_finish_is_masked_or_refused() {
    const SECRET: &str = "s3cr3t-v4lue-8e1f";
    let server = FakeClaude::start(vec![
        review(
            "toolu_r1",
            json!({"verdict": "approve", "reason": format!("the token is {SECRET}")}),
        ),
        review("toolu_r2", json!({"verdict": "approve", SECRET: "x"})),
    ]);
    let sandbox = Sandbox::new("finish-secrets");
    sandbox.write(
        "w.plue.py",
        r#"def workflow():
    return Plan(name="leak", triggers=[Trigger.manual()], steps=[
        Step.llm("review", prompt="REVIEWER", result="verdict", tools=[], secrets=["TOKEN"]),
        Step.bash("show", 'echo "got: {{ steps.review.outputs.reason }}"', depends_on=["review"]),
        Step.llm("named", prompt="NAMER", tools=[], secrets=["TOKEN"], depends_on=["show"],
                 result={"type": "object", "properties": {"verdict": {"type": "string"}}}),
    ])
"#,
    );
    let output = sandbox.plue_run_llm(
        server.url(),
        &[
            "w.plue.py",
            "--runners",
            "1",
            "--secret",
            &format!("TOKEN={SECRET}"),
        ],
    );
    let text = printed(&output);
    assert!(text.contains("got: the token is ***"), "{text}");
    assert!(!text.contains(SECRET), "the secret was shown: {text}");
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("contains a secret"),
        "a field named with the secret is refused: {text}"
    );
}
