//! Scripts for [`FakeClaude`](super::FakeClaude) as JSON files, so a scripted conversation
//! can be served outside a test (`fake-claude --script FILE`) and the same file asserted
//! on inside one.
//!
//! ```json
//! {
//!   "description": "free text",
//!   "replies": [
//!     {"when": "You are the planner",
//!      "text": "I'll write the plan.",
//!      "tool_uses": [{"id": "toolu_01", "name": "write_file",
//!                     "input": {"path": "PLAN.md", "content": "..."}}],
//!      "usage": {"input_tokens": 900, "output_tokens": 120}},
//!     {"when": "You are the planner", "text": ["Plan ", "written."]},
//!     {"error": {"status": 529, "type": "overloaded_error", "message": "Overloaded"}}
//!   ]
//! }
//! ```
//!
//! Each reply is one model turn (or one HTTP error). `when` routes it (see the module doc
//! of [`super`]); `text` is a string (streamed in small pieces) or a list of pieces; the
//! tool calls follow the text, and the turn stops with `tool_use` when it has any,
//! `end_turn` otherwise, unless `stop_reason` says otherwise. Unknown fields are refused,
//! so a typo fails loudly instead of changing the conversation.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{Reply, Routed, Turn};

/// Fields a reply may have.
const REPLY_FIELDS: &[&str] = &["when", "text", "tool_uses", "stop_reason", "usage", "error"];

/// Parses a script (the format above).
pub fn parse(text: &str) -> Result<Vec<Routed>> {
    let script: Value = serde_json::from_str(text).context("the script is not JSON")?;
    let replies = match &script {
        Value::Object(fields) => {
            if let Some(unknown) = fields
                .keys()
                .find(|k| !["description", "replies"].contains(&k.as_str()))
            {
                bail!("unknown field '{unknown}' (expected description, replies)");
            }
            script["replies"]
                .as_array()
                .context("'replies' must be a list")?
        }
        Value::Array(replies) => replies,
        _ => bail!("a script is an object with 'replies' (or a list of replies)"),
    };
    replies
        .iter()
        .enumerate()
        .map(|(i, reply)| parse_reply(reply).with_context(|| format!("replies[{i}]")))
        .collect()
}

/// Reads and parses a script file.
pub fn load(path: &std::path::Path) -> Result<Vec<Routed>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| path.display().to_string())
}

fn parse_reply(reply: &Value) -> Result<Routed> {
    let fields = reply.as_object().context("a reply must be an object")?;
    if let Some(unknown) = fields.keys().find(|k| !REPLY_FIELDS.contains(&k.as_str())) {
        bail!(
            "unknown field '{unknown}' (expected {})",
            REPLY_FIELDS.join(", ")
        );
    }
    let when = match &reply["when"] {
        Value::Null => None,
        Value::String(when) => Some(when.clone()),
        _ => bail!("'when' must be a string"),
    };
    if !reply["error"].is_null() {
        let error = &reply["error"];
        let status = error["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .context("error.status must be an HTTP status")?;
        let error_type = error["type"].as_str().unwrap_or("api_error");
        let message = error["message"].as_str().unwrap_or("scripted error");
        return Ok(Routed {
            when,
            reply: Reply::error(status, error_type, message),
        });
    }
    let mut turn = Turn::new();
    let pieces: Vec<String> = match &reply["text"] {
        Value::Null => Vec::new(),
        Value::String(text) => pieces(text),
        Value::Array(items) => items
            .iter()
            .map(|p| p.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .context("'text' must be a string or a list of strings")?,
        _ => bail!("'text' must be a string or a list of strings"),
    };
    if !pieces.is_empty() {
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        turn = turn.text_block(&pieces);
    }
    match &reply["tool_uses"] {
        Value::Null => {}
        Value::Array(calls) => {
            for (i, call) in calls.iter().enumerate() {
                let id = call["id"]
                    .as_str()
                    .with_context(|| format!("tool_uses[{i}].id must be a string"))?;
                let name = call["name"]
                    .as_str()
                    .with_context(|| format!("tool_uses[{i}].name must be a string"))?;
                if !call["input"].is_object() {
                    bail!("tool_uses[{i}].input must be an object");
                }
                turn = turn.tool_use(id, name, &call["input"]);
            }
        }
        _ => bail!("'tool_uses' must be a list"),
    }
    if pieces.is_empty() && reply["tool_uses"].is_null() {
        bail!("a reply needs text, tool_uses or error");
    }
    if let Some(reason) = reply["stop_reason"].as_str() {
        turn = turn.stop_reason(reason);
    }
    if !reply["usage"].is_null() {
        let count = |name: &str| {
            reply["usage"][name]
                .as_u64()
                .with_context(|| format!("usage.{name} must be a count"))
        };
        turn = turn.usage(count("input_tokens")?, count("output_tokens")?);
    }
    Ok(Routed {
        when,
        reply: turn.reply(),
    })
}

/// A text cut into pieces of about a dozen characters at spaces, as a model streams.
fn pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        current.push(c);
        if c == ' ' && current.len() >= 12 {
            pieces.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_and_typos_are_refused() {
        let script = parse(
            r#"{"replies": [
                {"when": "planner", "text": "I will write a plan now.",
                 "tool_uses": [{"id": "t1", "name": "write_file", "input": {"path": "a"}}]},
                {"text": ["a", "b"], "usage": {"input_tokens": 3, "output_tokens": 4}},
                {"error": {"status": 529, "type": "overloaded_error", "message": "Overloaded"}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(script.len(), 3);
        assert_eq!(script[0].when.as_deref(), Some("planner"));
        assert!(matches!(script[2].reply, Reply::Error { status: 529, .. }));
        let typo = parse(r#"[{"txt": "x"}]"#).unwrap_err();
        assert!(
            format!("{typo:#}").contains("unknown field 'txt'"),
            "{typo:#}"
        );
        assert_eq!(
            pieces("one two three four five").concat(),
            "one two three four five"
        );
    }
}
