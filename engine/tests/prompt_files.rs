//! End to end: `plue run` of a workflow file kept in one repository (A) against another
//! directory (B) reads its llm steps' `prompt_file`s from A — the engine reads them when
//! the step is claimed and sends their text — confined to A exactly as a runner confines
//! them to its workspace: `..` above A (already refused by validation) and a symbolic link
//! out of A are refused.

use std::path::Path;
use std::process::Output;

use crate::support::{plain_plue, printed};
use serde_json::Value;
use testkit::claude::{FakeClaude, Turn};

const KEY: &str = "sk-ant-e2e-prompt-files-7c1d";

/// What a file outside A holds: no request may ever carry it.
const OUTSIDE: &str = "TOP SECRET outside the workflow's repository";

/// Repository A (a git work tree: `.git` marks it) with its workflow under `pipelines/`,
/// whose llm step reads `prompt_file`, and `prompts/x.md`; and directory B (no prompts).
fn layout(prompt_file: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let top = tempfile::tempdir().unwrap();
    let a = top.path().join("a");
    let b = top.path().join("b");
    for dir in [
        a.join(".git"),
        a.join("pipelines"),
        a.join("prompts"),
        b.clone(),
    ] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(
        a.join("prompts/x.md"),
        "---\nname: x\ndescription: A's prompt\n---\nSummarise B, as A's prompt asks.\n",
    )
    .unwrap();
    std::fs::write(top.path().join("outside.md"), OUTSIDE).unwrap();
    std::fs::write(b.join("notes.txt"), "B's notes\n").unwrap();
    std::fs::write(
        a.join("pipelines/w.plue.py"),
        format!(
            "def workflow():\n    return Plan(name=\"p\", triggers=[Trigger.manual()], steps=[\n        \
             Step.llm(\"summary\", prompt_file={prompt_file:?}, tools=[]),\n    ])\n"
        ),
    )
    .unwrap();
    (top, a, b)
}

/// `plue run A/pipelines/w.plue.py` in B, its llm step talking to `base_url`.
fn plue_run(a: &Path, b: &Path, base_url: &str) -> Output {
    plain_plue()
        .current_dir(b)
        .env("ANTHROPIC_BASE_URL", base_url)
        .env_remove("ANTHROPIC_API_KEY")
        .arg("run")
        .arg(a.join("pipelines/w.plue.py"))
        .args(["--runners", "1"])
        .args(["--secret", &format!("ANTHROPIC_API_KEY={KEY}")])
        .output()
        .expect("plue runs")
}

#[test]
fn a_prompt_file_is_read_from_the_workflow_files_repository() {
    let server = FakeClaude::start(vec![Turn::text(&["done"]).usage(10, 1).reply()]);
    let (_top, a, b) = layout("prompts/x.md");
    let output = plue_run(&a, &b, server.url());
    let text = printed(&output);
    assert!(output.status.success(), "{text}");
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{text}");
    assert_eq!(
        requests[0].body["messages"][0]["content"],
        Value::from("Summarise B, as A's prompt asks.\n")
    );
    // B is untouched: no prompt was copied into it.
    assert!(!b.join("prompts").exists());
}

#[test]
fn a_prompt_file_climbing_out_of_the_workflow_files_repository_is_refused() {
    let server = FakeClaude::start(vec![]);
    let (_top, a, b) = layout("../../etc/passwd");
    let output = plue_run(&a, &b, server.url());
    let text = printed(&output);
    // The evaluator's validation refuses it before anything runs (the engine's read, which
    // would refuse it too, is `prompts::resolve_text`'s unit tests' to show).
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(
            "prompt_file '../../etc/passwd' must be a relative path inside the repository"
        ),
        "{text}"
    );
    assert!(!text.contains("root:"), "{text}");
    assert!(server.requests().is_empty());
}

#[test]
fn a_prompt_file_linking_out_of_the_workflow_files_repository_is_refused() {
    let server = FakeClaude::start(vec![]);
    let (top, a, b) = layout("prompts/evil.md");
    std::os::unix::fs::symlink(top.path().join("outside.md"), a.join("prompts/evil.md")).unwrap();
    let output = plue_run(&a, &b, server.url());
    let text = printed(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "prompt file `prompts/evil.md` leads out of the workspace through a symbolic link"
        ),
        "{text}"
    );
    assert!(!text.contains(OUTSIDE), "{text}");
    assert!(server.requests().is_empty());
}
