//! End to end: the run record and getting results back, through the real `plue` binary.
//! - a real run (manual inputs, a review loop whose reviewer is an `llm` step against the
//!   scripted Messages API, an artifact, an approval) writes a `--summary-json` record, and
//!   `plue runs show RUN --json` prints one, both valid against the published schema
//!   (docs/src/reference/generated/run-record.schema.json) and holding what was promised:
//!   inputs, every attempt with runner and times, every round's outputs, usage and cost,
//!   the artifact, who approved;
//! - `plue --log-format json run` writes only JSON lines on stderr, step lines among them,
//!   and with `--log-file PATH` the same lines to PATH as well.

use crate::support;
use std::path::Path;
use std::process::Output;

use crate::support::{printed, Sandbox};
use serde_json::{json, Value};
use testkit::claude::{FakeClaude, Reply, Turn};

/// The published schema, as a validator.
fn schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/src/reference/generated/run-record.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("the published schema is a JSON Schema")
}

fn assert_valid(validator: &jsonschema::Validator, record: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(record)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{record:#}");
}

const PIPELINE: &str = r#"def workflow(ctx):
    return Plan(name="record", triggers=[Trigger.manual(inputs={
            "target": {"default": "staging", "options": ["staging", "production"]},
            "note": {"required": True},
        })], steps=[
        Step.bash("code", 'echo "round $(ls rounds 2>/dev/null | wc -l)" > out.txt; mkdir -p rounds; touch rounds/$RANDOM; echo "file=out.txt" >> "$PLUE_OUTPUT"',
                  artifacts=["out.txt"]),
        Step.llm("review", prompt="REVIEWER: review out.txt for %s" % ctx.inputs.get("target"), result="verdict",
                 tools=["read_file"], depends_on=["code"], loop_to="code", max_loops=2),
        Step.approval("gate", message="ship it?", depends_on=["review"]),
        Step.bash("ship", 'echo "shipping {{ steps.review.outputs.verdict }}"', depends_on=["gate"]),
    ])
"#;

fn review(id: &str, input: Value) -> Reply {
    Turn::new().tool_use(id, "finish", &input).reply()
}

/// The scripted reviewer: rejects round 1, approves round 2.
fn reviewer() -> FakeClaude {
    FakeClaude::start(vec![
        review(
            "toolu_r1",
            json!({"verdict": "reject", "reason": "say more"}),
        ),
        review("toolu_r2", json!({"verdict": "approve", "reason": "good"})),
    ])
}

/// How [`PIPELINE`] is run: by hand, with its input, its gate approved.
const PIPELINE_ARGS: [&str; 6] = [
    "--event",
    "manual",
    "--input",
    "note=hello",
    "--approve",
    "gate",
];

fn run_pipeline(sandbox: &Sandbox, server: &FakeClaude, extra: &[&str]) -> Output {
    sandbox.write("w.plue.py", PIPELINE);
    let mut args = vec!["w.plue.py", "--runners", "1"];
    args.extend_from_slice(&PIPELINE_ARGS);
    args.extend_from_slice(extra);
    sandbox.plue_run_llm(server.url(), &args)
}

#[test]
fn a_real_runs_record_is_complete_and_valid_against_the_published_schema() {
    let server = reviewer();
    let sandbox = Sandbox::new("run-record");
    let output = run_pipeline(&sandbox, &server, &["--summary-json", "record.json"]);
    assert!(output.status.success(), "{}", printed(&output));
    let validator = schema();
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(sandbox.path("record.json")).unwrap())
            .unwrap();
    assert_valid(&validator, &summary);

    let shown = sandbox
        .plue(&["runs", "show", "1", "--json"])
        .env_remove("PLUE_DATA_DIR")
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", printed(&shown));
    let record: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_valid(&validator, &record);
    assert_eq!(record, summary, "one record, wherever it is read");
    // The schema holds the record to its shape: a wrong type anywhere is found.
    for (pointer, wrong) in [
        ("/attempt_records/0/attempt", json!("one")),
        ("/steps/0/exit_code", json!("0")),
        ("/approvals/0/decided_by", json!(null)),
        ("/plan_hash", json!(7)),
    ] {
        let mut broken = record.clone();
        *broken.pointer_mut(pointer).unwrap() = wrong;
        assert!(!validator.is_valid(&broken), "{pointer} accepted");
    }

    // The run: its event, inputs (the default filled), plan hash, times.
    assert_eq!(record["run_id"], 1);
    assert_eq!(record["event"], "manual");
    assert_eq!(
        record["inputs"],
        json!({"target": "staging", "note": "hello"})
    );
    assert!(record["plan_hash"].as_str().is_some_and(|h| !h.is_empty()));
    for key in ["created_at", "started_at", "finished_at"] {
        assert!(record[key].is_i64(), "{key}: {record:#}");
    }
    // Every attempt: code and review twice (the loop), with runner, times, exit codes.
    let attempts = record["attempt_records"].as_array().unwrap();
    let of =
        |step: &str| -> Vec<&Value> { attempts.iter().filter(|a| a["step"] == step).collect() };
    assert_eq!(of("code").len(), 2, "{attempts:#?}");
    let reviews = of("review");
    assert_eq!(reviews.len(), 2);
    assert_eq!(
        (&reviews[0]["iteration"], &reviews[0]["status"]),
        (&json!(1), &json!("failed"))
    );
    assert!(reviews[0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("say more")));
    assert_eq!(reviews[1]["iteration"], 2);
    for attempt in of("code").into_iter().chain(reviews.iter().copied()) {
        assert!(attempt["runner"].is_string(), "{attempt}");
        assert!(attempt["started_at"].as_i64() <= attempt["finished_at"].as_i64());
    }
    assert!(
        reviews[1]["usage"]["input_tokens"].is_u64(),
        "{:#}",
        reviews[1]
    );
    // Every round's outputs, the rejected one too.
    let rounds: Vec<(&Value, &Value)> = record["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["step"] == "review")
        .map(|r| (&r["round"], &r["outputs"]["verdict"]))
        .collect();
    assert_eq!(
        rounds,
        [
            (&json!(1), &json!("reject")),
            (&json!(2), &json!("approve"))
        ]
    );
    // The steps' view (as the API's): loop iteration, usage.
    let steps = record["steps"].as_array().unwrap();
    assert_eq!(steps[1]["id"], "review");
    assert_eq!(steps[1]["iteration"], 2);
    assert_eq!(record["loops"][0]["loops_taken"], 1);
    assert!(record["usage"]["output_tokens"].is_u64(), "{record:#}");
    // The artifact (every attempt's) and who approved.
    let artifacts = record["artifacts"].as_array().unwrap();
    assert!(
        artifacts
            .iter()
            .any(|a| a["step"] == "code" && a["name"] == "out.txt"),
        "{artifacts:#?}"
    );
    assert_eq!(record["approvals"][0]["step_id"], "gate");
    assert_eq!(record["approvals"][0]["decision"], "approved");
    assert_eq!(record["approvals"][0]["decided_by"], "plue run --approve");
    assert_eq!(record["proposals"], json!([]));

    // For people: the same record as text.
    let text = sandbox
        .plue(&["runs", "show", "1"])
        .env_remove("PLUE_DATA_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("run 1 succeeded (manual of record"), "{text}");
    assert!(text.contains("review #2"), "{text}");
}

#[test]
fn a_missing_run_is_a_clear_error() {
    let sandbox = Sandbox::new("run-record-missing");
    std::fs::create_dir_all(sandbox.path(".plue")).unwrap();
    let output = sandbox
        .plue(&["runs", "show", "7", "--json", "--data-dir", ".plue"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no run 7"),
        "{}",
        printed(&output)
    );
}

#[test]
fn log_format_json_is_only_json_on_stderr_with_every_step_line_as_an_event() {
    let server = reviewer();
    let sandbox = Sandbox::new("run-record-json-log");
    sandbox.write("w.plue.py", PIPELINE);
    let output = sandbox
        .plue(&["--log-format", "json", "run", "w.plue.py", "--runners", "1"])
        .args(PIPELINE_ARGS)
        .args([
            "--secret",
            &format!("ANTHROPIC_API_KEY={}", support::LLM_KEY),
        ])
        .env_remove("PLUE_DATA_DIR")
        .env_remove("PLUE_LOG")
        .env_remove("ANTHROPIC_API_KEY")
        .env("ANTHROPIC_BASE_URL", server.url())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", printed(&output));
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    let events: Vec<Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["fields"]["message"].as_str())
        .collect();
    assert!(messages.contains(&"run started"), "{messages:?}");
    assert!(messages.contains(&"run finished"), "{messages:?}");
    // Every line of a step is an event with its step, attempt, stream, seq and time.
    let lines: Vec<&Value> = events
        .iter()
        .filter(|e| e["target"] == "plue::step")
        .map(|e| &e["fields"])
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["step"] == "code" && l["stream"] == "system" && l["attempt"] == 2),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["step"] == "ship" && l["text"] == "shipping approve"),
        "{lines:#?}"
    );
    for line in &lines {
        for key in ["seq", "ts", "attempt"] {
            assert!(line[key].is_i64(), "{key}: {line}");
        }
        assert!(
            line["stream"].is_string() && line["text"].is_string(),
            "{line}"
        );
    }
    // Status changes too: the loop going back after the review failed. Its reason is in the
    // event when the printer read the step before its second iteration ended: it reads at
    // most every 50 ms, and the `code` step's second iteration can take less (then the
    // event says the iteration without it, as the terminal line does).
    let loop_back = events
        .iter()
        .find(|e| {
            e["target"] == "plue::status"
                && e["fields"]["step"] == "code"
                && e["fields"]["iteration"] == 2
                && e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("↺ iteration 2"))
        })
        .unwrap_or_else(|| panic!("no loop-back event: {stderr}"));
    let reason = loop_back["fields"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.is_empty() || reason.contains("'review' failed, back to 'code'"),
        "{loop_back}"
    );
}

