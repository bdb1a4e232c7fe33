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
//! The recorded tool calls are the model's — perhaps a prompt injection's, or a crafted
//! transcript's — and run on the machine of whoever replays them, so they run in the
//! step's room (`runner::llm::replay_room`): a step user when plue is root, the private
//! places and namespaces of every step process, and the step's network policy — the
//! plan's, from the run's data directory; with `--transcript`, as the runner recorded it in
//! the transcript, else an `llm` step's default, `none`. A policy that cannot be set up
//! fails the replay: the tools never run with the host's network instead.
//!
//! Invariants: the run's store is only read (a replay is no new run); nothing the step
//! writes leaves its temporary room, removed at the end; the tools get no secret but the
//! `--secret`s given with `--replay-with-secrets` (never the API key, never one from the
//! environment or the store, whose sealed secrets a replay does not open); the exit code
//! is 0 exactly when the step ended as it did and no tool result differs.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use plue_core::artifacts::{Artifacts, ArtifactsConfig};
use plue_core::transcripts::Kept;
use plue_store::Store;
use plue_types::protocol::{NetworkPolicy, Outcome, StepAction, Stream, WorkspaceSource};
use plue_types::transcript::{self, Difference, Transcript};
use runner::llm::replay_room::ReplayRoom;
use runner::llm::transcript::Replay;
use runner::mask::Masker;
use runner::step_user::StepUsers;
use serde::{Deserialize, Serialize};

use super::EXIT_INVALID;
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
    /// The step's network policy (transcripts of runners before it was recorded have none).
    #[serde(default)]
    network: Option<NetworkPolicy>,
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
    /// The network policy the tools ran under.
    network: NetworkPolicy,
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

    // Refused before anything is set up: a secret for the tools needs the explicit flag.
    let tool_secrets = secrets_for_tools(&args)?;
    let (network, network_source) =
        network_policy(local.as_ref(), run_id, &step_id, &dispatch).await?;

    // The step's room: its user, a fresh tree, then its network (see the module doc).
    let parent = std::env::temp_dir();
    let room = tokio::task::spawn_blocking(move || {
        ReplayRoom::make(&parent, StepUsers::default_for_this_process())
    })
    .await
    .context("the replay's room task")??;
    lay_out(&args, local.as_ref(), run_id, &dispatch, room.workspace()).await?;
    let mut room = tokio::task::spawn_blocking(move || room.hand_over().map(|()| room))
        .await
        .context("the hand-over task")?
        .context("handing the workspace to the step user")?;
    let (lines, mut received) = tokio::sync::mpsc::channel::<(Stream, String)>(64);
    // The step's log on stderr (stdout holds the report).
    let printer = tokio::spawn(async move {
        while let Some((stream, text)) = received.recv().await {
            eprintln!("replay | {}: {text}", stream.as_str());
        }
    });
    if let Err(reason) = room.confine(&network, &lines).await {
        bail!("the replay's tools cannot run in the step's room: {reason}");
    }
    eprintln!(
        "replay: the tools run as {}, with network {} ({network_source}){}",
        match room.user() {
            Some(user) => format!("step user {}", user.uid),
            None => format!("uid {} (plue is not root)", nix::unistd::geteuid()),
        },
        serde_json::to_string(&network).unwrap_or_default(),
        if tool_secrets.is_empty() {
            ", and no secret".to_owned()
        } else {
            format!(
                ", and the secrets {}",
                tool_secrets.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        },
    );

    let secrets: BTreeMap<String, String> = args.secrets.iter().cloned().collect();
    let masker = Arc::new(Masker::new(secrets.values()));
    let base = runner::step_env::Base::minimal(std::env::vars());
    let mut tool_env = runner::step_env::build(&base, room.paths(), &dispatch.env, &tool_secrets);
    if let Some(confined) = room.network() {
        confined.set_env(&mut tool_env);
    }
    let base_url = std::env::var(runner::llm::BASE_URL_ENV).ok();
    let replay = Replay::new(recorded.clone(), args.from_turn);
    let step = runner::llm::LlmStep {
        options,
        workspace: room.workspace(),
        output_file: room.output_file(),
        base_url: base_url.as_deref(),
        env: &dispatch.env,
        tool_env,
        user: room.user(),
        network: room.network().and_then(|n| n.namespace().cloned()),
        network_policy: &network,
        secrets: &secrets,
        budget: None,
        timeout: Duration::from_secs(dispatch.timeout_secs.max(1)),
        retry: runner::llm::RetryPolicy::default(),
        masker,
        proposer: None,
        transcript: None,
        replay: Some(replay.clone()),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let finished = runner::llm::run(step, &lines, &cancel).await;
    // Every tool process is gone: the network, the tree and the step user go.
    room.close().await;
    drop(lines);
    let _ = printer.await;

    let report = Report {
        run_id,
        step: step_id,
        replayed_turns: replay.replayed_turns(),
        recorded_turns: recorded.turns.len(),
        live: args.from_turn.is_some(),
        network,
        outcome: finished.outcome,
        reason: finished.reason,
        differences: replay.differences(),
    };
    let same_end = recorded_status
        .map(|status| status.as_str())
        .is_none_or(|status| status == outcome_status(report.outcome));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, recorded_status.map(|status| status.as_str()));
    }
    Ok(if report.differences.is_empty() && same_end {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    })
}

/// The secrets the replayed tools get: the `--secret`s but the API key, and only with
/// `--replay-with-secrets` (refused without it).
fn secrets_for_tools(args: &RerunArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut given: BTreeMap<String, String> = args.secrets.iter().cloned().collect();
    given.remove(runner::llm::API_KEY_SECRET);
    if !given.is_empty() && !args.replay_with_secrets {
        bail!(
            "--secret {}: a replay runs the tool calls the transcript recorded — the model's \
             choices, perhaps an attacker's — so its tools get a secret only with \
             --replay-with-secrets (give it only for a transcript you trust); leave the \
             secret out otherwise (the results of calls that used it will differ)",
            given
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", --secret ")
        );
    }
    Ok(given)
}

/// The network policy the tools run under, and where it came from: the step's in the
/// run's plan (the data directory's); else (`--transcript`) the one the runner recorded
/// in the transcript, or an `llm` step's default, `none`, for a transcript without one.
async fn network_policy(
    local: Option<&Local>,
    run_id: i64,
    step_id: &str,
    dispatch: &RecordedStep,
) -> anyhow::Result<(NetworkPolicy, &'static str)> {
    if let Some(local) = local {
        let documents = local
            .store
            .run_documents(run_id)
            .await?
            .with_context(|| format!("run {run_id} has no plan in this data directory"))?;
        let plan: evaluator::plan::Plan = serde_json::from_str(&documents.plan)
            .with_context(|| format!("the stored plan of run {run_id}"))?;
        let step = plan
            .steps
            .iter()
            .find(|step| step.id == step_id)
            .with_context(|| format!("the plan of run {run_id} has no step '{step_id}'"))?;
        return Ok((plue_core::dispatch::network(step), "the plan's"));
    }
    Ok(match &dispatch.network {
        Some(policy) => (policy.clone(), "as the transcript recorded it"),
        None => (
            NetworkPolicy::None,
            "an llm step's default: the transcript records none",
        ),
    })
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
    match plue_core::transcripts::latest(&local.store, &local.artifacts, run_id, step_id).await? {
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
            runner::handoff::unpack(reader, &into, &plue_types::handoff::Limits::default())
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
