//! An `llm` step on the runner: the conversation ([`crate::llm::run`]) on the attempt's
//! workspace, its tools' processes confined as a process step's would be (the step's user
//! and network, an environment without the model's API key), the transcript kept where
//! only the runner reaches, and what the agent proposed collected when it succeeds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use plue_types::protocol::{self as wire, Assignment, Outcome, StepAction, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::super::{make_transcript_dir, AgentConfig, AttemptDir};
use crate::mask::Masker;
use crate::step_user::StepUser;
use crate::{llm, network, step_env};

/// Who an `llm` step's tool processes run as, and the network they join.
#[derive(Clone, Copy)]
pub(in crate::agent) struct Confined<'a> {
    pub(in crate::agent) user: Option<StepUser>,
    pub(in crate::agent) network: Option<&'a network::StepNetwork>,
}

/// Runs an `llm` step (see [`llm::run`]) on the attempt's workspace and log channel.
pub(in crate::agent) async fn run(
    assignment: &Assignment,
    dir: &Path,
    config: &AgentConfig,
    confined: Confined<'_>,
    lines: &mpsc::Sender<(Stream, String)>,
    cancel: &CancellationToken,
    masker: Arc<Masker>,
) -> (llm::Finished, Vec<wire::Proposal>) {
    let Confined { user, network } = confined;
    let base_env = &config.base_env;
    let (StepAction::Llm { safe_outputs, .. }, Some(options)) = (
        &assignment.action,
        llm::StepOptions::of_action(&assignment.action),
    ) else {
        unreachable!("kinds::llm::run is only called for llm steps");
    };
    let files = AttemptDir::new(dir);
    // Before the conversation: a proposed pull request's diff is against this start.
    let start_commit = match &assignment.workspace {
        wire::WorkspaceSource::Git { sha, .. } => Some(sha.as_str()),
        _ => None,
    };
    let proposer = match llm::tools::propose::proposer(
        safe_outputs.as_deref(),
        &files.workspace,
        start_commit,
        user,
    )
    .await
    {
        Ok(proposer) => proposer,
        Err(reason) => {
            let _ = lines
                .send((Stream::System, format!("llm step failed: {reason}")))
                .await;
            return (llm::Finished::failed(reason, None), Vec::new());
        }
    };
    // The tools' processes get a step environment without the API key: it goes only into
    // the request header.
    let mut tool_secrets = assignment.secrets.clone();
    tool_secrets.remove(llm::API_KEY_SECRET);
    let mut tool_env = step_env::build(base_env, files.paths(), &assignment.env, &tool_secrets);
    if let Some(network) = network {
        network.set_env(&mut tool_env);
    }
    // The transcript is written where only the runner reaches (see `transcript_dir`), with
    // what a replay needs to set the step up again.
    let replayable = serde_json::json!({
        "action": assignment.action,
        "env": assignment.env,
        "timeout_secs": assignment.timeout_secs,
        "workspace_from": assignment.handoff.workspace_from,
        "network": assignment.network,
    });
    let transcript = match make_transcript_dir(dir) {
        Ok(at) => Some(at.join(plue_types::transcript::FILE)),
        Err(e) => {
            let note = format!("the transcript will not be kept: {e}");
            let _ = lines.send((Stream::System, note)).await;
            None
        }
    };
    let step = llm::LlmStep {
        options,
        workspace: &files.workspace,
        output_file: &files.output_file,
        base_url: config.anthropic_base_url.as_deref(),
        env: &assignment.env,
        tool_env,
        user,
        network: network.and_then(|n| n.namespace().cloned()),
        network_policy: &assignment.network,
        secrets: &assignment.secrets,
        budget: assignment.budget.as_ref(),
        timeout: Duration::from_secs(assignment.timeout_secs.max(1)),
        retry: llm::RetryPolicy::default(),
        masker,
        proposer: proposer.clone(),
        transcript: transcript.as_deref().map(|path| llm::transcript::Keep {
            path,
            step: &replayable,
        }),
        replay: None,
    };
    let ended = llm::run(step, lines, cancel).await;
    if ended.outcome != Outcome::Succeeded {
        return (ended, Vec::new());
    }
    match llm::tools::propose::collect(proposer).await {
        Ok(proposals) => (ended, proposals),
        Err(reason) => {
            let _ = lines
                .send((Stream::System, format!("llm step failed: {reason}")))
                .await;
            (llm::Finished::failed(reason, ended.usage), Vec::new())
        }
    }
}
