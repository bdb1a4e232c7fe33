//! The plan model: what a `.plue.py` file evaluates to.
//!
//! Plain data with no Python, IO or async in it. The serialised form of [`Plan`] is the
//! *canonical plan JSON*: struct fields in declaration order, every map a `BTreeMap` (so
//! keys are sorted), no whitespace. [`Plan::hash`] is the sha256 of exactly those bytes,
//! so the same plan always has the same `plan_hash`, whatever produced it.
//!
//! Source positions are deliberately *not* part of the plan (moving a step down a line
//! does not change what runs); they travel beside it in [`SourceMap`].
//!
//! Why one file past ~600 lines: the plan model is one serialised document; its types
//! change together with its hash.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod kind;

pub use kind::StepKind;

/// A workflow's triggers and its DAG of steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Human-readable name shown in the dashboard and the CLI.
    pub name: String,
    /// The events that start a run, in the order the file lists them.
    pub triggers: Vec<Trigger>,
    /// Environment given to every step (a step's own `env` wins).
    pub env: BTreeMap<String, String>,
    /// Steps in the order the file lists them.
    pub steps: Vec<Step>,
    /// At most one run per concurrency group at a time. Absent from the canonical JSON when
    /// unset, so plans without it keep their `plan_hash`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub concurrency: Option<Concurrency>,
    /// `Plan(budget_usd=)`: what the run's `llm` steps may cost together, in USD (finite,
    /// above 0, at most [`MAX_COST_USD`]). The engine gives each `llm` attempt at most what
    /// is left; absent from the canonical JSON when unset.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub budget_usd: Option<f64>,
    /// `Plan(max_parallel=N)`: at most N of the run's steps hold a runner at once (1 to
    /// [`MAX_PARALLEL`]); the engine's own limit still applies when lower. Absent from the
    /// canonical JSON when unset.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_parallel: Option<u32>,
    /// The modules of other repositories the file used (`use(...)`), sorted; written by the
    /// evaluating parent, never the worker ([`crate::modules`]). Absent when empty.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub modules: Vec<crate::modules::UsedModule>,
}

/// The largest `Plan(max_parallel=)`.
pub const MAX_PARALLEL: u32 = 1024;

/// The largest `max_cost_usd` or `budget_usd` a plan may set.
pub const MAX_COST_USD: f64 = 10_000.0;

/// `Plan(concurrency=..., cancel_in_progress=...)`: the run's group, as a template over
/// `ctx` fields resolved when a run is created (see [`crate::concurrency`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    /// The group name template, e.g. `deploy-{branch}`.
    pub group: String,
    /// When true, a new run of the group cancels the one in progress instead of waiting.
    pub cancel_in_progress: bool,
}

impl Plan {
    /// A plan named `name` of `steps`, with no triggers, no plan-wide env and none of the
    /// optional limits (what a plan built in Rust starts from; set the rest field by field).
    pub fn new(name: impl Into<String>, steps: Vec<Step>) -> Plan {
        Plan {
            name: name.into(),
            triggers: Vec::new(),
            env: BTreeMap::new(),
            steps,
            concurrency: None,
            budget_usd: None,
            max_parallel: None,
            modules: Vec::new(),
        }
    }

