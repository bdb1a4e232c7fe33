//! `llm` steps: a Claude agent with workspace tools, streaming its tokens into the step's
//! log.
//!
//! - [`settings`]: the prompt (inline, or a prompt file rendered with the step's inputs),
//!   model, turn limit and tools, merged from step, frontmatter and defaults.
//! - [`client`]: one streamed Messages API call over HTTP.
//! - [`stream`]: the streamed events folded into an assistant message (pure).
//! - [`tools`]: `read_file`, `write_file`, `list_files`, `grep`, `bash`, `git_diff`,
//!   confined to the workspace; [`mcp`]: the step's MCP servers, in the same room, their
//!   allowed tools pinned by the lock file.
//! - [`agent`]: the conversation loop — turns, tool calls, retries, log lines.
//! - [`transcript`]: the attempt's recorded conversation, and a replay from one;
//!   [`replay_room`]: the step's user, tree and network a replay's tools run in.
//!
//! [`run`] is what the runner calls for a `StepAction::Llm`, with the same workspace,
//! timeout, cancellation and log channel a process step gets. Invariants: the API key is
//! the step's `ANTHROPIC_API_KEY` secret, used only in the request header and never given
//! to the tools' processes; it goes only to the base URL the runner's operator configured
//! ([`LlmStep::base_url`], from `plue runner --anthropic-base-url` or the runner's own
//! `ANTHROPIC_BASE_URL` at start-up), never to one a workflow's `env` names; the step's secrets are masked in the lines this module sends
//! (across streamed deltas too — the runner's per-line masking cannot see those), and the
//! runner masks the reason and outputs of every step; a step always ends with a
//! [`Finished`], whatever the API or the model does, and a failed one with a `system` line
//! saying why.

pub mod agent;
pub mod budget;
pub mod client;
pub mod mcp;
pub mod proposals;
pub mod replay_room;
pub mod settings;
pub mod stream;
pub mod tools;
pub mod transcript;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::mask::Masker;
pub use agent::RetryPolicy;
use plue_types::protocol::{Outcome, Stream, Usage, MAX_OUTPUTS};
pub use settings::StepOptions;

/// The secret holding the API key; the engine adds it to every `llm` step.
pub const API_KEY_SECRET: &str = "ANTHROPIC_API_KEY";
/// The runner's environment variable (read once at start-up, like
/// `--anthropic-base-url`) that points the client at another server. A step's `env` holding
/// it changes nothing.
pub const BASE_URL_ENV: &str = "ANTHROPIC_BASE_URL";
/// The longest reason the engine accepts is 4096 bytes; stay below it.
const MAX_REASON_BYTES: usize = 3000;

/// One `llm` step attempt.
pub struct LlmStep<'a> {
    pub options: StepOptions<'a>,
    /// The prepared workspace (the tools' root, where prompt files are found).
    pub workspace: &'a Path,
    /// `$PLUE_OUTPUT` for `bash` calls; read at the end like a process step's.
    pub output_file: &'a Path,
    /// Where the Messages API is, as the runner's operator configured it (`None`: the
    /// public API). Never taken from the step's `env`: the API key goes where this says.
    pub base_url: Option<&'a str>,
    /// The step's environment (plan, step and `PLUE_*` variables).
    pub env: &'a BTreeMap<String, String>,
    /// The whole environment of the `bash` tool's processes (built by `step_env`, without
    /// the API key).
    pub tool_env: BTreeMap<String, String>,
    /// The user the `bash` tool runs as (see `step_user`).
    pub user: Option<crate::step_user::StepUser>,
    /// The network namespace every tool process joins (`crate::network`); `None`: the
    /// host's network (`network="open"`).
    pub network: Option<crate::network::Namespace>,
    /// The step's network policy, which an HTTP MCP server's address must be allowed by.
    pub network_policy: &'a plue_types::protocol::NetworkPolicy,
    pub secrets: &'a BTreeMap<String, String>,
    /// The limits the runner enforces as the model streams ([`budget`]).
    pub budget: Option<&'a plue_types::protocol::Budget>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// The attempt's secrets, for the lines sent while the model streams.
    pub masker: Arc<Masker>,
    /// `safe_outputs`: the `propose_*` tools' collector ([`tools::propose::proposer`]).
    pub proposer: Option<Arc<tools::propose::Proposer>>,
    /// Where and with what the transcript is written when the conversation ends; `None`:
    /// not kept.
    pub transcript: Option<transcript::Keep<'a>>,
    /// Answer the turns from a recorded transcript instead of the API
    /// ([`transcript::Replay`]).
    pub replay: Option<transcript::Replay>,
}

/// How the attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub outputs: BTreeMap<String, String>,
    /// Tokens of every request, a cut one's included (`None` when none was made).
    pub usage: Option<Usage>,
    /// The model the conversation called (what its usage is priced at).
    pub model: Option<String>,
}

