//! The runner agent: registers with an engine, heartbeats, long-polls for assignments and
//! runs each in a fresh workspace, streaming masked log lines and reporting the outcome.
//!
//! Invariants:
//! - Logs and the completion are retried until the engine acknowledges them (or the engine
//!   has been unreachable for `give_up_after`): an engine restart mid-step loses nothing,
//!   and sequence numbers make the repeats harmless.
//! - Secret values are masked before a line is queued for sending, and in the reason and
//!   every output of the completion; the runner's own registration token is removed from
//!   the step's environment.
//! - One step at a time; an ephemeral runner leaves after its first step.
//! - Nothing of an assignment a poll handed over runs before the engine took its
//!   acceptance (`accept`): a claim the engine returned meanwhile (it came too late) is
//!   refused, and the runner runs none of it. One handed with a completion's answer counts
//!   as taken as it is handed.
//! - An attempt's directory is removed before the runner takes its next attempt or
//!   leaves (while the engine takes the report; an ephemeral runner's before its end is
//!   reported), so a runner leaves nothing; a starting runner removes what killed runners
//!   left in its work directory (`leftovers`).
//!
//! Past 600 lines (about one in twenty of them tests): an attempt's life — claim, workspace,
//! process or `llm` step, hand-off, report — and the engine client it retries through read
//! as one sequence; the parts that stand alone live beside it in `agent/` (the log sender,
//! the next attempt's tree made ahead, each step kind's part in `agent/kinds/`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::held_connection::HeldConnection;

use crate::mask::Masker;
use crate::process::{self, Ending, ProcessSpec};
use crate::step_user::{self, Claim, StepUser, StepUsers};
use crate::{handoff, network, outputs, step_env, workspace};
use ahead::Ahead;
use log_sender::send_logs;
use plue_types::protocol::{self as wire, Assignment, BlobKind, Completion, Outcome, Stream};

mod ahead;
mod caches;
mod debug;
mod kinds;
mod leftovers;
mod log_sender;

pub use crate::step_env::TOKEN_ENV;
/// The Python interpreter for `python` steps, when set (saves resolving `python3`).
pub const PYTHON_ENV: &str = "PLUE_PYTHON";

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Base URL of the engine, e.g. `http://127.0.0.1:8600`.
    pub engine: String,
    pub registration_token: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ephemeral: bool,
    /// Whether to take steps of fork runs (`None`: as the registration token says).
    pub accept_forks: Option<bool>,
    /// Parent of the per-attempt workspaces.
    pub work_dir: PathBuf,
    /// Stop retrying an engine that has been unreachable this long.
    pub give_up_after: Duration,
    /// The bottom layer of every step's environment (see [`step_env`]).
    pub base_env: step_env::Base,
    /// Who runs the steps (see [`step_user`]).
    pub step_users: StepUsers,
    /// Where `llm` steps send the API key (`None`: the public API); the operator's setting,
    /// never a step's.
    pub anthropic_base_url: Option<String>,
    /// The runner's pod is confined by a NetworkPolicy (the operator's setting, given by
    /// the Kubernetes pool to a class with `step_network: pod`; never a step's): a step
    /// still gets a namespace of its own when the runner can make one, else the pod's
    /// network ([`network::confine_on_pod`]).
    pub network_confined_by_pod: bool,
    /// The cluster's shared egress proxy (`--egress-proxy`, a class's `egress_proxy`; the
    /// operator's setting, never a step's), checked by [`network::egress_proxy_url`]: an
    /// allow-list step's proxy connects through it with its attempt's credential
    /// ([`network::confine_on_pod`]).
    pub egress_proxy: Option<String>,
    /// Start the warm Python interpreter `python` steps are forked from when the runner
    /// starts, not at its first `python` step (which would wait ≈ 50 ms for it): for
    /// runners expected to run `python` steps; one that runs none holds an idle
    /// interpreter.
    pub warm_python: bool,
    /// The proxy to reach the engine through (the operator's setting: `--engine-proxy`,
    /// a class's `engine_proxy`); `None`: directly, whatever `HTTPS_PROXY` says.
    pub engine_proxy: Option<crate::engine_client::EngineProxy>,
    /// The Unix socket the engine serves the runner protocol on (`--engine-socket`: `plue
    /// run`'s own runners); `None`: `engine`'s host and port.
    pub engine_socket: Option<PathBuf>,
    /// The machine the runner runs on, told the engine at registration: its Kubernetes
    /// node (`PLUE_NODE_NAME`) or its host name. When a runner of the same host is lost,
    /// this one claims nothing until it proved alive.
    pub host: Option<String>,
    /// Carry the protocol's calls on one held connection when the engine offers it
    /// (`runner::held_connection`); `false`: one HTTP request per call
    /// (`--no-held-connection`).
    pub held_connection: bool,
}

/// How long a poll for work waits at the engine before it asks again.
pub const POLL_WAIT: Duration = Duration::from_secs(20);

/// Runs the agent until it is told to stop, the engine forgets it, or (ephemeral) after
/// one step.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Steps run as this process's children: closing /proc/<agent>/{environ,mem,fd} to them
    // keeps the tokens this process holds out of their reach.
    nix::sys::prctl::set_dumpable(false).context("making the runner undumpable")?;
    if config.step_users == StepUsers::Same && nix::unistd::geteuid().is_root() {
        tracing::warn!("steps run as root: their processes can read each other's");
    }
    prepare_work_dir(&config.work_dir, config.step_users)?;
    // What runners killed mid-attempt left here, before this one makes anything.
    let base = config.work_dir.clone();
    tokio::task::spawn_blocking(move || leftovers::sweep(&base))
        .await
        .context("sweeping the work directory")?;
    // Started before registering: the interpreter boots while the runner registers.
    let python = if config.warm_python {
        warm_python(&config).await
    } else {
        None
    };
    let engine = Engine::new(&config)?;
    let registered: wire::RegisterResponse = engine
        .send(
            wire::REGISTER,
            &wire::RegisterRequest {
                name: config.name.clone(),
                labels: config.labels.clone(),
                ephemeral: config.ephemeral,
                accept_forks: config.accept_forks,
                host: config.host.clone(),
            },
            None,
            &shutdown,
        )
        .await
        .context("registering with the engine")?;
    let engine = engine.with_session(registered.session_token);
    tracing::info!(runner_id = registered.runner_id, "registered");
    if config.held_connection {
        engine.hold().await;
    }
    // Heartbeats run beside the work; if the engine forgets this runner, everything stops.
    let stop = shutdown.child_token();
    let heartbeat = tokio::spawn(heartbeats(
        engine.clone(),
        Duration::from_millis(registered.heartbeat_interval_ms.max(100)),
        stop.clone(),
    ));
    let result = work(&engine, &config, python, &stop).await;
    stop.cancel();
    let _ = heartbeat.await;
    if !engine.forgotten.load(Ordering::Relaxed) {
        let quick = CancellationToken::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            engine.send::<_, wire::Ack>(wire::DEREGISTER, &wire::Ack {}, None, &quick),
        )
        .await;
    }
    result
}

