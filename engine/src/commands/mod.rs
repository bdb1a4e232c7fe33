//! One module per verb; each returns the process exit code.

mod api_paths;
mod approval_prompt;
mod approve;
mod caret;
mod check;
mod client;
pub(crate) mod debug;
mod decision;
mod docs;
mod egress_proxy;
pub(crate) mod environments;
mod eval;
mod forges;
mod format;
mod lock;
mod login;
mod logs;
mod modules;
pub(crate) mod people;
mod private_file;
mod prompt;
mod record;
mod replay;
mod results;
mod run;
mod run_lines;
mod run_output;
mod run_states;
pub(crate) mod runner;
mod runner_tokens;
mod runs;
mod serve;
mod signing_key;
mod verify;

use std::process::ExitCode;

use evaluator::{EvalContext, EvaluatorPool, Event, Limits, PoolConfig, WorkerCommand};

use crate::cli::{Cli, Command, EventArgs, EventKind};

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Eval(args) => eval::run(args).await,
        Command::Check(args) => check::run(args).await,
        Command::Lock(args) => lock::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Serve(args) => serve::run(*args).await,
        Command::Runner(args) => runner::run(args).await,
        Command::EgressProxy(args) => egress_proxy::run(args).await,
        Command::Logs(args) => logs::run(args).await,
        Command::Runs(args) => runs::run(args).await,
        Command::Artifacts(args) => results::artifacts(args).await,
        Command::Cancel(args) => runs::cancel(args).await,
        Command::Rerun(args) if args.replay => replay::run(args).await,
        Command::Rerun(args) => runs::rerun(args.target, args.failed).await,
        Command::Approve(args) => approve::run(args).await,
        Command::Debug(args) => debug::run(args).await,
        Command::Prompt(command) => prompt::run(command),
        Command::Repo(command) => forges::repo(command).await,
        Command::Secret(command) => forges::secret(command).await,
        Command::Env(command) => environments::run(command).await,
        Command::Login(args) => login::run(args).await,
        Command::Token(command) => people::token(command).await,
        Command::User(command) => people::user(command).await,
        Command::Group(command) => people::group(command).await,
        Command::Member(command) => people::member(command).await,
        Command::Audit(args) => people::audit(args).await,
        Command::RunnerToken(command) => runner_tokens::run(command).await,
        Command::Trigger(args) => forges::trigger(args).await,
        Command::Docs(args) => docs::run(args),
        Command::Verify(args) => verify::run(args).await,
    }
}

/// Exit code for an invalid workflow or a failed operation.
pub(crate) const EXIT_INVALID: u8 = 1;

/// The closing summary of a `check` verb on stderr, and its exit code (1 when any file
/// was invalid).
pub(crate) fn checked(what: &str, total: usize, invalid: usize) -> ExitCode {
    eprintln!(
        "checked {total} {what}(s): {} valid, {invalid} invalid",
        total - invalid
    );
    if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}

/// The `ctx` described by the event flags.
pub(crate) fn context(args: &EventArgs) -> EvalContext {
    let event = match args.event {
        EventKind::Push => Event::Push,
        EventKind::PullRequest => Event::PullRequest,
        EventKind::Schedule => Event::Schedule,
        EventKind::Manual => Event::Manual,
        EventKind::Issue => Event::Issue,
        EventKind::Comment => Event::Comment,
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
    evaluator_pool_with(workers, Limits::default()).await
}

/// [`evaluator_pool`] with `limits`.
pub(crate) async fn evaluator_pool_with(
    workers: usize,
    limits: Limits,
) -> anyhow::Result<EvaluatorPool> {
    let command = WorkerCommand::current_exe(crate::EVAL_WORKER_SUBCOMMAND)?;
    Ok(EvaluatorPool::start(PoolConfig {
        workers,
        command,
        limits,
    })
    .await?)
}

/// The evaluator's bounds with room for `max_steps` steps: 1 KiB of plan JSON per step,
/// never less than the default.
pub(crate) fn limits_for_steps(max_steps: u32) -> Limits {
    let defaults = Limits::default();
    let max_steps = max_steps as usize;
    Limits {
        max_steps,
        max_plan_bytes: defaults.max_plan_bytes.max(max_steps * 1024),
        ..defaults
    }
}

/// The number of CPUs (at least 1).
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Local runner processes of this executable, working and logging under `data_dir`; their
/// work directory in memory unless `work_dir_on_disk`.
pub(crate) fn local_runners(
    data_dir: &std::path::Path,
    give_up_after: std::time::Duration,
    ephemeral: bool,
    work_dir_on_disk: bool,
) -> anyhow::Result<plue_pool::local::RunnerProcess> {
    use anyhow::Context;
    Ok(plue_pool::local::RunnerProcess {
        program: std::env::current_exe().context("locating the plue executable")?,
        labels: Default::default(),
        work_dir: runner_work_dir()?,
        log_file: Some(data_dir.join("runners.log")),
        give_up_after,
        ephemeral,
        python: ::runner::agent::resolve_python().ok(),
        inherit_env: false,
        withheld_env: Vec::new(),
        pass_env: Vec::new(),
        die_with_parent: false,
        // The operator's setting for `llm` steps, handed over as a flag (runners get no
        // environment of ours).
        anthropic_base_url: std::env::var(::runner::llm::BASE_URL_ENV)
            .ok()
            .filter(|url| !url.is_empty()),
        warm_python: false,
        work_dir_in_memory: !work_dir_on_disk,
        no_held_connection: false,
    })
}

/// A fresh directory for local runners' attempt directories. It is outside the data
/// directory (which only the engine's user may enter) and searchable but not listable by
/// others (0711), so a step user reaches its own attempt directory and nothing else.
pub(crate) fn runner_work_dir() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = std::env::temp_dir();
    let mut last_error = None;
    for _ in 0..8 {
        let suffix = &plue_vault::tokens::new_token()?[..12];
        let dir = parent.join(format!("plue-work-{suffix}"));
        // `create`, not `create_all`: a directory someone planted is never adopted.
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                    .with_context(|| format!("setting the mode of {}", dir.display()))?;
                return Ok(dir);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no attempts")))
    .with_context(|| format!("creating a runner work directory in {}", parent.display()))
}

/// Removes a local runners' work directory (made by [`runner_work_dir`]) when dropped:
/// `plue serve` and `plue run` hold one from the moment they make it, so it goes however
/// they end — normally, on Ctrl-C or SIGTERM (after the pool stopped its runners), or with
/// an error. `remove_dir_all` never follows a link.
pub(crate) struct RemoveOnExit(pub(crate) std::path::PathBuf);

impl Drop for RemoveOnExit {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0) {
            if err.kind() != std::io::ErrorKind::NotFound {
                eprintln!("could not remove {}: {err}", self.0.display());
            }
        }
    }
}

/// Resolves when the process gets SIGINT (Ctrl-C) or SIGTERM. Both are caught from this
/// call on, not from the first poll: call it early (`plue serve` does before it listens),
/// so a signal that arrives while the command starts up is not fatal.
pub(crate) fn interrupted() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// SIGINT and SIGTERM, caught from creation on and counted until received: for a loop
/// that waits for them again and again. (A listener made per wait, as [`interrupted`]
/// makes, misses a signal that arrives while the loop does something else.)
pub(crate) struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupts {
    pub(crate) fn new() -> anyhow::Result<Interrupts> {
        use anyhow::Context;
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Interrupts {
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    /// The next SIGINT or SIGTERM, including one that arrived since the last call.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
