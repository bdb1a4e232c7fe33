//! End-to-end tests of `plue run`, driving the real binary on workflows written into a
//! temporary directory: outputs between steps, failure/skip/`when` semantics, retries with
//! attempt counts, a timeout whose background children must be gone, parallel steps, a
//! secret that never appears anywhere, Ctrl-C, invalid workflows, and the README's demo.
//!
//! Why one file past ~600 lines: `plue run`'s behaviours against the one real binary, one
//! test each, sharing the helpers that write a workflow, run it and read what it printed.

use crate::support;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{plain_plue, step_lines};
use serde_json::Value;

struct Ran {
    output: Output,
    summary: Value,
    dir: tempfile::TempDir,
}

impl Ran {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn step(&self, id: &str) -> &Value {
        support::step(&self.summary, id)
    }

    fn status(&self, id: &str) -> &str {
        self.step(id)["status"].as_str().unwrap()
    }

    fn lines_of(&self, id: &str) -> Vec<String> {
        step_lines(&self.stdout(), id)
    }

    /// Asserts that `plue run` printed `text` on stdout (the message: all it printed there).
    #[track_caller]
    fn assert_stdout_has(&self, text: &str) {
        assert!(self.stdout().contains(text), "{}", self.stdout());
    }

    /// Asserts that `plue run` printed `text` on stderr (the message: all it printed there).
    #[track_caller]
    fn assert_stderr_has(&self, text: &str) {
        assert!(self.stderr().contains(text), "{}", self.stderr());
    }
}

/// Runs `workflow` (the source of `w.plue.py`) with `plue run` in a fresh directory.
fn run(workflow: &str, extra: &[&str]) -> Ran {
    run_with_env(workflow, extra, &[])
}

/// [`run`] of a manual workflow of `steps` (see [`plan`]) with no further arguments.
fn run_steps(steps: &str) -> Ran {
    run(&plan(steps), &[])
}

/// [`run`] with `env` added to `plue run`'s environment.
fn run_with_env(workflow: &str, extra: &[&str], env: &[(&str, &std::path::Path)]) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.plue.py"), workflow).unwrap();
    let output = plain_plue()
        .current_dir(dir.path())
        .envs(env.iter().copied())
        .args([
            "run",
            "w.plue.py",
            "--runners",
            "3",
            "--summary-json",
            "summary.json",
        ])
        .args(extra)
        .output()
        .expect("plue runs");
    let summary = std::fs::read_to_string(dir.path().join("summary.json"))
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap_or(Value::Null);
    Ran {
        output,
        summary,
        dir,
    }
}

fn plan(steps: &str) -> String {
    format!(
        "def workflow():\n    return Plan(name='t', triggers=[Trigger.manual()], steps=[\n{steps}\n    ])\n"
    )
}

#[test]
fn outputs_flow_to_dependents_and_the_run_succeeds() {
    let ran = run_steps(
        r#"
        Step.bash("make-version", 'echo "version=2.0.$((40 + 2))" >> "$PLUE_OUTPUT"; echo "notes<<EOF" >> "$PLUE_OUTPUT"; printf "a\nb\n" >> "$PLUE_OUTPUT"; echo EOF >> "$PLUE_OUTPUT"'),
        Step.python("use-it", "import os\nprint('got ' + {{ steps.make-version.outputs.version }})\nopen(os.environ['PLUE_OUTPUT'], 'a').write('echo=ok\\n')", depends_on=["make-version"]),
        Step.bash("multi", "echo \"{{ steps.make-version.outputs.notes }}\" | wc -l", depends_on=["use-it"]),
        Step.bash("chain", "echo {{ steps.use-it.outputs.echo }}", depends_on=["use-it"]),
"#,
    );
    assert!(
        ran.output.status.success(),
        "{}\n{}",
        ran.stdout(),
        ran.stderr()
    );
    assert_eq!(ran.summary["status"], "succeeded");
    assert_eq!(ran.lines_of("use-it"), ["got 2.0.42"]);
    assert_eq!(ran.lines_of("multi"), ["2"]);
    assert_eq!(ran.lines_of("chain"), ["ok"]);
    for id in ["make-version", "use-it", "multi", "chain"] {
        assert_eq!(ran.status(id), "succeeded");
        assert_eq!(ran.step(id)["attempts"], 1);
        assert_eq!(ran.step(id)["exit_code"], 0);
        assert!(ran.step(id)["duration_ms"].as_i64().unwrap() >= 0);
    }
    assert!(
        ran.stderr().contains("STEP"),
        "the summary table is printed: {}",
        ran.stderr()
    );
}