/// The interpreter for `python` steps, resolved now, with its zygote started ahead
/// ([`AgentConfig::warm_python`]); `None` when there is none to start (the first `python`
/// step resolves it again and says why it cannot run).
async fn warm_python(config: &AgentConfig) -> Option<PathBuf> {
    let others = config.step_users != StepUsers::Same;
    let program = match tokio::task::spawn_blocking(move || python_for_steps(others)).await {
        Ok(Ok(program)) => program,
        Ok(Err(err)) => {
            tracing::warn!("no python interpreter to start ahead: {err:#}");
            return None;
        }
        Err(_) => return None,
    };
    if !process::prewarm_python(&program, config.base_env.vars(), config.step_users).await {
        tracing::debug!(
            "no warm python zygote ahead: the base environment needs fresh interpreters"
        );
    }
    Some(program)
}

async fn work(
    engine: &Engine,
    config: &AgentConfig,
    mut python: Option<PathBuf>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    // The next attempt, when the engine handed it over with the last completion.
    let mut next = None;
    // The next attempt's directory and step user, made as the last attempt ended — and the
    // first attempt's now, while the runner waits for work (no step runs yet): a runner
    // that takes one step (a pod's) pays none of it on that step's path.
    let mut ahead = Some(make_ahead(config));
    while !stop.is_cancelled() {
        let (assignment, handed) = match next.take() {
            Some(assignment) => (assignment, Handed::WithCompletion),
            None => {
                let poll = wire::PollRequest {
                    wait_ms: POLL_WAIT.as_millis() as u64,
                };
                let response: wire::PollResponse = tokio::select! {
                    _ = stop.cancelled() => break,
                    response = engine.send(wire::POLL, &poll, Some(POLL_WAIT), stop) => response?,
                };
                match (response.assignment, response.debug) {
                    (Some(assignment), _) => (assignment, Handed::ByPoll),
                    (None, Some(session)) => {
                        debug::execute(engine, config, *session, &mut python, stop).await?;
                        if config.ephemeral {
                            break;
                        }
                        continue;
                    }
                    (None, None) => continue,
                }
            }
        };
        let took = Took { assignment, handed };
        next = execute(engine, config, took, &mut python, &mut ahead, stop).await?;
        if config.ephemeral {
            break;
        }
    }
    // Its tree removed and its claim released before the runner says it is gone.
    if let Some(making) = ahead {
        drop(making.await);
    }
    Ok(())
}

/// An [`Ahead`] being made on a blocking thread.
type Making = tokio::task::JoinHandle<anyhow::Result<Ahead>>;

/// Starts making an [`Ahead`] in the runner's work directory. Only while no step's process
/// runs (see [`ahead`]'s invariants).
fn make_ahead(config: &AgentConfig) -> Making {
    let (work_dir, users) = (config.work_dir.clone(), config.step_users);
    tokio::task::spawn_blocking(move || Ahead::make(&work_dir, users))
}

/// How an assignment reached the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handed {
    /// In a poll's answer: the claim counts once the engine took the runner's acceptance.
    ByPoll,
    /// In the answer to this runner's completion: taken as it was handed.
    WithCompletion,
}

/// An assignment and how it came.
struct Took {
    assignment: Assignment,
    handed: Handed,
}

