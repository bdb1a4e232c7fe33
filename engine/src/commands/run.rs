//! `plue run FILE`: evaluate a workflow and run it here — an in-process engine on loopback
//! with the embedded store and a local warm pool — printing live logs, a summary table,
//! and exiting 0 exactly when the run succeeded. Ctrl-C cancels the run (its running steps
//! are killed); a second Ctrl-C exits at once. `--approve STEP` decides an approval step
//! when it waits (no one else can reach this engine).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use evaluator::plan::Action;
use plue_core::launch::{evaluate_dispatch, start_evaluated, LaunchError};
use plue_server::runner_socket::RunnerSocket;
use plue_server::server::{self, EngineConfig, LocalPoolSettings};
use plue_store::events::Event;
use plue_store::{now_ms, Decided, Store, Verdict};
use plue_types::protocol::WorkspaceSource;
use plue_types::status::{RunState, StepStatus};
use plue_vault::tokens;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use super::run_output::{use_color, Printer, Summary};
use super::run_states::RunStates;
use super::{
    context, cpus, evaluator_pool_with, limits_for_steps, local_runners, Interrupts, RemoveOnExit,
    EXIT_INVALID,
};
use crate::cli::RunArgs;

/// What the engine's notifications said since the printer last looked.
#[derive(Default)]
struct Seen {
    /// Step runs with new log lines.
    dirty: BTreeSet<i64>,
    steps_changed: bool,
    /// Events were missed: every step is read again, not only those that moved.
    lagged: bool,
    maybe_finished: bool,
    closed: bool,
}

impl Seen {
    fn note(&mut self, event: Result<Event, RecvError>, run_id: i64, all: &[i64]) {
        match event {
            Ok(Event::Logs {
                run_id: r,
                step_run_id,
            }) if r == run_id => {
                self.dirty.insert(step_run_id);
            }
            Ok(Event::Step { run_id: r }) if r == run_id => self.steps_changed = true,
            Ok(Event::RunFinished { run_id: r }) if r == run_id => {
                self.steps_changed = true;
                self.maybe_finished = true;
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                self.dirty.extend(all.iter().copied());
                self.steps_changed = true;
                self.lagged = true;
                self.maybe_finished = true;
            }
            Err(RecvError::Closed) => self.closed = true,
        }
    }
}

/// Whether the workflow file's text calls `Step.python(`: read before the file is
/// evaluated, because the runners start meanwhile. Such a file's runners start their warm
/// Python interpreter with them, so its first `python` step does not wait ≈ 50 ms for one.
/// Only a hint: a wrong guess costs an idle interpreter per runner, or the wait it saves.
fn calls_python_steps(file: &Path) -> bool {
    std::fs::read_to_string(file).is_ok_and(|text| text.contains(".python("))
}

