//! The zygote: one warm, locked-down interpreter that never runs workflow code itself, and
//! forks a fresh child for every evaluation.
//!
//! One child is always *armed* ahead of time: forked, locked down further, warmed up by
//! evaluating a fixed, trusted workflow (so the copy-on-write page faults of a first
//! evaluation are paid before any request arrives), and blocked reading stdin. When a
//! request comes, the armed child reads it, tells the zygote through its *lifeline* pipe
//! that it started, evaluates, answers once on its own *answer* pipe and exits; the zygote
//! arms the next child at once, times the running one and relays exactly one frame of its
//! answer to the parent.
//!
//! Invariants:
//! - the zygote is single-threaded when it forks (its seccomp filter refuses threads), and
//!   it forks with the interpreter idle (no GIL held, no Python frame running);
//! - the zygote never reads a request, and nothing of any evaluation stays in it: an
//!   answer passes through one buffer that is zeroed before the next child is forked, so
//!   every child starts from the same memory image and the same warm-up;
//! - no child holds the result channel: each writes to its own pipe (duplicated over the
//!   channel's descriptor number before any request is read), whose read end the zygote
//!   closes after relaying one frame. A child that escaped the language layer can only
//!   garble its own answer; it can never write a frame the parent would take for the
//!   zygote's `Done` or for another evaluation's answer (which would also let it read the
//!   next request from the shared stdin while the parent thinks it is gone);
//! - a child answers at most once, then `_exit`s without running a finaliser, `atexit`
//!   hook or garbage collection: no object, cache or budget of an evaluation outlives it;
//! - the zygote kills a child at the wall-clock bound (counted from the moment it read
//!   its request), reaps it and then sends [`Frame::Done`], so the parent always learns
//!   how the child ended.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getpid, pipe, ForkResult, Pid};

use super::lockdown::{self, EvaluationFilter};
use crate::protocol::{write_frame, Frame, Request};

/// What a child does; implemented by the worker.
pub(crate) trait Job {
    /// Runs the fixed warm-up evaluation; its result is discarded.
    fn warm_up(&self);
    /// Blocks for the next request; `None` when the parent closed stdin.
    fn read_request(&self) -> Result<Option<Request>, String>;
    /// Evaluates `request` and writes the one answer to `results`.
    fn answer(&self, request: Request, results: &mut File) -> Result<(), String>;
}

/// Exit code of a child that found stdin closed: the parent is done with this zygote.
const EXIT_NO_REQUEST: i32 = 4;
/// Exit code of a child that failed in our own code.
const EXIT_FAILED: i32 = 3;

struct Armed {
    pid: Pid,
    lifeline: OwnedFd,
    /// The read end of the child's answer pipe.
    answers: OwnedFd,
}

/// Serves evaluations until stdin closes.
pub(crate) fn serve(
    results: &mut File,
    filter: &EvaluationFilter,
    timeout: Duration,
    job: &impl Job,
) -> Result<(), String> {
    let zygote = getpid();
    let mut armed = arm(results, filter, zygote, job, None)?;
    loop {
        if !started(&armed.lifeline)? {
            let (signal, code) = reap(armed.pid)?;
            if code == Some(EXIT_NO_REQUEST) {
                return Ok(());
            }
            return Err(format!(
                "an evaluation child ended before its request (signal {signal:?}, exit {code:?})"
            ));
        }
        let running = armed;
        let deadline = Instant::now() + timeout;
        armed = arm(results, filter, zygote, job, Some(&running))?;
        let relayed = relay_answer(&running.answers, results, deadline)?;
        drop(running.answers);
        let timed_out = !relayed || !ended_before(&running.lifeline, deadline)?;
        if timed_out {
            let _ = kill(running.pid, Signal::SIGKILL);
        }
        let (signal, code) = reap(running.pid)?;
        let retire = lockdown::cpu_used_seconds() >= lockdown::CPU_RETIRE_SECS;
        let done = Frame::Done {
            timed_out,
            signal,
            code,
            retire,
        };
        write_frame(results, &done).map_err(|e| format!("write: {e}"))?;
        if retire {
            let _ = kill(armed.pid, Signal::SIGKILL);
            let _ = reap(armed.pid);
            return Ok(());
        }
    }
}

