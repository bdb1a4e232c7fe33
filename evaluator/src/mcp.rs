//! `Step.llm(mcp={...})`: the Model Context Protocol servers an `llm` step's model may use,
//! as the plan holds them, their checks, and the pins of their tools' definitions.
//!
//! A server is either *stdio* (`command=[...]`: a process the runner starts inside the
//! step's room — its user, namespaces, cgroup and network policy) or *HTTP* (`url=`: a
//! streamable-HTTP endpoint the runner reaches only when the step's `network=` lets it,
//! with an optional bearer token from one of the step's declared `secrets`). Each lists the
//! tools the model may see (`tools=`); everything else the server offers is never shown.
//!
//! Invariants:
//! - `pins` never come from the workflow: the worker refuses a plan that sets them, and
//!   `Plan::apply_mcp_pins` fills them from the repository's `.plue/lock.json` after evaluation
//!   (`plue lock` writes them). A tool without a pin, or whose definition's digest differs,
//!   fails the step at the runner before the model sees anything.
//! - Names are checked so the name the model sees, `mcp__<server>__<tool>`, is one the
//!   Messages API accepts (`[A-Za-z0-9_-]`, at most 64 characters) and cannot collide with
//!   another server's or a workspace tool's.
//! - An HTTP server's address is a URL without credentials whose host the step's allow-list
//!   names (`network="open"` reaches any); under `network="none"` there is no HTTP server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::network::{parse_pattern, Network};

/// The most servers one step may declare.
pub const MAX_SERVERS: usize = 8;
/// The most tools one server may allow.
pub const MAX_TOOLS: usize = 64;
/// A call's time limit when the server sets none, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u32 = 60;
/// The longest `timeout_secs`.
pub const MAX_TIMEOUT_SECS: u32 = 600;
/// Calls the model may make of one server when it sets no `max_calls`.
pub const DEFAULT_MAX_CALLS: u32 = 100;
/// The largest `max_calls`.
pub const MAX_CALLS: u32 = 1000;
/// The longest name the model may be shown (the Messages API's limit).
pub const MAX_SHOWN_NAME: usize = 64;
/// What a shown name starts with.
pub const SHOWN_PREFIX: &str = "mcp__";

/// One server of an `llm` step (the key of `mcp={...}` is its name).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// stdio: the program and its arguments, run in the workspace as the step's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// stdio: variables added to the step's environment for the server.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// HTTP: the streamable-HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HTTP: the step secret sent as `Authorization: Bearer <value>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_secret: Option<String>,
    /// The tools the model may see and call.
    pub tools: Vec<String>,
    /// One call's time limit in seconds (default [`DEFAULT_TIMEOUT_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// How many calls of this server the step may make (default [`DEFAULT_MAX_CALLS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u32>,
    /// Tool → the digest its definition is pinned to, from the lock file (never written in
    /// a workflow: see the module invariants).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, String>,
}

impl McpServer {
    /// `stdio` or `http`, for messages.
    pub fn transport(&self) -> &'static str {
        if self.url.is_some() {
            "http"
        } else {
            "stdio"
        }
    }
}

/// The name the model sees for `tool` of `server`.
pub fn shown_name(server: &str, tool: &str) -> String {
    format!("{SHOWN_PREFIX}{server}__{tool}")
}

/// A server name: `[a-z0-9]` then `[a-z0-9_-]`, at most 32, no `__`.
fn server_name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !name.contains("__");
    (!ok).then(|| {
        format!(
            "mcp server name '{name}' must be 1 to 32 of a-z, 0-9, '_' and '-', starting and \
             ending with a letter or digit, without '__'"
        )
    })
}

