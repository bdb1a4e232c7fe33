//! End-to-end tests of step outputs as data, driving the real `plue run`: an upstream step
//! records outputs an attacker would write (command substitutions, quotes, a second line),
//! and downstream `bash` and `python` steps print them through every documented form —
//! the text must come out literally and nothing in it may run. Also the dispatch-time
//! template bomb of issue 10, now refused at validation.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn plue() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_plue"));
    command.env("NO_COLOR", "1").env_remove("PLUE_DATA_DIR");
    command
}

/// Runs `workflow` as `w.plue.py` with `plue run` in `dir`.
fn run_in(dir: &Path, workflow: &str) -> Output {
    std::fs::write(dir.join("w.plue.py"), workflow).unwrap();
    plue()
        .current_dir(dir)
        .args(["run", "w.plue.py", "--runners", "2"])
        .output()
        .expect("plue runs")
}

/// What step `id` printed, without the printer's own transition lines.
fn lines_of(output: &Output, id: &str) -> Vec<String> {
    let prefix = format!("{id} ");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split_once(" | ").map(|(_, text)| text.to_string()))
        .filter(|text| {
            !["▶ ", "✓ ", "✗ ", "↻ ", "- skipped", "■ "]
                .iter()
                .any(|m| text.starts_with(m))
        })
        .collect()
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn hostile_output_stays_text_in_bash_and_python() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let marker = marker.to_str().unwrap();
    // The upstream step records, without running them, an output with a command
    // substitution and a multi-line one whose second line is a command.
    let up = format!(
        r#"echo 'x=$(echo pwned > {marker})' >> "$PLUE_OUTPUT"; printf 'y<<END\nfirst\necho pwned > {marker}; `touch {marker}`\nEND\n' >> "$PLUE_OUTPUT""#
    );
    let down_bash = r#"echo {{ steps.up.outputs.x }}
echo "{{ steps.up.outputs.y }}"
echo 'quoted: {{ steps.up.outputs.x }}'
echo "env: $PLUE_OUTPUT_UP_X""#;
    let down_python = r#"print({{ steps.up.outputs.x }})
print('''{{ steps.up.outputs.y }}''')
import os; print("env: " + os.environ["PLUE_OUTPUT_UP_X"])"#;
    let workflow = format!(
        "def workflow():\n    return Plan(name='t', triggers=[Trigger.manual()], steps=[\n        Step.bash('up', {up:?}),\n        Step.bash('down-bash', {down_bash:?}, depends_on=['up']),\n        Step.python('down-python', {down_python:?}, depends_on=['up']),\n    ])\n"
    );
    let output = run_in(dir.path(), &workflow);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        !Path::new(marker).exists(),
        "an output ran as code\n{}",
        describe(&output)
    );
    let x = format!("$(echo pwned > {marker})");
    let y = [
        "first".to_string(),
        format!("echo pwned > {marker}; `touch {marker}`"),
    ];
    assert_eq!(
        lines_of(&output, "down-bash"),
        [
            x.clone(),
            y[0].clone(),
            y[1].clone(),
            format!("quoted: {x}"),
            format!("env: {x}")
        ],
        "{}",
        describe(&output)
    );
    assert_eq!(
        lines_of(&output, "down-python"),
        [x.clone(), y[0].clone(), y[1].clone(), format!("env: {x}")],
        "{}",
        describe(&output)
    );
}

#[test]
fn each_bomb_is_a_validation_error_in_milliseconds() {
    // regression (issue 10): a 1 KB plan nesting #each over @root.steps eight deep cost the
    // engine 15 s and 760 MB at dispatch.
    let dir = tempfile::tempdir().unwrap();
    let bomb = format!(
        "{}x{}",
        "{{#each @root.steps}}".repeat(8),
        "{{/each}}".repeat(8)
    );
    let workflow = format!(
        "def workflow():\n    return Plan(name='t', triggers=[Trigger.manual()], steps=[\n        Step.bash('a', 'true'),\n        Step.bash('b', {bomb:?}, depends_on=['a']),\n    ])\n"
    );
    let started = Instant::now();
    let output = run_in(dir.path(), &workflow);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("w.plue.py:")
            && stderr.contains("step 'b': command:")
            && stderr.contains("'@root'"),
        "{}",
        describe(&output)
    );
    assert!(lines_of(&output, "a").is_empty(), "nothing runs");
    // The whole process (start, evaluation, validation) — the template check itself is
    // microseconds; the bomb took 15 s.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
