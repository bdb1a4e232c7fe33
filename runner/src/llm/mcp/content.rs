//! A `tools/call` result as the model reads it: its text blocks joined, other blocks named
//! (an image or a binary resource is never pasted as base64), the structured content when
//! there is no text, capped at the tools' output cap; characters a person cannot see but a
//! model reads (tag characters, zero-width and bidi controls) written out visibly.

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
        content: cap(reveal_hidden(&text).into_owned(), OUTPUT_CAP),
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

/// Whether `c` is invisible where a person reads text but read by a model: Unicode tag
/// characters (U+E0000–U+E007F, which spell ASCII unseen), zero-width characters, bidi
/// embeddings, overrides and isolates, the word joiner and invisible operators, the BOM.
pub(super) fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{E0000}'..='\u{E007F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}'
        | '\u{180E}'
        | '\u{00AD}')
}

/// `text` with every hidden character written out as `<U+XXXX>`, so a person reading the
/// log and the model read the same thing (an instruction spelled in tag characters turns
/// into visible noise rather than an order).
pub(super) fn reveal_hidden(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_hidden(c) {
            shown.push_str(&format!("<U+{:04X}>", c as u32));
        } else {
            shown.push(c);
        }
    }
    std::borrow::Cow::Owned(shown)
}
