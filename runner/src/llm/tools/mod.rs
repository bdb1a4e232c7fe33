//! The workspace tools an `llm` step offers the model: `read_file`, `write_file`,
//! `list_files`, `grep`, `bash` and `git_diff`, with the JSON schemas sent in the request.
//!
//! This module holds the [`Toolbox`] (which tools a step offers, and the dispatch of a
//! call) and the output cap; each tool lives in its own file with its schema, over the
//! shared path confinement (`paths`), argument reading (`args`) and short commands
//! (`command`, for `grep` and `git`).
//!
//! Invariants:
//! - Every path the model names is confined to the step's workspace. Absolute paths and
//!   `..` components are refused as written; what remains is resolved with the deepest
//!   existing ancestor canonicalised, so a symlink that leads out is refused too. A write
//!   also refuses a target that is itself a symlink (and opens with `O_NOFOLLOW`), and
//!   checks the parent directory, not just the name.
//! - `write_file` never writes under a `.git` directory (any case): git's config and hooks
//!   there would run commands. `git_diff` runs git on a git directory of the runner's
//!   own ([`crate::git_sandbox`]): only allow-listed settings of the workspace's config,
//!   so no filter, textconv, external diff, alias, hook, fsmonitor or pager it names runs,
//!   no system or global config, and only on a workspace that is a checkout itself
//!   (`<root>/.git`); git never looks above the workspace for one.
//! - `read_file` and `write_file` only touch regular files: the file is opened without
//!   blocking (`O_NONBLOCK | O_NOFOLLOW`) and checked with `fstat`, so a FIFO or device
//!   is an error result, never a hang. Every call also races the step's stop.
//! - A tool never fails the step: bad input, a refused path, a missing file, a command
//!   that fails or times out all come back as a [`ToolOutput`] with `is_error: true`,
//!   which the model reads. So a tool's `Err` is that result's text, a `String`: a
//!   sentence for the model, which nothing matches on.
//! - Only the tools the step lists are offered, and a call of any other gets an error
//!   result.
//! - Outputs are capped at [`OUTPUT_CAP`] bytes (cut on a character boundary, with a note
//!   saying so). `grep` and `git` are read no further than the cap: past it the process is
//!   killed and the output ends with a note.
//! - `bash` runs through [`crate::process`]: its own process group, killed with everything
//!   it started when it ends, times out (default [`DEFAULT_BASH_TIMEOUT`]) or the step
//!   stops. `grep` and `git_diff` are short child processes killed when the step stops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::step_user::StepUser;

mod args;
mod bash;
mod command;
pub mod finish;
mod git_diff;
mod grep;
mod list_files;
mod paths;
pub mod propose;
mod read_file;
mod write_file;

/// Every tool, in the order they are offered (the prompts crate's list, which prompt
/// files are checked against).
pub use prompts::TOOLS as ALL;

/// The most bytes of a tool's output the model gets.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// How long a `bash` call may run unless it asks for another limit.
pub const DEFAULT_BASH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `grep` and `git` may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What a tool call returns to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutput {
    fn ok(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: cap(content.into(), OUTPUT_CAP),
            is_error: false,
        }
    }

    fn error(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: cap(content.into(), OUTPUT_CAP),
            is_error: true,
        }
    }
}

/// The tools of one step, bound to its workspace.
#[derive(Debug, Clone)]
pub struct Toolbox {
    /// Canonical.
    root: PathBuf,
    offered: Vec<&'static str>,
    /// For `bash`: the whole environment (see `step_env`).
    env: BTreeMap<String, String>,
    /// For `bash`: the user it runs as (see `step_user`).
    user: Option<StepUser>,
    /// The step's network namespace, which every command joins (`crate::network`).
    network: Option<crate::network::Namespace>,
    /// For the runner's own `git` commands: removed from the runner's environment.
    env_remove: Vec<String>,
    /// Fires when the step stops (cancelled, timed out).
    stop: CancellationToken,
    /// The `propose_*` tools' proposals (see [`propose`]).
    proposer: Option<std::sync::Arc<propose::Proposer>>,
    /// Tools from elsewhere (the step's MCP servers, `crate::llm::mcp`), shown after the
    /// workspace's.
    more: Option<std::sync::Arc<dyn MoreTools>>,
}

