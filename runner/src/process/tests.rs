//! Tests of [`super::run`] against real `bash` processes.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::protocol::MAX_LINE_BYTES;

fn bash(script: &str, timeout: Duration) -> ProcessSpec {
    ProcessSpec {
        program: "bash".into(),
        args: vec!["-c".into(), script.into()],
        cwd: std::env::temp_dir(),
        env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
        user: None,
        timeout,
    }
}

/// Runs `spec` collecting every line; the channel is small to exercise backpressure.
async fn collect(
    spec: ProcessSpec,
    cancel: CancellationToken,
) -> (ProcessResult, Vec<(Stream, String)>) {
    let (tx, mut rx) = mpsc::channel(8);
    let collector = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    });
    let result = run(spec, tx, cancel).await.expect("run");
    (result, collector.await.unwrap())
}

async fn run_bash(script: &str) -> (ProcessResult, Vec<(Stream, String)>) {
    collect(
        bash(script, Duration::from_secs(30)),
        CancellationToken::new(),
    )
    .await
}

fn texts(lines: &[(Stream, String)], stream: Stream) -> Vec<&str> {
    lines
        .iter()
        .filter(|(s, _)| *s == stream)
        .map(|(_, t)| t.as_str())
        .collect()
}

/// Pids of live (non-zombie) processes whose process group is `pgid`.
fn live_in_group(pgid: i32) -> Vec<i32> {
    live_processes(|stat, _| {
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

/// Pids of live processes whose command line contains `marker`.
fn live_with_cmdline(marker: &str) -> Vec<i32> {
    live_processes(|stat, cmdline| {
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        !after.trim_start().starts_with('Z') && cmdline.contains(marker)
    })
}

fn live_processes(matches: impl Fn(&str, &str) -> bool) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if matches(&stat, &cmdline) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn reasons_read_like_the_completion_expects() {
    let result = |ending| ProcessResult {
        ending,
        duration: Duration::ZERO,
    };
    let two = Duration::from_secs(2);
    assert_eq!(result(Ending::Exited(0)).reason(two), None);
    assert_eq!(
        result(Ending::Exited(3)).reason(two).unwrap(),
        "exit code 3"
    );
    assert_eq!(
        result(Ending::Signalled(9)).reason(two).unwrap(),
        "killed by signal 9"
    );
    assert_eq!(
        result(Ending::TimedOut).reason(two).unwrap(),
        "timed out after 2s"
    );
    let fractional = Duration::from_millis(1500);
    assert_eq!(
        result(Ending::TimedOut).reason(fractional).unwrap(),
        "timed out after 1.5s"
    );
    assert_eq!(result(Ending::Cancelled).reason(two).unwrap(), "cancelled");
    assert_eq!(result(Ending::Exited(3)).exit_code(), Some(3));
    assert_eq!(result(Ending::TimedOut).exit_code(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_and_streams_are_reported() {
    let (result, lines) = run_bash("echo one; echo two; echo oops >&2; exit 3").await;
    assert_eq!(result.ending, Ending::Exited(3));
    assert_eq!(
        result.reason(Duration::from_secs(30)).unwrap(),
        "exit code 3"
    );
    assert_eq!(texts(&lines, Stream::Stdout), ["one", "two"]);
    assert_eq!(texts(&lines, Stream::Stderr), ["oops"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_is_reported() {
    let (result, _) = run_bash("kill -TERM $$").await;
    assert_eq!(result.ending, Ending::Signalled(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_is_exactly_the_spec_s() {
    // regression: steps inherited the runner's (and so the engine's) whole environment.
    std::env::set_var("PLUE_TEST_RUNNER_ONLY", "leaked");
    let mut spec = bash(
        "echo \"${ADDED:-unset} ${HOME:-unset} ${PLUE_TEST_RUNNER_ONLY:-unset}\"",
        Duration::from_secs(30),
    );
    spec.env.insert("ADDED".into(), "yes".into());
    let (_, lines) = collect(spec, CancellationToken::new()).await;
    assert_eq!(texts(&lines, Stream::Stdout), ["yes unset unset"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_output_is_normalised() {
    let script = r#"printf 'a\0b\r\n'; head -c 40000 /dev/zero | tr '\0' x; printf '\nlast'"#;
    let (result, lines) = run_bash(script).await;
    assert_eq!(result.ending, Ending::Exited(0));
    let out = texts(&lines, Stream::Stdout);
    let lens: Vec<usize> = out.iter().map(|l| l.len()).collect();
    assert_eq!(out[0], "a\u{FFFD}b");
    assert_eq!(
        lens[1..],
        [
            MAX_LINE_BYTES,
            MAX_LINE_BYTES,
            40000 - 2 * MAX_LINE_BYTES,
            4
        ]
    );
    assert_eq!(out[4], "last", "an unterminated last line is delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_lines_arrive_exactly_once_and_in_order() {
    let (result, lines) = run_bash("seq 1 200000; echo done >&2").await;
    assert_eq!(result.ending, Ending::Exited(0));
    let out = texts(&lines, Stream::Stdout);
    assert_eq!(out.len(), 200_000);
    assert_eq!((out[0], out[199_999]), ("1", "200000"));
    assert!(out
        .iter()
        .enumerate()
        .all(|(i, l)| l.parse::<usize>() == Ok(i + 1)));
    assert_eq!(texts(&lines, Stream::Stderr), ["done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_group() {
    let started = std::time::Instant::now();
    let (tx, mut rx) = mpsc::channel(8);
    // The step prints its pid, which is also its process group id.
    let spec = bash("echo $$; sleep 100 & sleep 100", Duration::from_secs(1));
    let step = tokio::spawn(run(spec, tx, CancellationToken::new()));
    let pgid: i32 = rx.recv().await.unwrap().1.parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_millis(800);
    while live_in_group(pgid).len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(live_in_group(pgid).len(), 3, "bash and both sleeps run");

    let result = step.await.unwrap().unwrap();
    assert_eq!(result.ending, Ending::TimedOut);
    assert_eq!(
        result.reason(Duration::from_secs(1)).unwrap(),
        "timed out after 1s"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        live_in_group(pgid).is_empty(),
        "the group survived the timeout"
    );
    assert!(rx.recv().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_children_die_with_their_step() {
    let (result, _) = run_bash("sleep 1233.5 & echo started").await;
    assert_eq!(result.ending, Ending::Exited(0));
    assert!(live_with_cmdline("sleep 1233.5").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_children_are_swept() {
    // `setsid` leaves the group, the subshell orphans it, and its stdout is not the pipe.
    let script = "(setsid sleep 1234.5 >/dev/null 2>&1 &); \
                  (env -u PLUE_STEP_COOKIE setsid sleep 1234.6 >/dev/null 2>&1 &); sleep 0.2";
    let (result, _) = run_bash(script).await;
    assert_eq!(result.ending, Ending::Exited(0));
    assert!(
        live_with_cmdline("sleep 1234.5").is_empty(),
        "cookie holder survived"
    );
    assert!(
        live_with_cmdline("sleep 1234.6").is_empty(),
        "orphan without cookie survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_pipe_holder_cannot_hold_the_runner() {
    // A documented blind spot of the sweep: no cookie, its own group, our session. It keeps
    // stdout open, so only the drain grace ends the wait.
    let script = "echo hi; env -i bash -c 'set -m; sleep 1235.5 &'";
    let started = std::time::Instant::now();
    let (result, lines) = run_bash(script).await;
    let elapsed = started.elapsed();
    let strays = live_with_cmdline("sleep 1235.5");
    for pid in &strays {
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
    }
    assert_eq!(result.ending, Ending::Exited(0));
    assert_eq!(texts(&lines, Stream::Stdout), ["hi"]);
    assert_eq!(
        strays.len(),
        1,
        "the stray is expected to survive the sweep"
    );
    assert!(
        elapsed >= DRAIN_GRACE && elapsed < DRAIN_GRACE + Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_step() {
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = std::time::Instant::now();
    let (result, lines) = collect(
        bash("echo before; sleep 1236.5", Duration::from_secs(60)),
        cancel,
    )
    .await;
    assert_eq!(result.ending, Ending::Cancelled);
    assert_eq!(result.reason(Duration::from_secs(60)).unwrap(), "cancelled");
    assert_eq!(texts(&lines, Stream::Stdout), ["before"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(live_with_cmdline("sleep 1236.5").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_is_an_error() {
    let mut spec = bash("", Duration::from_secs(1));
    spec.program = "/nonexistent/plue-no-such-program".into();
    let (tx, _rx) = mpsc::channel(1);
    let err = run(spec, tx, CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}
