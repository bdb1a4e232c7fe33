//! End to end: the agent pipeline of `examples/agents/review-loop.plue.py`, as shipped, run
//! by the real `plue` binary against the scripted Claude server with the scripts shipped
//! beside it (`examples/agents/scripts/`, read by `testkit::claude::script`, the format
//! `fake-claude` serves):
//! - a reviewer that never approves: the builder → tests → reviewer → verdict loop runs
//!   `max_loops` (2) more times, each builder reading the reviewer's feedback and each
//!   reviewer reading the builder's edit, then `plue run` fails with "verdict failed after
//!   2 loops back to builder" and nothing after the loop runs;
//! - a reviewer that approves the second iteration, under `plue serve`: the run goes on to
//!   the documenter, whose `docs/**` are listed as artifacts, waits at the approval step
//!   (run `waiting`, `ship` pending) and ships after `plue approve`, the `ship` step seeing
//!   the builder's reviewed code and the documenter's artifacts.
//!
//! Each test owns a [`Sandbox`] whose drop kills every process it started.

use crate::support;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{
    client, get_json, log_lines, printed, run_view, start_run, step, wait_for, wait_succeeded,
    Sandbox,
};
use serde_json::Value;
use testkit::claude::{script, FakeClaude, Recorded};

const KEY: &str = "sk-ant-agents-e2e-7c1d";
const WORKFLOW: &str = "examples/agents/review-loop.plue.py";
const GREET: &str = "examples/agents/demo/greet.sh";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// `ws/` in the sandbox holding a copy of `examples/agents/` (workflow, prompts, demo), the
/// repository the steps work on.
fn workspace(sandbox: &Sandbox) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("an entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("a file type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }
    let ws = sandbox.path("ws");
    copy(
        &repo_root().join("examples/agents"),
        &ws.join("examples/agents"),
    );
    ws
}

fn fake_claude(script_name: &str) -> FakeClaude {
    let path = repo_root()
        .join("examples/agents/scripts")
        .join(script_name);
    FakeClaude::start_routed(script::load(&path).expect("the example's script"))
}

/// The requests of the conversations whose prompt says `role` ("You are the builder").
fn conversations_of<'a>(requests: &'a [Recorded], role: &str) -> Vec<&'a Recorded> {
    requests
        .iter()
        .filter(|r| {
            r.body["messages"][0]["content"]
                .as_str()
                .is_some_and(|p| p.contains(role))
        })
        .collect()
}

