//! End-to-end tests of `plue eval` and `plue check`, driving the real binary.
//!
//! Golden files: `examples/golden/<example path with / as __>.json` hold the expected
//! `plue eval` output of every example; run with `PLUE_UPDATE_GOLDEN=1` to regenerate them.
//!
//! Why one file past ~600 lines: the command line end to end against the real binary, one
//! test per behaviour, sharing the example goldens and the output helpers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{stderr, stdout, workspace};

fn plue() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_plue"));
    command.current_dir(root());
    command
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(args: &[&str]) -> Output {
    plue().args(args).output().expect("plue runs")
}

fn eval_file(dir: &Path, name: &str, extra: &[&str]) -> Output {
    let path = dir.join(name);
    let mut args = vec!["eval", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walk(&root().join("examples"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".plue.py"))
        .collect();
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_example_evaluates_to_its_golden_plan() {
    let update = std::env::var_os("PLUE_UPDATE_GOLDEN").is_some();
    let files = example_files();
    assert!(files.len() >= 10, "examples: {files:?}");
    for file in files {
        let relative = file
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .to_string();
        let output = run(&["eval", &relative]);
        assert!(output.status.success(), "{relative}: {}", stderr(&output));
        let golden_name = relative
            .trim_start_matches("examples/")
            .trim_end_matches(".plue.py")
            .replace('/', "__")
            + ".json";
        let golden = root().join("examples/golden").join(golden_name);
        if update {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, stdout(&output)).unwrap();
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run with PLUE_UPDATE_GOLDEN=1",
                golden.display()
            )
        });
        assert_eq!(
            stdout(&output),
            expected,
            "{relative} differs from {}",
            golden.display()
        );
    }
}

#[test]
fn check_of_the_examples_passes() {
    let output = run(&["check", "examples"]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("valid, 0 invalid"),
        "{}",
        stderr(&output)
    );
}

