//! The pool's zygotes, each one process: starting one (its `Ready` frame within
//! [`STARTUP_TIMEOUT`]), the idle set and its replacements, asking one for an evaluation,
//! and reading what it sends — size-capped frames, the `Done` it owes for each child.
//!
//! Invariant: a zygote is reused only when its last child's `Done` says it may be
//! ([`Ended::reusable`]); any other answer, or none in time, and the zygote is killed and
//! replaced in the background.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::{EvalError, Inner};
use crate::protocol::{Frame, Request, MAX_FRAME_BYTES};
use crate::worker::{MEMORY_FLAG, TIMEOUT_FLAG};

/// How long a new worker may take to start its interpreter.
const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

pub(super) struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// The last child answered; the zygote's `Done` for it is still to be read. Read at the
    /// next use, so a child's exit is not on the path of its own evaluation.
    owes_done: bool,
}

impl Inner {
    /// An idle worker that is still alive.
    pub(super) fn take_idle(&self) -> Option<Worker> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(mut worker) = idle.pop() {
            if matches!(worker.child.try_wait(), Ok(None)) {
                return Some(worker);
            }
            self.killed.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    /// Returns a warm worker to the idle set; one beyond `workers` is dropped (and killed).
    pub(super) fn release(&self, worker: Worker) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.config.workers {
            idle.push(worker);
        }
    }

    /// Starts a replacement in the background so the next evaluation finds a warm worker.
    pub(super) fn replace(self: &Arc<Self>) {
        self.killed.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            match inner.spawn_worker().await {
                Ok(worker) => inner.release(worker),
                Err(e) => tracing::warn!("cannot start a replacement evaluator worker: {e}"),
            }
        });
    }

    pub(super) async fn spawn_worker(&self) -> Result<Worker, EvalError> {
        let command = &self.config.command;
        let mut starting = Command::new(&command.program);
        crate::worker::layout::set_before_exec(&mut starting);
        let mut child = starting
            .args(&command.args)
            .arg(MEMORY_FLAG)
            .arg(self.config.limits.memory_bytes.to_string())
            .arg(TIMEOUT_FLAG)
            .arg(self.config.limits.timeout.as_millis().to_string())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                EvalError::Unavailable(format!("cannot start {}: {e}", command.program.display()))
            })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut worker = Worker {
            child,
            stdin,
            stdout,
            owes_done: false,
        };
        match tokio::time::timeout(STARTUP_TIMEOUT, read_frame(&mut worker.stdout)).await {
            Ok(Ok(Frame::Ready)) => {
                self.started.fetch_add(1, Ordering::Relaxed);
                Ok(worker)
            }
            Ok(Ok(_)) => Err(EvalError::Unavailable(
                "the evaluator worker did not start with a Ready frame".into(),
            )),
            Ok(Err(e)) => {
                let status = worker.finish().await;
                Err(EvalError::Unavailable(format!(
                    "the evaluator worker failed to start ({e}; exit {status:?})"
                )))
            }
            Err(_) => {
                worker.finish().await;
                Err(EvalError::Unavailable(format!(
                    "the evaluator worker did not start within {STARTUP_TIMEOUT:?}"
                )))
            }
        }
    }
}

impl Worker {
    /// Sends `request`; returns the child's answer (undecoded), or the zygote's report of
    /// how the child ended when it gave none. After an answer, the report is owed.
    pub(super) async fn ask(
        &mut self,
        request: &Request,
    ) -> std::io::Result<(Option<Vec<u8>>, Option<Ended>)> {
        let mut bytes = Vec::with_capacity(request.source.len() + 512);
        crate::protocol::write_frame(&mut bytes, request)?;
        self.stdin.write_all(&bytes).await?;
        self.stdin.flush().await?;
        let first = read_body(&mut self.stdout).await?;
        if let Some(done) = as_done(&first) {
            return Ok((None, Some(done)));
        }
        self.owes_done = true;
        Ok((Some(first), None))
    }

    /// Reads the `Done` owed for the previous child, if any: whether the zygote may serve
    /// again (it may not if it retires, broke the protocol or is gone).
    pub(super) async fn settle(&mut self, bound: std::time::Duration) -> bool {
        if !self.owes_done {
            return true;
        }
        self.owes_done = false;
        match tokio::time::timeout(bound, read_body(&mut self.stdout)).await {
            Ok(Ok(body)) => as_done(&body).is_some_and(|ended| ended.reusable()),
            _ => false,
        }
    }

    /// Kills the worker and reaps it.
    pub(super) async fn finish(mut self) -> Option<std::process::ExitStatus> {
        let _ = self.child.start_kill();
        self.child.wait().await.ok()
    }
}

/// How an evaluation's child ended, from the zygote's `Done` frame.
pub(super) struct Ended {
    pub(super) timed_out: bool,
    pub(super) signal: Option<i32>,
    code: Option<i32>,
    retire: bool,
}

impl Ended {
    /// Whether the zygote may serve again. A child that exited with an error code may not
    /// have read its request, so the zygote's input could hold a stale one.
    pub(super) fn reusable(&self) -> bool {
        !self.retire && self.code.is_none_or(|c| c == 0)
    }
}

/// The zygote's `Done` frame, if `body` is one (a small frame, decoded on the spot).
fn as_done(body: &[u8]) -> Option<Ended> {
    if body.len() > 512 {
        return None;
    }
    match serde_json::from_slice(body) {
        Ok(Frame::Done {
            timed_out,
            signal,
            code,
            retire,
        }) => Some(Ended {
            timed_out,
            signal,
            code,
            retire,
        }),
        _ => None,
    }
}

async fn read_frame(stdout: &mut ChildStdout) -> std::io::Result<Frame> {
    let body = read_body(stdout).await?;
    serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// One frame's body, size-capped, not decoded.
async fn read_body(stdout: &mut ChildStdout) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stdout.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "oversized frame",
        ));
    }
    let mut body = vec![0u8; len];
    stdout.read_exact(&mut body).await?;
    Ok(body)
}