    /// The canonical JSON bytes of the plan (see the module docs).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect(
            "a plan always serialises: it holds only strings, numbers and maps with string keys",
        )
    }

    /// Fills each `llm` step's MCP servers' `pins` from the lock file's `pins` for their
    /// allowed tools ([`crate::mcp`]). Answers whether anything was set.
    pub fn apply_mcp_pins(&mut self, pins: &[crate::mcp::McpPin]) -> bool {
        let mut changed = false;
        for step in &mut self.steps {
            let Action::Llm(llm) = &mut step.action else {
                continue;
            };
            for (name, server) in &mut llm.mcp {
                for tool in &server.tools {
                    if let Some(pin) = pins.iter().find(|p| &p.server == name && &p.tool == tool) {
                        server.pins.insert(tool.clone(), pin.digest.clone());
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    /// `plan_hash`: the lowercase hex sha256 of [`Plan::canonical_json`].
    pub fn hash(&self) -> String {
        hash_canonical(&self.canonical_json())
    }
}

/// The sha256 of already-canonical plan JSON.
pub fn hash_canonical(canonical_json: &str) -> String {
    hex::encode(Sha256::digest(canonical_json.as_bytes()))
}

/// What starts a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// A push to a branch or a tag matching the globs (GitHub's filter pattern syntax:
    /// `*` stops at `/`, `**` does not). Empty `branches` and `tags` never match.
    Push {
        branches: Vec<String>,
        tags: Vec<String>,
        /// When non-empty, at least one changed file must match.
        paths: Vec<String>,
        /// Changed files matching these are ignored; if nothing is left, no run.
        paths_ignore: Vec<String>,
    },
    /// A pull request event whose base branch matches `branches`.
    PullRequest {
        branches: Vec<String>,
        actions: Vec<String>,
        paths: Vec<String>,
        paths_ignore: Vec<String>,
    },
    /// A 5-field cron expression, evaluated in UTC.
    Schedule { cron: String },
    /// Dispatched by hand from the CLI, the API or the dashboard.
    Manual {
        inputs: BTreeMap<String, ManualInput>,
    },
    /// An issue event (`issues`) whose action is listed. With `labels`, the label the event
    /// added (GitHub's `labeled`) or, when the forge does not say which (Gitea), one of the
    /// issue's labels must be listed. `authors` and `others` say who may start it.
    Issue {
        actions: Vec<String>,
        labels: Vec<String>,
        authors: Authors,
        others: Others,
    },
    /// A comment (`issue_comment`) on an issue or a pull request (`on`) whose body matches
    /// `pattern` (a Rust `regex`, compiled with size limits, see
    /// [`crate::summon::compile_pattern`]).
    Comment {
        pattern: String,
        on: Vec<String>,
        actions: Vec<String>,
        authors: Authors,
        others: Others,
    },
}

/// Who may start an issue or comment trigger: the least permission on the repository its
/// author must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Authors {
    /// Write access (GitHub's `write`, which `maintain` maps to; Gitea's `write`).
    Write,
    /// Maintain or admin.
    Maintain,
    /// Admin (GitHub `admin`; Gitea `admin` or `owner`).
    Admin,
}

impl Authors {
    pub const NAMES: [&'static str; 3] = ["write", "maintain", "admin"];

    pub fn parse(name: &str) -> Option<Authors> {
        match name {
            "write" => Some(Authors::Write),
            "maintain" => Some(Authors::Maintain),
            "admin" => Some(Authors::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Authors::Write => "write",
            Authors::Maintain => "maintain",
            Authors::Admin => "admin",
        }
    }
}

/// What an issue or comment trigger does for an author below `authors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Others {
    /// Start nothing.
    Ignore,
    /// Start a run treated like a fork's: no secrets, no environment, only runners that
    /// accept forks.
    Untrusted,
}

impl Others {
    pub const NAMES: [&'static str; 2] = ["ignore", "untrusted"];

    pub fn parse(name: &str) -> Option<Others> {
        match name {
            "ignore" => Some(Others::Ignore),
            "untrusted" => Some(Others::Untrusted),
            _ => None,
        }
    }
}

impl Trigger {
    /// The `kind` tag as it appears in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Push { .. } => "push",
            Trigger::PullRequest { .. } => "pull_request",
            Trigger::Schedule { .. } => "schedule",
            Trigger::Manual { .. } => "manual",
            Trigger::Issue { .. } => "issue",
            Trigger::Comment { .. } => "comment",
        }
    }

    /// The trigger's glob lists, each with the name its problems give it (`branch`, `tag`,
    /// `path`, `paths_ignore`); none for a trigger that matches no globs. Validation and
    /// the size bounds both walk this, so a new glob field is checked by both.
    pub fn globs(&self) -> Vec<(&'static str, &[String])> {
        match self {
            Trigger::Push {
                branches,
                tags,
                paths,
                paths_ignore,
            } => vec![
                ("branch", branches),
                ("tag", tags),
                ("path", paths),
                ("paths_ignore", paths_ignore),
            ],
            Trigger::PullRequest {
                branches,
                paths,
                paths_ignore,
                ..
            } => vec![
                ("branch", branches),
                ("path", paths),
                ("paths_ignore", paths_ignore),
            ],
            _ => Vec::new(),
        }
    }
}

/// One declared input of a manual trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManualInput {
    /// Used when the dispatch does not give the input. `None` with `required` means the
    /// dispatch must give it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub default: Option<String>,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
    /// When non-empty, the only values the input accepts.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub options: Vec<String>,
    /// What the input's text holds (a form shows a boolean as a checkbox, a number as a
    /// number field). Absent from the JSON for text, so older plans keep their hashes.
    #[serde(rename = "type", skip_serializing_if = "InputKind::is_text", default)]
    pub kind: InputKind,
}

/// The type of a manual input. The value a workflow reads from `ctx.inputs` is text
/// whatever the type; the type says which texts a dispatch may give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Any text (or one of `options`, when it has some).
    #[default]
    String,
    /// `true` or `false`.
    Boolean,
    /// A decimal number (`3`, `-1.5`, `2e3`).
    Number,
}

