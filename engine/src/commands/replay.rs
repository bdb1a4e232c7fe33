//! `plue rerun RUN --step S --replay [--from-turn N]`: an `llm` step of a local run
//! replayed from its transcript.
//!
//! The step's transcript (kept by the runner as a `transcript` blob, see
//! `runner::llm::transcript`) answers each turn in order instead of the Messages API, so a
//! replay makes no request and uses no token; the tools run for real in a fresh workspace
//! laid out as the original attempt's was (a copy of `--dir`, the current directory by
//! default, as `plue run` copies it, or the final workspace of the step its dispatch named
//! in `workspace_from`), and every tool result is compared with the recorded one. With
//! `--from-turn N` the turns after N call the configured API (`ANTHROPIC_BASE_URL`, the key
//! from `--secret ANTHROPIC_API_KEY`).
//!
//! Invariants: the run's store is only read (a replay is no new run); nothing the step
//! writes leaves its temporary workspace, removed at the end; the exit code is 0 exactly
//! when the step ended as it did and no tool result differs.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use engine::artifacts::{Artifacts, ArtifactsConfig};
use engine::store::Store;
use engine::transcripts::Kept;
use runner::llm::transcript::{self, Difference, Replay, Transcript};
use runner::mask::Masker;
use runner::protocol::{Outcome, StepAction, Stream, WorkspaceSource};
use serde::{Deserialize, Serialize};

use super::{RemoveOnExit, EXIT_INVALID};
use crate::cli::RerunArgs;

/// The step as the runner recorded it in the transcript (`runner::llm::transcript::Keep`).
#[derive(Debug, Deserialize)]
struct RecordedStep {
    action: StepAction,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    timeout_secs: u64,
    #[serde(default)]
    workspace_from: Option<String>,
}

/// The data directory of the run (`plue run`'s).
struct Local {
    store: Store,
    artifacts: Artifacts,
}

impl Local {
    async fn open(args: &RerunArgs) -> anyhow::Result<Local> {
        let dir = &args.data_dir;
        if !dir.is_dir() {
            bail!("no data directory {} (--data-dir)", dir.display());
        }
        let store = Store::open_data_dir(dir)
            .await
            .with_context(|| format!("opening the data directory {}", dir.display()))?;
        let artifacts = Artifacts::open(&ArtifactsConfig::local(dir.join("artifacts")))?;
        Ok(Local { store, artifacts })
    }
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    run_id: i64,
    step: String,
    /// Turns answered from the transcript (no request made).
    replayed_turns: u32,
    /// Turns the transcript holds.
    recorded_turns: usize,
    /// Turns sent to the API (after `--from-turn`).
    live: bool,
    outcome: Outcome,
    reason: Option<String>,
    differences: Vec<Difference>,
}

pub(crate) async fn run(args: RerunArgs) -> anyhow::Result<ExitCode> {
    let step_id = args.step.clone().context("--replay needs --step STEP")?;
    let run_id = args.target.run_id;
    // With --transcript (from a server) nothing local is read but --dir.
    let (local, recorded_status) = match &args.transcript {
        Some(_) => (None, None),
        None => {
            let local = Local::open(&args).await?;
            let step_run = local
                .store
                .step_run(run_id, &step_id)
                .await?
                .with_context(|| {
                    format!("run {run_id} has no step '{step_id}' in this data directory")
                })?;
            if step_run.attempts == 0 {
                bail!("step '{step_id}' of run {run_id} never ran: there is nothing to replay");
            }
            (Some(local), Some(step_run.status))
        }
    };
    let recorded = read_transcript(&args, local.as_ref(), run_id, &step_id).await?;
    let dispatch: RecordedStep = serde_json::from_value(recorded.step.clone())
        .context("the step the transcript recorded")?;
    let Some(options) = runner::llm::StepOptions::of_action(&dispatch.action) else {
        bail!("step '{step_id}' is not an llm step: only llm steps keep a transcript");
    };
    if let Some(turn) = args.from_turn {
        if turn == 0 || turn as usize > recorded.turns.len() {
            bail!(
                "--from-turn {turn}: the transcript holds turns 1 to {}",
                recorded.turns.len()
            );
        }
    }

    let work = RemoveOnExit(replay_dir()?);
    let workspace = work.0.join("workspace");
    let output_file = work.0.join("output");
    let home = work.0.join("home");
    for dir in [&workspace, &home] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    lay_out(&args, local.as_ref(), run_id, &dispatch, &workspace).await?;

    let secrets: BTreeMap<String, String> = args.secrets.iter().cloned().collect();
    let masker = Arc::new(Masker::new(secrets.values()));
    let mut tool_secrets = secrets.clone();
    tool_secrets.remove(runner::llm::API_KEY_SECRET);
    let paths = runner::step_env::AttemptPaths {
        workspace: &workspace,
        output_file: &output_file,
        home: &home,
        tmp: &work.0,
    };
    let base = runner::step_env::Base::minimal(std::env::vars());
    let tool_env = runner::step_env::build(&base, paths, &dispatch.env, &tool_secrets);
    let base_url = std::env::var(runner::llm::BASE_URL_ENV).ok();
    let replay = Replay::new(recorded.clone(), args.from_turn);
    let step = runner::llm::LlmStep {
        options,
        workspace: &workspace,
        output_file: &output_file,
        base_url: base_url.as_deref(),
        env: &dispatch.env,
        tool_env,
        user: None,
        network: None,
        secrets: &secrets,
        budget: None,
        timeout: Duration::from_secs(dispatch.timeout_secs.max(1)),
        retry: runner::llm::RetryPolicy::default(),
        masker,
        proposer: None,
        transcript: None,
        replay: Some(replay.clone()),
    };
    let (lines, mut received) = tokio::sync::mpsc::channel::<(Stream, String)>(64);
    // The step's log on stderr (stdout holds the report).
    let printer = tokio::spawn(async move {
        while let Some((stream, text)) = received.recv().await {
            eprintln!("replay | {}: {text}", stream.as_str());
        }
    });
    let cancel = tokio_util::sync::CancellationToken::new();
    let finished = runner::llm::run(step, &lines, &cancel).await;
    drop(lines);
    let _ = printer.await;

    let report = Report {
        run_id,
        step: step_id,
        replayed_turns: replay.replayed_turns(),
        recorded_turns: recorded.turns.len(),
        live: args.from_turn.is_some(),
        outcome: finished.outcome,
        reason: finished.reason,
        differences: replay.differences(),
    };
    let same_end = recorded_status
        .as_deref()
        .is_none_or(|status| status == outcome_status(report.outcome));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, recorded_status.as_deref());
    }
    Ok(if report.differences.is_empty() && same_end {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    })
}