/// Acknowledges the claim of `attempt` a poll handed over; `Err` with the reason when the
/// engine refused it (it returned the claim, which came too late) or could not be told,
/// and the runner must run none of it. An engine from before acknowledgements (no such
/// route: 404) counts the claim when the attempt starts.
async fn accept(engine: Engine, attempt: i64, stop: CancellationToken) -> Result<(), String> {
    let sent = engine
        .send::<_, wire::Ack>(&wire::accepted_path(attempt), &wire::Ack {}, None, &stop)
        .await;
    match sent {
        Ok(_) => Ok(()),
        Err(e) => match e.downcast_ref::<SendError>() {
            Some(SendError::Refused {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(()),
            _ => Err(format!(
                "not run: the engine did not take this runner's acceptance of the claim ({e:#})"
            )),
        },
    }
}

async fn heartbeats(engine: Engine, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let beat = engine
            .send_once::<_, wire::Ack>(wire::HEARTBEAT, &wire::Ack {}, None)
            .await;
        let forgotten = match beat {
            Err(SendError::Gone(message)) => Some(message),
            Err(SendError::Refused {
                status: StatusCode::UNAUTHORIZED,
                message,
            }) => Some(message),
            _ => None,
        };
        if let Some(message) = forgotten {
            // The engine gave up on this runner, and on its attempt: stop the step.
            tracing::warn!("the engine no longer knows this runner: {message}");
            engine.forgotten.store(true, Ordering::Relaxed);
            stop.cancel();
            return;
        }
    }
}

/// Runs one attempt and reports it; returns the next attempt when the engine gave one
/// with its answer. Errors only when the engine cannot be reached.
async fn execute(
    engine: &Engine,
    config: &AgentConfig,
    took: Took,
    python: &mut Option<PathBuf>,
    ahead: &mut Option<Making>,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Assignment>> {
    let Took { assignment, handed } = took;
    let attempt = assignment.attempt_id;
    // Sent at once, waited for only before anything of the step runs: the round trip
    // overlaps the workspace's making.
    let acceptance = (handed == Handed::ByPoll)
        .then(|| tokio::spawn(accept(engine.clone(), attempt, stop.clone())));
    // A work directory whose tmpfs went (removed on the host, which unmounts it here) is
    // no longer the runner's own: nothing more is made in it. The attempt fails with the
    // reason, and the runner stops once it has reported it.
    let gone = crate::work_tmpfs::check(&config.work_dir).err();
    if let Some(err) = &gone {
        tracing::error!("{err:#}");
        stop.cancel();
    }
    let dir = config
        .work_dir
        .join(format!("attempt-{attempt}-{}", std::process::id()));
    let output_file = dir.join("output");
    // The step user (held until the attempt's processes are gone and its directory
    // removed, below) and the attempt's directory, in one trip to a blocking thread: both
    // made ahead as the last attempt ended, where they were.
    let ready = match ahead.take() {
        Some(making) => making.await.ok().and_then(|made| {
            made.inspect_err(|err| tracing::debug!("nothing made ahead: {err:#}"))
                .ok()
        }),
        None => None,
    };
    let (claim, laid_out) = match gone {
        None => claim_and_lay_out(config.step_users, &dir, &assignment, ready).await?,
        Some(err) => (Ok(None), Err(err)),
    };
    let user = user_of(&claim);
    let cancel = stop.child_token();
    let masker = Arc::new(Masker::new(assignment.secrets.values()));

    // The start is reported on its own only by an attempt that is still going after
    // `START_REPORT_AFTER`; a shorter one folds it into its completion. It never holds up
    // the process.
    let started_at = tokio::time::Instant::now();
    let started = {
        let engine = engine.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wire::START_REPORT_AFTER).await;
            engine
                .send::<_, wire::Ack>(&wire::started_path(attempt), &wire::Ack {}, None, &stop)
                .await
        })
    };
    let (lines_tx, lines_rx) = mpsc::channel::<(Stream, String)>(8192);
    let sender = tokio::spawn(send_logs(
        engine.clone(),
        attempt,
        lines_rx,
        masker.clone(),
        cancel.clone(),
        stop.clone(),
    ));
    let watcher = tokio::spawn(watch_cancel(engine.clone(), attempt, cancel.clone()));

    let (mut step_network, prepared, cached) = finish_sandbox(
        engine,
        config,
        &assignment,
        &dir,
        &claim,
        laid_out,
        &lines_tx,
    )
    .await;
    // The claim counts only once the engine took its acceptance: before that, nothing of
    // the step runs, and a refused one runs not at all.
    let refused = match acceptance {
        Some(accepting) => match accepting.await {
            Ok(accepted) => accepted.err(),
            Err(e) => Some(format!("not run: the acceptance task failed: {e}")),
        },
        None => None,
    };
    if let Some(why) = &refused {
        tracing::warn!(attempt, "{why}");
    }
    let ran = prepared.is_ok() && refused.is_none();
    let mut usage = None;
    let mut proposals = Vec::new();
    let mut model = None;
    let (outcome, exit_code, reason, outputs) = match prepared {
        // The engine ended the attempt already: the report is a repeat it ignores.
        _ if refused.is_some() => (Outcome::Cancelled, None, refused, BTreeMap::new()),
        Err(e) => (Outcome::Failed, None, Some(e), BTreeMap::new()),
        Ok(()) if kinds::runs(&assignment.action) == kinds::Runs::Conversation => {
            let ended = kinds::llm::run(
                &assignment,
                &dir,
                config,
                kinds::llm::Confined {
                    user,
                    network: step_network.as_ref(),
                },
                &lines_tx,
                &cancel,
                masker.clone(),
            )
            .await;
            let (ended, proposed) = ended;
            proposals = proposed;
            usage = ended.usage;
            model = ended.model;
            (ended.outcome, None, ended.reason, ended.outputs)
        }
        Ok(()) => {
            let spec = spec_for(
                &assignment,
                &dir,
                &config.base_env,
                user,
                step_network.as_ref(),
                python,
            )
            .await;
            match spec {
                Err(e) => (
                    Outcome::Failed,
                    None,
                    Some(format!("{e:#}")),
                    BTreeMap::new(),
                ),
                Ok(spec) => run_process(spec, &assignment, &output_file, &lines_tx, &cancel).await,
            }
        }
    };
    // Every process of the step is gone: its network namespace and proxy go too (and the
    // proxy's copies of the log sender with them).
    let network_refused = match step_network.take() {
        Some(confined) => confined.finish().await,
        None => 0,
    };
    // The next attempt's directory and user, now that this one's processes are gone (a
    // running step must never reach them), while this one's end is kept and reported: a
    // runner usually takes its next attempt with this one's completion.
    if !config.ephemeral && !stop.is_cancelled() {
        *ahead = Some(make_ahead(config));
    }
    // What later steps and downloads need from this one, before the engine hears the end.
    let (outcome, reason) = if ran && outcome != Outcome::Cancelled {
        match keep(engine, &assignment, &dir, &lines_tx).await {
            Ok(()) => (outcome, reason),
            Err(e) if outcome == Outcome::Succeeded => (Outcome::Failed, Some(format!("{e:#}"))),
            Err(e) => {
                let _ = lines_tx.send((Stream::System, format!("{e:#}"))).await;
                (outcome, reason)
            }
        }
    } else {
        (outcome, reason)
    };
    // The caches whose exact key missed, once the step succeeded and its processes are
    // gone; a cache that cannot be saved is a line in the log, never the step's failure.
    if outcome == Outcome::Succeeded {
        caches::save_all(engine, &assignment, &dir, cached, &lines_tx).await;
    }
    drop(lines_tx);
    watcher.abort();
    let sent = sender.await.context("log sender")??;
    // The completion always says when the attempt started; the engine keeps a start it
    // already recorded, so a report still waiting (or cut off mid-flight) is not needed.
    let started_ms_ago = Some(u64::try_from(started_at.elapsed().as_millis()).unwrap_or(u64::MAX));
    started.abort();
    let _ = started.await;
    // A secret in an output's name would be stored and shown in clear: the step fails.
    let (outcome, reason, outputs) = match outputs::check_names(&outputs, &masker) {
        Ok(()) => (outcome, reason, outputs),
        Err(_) if outcome == Outcome::Cancelled => (outcome, reason, BTreeMap::new()),
        Err(e) => (Outcome::Failed, Some(e.to_string()), BTreeMap::new()),
    };
    let (reason, outputs) = masked_report(&masker, reason, outputs);
    // The attempt's directory goes, and only then may another attempt on this host run as
    // this attempt's user (the claim is dropped with it). Every process of the attempt is
    // gone and all it left that others need was kept above, so the removal runs while the
    // engine takes the report, and the runner waits for it before it takes the next
    // attempt or leaves. An ephemeral runner exits right after the report, and nothing may
    // outlive it: its directory goes first.
    let dir_to_remove = dir.clone();
    let mut removal = Some(tokio::task::spawn_blocking(move || {
        // Left when the attempt did not reach `keep` (cancelled); nothing else reads it.
        let _ = std::fs::remove_dir_all(transcript_dir(&dir_to_remove));
        remove_dir(&dir_to_remove, "attempt");
        drop(claim);
    }));
    if config.ephemeral {
        wait_removed(removal.take()).await?;
    }
    let completion = Completion {
        outcome,
        exit_code,
        reason,
        outputs,
        lines: sent.lines,
        logs: sent.tail,
        usage,
        model,
        proposals,
        claim_next: !config.ephemeral && !stop.is_cancelled(),
        started_ms_ago,
        network_refused,
    };
    // Report even when asked to stop: the engine must learn how the attempt ended.
    let report_stop = CancellationToken::new();
    let done = engine
        .send::<_, wire::CompleteResponse>(
            &wire::complete_path(attempt),
            &completion,
            None,
            &report_stop,
        )
        .await;
    wait_removed(removal).await?;
    done.map(|answer| answer.next)
        .context("reporting the attempt's end")
}

