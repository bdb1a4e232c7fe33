//! Runs one step process: spawn, stream its output as lines, enforce the timeout and
//! cancellation, and leave nothing behind.
//!
//! Promises of [`run`]:
//! - The process runs in its own session and process group, and in its own cgroup where
//!   the host allows it (see `containment`), with stdin on `/dev/null`.
//! - Every line it writes to stdout or stderr reaches `lines`, in the order it wrote them
//!   across both streams (the `ordered` submodule says exactly what order that is; the
//!   agent numbers the lines in the order they arrive), as valid UTF-8 without NUL
//!   characters and at most [`plue_types::protocol::MAX_LINE_BYTES`] bytes long (the `lines`
//!   submodule has the exact rules). A full channel pauses reading, and the step's writes
//!   with it; nothing is dropped.
//! - When it returns, the step's cgroup and process group have been SIGKILLed — also after a
//!   normal exit, so background children never outlive their step — the cgroup removed, and
//!   escaped descendants swept (see the `reaper` module): nothing the step started runs on,
//!   whatever session, group or environment it chose.
//! - Reading stops at EOF, which comes once every writer is dead; a stray process holding
//!   the pipe open cannot hold the runner more than [`DRAIN_GRACE`] after the kill.
//!
//! - The process gets exactly `spec.env` (a cleared environment otherwise) and runs as
//!   `spec.user` when one is given.
//!
//! The child's environment also carries `PLUE_STEP_COOKIE`, which the sweep uses to find
//! descendants. The sweep assumes one step runs at a time in this process (see `reaper`).

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use nix::unistd::Pid;
use tokio::sync::mpsc::Sender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::containment;
use crate::launch::{Exit, Launched};
use crate::mask::Masker;
use crate::reaper;
use crate::step_user::StepUser;
use ordered::OrderedReader;
use plue_types::protocol::Stream;

mod lines;
mod ordered;
mod python_zygote;

pub(crate) use crate::launch::step_pipe;

/// How long after the kill reading may wait for the pipes' EOF.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What to run and how.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The executable, e.g. a resolved `bash` or Python interpreter.
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The whole environment: nothing of the runner's own is inherited (see `step_env`).
    pub env: BTreeMap<String, String>,
    /// The user to run as; `None` runs as the runner's own user (see `step_user`).
    pub user: Option<StepUser>,
    pub timeout: Duration,
    /// The attempt's secrets, masked in every line before it is cut (see `lines`).
    pub masker: Masker,
    /// A `python3 -u -c` spec that must not be forked from the warm interpreter.
    pub fresh_interpreter: bool,
    /// The step's network namespace (`crate::network`), which the process joins; `None`:
    /// the host's network. A python step with one never forks from the warm interpreter.
    pub network: Option<crate::network::Namespace>,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself with this code.
    Exited(i32),
    /// A signal killed it (not one the runner sent).
    Signalled(i32),
    /// The timeout passed and the runner killed it.
    TimedOut,
    /// The cancellation token fired and the runner killed it.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessResult {
    pub ending: Ending,
    /// From spawn until the process exited or was killed.
    pub duration: Duration,
}

impl ProcessResult {
    /// Why the step did not succeed, or `None` when it exited with 0. `timeout` is the one
    /// from the spec, for the message.
    pub fn reason(&self, timeout: Duration) -> Option<String> {
        match self.ending {
            Ending::Exited(0) => None,
            Ending::Exited(code) => Some(format!("exit code {code}")),
            Ending::Signalled(signal) => Some(format!("killed by signal {signal}")),
            // `f64`'s Display is the shortest exact form: `2`, `1.5`, `0.25`.
            Ending::TimedOut => Some(format!("timed out after {}s", timeout.as_secs_f64())),
            Ending::Cancelled => Some("cancelled".to_owned()),
        }
    }

    /// The exit code when the process exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match self.ending {
            Ending::Exited(code) => Some(code),
            _ => None,
        }
    }
}

/// What ended the wait for the process.
enum Trigger {
    Exited,
    TimedOut,
    Cancelled,
}

/// Runs `spec` to the end; see the module doc for the promises. Fails only when the
/// process cannot be spawned or waited for.
pub async fn run(
    spec: ProcessSpec,
    lines: Sender<(Stream, String)>,
    cancel: CancellationToken,
) -> io::Result<ProcessResult> {
    if let Some(warm) = python_zygote::run(&spec, &lines, &cancel).await {
        return warm;
    }
    run_contained(spec, lines, cancel, containment::Mode::Auto).await
}

/// Starts the warm interpreter `python` steps are forked from, before the first one
/// arrives (see `python_zygote::prewarm`); `base` is the runner's base step environment,
/// `users` who its steps run as. Answers whether one is running.
pub async fn prewarm_python(
    program: &std::path::Path,
    base: &BTreeMap<String, String>,
    users: crate::step_user::StepUsers,
) -> bool {
    python_zygote::prewarm(program, base, users).await
}