impl InputKind {
    fn is_text(&self) -> bool {
        *self == InputKind::String
    }

    /// The type's name as `Trigger.manual()` takes it (`type=`).
    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::String => "string",
            InputKind::Boolean => "boolean",
            InputKind::Number => "number",
        }
    }

    /// The type named `name` (`string`, `boolean`, `number`).
    pub fn parse(name: &str) -> Option<InputKind> {
        [InputKind::String, InputKind::Boolean, InputKind::Number]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// Whether `value` is a value of this type: `true`/`false` for a boolean, a finite
    /// decimal number for a number, anything for text.
    pub fn accepts(self, value: &str) -> bool {
        match self {
            InputKind::String => true,
            InputKind::Boolean => matches!(value, "true" | "false"),
            InputKind::Number => value
                .trim()
                .parse::<f64>()
                .is_ok_and(|n| n.is_finite() && value.trim() == value),
        }
    }
}

/// One node of the DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    #[serde(flatten)]
    pub action: Action,
    pub depends_on: Vec<String>,
    /// Seconds before the attempt is killed.
    pub timeout: u64,
    /// Extra attempts after a failed one.
    pub retries: u32,
    /// Seconds before the first retry; doubles on each further retry.
    pub backoff: u64,
    pub when: When,
    pub env: BTreeMap<String, String>,
    /// Names of secrets resolved when the step is dispatched; values never enter a plan.
    pub secrets: Vec<String>,
    /// Labels a runner must carry to take the step.
    pub runner: BTreeMap<String, String>,
    /// Start from this dependency's final workspace instead of a fresh checkout. The three
    /// hand-off fields are absent from the canonical JSON when unset, so plans without
    /// them keep their `plan_hash`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workspace_from: Option<String>,
    /// Globs (relative to the workspace) of files kept after the step, for later steps and
    /// for download.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub artifacts: Vec<String>,
    /// Dependencies whose artifacts are put into the workspace before the step starts.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub needs_artifacts: Vec<String>,
    /// A review loop: when this step fails (after its retries), the named ancestor runs
    /// again, then every step between it and this one (see [`crate::loops`]). Absent from
    /// the canonical JSON when unset, so plans without loops keep their `plan_hash`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub loop_to: Option<String>,
    /// How many times the loop may go back (with `loop_to`; 1 to [`crate::loops::MAX_LOOPS`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_loops: Option<u32>,
    /// `environment="prod"`: the repository environment whose rules the step runs under.
    /// The plan only *names* it: the engine enforces the environment's allowed refs,
    /// required review and wait timer from its own settings, and only then gives the step
    /// the environment's secrets. Absent from the canonical JSON when unset, so plans
    /// without it keep their `plan_hash`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub environment: Option<String>,
    /// `network=`: what the step's processes may reach (`crate::network`). `None` is the
    /// kind's default, resolved by the engine: `llm` → none, every other kind → open.
    /// Absent from the canonical JSON when unset.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub network: Option<crate::network::Network>,
    /// `loop_workspace="previous"|"fresh"` on a step of a review loop: where its round N≥2
    /// starts (see [`LoopWorkspace`]); `None` is `previous`. Absent from the
    /// canonical JSON when unset.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub loop_workspace: Option<LoopWorkspace>,
    /// `continue_on_error=True`: the step's failure is shown but tolerated — its
    /// dependents run as if it had succeeded, failure handlers do not run for it, and it
    /// does not fail the run. Absent from the canonical JSON when false.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub continue_on_error: bool,
    /// `when="<expression>"` ([`crate::when_expr`]): besides `when` (then `success`), the
    /// step runs only if this is true of its dependencies' results, and is skipped
    /// otherwise. Kept as written; absent from the canonical JSON when unset.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub when_expr: Option<String>,
    /// `caches=[Cache(...)]` of a `bash` or `python` step, or the plan's when it declares
    /// none (see [`crate::caches`]): restored before it starts, saved after it succeeds.
    /// Absent from the canonical JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub caches: Vec<crate::caches::Cache>,
    /// `id_tokens={"VAR": "audience"}`: OpenID Connect tokens the engine signs for the
    /// step when it is claimed, one per environment variable, each for its audience (a
    /// cloud's or Vault's trust policy trades it for short-lived credentials). Only names
    /// and audiences are in the plan; the engine decides whether the run may have them.
    /// Absent from the canonical JSON when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub id_tokens: BTreeMap<String, String>,
}

