//! An `llm` step's dispatch: its prompt and the strings of its inputs rendered as text
//! (never parsed, so a value is pasted as it is), and its options passed through for the
//! runner, which resolves `prompt_file` in its checkout (or the engine reads it when the
//! step is claimed under `plue run`). Its MCP servers go as the plan holds them, pins
//! included, with the defaults of their limits applied.

use evaluator::plan::LlmAction;
use plue_types::mcp::{McpServer, McpTransport};
use plue_types::protocol::{ProposalLimits, ResultContract, StepAction};
use serde_json::Map;

use super::super::{DispatchError, Renderer};
use super::Rendered;

pub(super) fn render(
    llm: &LlmAction,
    renderer: &Renderer<'_, '_>,
) -> Result<Rendered, DispatchError> {
    let prompt = match &llm.prompt {
        Some(prompt) => Some(renderer.text("prompt", prompt)?),
        None => None,
    };
    let mut inputs = Map::new();
    let mut path = Vec::new();
    for (name, value) in &llm.inputs {
        inputs.insert(name.clone(), renderer.strings(name, value, &mut path)?);
    }
    Ok(Rendered::alone(StepAction::Llm {
        prompt,
        prompt_file: llm.prompt_file.clone(),
        // Read when the step is claimed, under `plue run` (see `EngineConfig::prompt_root`).
        prompt_file_content: None,
        inputs,
        model: llm.model.clone(),
        max_turns: llm.max_turns,
        tools: llm.tools.clone(),
        result: llm.result.as_ref().map(|spec| ResultContract {
            schema: spec.schema(),
            fail_when: evaluator::result::effective_fail_when(spec, llm.fail_when.as_ref()),
        }),
        system_prompt: llm.system_prompt.clone(),
        mcp: llm
            .mcp
            .iter()
            .map(|(name, server)| mcp_server(name, server))
            .collect(),
        safe_outputs: llm.safe_outputs.as_ref().map(|so| {
            Box::new(ProposalLimits {
                pull_request: so.pull_request,
                comments: so.comments,
                labels: so.labels.clone(),
                issues: so.issues,
                max_files: so.max_files,
                max_diff_bytes: so.max_diff_bytes,
            })
        }),
    }))
}

/// A server of the plan as the runner gets it, with the defaults applied (`plue lock`
/// starts it so too).
pub fn mcp_server(name: &str, server: &evaluator::mcp::McpServer) -> McpServer {
    let transport = match (&server.command, &server.url) {
        (_, Some(url)) => McpTransport::Http {
            url: url.clone(),
            bearer_secret: server.bearer_secret.clone(),
        },
        (command, None) => McpTransport::Stdio {
            command: command.clone().unwrap_or_default(),
            env: server.env.clone(),
        },
    };
    McpServer {
        name: name.to_owned(),
        transport,
        tools: server.tools.clone(),
        pins: server.pins.clone(),
        timeout_secs: server
            .timeout_secs
            .unwrap_or(evaluator::mcp::DEFAULT_TIMEOUT_SECS),
        max_calls: server
            .max_calls
            .unwrap_or(evaluator::mcp::DEFAULT_MAX_CALLS),
    }
}
