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
use futures::TryStreamExt;
use runner::llm::transcript::{self, Difference, Replay, Transcript};
use runner::mask::Masker;
use runner::protocol::{Outcome, StepAction, Stream, WorkspaceSource};
use serde::{Deserialize, Serialize};

use super::{RemoveOnExit, EXIT_INVALID};
use crate::cli::RerunArgs;

/// The largest transcript blob read (the runner keeps at most `transcript::MAX_BYTES`).
const MAX_TRANSCRIPT_BLOB: usize = transcript::MAX_BYTES + (1 << 20);

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
    let store = Store::open_data_dir(&args.data_dir)
        .await
        .with_context(|| format!("opening the data directory {}", args.data_dir.display()))?;
    let step_run = store
        .step_run(run_id, &step_id)
        .await?
        .with_context(|| format!("run {run_id} has no step '{step_id}' in this data directory"))?;
    if step_run.attempts == 0 {
        bail!("step '{step_id}' of run {run_id} never ran: there is nothing to replay");
    }
    let artifacts = Artifacts::open(&ArtifactsConfig::local(args.data_dir.join("artifacts")))?;
    let recorded = read_transcript(&store, &artifacts, run_id, &step_id).await?;
    let dispatch: RecordedStep = serde_json::from_value(recorded.step.clone())
        .context("the step the transcript recorded")?;
    let StepAction::Llm {
        prompt,
        prompt_file,
        inputs,
        model,
        max_turns,
        tools,
        result,
        system_prompt,
        ..
    } = &dispatch.action
    else {
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
    lay_out(&args, &store, &artifacts, run_id, &dispatch, &workspace).await?;

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
        options: runner::llm::StepOptions {
            prompt: prompt.as_deref(),
            prompt_file: prompt_file.as_deref(),
            inputs,
            model: model.as_deref(),
            max_turns: *max_turns,
            tools,
            system_prompt: system_prompt.as_deref(),
            result: result.as_ref(),
        },
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
    let same_end = step_run.status == outcome_status(report.outcome);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, &step_run.status);
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

/// The transcript the step's latest attempt kept.
async fn read_transcript(
    store: &Store,
    artifacts: &Artifacts,
    run_id: i64,
    step_id: &str,
) -> anyhow::Result<Transcript> {
    let blob = store
        .latest_blob(run_id, step_id, "transcript")
        .await?
        .with_context(|| {
            format!(
                "step '{step_id}' of run {run_id} kept no transcript (only llm steps keep \
                 one; or a run from before transcripts, or one past retention)"
            )
        })?;
    let tar = read_blob(artifacts, &blob.key, MAX_TRANSCRIPT_BLOB).await?;
    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive.entries().context("the transcript blob")? {
        let mut entry = entry.context("the transcript blob")?;
        if entry.path().ok().as_deref() != Some(std::path::Path::new(transcript::FILE)) {
            continue;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).context("the transcript")?;
        return transcript::parse(&bytes).map_err(anyhow::Error::msg);
    }
    bail!(
        "the transcript blob of step '{step_id}' holds no {}",
        transcript::FILE
    )
}

/// A whole blob, refused past `limit` bytes.
async fn read_blob(artifacts: &Artifacts, key: &str, limit: usize) -> anyhow::Result<Vec<u8>> {
    let mut stream = artifacts
        .get(key)
        .await
        .map_err(|e| anyhow::anyhow!("reading blob {key}: {e}"))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.try_next().await.context("reading a blob")? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > limit {
            bail!("blob {key} is larger than {limit} bytes");
        }
    }
    Ok(bytes)
}

/// Fills `workspace` as the original attempt's was: the final workspace of the step its
/// dispatch took it from, or a copy of `--dir`.
async fn lay_out(
    args: &RerunArgs,
    store: &Store,
    artifacts: &Artifacts,
    run_id: i64,
    dispatch: &RecordedStep,
    workspace: &std::path::Path,
) -> anyhow::Result<()> {
    if let Some(from) = &dispatch.workspace_from {
        let blob = store
            .latest_blob(run_id, from, "workspace")
            .await?
            .with_context(|| format!("step '{from}' of run {run_id} kept no workspace"))?;
        let limits = runner::handoff::Limits::default();
        let tar = read_blob(artifacts, &blob.key, limits.max_bytes as usize).await?;
        runner::handoff::unpack(tar.as_slice(), workspace, &limits)
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

fn print_report(report: &Report, recorded_status: &str) {
    println!(
        "replayed {} of {} recorded turns of step '{}' (run {}){}: the step {} (it {} in the run)",
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
        recorded_status,
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