/// What a step prints never comes before the end of a step it depends on, nor its own
/// "✓" before its output: a dependent starts within milliseconds of its dependency's end,
/// faster than the printer re-reads the step states.
#[test]
fn a_chain_prints_each_step_after_the_end_of_the_one_it_depends_on() {
    let steps: Vec<String> = (0..12)
        .map(|i| {
            let after = if i == 0 {
                String::new()
            } else {
                format!(", depends_on=['s{}']", i - 1)
            };
            format!("        Step.bash('s{i}', 'echo out-{i}'{after}),")
        })
        .collect();
    let ran = run(&plan(&steps.join("\n")), &[]);
    assert!(ran.output.status.success(), "{}", ran.stderr());
    let stdout = ran.stdout();
    let at = |needle: &str| {
        stdout
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not printed:\n{stdout}"))
    };
    for i in 0..12 {
        let output = at(&format!("s{i:<3}| out-{i}\n"));
        assert!(
            output < at(&format!("s{i:<3}| ✓ succeeded")),
            "s{i}'s output after its end:\n{stdout}"
        );
        if i > 0 {
            assert!(
                at(&format!("s{:<3}| ✓ succeeded", i - 1)) < output,
                "s{i}'s output before s{}'s end:\n{stdout}",
                i - 1
            );
        }
    }
}

#[test]
fn failures_skip_dependents_and_when_decides_what_runs() {
    let ran = run_steps(
        r#"
        Step.bash("ok", "echo fine"),
        Step.bash("broken", "echo about to fail; exit 3"),
        Step.bash("needs-broken", "echo never", depends_on=["broken"]),
        Step.bash("after-skipped", "echo never either", depends_on=["needs-broken"]),
        Step.bash("on-failure", "echo cleaning up", depends_on=["needs-broken"], when="failure"),
        Step.bash("always", "echo always runs", depends_on=["broken"], when="always"),
        Step.bash("on-failure-of-ok", "echo never", depends_on=["ok"], when="failure"),
"#,
    );
    assert_eq!(ran.output.status.code(), Some(1), "{}", ran.stderr());
    assert_eq!(ran.summary["status"], "failed");
    assert_eq!(ran.status("ok"), "succeeded");
    assert_eq!(ran.status("broken"), "failed");
    assert_eq!(ran.step("broken")["exit_code"], 3);
    assert_eq!(ran.status("needs-broken"), "skipped");
    assert_eq!(ran.status("after-skipped"), "skipped");
    // A skip caused by a failure upstream still counts as a failure for `when="failure"`.
    assert_eq!(ran.status("on-failure"), "succeeded");
    assert_eq!(ran.status("always"), "succeeded");
    assert_eq!(ran.status("on-failure-of-ok"), "skipped");
    ran.assert_stdout_has("✗ failed: exit code 3");
    ran.assert_stderr_has("failed steps: broken");
}