/// [`run`], with the containment `mode` chosen (tests force the fallback with it).
pub(crate) async fn run_contained(
    spec: ProcessSpec,
    lines: Sender<(Stream, String)>,
    cancel: CancellationToken,
    mode: containment::Mode,
) -> io::Result<ProcessResult> {
    let program = containment::Program {
        path: &spec.program,
        args: &spec.args,
        env: &spec.env,
        cwd: &spec.cwd,
        network: spec.network.as_ref(),
    };
    // Its own session and (where the host allows) cgroup, then the attempt's user.
    let (mut child, contained) = containment::spawn(program, spec.user, mode)?;
    let started = Instant::now();
    let pgid = contained.leader();

    let stop = CancellationToken::new();
    let mut readers = Vec::with_capacity(1);
    if let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) {
        let reader = OrderedReader::new(stdout, stderr, lines.clone(), stop.clone(), &spec.masker)?;
        readers.push(tokio::spawn(reader.run()));
    }

    let trigger = wait_for_trigger(&mut child, pgid, spec.timeout, &cancel).await;
    let duration = started.elapsed();
    contained.kill();
    let killed_at = Instant::now();
    let status = child.wait().await;
    // After the leader was reaped: the sweep may then collect every zombie of the step.
    contained.finish().await;

    drain_readers(readers, killed_at, &stop).await;

    let ending = match trigger {
        Trigger::TimedOut => Ending::TimedOut,
        Trigger::Cancelled => Ending::Cancelled,
        Trigger::Exited => match status? {
            Exit::Code(code) => Ending::Exited(code),
            Exit::Signal(signal) => Ending::Signalled(signal),
        },
    };
    Ok(ProcessResult { ending, duration })
}

/// Waits until the process exits, the timeout passes or `cancel` fires. The leader is not
/// reaped on exit while the pidfd- or waitid-based watcher works, so its group id stays
/// reserved.
async fn wait_for_trigger(
    child: &mut Launched,
    pgid: Pid,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Trigger {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // A pidfd turns readable when the process has exited, and reading it reaps nothing:
    // the wait costs no thread (Linux 5.3 and later; a thread blocked in waitid otherwise).
    let exited = async move {
        match exit_notice(pgid) {
            Ok(pidfd) => pidfd.readable().await.map(drop),
            Err(err) => {
                tracing::debug!(%err, "no pidfd; waiting with waitid");
                tokio::task::spawn_blocking(move || reaper::wait_exited_without_reaping(pgid))
                    .await
                    .unwrap_or_else(|err| {
                        tracing::warn!(%err, "exit watcher failed");
                        Err(io::Error::other(err))
                    })
            }
        }
    };
    tokio::select! {
        biased;
        watched = exited => match watched {
            Ok(()) => return Trigger::Exited,
            Err(err) => tracing::debug!(%err, "no exit watcher; waiting with tokio"),
        },
        () = &mut deadline => return Trigger::TimedOut,
        () = cancel.cancelled() => return Trigger::Cancelled,
    }
    // Fallback: this reaps the leader, so the group kill that follows relies on the kernel
    // not reusing the id within microseconds (it allocates pids sequentially).
    tokio::select! {
        biased;
        _ = child.wait() => Trigger::Exited,
        () = &mut deadline => Trigger::TimedOut,
        () = cancel.cancelled() => Trigger::Cancelled,
    }
}

/// A pidfd of process `pid` that becomes readable once it has exited (a child of ours is
/// not reaped by it: it stays a zombie until `wait`). Linux 5.3 and later.
pub fn exit_notice(pid: Pid) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    let pid = rustix::process::Pid::from_raw(pid.as_raw())
        .ok_or_else(|| io::Error::other("no such pid"))?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK)?;
    // Deprecated because a `T` could swap its descriptor while registered; an `OwnedFd`
    // owned by the `AsyncFd` cannot, so the safe constructor is sound here (its
    // replacement is `unsafe`, which the runner keeps to its `pre_exec` hooks).
    #[allow(deprecated)]
    tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)
}

fn ending_of(status: std::process::ExitStatus) -> Ending {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ending::Exited(code),
        (None, Some(signal)) => Ending::Signalled(signal),
        // `wait` only reports terminated processes, which have one or the other.
        (None, None) => Ending::Exited(-1),
    }
}

/// Waits for a step's output readers to send what its pipes still hold, at most
/// [`DRAIN_GRACE`] after the kill at `killed_at`: then `stop` makes them end (a process
/// that escaped the kill cannot keep a pipe open and hold the runner).
pub(crate) async fn drain_readers(
    readers: impl IntoIterator<Item = tokio::task::JoinHandle<()>>,
    killed_at: Instant,
    stop: &CancellationToken,
) {
    let drain = futures::future::join_all(readers);
    tokio::pin!(drain);
    let joined = tokio::select! {
        joined = &mut drain => joined,
        () = tokio::time::sleep_until(killed_at + DRAIN_GRACE) => {
            stop.cancel();
            drain.await
        }
    };
    for result in joined {
        if let Err(err) = result {
            tracing::warn!(%err, "a step output reader failed");
        }
    }
}

#[cfg(test)]
mod tests;