/// A fresh private directory for the replay's workspace (never one someone planted).
fn replay_dir() -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let suffix = &engine::tokens::new_token()?[..12];
    let dir = std::env::temp_dir().join(format!("plue-replay-{suffix}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The transcript to replay: `--transcript FILE` (one a server's API gave), or the one the
/// step's latest attempt kept in the data directory.
async fn read_transcript(
    args: &RerunArgs,
    local: Option<&Local>,
    run_id: i64,
    step_id: &str,
) -> anyhow::Result<Transcript> {
    if let Some(file) = &args.transcript {
        let bytes =
            std::fs::read(file).with_context(|| format!("--transcript {}", file.display()))?;
        return transcript::parse(&bytes)
            .map_err(|e| anyhow::anyhow!("--transcript {}: {e}", file.display()));
    }
    let local = local.context("no transcript: give --transcript FILE or a data directory")?;
    match engine::transcripts::latest(&local.store, &local.artifacts, run_id, step_id).await? {
        Kept::Transcript(transcript) => Ok(*transcript),
        Kept::Gone => {
            bail!("the transcript of step '{step_id}' of run {run_id} was deleted by retention")
        }
        Kept::None => bail!(
            "step '{step_id}' of run {run_id} kept no transcript (only llm steps keep one; or a \
             run from before transcripts)"
        ),
    }
}

/// Fills `workspace` as the original attempt's was: the final workspace of the step its
/// dispatch took it from, or a copy of `--dir`.
async fn lay_out(
    args: &RerunArgs,
    local: Option<&Local>,
    run_id: i64,
    dispatch: &RecordedStep,
    workspace: &std::path::Path,
) -> anyhow::Result<()> {
    if let Some(from) = &dispatch.workspace_from {
        let Local { store, artifacts } = local.with_context(|| {
            format!(
                "the step started from step '{from}''s final workspace: a replay from \
                 --transcript cannot lay it out (replay against the run's data directory)"
            )
        })?;
        let blob = store
            .latest_blob(run_id, from, "workspace")
            .await?
            .with_context(|| format!("step '{from}' of run {run_id} kept no workspace"))?;
        // Streamed into the runner's own unpacker (its limits and checks), never whole.
        let stream = artifacts
            .get(&blob.key)
            .await
            .map_err(|e| anyhow::anyhow!("reading the workspace of step '{from}': {e}"))?;
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let into = workspace.to_owned();
        tokio::task::spawn_blocking(move || {
            runner::handoff::unpack(reader, &into, &runner::handoff::Limits::default())
        })
        .await
        .context("the unpacking task")?
        .with_context(|| format!("unpacking the workspace of step '{from}'"))?;
        return Ok(());
    }
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("current directory")?,
    };
    let source = WorkspaceSource::Copy {
        path: std::fs::canonicalize(&dir)
            .with_context(|| format!("--dir {}", dir.display()))?
            .display()
            .to_string(),
    };
    let workspace = workspace.to_owned();
    tokio::task::spawn_blocking(move || runner::workspace::prepare_blocking(&source, &workspace))
        .await
        .context("copying the workspace")?
        .unwrap_or(Ok(()))
        .context("copying the workspace")
}

fn outcome_status(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::Cancelled => "cancelled",
    }
}

fn print_report(report: &Report, recorded_status: Option<&str>) {
    println!(
        "replayed {} of {} recorded turns of step '{}' (run {}){}: the step {}{}",
        report.replayed_turns,
        report.recorded_turns,
        report.step,
        report.run_id,
        if report.live {
            ", then continued live"
        } else {
            " without calling the API"
        },
        outcome_status(report.outcome),
        recorded_status.map_or(String::new(), |s| format!(" (it {s} in the run)")),
    );
    if let Some(reason) = &report.reason {
        println!("  reason: {reason}");
    }
    if report.differences.is_empty() {
        println!("every tool result is as recorded");
        return;
    }
    println!("{} tool result(s) differ:", report.differences.len());
    for d in &report.differences {
        println!("turn {}, tool {} ({}):", d.turn, d.tool, d.id);
        for line in d.diff.lines() {
            println!("  {line}");
        }
    }
}
