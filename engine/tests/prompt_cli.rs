//! End-to-end tests of `plue prompt render` and `plue prompt check`, driving the real binary.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{stderr, stdout, workspace};

fn plue(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plue"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("plue runs")
}

const GREETING: &str = "---
name: greeting
description: Greets people
schema:
  type: object
  properties:
    names: {type: array, items: {type: string}}
    tone: {type: string, default: warm}
  required: [names]
---
{{#each names}}Hello {{this}}! {{/each}}({{tone}}, {{json names}})
";

#[test]
fn renders_a_builtin_with_inputs() {
    let dir = workspace(&[]);
    let output = plue(
        dir.path(),
        &[
            "prompt",
            "render",
            "builtin:code-review",
            "--input",
            r#"files=["src/lib.rs","src/main.rs"]"#,
            "--input",
            "focus=security",
            "--input",
            "base=origin/main",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("- `src/lib.rs`\n- `src/main.rs`\n"), "{text}");
    assert!(text.contains("**security**"), "{text}");
    assert!(text.contains("`origin/main`"), "{text}");
    assert!(!text.contains("{{"), "{text}");
}

#[test]
fn renders_a_file_with_inputs_from_json_and_flags() {
    let dir = workspace(&[
        ("prompts/greeting.md", GREETING),
        (
            "inputs.json",
            r#"{"names": ["Ada", "Linus"], "tone": "formal"}"#,
        ),
    ]);
    let output = plue(
        dir.path(),
        &[
            "prompt",
            "render",
            "prompts/greeting.md",
            "--inputs-json",
            "inputs.json",
            "--input",
            "tone=dry",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "Hello Ada! Hello Linus! (dry, [\"Ada\",\"Linus\"])\n"
    );
}

#[test]
fn a_missing_required_input_exits_2_naming_the_field() {
    let dir = workspace(&[("prompts/greeting.md", GREETING)]);
    let output = plue(
        dir.path(),
        &[
            "prompt",
            "render",
            "prompts/greeting.md",
            "--input",
            "tone=dry",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        stderr(&output),
        "error: prompts/greeting.md: input `/names`: is required but was not given\n"
    );
}

#[test]
fn an_unknown_builtin_exits_2() {
    let dir = workspace(&[]);
    let output = plue(dir.path(), &["prompt", "render", "builtin:nope"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "error: unknown built-in prompt `builtin:nope` (built-ins: bug-fix, code-review)\n"
    );
}

#[test]
fn check_reports_good_and_bad_prompts_and_exits_1() {
    let dir = workspace(&[
        ("prompts/greeting.md", GREETING),
        (
            "prompts/broken.md",
            "---\nname: broken\ndescription: d\nmax_turns: 0\n---\nHi\n",
        ),
        ("prompts/README.md", "# Our prompts\n"),
        ("src/notes.md", "not a prompt\n"),
    ]);
    let output = plue(dir.path(), &["prompt", "check"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "./prompts/broken.md:4: `max_turns` must be at least 1, got 0\n\
         ok ./prompts/greeting.md\n"
    );
    assert!(
        stderr(&output).contains("checked 2 prompt file(s): 1 valid, 1 invalid"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_of_a_valid_directory_exits_0() {
    let dir = workspace(&[("team/prompts/greeting.md", GREETING)]);
    let output = plue(dir.path(), &["prompt", "check", "team"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "ok team/prompts/greeting.md\n");
}