/// `--log-file PATH` appends the JSON lines of stderr to PATH too, step lines included
/// (regression: there was no such option; a log collector had only the stream).
#[test]
fn log_file_holds_the_same_json_lines_as_stderr() {
    let sandbox = Sandbox::new("run-log-file");
    sandbox.write(
        "w.plue.py",
        "def workflow(ctx):\n    return Plan(name='logged', steps=[Step.bash('hello', 'echo hello from the step')])\n",
    );
    let output = sandbox
        .plue(&["--log-format", "json", "--log-file", "plue.log"])
        .args(["run", "w.plue.py", "--runners", "1"])
        .env_remove("PLUE_DATA_DIR")
        .env_remove("PLUE_LOG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", printed(&output));
    let file = std::fs::read_to_string(sandbox.path("plue.log")).unwrap();
    let events: Vec<Value> = file
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    assert!(
        events.iter().any(|e| e["target"] == "plue::step"
            && e["fields"]["step"] == "hello"
            && e["fields"]["text"] == "hello from the step"),
        "{file}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "run finished"),
        "{file}"
    );
    // The same lines as on stderr.
    assert_eq!(file, String::from_utf8(output.stderr).unwrap());
    // Private to the user: a log holds what steps printed.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sandbox.path("plue.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");

    // Text logs are not JSON lines: asking for a file of them is a usage error.
    let output = sandbox
        .plue(&["--log-file", "text.log", "eval", "w.plue.py"])
        .env_remove("PLUE_LOG_FORMAT")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    assert!(
        printed(&output).contains("--log-format json"),
        "{}",
        printed(&output)
    );
}