impl Finished {
    pub(crate) fn failed(reason: impl Into<String>, usage: Option<Usage>) -> Finished {
        Finished {
            outcome: Outcome::Failed,
            reason: Some(tools::cap(reason.into(), MAX_REASON_BYTES)),
            outputs: BTreeMap::new(),
            usage,
            model: None,
        }
    }
}

/// Runs the step's conversation to its end, its timeout, or `cancel`.
pub async fn run(
    step: LlmStep<'_>,
    lines: &Sender<(Stream, String)>,
    cancel: &CancellationToken,
) -> Finished {
    // A replay that never goes live sends no request: it needs no key.
    let replay_only = step.replay.as_ref().is_some_and(|r| !r.goes_live());
    let key = step.secrets.get(API_KEY_SECRET).filter(|k| !k.is_empty());
    let Some(key) = key.map(String::as_str).or(replay_only.then_some("replay")) else {
        return fail(
            lines,
            format!(
                "llm steps need the secret {API_KEY_SECRET} (e.g. --secret {API_KEY_SECRET}=...)"
            ),
            None,
        )
        .await;
    };
    // regression: the step's `env` could name ANTHROPIC_BASE_URL, so a workflow sent the
    // API key to any server it liked.
    let base = step
        .base_url
        .filter(|b| !b.is_empty())
        .unwrap_or(client::DEFAULT_BASE_URL);
    let settings = match settings::resolve(step.options, step.workspace) {
        Ok(settings) => settings,
        Err(e) => return fail(lines, e.to_string(), None).await,
    };
    let client = match client::Client::new(base, key) {
        Ok(client) => client,
        Err(e) => return fail(lines, e.to_string(), None).await,
    };
    let finish = match step.options.result.map(tools::finish::Finish::new) {
        None => None,
        Some(Ok(finish)) => Some(finish),
        Some(Err(e)) => return fail(lines, e.to_string(), None).await,
    };

    let stop = cancel.child_token();
    let mut tool_env = step.tool_env.clone();
    tool_env.remove(API_KEY_SECRET);
    let mcp = if step.options.mcp.is_empty() {
        None
    } else {
        let room = mcp::Room {
            cwd: step.workspace,
            env: &tool_env,
            user: step.user,
            network: step.network.as_ref(),
            policy: step.network_policy,
            secrets: step.secrets,
        };
        // Starting the servers counts against the step's time and stops with the step (a
        // server half started is killed as its handle drops).
        let started = tokio::select! {
            started = mcp::McpTools::start(step.options.mcp, room, step.masker.clone(), lines) => started,
            () = cancel.cancelled() => Err("step cancelled while its MCP servers started".into()),
            () = tokio::time::sleep(step.timeout) => Err(format!(
                "timed out after {}s while its MCP servers started",
                step.timeout.as_secs_f64()
            )),
        };
        match started {
            Ok(tools) => Some(Arc::new(tools)),
            Err(_) if cancel.is_cancelled() => {
                return Finished {
                    outcome: Outcome::Cancelled,
                    reason: Some("cancelled".into()),
                    outputs: BTreeMap::new(),
                    usage: None,
                    model: None,
                }
            }
            Err(reason) => return fail(lines, reason, None).await,
        }
    };
    let finished = converse(
        step,
        settings,
        client,
        finish,
        tool_env,
        stop,
        mcp.clone(),
        lines,
        cancel,
    )
    .await;
    if let Some(mut tools) = mcp.and_then(Arc::into_inner) {
        tools.finish().await;
    }
    finished
}

