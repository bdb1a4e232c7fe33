//! The conversation of an `llm` step, on its step page (`templates/log_conversation.html`):
//! the transcript its latest attempt kept ([`plue_core::transcripts`]) read back as turns —
//! the model's text, each tool call with its input and result (folded), timings, tokens
//! and cost per turn and in all — with the files it changed as a diff, its proposals to
//! the forge and its budget. A step with `result=` (the `"verdict"` shorthand or a JSON
//! Schema) shows what it handed in first: the input of its accepted `finish` call — the
//! verdict and its reason, or the result's fields — and whether `fail_when` failed the
//! step on it.
//!
//! One file past ~600 lines: reading a transcript into turns, pairing each tool call with
//! its result and summing usage per turn are one pass over one document; its tests live in
//! `log_conversation/tests.rs`.
//!
//! Invariants:
//! - Everything here came from the model, its tools or the workspace: it reaches the page
//!   only as plain strings the template escapes. Nothing is marked safe; there is no
//!   Markdown rendering.
//! - The transcript is the masked one the runner kept (bounded by
//!   [`plue_core::transcripts::MAX_BLOB_BYTES`]); nothing here unmasks or adds anything. What
//!   the page shows of it is bounded too: a diff is cut at [`MAX_DIFF_LINES`], a tool's
//!   input or result at [`MAX_SHOWN_BYTES`] (the whole is in the transcript's JSON).
//! - The caller was already allowed to read the run (the step page checks it first).

use std::collections::HashMap;

use plue_core::pricing::Prices;
use plue_core::transcripts::{self, Kept};
use plue_types::protocol::Usage;
use plue_types::transcript::{Transcript, Turn};
use serde::Serialize;
use serde_json::Value;

use crate::api::proposals::ProposalView;

/// The longest diff shown (lines); the rest is left to the proposal or the raw transcript.
pub(super) const MAX_DIFF_LINES: usize = 4000;
/// The most of one tool input or result shown (bytes); the transcript holds up to 64 KiB
/// of each, and a page of 40 turns should not weigh megabytes.
pub(super) const MAX_SHOWN_BYTES: usize = 16 << 10;

/// The conversation part of an `llm` step's page.
#[derive(Debug, Default, Serialize)]
pub(super) struct Conversation {
    /// Why no turns are shown (still running, no transcript kept, deleted, unreadable).
    pub note: Option<String>,
    /// The attempt the transcript is of.
    pub attempt: i64,
    pub model: Option<String>,
    /// The first request's system prompt and the prompt the step was given.
    pub system: Option<String>,
    pub prompt: Option<String>,
    pub turns: Vec<TurnView>,
    /// Later turns were left out at the runner's size limit.
    pub truncated: bool,
    pub total: Totals,
    /// What the step changed, as a diff.
    pub diff: Option<DiffView>,
    /// Files the model wrote with `write_file`, in the order it first wrote them.
    pub files_written: Vec<String>,
    pub proposals: Vec<ProposalView>,
    pub budget: Option<BudgetView>,
    /// What a step with `result=` handed in (its accepted `finish` call).
    pub result: Option<ResultView>,
    /// The step has `result=`, its conversation is over, and no `finish` call was
    /// accepted.
    pub result_missing: bool,
    /// The transcript as JSON (the API's endpoint).
    pub transcript_url: String,
}

/// One request and its answer.
#[derive(Debug, Serialize)]
pub(super) struct TurnView {
    pub turn: u32,
    pub started_ms: u64,
    pub duration_ms: u64,
    pub replayed: bool,
    pub stop_reason: Option<String>,
    /// Text a person (or the runner) added to the conversation in this request, other
    /// than tool results: the prompt on the first turn, a nudge later.
    pub user_text: Vec<String>,
    /// The model's answer in order: text and tool calls.
    pub blocks: Vec<BlockView>,
    pub usage: UsageView,
    pub cost_usd: Option<f64>,
}

/// A piece of the model's answer: `text` or `tool`.
#[derive(Debug, Serialize)]
pub(super) struct BlockView {
    pub kind: &'static str,
    pub text: Option<String>,
    pub tool: Option<ToolView>,
}

