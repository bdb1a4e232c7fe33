//! What the MCP end-to-end tests (`mcp.rs`, `mcp_attacks.rs`) share: the project's test
//! servers (`testkit/mcp/`), a workflow of one `llm` step with `mcp=`, `plue lock` and
//! `plue run` in a sandbox, and reading what the scripted model was sent.

use std::path::PathBuf;

use serde_json::Value;
use testkit::claude::{FakeClaude, Recorded};

use super::Sandbox;

/// The absolute path of test server `<name>` (`testkit/mcp/`): the copy
/// `scripts/mcp/install.sh` made where every step user can read it (`PLUE_MCP_SERVERS`)
/// when there is one — a checkout under `/tmp` is out of a step's room, which has a `/tmp`
/// of its own — else the checkout's.
pub(crate) fn test_server(name: &str) -> String {
    let installed = std::env::var_os("PLUE_MCP_SERVERS")
        .map(|dir| PathBuf::from(dir).join(name))
        .filter(|path| path.is_file());
    installed
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../testkit/mcp")
                .join(name)
        })
        .canonicalize()
        .expect("a test server")
        .display()
        .to_string()
}

/// Whether the tests run as root (then a runner gives each step a user of its own).
pub(crate) fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `w.plue.py` with one `llm` step `agent` of `max_turns` whose `mcp=` is `servers`
/// (Python source), then `extra` (more keyword arguments, each after a comma).
pub(crate) fn write_workflow(sandbox: &Sandbox, max_turns: u32, servers: &str, extra: &str) {
    let source = format!(
        "def workflow():\n    return Plan(name=\"mcp\", triggers=[Trigger.manual()], steps=[\n        \
         Step.llm(\"agent\", prompt=\"Use the tools.\", tools=[\"read_file\"], max_turns={max_turns},\n                 \
         mcp={servers}{extra}),\n    ])\n"
    );
    std::fs::write(sandbox.path("w.plue.py"), source).unwrap();
}

/// `git init` in the sandbox, once (`plue lock` writes at a repository's root).
pub(crate) fn git_init(sandbox: &Sandbox) {
    if !sandbox.path(".git").exists() {
        let init = std::process::Command::new("git")
            .args(["init", "-q", "."])
            .current_dir(sandbox.path(""))
            .status()
            .unwrap();
        assert!(init.success());
    }
}

/// [`git_init`], then `plue lock` with `env`: whether it succeeded, and its stdout and
/// stderr.
pub(crate) fn try_lock(sandbox: &Sandbox, env: &[(&str, &str)]) -> (bool, String) {
    git_init(sandbox);
    let mut command = sandbox.plue(&["lock"]);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    let text = format!("{}\n{}", super::stdout(&output), super::stderr(&output));
    (output.status.success(), text)
}

/// [`try_lock`] that must succeed: the lock file it wrote.
pub(crate) fn lock(sandbox: &Sandbox) -> Value {
    let (ok, text) = try_lock(sandbox, &[]);
    assert!(ok, "{text}");
    serde_json::from_str(&std::fs::read_to_string(sandbox.path(".plue/lock.json")).unwrap())
        .unwrap()
}

/// `plue run w.plue.py` against `server` with `--secret` each of `secrets`: whether it
/// succeeded, and its stdout and stderr.
pub(crate) fn run(sandbox: &Sandbox, server: &FakeClaude, secrets: &[&str]) -> (bool, String) {
    let mut args = vec!["w.plue.py".to_owned()];
    for secret in secrets {
        args.push("--secret".into());
        args.push((*secret).to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = sandbox.plue_run_llm(server.url(), &args);
    let text = format!("{}\n{}", super::stdout(&output), super::stderr(&output));
    (output.status.success(), text)
}

/// The names of the tools `request` offered the model.
pub(crate) fn tool_names(request: &Recorded) -> Vec<String> {
    request.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The `content` of the tool result answering `id` in `request`, and whether it is an error.
pub(crate) fn result_of(request: &Recorded, id: &str) -> (String, bool) {
    let results = request.tool_results();
    let result = results
        .iter()
        .find(|r| r["tool_use_id"] == id)
        .unwrap_or_else(|| panic!("no result for {id}: {results:?}"));
    let content = match &result["content"] {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    (content, result["is_error"] == true)
}
