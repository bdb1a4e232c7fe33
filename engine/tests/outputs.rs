//! End-to-end tests of step outputs as data, driving the real `plue run`: an upstream step
//! records outputs an attacker would write (command substitutions, quotes, a second line),
//! and downstream `bash` and `python` steps print them through every documented form —
//! the text must come out literally and nothing in it may run. Also the dispatch-time
//! template bomb of issue 10, now refused at validation.

use crate::support::{plain_plue, step_lines};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// Runs `workflow` as `w.plue.py` with `plue run` in `dir`.
fn run_in(dir: &Path, workflow: &str) -> Output {
    run_with(dir, workflow, &["--runners", "2"])
}

/// Runs `workflow` as `w.plue.py` with `plue run w.plue.py ARGS` in `dir`.
fn run_with(dir: &Path, workflow: &str, args: &[&str]) -> Output {
    std::fs::write(dir.join("w.plue.py"), workflow).unwrap();
    plain_plue()
        .current_dir(dir)
        .args(["run", "w.plue.py"])
        .args(args)
        .output()
        .expect("plue runs")
}

/// Checks `workflow` as `w.plue.py` with `plue check .` in a directory of its own, which
/// must fail printing each of `expected`; its output.
fn check_refuses(workflow: &str, expected: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.plue.py"), workflow).unwrap();
    let output = plain_plue()
        .current_dir(dir.path())
        .args(["check", "."])
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    let messages = String::from_utf8_lossy(&output.stdout);
    for expected in expected {
        assert!(
            messages.contains(expected),
            "{expected}\n{}",
            describe(&output)
        );
    }
    output
}