/// A tool call and what it returned.
#[derive(Debug, Serialize)]
pub(super) struct ToolView {
    pub id: String,
    pub name: String,
    /// The MCP server the tool is one of (`mcp__<server>__<tool>`), whose results the page
    /// marks as untrusted text.
    pub mcp_server: Option<String>,
    /// The input, as indented JSON.
    pub input: String,
    /// A one-line gist of the input for the folded summary (a path, a command).
    pub gist: String,
    /// What the tool returned; `None` when the transcript holds no result (the attempt
    /// ended before the call ran, or the transcript was cut).
    pub result: Option<String>,
    pub is_error: bool,
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(super) struct UsageView {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// All four together (what `max_tokens` counts).
    pub tokens: u64,
}

impl From<Usage> for UsageView {
    fn from(u: Usage) -> UsageView {
        UsageView {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_creation_input_tokens: u.cache_creation_input_tokens,
            cache_read_input_tokens: u.cache_read_input_tokens,
            tokens: plue_types::budget::tokens(&u),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub(super) struct Totals {
    pub usage: UsageView,
    /// What the whole conversation cost (`None`: the model is not in the price table).
    pub cost_usd: Option<f64>,
    pub duration_ms: u64,
    pub tool_calls: usize,
}

/// The result of an `llm` step with `result=`: the input of its accepted `finish` call.
#[derive(Debug, Serialize)]
pub(super) struct ResultView {
    /// The turn the call was accepted in.
    pub turn: u32,
    /// The result's `verdict` field, when it is a string (`approve`, `reject`).
    pub verdict: Option<String>,
    /// The result's `reason` field, when it is a string.
    pub reason: Option<String>,
    /// The other fields in the result's order: strings as they are, the rest as JSON.
    pub fields: Vec<FieldView>,
    /// The whole result as indented JSON.
    pub json: String,
    /// The `fail_when` values it holds (`verdict = "reject"`): each failed the step.
    pub fails: Vec<String>,
    /// How the verdict reads: `succeeded` (approve), `failed` (a `fail_when` value) or
    /// `neutral`.
    pub tone: &'static str,
    /// The input itself, to check against `fail_when`.
    #[serde(skip)]
    input: Value,
}

#[derive(Debug, Serialize)]
pub(super) struct FieldView {
    pub name: String,
    pub value: String,
}

/// The step's limits and what it used of them.
#[derive(Debug, Default, Serialize)]
pub(super) struct BudgetView {
    pub max_turns: Option<u32>,
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    pub turns: usize,
    pub tokens: u64,
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(super) struct DiffView {
    /// Where it comes from (`the pull request it proposed`, `git_diff in turn 4`).
    pub source: String,
    pub lines: Vec<DiffLine>,
    /// Files the diff touches.
    pub files: Vec<String>,
    /// Lines past [`MAX_DIFF_LINES`] were left out.
    pub cut: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct DiffLine {
    /// `add`, `del`, `hunk`, `meta` or `ctx`.
    pub class: &'static str,
    pub text: String,
}

/// What the page knows of the step, besides its transcript.
pub(super) struct StepFacts<'a> {
    pub run_id: i64,
    pub step_id: &'a str,
    /// The step is still running (no transcript yet: it is kept when the attempt ends).
    pub running: bool,
    pub attempt: i64,
    /// The plan's `llm` action of the step.
    pub action: &'a evaluator::plan::LlmAction,
    /// What the store says the step cost (all its attempts), in dollars.
    pub cost_usd: Option<f64>,
}

/// The conversation of `step` of run `run_id` (its latest attempt `attempt`), or `None`
/// when the step is not an `llm` step (or the run has no plan).
pub(super) async fn for_step(
    web: &super::Web,
    plan: Option<&evaluator::plan::Plan>,
    run_id: i64,
    step: &crate::api::views::StepView,
    attempt: i64,
    running: bool,
) -> anyhow::Result<Option<Conversation>> {
    let store = web.store();
    let Some(plan) = plan else {
        return Ok(None);
    };
    let Some(evaluator::plan::Action::Llm(action)) = plan
        .steps
        .iter()
        .find(|s| s.id == step.id)
        .map(|s| &s.action)
    else {
        return Ok(None);
    };
    let rows = store.list_for_run(run_id).await?;
    let proposals = crate::api::proposals::views(store, rows)
        .await?
        .into_iter()
        .filter(|p| p.step_id == step.id)
        .collect();
    let facts = StepFacts {
        run_id,
        step_id: &step.id,
        running,
        attempt,
        action,
        cost_usd: step.cost_usd,
    };
    load(web, facts, proposals).await.map(Some)
}

/// The conversation of `facts.step_id`, read from the store's transcript blob.
pub(super) async fn load(
    web: &super::Web,
    facts: StepFacts<'_>,
    proposals: Vec<ProposalView>,
) -> anyhow::Result<Conversation> {
    // Masked with every secret of the run, not only the step's own.
    let kept = match web
        .state
        .executor
        .walls(String::new())
        .of_run(facts.run_id)
        .await
    {
        Ok(wall) => {
            transcripts::for_readers(
                web.store(),
                &web.state.artifacts,
                facts.run_id,
                facts.step_id,
                &wall,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let prices = web.state.executor.prices();
    let mut conversation = match kept {
        Ok(Kept::Transcript(transcript)) => build(&transcript, prices),
        Ok(Kept::None) if facts.running => note(
            "The conversation is shown here when the attempt ends; its log below follows it live.",
        ),
        Ok(Kept::None) => note("This step kept no transcript (it did not start a conversation)."),
        Ok(Kept::Gone) => note("This step's transcript was deleted (retention)."),
        Err(e) => {
            tracing::warn!("dashboard: {e:#}");
            note("This step's transcript could not be read.")
        }
    };
    conversation.attempt = facts.attempt;
    conversation.transcript_url = format!(
        "/api/runs/{}/steps/{}/transcript",
        facts.run_id,
        super::encode(facts.step_id)
    );
    // The proposal's diff is what would land: it wins over one the model looked at.
    conversation.diff = proposal_diff(&proposals).or(conversation.diff.take());
    conversation.proposals = proposals;
    let action = facts.action;
    conversation.budget = Some(BudgetView {
        max_turns: action.max_turns,
        max_tokens: action.max_tokens,
        max_cost_usd: action.max_cost_usd,
        turns: conversation.turns.len(),
        tokens: conversation.total.usage.tokens,
        cost_usd: facts.cost_usd.or(conversation.total.cost_usd),
    });
    if conversation.model.is_none() {
        conversation.model = action.model.clone();
    }
    judge(&mut conversation, action, facts.running);
    Ok(conversation)
}

/// Checks the result against the step's `result=` and `fail_when`: which values failed
/// the step, how the verdict reads, or that a finished step handed in none.
pub(super) fn judge(
    conversation: &mut Conversation,
    action: &evaluator::plan::LlmAction,
    running: bool,
) {
    let Some(spec) = &action.result else {
        // No contract: a `finish` call was no result (the tool is not offered).
        conversation.result = None;
        return;
    };
    let Some(result) = &mut conversation.result else {
        conversation.result_missing = !running && !conversation.turns.is_empty();
        return;
    };
    let fail_when = evaluator::result::effective_fail_when(spec, action.fail_when.as_ref());
    for (field, values) in &fail_when {
        if let Some(held) = result.input.get(field) {
            if values.contains(held) {
                result.fails.push(format!("{field} = {held}"));
            }
        }
    }
    result.tone = if !result.fails.is_empty() {
        "failed"
    } else if result.verdict.as_deref() == Some("approve") {
        "succeeded"
    } else {
        "neutral"
    };
}

/// The input of the accepted `finish` call of `transcript` (the last one: a call that
/// was sent back for correction is an error result, and the conversation ends at the
/// accepted one).
fn result_of(transcript: &Transcript) -> Option<ResultView> {
    let (turn, input) = transcript.turns.iter().rev().find_map(|turn| {
        turn.tools
            .iter()
            .rev()
            .find(|t| t.name == runner::llm::tools::finish::NAME && !t.is_error)
            .map(|t| (turn.turn, t.input.clone()))
    })?;
    let text = |key: &str| input.get(key).and_then(Value::as_str).map(str::to_string);
    let verdict = text("verdict");
    let reason = text("reason").filter(|_| verdict.is_some());
    let fields = input
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| match name.as_str() {
            "verdict" => verdict.is_none(),
            "reason" => reason.is_none(),
            _ => true,
        })
        .map(|(name, value)| FieldView {
            name: name.clone(),
            value: shown(match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            }),
        })
        .collect();
    Some(ResultView {
        turn,
        verdict: verdict.map(shown),
        reason: reason.map(shown),
        fields,
        json: shown(serde_json::to_string_pretty(&input).unwrap_or_default()),
        fails: Vec::new(),
        tone: "neutral",
        input,
    })
}

/// The diff of the first pull request among `proposals`, if one carries a diff.
fn proposal_diff(proposals: &[ProposalView]) -> Option<DiffView> {
    proposals
        .iter()
        .find_map(|p| p.payload.get("diff").and_then(Value::as_str))
        .map(|diff| diff_view(diff, "the pull request it proposed".into()))
}

fn note(text: &str) -> Conversation {
    Conversation {
        note: Some(text.to_string()),
        ..Conversation::default()
    }
}

/// The view of a transcript, costs from `prices`.
pub(super) fn build(transcript: &Transcript, prices: &Prices) -> Conversation {
    let mut conversation = Conversation {
        truncated: transcript.truncated,
        ..Conversation::default()
    };
    let mut total = Usage::default();
    let mut priced = true;
    let mut last_git_diff: Option<(u32, String)> = None;
    for turn in &transcript.turns {
        let model = turn.request.get("model").and_then(Value::as_str);
        if conversation.model.is_none() {
            conversation.model = model.map(str::to_string);
        }
        if turn.turn == 1 || conversation.system.is_none() {
            conversation.system = conversation
                .system
                .take()
                .or_else(|| system_text(turn.request.get("system")));
        }
        let view = turn_view(turn, model, prices);
        if conversation.prompt.is_none() && !view.user_text.is_empty() {
            conversation.prompt = Some(view.user_text.join("\n\n"));
        }
        for tool in &turn.tools {
            if tool.name == "write_file" {
                if let Some(path) = tool.input.get("path").and_then(Value::as_str) {
                    if !conversation.files_written.iter().any(|p| p == path) {
                        conversation.files_written.push(path.to_string());
                    }
                }
            }
            if tool.name == "git_diff" && !tool.is_error && looks_like_diff(&tool.content) {
                last_git_diff = Some((turn.turn, tool.content.clone()));
            }
        }
        total = total + usage_of(turn);
        priced &= view.cost_usd.is_some();
        conversation.total.tool_calls += turn.tools.len();
        conversation.total.duration_ms = conversation
            .total
            .duration_ms
            .max(turn.started_ms + turn.duration_ms);
        conversation.turns.push(view);
    }
    // The first turn's prompt is shown on its own; its turn keeps only later additions.
    if let Some(first) = conversation.turns.first_mut() {
        first.user_text.clear();
    }
    conversation.total.usage = total.into();
    conversation.total.cost_usd = match (&conversation.model, priced) {
        (Some(model), true) => prices.cost_micros(model, &total).map(dollars),
        _ => None,
    };
    conversation.diff =
        last_git_diff.map(|(turn, diff)| diff_view(&diff, format!("git_diff in turn {turn}")));
    conversation.result = result_of(transcript);
    conversation
}

fn turn_view(turn: &Turn, model: Option<&str>, prices: &Prices) -> TurnView {
    let results: HashMap<&str, &plue_types::transcript::ToolRun> =
        turn.tools.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut blocks = Vec::new();
    let content = turn.response.get("content").and_then(Value::as_array);
    for block in content.into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                if !text.trim().is_empty() {
                    blocks.push(BlockView {
                        kind: "text",
                        text: Some(text.to_string()),
                        tool: None,
                    });
                }
            }
            Some("tool_use") => {
                let id = block.get("id").and_then(Value::as_str).unwrap_or("");
                let input = block.get("input").cloned().unwrap_or(Value::Null);
                let ran = results.get(id);
                blocks.push(BlockView {
                    kind: "tool",
                    text: None,
                    tool: Some(ToolView {
                        id: id.to_string(),
                        mcp_server: block
                            .get("name")
                            .and_then(Value::as_str)
                            .and_then(mcp_server_of),
                        name: block
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        gist: gist(&input),
                        input: shown(serde_json::to_string_pretty(&input).unwrap_or_default()),
                        result: ran.map(|r| shown(r.content.clone())),
                        is_error: ran.is_some_and(|r| r.is_error),
                        duration_ms: ran.map(|r| r.duration_ms),
                    }),
                });
            }
            _ => {}
        }
    }
    let usage = usage_of(turn);
    TurnView {
        turn: turn.turn,
        started_ms: turn.started_ms,
        duration_ms: turn.duration_ms,
        replayed: turn.replayed,
        stop_reason: turn
            .response
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        user_text: user_text(&turn.messages_added),
        blocks,
        usage: usage.into(),
        cost_usd: model
            .and_then(|m| prices.cost_micros(m, &usage))
            .map(dollars),
    }
}

/// `text` cut at [`MAX_SHOWN_BYTES`] (on a character boundary), saying so.
fn shown(mut text: String) -> String {
    if text.len() <= MAX_SHOWN_BYTES {
        return text;
    }
    let mut at = MAX_SHOWN_BYTES;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let left = text.len() - at;
    text.truncate(at);
    text.push_str(&format!("\n… {left} more bytes in the transcript"));
    text
}

fn usage_of(turn: &Turn) -> Usage {
    turn.response
        .get("usage")
        .cloned()
        .and_then(|u| serde_json::from_value(u).ok())
        .unwrap_or_default()
}

fn dollars(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// The text blocks of the user messages among `messages` (tool results left out: they
/// are shown with their calls).
fn user_text(messages: &[Value]) -> Vec<String> {
    let mut texts = Vec::new();
    for message in messages {
        if message.get("role").and_then(Value::as_str) != Some("user") {
            continue;
        }
        match message.get("content") {
            Some(Value::String(text)) => texts.push(text.clone()),
            Some(Value::Array(blocks)) => texts.extend(
                blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .map(str::to_string),
            ),
            _ => {}
        }
    }
    texts
}

/// A request's `system`: a string, or text blocks.
fn system_text(system: Option<&Value>) -> Option<String> {
    match system? {
        Value::String(text) => Some(text.clone()),
        Value::Array(blocks) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n\n"))
        }
        _ => None,
    }
}

/// A tool input in one line: its `path`, `command` or `pattern` when it has one, else
/// its JSON, cut at 120 characters.
fn gist(input: &Value) -> String {
    let text = ["path", "command", "pattern"]
        .iter()
        .find_map(|key| input.get(key).and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| input.to_string());
    let line = text.lines().next().unwrap_or("");
    match line.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None if line.len() < text.len() => format!("{line}…"),
        None => line.to_string(),
    }
}

fn looks_like_diff(text: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with("diff --git ") || l.starts_with("@@ "))
}

/// `diff` as classed lines (at most [`MAX_DIFF_LINES`]), with the files it touches.
pub(super) fn diff_view(diff: &str, source: String) -> DiffView {
    let mut files = Vec::new();
    let mut lines = Vec::new();
    let mut cut = false;
    for (i, line) in diff.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("+++ ") {
            let path = rest.strip_prefix("b/").unwrap_or(rest);
            if path != "/dev/null" && !files.iter().any(|f| f == path) {
                files.push(path.to_string());
            }
        }
        if i >= MAX_DIFF_LINES {
            cut = true;
            continue;
        }
        let class = if line.starts_with("+++ ")
            || line.starts_with("--- ")
            || line.starts_with("diff ")
            || line.starts_with("index ")
            || line.starts_with("new file")
            || line.starts_with("deleted file")
        {
            "meta"
        } else if line.starts_with("@@") {
            "hunk"
        } else if line.starts_with('+') {
            "add"
        } else if line.starts_with('-') {
            "del"
        } else {
            "ctx"
        };
        lines.push(DiffLine {
            class,
            text: line.to_string(),
        });
    }
    DiffView {
        source,
        lines,
        files,
        cut,
    }
}

#[cfg(test)]
mod tests;

/// The server of an MCP tool's shown name `mcp__<server>__<tool>`.
fn mcp_server_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix("mcp__")?;
    let (server, tool) = rest.split_once("__")?;
    (!server.is_empty() && !tool.is_empty()).then(|| server.to_owned())
}