impl Step {
    /// A step with every option at its default.
    /// A `bash` step `id` running `command` (what [`Step::new`] makes of an
    /// [`Action::Bash`]).
    pub fn bash(id: impl Into<String>, command: impl Into<String>) -> Step {
        Step::new(
            id,
            Action::Bash {
                command: command.into(),
            },
        )
    }

    pub fn new(id: impl Into<String>, action: Action) -> Step {
        Step {
            id: id.into(),
            action,
            depends_on: Vec::new(),
            timeout: DEFAULT_TIMEOUT_SECS,
            retries: 0,
            backoff: DEFAULT_BACKOFF_SECS,
            when: When::Success,
            env: BTreeMap::new(),
            secrets: Vec::new(),
            runner: BTreeMap::new(),
            workspace_from: None,
            artifacts: Vec::new(),
            needs_artifacts: Vec::new(),
            loop_to: None,
            max_loops: None,
            environment: None,
            network: None,
            loop_workspace: None,
            continue_on_error: false,
            when_expr: None,
            caches: Vec::new(),
            id_tokens: BTreeMap::new(),
        }
    }

    /// This step with `when` set.
    pub fn on(mut self, when: When) -> Step {
        self.when = when;
        self
    }

    /// This step with `depends_on` set.
    pub fn after(mut self, dependencies: &[&str]) -> Step {
        self.depends_on = dependencies.iter().map(|d| d.to_string()).collect();
        self
    }
}

/// Environment variables a workflow may not set for a step: the runner's own
/// configuration, which decides where the API key is sent.
const RESERVED_ENV: [&str; 1] = ["ANTHROPIC_BASE_URL"];

/// Why a workflow may not set the environment variable `name` of a step (in `env=`, or as
/// an `id_tokens=` variable), if it may not: `ANTHROPIC_BASE_URL` and the like decide
/// where the engine's or runner's API key goes, and only the operator sets them.
pub fn reserved_env(name: &str) -> Option<&'static str> {
    RESERVED_ENV
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
        .then_some("the Messages API base URL comes from the engine's or runner's configuration, never from a workflow")
}

/// Default per-step timeout in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;
/// Default backoff before the first retry, in seconds.
pub const DEFAULT_BACKOFF_SECS: u64 = 1;
/// The tools an `llm` step gets when it names none.
pub const DEFAULT_LLM_TOOLS: [&str; 6] = [
    "read_file",
    "write_file",
    "list_files",
    "grep",
    "bash",
    "git_diff",
];

/// What a step does: one variant per [`StepKind`], holding the kind's options.
// The `llm` variant is the large one (its options, MCP servers included): a plan holds one
// action per step, built once and read many times, so the size costs nothing measurable,
// and boxing it would put an indirection in every match over a step's kind.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// A bash script run with `bash -eo pipefail`.
    Bash { command: String },
    /// A Python script run by the runner's interpreter: forked from the runner's warm
    /// interpreter, or started afresh with `fresh_interpreter` (left out of the JSON when
    /// false, so plans that do not set it keep their hash).
    Python {
        script: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fresh_interpreter: bool,
    },
    /// A Claude agent turn loop with workspace tools.
    Llm(LlmAction),
    /// A person's decision: the run waits, holding no runner, until someone approves or
    /// rejects the step or its `timeout` passes.
    Approval(ApprovalAction),
}

