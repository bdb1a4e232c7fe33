//! The issue-to-pr example as end-to-end tests serve it: its files as a forge's first
//! commit ([`seed`]) and its scripted Claude with the fixer first hunting for a forge
//! token ([`claude`]); used by `issue_to_pr.rs` (a personal token) and `github_app.rs`
//! (installation tokens).

use std::path::Path;

use serde_json::{json, Value};
use testkit::claude::{script, FakeClaude, Recorded};

/// The example workflow.
pub(crate) const WORKFLOW: &str = "examples/agents/issue-to-pr.plue.py";

/// The example's files, at the paths the workflow names, as the forge's first commit.
pub(crate) fn seed(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in [
        WORKFLOW,
        "examples/agents/prompts/issue-investigator.md",
        "examples/agents/prompts/issue-fixer.md",
        "examples/agents/prompts/issue-reviewer.md",
        "examples/agents/prompts/issue-publisher.md",
        "examples/agents/demo/greet.sh",
        "examples/agents/demo/test.sh",
    ] {
        let to = dir.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(file), &to).unwrap();
    }
}

/// The example's script, with the fixer first hunting for the forge token: every place a
/// step could find it is searched for `token` (split in the command and given to grep as
/// a pattern file, so no command line of the hunt holds it) — the whole file system but
/// build output and toolchains (cargo's `target*`, `/usr`, `.cargo`, `.rustup`, ...), which
/// the engine never writes and whose gigabytes the tool's 120 s would not cover; what it
/// finds goes back to the model, whose requests the test reads.
pub(crate) fn claude(token: &str, attack: Option<Value>) -> FakeClaude {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agents/scripts/issue-to-pr.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (a, b) = token.split_at(token.len() / 2);
    let hunt = format!(
        r#"t="{a}""{b}"; echo "uid: $(id)"
{{ env; for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do tr '\0' '\n' < "$f"; done
   cat .git/config; git config --list --show-origin; cat ~/.git-credentials ~/.gitconfig; }} 2>/dev/null | grep -F -f <(printf '%s\n' "$t") | sed 's/^/FOUND-IN-PROCESS-OR-CONFIG: /'
grep -rslF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev --exclude-dir=usr --exclude-dir='target*' --exclude-dir=.cargo --exclude-dir=.rustup --exclude-dir=.pyenv --exclude-dir=.mirror --exclude-dir=.library -f <(printf '%s\n' "$t") / 2>/dev/null | sed 's/^/FOUND-IN-FILE: /'
echo hunt-done"#
    );
    let replies = doc["replies"].as_array_mut().unwrap();
    let first_fix = replies
        .iter()
        .position(|r| r["when"] == "You are the fixer")
        .unwrap();
    replies.insert(
        first_fix,
        json!({"when": "You are the fixer", "text": "Looking around first.",
               "tool_uses": [{"id": "toolu_hunt", "name": "bash", "input": {"command": hunt}}]}),
    );
    if let Some(reply) = attack {
        replies.insert(first_fix, reply);
    }
    FakeClaude::start_routed(script::parse(&doc.to_string()).unwrap())
}

/// Asserts the fixer's token hunt ([`claude`]) ran and found nothing: its result went back
/// to the model in one of `requests`, finished, with no `FOUND-` line.
pub(crate) fn assert_the_hunt_found_nothing(requests: &[Recorded]) {
    let hunted = requests
        .iter()
        .flat_map(|r| r.tool_results())
        .map(|t| t.to_string())
        .find(|t| t.contains("toolu_hunt"))
        .expect("the hunt's result went back to the model");
    assert!(hunted.contains("hunt-done"), "{hunted}");
    assert!(!hunted.contains("FOUND-"), "{hunted}");
}

/// What the example's scripted fixer writes to `path` (its `write_file` call).
pub(crate) fn written_by_the_fixer(path: &str) -> String {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agents/scripts/issue-to-pr.json");
    let script: Value = serde_json::from_str(&std::fs::read_to_string(script).unwrap()).unwrap();
    script["replies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["tool_uses"].as_array().cloned().unwrap_or_default())
        .find(|t| t["name"] == "write_file" && t["input"]["path"] == path)
        .expect("the fixer's write_file")["input"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}