/// Waits for an attempt directory's removal (see [`execute`]), if it was not waited for.
async fn wait_removed(removal: Option<tokio::task::JoinHandle<()>>) -> anyhow::Result<()> {
    if let Some(removal) = removal {
        removal
            .await
            .context("the attempt directory's removal failed")?;
    }
    Ok(())
}

/// Creates the parent of the attempt directories: searchable but not listable by others
/// (0711), so each step user reaches its own attempt directory and no other. An existing
/// one must be a real directory of this runner's user or of root — never one another user
/// made, e.g. in a shared `/tmp`, where its owner could swap the runner's entries for
/// links (root's is trusted: a Kubernetes `emptyDir` under a non-root runner of the pod);
/// its mode is left as it is. Refuses one that step users could not reach at all (a
/// private directory above it).
fn prepare_work_dir(dir: &Path, users: StepUsers) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let existed = dir.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .with_context(|| format!("creating the work directory {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("reading the work directory {}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || (meta.uid() != me && meta.uid() != 0) {
        bail!(
            "the work directory {} is not a directory of this runner's user (uid {me}) or \
             root's: choose another --work-dir",
            dir.display()
        );
    }
    if !existed {
        // The builder's mode is filtered by the umask.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
    }
    if users != StepUsers::Same && !step_user::usable_by_others(dir) {
        bail!(
            "the work directory {} cannot be reached by the step users (a directory on its \
             path is private): choose another --work-dir",
            dir.display()
        );
    }
    Ok(())
}

/// The files of one attempt, all below its directory (mode 0700, owned by the step's user).
struct AttemptDir {
    workspace: PathBuf,
    output_file: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
}

impl AttemptDir {
    fn new(dir: &Path) -> AttemptDir {
        AttemptDir {
            workspace: dir.join("workspace"),
            output_file: dir.join("output"),
            home: dir.join("home"),
            tmp: dir.join("tmp"),
        }
    }

    fn paths(&self) -> step_env::AttemptPaths<'_> {
        step_env::AttemptPaths {
            workspace: &self.workspace,
            output_file: &self.output_file,
            home: &self.home,
            tmp: &self.tmp,
        }
    }
}

/// The bounds of the attempt's hand-off archives.
fn handoff_limits(assignment: &Assignment) -> plue_types::handoff::Limits {
    let mut limits = plue_types::handoff::Limits::default();
    if assignment.handoff.max_bytes > 0 {
        limits.max_bytes = assignment.handoff.max_bytes;
    }
    limits
}

/// Uploads the tars the attempt's [`wire::Handoff`] asks for: its final workspace, the
/// files its `artifacts` globs match. The error says which and why (the step fails with it).
async fn keep(
    engine: &Engine,
    assignment: &Assignment,
    dir: &Path,
    lines: &mpsc::Sender<(Stream, String)>,
) -> anyhow::Result<()> {
    let handoff = &assignment.handoff;
    let workspace = AttemptDir::new(dir).workspace;
    let limits = handoff_limits(assignment);
    let mut uploads = Vec::new();
    if handoff.keep_workspace {
        uploads.push((BlobKind::Workspace, handoff::Selection::Everything));
    }
    if !handoff.artifacts.is_empty() {
        let selection =
            handoff::Selection::artifacts(&handoff.artifacts).map_err(anyhow::Error::msg)?;
        uploads.push((BlobKind::Artifacts, selection));
    }
    keep_transcript(engine, assignment, dir, limits, lines).await;
    for (kind, selection) in uploads {
        let path = wire::blob_path(assignment.attempt_id, kind);
        let packed = engine
            .upload(&path, &workspace, selection, limits)
            .await
            .with_context(|| format!("keeping the step's {}", kind.as_str()))?;
        let _ = lines
            .send((
                Stream::System,
                format!(
                    "kept the {}: {} files, {}",
                    kind.as_str(),
                    packed.files,
                    plue_types::handoff::human(packed.bytes)
                ),
            ))
            .await;
    }
    Ok(())
}

/// Where an `llm` attempt's transcript is written: beside the attempt's directory, in the
/// work directory (0711, the runner's), so the step's tools can neither read it nor plant
/// a link there before the runner writes.
fn transcript_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push(".transcript");
    dir.with_file_name(name)
}

fn make_transcript_dir(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let at = transcript_dir(dir);
    std::fs::DirBuilder::new().mode(0o700).create(&at)?;
    Ok(at)
}

/// Uploads the transcript an `llm` attempt left ([`wire::BlobKind::Transcript`]), then
/// removes it. A transcript that cannot be kept is told in the log; the step's outcome
/// does not depend on it.
async fn keep_transcript(
    engine: &Engine,
    assignment: &Assignment,
    dir: &Path,
    limits: plue_types::handoff::Limits,
    lines: &mpsc::Sender<(Stream, String)>,
) {
    let at = transcript_dir(dir);
    // Only the directory `make_transcript_dir` made: never one a link leads to.
    let made = std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir());
    if !made || !at.join(plue_types::transcript::FILE).is_file() {
        return;
    }
    let path = wire::blob_path(assignment.attempt_id, BlobKind::Transcript);
    let kept = engine
        .upload(&path, &at, handoff::Selection::Everything, limits)
        .await;
    if let Err(e) = kept {
        let note = format!("the transcript was not kept: {e:#}");
        let _ = lines.send((Stream::System, note)).await;
    }
    let _ = tokio::fs::remove_dir_all(&at).await;
}