impl Action {
    /// The step's kind, whose methods say what the engine and runners do with it.
    pub fn step_kind(&self) -> StepKind {
        match self {
            Action::Bash { .. } => StepKind::Bash,
            Action::Python { .. } => StepKind::Python,
            Action::Llm(_) => StepKind::Llm,
            Action::Approval(_) => StepKind::Approval,
        }
    }

    /// The `kind` tag as it appears in JSON.
    pub fn kind(&self) -> &'static str {
        self.step_kind().name()
    }
}

/// The options of an `llm` step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LlmAction {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prompt_file: Option<String>,
    /// Inputs for the prompt (validated against its schema at dispatch).
    pub inputs: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_turns: Option<u32>,
    pub tools: Vec<String>,
    /// `safe_outputs=`: what the step may propose to the forge (see
    /// [`crate::safe_outputs`]); absent from the canonical JSON when unset.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub safe_outputs: Option<Box<crate::safe_outputs::SafeOutputs>>,
    /// `result="verdict"` or a JSON Schema: the step ends by calling the `finish` tool with
    /// this shape, whose fields become its outputs (see [`crate::result`]). This and the
    /// two fields below are absent from the canonical JSON when unset, so plans without
    /// them keep their `plan_hash`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<crate::result::ResultSpec>,
    /// Result field → the values that fail the step (see [`crate::result::FailWhen`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fail_when: Option<crate::result::FailWhen>,
    /// Replaces the runner's default system prompt (a prompt file's `system:` frontmatter
    /// is used when this is unset).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub system_prompt: Option<String>,
    /// `max_tokens=`: tokens the step may use over all its model calls (input, output, cache
    /// writes and cache reads together); the runner stops before passing it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_tokens: Option<u64>,
    /// `max_cost_usd=`: what the step may cost, in USD (finite, > 0, at most
    /// [`MAX_COST_USD`]); the runner stops before passing it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_cost_usd: Option<f64>,
    /// `mcp={name: {...}}`: the Model Context Protocol servers whose listed tools the model
    /// may call (see [`crate::mcp`]). Absent from the canonical JSON when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub mcp: BTreeMap<String, crate::mcp::McpServer>,
}

/// The options of an `approval` step. The step's `timeout` is how long it waits for a
/// decision; an empty `approvers` lets any authenticated user decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalAction {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
    /// User names allowed to decide; empty means anyone with access to the run.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub approvers: Vec<String>,
    /// When true, whoever started the run through the API may not decide.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub exclude_triggerer: bool,
}

/// When a step runs, given its dependencies' outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Only if every dependency succeeded (the default).
    Success,
    /// Only if at least one dependency failed.
    Failure,
    /// Whatever the dependencies did, once they are final.
    Always,
}

impl When {
    pub const NAMES: [&'static str; 3] = ["success", "failure", "always"];

    pub fn parse(name: &str) -> Option<When> {
        match name {
            "success" => Some(When::Success),
            "failure" => Some(When::Failure),
            "always" => Some(When::Always),
            _ => None,
        }
    }
}

/// A 1-based line and column in the workflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Location {
    pub line: u32,
    pub col: u32,
}

/// Where each part of a plan was written: `steps[i]` is where `plan.steps[i]` was made.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SourceMap {
    pub plan: Location,
    pub triggers: Vec<Location>,
    pub steps: Vec<Location>,
}

impl SourceMap {
    pub fn step(&self, index: usize) -> Location {
        self.steps.get(index).copied().unwrap_or(self.plan)
    }

