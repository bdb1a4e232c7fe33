//! [`super::run`] against a local server speaking the streaming Messages protocol
//! (`testkit::claude`), scripted per test; each test also checks what the server received.
//!
//! Why one file past ~600 lines: the `llm` step loop against one scripted server, each test
//! a conversation; they share its turn builders and request checks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use testkit::claude::{FakeClaude, Part, Reply, Turn};
use tokio::sync::mpsc;

use super::*;
use plue_types::protocol;

const KEY: &str = "sk-ant-test-0123456789abcdef";

/// A workspace and output file, and the options of the step under test.
struct Step {
    _dir: tempfile::TempDir,
    outside: PathBuf,
    workspace: PathBuf,
    output: PathBuf,
    prompt: String,
    tools: Vec<String>,
    max_turns: Option<u32>,
    /// The attempt's budget (budget.rs).
    budget: Option<protocol::Budget>,
    /// `result=` of the step.
    result: Option<protocol::ResultContract>,
    timeout: Duration,
    /// The runner's configured base URL.
    base_url: String,
    env: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
}

impl Step {
    fn new(server: &FakeClaude) -> Step {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("workspace");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let output = dir.path().join("output");
        std::fs::write(&output, "").unwrap();
        Step {
            _dir: dir,
            outside,
            workspace,
            output,
            prompt: "Say hello.".into(),
            tools: tools::ALL.iter().map(|t| t.to_string()).collect(),
            max_turns: None,
            budget: None,
            result: None,
            timeout: Duration::from_secs(60),
            base_url: server.url().to_owned(),
            env: BTreeMap::new(),
            secrets: BTreeMap::from([(API_KEY_SECRET.to_owned(), KEY.to_owned())]),
        }
    }

    /// Runs the step with fast retries; returns how it ended and every log line.
    async fn run(&self, cancel: &CancellationToken) -> (Finished, Vec<(Stream, String)>) {
        let retry = RetryPolicy {
            first_backoff: Duration::from_millis(20),
            ..RetryPolicy::default()
        };
        self.run_with(retry, cancel).await
    }

    async fn run_with(
        &self,
        retry: RetryPolicy,
        cancel: &CancellationToken,
    ) -> (Finished, Vec<(Stream, String)>) {
        let (tx, mut rx) = mpsc::channel(16);
        let collector = tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Some(line) = rx.recv().await {
                lines.push(line);
            }
            lines
        });
        let inputs = Map::new();
        let step = LlmStep {
            options: StepOptions {
                prompt: Some(&self.prompt),
                prompt_file: None,
                prompt_file_content: None,
                inputs: &inputs,
                model: None,
                max_turns: self.max_turns,
                tools: &self.tools,
                system_prompt: None,
                result: self.result.as_ref(),
                mcp: &[],
            },
            workspace: &self.workspace,
            output_file: &self.output,
            base_url: Some(&self.base_url),
            env: &self.env,
            tool_env: crate::step_env::build(
                &crate::step_env::Base::minimal(std::env::vars()),
                crate::step_env::AttemptPaths {
                    workspace: &self.workspace,
                    output_file: &self.output,
                    home: &self.workspace,
                    tmp: &self.workspace,
                },
                &self.env,
                &self.secrets,
            ),
            user: None,
            network: None,
            network_policy: &plue_types::protocol::NetworkPolicy::Open,
            secrets: &self.secrets,
            budget: self.budget.as_ref(),
            timeout: self.timeout,
            retry,
            masker: Arc::new(Masker::new(self.secrets.values())),
            proposer: None,
            transcript: None,
            replay: None,
        };
        let finished = run(step, &tx, cancel).await;
        drop(tx);
        let lines = collector.await.unwrap();
        for (_, text) in &lines {
            assert!(!text.contains(KEY), "the API key was logged: {text}");
        }
        if let Some(reason) = &finished.reason {
            assert!(!reason.contains(KEY), "the API key is in the reason");
        }
        (finished, lines)
    }
}

fn of(lines: &[(Stream, String)], stream: Stream) -> Vec<&str> {
    lines
        .iter()
        .filter(|(s, _)| *s == stream)
        .map(|(_, t)| t.as_str())
        .collect()
}

fn json_of(lines: &[(Stream, String)], stream: Stream) -> Vec<Value> {
    of(lines, stream)
        .into_iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect()
}

fn assert_succeeded(finished: &Finished) {
    assert_eq!(
        (finished.outcome, finished.reason.as_deref()),
        (Outcome::Succeeded, None),
        "{finished:?}"
    );
}