/// A step user (the one `ready` made ahead with its tree, moved to `dir`, else a fresh
/// claim) and the attempt's directory laid out for `assignment` ([`lay_out`]), in one trip
/// to a blocking thread. Errors only when that thread fails.
async fn claim_and_lay_out(
    users: StepUsers,
    dir: &Path,
    assignment: &Assignment,
    ready: Option<Ahead>,
) -> anyhow::Result<(anyhow::Result<Option<Claim>>, anyhow::Result<LaidOut>)> {
    let dir = dir.to_owned();
    let source = assignment.workspace.clone();
    let handoff = assignment.handoff.clone();
    let has_caches = !assignment.caches.is_empty();
    tokio::task::spawn_blocking(move || {
        let (claim, tree_made) = match ready.map(|ready| ready.take(&dir)) {
            Some(Ok(claim)) => (Ok(claim), true),
            Some(Err(err)) => {
                tracing::debug!("the tree made ahead did not move: {err:#}");
                (users.claim(), false)
            }
            None => (users.claim(), false),
        };
        let laid_out = match &claim {
            Ok(claim) => lay_out(
                &dir,
                tree_made,
                &source,
                &handoff,
                has_caches,
                claim.as_ref().map(Claim::user),
            ),
            Err(_) => Ok(LaidOut::Whole),
        };
        (claim, laid_out)
    })
    .await
    .context("the step-user claim task failed")
}

/// The step user a [`claim_and_lay_out`] claimed, if any.
fn user_of(claim: &anyhow::Result<Option<Claim>>) -> Option<StepUser> {
    claim
        .as_ref()
        .ok()
        .and_then(|c| c.as_ref().map(Claim::user))
}

/// The rest of the step's sandbox once [`claim_and_lay_out`] is done: what [`lay_out`]
/// left of the workspace ([`prepare`]), then the step's network (`network`): nothing at
/// all for `open`; a policy that cannot be set up fails the step, which never runs with
/// the host's network instead. Returns the confined network and, as `Err`, why the step
/// cannot run.
async fn finish_sandbox(
    engine: &Engine,
    config: &AgentConfig,
    assignment: &Assignment,
    dir: &Path,
    claim: &anyhow::Result<Option<Claim>>,
    laid_out: anyhow::Result<LaidOut>,
    lines_tx: &mpsc::Sender<(Stream, String)>,
) -> (
    Option<network::StepNetwork>,
    Result<(), String>,
    Vec<caches::Cached>,
) {
    let mut cached = Vec::new();
    let prepared = match (claim, laid_out) {
        (Err(e), _) => Err(format!("no step user: {e:#}")),
        (Ok(_), Err(e)) => Err(format!("workspace: {e:#}")),
        (Ok(_), Ok(LaidOut::Whole)) => Ok(()),
        (Ok(_), Ok(LaidOut::Partly { workspace_filled })) => {
            let prepared = prepare(
                engine,
                assignment,
                dir,
                user_of(claim),
                workspace_filled,
                lines_tx,
            )
            .await;
            prepared
                .map(|restored| cached = restored)
                .map_err(|e| format!("workspace: {e:#}"))
        }
    };
    match prepared {
        Ok(()) if config.network_confined_by_pod => {
            let grant = assignment.egress_grant.as_deref();
            let gateway = config.egress_proxy.as_deref();
            match network::confine_on_pod(&assignment.network, gateway, grant, lines_tx).await {
                Ok((network, said)) => {
                    if let Some(said) = said {
                        let _ = lines_tx.send((Stream::System, said.into())).await;
                    }
                    (network, Ok(()), cached)
                }
                Err(e) => (None, Err(e), cached),
            }
        }
        Ok(()) => match network::confine(&assignment.network, lines_tx).await {
            Ok(confined) => (confined, Ok(()), cached),
            Err(e) => (None, Err(e), cached),
        },
        Err(e) => (None, Err(e), cached),
    }
}

/// Removes `dir` and all it holds, logging a failure (but for `dir` being gone already) as
/// the `what`'s directory's. Blocking.
fn remove_dir(dir: &Path, what: &str) {
    if let Err(err) = std::fs::remove_dir_all(dir) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%err, dir = %dir.display(), "could not remove the {what}'s directory");
        }
    }
}

/// How far [`lay_out`] got.
enum LaidOut {
    /// Everything is in place and handed to the step's user.
    Whole,
    /// The directories exist; the rest needs the engine or a `git` process ([`prepare`]).
    Partly { workspace_filled: bool },
}

/// Creates the attempt's directory (private to the step's user) unless `tree_made` (an
/// [`Ahead`]'s tree moved there) and, when that needs neither the engine nor another
/// process — a copied or empty workspace, nothing handed on from a dependency —, fills the
/// workspace and hands everything to the step's user. Blocking: the common case in one
/// trip to a blocking thread.
fn lay_out(
    dir: &Path,
    tree_made: bool,
    source: &wire::WorkspaceSource,
    handoff: &wire::Handoff,
    has_caches: bool,
    user: Option<StepUser>,
) -> anyhow::Result<LaidOut> {
    let files = AttemptDir::new(dir);
    if !tree_made {
        ahead::create_tree(dir)?;
    }
    if handoff.workspace_from.is_some() {
        return Ok(LaidOut::Partly {
            workspace_filled: false,
        });
    }
    let Some(filled) = workspace::prepare_blocking(source, &files.workspace) else {
        return Ok(LaidOut::Partly {
            workspace_filled: false,
        });
    };
    filled?;
    // Caches are restored (from the engine) before the files are handed over.
    if !handoff.needs_artifacts.is_empty() || has_caches {
        return Ok(LaidOut::Partly {
            workspace_filled: true,
        });
    }
    if let Some(user) = user {
        step_user::hand_over(dir, user)?;
    }
    Ok(LaidOut::Whole)
}

/// The rest of [`lay_out`]'s work: fills the workspace (a fresh one, or a dependency's
/// final one) unless `workspace_filled`, adds the artifacts it needs, restores its caches
/// ([`caches::restore_all`], whose failures are only log lines) and hands everything in it
/// to the step's user.
async fn prepare(
    engine: &Engine,
    assignment: &Assignment,
    dir: &Path,
    user: Option<StepUser>,
    workspace_filled: bool,
    lines: &mpsc::Sender<(Stream, String)>,
) -> anyhow::Result<Vec<caches::Cached>> {
    let files = AttemptDir::new(dir);
    let attempt = assignment.attempt_id;
    let limits = handoff_limits(assignment);
    match &assignment.handoff.workspace_from {
        Some(from) => {
            let path = wire::dependency_blob_path(attempt, BlobKind::Workspace, from);
            engine
                .download(&path, &files.workspace, limits)
                .await
                .with_context(|| format!("the final workspace of step '{from}'"))?;
        }
        None if workspace_filled => {}
        None => fill_workspace(engine, assignment, &files.workspace).await?,
    }
    for dep in &assignment.handoff.needs_artifacts {
        let path = wire::dependency_blob_path(attempt, BlobKind::Artifacts, dep);
        engine
            .download(&path, &files.workspace, limits)
            .await
            .with_context(|| format!("the artifacts of step '{dep}'"))?;
    }
    let cached = caches::restore_all(engine, assignment, dir, lines).await;
    if let Some(user) = user {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || step_user::hand_over(&dir, user))
            .await
            .context("the hand-over task failed")??;
    }
    Ok(cached)
}

