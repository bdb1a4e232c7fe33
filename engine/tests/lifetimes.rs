//! Nothing of `plue run` outlives it: when its reader goes away — `plue run | head`, a
//! closed terminal (SIGHUP) — the run is cancelled, its steps killed and its runners gone,
//! instead of runners and steps left behind.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{alive, children_of, plain_plue};

const LOUD: &str = "def workflow():\n    return Plan(name='loud', steps=[\n        \
    Step.bash('loud', 'for i in $(seq 1 400); do echo line $i; sleep 0.02; done; sleep 60'),\n    ])\n";

/// Starts `plue run` on the loud workflow, reads its first step line, lets `hang_up` take
/// its reader away, and checks that it exits soon with the run cancelled and its runners
/// (with their steps) gone.
fn reader_goes_away(close_stdout: bool, hang_up: impl FnOnce(&mut std::process::Child)) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("loud.plue.py"), LOUD).unwrap();
    let mut child = plain_plue()
        .current_dir(dir.path())
        .args(["run", "loud.plue.py", "--runners", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plue run starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("line 1") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no step output");
    }
    let runners = children_of(child.id());
    assert!(!runners.is_empty(), "plue run has no runner processes");
    let kept = if close_stdout {
        drop(stdout);
        None
    } else {
        Some(stdout)
    };
    hang_up(&mut child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "plue run did not end without its reader"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("run 1 cancelled"), "{stderr}");
    drop(kept);
    let deadline = Instant::now() + Duration::from_secs(10);
    while runners.iter().any(|&pid| alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "runners outlived plue run: {runners:?}\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn plue_run_piped_into_head_cancels_the_run_when_head_exits() {
    // Closing the pipe is all `head` does; the next line written fails with EPIPE.
    reader_goes_away(true, |_| {});
}

#[test]
fn a_closed_terminal_cancels_the_run() {
    reader_goes_away(false, |child| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    });
}