/// A tool name as allowed: `[A-Za-z0-9_-]`, 1 to 64.
fn tool_name_ok(tool: &str) -> bool {
    !tool.is_empty()
        && tool.len() <= MAX_SHOWN_NAME
        && tool
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An environment variable name a server may be given.
fn env_name_problem(name: &str) -> Option<String> {
    let shaped = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128;
    if !shaped {
        return Some(format!(
            "env name '{name}' must match [A-Za-z_][A-Za-z0-9_]*"
        ));
    }
    if name.starts_with("PLUE_") || name == "ANTHROPIC_API_KEY" || name == "LD_PRELOAD" {
        return Some(format!("env name '{name}' is reserved"));
    }
    None
}

/// Every problem of a step's `mcp=`, each a sentence naming the server. `secrets` and
/// `network` are the step's own.
pub fn check(
    servers: &BTreeMap<String, McpServer>,
    secrets: &[String],
    network: Option<&Network>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if servers.len() > MAX_SERVERS {
        problems.push(format!(
            "mcp declares {} servers; at most {MAX_SERVERS} are allowed",
            servers.len()
        ));
    }
    // Two servers never give the model one name (`a` + `_b` and `a_` + `b` would both be
    // `mcp__a___b`): the name rules exclude it, and this says so if they ever do not.
    let mut shown = std::collections::BTreeMap::new();
    for (name, server) in servers {
        for tool in &server.tools {
            if let Some(other) = shown.insert(shown_name(name, tool), name) {
                if other != name {
                    problems.push(format!(
                        "mcp servers '{other}' and '{name}' would both show the model a tool \
                         named '{}'",
                        shown_name(name, tool)
                    ));
                }
            }
        }
    }
    for (name, server) in servers {
        if let Some(problem) = server_name_problem(name) {
            problems.push(problem);
            continue;
        }
        let mut say = |problem: String| problems.push(format!("mcp server '{name}': {problem}"));
        match (&server.command, &server.url) {
            (Some(_), Some(_)) => say("set command= (stdio) or url= (HTTP), not both".into()),
            (None, None) => say("set command=[...] (stdio) or url=\"https://...\" (HTTP)".into()),
            (Some(command), None) => {
                if command.is_empty() || command[0].trim().is_empty() {
                    say("command must name a program".into());
                }
                if command.len() > 256 || command.iter().map(String::len).sum::<usize>() > 65536 {
                    say("command is too long (at most 256 arguments, 64 KiB)".into());
                }
                if command.iter().any(|a| a.contains('\0')) {
                    say("command holds a NUL character".into());
                }
                if server.bearer_secret.is_some() {
                    say(
                        "bearer_secret is for HTTP servers; a stdio server sees the step's \
                         secrets in its environment"
                            .into(),
                    );
                }
                if server.env.len() > 64 {
                    say("env holds more than 64 variables".into());
                }
                for (key, value) in &server.env {
                    if let Some(problem) = env_name_problem(key) {
                        say(problem);
                    }
                    if value.contains('\0') || value.len() > 32768 {
                        say(format!("env {key}: a value has no NUL and at most 32 KiB"));
                    }
                }
            }
            (None, Some(url)) => {
                if !server.env.is_empty() {
                    say("env is for stdio servers".into());
                }
                if let Some(problem) = url_problem(url, network) {
                    say(problem);
                }
                if let Some(secret) = &server.bearer_secret {
                    if !secrets.contains(secret) {
                        say(format!(
                            "bearer_secret '{secret}' is not one of the step's secrets \
                             (add it to secrets=[...])"
                        ));
                    }
                }
            }
        }
        if server.tools.is_empty() {
            say("tools must list the tools the model may use (nothing else is shown)".into());
        }
        if server.tools.len() > MAX_TOOLS {
            say(format!("tools lists more than {MAX_TOOLS} tools"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for tool in &server.tools {
            if !tool_name_ok(tool) {
                say(format!(
                    "tool name '{tool}' must be 1 to 64 of A-Z, a-z, 0-9, '_' and '-'"
                ));
            } else if shown_name(name, tool).len() > MAX_SHOWN_NAME {
                say(format!(
                    "the model would see tool '{tool}' as '{}', longer than {MAX_SHOWN_NAME} \
                     characters: use a shorter server name",
                    shown_name(name, tool)
                ));
            }
            if !seen.insert(tool) {
                say(format!("tool '{tool}' is listed twice"));
            }
        }
        if let Some(secs) = server.timeout_secs {
            if secs == 0 || secs > MAX_TIMEOUT_SECS {
                say(format!("timeout_secs must be 1 to {MAX_TIMEOUT_SECS}"));
            }
        }
        if let Some(calls) = server.max_calls {
            if calls == 0 || calls > MAX_CALLS {
                say(format!("max_calls must be 1 to {MAX_CALLS}"));
            }
        }
    }
    problems
}

/// Why an HTTP server's `url` cannot be used under `network`, if it cannot.
fn url_problem(url: &str, network: Option<&Network>) -> Option<String> {
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("url '{url}' is not a URL: {e}")),
    };
    if !matches!(parsed.scheme(), "https" | "http") {
        return Some(format!("url '{url}' must be http:// or https://"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some(
            "url must not carry credentials; name a step secret in bearer_secret= instead".into(),
        );
    }
    let Some(host) = parsed.host_str() else {
        return Some(format!("url '{url}' names no host"));
    };
    let port = parsed.port_or_known_default().unwrap_or(443);
    match network {
        Some(Network::Open) => None,
        None | Some(Network::None) => Some(format!(
            "an HTTP server is reached only through the step's network allow-list: add \
             network=[\"{host}\"] to the step"
        )),
        Some(Network::Allow(hosts)) => {
            let listed = hosts
                .iter()
                .filter_map(|h| parse_pattern(h).ok())
                .any(|p| p.names(host, port));
            (!listed)
                .then(|| format!("host '{host}:{port}' is not in the step's network allow-list"))
        }
    }
}

/// One pinned tool definition in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpPin {
    /// The server's name, as every step of the repository declares it.
    pub server: String,
    pub tool: String,
    /// `sha256:<hex>` of the tool's name, description and input schema.
    pub digest: String,
}

#[cfg(test)]
mod tests;