/// Fills the fresh workspace `dir` from the assignment's source: a checkout from the pack
/// the engine serves when it serves one (its mirror holds the commit), else as
/// [`workspace::prepare`] does (a checkout from the forge). An engine that says the
/// attempt is over (409, 410) ends it there.
async fn fill_workspace(
    engine: &Engine,
    assignment: &Assignment,
    dir: &Path,
) -> anyhow::Result<()> {
    if let wire::WorkspaceSource::Git { sha, .. } = &assignment.workspace {
        match engine.checkout(assignment.attempt_id, sha, dir).await? {
            FromEngine::CheckedOut => return Ok(()),
            FromEngine::NotServed => {}
            FromEngine::Failed(error) => {
                tracing::warn!(
                    attempt = assignment.attempt_id,
                    "the checkout the engine served failed; fetching from the forge: {error:#}"
                );
                let dir = dir.to_owned();
                tokio::task::spawn_blocking(move || workspace::empty(&dir))
                    .await
                    .context("the emptying task failed")?
                    .context("emptying the workspace after a failed checkout")?;
            }
        }
    }
    workspace::prepare(&assignment.workspace, dir).await
}

/// How a checkout from the engine went (an `Err` beside it: the attempt is over).
enum FromEngine {
    CheckedOut,
    /// The engine serves no pack of it (404).
    NotServed,
    /// Anything else: the workspace may be half made.
    Failed(anyhow::Error),
}

/// The longest the engine may take to start answering a checkout (it makes the pack
/// first, within its own limit of 30 s).
const CHECKOUT_ANSWER: Duration = Duration::from_secs(60);

async fn spec_for(
    assignment: &Assignment,
    dir: &Path,
    base_env: &step_env::Base,
    user: Option<StepUser>,
    network: Option<&network::StepNetwork>,
    python: &mut Option<PathBuf>,
) -> anyhow::Result<ProcessSpec> {
    let files = AttemptDir::new(dir);
    let mut env = step_env::build(
        base_env,
        files.paths(),
        &assignment.env,
        &assignment.secrets,
    );
    if let Some(network) = network {
        network.set_env(&mut env);
    }
    let kinds::Command {
        program,
        args,
        fresh_interpreter,
    } = kinds::command(&assignment.action, &env, user.is_some(), python).await?;
    Ok(ProcessSpec {
        program,
        args,
        cwd: files.workspace.clone(),
        env,
        user,
        timeout: Duration::from_secs(assignment.timeout_secs.max(1)),
        // Masked whole before the line-length cut (and again, harmlessly, in `send_logs`).
        masker: Masker::new(assignment.secrets.values()),
        fresh_interpreter,
        network: network.and_then(|n| n.namespace().cloned()),
    })
}

type Ended = (
    Outcome,
    Option<i32>,
    Option<String>,
    BTreeMap<String, String>,
);

async fn run_process(
    spec: ProcessSpec,
    assignment: &Assignment,
    output_file: &Path,
    lines: &mpsc::Sender<(Stream, String)>,
    cancel: &CancellationToken,
) -> Ended {
    let timeout = spec.timeout;
    let result = match process::run(spec, lines.clone(), cancel.clone()).await {
        Ok(result) => result,
        Err(e) => {
            return (
                Outcome::Failed,
                None,
                Some(format!("cannot start the step: {e}")),
                BTreeMap::new(),
            )
        }
    };
    let reason = result.reason(timeout);
    let notice = match result.ending {
        Ending::TimedOut => Some(format!(
            "step timed out after {}s; its processes were killed",
            assignment.timeout_secs
        )),
        Ending::Cancelled => Some("step cancelled; its processes were killed".to_string()),
        _ => None,
    };
    if let Some(notice) = notice {
        let _ = lines.send((Stream::System, notice)).await;
    }
    let outputs = outputs::read(output_file).await;
    match (result.ending, outputs) {
        (Ending::Cancelled, _) => (Outcome::Cancelled, None, reason, BTreeMap::new()),
        (Ending::Exited(0), Ok(outputs)) => (Outcome::Succeeded, Some(0), None, outputs),
        (Ending::Exited(0), Err(e)) => (
            Outcome::Failed,
            Some(0),
            Some(e.to_string()),
            BTreeMap::new(),
        ),
        (_, outputs) => (
            Outcome::Failed,
            result.exit_code(),
            reason,
            outputs.unwrap_or_default(),
        ),
    }
}

/// The interpreter for `python` steps: [`resolve_python`], unless steps run as other users
/// and cannot reach it (e.g. a pyenv interpreter under root's 0700 home): then the first
/// system `python3` they can execute.
pub fn python_for_steps(other_users: bool) -> anyhow::Result<PathBuf> {
    let resolved = resolve_python();
    if !other_users {
        return resolved;
    }
    if let Ok(path) = &resolved {
        if step_user::usable_by_others(path) {
            return resolved;
        }
    }
    step_user::first_usable(&[
        PathBuf::from("/usr/local/bin/python3"),
        PathBuf::from("/usr/bin/python3"),
    ])
    .with_context(|| {
        format!(
            "no python3 that the step user can execute (the runner's is {}): install one \
             outside a private directory or set {PYTHON_ENV}",
            resolved
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|e| e.to_string())
        )
    })
}

