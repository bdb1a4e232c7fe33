//! One module per verb; each returns the process exit code.

mod check;
mod eval;

use std::process::ExitCode;

use evaluator::{EvalContext, EvaluatorPool, Event, Limits, PoolConfig, WorkerCommand};

use crate::cli::{Cli, Command, EventArgs, EventKind};

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Eval(args) => eval::run(args).await,
        Command::Check(args) => check::run(args).await,
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
