//! The allowed tools of a server, checked against the lock's pins before the model sees
//! any: each must be offered, pinned, and pinned to the digest of what the server offers
//! now. What the server offers beyond the list is dropped here, unseen. A definition that
//! hides text from its reviewer (tag characters, zero-width or bidi controls anywhere in
//! its description or schema) is refused whatever its pin: a lock can only vouch for what
//! a person could read.

use plue_types::mcp::{tool_digest, McpServer};
use serde_json::Value;

/// An allowed tool whose definition matched its pin.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Value,
}

/// What `plue lock` records of an offered tool: its name and digest.
pub fn digest_of(tool: &rmcp::model::Tool) -> String {
    let schema = Value::Object((*tool.input_schema).clone());
    tool_digest(&tool.name, tool.description.as_deref(), &schema)
}

/// The allowed tools of `spec` among `offered`, each matched to its pin; the first one
/// missing, unpinned or changed is the error, naming it and what to do.
pub fn check(spec: &McpServer, offered: &[rmcp::model::Tool]) -> Result<Vec<Checked>, String> {
    let server = &spec.name;
    let mut checked = Vec::with_capacity(spec.tools.len());
    for allowed in &spec.tools {
        let matching: Vec<_> = offered
            .iter()
            .filter(|t| t.name == allowed.as_str())
            .collect();
        let tool = match matching.as_slice() {
            [one] => *one,
            [] => {
                return Err(format!(
                    "mcp server '{server}' offers no tool '{allowed}' (it offers: {})",
                    super::offered_names(offered)
                ));
            }
            _ => {
                return Err(format!(
                    "mcp server '{server}' offers tool '{allowed}' more than once; refusing \
                     an ambiguous definition"
                ))
            }
        };
        hidden_problem(server, tool)?;
        let now = digest_of(tool);
        match spec.pins.get(allowed) {
            None => {
                return Err(format!(
                    "mcp tool '{allowed}' of server '{server}' is not pinned in \
                     .plue/lock.json: review its definition, then run `plue lock` and commit \
                     the lock file (its digest now: {now})"
                ))
            }
            Some(pinned) if *pinned != now => {
                return Err(format!(
                    "the definition of mcp tool '{allowed}' of server '{server}' changed since \
                     it was pinned (lock: {pinned}, now: {now}): review the change, then renew \
                     the lock with `plue lock`"
                ))
            }
            Some(_) => {}
        }
        checked.push(Checked {
            name: allowed.clone(),
            description: tool.description.as_deref().map(str::to_owned),
            input_schema: Value::Object((*tool.input_schema).clone()),
        });
    }
    Ok(checked)
}

/// Refuses an allowed tool whose description or schema carries characters a person
/// reviewing it cannot see (`content::is_hidden`).
pub fn hidden_problem(server: &str, tool: &rmcp::model::Tool) -> Result<(), String> {
    let schema = Value::Object((*tool.input_schema).clone()).to_string();
    let description = tool.description.as_deref().unwrap_or("");
    let hidden: Vec<String> = description
        .chars()
        .chain(schema.chars())
        .chain(tool.name.chars())
        .filter(|c| super::content::is_hidden(*c))
        .take(5)
        .map(|c| format!("U+{:04X}", c as u32))
        .collect();
    if hidden.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the definition of mcp tool '{}' of server '{server}' carries characters a reviewer \
         cannot see ({}...): a hidden instruction is refused, whatever the lock says",
        super::printable(&tool.name),
        hidden.join(", ")
    ))
}