/// Long outputs print from the engine's copy of what it stored (batches of thousands of
/// lines, from steps printing at once, a retried step's two attempts): every line once,
/// in order, attempt after attempt.
#[test]
fn every_stored_line_prints_once_in_order() {
    let ran = run_steps(
        r#"
        Step.bash("left", "seq 1 30000"),
        Step.bash("right", "seq 1 30000 | sed s/^/r/"),
        Step.bash("again", 'seq 1 12000 | sed "s/^/$PLUE_ATTEMPT-/"; [ "$PLUE_ATTEMPT" -ge 2 ]', retries=1, backoff=0),
"#,
    );
    assert!(ran.output.status.success(), "{}", ran.stderr());
    let numbers =
        |prefix: &str| -> Vec<String> { (1..=30000).map(|i| format!("{prefix}{i}")).collect() };
    assert_eq!(ran.lines_of("left"), numbers(""));
    assert_eq!(ran.lines_of("right"), numbers("r"));
    let again: Vec<String> = (1..=2)
        .flat_map(|attempt| (1..=12000).map(move |i| format!("{attempt}-{i}")))
        .collect();
    assert_eq!(ran.lines_of("again"), again);
}

#[test]
fn retries_count_attempts_and_back_off() {
    let ran = run_steps(
        r#"
        Step.bash("third-time", 'echo "attempt $PLUE_ATTEMPT"; [ "$PLUE_ATTEMPT" -ge 3 ]', retries=3, backoff=1),
        Step.bash("always-fails", "exit 7", retries=1, backoff=1),
"#,
    );
    assert_eq!(ran.status("third-time"), "succeeded");
    assert_eq!(ran.step("third-time")["attempts"], 3);
    assert_eq!(
        ran.lines_of("third-time")
            .iter()
            .filter(|l| l.starts_with("attempt"))
            .count(),
        3
    );
    assert_eq!(ran.status("always-fails"), "failed");
    assert_eq!(ran.step("always-fails")["attempts"], 2);
    assert_eq!(ran.step("always-fails")["exit_code"], 7);
    let out = ran.stdout();
    assert!(
        out.contains("retrying in 1s") && out.contains("retrying in 2s"),
        "doubling backoff: {out}"
    );
}

#[test]
fn a_timeout_kills_the_step_and_its_background_children() {
    let marker = format!("plue-timeout-marker-{}", std::process::id());
    let ran = run_steps(&format!(
        r#"
        Step.bash("slow", "sleep 300 & bash -c 'exec -a {marker} sleep 300' & echo started; sleep 300", timeout=1),
        Step.bash("after", "echo after", depends_on=["slow"], when="always"),
"#
    ));
    assert_eq!(ran.status("slow"), "failed");
    ran.assert_stdout_has("timed out after 1s");
    assert_eq!(ran.status("after"), "succeeded");
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&marker))
        .collect();
    assert!(
        survivors.is_empty(),
        "background children outlived the step: {survivors:?}"
    );
}

#[test]
fn independent_steps_run_in_parallel() {
    // Each step waits for the other's file: only parallel execution can finish both. Not
    // in /tmp, which is each step's own under a root runner: in a drop box beside the
    // runners' work directory (their TMPDIR), the one entry of /tmp their steps still see.
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let drop = work.path().join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::set_permissions(&drop, std::fs::Permissions::from_mode(0o777)).unwrap();
    let tag = drop.join("parallel").display().to_string();
    let ran = run_with_env(
        &plan(&format!(
            r#"
        Step.bash("left", "touch {tag}-left; for i in $(seq 100); do [ -e {tag}-right ] && exit 0; sleep 0.1; done; exit 1", timeout=30),
        Step.bash("right", "touch {tag}-right; for i in $(seq 100); do [ -e {tag}-left ] && exit 0; sleep 0.1; done; exit 1", timeout=30),
"#
        )),
        &[],
        &[("TMPDIR", work.path())],
    );
    assert_eq!(ran.summary["status"], "succeeded", "{}", ran.stdout());
}