/// The conversation of [`run`], its tools (MCP servers included) started.
#[allow(clippy::too_many_arguments)]
async fn converse(
    step: LlmStep<'_>,
    settings: settings::Settings,
    client: client::Client,
    finish: Option<tools::finish::Finish>,
    tool_env: BTreeMap<String, String>,
    stop: CancellationToken,
    mcp: Option<Arc<mcp::McpTools>>,
    lines: &Sender<(Stream, String)>,
    cancel: &CancellationToken,
) -> Finished {
    let env_remove = vec![crate::step_env::TOKEN_ENV.into(), API_KEY_SECRET.into()];
    let toolbox = match tools::Toolbox::new(
        step.workspace,
        &settings.tools,
        tool_env,
        env_remove,
        stop.clone(),
    ) {
        Ok(toolbox) => toolbox
            .with_user(step.user)
            .with_proposer(step.proposer.clone())
            .with_network(step.network.clone())
            .with_more(mcp.map(|mcp| mcp as Arc<dyn tools::MoreTools>)),
        Err(reason) => return fail(lines, reason, None).await,
    };
    let offered = if toolbox.offered().is_empty() {
        "none".to_owned()
    } else {
        toolbox.offered().join(", ")
    };
    let _ = lines
        .send((
            Stream::System,
            format!(
                "llm: {}, {}, up to {} turns, tools: {offered}",
                settings.model, settings.source, settings.max_turns
            ),
        ))
        .await;

    let meter = match budget::Meter::new(step.budget, &settings.model, settings.max_turns) {
        Ok(meter) => meter,
        Err(stop) => return fail(lines, stop.to_string(), None).await,
    };
    if let Some(limits) = meter.describe() {
        let _ = lines
            .send((Stream::System, format!("llm budget: {limits}")))
            .await;
    }
    let timer = {
        let stop = stop.clone();
        let timeout = step.timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            stop.cancel();
        })
    };
    let transcriber = transcript::Transcriber::new(step.masker.clone(), step.replay.clone());
    let agent = agent::Agent {
        client: &client,
        toolbox: &toolbox,
        model: &settings.model,
        system: &settings.system,
        max_turns: settings.max_turns,
        retry: step.retry,
        lines,
        stop: &stop,
        masker: &step.masker,
        finish: finish.as_ref(),
        meter: &meter,
        transcript: Some(&transcriber),
    };
    let conversation = agent.converse(&settings.prompt).await;
    timer.abort();
    if let Some(path) = step.transcript {
        if let Err(e) = transcriber.keep(path).await {
            let note = format!("the transcript was not kept: {e}");
            let _ = lines.send((Stream::System, note)).await;
        }
    }
    // Every request's usage, a cut or retried one's included (budget.rs).
    let usage = Some(meter.spent());
    let priced = |finished: Finished| Finished {
        model: Some(settings.model.clone()),
        ..finished
    };
    if let (Some(finish), Some(fields)) = (&finish, &conversation.finished) {
        return priced(with_result(finish.ending(fields), step.output_file, lines, usage).await);
    }
    priced(match conversation.result {
        Ok(text) => match crate::outputs::read(step.output_file).await {
            Ok(outputs) if outputs.len() >= MAX_OUTPUTS && !outputs.contains_key("result") => {
                fail(
                    lines,
                    format!(
                        "the step set {} outputs through $PLUE_OUTPUT; with `result` (the \
                         model's answer) that would pass the limit of {MAX_OUTPUTS} — set at \
                         most {} others",
                        outputs.len(),
                        MAX_OUTPUTS - 1
                    ),
                    usage,
                )
                .await
            }
            Ok(outputs) => Finished {
                outcome: Outcome::Succeeded,
                reason: None,
                outputs: agent::outputs_with_result(outputs, &text),
                usage,
                model: None,
            },
            Err(e) => fail(lines, e.to_string(), usage).await,
        },
        Err(agent::Failure::Failed(reason)) => fail(lines, reason, usage).await,
        Err(agent::Failure::Stopped) if cancel.is_cancelled() => {
            let _ = lines
                .send((
                    Stream::System,
                    "step cancelled; the conversation was stopped".into(),
                ))
                .await;
            Finished {
                outcome: Outcome::Cancelled,
                reason: Some("cancelled".into()),
                outputs: BTreeMap::new(),
                usage,
                model: None,
            }
        }
        Err(agent::Failure::Stopped) => {
            let secs = step.timeout.as_secs_f64();
            let _ = lines
                .send((
                    Stream::System,
                    format!("step timed out after {secs}s; the conversation was stopped"),
                ))
                .await;
            Finished::failed(format!("timed out after {secs}s"), usage)
        }
    })
}

/// The ending of a step that handed in its result: the `$PLUE_OUTPUT` outputs of its
/// `bash` calls, then the result's fields (which win); failed when `fail_when` matched,
/// with the outputs kept (a review loop's next round reads them).
async fn with_result(
    ending: tools::finish::Ending,
    output_file: &Path,
    lines: &Sender<(Stream, String)>,
    usage: Option<Usage>,
) -> Finished {
    let mut outputs = match crate::outputs::read(output_file).await {
        Ok(outputs) => outputs,
        Err(e) => return fail(lines, e.to_string(), usage).await,
    };
    outputs.extend(ending.outputs);
    if outputs.len() > MAX_OUTPUTS {
        return fail(
            lines,
            format!(
                "the step's outputs ($PLUE_OUTPUT and the result's fields) number {}, more \
                 than the limit of {MAX_OUTPUTS}",
                outputs.len()
            ),
            usage,
        )
        .await;
    }
    let Some(failure) = ending.failure else {
        return Finished {
            outcome: Outcome::Succeeded,
            reason: None,
            outputs,
            usage,
            model: None,
        };
    };
    let mut finished = fail(lines, failure, usage).await;
    finished.outputs = outputs;
    finished
}

/// A failed ending, also told in a `system` line (the reason alone is not in the log).
async fn fail(lines: &Sender<(Stream, String)>, reason: String, usage: Option<Usage>) -> Finished {
    let finished = Finished::failed(reason, usage);
    if let Some(reason) = &finished.reason {
        let _ = lines
            .send((Stream::System, format!("llm step failed: {reason}")))
            .await;
    }
    finished
}