#[tokio::test]
async fn a_plain_answer_streams_every_token_exactly() {
    // No piece ends in what may start a spelling of the key (`s`, `f`, `7`, `c`, `n`, `z`):
    // such a tail would wait for the next delta (`mask::StreamMasker`).
    let pieces = [
        "Hel",
        "lo, wo",
        "rld ",
        "ﬁne pur",
        "é",
        "\n",
        "  indented ",
        "e\u{301}",
        "\u{1F469}",
        "\u{200D}\u{1F4BB} end",
    ];
    let text: String = pieces.concat();
    // The frame of the "é" delta is written in two network chunks split inside the é.
    let mut parts = Turn::text(&pieces).usage(31, 17).parts();
    let at = parts
        .iter()
        .position(|p| matches!(p, Part::Event(e) if e["delta"]["text"] == "é"))
        .unwrap();
    let frame_prefix = "event: content_block_delta\ndata: ".len();
    let event = match &parts[at] {
        Part::Event(e) => e.to_string(),
        _ => unreachable!(),
    };
    let split = frame_prefix + event.find('é').unwrap() + 1;
    parts.insert(at, Part::SplitNext(split));
    let server = FakeClaude::start(vec![Reply::Stream(parts)]);
    let step = Step::new(&server);

    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    assert_eq!(of(&lines, Stream::Token), pieces);
    assert_eq!(of(&lines, Stream::Token).concat(), text);
    assert_eq!(finished.outputs["result"], text);
    assert_eq!(
        finished.usage,
        Some(Usage {
            input_tokens: 31,
            output_tokens: 17,
            ..Usage::default()
        })
    );
    let usage = json_of(&lines, Stream::Usage);
    assert_eq!(usage.len(), 1);
    assert_eq!(
        (
            &usage[0]["input_tokens"],
            &usage[0]["output_tokens"],
            &usage[0]["turn"]
        ),
        (&json!(31), &json!(17), &json!(1))
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(request.header("x-api-key"), Some(KEY));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.body["stream"], true);
    assert_eq!(request.body["model"], settings::DEFAULT_MODEL);
    assert_eq!(request.body["max_tokens"], agent::MAX_TOKENS);
    assert_eq!(
        request.body["messages"],
        json!([{"role": "user", "content": "Say hello."}])
    );
    assert!(request.body["system"].as_str().unwrap().contains("Plue"));
    let names: Vec<&str> = request.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, tools::ALL);
    for tool in request.body["tools"].as_array().unwrap() {
        assert_eq!(tool["input_schema"]["type"], "object", "{tool}");
        assert!(tool["description"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_use_round_trip_edits_a_file() {
    let server =
        FakeClaude::start(vec![
        Turn::new()
            .thinking_block("The greeting needs fixing.")
            .text_block(&["Let me ", "look."])
            .tool_use("toolu_01", "read_file", &json!({"path": "greeting.txt"}))
            .usage(100, 20)
            .reply(),
        Turn::new()
            .tool_use(
                "toolu_02",
                "write_file",
                &json!({"path": "greeting.txt", "content": "hello, world\n"}),
            )
            .tool_use(
                "toolu_03",
                "bash",
                &json!({"command": "echo changed=yes >> \"$PLUE_OUTPUT\"; wc -c < greeting.txt"}),
            )
            .usage(150, 30)
            .reply(),
        Turn::text(&["Fixed the ", "greeting."]).usage(200, 10).reply(),
    ]);
    let step = Step::new(&server);
    std::fs::write(step.workspace.join("greeting.txt"), "helo wrld\n").unwrap();

    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    assert_eq!(
        std::fs::read_to_string(step.workspace.join("greeting.txt")).unwrap(),
        "hello, world\n"
    );
    assert_eq!(finished.outputs["result"], "Fixed the greeting.");
    assert_eq!(finished.outputs["changed"], "yes");
    assert_eq!(
        finished.usage,
        Some(Usage {
            input_tokens: 450,
            output_tokens: 60,
            ..Usage::default()
        })
    );

    let calls = json_of(&lines, Stream::ToolCall);
    assert_eq!(
        calls[0],
        json!({"id": "toolu_01", "name": "read_file", "input": {"path": "greeting.txt"}})
    );
    assert_eq!(calls.len(), 3);
    let results = json_of(&lines, Stream::ToolResult);
    assert_eq!(
        results[0],
        json!({"id": "toolu_01", "is_error": false, "bytes": 10, "content": "helo wrld\n"})
    );
    assert_eq!(results[2]["content"], "13\n[exit code 0]");
    assert_eq!(json_of(&lines, Stream::Usage).len(), 3);
    assert_eq!(
        of(&lines, Stream::Token),
        ["Let me ", "look.", "Fixed the ", "greeting."]
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    // The second request carries the assistant's blocks (without the thinking block) and
    // the tool result.
    let messages = requests[1].body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[1],
        json!({"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_01", "name": "read_file", "input": {"path": "greeting.txt"}}
        ]})
    );
    assert_eq!(
        requests[1].tool_results(),
        [
            json!({"type": "tool_result", "tool_use_id": "toolu_01", "content": "helo wrld\n", "is_error": false})
        ]
    );
    let third = requests[2].tool_results();
    assert_eq!(third.len(), 2);
    assert_eq!(third[0]["tool_use_id"], "toolu_02");
    assert_eq!(third[0]["content"], "wrote 13 bytes to greeting.txt");
    assert_eq!(third[1]["tool_use_id"], "toolu_03");
    for request in &requests {
        assert_eq!(request.header("x-api-key"), Some(KEY));
        assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_from_the_workspace_get_error_results() {
    let server = FakeClaude::start(vec![
        Turn::new()
            .tool_use("toolu_r", "read_file", &json!({"path": "../../etc/passwd"}))
            .tool_use(
                "toolu_w",
                "write_file",
                &json!({"path": "notes.txt", "content": "pwned"}),
            )
            .tool_use(
                "toolu_b",
                "write_file",
                &json!({"path": "escape/new.txt", "content": "pwned"}),
            )
            .reply(),
        Turn::text(&["I could not do that."]).reply(),
    ]);
    let step = Step::new(&server);
    let target = step.outside.join("notes.txt");
    std::fs::write(&target, "original").unwrap();
    std::os::unix::fs::symlink(&target, step.workspace.join("notes.txt")).unwrap();
    std::os::unix::fs::symlink(&step.outside, step.workspace.join("escape")).unwrap();

    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "original");
    assert!(!step.outside.join("new.txt").exists());
    let results = server.requests()[1].tool_results();
    assert_eq!(results.len(), 3);
    for result in &results {
        assert_eq!(result["is_error"], true, "{result}");
    }
    assert!(results[0]["content"]
        .as_str()
        .unwrap()
        .contains("'..' is not allowed"));
    assert!(results[1]["content"]
        .as_str()
        .unwrap()
        .contains("symbolic link"));
    assert!(results[2]["content"]
        .as_str()
        .unwrap()
        .contains("outside the workspace"));
    assert!(json_of(&lines, Stream::ToolResult)
        .iter()
        .all(|r| r["is_error"] == true));
}

#[tokio::test]
async fn an_overloaded_error_event_is_retried() {
    let server = FakeClaude::start(vec![
        Turn::text(&["Par", "tial"]).error_after(4, "overloaded_error", "Overloaded"),
        Turn::text(&["Whole answer."]).reply(),
    ]);
    let step = Step::new(&server);
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    assert_eq!(finished.outputs["result"], "Whole answer.");
    assert_eq!(server.requests().len(), 2);
    let system = of(&lines, Stream::System).join("\n");
    assert!(
        system.contains("overloaded_error: Overloaded; retrying turn 1"),
        "{system}"
    );
    assert!(system.contains("superseded"), "{system}");
    // The broken attempt's tokens were logged, then the retry's.
    assert_eq!(of(&lines, Stream::Token), ["Par", "Whole answer."]);
}

#[tokio::test]
async fn a_429_waits_as_long_as_retry_after_says() {
    let server = FakeClaude::start(vec![Reply::rate_limited(1), Turn::text(&["ok"]).reply()]);
    let step = Step::new(&server);
    let started = Instant::now();
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let system = of(&lines, Stream::System).join("\n");
    assert!(system.contains("answered 429 rate_limit_error"), "{system}");
    assert!(
        system.contains("retrying turn 1 in 1s (attempt 2 of 4)"),
        "{system}"
    );
    assert!(system.contains("request-id req_fake"), "{system}");
}

#[tokio::test]
async fn a_connection_dropped_mid_stream_retries_the_turn() {
    let server = FakeClaude::start(vec![
        Turn::text(&["Hello", " wor", "ld"]).cut_after(5),
        Turn::text(&["Hello", " world"]).reply(),
    ]);
    let step = Step::new(&server);
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    assert_eq!(finished.outputs["result"], "Hello world");
    let system = of(&lines, Stream::System).join("\n");
    assert!(
        system.contains("stream ended before message_stop"),
        "{system}"
    );
    assert!(system.contains("superseded"), "{system}");
    assert_eq!(
        of(&lines, Stream::Token),
        ["Hello", " wor", "Hello", " world"]
    );
}

#[tokio::test]
async fn exhausted_retries_fail_with_the_last_error() {
    let server = FakeClaude::start(vec![
        Reply::error(529, "overloaded_error", "Overloaded"),
        Turn::text(&["a"]).cut_after(3),
        Reply::error(500, "api_error", "Internal server error"),
        Turn::text(&["a"]).cut_after(3),
    ]);
    let step = Step::new(&server);
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    let reason = finished.reason.unwrap();
    assert!(
        reason.starts_with("stream ended before message_stop"),
        "{reason}"
    );
    assert!(reason.ends_with("(turn 1, after 4 attempts)"), "{reason}");
    assert_eq!(server.requests().len(), 4);

    let server = FakeClaude::start(
        (0..4)
            .map(|_| Turn::text(&["x"]).error_after(2, "overloaded_error", "Overloaded"))
            .collect(),
    );
    let step = Step::new(&server);
    let (finished, _) = step.run(&CancellationToken::new()).await;
    let reason = finished.reason.unwrap();
    assert!(
        reason.starts_with("overloaded_error: Overloaded"),
        "{reason}"
    );
}

#[tokio::test]
async fn client_errors_fail_at_once_with_the_api_message() {
    let server = FakeClaude::start(vec![Reply::error(
        400,
        "invalid_request_error",
        "messages.0.content: field required",
    )]);
    let step = Step::new(&server);
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    let reason = finished.reason.unwrap();
    assert!(
        reason.contains("400 invalid_request_error: messages.0.content: field required"),
        "{reason}"
    );
    assert_eq!(server.requests().len(), 1);

    // A wrong key: the fake server refuses an empty one like the API.
    let server = FakeClaude::start(vec![]);
    let mut step = Step::new(&server);
    step.secrets.insert(API_KEY_SECRET.into(), "".into());
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert!(finished
        .reason
        .unwrap()
        .contains("need the secret ANTHROPIC_API_KEY"),);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn failures_that_are_not_retried_are_system_lines_too() {
    // regression: a 4xx, a malformed stream or max_turns showed only in the step's reason.
    let server = FakeClaude::start(vec![Reply::error(
        401,
        "authentication_error",
        "invalid x-api-key",
    )]);
    let step = Step::new(&server);
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    let reason = finished.reason.unwrap();
    let system = of(&lines, Stream::System);
    assert_eq!(
        system.last(),
        Some(&format!("llm step failed: {reason}").as_str())
    );
    assert!(reason.contains("401 authentication_error"), "{reason}");

    let server = FakeClaude::start(vec![Reply::Stream(vec![
        Part::Event(json!({"type": "message_start", "message": {"usage": {}}})),
        Part::Event(json!({"type": "content_block_delta", "index": 4,
            "delta": {"type": "text_delta", "text": "x"}})),
    ])]);
    let step = Step::new(&server);
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    let reason = finished.reason.unwrap();
    assert!(reason.starts_with("malformed stream"), "{reason}");
    assert_eq!(
        of(&lines, Stream::System).last(),
        Some(&format!("llm step failed: {reason}").as_str())
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_rate_limit_or_timeout_error_event_is_retried() {
    let server = FakeClaude::start(vec![
        Turn::text(&["a"]).error_after(2, "rate_limit_error", "Slow down"),
        Turn::text(&["b"]).error_after(2, "timeout_error", "Took too long"),
        Turn::text(&["done"]).reply(),
    ]);
    let step = Step::new(&server);
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    assert_eq!(finished.outputs["result"], "done");
    assert_eq!(server.requests().len(), 3);
    let system = of(&lines, Stream::System).join("\n");
    assert!(
        system.contains("rate_limit_error: Slow down; retrying"),
        "{system}"
    );
    assert!(
        system.contains("timeout_error: Took too long; retrying"),
        "{system}"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_fails_the_step() {
    // regression: reqwest followed redirects, carrying x-api-key to another host.
    let elsewhere = FakeClaude::start(vec![Turn::text(&["stolen"]).reply()]);
    let target = format!("{}/v1/messages", elsewhere.url());
    let server = FakeClaude::start(vec![Reply::redirect(307, &target)]);
    let step = Step::new(&server);
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    let reason = finished.reason.unwrap();
    assert!(reason.contains("answered 307 redirecting to"), "{reason}");
    assert!(reason.contains(&target), "{reason}");
    assert!(reason.contains("not followed"), "{reason}");
    assert_eq!(server.requests().len(), 1, "a redirect is not retried");
    assert!(elsewhere.requests().is_empty(), "the redirect was followed");
    assert!(of(&lines, Stream::System)
        .iter()
        .any(|l| l.contains("redirecting to")));
}

#[tokio::test]
async fn a_secret_split_across_deltas_is_masked_in_token_lines() {
    // regression: each delta was masked as its own line, so a split secret passed.
    let secret = "tok-9f8e7d6c5b4a";
    let server = FakeClaude::start(vec![
        Turn::new()
            .tool_use(
                "toolu_1",
                "bash",
                &json!({"command": format!("printf '%s%s\\n' {} {}", &secret[..6], &secret[6..])}),
            )
            .reply(),
        Turn::text(&["Your token is tok-9f", "8e7d6c", "5b4a, keep it."]).reply(),
    ]);
    let mut step = Step::new(&server);
    step.secrets.insert("DEPLOY_TOKEN".into(), secret.into());
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    let tokens = of(&lines, Stream::Token);
    assert_eq!(tokens.concat(), "Your token is ***, keep it.");
    for (_, line) in &lines {
        assert!(!line.contains(secret), "{line}");
    }
    // The bash call printed it whole: the model got it, the log did not.
    assert_eq!(
        server.requests()[1].tool_results()[0]["content"],
        format!("{secret}\n[exit code 0]")
    );
    assert_eq!(
        json_of(&lines, Stream::ToolResult)[0]["content"],
        "***\n[exit code 0]"
    );
    // The log is the masked result, exactly.
    let masker = Masker::new([secret]);
    assert_eq!(tokens.concat(), masker.mask(&finished.outputs["result"]));
}

#[tokio::test]
async fn a_secret_in_a_streamed_answer_is_held_back_only_while_it_may_be_one() {
    // Only a tail that may still become a secret waits; text that cannot is shown at once.
    let server = FakeClaude::start(vec![Turn::text(&[
        "see tok",
        "-9f8e7d6c5b4a and to",
        "day's news.",
    ])
    .reply()]);
    let mut step = Step::new(&server);
    step.secrets
        .insert("DEPLOY_TOKEN".into(), "tok-9f8e7d6c5b4a".into());
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    assert_eq!(
        of(&lines, Stream::Token),
        ["see ", "*** and ", "today's news."]
    );
}

#[tokio::test]
async fn outputs_at_the_limit_leave_no_room_for_result() {
    // regression: 256 outputs plus `result` made a completion the engine refused.
    let server = FakeClaude::start(vec![Turn::text(&["done"]).reply()]);
    let step = Step::new(&server);
    let many: String = (0..protocol::MAX_OUTPUTS)
        .map(|i| format!("k{i}=v\n"))
        .collect();
    std::fs::write(&step.output, many).unwrap();
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    let reason = finished.reason.unwrap();
    assert!(reason.contains("256 outputs"), "{reason}");
    assert!(reason.contains("at most 255 others"), "{reason}");
    assert!(finished.outputs.is_empty());
    assert!(of(&lines, Stream::System)
        .iter()
        .any(|l| l.contains("256 outputs")));

    // 255 others and `result` fit; so does overwriting `result` itself.
    let server = FakeClaude::start(vec![Turn::text(&["done"]).reply()]);
    let step = Step::new(&server);
    let mut many: String = (0..protocol::MAX_OUTPUTS - 1)
        .map(|i| format!("k{i}=v\n"))
        .collect();
    many.push_str("result=old\n");
    std::fs::write(&step.output, many).unwrap();
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    assert_eq!(finished.outputs.len(), protocol::MAX_OUTPUTS);
    assert_eq!(finished.outputs["result"], "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_the_workspace_is_an_error_result_not_a_hang() {
    // regression: read_file opened a FIFO and blocked the step forever.
    let server = FakeClaude::start(vec![
        Turn::new()
            .tool_use("toolu_r", "read_file", &json!({"path": "pipe"}))
            .tool_use(
                "toolu_w",
                "write_file",
                &json!({"path": "pipe", "content": "x"}),
            )
            .tool_use("toolu_g", "grep", &json!({"pattern": "x", "path": "pipe"}))
            .reply(),
        Turn::text(&["It is a pipe."]).reply(),
    ]);
    let step = Step::new(&server);
    let made = std::process::Command::new("mkfifo")
        .arg(step.workspace.join("pipe"))
        .status()
        .unwrap();
    assert!(made.success());
    let started = Instant::now();
    let (finished, _) =
        tokio::time::timeout(Duration::from_secs(20), step.run(&CancellationToken::new()))
            .await
            .expect("a FIFO hung the step");
    assert_succeeded(&finished);
    assert!(started.elapsed() < Duration::from_secs(10));
    let results = server.requests()[1].tool_results();
    assert_eq!(results.len(), 3);
    for result in &results[..2] {
        assert_eq!(result["is_error"], true, "{result}");
        assert!(
            result["content"]
                .as_str()
                .unwrap()
                .contains("not a regular file"),
            "{result}"
        );
    }
    assert!(
        results[2]["content"]
            .as_str()
            .unwrap()
            .starts_with("no matches"),
        "{}",
        results[2]
    );
}

#[tokio::test]
async fn exceeding_max_turns_fails_the_step() {
    let calls: Vec<Reply> = (0..3)
        .map(|i| {
            Turn::new()
                .tool_use(&format!("toolu_{i}"), "list_files", &json!({}))
                .reply()
        })
        .collect();
    let server = FakeClaude::start(calls);
    let mut step = Step::new(&server);
    step.max_turns = Some(2);
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    assert_eq!(
        finished.reason.as_deref(),
        Some("max_turns (2) reached while the model was still calling tools")
    );
    assert_eq!(
        of(&lines, Stream::System).last(),
        Some(&"llm step failed: max_turns (2) reached while the model was still calling tools")
    );
    assert_eq!(server.requests().len(), 2);
    // Only the first turn's call ran.
    assert_eq!(json_of(&lines, Stream::ToolCall).len(), 1);
    assert!(finished.usage.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bash_call_that_times_out_is_an_error_result() {
    let server = FakeClaude::start(vec![
        Turn::new()
            .tool_use(
                "toolu_s",
                "bash",
                &json!({"command": "echo started; sleep 30", "timeout_secs": 1}),
            )
            .reply(),
        Turn::text(&["It hung."]).reply(),
    ]);
    let step = Step::new(&server);
    let started = Instant::now();
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    assert!(started.elapsed() < Duration::from_secs(15));
    let results = server.requests()[1].tool_results();
    assert_eq!(results[0]["is_error"], true);
    let content = results[0]["content"].as_str().unwrap();
    assert!(
        content.starts_with("started\n[timed out after 1s"),
        "{content}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_timeout_and_cancellation_stop_the_conversation() {
    let slow = || {
        let pieces: Vec<String> = (0..100).map(|i| format!("t{i} ")).collect();
        Turn::new()
            .paced_text_block(&pieces, Duration::from_millis(100))
            .reply()
    };
    let server = FakeClaude::start(vec![slow()]);
    let mut step = Step::new(&server);
    step.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(finished.outcome, Outcome::Failed);
    assert_eq!(finished.reason.as_deref(), Some("timed out after 1s"));
    assert!(!of(&lines, Stream::Token).is_empty());

    // Cancelled while a bash call runs: the command is killed, the step is cancelled.
    let server = FakeClaude::start(vec![Turn::new()
        .tool_use("toolu_c", "bash", &json!({"command": "sleep 1237.5"}))
        .reply()]);
    let step = Step::new(&server);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let (finished, _) = step.run(&cancel).await;
    assert_eq!(finished.outcome, Outcome::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(5));
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 1237.5"])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "the bash call survived its step");
}

#[tokio::test]
async fn an_unreachable_server_fails_after_the_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let server = FakeClaude::start(vec![]);
    let mut step = Step::new(&server);
    step.base_url = url;
    let retry = RetryPolicy {
        attempts: 2,
        first_backoff: Duration::from_millis(10),
        ..RetryPolicy::default()
    };
    let (finished, _) = step.run_with(retry, &CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    let reason = finished.reason.unwrap();
    assert!(reason.contains("POST http://127.0.0.1:"), "{reason}");
    assert!(reason.contains("after 2 attempts"), "{reason}");
}

// The attacker writes the workflow: its step's `env` points ANTHROPIC_BASE_URL at a server
// it runs, hoping the runner sends the API key there.
#[tokio::test]
async fn a_step_env_cannot_redirect_the_api_key() {
    let operator = FakeClaude::start(vec![Turn::text(&["fine"]).reply()]);
    let attacker = FakeClaude::start(vec![Turn::text(&["gotcha"]).reply()]);
    let mut step = Step::new(&operator);
    step.tools = Vec::new();
    step.env
        .insert(BASE_URL_ENV.into(), attacker.url().to_owned());
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_eq!(
        finished.outcome,
        Outcome::Succeeded,
        "{:?}",
        finished.reason
    );
    assert_eq!(finished.outputs["result"], "fine");
    assert!(
        attacker.requests().is_empty(),
        "the attacker's server was called"
    );
    assert_eq!(operator.requests().len(), 1);
}

/// The verdict contract the engine sends for `result="verdict"`.
fn verdict_contract() -> protocol::ResultContract {
    protocol::ResultContract {
        schema: json!({
            "type": "object",
            "properties": {
                "verdict": {"type": "string", "enum": ["approve", "reject"]},
                "reason": {"type": "string"}
            },
            "required": ["verdict", "reason"],
            "additionalProperties": false
        }),
        fail_when: BTreeMap::from([("verdict".into(), vec![json!("reject")])]),
    }
}

#[tokio::test]
async fn a_reject_verdict_fails_the_step_with_its_reason_and_keeps_the_outputs() {
    let server = FakeClaude::start(vec![Turn::new()
        .text_block(&["Looking."])
        .tool_use(
            "toolu_1",
            "finish",
            &json!({"verdict": "reject", "reason": "hello.txt is missing"}),
        )
        .reply()]);
    let mut step = Step::new(&server);
    step.tools = vec![];
    step.result = Some(verdict_contract());
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    assert_eq!(
        finished.reason.as_deref(),
        Some("verdict \"reject\": hello.txt is missing")
    );
    assert_eq!(finished.outputs["verdict"], "reject");
    assert_eq!(finished.outputs["reason"], "hello.txt is missing");
    // The finish tool was offered with the result schema as its input schema, even with no
    // other tool.
    let request = &server.requests()[0];
    assert_eq!(request.body["tools"][0]["name"], "finish");
    assert_eq!(
        request.body["tools"][0]["input_schema"],
        verdict_contract().schema
    );
    assert_eq!(json_of(&lines, Stream::ToolCall)[0]["name"], "finish");
}

#[tokio::test]
async fn a_wrong_finish_shape_goes_back_to_the_model_to_correct() {
    let server = FakeClaude::start(vec![
        Turn::new()
            .tool_use("toolu_1", "finish", &json!({"verdict": "LGTM"}))
            .reply(),
        Turn::new()
            .tool_use(
                "toolu_2",
                "finish",
                &json!({"verdict": "approve", "reason": "fine"}),
            )
            .reply(),
    ]);
    let mut step = Step::new(&server);
    step.result = Some(verdict_contract());
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
    assert_eq!(finished.outputs["verdict"], "approve");
    assert_eq!(
        serde_json::from_str::<Value>(&finished.outputs["result"]).unwrap(),
        json!({"verdict": "approve", "reason": "fine"})
    );
    let requests = server.requests();
    let results = requests[1].tool_results();
    assert_eq!(results[0]["is_error"], true);
    let error = results[0]["content"].as_str().unwrap();
    assert!(error.contains("\"LGTM\" is not one of"), "{error}");
    assert!(
        error.contains("\"reason\" is a required property"),
        "{error}"
    );
}

#[tokio::test]
async fn four_wrong_finish_shapes_fail_the_step() {
    let calls: Vec<Reply> = (0..4)
        .map(|i| {
            Turn::new()
                .tool_use(&format!("toolu_{i}"), "finish", &json!({"verdict": 1}))
                .reply()
        })
        .collect();
    let server = FakeClaude::start(calls);
    let mut step = Step::new(&server);
    step.result = Some(verdict_contract());
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    let reason = finished.reason.unwrap();
    assert!(
        reason.contains("does not match the result schema 4 times"),
        "{reason}"
    );
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn a_step_with_a_result_that_ends_without_finish_fails_saying_so() {
    let server = FakeClaude::start(vec![Turn::text(&["I approve."]).reply()]);
    let mut step = Step::new(&server);
    step.result = Some(verdict_contract());
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    assert!(
        finished
            .reason
            .as_deref()
            .unwrap()
            .starts_with("the conversation ended without a finish call"),
        "{finished:?}"
    );
}

#[tokio::test]
async fn a_finish_on_the_last_turn_is_still_taken() {
    let server = FakeClaude::start(vec![Turn::new()
        .tool_use(
            "toolu_1",
            "finish",
            &json!({"verdict": "approve", "reason": "ok"}),
        )
        .reply()]);
    let mut step = Step::new(&server);
    step.max_turns = Some(1);
    step.result = Some(verdict_contract());
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_succeeded(&finished);
}

#[tokio::test]
async fn a_reply_cut_at_max_tokens_fails_the_step() {
    // regression: the cut reply was the step's `result` and the step succeeded.
    let server = FakeClaude::start(vec![Turn::text(&["The answer is"])
        .stop_reason("max_tokens")
        .reply()]);
    let step = Step::new(&server);
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    assert_eq!(
        finished.reason.as_deref(),
        Some("the model's reply was cut at max_tokens (8192) before it ended")
    );
    // With a result: a cut tool call is not run either.
    let server = FakeClaude::start(vec![Turn::new()
        .tool_use("toolu_1", "finish", &json!({"verdict": "approve"}))
        .stop_reason("max_tokens")
        .reply()]);
    let mut step = Step::new(&server);
    step.result = Some(verdict_contract());
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_eq!(
        finished.reason.as_deref(),
        Some("the model's reply was cut at max_tokens (8192) before it ended or called finish")
    );
}

/// Sonnet's prices as the engine sends them (budget.rs).
fn sonnet_budget(max_tokens: Option<u64>, max_cost_micros: Option<u64>) -> protocol::Budget {
    protocol::Budget {
        max_tokens,
        max_cost_micros,
        prices: Some(protocol::Price {
            model: settings::DEFAULT_MODEL.into(),
            input: 3_000_000,
            output: 15_000_000,
            cache_write: 3_750_000,
            cache_read: 300_000,
        }),
        run_budget: None,
    }
}

#[tokio::test]
async fn a_stream_passing_max_cost_is_dropped_mid_turn_and_nothing_follows() {
    // 10,000 input tokens cost 0.03; $0.031 leaves 66 output tokens once the input is
    // known. The model streams 500 text deltas (at least one token each) and would then
    // call a tool.
    let pieces: Vec<String> = (0..500).map(|i| format!("w{i} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let server = FakeClaude::start(vec![
        Turn::new()
            .usage(10_000, 500)
            .text_block(&pieces)
            .tool_use("toolu_1", "list_files", &json!({}))
            .reply(),
        Turn::text(&["never asked for"]).reply(),
    ]);
    let mut step = Step::new(&server);
    step.budget = Some(sonnet_budget(None, Some(31_000)));
    let (finished, lines) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    let reason = finished.reason.unwrap();
    assert!(
        reason.starts_with(
            "budget: max_cost_usd 0.031 reached (spent 0.03099 USD, 10,066 tokens in 1 call)"
        ),
        "{reason}"
    );
    // Nothing billed beyond the turn that reached the limit: one request, cut at the
    // 66th delta (a 67th token would pass); the request asked for no more output than the budget left before the
    // input was known ($0.031 / $15 per million).
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body["max_tokens"], 2_066);
    let usage = finished.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (10_000, 66));
    assert_eq!(finished.model.as_deref(), Some(settings::DEFAULT_MODEL));
    let tokens = of(&lines, Stream::Token).concat();
    assert!(
        tokens.contains("w64 ") && !tokens.contains("w65 "),
        "{tokens}"
    );
    assert!(of(&lines, Stream::ToolCall).is_empty());
    let system = of(&lines, Stream::System).join("\n");
    assert!(
        system.contains("llm budget: max_cost_usd 0.031"),
        "{system}"
    );
}

#[tokio::test]
async fn max_tokens_refuses_the_call_whose_input_alone_would_pass_it() {
    let server = FakeClaude::start(vec![
        Turn::new()
            .usage(600, 100)
            .tool_use("toolu_1", "list_files", &json!({}))
            .reply(),
        Turn::text(&["done"]).usage(800, 10).reply(),
    ]);
    let mut step = Step::new(&server);
    // 700 spent; the next request would send those 700 again: 1,400 > 1,000.
    step.budget = Some(protocol::Budget {
        max_tokens: Some(1_000),
        ..protocol::Budget::default()
    });
    let (finished, _) = step.run(&CancellationToken::new()).await;
    let reason = finished.reason.unwrap();
    assert_eq!(
        reason,
        "budget: max_tokens 1,000 reached (spent 700 tokens in 1 call); the next request's \
         input alone (about 700 tokens) would pass it"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn max_turns_counts_retried_requests_exactly() {
    // regression: a retried turn was not counted, so max_turns=2 made 3 requests here (a
    // 529, the retry calling a tool, a third turn) and the step succeeded.
    let server = FakeClaude::start(vec![
        Reply::error(529, "overloaded_error", "Overloaded"),
        Turn::new()
            .tool_use("toolu_1", "list_files", &json!({}))
            .reply(),
        Turn::text(&["third request"]).reply(),
    ]);
    let mut step = Step::new(&server);
    step.max_turns = Some(2);
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    assert_eq!(
        finished.reason.as_deref(),
        Some("max_turns (2) reached: 2 requests to the model were made (1 of them retries)")
    );
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.remaining(), 1);
}

#[tokio::test]
async fn a_cut_and_retried_stream_is_counted_as_streamed() {
    // regression: the usage of a stream cut before message_stop was dropped.
    let server = FakeClaude::start(vec![
        Turn::text(&["a", "b", "c"]).usage(1_000, 3).cut_after(5),
        Turn::text(&["abc"]).usage(1_000, 2).reply(),
    ]);
    let step = Step::new(&server);
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert_eq!(finished.outcome, Outcome::Succeeded);
    let usage = finished.usage.unwrap();
    assert_eq!(usage.input_tokens, 2_000);
    assert!(usage.output_tokens > 2, "{usage:?}");
}

#[tokio::test]
async fn a_cost_limit_for_another_model_fails_before_any_request() {
    let server = FakeClaude::start(vec![Turn::text(&["hi"]).reply()]);
    let mut step = Step::new(&server);
    let mut budget = sonnet_budget(None, Some(1_000_000));
    budget.prices.as_mut().unwrap().model = "claude-haiku-4-5".into();
    step.budget = Some(budget);
    let (finished, _) = step.run(&CancellationToken::new()).await;
    assert!(
        finished
            .reason
            .as_deref()
            .unwrap()
            .contains("is priced for model claude-haiku-4-5"),
        "{:?}",
        finished.reason
    );
    assert!(server.requests().is_empty());
}
