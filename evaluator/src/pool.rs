//! The warm pool of evaluator workers: the only way Plue evaluates a workflow file.
//!
//! Invariants:
//! - at most `workers` evaluations run at once, each in its own worker process;
//! - a worker that timed out, crashed, broke the protocol or asked to retire is killed and
//!   never reused; a replacement is started in the background so the pool stays warm;
//! - nothing a worker sends is trusted: frames are size-capped and the plan is validated
//!   here, in the parent, before anyone sees it;
//! - the engine process is never at risk: a hostile file can at worst cost one worker.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use crate::context::EvalContext;
use crate::diagnostic::Diagnostic;
use crate::limits::{human_bytes, Limits};
use crate::plan::{hash_canonical, Plan, SourceMap};
use crate::protocol::{Frame, Request, WorkerLimits, MAX_FRAME_BYTES};
use crate::validate::validate;
use crate::worker::MEMORY_FLAG;

/// How to start a worker process.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl WorkerCommand {
    /// This executable with `subcommand` (the `plue` binary runs workers as `plue __eval-worker`).
    pub fn current_exe(subcommand: &str) -> std::io::Result<Self> {
        Ok(WorkerCommand {
            program: std::env::current_exe()?,
            args: vec![subcommand.to_string()],
        })
    }
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker processes kept warm; also the number of evaluations at once.
    pub workers: usize,
    pub command: WorkerCommand,
    pub limits: Limits,
}

/// A validated plan and what came with it.
#[derive(Debug, Clone)]
pub struct EvaluatedPlan {
    pub plan: Plan,
    pub plan_hash: String,
    pub canonical_json: String,
    pub source_map: SourceMap,
    /// What the workflow printed (capped), for `plue eval` to show.
    pub output: String,
}

/// Why an evaluation gave no plan.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The file is wrong, hostile or too big: every problem, each with its place.
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    /// No worker could be started: a fault of the installation, not of the file.
    #[error("the evaluator is unavailable: {0}")]
    Unavailable(String),
}

/// Counters, for the API and benchmarks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolStats {
    pub evaluations: u64,
    pub workers_started: u64,
    pub workers_killed: u64,
    pub timeouts: u64,
    pub idle: usize,
}

/// A warm pool of sandboxed evaluator workers. Cheap to clone.
#[derive(Clone)]
pub struct EvaluatorPool {
    inner: Arc<Inner>,
}

struct Inner {
    config: PoolConfig,
    idle: Mutex<Vec<Worker>>,
    permits: Semaphore,
    evaluations: AtomicU64,
    started: AtomicU64,
    killed: AtomicU64,
    timeouts: AtomicU64,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

/// How long a new worker may take to start its interpreter.
const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl EvaluatorPool {
    /// Starts `config.workers` workers and waits until they are warm.
    pub async fn start(config: PoolConfig) -> Result<Self, EvalError> {
        let workers = config.workers.max(1);
        let inner = Arc::new(Inner {
            permits: Semaphore::new(workers),
            idle: Mutex::new(Vec::with_capacity(workers)),
            config: PoolConfig { workers, ..config },
            evaluations: AtomicU64::new(0),
            started: AtomicU64::new(0),
            killed: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
        });
        let spawned = futures::future::join_all((0..workers).map(|_| inner.spawn_worker())).await;
        for worker in spawned {
            let worker = worker?;
            inner.idle.lock().expect("pool lock").push(worker);
        }
        Ok(EvaluatorPool { inner })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            evaluations: self.inner.evaluations.load(Ordering::Relaxed),
            workers_started: self.inner.started.load(Ordering::Relaxed),
            workers_killed: self.inner.killed.load(Ordering::Relaxed),
            timeouts: self.inner.timeouts.load(Ordering::Relaxed),
            idle: self.inner.idle.lock().expect("pool lock").len(),
        }
    }

