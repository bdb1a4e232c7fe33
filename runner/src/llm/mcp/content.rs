//! A `tools/call` result as the model reads it: its text blocks joined, other blocks named
//! (an image or a binary resource is never pasted as base64), the structured content when
//! there is no text, capped at the tools' output cap.

use rmcp::model::CallToolResult;
use serde_json::Value;

use super::super::tools::{cap, ToolOutput, OUTPUT_CAP};

/// The model's view of `result`.
pub(super) fn to_output(result: &CallToolResult) -> ToolOutput {
    let mut parts = Vec::new();
    for block in &result.content {
        let block = serde_json::to_value(block).unwrap_or(Value::Null);
        parts.push(describe(&block));
    }
    if parts.is_empty() {
        if let Some(structured) = &result.structured_content {
            parts.push(structured.to_string());
        }
    }
    let text = if parts.is_empty() {
        "(no content)".to_owned()
    } else {
        parts.join("\n")
    };
    ToolOutput {
        content: cap(text, OUTPUT_CAP),
        is_error: result.is_error.unwrap_or(false),
    }
}

/// One content block in words.
fn describe(block: &Value) -> String {
    let field = |name: &str| block.get(name).and_then(Value::as_str).unwrap_or("");
    match field("type") {
        "text" => field("text").to_owned(),
        "image" | "audio" => format!(
            "[{} content, {}, {} bytes of base64 not shown]",
            field("type"),
            field("mimeType"),
            field("data").len()
        ),
        "resource" => {
            let resource = block.get("resource").cloned().unwrap_or(Value::Null);
            let uri = resource.get("uri").and_then(Value::as_str).unwrap_or("");
            match resource.get("text").and_then(Value::as_str) {
                Some(text) => format!("[resource {uri}]\n{text}"),
                None => format!("[binary resource {uri} not shown]"),
            }
        }
        "resource_link" => format!("[resource link: {}]", field("uri")),
        other => format!("[a content block of type '{other}' not shown]"),
    }
}
