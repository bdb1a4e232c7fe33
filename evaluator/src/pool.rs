//! The warm pool of evaluator zygotes: the only way Plue evaluates a workflow file.
//!
//! Invariants:
//! - at most `workers` evaluations run at once; each zygote serves one at a time and each
//!   evaluation runs in its own freshly forked child process, which answers once and exits
//!   (see `worker/zygote.rs`): nothing of one evaluation reaches another;
//! - the zygote kills a child at the time bound; the pool keeps a second, later bound and
//!   kills the whole zygote past it. A zygote that broke the protocol, lost a child in an
//!   unexpected way or asked to retire is killed and never reused; a replacement is
//!   started in the background so the pool stays warm. A child's crash costs only its own
//!   evaluation;
//! - nothing a worker sends is trusted: frames are size-capped, and decoding and
//!   validation run off the async runtime (`spawn_blocking`) under a time bound that
//!   validation checks inside its loops (it stops with one line when it passes);
//!   diagnostics are cleaned (one line, escaped, no host path) before anyone sees them;
//! - an evaluation's permit is held until its validation thread has returned, even when
//!   the caller was answered at the time bound or went away: a file delivered again and
//!   again can keep at most `workers` validation threads busy, never stack more;
//! - the engine process is never at risk: a hostile file can at worst cost one zygote;
//! - a file that `use`s modules of other repositories is evaluated in rounds
//!   ([`EvaluatorPool::evaluate_with`]): the parent fetches only full commits the worker
//!   asked for, within the bounds of [`crate::modules`], and writes `Plan::modules` itself.
//!
//! The zygote processes (starting, asking, frames) are `zygote.rs`; a module the worker
//! asked for, checked and fetched between rounds, `fetch.rs`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::context::EvalContext;
use crate::diagnostic::Budget;
use crate::diagnostic::Diagnostic;
use crate::limits::{human_bytes, Limits};
use crate::modules::{ModuleRequest, Modules, ModulesIn, UsedModule, FETCH_TIMEOUT};
use crate::plan::{hash_canonical, Plan, SourceMap};
use crate::protocol::{Frame, Request, WorkerLimits};
use crate::validate::validate_within;
use fetch::{fetch_one, Fetched};
use zygote::Worker;

mod fetch;
mod zygote;

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

/// `evaluated` with its MCP servers' pins from `lock` (`Plan::apply_mcp_pins`), its
/// canonical JSON and hash made again when any was set.
fn with_mcp_pins(
    mut evaluated: EvaluatedPlan,
    lock: Option<&crate::modules::lock::LockFile>,
) -> EvaluatedPlan {
    let Some(lock) = lock.filter(|l| !l.mcp.is_empty()) else {
        return evaluated;
    };
    if evaluated.plan.apply_mcp_pins(&lock.mcp) {
        evaluated.canonical_json = evaluated.plan.canonical_json();
        evaluated.plan_hash = crate::plan::hash_canonical(&evaluated.canonical_json);
    }
    evaluated
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
    /// One per evaluation under way, held until its validation thread has returned.
    permits: Arc<Semaphore>,
    evaluations: AtomicU64,
    started: AtomicU64,
    killed: AtomicU64,
    timeouts: AtomicU64,
}

/// The file name every evaluation runs under inside the worker (see `evaluate`).
const WORKER_PATH: &str = "workflow.plue.py";
/// How long past the evaluation bound the pool waits for the zygote to report before it
/// kills the zygote itself.
const ZYGOTE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// Bound on decoding and validating one answer in the parent: validation's own deadline.
const VALIDATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long past [`VALIDATION_TIMEOUT`] the caller waits for validation to notice its
/// deadline before it is answered anyway (decoding, which has no deadline of its own, is
/// linear in a frame of at most [`MAX_FRAME_BYTES`](crate::protocol::MAX_FRAME_BYTES)).
const VALIDATION_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

impl EvaluatorPool {
    /// Starts `config.workers` workers and waits until they are warm.
    pub async fn start(config: PoolConfig) -> Result<Self, EvalError> {
        let workers = config.workers.max(1);
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(workers)),
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
    /// A file that uses a module of another repository is refused: see
    /// [`EvaluatorPool::evaluate_with`].
    pub async fn evaluate(
        &self,
        path: &str,
        source: &str,
        ctx: &EvalContext,
    ) -> Result<EvaluatedPlan, EvalError> {
        self.evaluate_with(path, source, ctx, Modules::default())
            .await
    }