/// The real interpreter behind `python3` (on some machines a slow shim), or `PLUE_PYTHON`.
/// Blocking (it may start `python3` once): the engine calls it before starting its local
/// runners, which then get the answer through `PLUE_PYTHON`.
pub fn resolve_python() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(PYTHON_ENV) {
        return Ok(PathBuf::from(path));
    }
    // A pyenv shim answered from pyenv's files: no 100 ms shim start.
    if let Some(path) =
        crate::python_path::pyenv_interpreter(&crate::python_path::Lookup::current())
    {
        return Ok(path);
    }
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("python steps need python3 on PATH (or PLUE_PYTHON)")?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || path.is_empty() {
        bail!(
            "python3 did not report its executable: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(PathBuf::from(path))
}

/// The reason and outputs with the attempt's secrets masked (an `llm` step's `result` is
/// model text, a bash step's outputs are whatever it printed), still within the limits
/// the engine accepts when a short secret's mask made a value longer.
fn masked_report(
    masker: &Masker,
    reason: Option<String>,
    outputs: BTreeMap<String, String>,
) -> (Option<String>, BTreeMap<String, String>) {
    let reason = reason.map(|r| truncate(masker.mask(&r).into_owned(), wire::MAX_REASON_BYTES));
    let outputs = outputs
        .into_iter()
        .map(|(key, value)| {
            let value = truncate(
                masker.mask(&value).into_owned(),
                wire::MAX_OUTPUT_VALUE_BYTES,
            );
            (key, value)
        })
        .collect();
    (reason, outputs)
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Long-polls the engine for a cancel of this attempt.
/// How long an attempt runs before it starts watching for a cancel: most steps end
/// sooner, and each log batch's answer says "cancel" too, so a short step costs the engine
/// no watch at all.
const WATCH_AFTER: Duration = Duration::from_millis(250);

async fn watch_cancel(engine: Engine, attempt: i64, cancel: CancellationToken) {
    let path = wire::watch_path(attempt);
    tokio::time::sleep(WATCH_AFTER).await;
    loop {
        match engine
            .send_once::<_, wire::WatchResponse>(
                &path,
                &wire::Ack {},
                Some(Duration::from_secs(40)),
            )
            .await
        {
            Ok(response) if response.cancel => {
                cancel.cancel();
                return;
            }
            Ok(_) => {}
            Err(SendError::Gone(_) | SendError::Refused { .. }) => {
                // The engine no longer lets this runner hold the attempt.
                cancel.cancel();
                return;
            }
            Err(SendError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// The engine does not know this runner any more (410).
    #[error("{0}")]
    Gone(String),
    /// The engine refused the request (4xx other than 410): retrying would not help.
    #[error("the engine refused the request ({status}): {message}")]
    Refused { status: StatusCode, message: String },
    /// The engine could not be reached or failed (5xx): worth retrying.
    #[error("{0}")]
    Unavailable(String),
}

/// An HTTP client for one engine, with this runner's credentials.
#[derive(Clone)]
struct Engine {
    client: reqwest::Client,
    base: String,
    token: Arc<String>,
    give_up_after: Duration,
    forgotten: Arc<AtomicBool>,
    /// The held connection the calls ride, once open ([`Engine::hold`]).
    held: Arc<std::sync::OnceLock<HeldConnection>>,
}

impl Engine {
    fn new(config: &AgentConfig) -> anyhow::Result<Engine> {
        // Every request goes to the engine (it streams blobs itself, no redirects), never
        // through a proxy of the environment's.
        let client = crate::engine_client::build(
            &config.engine,
            config.engine_proxy.as_ref(),
            config.engine_socket.as_deref(),
        )?;
        Ok(Engine {
            client,
            base: config.engine.trim_end_matches('/').to_string(),
            token: Arc::new(config.registration_token.clone()),
            give_up_after: config.give_up_after,
            forgotten: Arc::new(AtomicBool::new(false)),
            held: Arc::default(),
        })
    }

    fn with_session(mut self, token: String) -> Engine {
        self.token = Arc::new(token);
        self
    }

    /// Opens the held connection the calls ride from now on, when the engine offers it
    /// (else they stay one HTTP request each).
    async fn hold(&self) {
        if let Some(held) = HeldConnection::open(&self.client, &self.base, &self.token).await {
            tracing::debug!("calls ride a held connection to the engine");
            let _ = self.held.set(held);
        }
    }

    /// Sends until the engine answers, backing off while it is unreachable; gives up after
    /// `give_up_after` without an answer, on a refusal, or when `stop` fires.
    async fn send<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        wait: Option<Duration>,
        stop: &CancellationToken,
    ) -> anyhow::Result<R> {
        let first_failure = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            match self.send_once(path, body, wait).await {
                Ok(response) => return Ok(response),
                Err(SendError::Unavailable(message)) => {
                    if first_failure.elapsed() > self.give_up_after {
                        bail!(
                            "the engine at {} has been unreachable for {:?}: {message}",
                            self.base,
                            self.give_up_after
                        );
                    }
                    tracing::debug!("{path}: {message}; retrying in {delay:?}");
                    tokio::select! {
                        _ = stop.cancelled() => bail!("stopped while the engine was unreachable"),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(SendError::Gone(message)) => {
                    self.forgotten.store(true, Ordering::Relaxed);
                    bail!("{message}")
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Streams a [`handoff::pack`] of `root` to `path` (`PUT`), never holding the archive
    /// in memory. Not retried: a failed upload fails the step (its retries apply).
    async fn upload(
        &self,
        path: &str,
        root: &Path,
        selection: handoff::Selection,
        limits: plue_types::handoff::Limits,
    ) -> anyhow::Result<handoff::Packed> {
        let (tx, rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
        let root = root.to_owned();
        let packer = tokio::task::spawn_blocking(move || {
            let mut writer = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let packed = handoff::pack(&root, &selection, &limits, &mut writer)
                .and_then(|packed| writer.flush_chunk().map(|()| packed).map_err(Into::into));
            if let Err(e) = &packed {
                // The request's body fails too, so the engine stores nothing.
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
            packed
        });
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let sent = self
            .client
            .put(format!("{}{path}", self.base))
            .bearer_auth(self.token.as_str())
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await;
        let packed = packer.await.context("the packing task failed")?;
        // A workspace over a bound says so; otherwise a failed request says why (the
        // packer then only saw its body stream end).
        let (packed, response) = match (packed, sent) {
            (Err(e @ handoff::HandoffError::TooLarge(_)), _) => return Err(e.into()),
            (_, Err(e)) => bail!("{path}: {e}"),
            (packed, Ok(response)) => (packed, response),
        };
        if response.status().is_success() {
            return Ok(packed?);
        }
        bail!("{}", answer_error(response).await)
    }

    /// Checks commit `sha` of attempt `attempt`'s workspace out into `into` from the pack the
    /// engine serves ([`wire::checkout_path`]); [`FromEngine::NotServed`], with `into`
    /// untouched, when the engine does not serve it (404); `Err` when the engine says the
    /// attempt is over (409) or the runner gone (410).
    async fn checkout(&self, attempt: i64, sha: &str, into: &Path) -> anyhow::Result<FromEngine> {
        use futures::TryStreamExt;
        let path = wire::checkout_path(attempt);
        let request = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token.as_str())
            .send();
        let response = match tokio::time::timeout(CHECKOUT_ANSWER, request).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Ok(FromEngine::Failed(anyhow::anyhow!("{path}: {e}"))),
            Err(_) => {
                let late = anyhow::anyhow!("{path}: no answer within {CHECKOUT_ANSWER:?}");
                return Ok(FromEngine::Failed(late));
            }
        };
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(FromEngine::NotServed),
            StatusCode::CONFLICT | StatusCode::GONE => bail!("{}", answer_error(response).await),
            status if !status.is_success() => {
                let refused = anyhow::anyhow!("{}", answer_error(response).await);
                return Ok(FromEngine::Failed(refused));
            }
            _ => {}
        }
        let stream = Box::pin(response.bytes_stream().map_err(std::io::Error::other));
        let pack = tokio_util::io::StreamReader::new(stream);
        Ok(match workspace::checkout_pack(pack, sha, into).await {
            Ok(()) => FromEngine::CheckedOut,
            Err(error) => FromEngine::Failed(error),
        })
    }

    /// Streams `path` (`GET`) into [`handoff::unpack`] below `into`.
    async fn download(
        &self,
        path: &str,
        into: &Path,
        limits: plue_types::handoff::Limits,
    ) -> anyhow::Result<handoff::Unpacked> {
        use futures::TryStreamExt;
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token.as_str())
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        if !response.status().is_success() {
            bail!("{}", answer_error(response).await);
        }
        let stream = Box::pin(response.bytes_stream().map_err(std::io::Error::other));
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let into = into.to_owned();
        let unpacked = tokio::task::spawn_blocking(move || handoff::unpack(reader, &into, &limits))
            .await
            .context("the unpacking task failed")??;
        Ok(unpacked)
    }

    async fn send_once<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        wait: Option<Duration>,
    ) -> Result<R, SendError> {
        let timeout = wait.unwrap_or_default() + Duration::from_secs(30);
        if let Some(held) = self.held.get().filter(|held| held.is_open()) {
            let body = serde_json::to_vec(body).map_err(|e| SendError::Refused {
                status: StatusCode::BAD_REQUEST,
                message: format!("{path}: encoding the call: {e}"),
            })?;
            // Unanswered (the connection closed, or too slow): retried, over HTTP once
            // the connection is closed.
            let answer = held
                .call(path, body, timeout)
                .await
                .map_err(|e| SendError::Unavailable(format!("{path}: {e}")))?;
            let status = StatusCode::from_u16(answer.status).map_err(|_| {
                SendError::Unavailable(format!("{path}: an answer with status {}", answer.status))
            })?;
            if status.is_success() {
                return serde_json::from_slice(&answer.body).map_err(|e| {
                    SendError::Unavailable(format!("{path}: reading the answer: {e}"))
                });
            }
            let message = serde_json::from_slice::<wire::ErrorBody>(&answer.body)
                .map(|b| b.error)
                .unwrap_or_else(|_| status.to_string());
            return Err(refusal(path, status, message));
        }
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token.as_str())
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| SendError::Unavailable(format!("{path}: {}", e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return response.json().await.map_err(|e| {
                SendError::Unavailable(format!("{path}: reading the answer: {}", e.without_url()))
            });
        }
        let message = response
            .json::<wire::ErrorBody>()
            .await
            .map(|b| b.error)
            .unwrap_or_else(|_| status.to_string());
        Err(refusal(path, status, message))
    }
}

/// What an answer that is not a success means for the call to `path`.
fn refusal(path: &str, status: StatusCode, message: String) -> SendError {
    match status {
        StatusCode::GONE => SendError::Gone(message),
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            SendError::Unavailable(format!("{path}: {status}: {message}"))
        }
        status => SendError::Refused { status, message },
    }
}

/// The message of an engine's error answer.
async fn answer_error(response: reqwest::Response) -> String {
    let status = response.status();
    response
        .json::<wire::ErrorBody>()
        .await
        .map(|b| b.error)
        .unwrap_or_else(|_| status.to_string())
}

/// The size of the pieces an upload is sent in.
const CHUNK: usize = 256 * 1024;

/// A blocking writer that hands [`CHUNK`]-sized pieces to an async body stream.
struct ChunkWriter {
    tx: mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the upload ended early"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_and_every_output_are_masked_and_stay_within_limits() {
        // regression: only log lines were masked; an llm step's `result` (the model's text)
        // and the reason reached the engine in clear.
        let masker = Masker::new(["hunter2", "é"]);
        let outputs = BTreeMap::from([
            ("result".to_owned(), "the password is hunter2".to_owned()),
            (
                "other".to_owned(),
                "é".repeat(wire::MAX_OUTPUT_VALUE_BYTES / 2),
            ),
        ]);
        let (reason, outputs) = masked_report(
            &masker,
            Some(format!("failed: hunter2 {}", "é".repeat(3000))),
            outputs,
        );
        assert_eq!(outputs["result"], "the password is ***");
        assert!(outputs["other"].len() <= wire::MAX_OUTPUT_VALUE_BYTES);
        assert!(outputs["other"].starts_with("***"));
        let reason = reason.unwrap();
        assert!(reason.starts_with("failed: *** ***"), "{reason}");
        assert!(reason.len() <= wire::MAX_REASON_BYTES);
        assert!(!reason.contains("hunter2"));
    }

    /// A work directory another user made (in a shared `/tmp`, before the runner) is never
    /// worked in: its owner could swap the runner's entries for links. A link is refused;
    /// a new one is 0711, an existing one of the runner's own keeps its mode.
    #[test]
    fn a_work_directory_of_another_user_or_a_link_is_refused() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let base = tempfile::tempdir().unwrap();
        let open = base.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        prepare_work_dir(&open, StepUsers::Same).unwrap();
        let mode = std::fs::metadata(&open).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o1777, "left as it was");
        let made = base.path().join("a/b");
        prepare_work_dir(&made, StepUsers::Same).unwrap();
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o7777, 0o711);

        let link = base.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let err = prepare_work_dir(&link, StepUsers::Same).unwrap_err();
        assert!(format!("{err:#}").contains("not a directory of this runner's user"));

        if !nix::unistd::geteuid().is_root() {
            // A pod's `emptyDir` is root's (0777) under the pod's non-root runner.
            let tmp = std::path::Path::new("/tmp");
            if std::fs::metadata(tmp).is_ok_and(|m| m.uid() == 0) {
                prepare_work_dir(tmp, StepUsers::Same).unwrap();
            }
        }
        if nix::unistd::geteuid().is_root() {
            let theirs = base.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let err = prepare_work_dir(&theirs, StepUsers::Same).unwrap_err();
            assert!(
                format!("{err:#}").contains("not a directory of this runner's user"),
                "{err:#}"
            );
            assert_eq!(
                std::fs::metadata(&theirs).unwrap().uid(),
                65534,
                "left alone"
            );
        }
    }
}
