//! Local runners do not outlive the engine that started them when it means to go: `plue
//! run`'s runners — and the steps they run — die with it even when it is SIGKILLed (a
//! parent-death signal), and `plue serve` stopped by SIGTERM stops its runners, busy ones
//! included. Nor does anything of theirs stay on disk: every attempt directory is gone
//! before its step is reported done, and `plue serve`'s work directory when it exits.

use crate::support;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{alive, children_of, client, get_json, serial, start_run, wait_for, Sandbox};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The live `plue runner` processes whose parent is `pid`.
fn runners_of(pid: u32) -> Vec<u32> {
    let is_runner = |child: &u32| {
        let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
        cmdline.split(|b| *b == 0).nth(1) == Some(b"runner".as_slice())
    };
    children_of(pid).into_iter().filter(is_runner).collect()
}

async fn all_dead(pids: &[u32], limit: Duration, what: &str) {
    wait_for(limit, what, || async {
        pids.iter().all(|pid| !alive(*pid)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plue_run_killed_takes_its_runners_and_their_steps_with_it() {
    let _serial = serial().await;
    let sandbox = Sandbox::new("run-kill");
    let step_pids = sandbox.shared("step.pids");
    // The step, and a child of it in a new session that would outlive a plain kill.
    sandbox.write(
        "slow.plue.py",
        &format!(
            "def workflow():\n    return Plan(name='slow', triggers=[Trigger.manual()], steps=[\n\
             \x20       Step.bash('slow', 'setsid sleep 61 & echo $$ $! >> {pids}; echo started; sleep 60'),\n    ])\n",
            pids = step_pids.display()
        ),
    );
    let file = sandbox.path("slow.plue.py");
    let data = sandbox.path("data");
    let run = sandbox.spawn(
        "plue-run",
        sandbox.plue(&[
            "run",
            file.to_str().unwrap(),
            "--runners",
            "2",
            "--data-dir",
            data.to_str().unwrap(),
        ]),
    );
    let runners = wait_for(Duration::from_secs(30), "plue run's runners", || async {
        let runners = runners_of(run);
        (runners.len() == 2).then_some(runners)
    })
    .await;
    let steps: Vec<u32> = wait_for(Duration::from_secs(30), "the step to start", || async {
        let text = std::fs::read_to_string(&step_pids).unwrap_or_default();
        let pids: Vec<u32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        (pids.len() == 2).then_some(pids)
    })
    .await;
    sandbox.kill9(run);
    all_dead(
        &runners,
        Duration::from_secs(5),
        "plue run's runners to die with it",
    )
    .await;
    all_dead(
        &steps,
        Duration::from_secs(5),
        "the step's processes to die with it",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stopped_by_sigterm_stops_its_busy_runners() {
    let _serial = serial().await;
    let sandbox = Sandbox::new("serve-term");
    let engine = sandbox.serve_local("1", &[]).await;
    let http = client();
    let file = sandbox.write_workflow("slow", &[support::SLOW_STEP]);
    start_run(&http, &engine.url, &file, &sandbox.path("ws")).await;
    wait_for(Duration::from_secs(30), "a busy runner", || async {
        let runners = get_json(&http, &format!("{}/api/runners", engine.url)).await;
        runners
            .as_array()?
            .iter()
            .any(|r| r["state"] == "busy")
            .then_some(())
    })
    .await;
    let runners = runners_of(engine.pid);
    assert!(!runners.is_empty(), "{}", sandbox.diagnostics());
    let dirs = work_dirs(&sandbox);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    // A runner is busy from its claim; it makes the attempt's directory just after, in
    // its own view of the work directory (a root runner's is a tmpfs of its own).
    let in_view = |runner: &u32| {
        Path::new(&format!("/proc/{runner}/root")).join(dirs[0].strip_prefix("/").unwrap())
    };
    wait_for(
        Duration::from_secs(10),
        "the busy step's attempt directory",
        || async {
            runners
                .iter()
                .any(|r| !entries(&in_view(r), "attempt-").is_empty())
                .then_some(())
        },
    )
    .await;
    kill(Pid::from_raw(engine.pid as i32), Signal::SIGTERM).unwrap();
    let status = sandbox.wait_exit(engine.pid, Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}\n{}", sandbox.diagnostics());
    all_dead(
        &runners,
        Duration::from_secs(5),
        "serve's runners to stop with it",
    )
    .await;
    // regression: `plue serve` left its /tmp/plue-work-* behind.
    assert_eq!(
        work_dirs(&sandbox),
        Vec::<PathBuf>::new(),
        "serve's work directory stayed"
    );
}

/// The local runners' work directories in the sandbox (its TMPDIR): `plue-work-*`.
fn work_dirs(sandbox: &Sandbox) -> Vec<PathBuf> {
    entries(&sandbox.path(""), "plue-work-")
}

/// The entries of `dir` whose names start with `prefix`.
fn entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Hundreds of short steps on one-step runners leave no attempt directory: each goes
/// before its runner reports the step done. regression: the removal ran in a background
/// task a one-step runner exited without waiting for (28 directories of ~420 steps stayed).
/// On disk: a runner's tmpfs would take whatever it left with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_steps_leave_no_attempt_directory() {
    const STEPS: usize = 300;
    let _serial = serial().await;
    let sandbox = Sandbox::new("serve-leftovers");
    let engine = sandbox.serve_local("4", &["--work-dir-on-disk"]).await;
    let http = client();
    let file = sandbox.write(
        "ws/many.plue.py",
        &format!(
            "def workflow():\n    return Plan(name='many', triggers=[Trigger.manual()], steps=[\n\
             \x20       Step.bash('s%d' % i, 'echo $i > file') for i in range({STEPS})\n    ])\n"
        ),
    );
    let started = std::time::Instant::now();
    let run_id = start_run(&http, &engine.url, &file, &sandbox.path("ws")).await;
    sandbox
        .wait_succeeded(&http, &engine.url, run_id, Duration::from_secs(60))
        .await;
    eprintln!("{STEPS} steps in {:?}", started.elapsed());
    let dirs = work_dirs(&sandbox);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let left = entries(&dirs[0], "attempt-");
    assert!(
        left.is_empty(),
        "{} of {STEPS} attempt directories stayed: {left:?}",
        left.len()
    );
    kill(Pid::from_raw(engine.pid as i32), Signal::SIGTERM).unwrap();
    let status = sandbox.wait_exit(engine.pid, Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}\n{}", sandbox.diagnostics());
    assert_eq!(
        work_dirs(&sandbox),
        Vec::<PathBuf>::new(),
        "serve's work directory stayed"
    );
}
