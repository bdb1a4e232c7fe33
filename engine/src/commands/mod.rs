//! One module per verb; each returns the process exit code.

mod check;
mod client;
mod eval;
mod logs;
mod run;
mod run_output;
mod runner;
mod runs;
mod serve;

use std::process::ExitCode;

use evaluator::{EvalContext, EvaluatorPool, Event, Limits, PoolConfig, WorkerCommand};

use crate::cli::{Cli, Command, EventArgs, EventKind};

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Eval(args) => eval::run(args).await,
        Command::Check(args) => check::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Runner(args) => runner::run(args).await,
        Command::Logs(args) => logs::run(args).await,
        Command::Runs(args) => runs::run(args).await,
        Command::Cancel(args) => runs::cancel(args).await,
        Command::Rerun(args) => runs::rerun(args).await,
    }
}

/// Exit code for an invalid workflow or a failed operation.
pub(crate) const EXIT_INVALID: u8 = 1;

/// The `ctx` described by the event flags.
pub(crate) fn context(args: &EventArgs) -> EvalContext {
    let event = match args.event {
        EventKind::Push => Event::Push,
        EventKind::PullRequest => Event::PullRequest,
        EventKind::Schedule => Event::Schedule,
        EventKind::Manual => Event::Manual,
    };
    let mut ctx = EvalContext::local(event, &args.branch);
    if let Some(sha) = &args.sha {
        ctx.sha = sha.clone();
    }
    if let Some(repo) = &args.repo {
        ctx.repo = repo.clone();
    }
    ctx.changed_files = args.changed_files.clone();
    ctx.inputs = args.inputs.iter().cloned().collect();
    ctx
}

/// A pool of `workers` evaluator workers running as this executable.
pub(crate) async fn evaluator_pool(workers: usize) -> anyhow::Result<EvaluatorPool> {
    let command = WorkerCommand::current_exe(crate::EVAL_WORKER_SUBCOMMAND)?;
    Ok(EvaluatorPool::start(PoolConfig {
        workers,
        command,
        limits: Limits::default(),
    })
    .await?)
}

/// The number of CPUs (at least 1).
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The real Python interpreter behind `python3` (often a slow shim), resolved once so
/// runners can start it directly; `None` when there is no python3.
pub(crate) fn resolve_python() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(::runner::agent::PYTHON_ENV) {
        return Some(path.into());
    }
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !path.is_empty()).then(|| path.into())
}

/// Resolves when the process gets SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