    /// [`EvaluatorPool::evaluate`] for a file that may `use(...)` modules of other
    /// repositories: each round the worker reports the modules it met and was not given,
    /// they are fetched through `modules.fetcher` (full commits only, at most
    /// [`MAX_MODULES`](crate::modules::MAX_MODULES) of at most
    /// [`MAX_MODULE_BYTES`](crate::modules::MAX_MODULE_BYTES), all within [`FETCH_TIMEOUT`]) and
    /// the file is evaluated again with them. Every round finds a module or ref not known
    /// before, so there are at most `2 * MAX_MODULES + 1`.
    pub async fn evaluate_with(
        &self,
        path: &str,
        source: &str,
        ctx: &EvalContext,
        modules: Modules<'_>,
    ) -> Result<EvaluatedPlan, EvalError> {
        let mut given = ModulesIn {
            lock: modules.lock.map(|l| l.modules.clone()).unwrap_or_default(),
            sources: Vec::new(),
            resolve_refs: modules.resolve_refs,
        };
        let mut used: Vec<UsedModule> = Vec::new();
        let deadline = tokio::time::Instant::now() + FETCH_TIMEOUT;
        loop {
            let requests = match self
                .evaluate_round(path, source, ctx, &given, &used)
                .await?
            {
                Round::Plan(evaluated) => {
                    return Ok(with_mcp_pins(*evaluated, modules.lock));
                }
                Round::Need(requests) => requests,
            };
            if requests.is_empty() {
                return Err(broke_protocol(path));
            }
            for request in requests {
                let fetched = fetch_one(path, &request, modules, &given, deadline).await?;
                match fetched {
                    Fetched::Pin(entry) => given.lock.push(entry),
                    Fetched::Source(module) => {
                        used.push(UsedModule {
                            repository: module.repository.clone(),
                            path: module.path.clone(),
                            git_ref: request.git_ref.clone(),
                            commit: module.commit.clone(),
                        });
                        used.sort();
                        given.sources.push(module);
                    }
                }
            }
        }
    }

    /// One round of an evaluation: the worker evaluates `source` with the modules `given`,
    /// and answers a plan (recording `used`) or the modules it still needs.
    async fn evaluate_round(
        &self,
        path: &str,
        source: &str,
        ctx: &EvalContext,
        given: &ModulesIn,
        used: &[UsedModule],
    ) -> Result<Round, EvalError> {
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
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| EvalError::Unavailable("the pool is shut down".into()))?;
        self.inner.evaluations.fetch_add(1, Ordering::Relaxed);
        let bound = limits.timeout + ZYGOTE_GRACE;
        let mut worker = loop {
            match self.inner.take_idle() {
                Some(mut worker) => {
                    if worker.settle(bound).await {
                        break worker;
                    }
                    worker.finish().await;
                    self.inner.replace();
                }
                None => break self.inner.spawn_worker().await?,
            }
        };
        let request = Request {
            // Never the real path: the worker's memory layout would follow its length, and
            // with it anything address- or memory-dependent (a `set` of functions, how far a
            // file gets before `MemoryError`). The parent puts the real path on every
            // diagnostic. regression: a file counting allocations until MemoryError gave
            // another plan_hash under another directory.
            path: WORKER_PATH.to_string(),
            source: source.to_string(),
            ctx: ctx.clone(),
            limits: WorkerLimits {
                max_steps: limits.max_steps,
                max_plan_bytes: limits.max_plan_bytes,
            },
            modules: given.clone(),
        };
        let answer = tokio::time::timeout(bound, worker.ask(&request)).await;
        let (body, done) = match answer {
            Ok(Ok(exchange)) => exchange,
            Ok(Err(_)) => {
                let status = worker.finish().await;
                self.inner.replace();
                return Err(invalid(Diagnostic::whole_file(
                    path,
                    crash_message(
                        status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
                        limits,
                    ),
                )));
            }
            Err(_elapsed) => {
                self.inner.timeouts.fetch_add(1, Ordering::Relaxed);
                worker.finish().await;
                self.inner.replace();
                return Err(invalid(Diagnostic::whole_file(
                    path,
                    timeout_message(limits),
                )));
            }
        };
        let (timed_out, signal, reusable) = match done {
            Some(ended) => (ended.timed_out, ended.signal, ended.reusable()),
            // The child answered; its `Done` is read at the zygote's next use.
            None => (false, None, true),
        };
        if reusable {
            self.inner.release(worker);
        } else {
            worker.finish().await;
            self.inner.replace();
        }
        let Some(body) = body else {
            if timed_out {
                self.inner.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(invalid(Diagnostic::whole_file(
                    path,
                    timeout_message(limits),
                )));
            }
            return Err(invalid(Diagnostic::whole_file(
                path,
                crash_message(signal, limits),
            )));
        };
        let path_owned = path.to_string();
        let source = source.to_string();
        let limits = limits.clone();
        let used = used.to_vec();
        let checked = off_runtime(permit, VALIDATION_TIMEOUT + VALIDATION_GRACE, move || {
            let mut budget = Budget::within(VALIDATION_TIMEOUT);
            let frame: Frame = serde_json::from_slice(&body).map_err(|_| {
                invalid(Diagnostic::whole_file(
                    &path_owned,
                    "the evaluator worker broke its protocol",
                ))
            })?;
            match frame {
                Frame::Plan {
                    plan,
                    source_map,
                    output,
                } => finish_plan(
                    &path_owned,
                    &source,
                    Plan {
                        modules: used,
                        ..plan
                    },
                    source_map,
                    output,
                    &limits,
                    &mut budget,
                )
                .map(|plan| Round::Plan(Box::new(plan))),
                Frame::NeedModules { requests } => Ok(Round::Need(requests)),
                Frame::Failed { diagnostic } => Err(invalid(
                    Diagnostic {
                        path: path_owned.clone(),
                        ..diagnostic
                    }
                    .cleaned(),
                )),
                Frame::Ready | Frame::Done { .. } => Err(invalid(Diagnostic::whole_file(
                    &path_owned,
                    "the evaluator worker broke its protocol",
                ))),
            }
        });
        match checked.await {
            Ok(Some(result)) => result,
            Ok(None) => Err(invalid(Diagnostic::whole_file(
                path,
                Budget::within(VALIDATION_TIMEOUT).expired_message(),
            ))),
            Err(join) => Err(EvalError::Unavailable(format!(
                "validating the plan failed: {join}"
            ))),
        }
    }
}