    pub fn trigger(&self, index: usize) -> Location {
        self.triggers.get(index).copied().unwrap_or(self.plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_come_from_the_lock_for_allowed_tools_only() {
        let mut plan: crate::plan::Plan =
            serde_json::from_str(r#"{"name":"p","triggers":[],"env":{},"steps":[]}"#).unwrap();
        plan.steps.push(crate::plan::Step::new(
            "agent",
            crate::plan::Action::Llm(crate::plan::LlmAction {
                mcp: BTreeMap::from([(
                    "fs".to_owned(),
                    crate::mcp::McpServer {
                        command: Some(vec!["srv".into()]),
                        tools: vec!["read".into()],
                        ..Default::default()
                    },
                )]),
                ..Default::default()
            }),
        ));
        let pins = vec![
            crate::mcp::McpPin {
                server: "fs".into(),
                tool: "read".into(),
                digest: "sha256:aa".into(),
            },
            crate::mcp::McpPin {
                server: "fs".into(),
                tool: "write".into(),
                digest: "sha256:bb".into(),
            },
            crate::mcp::McpPin {
                server: "other".into(),
                tool: "read".into(),
                digest: "sha256:cc".into(),
            },
        ];
        assert!(plan.apply_mcp_pins(&pins));
        let crate::plan::Action::Llm(llm) = &plan.steps[0].action else {
            unreachable!()
        };
        assert_eq!(
            llm.mcp["fs"].pins,
            BTreeMap::from([("read".into(), "sha256:aa".into())])
        );
    }

    fn bash(id: &str, deps: &[&str]) -> Step {
        Step::new(
            id,
            Action::Bash {
                command: "true".into(),
            },
        )
        .after(deps)
    }

    #[test]
    fn canonical_json_is_compact_ordered_and_tagged() {
        let mut env = BTreeMap::new();
        env.insert("Z".into(), "1".into());
        env.insert("A".into(), "2".into());
        let plan = Plan {
            name: "x".into(),
            triggers: vec![Trigger::Schedule {
                cron: "0 3 * * *".into(),
            }],
            env,
            steps: vec![bash("a", &[])],
            concurrency: None,
            budget_usd: None,
            max_parallel: None,
            modules: Vec::new(),
        };
        let json = plan.canonical_json();
        assert!(json.starts_with(r#"{"name":"x","triggers":[{"kind":"schedule","cron":"0 3 * * *"}],"env":{"A":"2","Z":"1"},"steps":[{"id":"a","kind":"bash","command":"true","depends_on":[]"#), "{json}");
        assert_eq!(plan.hash().len(), 64);
        let back: Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, plan);
        assert_eq!(back.hash(), plan.hash());
    }

    #[test]
    fn hash_changes_with_content() {
        let a = Plan {
            name: "x".into(),
            triggers: vec![],
            env: BTreeMap::new(),
            steps: vec![bash("a", &[])],
            concurrency: None,
            budget_usd: None,
            max_parallel: None,
            modules: Vec::new(),
        };
        let mut b = a.clone();
        b.steps[0].retries = 1;
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn hand_off_options_are_absent_from_the_json_when_unset() {
        let step = bash("a", &[]);
        let json = serde_json::to_string(&step).unwrap();
        assert!(
            !json.contains("workspace_from") && !json.contains("artifacts"),
            "{json}"
        );
        let mut handed = step.clone();
        handed.workspace_from = Some("b".into());
        handed.artifacts = vec!["dist/**".into()];
        handed.needs_artifacts = vec!["b".into()];
        let json = serde_json::to_string(&handed).unwrap();
        assert!(
            json.ends_with(
                r#""workspace_from":"b","artifacts":["dist/**"],"needs_artifacts":["b"]}"#
            ),
            "{json}"
        );
        let back: Step = serde_json::from_str(&json).unwrap();
        assert_eq!(back, handed);
    }
}

/// `loop_workspace=`: where a step of a review loop starts its rounds after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopWorkspace {
    /// Its own final workspace of the previous round (the default): a coder keeps its
    /// files. Not when its `workspace_from` names a step of the same loop, which ran again
    /// and holds the newer work.
    Previous,
    /// What round 1 started from (a fresh checkout, or its `workspace_from`).
    Fresh,
}

impl LoopWorkspace {
    pub const NAMES: [&'static str; 2] = ["previous", "fresh"];

    pub fn parse(name: &str) -> Option<LoopWorkspace> {
        match name {
            "previous" => Some(LoopWorkspace::Previous),
            "fresh" => Some(LoopWorkspace::Fresh),
            _ => None,
        }
    }
}