/// Tools a [`Toolbox`] offers beside its own (an `llm` step's MCP servers): their
/// definitions, and their calls, whose every failure is an error result.
pub trait MoreTools: Send + Sync + std::fmt::Debug {
    /// The request's definitions of these tools.
    fn definitions(&self) -> Vec<Value>;
    /// Whether `name` is one of them.
    fn offers(&self, name: &str) -> bool;
    /// Runs one call of tool `name`.
    fn call<'a>(
        &'a self,
        name: &'a str,
        input: &'a Value,
    ) -> futures::future::BoxFuture<'a, ToolOutput>;
}

impl Toolbox {
    /// The tools named in `tools` (unknown names are an error naming them) over the
    /// workspace `root`.
    pub fn new(
        root: &Path,
        tools: &[String],
        env: BTreeMap<String, String>,
        env_remove: Vec<String>,
        stop: CancellationToken,
    ) -> Result<Toolbox, String> {
        let root = root
            .canonicalize()
            .map_err(|e| format!("resolving the workspace {}: {e}", root.display()))?;
        let mut offered = Vec::new();
        for tool in tools {
            let Some(known) = ALL.iter().find(|t| **t == tool.as_str()) else {
                return Err(format!(
                    "unknown tool '{tool}'; available: {}",
                    ALL.join(", ")
                ));
            };
            if !offered.contains(known) {
                offered.push(*known);
            }
        }
        Ok(Toolbox {
            root,
            offered,
            env,
            user: None,
            network: None,
            env_remove,
            stop,
            proposer: None,
            more: None,
        })
    }

    /// Runs `bash` calls as `user` (a root runner's step user).
    pub fn with_user(mut self, user: Option<StepUser>) -> Toolbox {
        self.user = user;
        self
    }

    /// Offers `more` tools too (the step's MCP servers').
    pub fn with_more(mut self, more: Option<std::sync::Arc<dyn MoreTools>>) -> Toolbox {
        self.more = more;
        self
    }

    /// Runs every command in the step's network namespace (`None`: the host's network).
    pub fn with_network(mut self, network: Option<crate::network::Namespace>) -> Toolbox {
        self.network = network;
        self
    }

    /// The workspace, canonical.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The names offered, in the step's order.
    pub fn offered(&self) -> &[&'static str] {
        &self.offered
    }

    /// The request's `tools` array: name, description, input_schema of each offered tool.
    pub fn definitions(&self) -> Vec<Value> {
        let mut definitions: Vec<Value> =
            self.offered.iter().map(|name| definition(name)).collect();
        if let Some(more) = &self.more {
            definitions.extend(more.definitions());
        }
        definitions
    }

    /// Runs one call; every failure is an error result (see the module invariants).
    pub async fn call(&self, name: &str, input: &Value) -> ToolOutput {
        if let Some(more) = self.more.as_ref().filter(|more| more.offers(name)) {
            return more.call(name, input).await;
        }
        if !self.offered.contains(&name) {
            return ToolOutput::error(format!(
                "tool '{name}' is not available in this step; available: {}",
                self.offered.join(", ")
            ));
        }
        let result = match name {
            "read_file" => self.read_file(input).await,
            "write_file" => self.write_file(input).await,
            "list_files" => self.list_files(input).await,
            "grep" => self.grep(input).await,
            "bash" => self.bash(input).await,
            "git_diff" => self.git_diff(input).await,
            propose::PULL_REQUEST | propose::COMMENT | propose::LABELS | propose::ISSUE => {
                self.propose(name, input).await
            }
            other => Err(format!("tool '{other}' is not implemented")),
        };
        result.unwrap_or_else(ToolOutput::error)
    }
}

/// `text` cut to at most `limit` bytes on a character boundary, with a note when cut.
pub fn cap(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let total = text.len();
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!(
        "\n[truncated: showing the first {cut} of {total} bytes]"
    ));
    text
}

/// Runs blocking file-system `work` off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("the tool failed: {e}"))?
}

/// The definition the API gets for tool `name` (one of [`ALL`]).
fn definition(name: &str) -> Value {
    let (description, schema) = match name {
        "read_file" => read_file::definition(),
        "write_file" => write_file::definition(),
        "list_files" => list_files::definition(),
        "grep" => grep::definition(),
        "bash" => bash::definition(),
        propose::PULL_REQUEST | propose::COMMENT | propose::LABELS | propose::ISSUE => {
            propose::definition(name)
        }
        _ => git_diff::definition(),
    };
    json!({"name": name, "description": description, "input_schema": schema})
}

#[cfg(test)]
mod tests;