#[test]
fn secrets_reach_steps_but_never_the_logs_or_the_store() {
    let secret = "s3cr3t-v4lue-8472";
    let ran = run(
        &plan(
            r#"
        Step.bash("use", 'echo "token=$API_TOKEN"; echo "$API_TOKEN" | rev | rev; [ ${#API_TOKEN} -eq 17 ]', secrets=["API_TOKEN"]),
        Step.bash("no-secret", 'echo "token=${API_TOKEN:-unset}"'),
"#,
        ),
        &["--secret", &format!("API_TOKEN={secret}")],
    );
    assert_eq!(ran.summary["status"], "succeeded", "{}", ran.stdout());
    assert_eq!(ran.lines_of("use")[..2], ["token=***", "***"]);
    assert_eq!(
        ran.lines_of("no-secret"),
        ["token=unset"],
        "only steps naming a secret get it"
    );
    assert!(!ran.stdout().contains(secret) && !ran.stderr().contains(secret));
    let found = grep_dir(&ran.dir.path().join(".plue"), secret.as_bytes());
    assert!(found.is_empty(), "the secret is stored in {found:?}");
}

#[test]
fn a_missing_secret_fails_the_step_with_its_name() {
    let ran = run_steps(r#"        Step.bash("use", "echo $NOPE", secrets=["NOPE"]),"#);
    assert_eq!(ran.status("use"), "failed");
    ran.assert_stdout_has("secret 'NOPE' is not set");
}

#[test]
fn a_missing_output_fails_the_step_that_reads_it() {
    let ran = run_steps(
        r#"
        Step.bash("a", "true"),
        Step.bash("b", "echo {{ steps.a.outputs.nothing }}", depends_on=["a"]),
"#,
    );
    assert_eq!(ran.status("b"), "failed");
    assert_eq!(ran.step("b")["attempts"], 0);
    ran.assert_stdout_has("steps.a.outputs.nothing");
}

#[test]
fn an_invalid_workflow_exits_1_with_its_location() {
    let ran = run("def workflow():\n    return Plan(name='x', steps=[Step.bash('a', 'true', depends_on=['b'])])\n", &[]);
    assert_eq!(ran.output.status.code(), Some(1));
    ran.assert_stderr_has("w.plue.py:");
    ran.assert_stderr_has("'b'");
}

#[test]
fn ctrl_c_cancels_the_run_and_kills_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("plue-cancel-marker-{}", std::process::id());
    std::fs::write(
        dir.path().join("w.plue.py"),
        plan(&format!(
            r#"
        Step.bash("long", "echo started; bash -c 'exec -a {marker} sleep 300'"),
        Step.bash("later", "echo never", depends_on=["long"]),
"#
        )),
    )
    .unwrap();
    let mut child = plain_plue()
        .current_dir(dir.path())
        .args([
            "run",
            "w.plue.py",
            "--runners",
            "1",
            "--summary-json",
            "s.json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proc_has(&marker) {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("s.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "cancelled");
    assert!(
        summary["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "cancelled"),
        "{summary}"
    );
    assert!(
        !proc_has(&marker),
        "the cancelled step's process is still running"
    );
}

#[test]
fn the_readme_demo_succeeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let data = tempfile::tempdir().unwrap();
    let output = plain_plue()
        .current_dir(root)
        .args(["run", "examples/demo.plue.py", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("built demo-1.4.42.tar from"), "{stdout}");
}

/// What a step tries with the runner socket: it waits for `argv[1]/path` (which the test
/// writes once the socket exists), connects, and prints how that went.
const PROBE_SOCKET: &str = r#"
import os, socket, sys, time
drop = sys.argv[1]
deadline = time.time() + 30
while not os.path.exists(drop + "/path") and time.time() < deadline:
    time.sleep(0.05)
path = open(drop + "/path").read().strip()
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(path)
    print("connected", flush=True)
except OSError as e:
    print("refused errno", e.errno, flush=True)
"#;

/// `plue run`'s runners reach its engine on a Unix socket in a private directory of the data
/// directory (0700, the socket 0600), not over TCP: their `--engine` names no port of
/// theirs, so the run succeeding proves the socket carried it. A step (another user under a
/// root runner) given the socket's exact path cannot connect to it. The directory goes
/// when the run ends.
#[test]
fn local_runners_reach_the_engine_on_a_private_socket_steps_cannot_open() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // Where the step sees it: /tmp and /var/tmp are each step's own, so as root (steps run
    // as another user, in rooms of their own) under /run, which an `open` step shares with
    // the host; otherwise beside the build (steps run as this user, without rooms). The
    // step sees this tree, not the data directory.
    let base = if nix::unistd::geteuid().is_root() {
        tempfile::Builder::new()
            .prefix("plue-test-socket-")
            .tempdir_in("/run")
            .unwrap()
    } else {
        tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
    };
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (data, drop) = (base.path().join("data"), base.path().join("drop"));
    std::fs::create_dir(&drop).unwrap();
    std::fs::set_permissions(&drop, std::fs::Permissions::from_mode(0o777)).unwrap();
    let project = tempfile::tempdir().unwrap();
    let step = format!(
        "Step.bash('probe', '/usr/bin/python3 probe.py {}')",
        drop.display()
    );
    std::fs::write(
        project.path().join("w.plue.py"),
        plan(&format!("        {step},")),
    )
    .unwrap();
    std::fs::write(project.path().join("probe.py"), PROBE_SOCKET).unwrap();
    let mut child = plain_plue()
        .current_dir(project.path())
        .args(["run", "w.plue.py", "--runners", "1", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let socket = loop {
        let found = std::fs::read_dir(&data).ok().and_then(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("runners.sock"))
                .find(|path| path.exists())
        });
        if let Some(socket) = found {
            break socket;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no runner socket appeared in {}", data.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let dir = socket.parent().unwrap().to_path_buf();
    assert!(dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("plue-runners-"));
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    assert_eq!(mode(&socket), 0o600, "{}", socket.display());
    // The pool's runner, started with the socket and a URL naming no port of the engine's.
    let args = runner_args_of(child.id());
    assert!(
        args.contains(&format!("--engine-socket {} ", socket.display()))
            && args.contains("--engine http://localhost "),
        "{args}"
    );
    let path = drop.join("path.new");
    std::fs::write(&path, socket.display().to_string()).unwrap();
    std::fs::rename(&path, drop.join("path")).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    if nix::unistd::geteuid().is_root() {
        // EACCES: the directory is closed to the step's user.
        assert!(stdout.contains("refused errno 13"), "{stdout}");
    } else {
        eprintln!("not root: steps run as this user, who may open the socket");
    }
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

/// `--runners-over-tcp`: the runners reach the engine on its loopback port (they are given
/// no socket).
#[test]
fn runners_over_tcp_reach_the_engine_on_its_loopback_port() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("w.plue.py"),
        plan("        Step.bash('a', 'sleep 1'),"),
    )
    .unwrap();
    let child = plain_plue()
        .current_dir(project.path())
        .args(["run", "w.plue.py", "--runners", "1", "--runners-over-tcp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let args = runner_args_of(child.id());
    assert!(
        args.contains("--engine http://127.0.0.1:") && !args.contains("--engine-socket"),
        "{args}"
    );
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The arguments (NULs made spaces) of a runner the `plue run` with process id `pid`
/// started, once one runs.
fn runner_args_of(pid: u32) -> String {
    let needle = format!("--die-with-parent\0{pid}\0");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .find(|c| c.contains(&needle));
        if let Some(args) = found {
            return args.replace('\0', " ");
        }
        assert!(
            Instant::now() < deadline,
            "plue run {pid} started no runner"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn proc_has(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
}

fn wait_with_deadline(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("plue run did not exit after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Files under `dir` whose bytes contain `needle`.
fn grep_dir(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if entry.file_type().is_file() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(entry.path().display().to_string());
                }
            }
        }
    }
    found
}