/// What step `id` printed, without the printer's own transition lines.
fn lines_of(output: &Output, id: &str) -> Vec<String> {
    step_lines(&String::from_utf8_lossy(&output.stdout), id)
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
echo "quoted: {{ steps.up.outputs.x }}"
echo "env: $PLUE_OUTPUT_UP_X""#;
    let down_python = r#"print({{ steps.up.outputs.x }})
print('' + {{ steps.up.outputs.y }})
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

#[test]
fn an_output_inside_a_literal_is_a_check_error() {
    // regression (RT-6): `"Hello {{ ref }}".format(obj)` made the output a format string.
    let workflow = r#"def workflow():
    return Plan(name='t', triggers=[Trigger.manual()], steps=[
        Step.bash('up', 'true'),
        Step.python('fmt', 'print("Hello {{ steps.up.outputs.name }}, {0}".format(1))', depends_on=['up']),
        Step.bash('sh', "bash -c 'echo {{ steps.up.outputs.name }}'", depends_on=['up']),
    ])
"#;
    check_refuses(
        workflow,
        &[
            "w.plue.py:4:",
            "step 'fmt': script: '{{ steps.up.outputs.name }}': an output inside a string literal",
            "\"Hello \" + {{ steps.<id>.outputs.<key> }}",
            "w.plue.py:5:",
            "step 'sh': command: '{{ steps.up.outputs.name }}': an output inside single quotes",
        ],
    );
}

#[test]
fn an_output_as_a_format_string_or_raw_in_quotes_is_a_check_error() {
    // regression (issue 30): `{{ ref }}.format(obj)` passed `plue check`, and an output
    // `{0.__init__.__globals__[os].environ[TOKEN]:.1}` printed each prefix of a secret;
    // `{{ raw ... }}` was accepted inside single quotes.
    let workflow = r#"def workflow():
    return Plan(name='t', triggers=[Trigger.manual()], steps=[
        Step.bash('up', 'true'),
        Step.python('fmt', 'class C: pass\nprint({{ steps.up.outputs.name }}.format(C()))', depends_on=['up']),
        Step.bash('pf', 'printf "{{ steps.up.outputs.name }}"', depends_on=['up']),
        Step.bash('sh', "bash -c '{{ raw steps.up.outputs.name }}'", depends_on=['up']),
        Step.python('ok', 'print("{}".format({{ steps.up.outputs.name }}))', depends_on=['up']),
    ])
"#;
    let output = check_refuses(
        workflow,
        &[
            "w.plue.py:4:",
            "step 'fmt': script: '{{ steps.up.outputs.name }}': an output must not be the receiver of .format()",
            "w.plue.py:5:",
            "step 'pf': command: '{{ steps.up.outputs.name }}': an output must not be printf's format argument",
            "w.plue.py:6:",
            "step 'sh': command: '{{ raw steps.up.outputs.name }}': an output inside single quotes",
            "'raw' is refused wherever the plain form is",
        ],
    );
    let messages = String::from_utf8_lossy(&output.stdout);
    assert!(!messages.contains("step 'ok'"), "{}", describe(&output));
}

#[test]
fn ctx_text_reaches_a_step_as_written_never_as_a_reference() {
    // regression (issue 30): a trusted workflow quoting a manual input, a changed file's
    // name and the branch with shlex.quote still had `{{ raw steps.up.outputs.x }}` in
    // them expanded — an upstream output pasted as code into the step.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let marker = marker.to_str().unwrap();
    let workflow = format!(
        r#"import shlex

def workflow(ctx):
    return Plan(name='t', triggers=[Trigger.manual(inputs={{'target': None}})], steps=[
        Step.bash('up', "echo 'x=touch {marker}' >> $PLUE_OUTPUT"),
        Step.bash('deploy', 'printf "%s\\n" ' + shlex.quote(ctx.inputs['target']) + ' ' + shlex.quote(ctx.changed_files[0]) + ' ' + shlex.quote(ctx.branch), depends_on=['up']),
    ])
"#
    );
    let output = run_with(
        dir.path(),
        &workflow,
        &[
            "--event",
            "manual",
            "--input",
            "target={{ raw steps.up.outputs.x }}",
            "--changed-file",
            "a\\{{ raw steps.up.outputs.x }}",
            "--branch",
            "{{ steps.up.outputs.x }}",
        ],
    );
    let all = describe(&output);
    assert!(output.status.success(), "{all}");
    assert!(!Path::new(marker).exists(), "an output ran as code\n{all}");
    assert_eq!(
        lines_of(&output, "deploy"),
        [
            "{{ raw steps.up.outputs.x }}",
            "a\\{{ raw steps.up.outputs.x }}",
            "{{ steps.up.outputs.x }}"
        ],
        "{all}"
    );
}

#[test]
fn outputs_with_brackets_reach_steps_and_only_runnable_ones_are_refused() {
    // The happy path around RT-2: a list-like output read through a reference and JSON read
    // through its variable run; a reference to a value bash could run in arithmetic fails
    // its step, and so does a reference in a step that receives such a value, both naming
    // the output; the run goes on.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let marker = marker.to_str().unwrap();
    let json = format!(r#"{{"cmd": ["$HOME", "a[$(touch {marker})]"]}}"#);
    let data = format!(r#"echo 'json={json}' >> "$PLUE_OUTPUT""#);
    let workflow = format!(
        r#"def workflow():
    return Plan(name='t', triggers=[Trigger.manual()], steps=[
        Step.bash('up', "echo 'list=[1, 2] a[3]' >> $PLUE_OUTPUT"),
        Step.bash('data', {data:?}),
        Step.bash('list', 'echo "got {{{{ steps.up.outputs.list }}}}"; [[ -v {{{{ steps.up.outputs.list }}}} ]] || echo unset', depends_on=['up']),
        Step.bash('json-env', 'printf "%s\n" "$PLUE_OUTPUT_DATA_JSON" | wc -c', depends_on=['data']),
        Step.python('json-py', 'import json, os\nprint(json.loads(os.environ["PLUE_OUTPUT_DATA_JSON"])["cmd"][0])', depends_on=['data']),
        Step.bash('json-ref', 'if [[ {{{{ steps.data.outputs.json }}}} -gt 0 ]]; then :; fi', depends_on=['data']),
        Step.bash('beside', 'echo "{{{{ steps.up.outputs.list }}}}"; [[ {{{{ steps.up.outputs.list }}}} == x ]]', depends_on=['up', 'data']),
    ])
"#
    );
    let output = run_in(dir.path(), &workflow);
    let all = describe(&output);
    assert!(!output.status.success(), "json-ref fails: {all}");
    assert!(!Path::new(marker).exists(), "an output ran as code\n{all}");
    assert_eq!(
        lines_of(&output, "list"),
        ["got [1, 2] a[3]", "unset"],
        "{all}"
    );
    assert_eq!(lines_of(&output, "json-py"), ["$HOME"], "{all}");
    assert_eq!(
        lines_of(&output, "json-env"),
        [(json.len() + 1).to_string()],
        "{all}"
    );
    assert!(
        all.contains("'{{ steps.data.outputs.json }}': the value holds '[' with '$' or '`'")
            && all.contains("\"$PLUE_OUTPUT_DATA_JSON\""),
        "{all}"
    );
    assert!(
        all.contains("'{{ steps.up.outputs.list }}': this step receives")
            && all.contains("receives $PLUE_OUTPUT_DATA_JSON, an output that holds"),
        "{all}"
    );
    assert!(lines_of(&output, "beside").is_empty(), "{all}");
}

#[test]
fn an_output_cannot_assign_path_through_bash_arithmetic() {
    // `[[ PATH=0 -gt 0 ]]` assigns PATH, and the next command runs ./0/<command> from the
    // checkout, which a pull request controls.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("0")).unwrap();
    let fake = dir.path().join("0/uname");
    std::fs::write(&fake, "#!/bin/sh\nprintf '%s%s\\n' PW NED\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let workflow = r#"def workflow():
    return Plan(name='t', triggers=[Trigger.manual()], steps=[
        Step.bash('up', "echo 'n=PATH=0' >> $PLUE_OUTPUT"),
        Step.bash('down', '[[ {{ steps.up.outputs.n }} -gt 0 ]] || true; uname', depends_on=['up']),
        Step.bash('other', "echo 'ok=3' >> $PLUE_OUTPUT"),
        Step.bash('fine', '[[ {{ steps.other.outputs.ok }} -gt 2 ]] && uname -s', depends_on=['other']),
    ])
"#;
    let output = run_in(dir.path(), workflow);
    let all = describe(&output);
    assert!(!all.contains("PWNED"), "an output changed PATH:\n{all}");
    assert!(
        all.contains("'{{ steps.up.outputs.n }}': the value assigns an uppercase variable"),
        "{all}"
    );
    assert_eq!(lines_of(&output, "fine"), ["Linux"], "{all}");
}

#[test]
fn a_raw_reference_assembled_from_ctx_text_never_runs() {
    // regression (issue 30): a trusted workflow linting changed files under src/ named
    // them without the prefix; a file named `{src/{ raw steps.up.outputs.x }}` became
    // `{{ raw steps.up.outputs.x }}` after replace("src/", "") and the output ran as code
    // in the secret-holding step ("linting PWNED-s3c").
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let marker = marker.to_str().unwrap();
    let workflow = format!(
        r#"def workflow(ctx):
    names = [f.replace("src/", "") for f in ctx.changed_files if "src/" in f]
    return Plan(name='t', triggers=[Trigger.manual()], steps=[
        Step.bash('up', "echo 'x=$(touch {marker})' >> $PLUE_OUTPUT"),
        Step.bash('lint', "".join('echo "linting ' + n + '"\n' for n in names), depends_on=['up']),
    ])
"#
    );
    let output = run_with(
        dir.path(),
        &workflow,
        &[
            "--event",
            "manual",
            "--changed-file",
            "src/main.rs",
            "--changed-file",
            "{src/{ raw steps.up.outputs.x }}",
        ],
    );
    let all = describe(&output);
    assert!(!output.status.success(), "{all}");
    assert!(!Path::new(marker).exists(), "an output ran as code\n{all}");
    assert!(
        all.contains("step 'lint': command: '{{ raw steps.up.outputs.x }}' is not written in the workflow file"),
        "{all}"
    );
}

#[test]
fn outputs_in_code_behind_wrappers_here_documents_and_aliases_are_check_errors() {
    // regression (issue 30): each of these passed `plue check` and ran or formatted the
    // output next to the step's secrets.
    let workflow = r#"R = "{{ steps.up.outputs.x }}"
def workflow():
    return Plan(name='t', triggers=[Trigger.manual()], steps=[
        Step.bash('up', 'true'),
        Step.bash('heredoc', 'python3 - <<EOF\nprint("' + R + '")\nEOF', depends_on=['up']),
        Step.bash('wrapped', 'timeout 5 bash -c "echo ' + R + '"', depends_on=['up']),
        Step.bash('alias', 'p=printf; $p "' + R + '" "$TOKEN"', depends_on=['up']),
        Step.python('walrus', 'class C: pass\nprint((s := ' + R + ') and s.format(C()))', depends_on=['up']),
        Step.python('getattr', 'class C: pass\nprint(getattr(' + R + ', "format")(C()))', depends_on=['up']),
    ])
"#;
    check_refuses(
        workflow,
        &[
            "step 'heredoc': command: '{{ steps.up.outputs.x }}': an output must not be part of code another program parses",
            "step 'wrapped': command: '{{ steps.up.outputs.x }}': an output must not be part of code another program parses",
            "step 'alias': command: '{{ steps.up.outputs.x }}': an output must not be printf's format argument",
            "step 'walrus': script: '{{ steps.up.outputs.x }}': an output must not be assigned to a name the script uses as a format string",
            "step 'getattr': script: '{{ steps.up.outputs.x }}': an output must not be an argument of a call that reaches a format method",
        ],
    );
}