/// The first requests of each conversation (one message: the prompt) of `role`.
fn prompts_of(requests: &[Recorded], role: &str) -> Vec<String> {
    conversations_of(requests, role)
        .into_iter()
        .filter(|r| r.body["messages"].as_array().map_or(0, Vec::len) == 1)
        .map(|r| {
            r.body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// What each `read_file` of the demo's `greet.sh` returned to `role`, in order.
fn files_read_by(requests: &[Recorded], role: &str) -> Vec<String> {
    conversations_of(requests, role)
        .into_iter()
        .filter_map(|r| {
            let messages = r.body["messages"].as_array()?;
            let asked = &messages.get(messages.len().checked_sub(2)?)?["content"];
            let read_greet = asked.as_array()?.iter().any(|b| {
                b["type"] == "tool_use" && b["name"] == "read_file" && b["input"]["path"] == GREET
            });
            read_greet.then(|| r.tool_results()[0]["content"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn a_review_that_never_approves_loops_max_loops_times_then_fails_the_run() {
    // Not at the same time as the other test's engine and runners (two cores).
    let _serial = support::serial_blocking();
    let sandbox = Sandbox::new("agents-rejected");
    let ws = workspace(&sandbox);
    let server = fake_claude("review-loop-rejected.json");
    let started = std::time::Instant::now();
    let secret = format!("ANTHROPIC_API_KEY={KEY}");
    let output = sandbox
        .plue_run_with_summary(WORKFLOW, "2", &["--secret", &secret])
        .env("ANTHROPIC_BASE_URL", server.url())
        .current_dir(&ws)
        .output()
        .expect("plue run");
    let said = printed(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("verdict failed after 2 loops back to builder"),
        "{said}"
    );
    assert!(said.contains("changes requested:"), "{said}");
    assert!(!said.contains(KEY), "{said}");

    let summary = sandbox.summary();
    assert_eq!(summary["status"], "failed", "{summary}");
    assert_eq!(
        summary["reason"], "verdict failed after 2 loops back to builder",
        "{summary}"
    );
    let status = |id: &str| -> (String, i64) {
        let s = summary["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no step {id}: {summary}"));
        (
            s["status"].as_str().unwrap().to_owned(),
            s["iteration"].as_i64().unwrap(),
        )
    };
    assert_eq!(status("planner"), ("succeeded".into(), 1));
    for id in ["builder", "tests", "reviewer"] {
        assert_eq!(status(id), ("succeeded".into(), 3), "{id}: {summary}");
    }
    assert_eq!(status("verdict"), ("failed".into(), 3));
    for id in ["documenter", "approve", "ship"] {
        assert_eq!(status(id).0, "skipped", "{id}: {summary}");
    }
    assert!(summary["artifacts"].as_array().unwrap().is_empty());

    // Every scripted turn was used: three builders, three reviewers, one planner.
    assert_eq!(server.remaining(), 0);
    let requests = server.requests();
    let builders = prompts_of(&requests, "You are the builder");
    assert_eq!(builders.len(), 3);
    assert!(
        !builders[0].contains("A reviewer rejected"),
        "{}",
        builders[0]
    );
    for prompt in &builders[1..] {
        assert!(
            prompt.contains("A reviewer rejected your previous attempt")
                && prompt.contains("document `--shout` there"),
            "{prompt}"
        );
    }
    // Each reviewer read the builder's edit, not the original file.
    let seen = files_read_by(&requests, "You are the reviewer");
    assert_eq!(seen.len(), 3);
    for content in &seen {
        assert!(content.contains("--shout"), "{content}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_review_documents_waits_for_approval_and_ships() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("agents-approved");
    let ws = workspace(&sandbox);
    let server = fake_claude("review-loop.json");
    let secret = format!("ANTHROPIC_API_KEY={KEY}");
    let extra = ["--heartbeat-ms", "200", "--secret", &secret];
    let engine = sandbox
        .serve_local_with_env("2", &extra, &[("ANTHROPIC_BASE_URL", server.url())])
        .await;
    let url = engine.url.as_str();
    let http = client();
    let run_id = start_run(&http, url, &ws.join(WORKFLOW), &ws).await;

    // The run waits at the approval, the loop and the documenter done.
    let run = wait_for(
        Duration::from_secs(90),
        "the approval step to wait",
        || async {
            let run = run_view(&http, url, run_id).await?;
            if matches!(run["status"].as_str(), Some("failed" | "cancelled")) {
                panic!("the run ended: {run}\n{}", sandbox.diagnostics());
            }
            (step(&run, "approve")["status"] == "waiting").then_some(run)
        },
    )
    .await;
    assert_eq!(run["status"], "waiting", "{run}");
    for (id, iteration) in [
        ("planner", 1),
        ("builder", 2),
        ("tests", 2),
        ("reviewer", 2),
        ("verdict", 2),
        ("documenter", 1),
    ] {
        assert_eq!(step(&run, id)["status"], "succeeded", "{id}: {run}");
        assert_eq!(step(&run, id)["iteration"], iteration, "{id}: {run}");
    }
    assert_eq!(step(&run, "ship")["status"], "pending", "{run}");
    assert_eq!(run["loops_taken"], 1, "{run}");
    assert_eq!(
        step(&run, "reviewer")["outputs"]["verdict"],
        "approve",
        "{run}"
    );

    // The documenter's docs are the run's artifacts.
    let listed = get_json(&http, &format!("{url}/api/runs/{run_id}/artifacts")).await;
    let names: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["step"].as_str().unwrap(), a["name"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("documenter", "docs/greet.md")], "{listed}");
    let doc =
        support::send_text(http.get(format!("{url}{}", listed[0]["url"].as_str().unwrap()))).await;
    assert!(doc.contains("greet.sh --shout plue"), "{doc}");

    // What the model saw: the reviewer read each iteration's edit, the second builder the
    // first review's feedback, the documenter the approved code.
    let requests = server.requests();
    let reviewed = files_read_by(&requests, "You are the reviewer");
    assert_eq!(reviewed.len(), 2, "{reviewed:?}");
    assert!(
        reviewed[0].contains("--shout") && !reviewed[0].contains("unknown option"),
        "{}",
        reviewed[0]
    );
    assert!(reviewed[1].contains("unknown option"), "{}", reviewed[1]);
    let builders = prompts_of(&requests, "You are the builder");
    assert_eq!(builders.len(), 2);
    assert!(
        builders[1].contains("reject unknown options with a usage message"),
        "{}",
        builders[1]
    );
    let documented = files_read_by(&requests, "You are the documenter");
    assert!(documented[0].contains("unknown option"), "{documented:?}");
    assert_eq!(server.remaining(), 0);

    // Approved, the run ships: the builder's code with the documenter's artifacts.
    let approved = sandbox
        .plue(&[
            "approve",
            &run_id.to_string(),
            "approve",
            "--comment",
            "ship it",
            "--server",
            url,
        ])
        .output()
        .expect("plue approve");
    assert!(approved.status.success(), "{}", printed(&approved));
    let run = wait_succeeded(&http, url, run_id, Duration::from_secs(60)).await;
    assert_eq!(
        step(&run, "approve")["reason"],
        "approved by admin",
        "{run}"
    );
    let shipped: Vec<String> = log_lines(&http, url, run_id, "ship")
        .await
        .expect("ship's logs")
        .iter()
        .filter_map(|l| l["text"].as_str().map(str::to_owned))
        .collect();
    assert!(
        shipped.iter().any(|l| l == "HELLO, SHIPPED") && shipped.iter().any(|l| l == "greet.md"),
        "{shipped:?}"
    );
}

#[test]
fn plue_run_with_approve_runs_the_example_as_the_readme_shows() {
    let _serial = support::serial_blocking();
    let sandbox = Sandbox::new("agents-run");
    let ws = workspace(&sandbox);
    let server = fake_claude("review-loop.json");
    let run = |server: &FakeClaude, extra: &[&str]| {
        let mut args = vec!["--secret", "ANTHROPIC_API_KEY"];
        args.extend_from_slice(extra);
        sandbox
            .plue_run_with_summary(WORKFLOW, "2", &args)
            .env("ANTHROPIC_BASE_URL", server.url())
            .env("ANTHROPIC_API_KEY", KEY)
            .current_dir(&ws)
            .output()
            .expect("plue run")
    };

    // A name that is not an approval step is refused (the run it started is cancelled, so
    // it gets a server of its own).
    let unused = FakeClaude::start(Vec::new());
    let refused = run(&unused, &["--approve", "ship"]);
    assert_eq!(refused.status.code(), Some(1), "{}", printed(&refused));
    assert!(
        printed(&refused).contains("--approve ship: step 'ship' is a bash step, not an approval"),
        "{}",
        printed(&refused)
    );

    let output = run(&server, &["--approve", "approve"]);
    let said = printed(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("↺ iteration 2"), "{said}");
    assert!(said.contains("HELLO, SHIPPED"), "{said}");
    let summary = sandbox.summary();
    assert_eq!(summary["status"], "succeeded", "{summary}");
    let artifacts: Vec<(&str, &str)> = summary["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["step"].as_str().unwrap(), a["name"].as_str().unwrap()))
        .collect();
    assert_eq!(artifacts, [("documenter", "docs/greet.md")], "{summary}");
    // Who decided the approval, and how, is in the record too.
    let approvals = summary["approvals"].as_array().expect("approvals");
    assert_eq!(approvals.len(), 1, "{summary}");
    assert_eq!(approvals[0]["step_id"], "approve");
    assert_eq!(approvals[0]["decision"], "approved");
    assert_eq!(approvals[0]["decided_by"], "plue run --approve");
    // `plue runs --json` over the same store: iterations (loops taken), artifacts and
    // the approval.
    let listed = sandbox
        .plue(&[
            "runs",
            "--json",
            "--data-dir",
            sandbox.path("data").to_str().unwrap(),
        ])
        .output()
        .expect("plue runs");
    assert!(listed.status.success(), "{}", printed(&listed));
    let runs: Value = serde_json::from_slice(&listed.stdout).expect("runs JSON");
    let last = &runs[0];
    assert_eq!(last["status"], "succeeded", "{runs}");
    assert_eq!(last["loops_taken"], 1, "{runs}");
    assert_eq!(last["approvals"][0]["decision"], "approved", "{runs}");
    assert_eq!(last["artifacts"][0]["name"], "docs/greet.md", "{runs}");
    assert_eq!(server.remaining(), 0);
}