/// `plue check FILE` checks exactly that file, as a directory's files are checked
/// (regression: it answered "not a directory"); a path that does not exist is an error.
#[test]
fn check_of_one_file_checks_that_file() {
    let invalid = "def workflow():\n    return Plan(name='x', steps=[\n        Step.bash('a', 'true', depend_on=['b'])])\n";
    let valid = "def workflow(ctx):\n    return Plan(name='v', steps=[Step.bash('a', 'true')])\n";
    let dir = workspace(&[("bad.plue.py", invalid), ("good.plue.py", valid)]);
    let good = dir.path().join("good.plue.py");
    let output = run(&["check", good.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("checked 1 workflow file(s): 1 valid, 0 invalid"),
        "{}",
        stderr(&output)
    );
    // Only the named file: the invalid one beside it is not read.
    let bad = dir.path().join("bad.plue.py");
    let output = run(&["check", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let want = format!("{}:3:9: TypeError", bad.display());
    assert!(stdout(&output).contains(&want), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("checked 1 workflow file(s): 0 valid, 1 invalid"),
        "{}",
        stderr(&output)
    );
    let missing = dir.path().join("missing.plue.py");
    let output = run(&["check", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("{}: no such file or directory", missing.display())),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_ci_example_has_the_documented_shape() {
    let output = run(&["eval", "examples/ci.plue.py"]);
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["name"], "CI Pipeline");
    assert_eq!(plan["plan_hash"].as_str().unwrap().len(), 64);
    let kinds: Vec<&str> = plan["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["push", "pull_request", "schedule", "manual"]);
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps[0]["id"], "test");
    assert_eq!(steps[0]["kind"], "bash");
    assert_eq!(steps[0]["timeout"], 600);
    assert_eq!(steps[0]["retries"], 2);
    assert_eq!(steps[1]["depends_on"], serde_json::json!(["test"]));
    assert_eq!(steps[2]["kind"], "python");
    assert_eq!(steps[3]["kind"], "llm");
    assert_eq!(steps[3]["tools"].as_array().unwrap().len(), 6);
}

#[test]
fn invalid_workflows_name_the_place_and_the_culprit() {
    let dir = workspace(&[
        ("kwarg.plue.py", "def workflow():\n    return Plan(name='x', steps=[\n        Step.bash('a', 'true', depend_on=['b'])])\n"),
        (
            "cycle.plue.py",
            "def workflow():\n    return Plan(name='x', steps=[\n        Step.bash('a', 'true', depends_on=['c']),\n        Step.bash('b', 'true', depends_on=['a']),\n        Step.bash('c', 'true', depends_on=['b'])])\n",
        ),
        ("unknown.plue.py", "def workflow():\n    return Plan(name='x', steps=[Step.bash('test', 'true'),\n        Step.bash('build', 'true', depends_on=['tets'])])\n"),
        ("dup.plue.py", "def workflow():\n    return Plan(name='x', steps=[Step.bash('a', 'true'),\n        Step.bash('a', 'false')])\n"),
        ("cron.plue.py", "def workflow():\n    return Plan(name='x', triggers=[\n        Trigger.on_schedule('0 25 * * *')])\n"),
        ("glob.plue.py", "def workflow():\n    return Plan(name='x', triggers=[Trigger.on_push(branch='release/[')])\n"),
        ("when.plue.py", "def workflow():\n    return Plan(name='x', steps=[Step.bash('a', 'true', when='allways')])\n"),
        ("syntax.plue.py", "def workflow(:\n    pass\n"),
        ("missing.plue.py", "x = 1\n"),
        ("raise.plue.py", "def helper():\n    return {}['nope']\n\ndef workflow():\n    return helper()\n"),
        ("notplan.plue.py", "def workflow():\n    return {'name': 'x'}\n"),
        ("import.plue.py", "import os\ndef workflow():\n    return Plan(name='x')\n"),
    ]);
    let cases: &[(&str, &str)] = &[
        ("kwarg.plue.py", ":3:9: TypeError: Step.bash() got an unexpected keyword argument 'depend_on' (did you mean 'depends_on'?)"),
        ("cycle.plue.py", ":3:9: dependency cycle: a -> c -> b -> a"),
        ("unknown.plue.py", ":3:9: step 'build' depends on unknown step 'tets' (did you mean 'test'?)"),
        ("dup.plue.py", ":3:9: duplicate step id 'a' (first defined at line 2)"),
        ("cron.plue.py", ":3:9: invalid cron expression '0 25 * * *'"),
        ("glob.plue.py", ":2:37: invalid branch pattern 'release/['"),
        ("when.plue.py", ":2:34: ValueError: Step.bash(): when must be one of 'success', 'failure', 'always' or an expression such as \"steps.review.outputs.verdict == 'approve'\", got 'allways' (did you mean 'always'?)"),
        ("syntax.plue.py", ":1:14: syntax error:"),
        ("missing.plue.py", ":1:1: no workflow() function"),
        ("raise.plue.py", ":2:12: KeyError: 'nope'"),
        ("notplan.plue.py", ":1:1: workflow() must return a Plan, got dict"),
        ("import.plue.py", ":1:1: import of 'os' is not allowed in workflow files"),
    ];
    for (name, expected) in cases {
        let output = eval_file(dir.path(), name, &[]);
        assert_eq!(output.status.code(), Some(1), "{name}: {}", stderr(&output));
        let text = stderr(&output);
        let want = format!("{}{expected}", dir.path().join(name).display());
        assert!(
            text.contains(&want),
            "{name}: expected {want:?} in:\n{text}"
        );
        assert!(
            !text.contains("panicked")
                && !text.contains("_plue_sandbox")
                && !text.contains("<plue-sandbox>"),
            "{name} leaked internals:\n{text}"
        );
    }
    // A traceback points into the user's file only.
    let text = stderr(&eval_file(dir.path(), "raise.plue.py", &[]));
    assert!(
        text.contains("line 5, in workflow") && text.contains("line 2, in helper"),
        "{text}"
    );

    // `plue check` reports every invalid file, each as path:line:col, and exits 1.
    let output = run(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let listed = stdout(&output);
    for (name, expected) in cases {
        let want = format!("{}{expected}", dir.path().join(name).display());
        assert!(
            listed.contains(&want),
            "check output lacks {want:?}:\n{listed}"
        );
    }
    assert!(
        stderr(&output).contains(&format!("{} invalid", cases.len())),
        "{}",
        stderr(&output)
    );
}

#[test]
fn usage_errors_exit_2_and_missing_files_exit_1() {
    assert_eq!(run(&["eval"]).status.code(), Some(2));
    assert_eq!(
        run(&["eval", "x.plue.py", "--format", "yaml"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&["eval", "x.plue.py", "--input", "novalue"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    let missing = run(&["eval", "does/not/exist.plue.py"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).starts_with("does/not/exist.plue.py: cannot read the file"),
        "{}",
        stderr(&missing)
    );
    assert!(run(&["--help"]).status.success());
    assert!(run(&["eval", "--help"]).status.success());
    // A pool too small to both listen for the other replicas and work: refused before
    // anything starts, by flag and by variable. (Under `timeout`, in a directory of its
    // own: were it accepted, `plue serve` would serve until killed, exit 124.)
    let dir = tempfile::tempdir().unwrap();
    let serve = |args: &[&str], env: &[(&str, &str)]| {
        Command::new("timeout")
            .arg("20")
            .arg(env!("CARGO_BIN_EXE_plue"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
            .expect("timeout runs plue")
    };
    for bad in [
        serve(&["--database-connections", "1"], &[]),
        serve(&["--database-connections", "eight"], &[]),
        serve(&[], &[("PLUE_DATABASE_CONNECTIONS", "0")]),
    ] {
        assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
        assert!(
            stderr(&bad).contains("--database-connections"),
            "{}",
            stderr(&bad)
        );
    }
    let out_of_range = serve(&[], &[("PLUE_DATABASE_CONNECTIONS", "0")]);
    assert!(
        stderr(&out_of_range).contains("at least 2 connections"),
        "{}",
        stderr(&out_of_range)
    );
}

#[test]
fn mermaid_draws_the_dag() {
    let output = run(&[
        "eval",
        "examples/templates/full-stack-feature.plue.py",
        "--format",
        "mermaid",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("flowchart TD\n"), "{text}");
    for edge in [
        "s0 --> s1",
        "s0 --> s2",
        "s1 --> s3",
        "s2 --> s3",
        "s3 --> s4",
    ] {
        assert!(text.contains(edge), "missing {edge} in\n{text}");
    }
}

#[test]
fn ctx_follows_the_event_flags() {
    let dir = workspace(&[(
        "ctx.plue.py",
        "import json\ndef workflow(ctx):\n    data = {'event': ctx.event, 'branch': ctx.branch, 'ref': ctx.ref, 'sha': ctx.sha, 'files': ctx.changed_files,\n            'inputs': ctx.inputs, 'pr': ctx.pr.number if ctx.pr else None, 'base': ctx.pr.base if ctx.pr else None}\n    return Plan(name=json.dumps(data, sort_keys=True), triggers=[Trigger.manual(inputs={'target': None})])\n",
    )]);
    // `--input` is checked as `plue run` checks it: the workflow declares `target`.
    let output = eval_file(
        dir.path(),
        "ctx.plue.py",
        &[
            "--event",
            "pull_request",
            "--branch",
            "feature/x",
            "--sha",
            "abc123",
            "--changed-file",
            "src/a.rs",
            "--changed-file",
            "README.md",
            "--input",
            "target=prod",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let seen: serde_json::Value = serde_json::from_str(plan["name"].as_str().unwrap()).unwrap();
    assert_eq!(
        seen,
        serde_json::json!({"event": "pull_request", "branch": "feature/x", "ref": "refs/heads/feature/x", "sha": "abc123",
            "files": ["src/a.rs", "README.md"], "inputs": {"target": "prod"}, "pr": 1, "base": "main"})
    );
}

#[test]
fn plan_hash_is_the_same_whatever_the_callers_hash_seed() {
    let dir = workspace(&[(
        "set.plue.py",
        "NAMES = {'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta', 'iota', 'kappa'}\ndef workflow():\n    return Plan(name=','.join(NAMES), steps=[Step.bash(n, 'echo ' + n) for n in NAMES])\n",
    )]);
    let path = dir.path().join("set.plue.py");
    let hashes: Vec<(String, String)> = ["0", "1", "12345", "random"]
        .iter()
        .map(|seed| {
            let output = plue()
                .args(["eval", path.to_str().unwrap()])
                .env("PYTHONHASHSEED", seed)
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", stderr(&output));
            let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            (
                plan["plan_hash"].as_str().unwrap().to_string(),
                plan["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
}

#[test]
fn a_memory_bomb_fails_the_file_not_the_cli() {
    let dir = workspace(&[(
        "bomb.plue.py",
        "def workflow():\n    n = 10 ** 10\n    return Plan(name='x' * n)\n",
    )]);
    let output = eval_file(dir.path(), "bomb.plue.py", &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(":3:") && stderr(&output).contains("memory limit of 256 MiB"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unusual_but_valid_files_evaluate() {
    let odd = r#"from plue import Plan as P, Step, Trigger
import itertools, functools, math, re, json, string, shlex, textwrap

def make(i, prev):
    return Step.python(f"s{i}", f"print({i})", depends_on=prev, env={"N": i, "F": 1.5, "B": True}, runner="gpu=true, zone=eu")

workflow = lambda ctx: P(
    name="odd " + ctx.event,
    triggers=[Trigger.on_push(tags=["v*"])],
    steps=[a := Step.bash("a", "true", when="always")] + [make(i, [a]) for i in range(2)]
        + [Step.llm("l", prompt_file="p.md", inputs={"x": [1, 2.5, None, {"k": "v"}]}, tools="bash")],
)
"#;
    let dir = workspace(&[
        ("odd.plue.py", odd),
        (
            "bom.plue.py",
            "\u{feff}def workflow():\r\n    return Plan(name='bom')\r\n",
        ),
    ]);
    let output = eval_file(dir.path(), "odd.plue.py", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["name"], "odd push");
    assert_eq!(
        plan["triggers"][0],
        serde_json::json!({"kind": "push", "branches": [], "tags": ["v*"], "paths": [], "paths_ignore": []})
    );
    assert_eq!(
        plan["steps"][1]["depends_on"],
        serde_json::json!(["a"]),
        "a Step object names its id"
    );
    assert_eq!(
        plan["steps"][1]["env"],
        serde_json::json!({"B": "true", "F": "1.5", "N": "0"})
    );
    assert_eq!(
        plan["steps"][1]["runner"],
        serde_json::json!({"gpu": "true", "zone": "eu"})
    );
    assert_eq!(
        plan["steps"][3]["inputs"],
        serde_json::json!({"x": [1, 2.5, null, {"k": "v"}]})
    );
    assert_eq!(plan["steps"][3]["tools"], serde_json::json!(["bash"]));
    let bom = eval_file(dir.path(), "bom.plue.py", &[]);
    assert!(
        bom.status.success(),
        "a byte-order mark is valid Python: {}",
        stderr(&bom)
    );
}

/// `plue check` of hostile files beside valid ones: every hostile file fails on exactly
/// one clean line (no forged line for another file, no terminal escape, no host path), the
/// valid files still pass, and the whole check ends in time.
#[test]
fn hostile_files_cannot_forge_or_hide_check_lines_and_valid_files_still_pass() {
    let valid = "def workflow():\n    return Plan(name='ok', steps=[Step.bash('a', 'true')])\n";
    let dir = workspace(&[
        ("a_valid.plue.py", valid),
        (
            "forge.plue.py",
            "def workflow():\n    raise ValueError('x\\nz_valid.plue.py: ok' + chr(27) + '[2K')\n",
        ),
        (
            "surrogate.plue.py",
            "def workflow():\n    raise ValueError('bad ' + chr(0xD800))\n",
        ),
        (
            "stepid.plue.py",
            "def workflow():\n    return Plan(name='x', steps=[Step.bash('a\\nz_valid.plue.py: ok', 'true')])\n",
        ),
        (
            "bomb.plue.py",
            "def workflow():\n    return Plan(name='x', steps=[Step.bash('x' * 520000, 'true', depends_on=['y'])])\n",
        ),
        (
            "path.plue.py",
            "def workflow():\n    raise ValueError('/usr/lib/python3.11/os.py')\n",
        ),
        (
            "baseurl.plue.py",
            "def workflow():\n    return Plan(name='x', steps=[Step.llm('r', prompt='p', env={'ANTHROPIC_BASE_URL': 'https://evil.example'})])\n",
        ),
        ("z_valid.plue.py", valid),
    ]);
    let started = std::time::Instant::now();
    let output = run(&["check", dir.path().to_str().unwrap()]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(1));
    let listed = stdout(&output);
    assert!(!listed.contains('\u{1b}'), "{listed:?}");
    // The problems name no host path; their excerpts (`   2 | …`, the caret line) quote
    // the user's own file, which may hold any text.
    let problems: String = listed
        .lines()
        .filter(|l| {
            !l.trim_start()
                .split_once('|')
                .is_some_and(|(gutter, _)| gutter.trim().chars().all(|c| c.is_ascii_digit()))
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!problems.contains("/python3"), "{listed}");
    assert!(!listed.contains("internal evaluator error"), "{listed}");
    for name in ["forge", "surrogate", "stepid", "bomb", "path", "baseurl"] {
        let path = dir
            .path()
            .join(format!("{name}.plue.py"))
            .display()
            .to_string();
        let lines = listed.lines().filter(|l| l.starts_with(&path)).count();
        assert!(lines >= 1, "{name} not reported:\n{listed}");
    }
    // Only real problems start a line with a file's path: nothing forged for z_valid.
    let z_valid = dir.path().join("z_valid.plue.py").display().to_string();
    assert!(
        !listed
            .lines()
            .any(|l| l.starts_with(&format!("{z_valid}: ok"))),
        "a forged line:\n{listed}"
    );
    assert!(
        listed.contains("\\x1b[2K") && listed.contains("\\ud800"),
        "{listed}"
    );
    assert!(listed.contains("never from a workflow"), "{listed}");
    assert!(stderr(&output).contains("6 invalid"), "{}", stderr(&output));
}

/// `plue eval FILE | head -c 10`: the reader goes away early; plue ends quietly (by
/// `SIGPIPE`, as any Unix filter) instead of panicking in `println!`.
#[test]
fn a_closed_pipe_ends_eval_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    // Far more than a pipe holds, so plue is still writing when the reader goes away.
    let steps: String = (0..900)
        .map(|i| format!("Step.bash('s{i}', 'echo {i} ' + 'x' * 200), "))
        .collect();
    let dir = workspace(&[(
        "big.plue.py",
        &format!("def workflow():\n    return Plan('big', steps=[{steps}])\n"),
    )]);
    let mut child = plue()
        .args(["eval", dir.path().join("big.plue.py").to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = stderr(&output);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        output.status
    );
}

/// `plue eval`, `plue check` and `plue run` of an invalid file quote the line a problem
/// points at, with a caret under its column.
#[test]
fn problems_show_their_line_with_a_caret_under_the_column() {
    let source = "def workflow():\n    return Plan(name='x', steps=[\n        Step.bash('a', 'true', depend_on=['b'])])\n";
    let dir = workspace(&[("kwarg.plue.py", source)]);
    let excerpt = "   3 |         Step.bash('a', 'true', depend_on=['b'])])\n     |         ^\n";
    let eval = eval_file(dir.path(), "kwarg.plue.py", &[]);
    assert_eq!(eval.status.code(), Some(1));
    let text = stderr(&eval);
    assert!(text.contains("kwarg.plue.py:3:9: TypeError"), "{text}");
    assert!(text.contains(excerpt), "eval:\n{text}");
    let check = run(&["check", dir.path().to_str().unwrap()]);
    assert!(
        stdout(&check).contains(excerpt),
        "check:\n{}",
        stdout(&check)
    );
    let ran = plue()
        .args(["run", "kwarg.plue.py"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("PLUE_DATA_DIR")
        .output()
        .expect("plue run");
    assert_eq!(ran.status.code(), Some(1), "{}", stderr(&ran));
    assert!(stderr(&ran).contains(excerpt), "run:\n{}", stderr(&ran));
}

/// `plue run` prints a step's "▶ started" before its lines, the retry notice after the
/// failed attempt's own lines, and a separator line before the next attempt's start.
#[test]
fn plue_run_prints_each_attempt_in_order() {
    let dir = workspace(&[(
        "w.plue.py",
        "def workflow():\n    return Plan(name='w', triggers=[Trigger.manual()], steps=[\n        \
         Step.bash('quick', 'echo one; echo two'),\n        \
         Step.bash('flaky', 'echo \"try $PLUE_ATTEMPT\"; [ \"$PLUE_ATTEMPT\" -ge 2 ]', retries=1, backoff=1),\n    ])\n",
    )]);
    let ran = plue()
        .args(["run", "w.plue.py"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("PLUE_DATA_DIR")
        .output()
        .expect("plue run");
    assert!(ran.status.success(), "{}", stderr(&ran));
    let out = stdout(&ran);
    let of = |step: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix(&format!("{step:<5} | ")))
            .map(|text| {
                // Durations vary: "✓ succeeded in 12ms" reads "✓ succeeded".
                match text.split_once(" in ") {
                    Some((head, _)) if text.starts_with('✓') => head.to_string(),
                    _ => text.to_string(),
                }
            })
            .collect()
    };
    assert_eq!(
        of("quick"),
        ["▶ started", "one", "two", "✓ succeeded"],
        "{out}"
    );
    let flaky = of("flaky");
    assert_eq!(flaky.len(), 7, "{out}");
    assert_eq!(flaky[..2], ["▶ started", "try 1"], "{out}");
    assert!(
        flaky[2].starts_with("↻ "),
        "the retry notice after attempt 1: {out}"
    );
    assert_eq!(
        flaky[3..],
        [
            "── attempt 2 ──",
            "▶ started (attempt 2)",
            "try 2",
            "✓ succeeded"
        ],
        "{out}"
    );
}

/// A one-shot HTTP server on loopback answering every request with `status` and the JSON
/// `body`; its base URL.
fn answering(status: &'static str, body: &'static str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut request_body = vec![0; length];
            let _ = reader.read_exact(&mut request_body);
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// Against a server, a missing or refused token is explained in the CLI's terms: the
/// `PLUE_TOKEN` variable and the `--token` flag, not the HTTP header.
#[test]
fn a_401_names_the_token_variable_and_flag() {
    let url = answering(
        "401 Unauthorized",
        r#"{"error":"this request needs 'Authorization: Bearer <token>'"}"#,
    );
    let missing = plue()
        .args(["repo", "list", "--server", &url])
        .env_remove("PLUE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let text = stderr(&missing);
    assert!(
        text.contains("set PLUE_TOKEN or pass --token") && !text.contains("Authorization"),
        "{text}"
    );
    let refused = plue()
        .args(["repo", "list", "--server", &url, "--token", "wrong"])
        .env_remove("PLUE_TOKEN")
        .output()
        .unwrap();
    let text = stderr(&refused);
    assert!(
        text.contains("refused the token given by PLUE_TOKEN or --token"),
        "{text}"
    );
}

/// `plue trigger` prints the new run's page on the server.
#[test]
fn trigger_prints_the_runs_url() {
    let url = answering("201 Created", r#"{"run_id":42}"#);
    let out = plue()
        .args([
            "trigger",
            "acme/app",
            "deploy",
            "--server",
            &format!("{url}/"),
        ])
        .env("PLUE_TOKEN", "t")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("run 42 started: {url}/runs/42\n"));
}