    /// Evaluates one workflow file's `source` for `ctx`. `path` names the file in messages.
    pub async fn evaluate(
        &self,
        path: &str,
        source: &str,
        ctx: &EvalContext,
    ) -> Result<EvaluatedPlan, EvalError> {
        let limits = &self.inner.config.limits;
        if source.len() > limits.max_source_bytes {
            return Err(invalid(Diagnostic::whole_file(
                path,
                format!(
                    "the file is {} bytes; the limit is {}",
                    source.len(),
                    human_bytes(limits.max_source_bytes as u64)
                ),
            )));
        }
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| EvalError::Unavailable("the pool is shut down".into()))?;
        self.inner.evaluations.fetch_add(1, Ordering::Relaxed);
        let mut worker = match self.inner.take_idle() {
            Some(worker) => worker,
            None => self.inner.spawn_worker().await?,
        };
        let request = Request {
            path: path.to_string(),
            source: source.to_string(),
            ctx: ctx.clone(),
            limits: WorkerLimits {
                max_steps: limits.max_steps,
                max_plan_bytes: limits.max_plan_bytes,
            },
        };
        let answer = tokio::time::timeout(limits.timeout, worker.ask(&request)).await;
        let (frame, reusable) = match answer {
            Ok(Ok(frame)) => {
                let reusable = matches!(
                    frame,
                    Frame::Plan { retire: false, .. } | Frame::Failed { retire: false, .. }
                );
                (frame, reusable)
            }
            Ok(Err(_)) => {
                let status = worker.finish().await;
                self.inner.replace();
                return Err(invalid(Diagnostic::whole_file(
                    path,
                    crash_message(status, limits),
                )));
            }
            Err(_elapsed) => {
                self.inner.timeouts.fetch_add(1, Ordering::Relaxed);
                worker.finish().await;
                self.inner.replace();
                return Err(invalid(Diagnostic::whole_file(
                    path,
                    format!("the evaluation timed out after {:?} and was stopped (an endless loop, or too much work at evaluation time?)", limits.timeout),
                )));
            }
        };
        if reusable {
            self.inner.release(worker);
        } else {
            worker.finish().await;
            self.inner.replace();
        }
        match frame {
            Frame::Plan {
                plan,
                source_map,
                output,
                ..
            } => finish_plan(path, plan, source_map, output, limits),
            Frame::Failed { diagnostic, .. } => Err(invalid(Diagnostic {
                path: path.to_string(),
                ..diagnostic
            })),
            Frame::Ready => Err(invalid(Diagnostic::whole_file(
                path,
                "the evaluator worker broke its protocol",
            ))),
        }
    }
}

fn invalid(diagnostic: Diagnostic) -> EvalError {
    EvalError::Invalid(vec![diagnostic])
}

/// Validates a worker's plan in the parent and computes its hash.
fn finish_plan(
    path: &str,
    plan: Plan,
    source_map: SourceMap,
    output: String,
    limits: &Limits,
) -> Result<EvaluatedPlan, EvalError> {
    if source_map.steps.len() != plan.steps.len()
        || source_map.triggers.len() != plan.triggers.len()
    {
        return Err(invalid(Diagnostic::whole_file(
            path,
            "the evaluator worker returned an inconsistent plan",
        )));
    }
    let problems = validate(&plan, &source_map, limits, path);
    if !problems.is_empty() {
        return Err(EvalError::Invalid(problems));
    }
    let canonical_json = plan.canonical_json();
    let plan_hash = hash_canonical(&canonical_json);
    Ok(EvaluatedPlan {
        plan,
        plan_hash,
        canonical_json,
        source_map,
        output,
    })
}

fn crash_message(status: Option<std::process::ExitStatus>, limits: &Limits) -> String {
    use std::os::unix::process::ExitStatusExt;
    let memory = human_bytes(limits.memory_bytes);
    match status.and_then(|s| s.signal()) {
        Some(libc::SIGXCPU) => "the evaluation used up its CPU budget and was stopped".to_string(),
        Some(libc::SIGXFSZ) => "the evaluation tried to write a file and was stopped".to_string(),
        Some(libc::SIGSEGV) | Some(libc::SIGBUS) => {
            "the evaluator worker crashed while evaluating this file (is something nested too deeply?)".to_string()
        }
        Some(libc::SIGABRT) | Some(libc::SIGKILL) => {
            format!("the evaluation ran out of memory (limit {memory}) and its worker was stopped")
        }
        Some(signal) => format!("the evaluator worker died (signal {signal}) while evaluating this file"),
        None => format!("the evaluator worker exited while evaluating this file; it probably exceeded the memory limit of {memory}"),
    }
}

impl Inner {
    /// An idle worker that is still alive.
    fn take_idle(&self) -> Option<Worker> {
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
    fn release(&self, worker: Worker) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.config.workers {
            idle.push(worker);
        }
    }

    /// Starts a replacement in the background so the next evaluation finds a warm worker.
    fn replace(self: &Arc<Self>) {
        self.killed.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            match inner.spawn_worker().await {
                Ok(worker) => inner.release(worker),
                Err(e) => tracing::warn!("cannot start a replacement evaluator worker: {e}"),
            }
        });
    }

    async fn spawn_worker(&self) -> Result<Worker, EvalError> {
        let command = &self.config.command;
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .arg(MEMORY_FLAG)
            .arg(self.config.limits.memory_bytes.to_string())
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
    async fn ask(&mut self, request: &Request) -> std::io::Result<Frame> {
        let mut bytes = Vec::with_capacity(request.source.len() + 512);
        crate::protocol::write_frame(&mut bytes, request)?;
        self.stdin.write_all(&bytes).await?;
        self.stdin.flush().await?;
        read_frame(&mut self.stdout).await
    }

    /// Kills the worker and reaps it.
    async fn finish(mut self) -> Option<std::process::ExitStatus> {
        let _ = self.child.start_kill();
        self.child.wait().await.ok()
    }
}

async fn read_frame(stdout: &mut ChildStdout) -> std::io::Result<Frame> {
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
    serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
