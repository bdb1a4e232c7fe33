//! Tests of [`super::run`] against real `bash` processes.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::containment::{self, Mode};
use crate::step_user::StepUser;
use plue_types::protocol::MAX_LINE_BYTES;

fn bash(script: &str, timeout: Duration) -> ProcessSpec {
    ProcessSpec {
        program: "bash".into(),
        args: vec!["-c".into(), script.into()],
        cwd: std::env::temp_dir(),
        env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
        user: None,
        timeout,
        masker: Default::default(),
        fresh_interpreter: false,
        network: None,
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
    // regression: no cookie, its own group, the runner's session — it survived the sweep
    // and held stdout open until the drain grace ended the wait.
    for mode in [Mode::Auto, Mode::NoCgroup] {
        let script = "echo hi; env -i bash -c 'set -m; sleep 1235.5 &'";
        let started = std::time::Instant::now();
        let (tx, mut rx) = mpsc::channel(64);
        let result = run_contained(
            bash(script, Duration::from_secs(30)),
            tx,
            CancellationToken::new(),
            mode,
        )
        .await
        .expect("run");
        let elapsed = started.elapsed();
        let strays = live_with_cmdline("sleep 1235.5");
        for pid in &strays {
            let _ = nix::sys::signal::kill(Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
        }
        assert_eq!(result.ending, Ending::Exited(0));
        assert_eq!(rx.recv().await.map(|l| l.1).as_deref(), Some("hi"));
        assert!(strays.is_empty(), "{mode:?}: the stray survived");
        assert!(elapsed < DRAIN_GRACE, "{mode:?}: {elapsed:?}");
    }
}

/// The start of every attacking step: `await_pids N` waits (bounded) until `$PIDS` holds
/// N pids, so an intermediate parent exits only once its escapee has recorded itself;
/// `$ESCAPEE` is a script for `bash -c "$ESCAPEE" "$PIDS"` that records its pid and
/// becomes a `sleep 30`. The step also records its own cgroup.
const ATTACK_PRELUDE: &str = r#"
await_pids() {
    for _ in $(seq 1000); do
        [ "$(wc -l < "$PIDS")" -ge "$1" ] && return 0
        sleep 0.005
    done
    echo "escapees did not start" >&2
    exit 1
}
ESCAPEE='echo $$ >> "$0"; exec sleep 30'
grep '^0::' /proc/self/cgroup > "$PIDS.cgroup"
"#;

/// Runs `attack` (after [`ATTACK_PRELUDE`]) as a step contained per `mode` and as `user`,
/// and asserts that its `escapees` all recorded themselves, that every one of them is dead
/// the moment the step's `run` returns, and that the step ran in its own cgroup exactly
/// when `mode` and the host allow it.
async fn assert_escapees_die(attack: &str, escapees: usize, mode: Mode, user: Option<StepUser>) {
    let dir = tempfile::tempdir().unwrap();
    // The step may be another user: it must be able to write its pid file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let pids_file = dir.path().join("pids");
    std::fs::write(&pids_file, "").unwrap();
    std::fs::set_permissions(&pids_file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut spec = bash(
        &format!("{ATTACK_PRELUDE}\n{attack}"),
        Duration::from_secs(20),
    );
    spec.env
        .insert("PIDS".into(), pids_file.display().to_string());
    // In the directory holding the pid file, as a step in its attempt's: a step user's
    // `/tmp` is its own (`rooms`), and only the working directory's stays.
    spec.cwd = dir.path().to_owned();
    spec.user = user;
    let started = std::time::Instant::now();
    let (tx, mut rx) = mpsc::channel(64);
    let result = run_contained(spec, tx, CancellationToken::new(), mode)
        .await
        .expect("run");
    let elapsed = started.elapsed();

    let pids: Vec<i32> = std::fs::read_to_string(&pids_file)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let alive: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&pid| is_our_sleep(pid))
        .collect();
    for pid in &alive {
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
    }
    let mut output = Vec::new();
    while let Ok(line) = rx.try_recv() {
        output.push(line.1);
    }
    assert_eq!(result.ending, Ending::Exited(0), "{mode:?}: {output:?}");
    assert_eq!(
        pids.len(),
        escapees,
        "{mode:?}: every escapee started: {output:?}"
    );
    assert!(
        alive.is_empty(),
        "{mode:?}: escapees outlived their step: {alive:?}"
    );
    assert!(elapsed < DRAIN_GRACE, "{mode:?}: took {elapsed:?}");

    let cgroup = std::fs::read_to_string(dir.path().join("pids.cgroup")).unwrap();
    let own = cgroup.contains("/plue-step-");
    let expected = mode == Mode::Auto && containment::available();
    assert_eq!(own, expected, "{mode:?}: the step's cgroup was {cgroup}");
    if own {
        let name = cgroup.trim().rsplit('/').next().unwrap();
        let base = containment::base_dir().unwrap();
        assert!(!base.join(name).exists(), "the step's cgroup was removed");
    }
}

/// Whether `pid` is a live (not zombie) `sleep 30`.
fn is_our_sleep(pid: i32) -> bool {
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat[stat.rfind(')').unwrap() + 1..]
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    alive && cmdline == b"sleep\x0030\x00"
}

/// Each attack, once where the host gives the step a cgroup and once forced onto the
/// fallback (process group, sessions and the sweep of re-parented orphans).
macro_rules! attacks {
    ($($with_cgroup:ident, $without:ident: $escapees:expr, $script:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $with_cgroup() {
            assert_escapees_die($script, $escapees, Mode::Auto, None).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $without() {
            assert_escapees_die($script, $escapees, Mode::NoCgroup, None).await;
        }
    )*};
}

attacks! {
    setsid_double_fork_dies_with_its_step,
    setsid_double_fork_dies_with_its_step_without_a_cgroup:
        1, r#"(setsid bash -c "$ESCAPEE" "$PIDS" >/dev/null 2>&1 & await_pids 1)"#;
    new_process_group_dies_with_its_step,
    new_process_group_dies_with_its_step_without_a_cgroup:
        2, r#"set -m
              bash -c "$ESCAPEE" "$PIDS" >/dev/null 2>&1 &
              setsid -f bash -c "$ESCAPEE" "$PIDS" >/dev/null 2>&1
              await_pids 2"#;
    cleared_environment_dies_with_its_step,
    cleared_environment_dies_with_its_step_without_a_cgroup:
        2, r#"(env -i /bin/bash -c "$ESCAPEE" "$PIDS" >/dev/null 2>&1 & await_pids 1)
              (env -i setsid /bin/bash -c "$ESCAPEE" "$PIDS" >/dev/null 2>&1 & await_pids 2)"#;
    nohup_dies_with_its_step,
    nohup_dies_with_its_step_without_a_cgroup:
        1, r#"nohup bash -c "$ESCAPEE" "$PIDS" >/dev/null 2>&1 &
              await_pids 1"#;
    every_escape_at_once_dies_with_its_step,
    every_escape_at_once_dies_with_its_step_without_a_cgroup:
        // A new session, a cleared environment, a new group, a double fork below that, and
        // a copy of stdout kept open. (Each parent waits for the pid to be recorded: a
        // concurrent test's sweep may take an orphan of this one as soon as it is one.)
        1, r#"(setsid env -i PIDS="$PIDS" ESCAPEE="$ESCAPEE" /bin/bash -c '
                  set -m
                  (nohup /bin/bash -c "$ESCAPEE" "$PIDS" 2>/dev/null &
                   while [ ! -s "$PIDS" ]; do sleep 0.005; done)' &
              await_pids 1)"#;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_step_s_escapees_die_too() {
    // The agent drops a step's future (the runner shuts down, a select! loses): the kill
    // and the sweep still happen, from the drop. (The escapee keeps its environment: until
    // the abandon, a concurrent test's sweep must know it for a running step's.)
    for mode in [Mode::Auto, Mode::NoCgroup] {
        let dir = tempfile::tempdir().unwrap();
        let pids_file = dir.path().join("pids");
        std::fs::write(&pids_file, "").unwrap();
        let script = format!(
            "{ATTACK_PRELUDE}\n\
             (setsid /bin/bash -c \"$ESCAPEE\" \"$PIDS\" >/dev/null 2>&1 & await_pids 1)\n\
             sleep 30"
        );
        let mut spec = bash(&script, Duration::from_secs(60));
        spec.env
            .insert("PIDS".into(), pids_file.display().to_string());
        let (tx, _rx) = mpsc::channel(64);
        let step = tokio::spawn(run_contained(spec, tx, CancellationToken::new(), mode));
        let recorded = || std::fs::read_to_string(&pids_file).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while recorded().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid: i32 = recorded().trim().parse().expect("the escapee started");
        // It records its pid, then becomes `sleep`: under load the check may come between.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !is_our_sleep(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            is_our_sleep(pid),
            "{mode:?}: the escapee runs before the abandon"
        );
        step.abort();
        let _ = step.await;
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while is_our_sleep(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let survived = is_our_sleep(pid);
        if survived {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        assert!(
            !survived,
            "{mode:?}: the escapee outlived its abandoned step"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setsid_double_fork_as_another_user_dies_with_its_step() {
    if !nix::unistd::geteuid().is_root() {
        // Switching users needs root; the other attacks cover a non-root runner.
        return;
    }
    let nobody = Some(StepUser {
        uid: 65534,
        gid: 65534,
    });
    // It also tries to leave its cgroup for the runner's, which a step user cannot write
    // (an exit code other than 0 fails the assertion).
    let attack = r#"
        own=$(cut -d: -f3 < "$PIDS.cgroup")
        for mount in /sys/fs/cgroup/unified /sys/fs/cgroup; do
            if echo $$ 2>/dev/null > "$mount$(dirname "$own")/cgroup.procs"; then
                echo "left the cgroup through $mount"
                exit 3
            fi
        done
        (env -i setsid /bin/bash -c "$ESCAPEE" "$PIDS" >/dev/null 2>&1 & await_pids 1)"#;
    for mode in [Mode::Auto, Mode::NoCgroup] {
        assert_escapees_die(attack, 1, mode, nobody).await;
    }
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