/// What one round of an evaluation answered.
enum Round {
    Plan(Box<EvaluatedPlan>),
    Need(Vec<ModuleRequest>),
}

fn broke_protocol(path: &str) -> EvalError {
    invalid(Diagnostic::whole_file(
        path,
        "the evaluator worker broke its protocol",
    ))
}

/// Runs `work` on a blocking thread that holds `permit` until `work` returns — whatever
/// happens to the caller, who gets `None` past `bound` (or drops the future): the permit
/// is the evaluation's place in the pool, so a validation that outlives its answer still
/// occupies it and hostile files cannot stack busy threads.
async fn off_runtime<T: Send + 'static>(
    permit: OwnedSemaphorePermit,
    bound: std::time::Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, tokio::task::JoinError> {
    let task = tokio::task::spawn_blocking(move || {
        let result = work();
        drop(permit);
        result
    });
    match tokio::time::timeout(bound, task).await {
        Ok(joined) => joined.map(Some),
        Err(_elapsed) => Ok(None),
    }
}

fn timeout_message(limits: &Limits) -> String {
    format!("the evaluation timed out after {:?} and was stopped (an endless loop, or too much work at evaluation time?)", limits.timeout)
}

fn invalid(diagnostic: Diagnostic) -> EvalError {
    EvalError::Invalid(vec![diagnostic])
}

/// Validates a worker's plan in the parent and computes its hash.
fn finish_plan(
    path: &str,
    source: &str,
    plan: Plan,
    source_map: SourceMap,
    output: String,
    limits: &Limits,
    budget: &mut Budget,
) -> Result<EvaluatedPlan, EvalError> {
    if source_map.steps.len() != plan.steps.len()
        || source_map.triggers.len() != plan.triggers.len()
    {
        return Err(invalid(Diagnostic::whole_file(
            path,
            "the evaluator worker returned an inconsistent plan",
        )));
    }
    let mut problems = validate_within(&plan, &source_map, limits, path, budget);
    if problems.is_empty() {
        // Only the file may write a `{{ raw }}` reference, never ctx text (template::written).
        problems = crate::template::unwritten_raw(&plan, &source_map, path, source);
    }
    if !problems.is_empty() {
        return Err(EvalError::Invalid(
            problems.into_iter().map(Diagnostic::cleaned).collect(),
        ));
    }
    let canonical_json = plan.canonical_json();
    let plan_hash = hash_canonical(&canonical_json);
    // Printed text is shown on terminals: line breaks kept, every other control escaped.
    let output = crate::text::escape_lines(&output);
    Ok(EvaluatedPlan {
        plan,
        plan_hash,
        canonical_json,
        source_map,
        output,
    })
}

/// What a child's (or zygote's) death by `signal` means for the file.
fn crash_message(signal: Option<i32>, limits: &Limits) -> String {
    let memory = human_bytes(limits.memory_bytes);
    match signal {
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

#[cfg(test)]
mod tests;