/// Exit code when the run was cancelled by Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Ctrl-C is caught from here on, so one pressed while the run starts up cancels it
    // once it exists instead of killing the engine under its runners.
    let mut interrupts = Interrupts::new()?;
    // An export's directory is checked before anything runs: a run is not wasted on it.
    for (step, dir) in &args.export {
        if let Err(e) = super::results::check_dir(Path::new(dir)) {
            say(format_args!("--export {step}={dir}: {e:#}"));
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    }
    // The evaluator's interpreter starts, and evaluates the file, while the engine and its
    // runners start: the run needs all three, and none waits for the others.
    let evaluation = {
        let (file, ctx) = (args.file.clone(), context(&args.event));
        let limits = limits_for_steps(args.max_steps);
        let local = super::modules::LocalModules::new(&args.modules)?;
        tokio::spawn(async move {
            let pool = evaluator_pool_with(1, limits).await?;
            let lock = super::modules::lock_for(&file)?;
            let modules = local.modules(lock.as_ref());
            // Inputs are checked as a dispatch checks them (required, defaults, options,
            // unknown names): `plue run` is a dispatch.
            let dispatched = evaluate_dispatch(&pool, &file, ctx.clone(), modules).await;
            let (ctx, evaluated) = match dispatched {
                Ok((ctx, evaluated)) => (ctx, Ok(evaluated)),
                Err(e) => (ctx, Err(e)),
            };
            anyhow::Ok((pool, ctx, evaluated))
        })
    };
    let store = Store::open_data_dir(&args.data_dir).await?;
    let data_dir = std::fs::canonicalize(&args.data_dir).context("data directory")?;
    let cwd = std::env::current_dir().context("current directory")?;
    let runners = args.runners.unwrap_or_else(cpus).max(1);
    let mut config = EngineConfig::new(tokens::new_token()?);
    config.secrets = args
        .secrets
        .iter()
        .cloned()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
    config.max_parallel = args.max_parallel;
    config.kept_workspaces = args.export.iter().map(|(step, _)| step.clone()).collect();
    config.artifacts = plue_core::artifacts::ArtifactsConfig {
        quotas: args.quotas.quotas(),
        ..plue_core::artifacts::ArtifactsConfig::local(data_dir.join("artifacts"))
    };
    config.log_quotas = args.quotas.log_quotas();
    config.prompt_root = prompt_root(&args.file, &cwd)?;
    if let Some(file) = &args.llm_prices {
        config.prices = std::sync::Arc::new(plue_core::pricing::Prices::with_file(file)?);
    }
    config.heartbeat_interval = Duration::from_secs(1);
    config.lost_after = Duration::from_secs(10);
    let mut runner = local_runners(
        &data_dir,
        Duration::from_secs(30),
        args.ephemeral_runners,
        args.work_dir_on_disk,
    )?;
    // The caller's own machine: steps see the caller's environment, except the values of
    // `--secret NAME`, which only the steps that name them get.
    runner.inherit_env = true;
    // Nothing of `plue run` outlives it: its runners die with it, even on SIGKILL.
    runner.die_with_parent = true;
    runner.withheld_env = args.secrets.iter().map(|(name, _)| name.clone()).collect();
    runner.warm_python = calls_python_steps(&args.file);
    runner.no_held_connection = args.runners_without_held_connection;
    // Removed however this command ends (dropped last: after the engine and its runners).
    let _work_dir = RemoveOnExit(runner.work_dir.clone());
    config.pool = Some(LocalPoolSettings {
        min_warm: runners,
        max_runners: runners,
        idle_timeout: Duration::from_secs(3600),
        runner,
    });
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")?;
    let url = format!("http://{}", listener.local_addr()?);
    // No evaluator for the engine's API: `plue run` evaluates its one file itself, and
    // nothing else may start runs here.
    let engine = if args.runners_over_tcp {
        server::start(store.clone(), listener, config, None).await?
    } else {
        // Its runners reach it on a private Unix socket (TCP over loopback costs ≈ 0.4 ms a
        // step), which alone serves them: in the data directory, or the temporary one when
        // the data directory's path is too long for a socket.
        let socket = RunnerSocket::bind(&[data_dir.as_path(), std::env::temp_dir().as_path()])?;
        server::start_with_runner_socket(store.clone(), listener, socket, config, None).await?
    };
    let (evaluator, ctx, evaluated) = match evaluation.await.context("the evaluation task") {
        Ok(Ok(done)) => done,
        Ok(Err(e)) | Err(e) => {
            engine.shutdown().await;
            return Err(e.context("starting the evaluator"));
        }
    };
    let executor = engine.executor.clone();
    let mut events = executor.events().subscribe();

    let workspace = WorkspaceSource::Copy {
        path: cwd.display().to_string(),
    };
    let launched = match evaluated {
        Ok(evaluated) => start_evaluated(&executor, &args.file, &ctx, &workspace, &evaluated).await,
        Err(e) => Err(e),
    };
    // The run needs no evaluator once its plan is stored.
    drop(evaluator);
    let run_id = match launched {
        Ok(run_id) => run_id,
        Err(LaunchError::Internal(e)) => {
            engine.shutdown().await;
            return Err(e);
        }
        Err(LaunchError::Invalid(problems)) => {
            // Each problem with the line it points at and a caret under its column.
            let shown = super::caret::render(&problems, true, super::caret::read_source);
            say(format_args!("{}", shown.trim_end()));
            engine.shutdown().await;
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(e) => {
            say(format_args!("{e}"));
            engine.shutdown().await;
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    // The lines the engine stores print from its copy, not read back (those stored before
    // this, or left out of the tap, are read).
    let tap = executor.events().tap_lines(run_id);
    let mut to_approve: BTreeSet<String> = args.approve.iter().cloned().collect();
    let plan = executor.plan(run_id).await?;
    let exported: BTreeSet<String> = args.export.iter().map(|(step, _)| step.clone()).collect();
    if let Err(problem) =
        approval_steps(&plan, &to_approve).and_then(|()| export_steps(&plan, &exported))
    {
        say(format_args!("{problem}"));
        executor.cancel(run_id).await?;
        engine.shutdown().await;
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    // Approval steps are announced as they wait, with how to decide them (and asked on a
    // terminal).
    let mut prompter =
        super::approval_prompt::Prompter::new(run_id, &plan, &to_approve, &data_dir, &url)?;
    let run = store.run(run_id).await?.context("the run just started")?;
    // Only the steps that moved are read again from here on (see `run_states`).
    let mut states = RunStates::read(executor.events(), &store, run_id).await?;
    let steps = states.all();
    if crate::logging::is_json() {
        tracing::info!(
            target: "plue",
            run_id,
            workflow = %run.workflow_name,
            steps = steps.len(),
            runners,
            "run started"
        );
    } else {
        say(format_args!(
            "run {run_id}: {} — {} step(s) on {runners} local runner(s)",
            run.workflow_name,
            steps.len()
        ));
    }
    let mut printer = Printer::new(steps, use_color(), true)
        .announcing()
        .with_events(crate::logging::is_json());
    // Every tapped batch is offered before its `Logs` event is sent: the event wakes this
    // loop, and the printer drains the tap as it prints.
    printer.listen(tap);
    let all: Vec<i64> = steps.iter().map(|s| s.id).collect();
    let mut interrupt_count = 0;
    let mut seen = Seen::default();
    // Step states are re-read at most every 50 ms (a 500-step run changes state thousands
    // of times), and only those that moved; log lines print as soon as they are stored.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_read = tokio::time::Instant::now();
    // ... and, for a large run, at most every 20 times as long as a read takes, so that
    // reading states stays a small share of the engine's work.
    let mut read_every = Duration::from_millis(50);
    let mut ticks = 0u64;
    // Nobody left to read: `plue run | head` closed stdout, or the terminal went away
    // (SIGHUP). The run is cancelled, not abandoned with its runners.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let mut reader_gone = false;
    let mut cancelled_for_reader = false;
    loop {
        if reader_gone && !cancelled_for_reader {
            cancelled_for_reader = true;
            say(format_args!("output closed: cancelling run {run_id}"));
            executor.cancel(run_id).await?;
        }
        tokio::select! {
            _ = hangup.recv() => reader_gone = true,
            event = events.recv() => seen.note(event, run_id, &all),
            _ = tick.tick() => {
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    seen.steps_changed = true;
                    seen.maybe_finished = true;
                }
            }
            _ = interrupts.recv() => {
                interrupt_count += 1;
                if interrupt_count > 1 {
                    say(format_args!("interrupted again: exiting without waiting"));
                    return Ok(ExitCode::from(EXIT_INTERRUPTED));
                }
                say(format_args!("cancelling run {run_id} (Ctrl-C again to exit at once)"));
                executor.cancel(run_id).await?;
            }
        }
        // Coalesce whatever else already happened before touching the store.
        while let Ok(event) = events.try_recv() {
            seen.note(Ok(event), run_id, &all);
        }
        printer.drain_tap();
        if seen.closed {
            break;
        }
        let due = seen.maybe_finished || last_read.elapsed() >= read_every;
        if seen.steps_changed && due {
            seen.steps_changed = false;
            last_read = tokio::time::Instant::now();
            let steps = if std::mem::take(&mut seen.lagged) {
                states.read_all(&store).await?
            } else {
                states.read_moved(&store).await?
            };
            read_every = Duration::from_millis(50).max(last_read.elapsed() * 20);
            for waiting in steps
                .iter()
                .filter(|s| s.status == StepStatus::Waiting && to_approve.remove(&s.step_id))
            {
                let decided = store
                    .decide_approval(
                        run_id,
                        &waiting.step_id,
                        Verdict::Approve,
                        APPROVER,
                        "",
                        now_ms(),
                    )
                    .await?;
                if decided == Decided::Done {
                    executor.advance(run_id).await?;
                    seen.steps_changed = true;
                }
            }
            // A step that changed state may have lines not printed yet: they print step by
            // step in the order the steps started, each around its transition. Every line
            // is stored, and its `Logs` event sent, before the step's end is recorded (the
            // runner waits for its batches' acknowledgement, and the engine stores the
            // lines a completion carries before the end it reports), so the events already sent
            // name every step with such lines: no log read for the others.
            while let Ok(event) = events.try_recv() {
                seen.note(Ok(event), run_id, &all);
            }
            printer.drain_tap();
            let dirty = std::mem::take(&mut seen.dirty);
            if !reader_gone {
                let printed = printer.print_in_order(&store, &steps, dirty).await;
                reader_gone = closed_output(printed)?;
                prompter.on_states(&steps);
            }
        } else if !seen.dirty.is_empty() {
            // Lines of a step not shown started wait for the next read of the states.
            let (ready, held): (Vec<i64>, Vec<i64>) = std::mem::take(&mut seen.dirty)
                .into_iter()
                .partition(|&id| printer.shown_started(id));
            if !held.is_empty() {
                seen.dirty.extend(held);
                seen.steps_changed = true;
            }
            if !reader_gone && !ready.is_empty() {
                reader_gone = closed_output(printer.print_lines(&store, &ready).await)?;
            }
        }
        if std::mem::take(&mut seen.maybe_finished) {
            let run = store.run(run_id).await?.context("the run")?;
            if run.finished_at.is_some() {
                break;
            }
        }
    }
    let steps = store.step_states(run_id).await?;
    printer.drain_tap();
    if !reader_gone {
        closed_output(printer.catch_up(&store, run_id, &steps).await)?;
    }
    let run = store.run(run_id).await?.context("the run")?;
    // A cancelled run ends when its runners report; wait briefly for stragglers' processes.
    engine.shutdown().await;
    let mut summary = Summary::new(run_id, run.status, &steps)
        .with_environments(&plan)
        .with_costs(&steps, &store.dashboard_attempts(run_id).await?);
    summary.artifacts = store
        .artifacts_of_run(run_id)
        .await?
        .into_iter()
        .map(super::run_lines::ArtifactLine::from_row)
        .collect();
    summary.reason = run.reason.clone();
    summary.approvals = store
        .approvals_of_run(run_id)
        .await?
        .into_iter()
        .map(super::run_lines::ApprovalLine::from_row)
        .collect();
    if crate::logging::is_json() {
        tracing::info!(
            target: "plue",
            run_id,
            status = %run.status,
            reason = run.reason.as_deref().unwrap_or(""),
            duration_ms = run.duration_ms(),
            "run finished"
        );
    } else {
        say(format_args!("\n{}", summary.table().trim_end()));
    }
    let duration = run
        .duration_ms()
        .map(super::format::human_ms)
        .unwrap_or_else(|| "-".into());
    match &run.reason {
        Some(reason) => say(format_args!(
            "run {run_id} {} in {duration}: {reason}",
            run.status
        )),
        None => say(format_args!("run {run_id} {} in {duration}", run.status)),
    }
    if let Some(path) = &args.summary_json {
        let record = plue_server::api::record::build(&store, run_id)
            .await?
            .context("the run's record")?;
        let json = serde_json::to_string_pretty(&record)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    let mut exports_failed = false;
    for (step, dir) in &args.export {
        match super::results::export_workspace(&store, &data_dir, run_id, step, Path::new(dir))
            .await
        {
            Ok(unpacked) => say(format_args!(
                "exported {step}'s workspace to {dir} ({} entries, {})",
                unpacked.entries,
                plue_types::handoff::human(unpacked.bytes)
            )),
            Err(e) => {
                exports_failed = true;
                say(format_args!("--export {step}={dir}: {e:#}"));
            }
        }
    }
    store.close().await;
    Ok(match run.status {
        _ if exports_failed => ExitCode::from(1),
        RunState::Succeeded => ExitCode::SUCCESS,
        RunState::Cancelled if interrupt_count > 0 => ExitCode::from(EXIT_INTERRUPTED),
        _ => ExitCode::from(1),
    })
}

/// Who `--approve` decides as: the reason reads "approved by plue run --approve".
const APPROVER: &str = "plue run --approve";

/// Where llm steps' `prompt_file`s are read when the workflow file lies outside the run's
/// directory: the file's repository (the git work tree holding it, or its directory
/// outside git). `None` when the file is inside the run's directory: that is its
/// repository, and the step's workspace, a copy of it, holds the same files.
fn prompt_root(file: &Path, cwd: &Path) -> anyhow::Result<Option<std::path::PathBuf>> {
    // A file that cannot be read is the evaluation's to report.
    let Ok(file) = std::fs::canonicalize(file) else {
        return Ok(None);
    };
    let cwd = std::fs::canonicalize(cwd).context("current directory")?;
    if file.starts_with(&cwd) {
        return Ok(None);
    }
    let dir = file.parent().context("the workflow file's directory")?;
    let root = dir
        .ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(dir);
    Ok(Some(root.to_path_buf()))
}

/// Checks that every `--export` name is a step of the plan.
fn export_steps(plan: &evaluator::plan::Plan, names: &BTreeSet<String>) -> Result<(), String> {
    match names
        .iter()
        .find(|name| !plan.steps.iter().any(|s| &s.id == *name))
    {
        Some(name) => Err(format!("--export {name}: the plan has no step '{name}'")),
        None => Ok(()),
    }
}

/// Checks that every `--approve` name is an approval step of the plan.
fn approval_steps(plan: &evaluator::plan::Plan, names: &BTreeSet<String>) -> Result<(), String> {
    for name in names {
        match plan.steps.iter().find(|s| &s.id == name) {
            Some(step) if matches!(step.action, Action::Approval(_)) => {}
            Some(step) => {
                return Err(format!(
                    "--approve {name}: step '{name}' is a {} step, not an approval",
                    step.action.kind()
                ))
            }
            None => {
                return Err(format!(
                    "--approve {name}: the workflow has no step '{name}'"
                ))
            }
        }
    }
    Ok(())
}

/// Whether printing failed because stdout's reader is gone (a closed pipe or terminal);
/// any other failure is an error.
fn closed_output(printed: anyhow::Result<()>) -> anyhow::Result<bool> {
    match printed {
        Ok(()) => Ok(false),
        Err(e) => {
            let gone = e.chain().any(|cause| {
                cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    io.kind() == std::io::ErrorKind::BrokenPipe
                        || io.raw_os_error() == Some(libc::EIO)
                })
            });
            if gone {
                Ok(true)
            } else {
                Err(e)
            }
        }
    }
}

/// A line on stderr that never panics: the terminal may be gone (unlike `eprintln!`). With
/// `--log-format json` it is an event of the JSON log instead ([`crate::logging::notice`]).
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if crate::logging::is_json() {
        crate::logging::notice(line.to_string().trim_start());
        return;
    }
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::calls_python_steps;

    #[test]
    fn runners_warm_python_only_for_a_file_that_calls_python_steps() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let python = file(
            "py.plue.py",
            "def workflow():\n    return Plan(steps=[Step.python('a', 'print(1)')])\n",
        );
        let bash = file(
            "sh.plue.py",
            "def workflow():\n    return Plan(steps=[Step.bash('a', 'python3 -V')])\n",
        );
        assert!(calls_python_steps(&python));
        assert!(!calls_python_steps(&bash));
        assert!(!calls_python_steps(&dir.path().join("missing.plue.py")));
    }
}