/// Forks the next child while `running` (if any) evaluates; in the child, never returns.
fn arm(
    results: &mut File,
    filter: &EvaluationFilter,
    zygote: Pid,
    job: &impl Job,
    running: Option<&Armed>,
) -> Result<Armed, String> {
    let (lifeline, child_end) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let (answers, answers_child_end) = pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the zygote is single-threaded (its seccomp filter refuses thread creation),
    // so the child's copy of every lock and allocator is consistent; the child only runs
    // `child` and then `_exit`s.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(lifeline);
            drop(answers);
            // Nothing of the running child's is ours to hold.
            if let Some(running) = running {
                let _ = nix::unistd::close(running.lifeline.as_raw_fd());
                let _ = nix::unistd::close(running.answers.as_raw_fd());
            }
            // The result channel's descriptor now names this child's own pipe.
            // SAFETY: both descriptors are open; `results` keeps its number, only what
            // it refers to changes.
            if unsafe { libc::dup2(answers_child_end.as_raw_fd(), results.as_raw_fd()) } < 0 {
                // SAFETY: as below.
                unsafe { libc::_exit(EXIT_FAILED) }
            }
            drop(answers_child_end);
            let code = child(results, filter, zygote, job, &child_end);
            // SAFETY: `_exit` ends the process at once; nothing of ours needs to run.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            drop(answers_child_end);
            Ok(Armed {
                pid: child,
                lifeline,
                answers,
            })
        }
    }
}

fn child(
    results: &mut File,
    filter: &EvaluationFilter,
    zygote: Pid,
    job: &impl Job,
    lifeline: &OwnedFd,
) -> i32 {
    if lockdown::lock_down_evaluation(filter, zygote).is_err() {
        return EXIT_FAILED;
    }
    job.warm_up();
    let request = match job.read_request() {
        Ok(Some(request)) => request,
        Ok(None) => return EXIT_NO_REQUEST,
        Err(_) => return EXIT_FAILED,
    };
    if nix::unistd::write(lifeline, b"s").is_err() {
        return EXIT_FAILED;
    }
    match job.answer(request, results) {
        Ok(()) => 0,
        Err(_) => EXIT_FAILED,
    }
}

/// Reads one frame from the running child's `answers` pipe until `deadline` and writes
/// it, whole, to `results`: true when relayed or when the child closed its pipe without a
/// whole frame (it died; nothing is written), false when the deadline passed. A frame the
/// parent would refuse for its size is not relayed either. The buffer is zeroed before it
/// is freed, so no later child is forked with an answer in the zygote's memory.
fn relay_answer(answers: &OwnedFd, results: &mut File, deadline: Instant) -> Result<bool, String> {
    let mut frame = Zeroed(Vec::new());
    let mut expected = 4;
    let mut chunk = Zeroed(vec![0u8; 64 * 1024]);
    while frame.0.len() < expected {
        if !readable_before(answers, deadline)? {
            return Ok(false);
        }
        let want = (expected - frame.0.len()).min(chunk.0.len());
        match nix::unistd::read(answers, &mut chunk.0[..want]) {
            Ok(0) => return Ok(true),
            Ok(n) => frame.0.extend_from_slice(&chunk.0[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(e) => return Err(format!("read answer: {e}")),
        }
        if expected == 4 && frame.0.len() == 4 {
            let len = u32::from_be_bytes(frame.0[..4].try_into().expect("4 bytes")) as usize;
            if len > crate::protocol::MAX_FRAME_BYTES {
                return Ok(true);
            }
            expected = 4 + len;
            frame.0.reserve_exact(len);
        }
    }
    results
        .write_all(&frame.0)
        .map_err(|e| format!("write: {e}"))?;
    Ok(true)
}

/// A buffer overwritten with zeros when dropped.
struct Zeroed(Vec<u8>);

impl Drop for Zeroed {
    fn drop(&mut self) {
        let spare = self.0.capacity();
        // SAFETY: the whole allocation (`capacity` bytes) is ours to write.
        unsafe { std::ptr::write_bytes(self.0.as_mut_ptr(), 0, spare) };
        std::hint::black_box(&self.0);
    }
}

/// Waits until `fd` is readable (or closed): true, or `deadline` passed: false.
fn readable_before(fd: &OwnedFd, deadline: Instant) -> Result<bool, String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let ms = u32::try_from(left.as_millis().max(1)).unwrap_or(u32::MAX);
        let wait = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, wait) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(true),
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
}

/// Blocks until the armed child reports it read a request (true) or ends (false).
fn started(lifeline: &OwnedFd) -> Result<bool, String> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(lifeline, &mut byte) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("read lifeline: {e}")),
        }
    }
}

/// Waits until every write end of `lifeline` is closed (the child has ended): true, or
/// `deadline` passed: false.
fn ended_before(lifeline: &OwnedFd, deadline: Instant) -> Result<bool, String> {
    loop {
        if !readable_before(lifeline, deadline)? {
            return Ok(false);
        }
        // Only the end of the pipe is expected here; drain anything else.
        let mut buf = [0u8; 16];
        match nix::unistd::read(lifeline, &mut buf) {
            Ok(0) => return Ok(true),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("read lifeline: {e}")),
        }
    }
}

/// Reaps `child`: (signal, exit code).
fn reap(child: Pid) -> Result<(Option<i32>, Option<i32>), String> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok((None, Some(code))),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok((Some(signal as i32), None)),
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}

#[cfg(test)]
mod tests;
