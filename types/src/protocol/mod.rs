//! The wire protocol between the engine and its runners: JSON bodies over HTTP under
//! `/internal/...`, authenticated with a bearer token.
//!
//! The conversation:
//! 1. `POST /internal/runners/register` with the shared registration token →
//!    [`RegisterResponse`] carrying a per-runner session token used for everything after.
//! 2. `POST /internal/runners/heartbeat` every `heartbeat_interval_ms`; a runner that stops
//!    is declared lost by the engine.
//! 3. `POST /internal/runners/poll` long-polls ([`PollRequest`]) for an [`Assignment`].
//! 4. For the attempt: `.../accepted` when the assignment came from a poll (the claim
//!    counts only once the engine recorded it: [`accepted_path`]), `.../started`, `.../logs`
//!    batches ([`LogBatch`], sequence numbers make them idempotent), `.../watch` long-polls
//!    for cancellation, `.../complete` (with the lines not sent yet when the attempt ended:
//!    [`Completion::logs`]).
//! 5. `POST /internal/runners/deregister` when an ephemeral runner leaves.
//!
//! Steps 2–4 ride one held connection per runner when the engine offers it ([`session`]:
//! each call framed with an id on an upgraded connection, answered in any order, meaning
//! exactly what the same `POST` means), and fall back to one HTTP request each otherwise.
//!
//! A [`WorkspaceSource::Git`] workspace comes from the engine when its mirror holds the
//! commit ([`checkout_path`]: one `GET` of a pack naming only the attempt the runner holds),
//! from the forge otherwise.
//!
//! Hand-off between steps ([`Handoff`]): before a step with `workspace_from` or
//! `needs_artifacts` the runner `GET`s each dependency's tar ([`dependency_blob_path`]) and
//! unpacks it (the runner's `handoff::unpack`); after a step whose workspace a later step starts
//! from, or that declares artifacts, it `PUT`s a tar ([`blob_path`]), streamed, before the
//! completion. Both name only the attempt the runner holds: the engine picks the run.
//!
//! Invariants: every body type rejects unknown fields, so a mismatched peer fails loudly;
//! an attempt's log batches are sent in `seq` order, each after the previous one was
//! acknowledged (the engine relies on it to drop resent batches cheaply), the one a
//! completion carries last;
//! the runner retries logs and completion until the engine acknowledges them, and the
//! engine treats repeats as no-ops.
//!
//! Why one file past ~600 lines: the runner protocol's wire types are the contract both
//! sides compile against; kept in one place so a change shows as one diff.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod caches;
pub mod debug;
pub mod egress;
mod log_batch;
mod proposals;
pub mod session;

pub use log_batch::PackedLines;
pub use proposals::{Proposal, ProposalLimits, MAX_BODY_BYTES, MAX_DIFF_BYTES, MAX_TITLE_BYTES};

pub const REGISTER: &str = "/internal/runners/register";
pub const HEARTBEAT: &str = "/internal/runners/heartbeat";
pub const POLL: &str = "/internal/runners/poll";
pub const DEREGISTER: &str = "/internal/runners/deregister";

/// `POST` path acknowledging an assignment a poll handed over: the claim counts only once
/// the engine answered it (an assignment handed with a completion's answer is acknowledged
/// by that answer). A claim not acknowledged within the engine's window is returned to the
/// queue, and its acknowledgement is then refused (409): the runner must not run it.
pub fn accepted_path(attempt_id: i64) -> String {
    format!("/internal/attempts/{attempt_id}/accepted")
}

/// `POST` path reporting that the attempt's process is starting.
pub fn started_path(attempt_id: i64) -> String {
    format!("/internal/attempts/{attempt_id}/started")
}

/// `POST` path for a [`LogBatch`].
pub fn logs_path(attempt_id: i64) -> String {
    format!("/internal/attempts/{attempt_id}/logs")
}

/// `POST` path long-polling for cancellation ([`WatchResponse`]).
pub fn watch_path(attempt_id: i64) -> String {
    format!("/internal/attempts/{attempt_id}/watch")
}

/// `POST` path for the [`Completion`].
pub fn complete_path(attempt_id: i64) -> String {
    format!("/internal/attempts/{attempt_id}/complete")
}

/// `PUT` path for a tar of the attempt's final workspace or of its artifact files.
pub fn blob_path(attempt_id: i64, kind: BlobKind) -> String {
    format!("/internal/attempts/{attempt_id}/blobs/{}", kind.as_str())
}

/// `GET` path for the commit a [`WorkspaceSource::Git`] workspace of the attempt checks
/// out, as a git pack of that commit and its tree without history (what a fetch of depth 1
/// brings), when the engine's mirror holds it: `200` with the pack, `404` when the engine
/// does not serve it (the runner then fetches from the forge; an engine that predates
/// this path answers `404` too).
pub fn checkout_path(attempt_id: i64) -> String {
    format!("/internal/attempts/{attempt_id}/checkout")
}

/// `GET` path for the tar a dependency (`step`, of the same run) left, as the attempt's
/// [`Handoff`] names it.
pub fn dependency_blob_path(attempt_id: i64, kind: BlobKind, step: &str) -> String {
    format!(
        "/internal/attempts/{attempt_id}/blobs/{}/{step}",
        kind.as_str()
    )
}

/// What a step leaves behind for later steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobKind {
    /// The whole final workspace, for `workspace_from`.
    Workspace,
    /// The files matching the step's `artifacts` globs.
    Artifacts,
    /// An `llm` attempt's transcript (`transcript.json`, see `llm::transcript`): kept for
    /// readers of the run and `plue rerun --replay`, never handed to another step.
    Transcript,
}

impl BlobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobKind::Workspace => "workspace",
            BlobKind::Artifacts => "artifacts",
            BlobKind::Transcript => "transcript",
        }
    }

    pub fn parse(text: &str) -> Option<BlobKind> {
        match text {
            "workspace" => Some(BlobKind::Workspace),
            "artifacts" => Some(BlobKind::Artifacts),
            "transcript" => Some(BlobKind::Transcript),
            _ => None,
        }
    }
}

/// A step's part in hand-offs: what it starts from and what it leaves. Empty for most steps
/// (and then absent from the JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// Start from this dependency's final workspace instead of [`Assignment::workspace`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_from: Option<String>,
    /// Dependencies whose artifacts are unpacked into the workspace before the step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs_artifacts: Vec<String>,
    /// Globs of the files kept after the step (relative, `*` stops at `/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
    /// A later step starts from this step's workspace: upload it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_workspace: bool,
    /// The most bytes one tar of this step may hold (the engine's limit; 0: not set).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Handoff {
    /// Nothing to hand over and no bound to carry: only then is the field left off the
    /// wire. A bound alone is carried (regression: an assignment whose only hand-off value
    /// was `max_bytes` reached the runner without it, which fell back to its own 1 GiB).
    pub fn is_empty(&self) -> bool {
        self.workspace_from.is_none()
            && self.needs_artifacts.is_empty()
            && self.artifacts.is_empty()
            && !self.keep_workspace
            && self.max_bytes == 0
    }
}

/// The longest log line the engine stores; runners split longer ones.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// The most lines in one [`LogBatch`].
pub const MAX_BATCH_LINES: usize = 40_000;
/// The most outputs one step may set, and the longest value.
pub const MAX_OUTPUTS: usize = 256;
pub const MAX_OUTPUT_VALUE_BYTES: usize = 64 * 1024;
/// The longest [`Completion::reason`] the engine accepts.
pub const MAX_REASON_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// A name unique among live runners (the pool uses it to find its processes).
    pub name: String,
    /// What the runner offers; a step's `runner` labels must all be among them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Takes one step, then leaves.
    pub ephemeral: bool,
    /// Whether it takes steps of runs of pull requests from forks (`None`: as its
    /// registration token says). Absent from the JSON when `None`, so engines that predate
    /// it accept the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_forks: Option<bool>,
    /// The machine it runs on: its Kubernetes node (`PLUE_NODE_NAME`, from the pod's
    /// `spec.nodeName`) or its host name. When a runner is declared lost, the live runners
    /// of its host must prove they are alive before they claim again (a hung node stops
    /// them all). Absent from the JSON when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The longest [`RegisterRequest::host`] the engine accepts (a DNS name's).
pub const MAX_HOST_BYTES: usize = 253;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterResponse {
    pub runner_id: i64,
    /// Bearer token for every later request of this runner.
    pub session_token: String,
    pub heartbeat_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// How long the engine may hold the request when there is no work (capped by it).
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollResponse {
    pub assignment: Option<Assignment>,
    /// A debug session of a failed step ([`debug`]) instead of an attempt; absent from the
    /// JSON when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<Box<debug::DebugAssignment>>,
}

/// One step attempt, everything the runner needs to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub attempt_id: i64,
    pub run_id: i64,
    pub step_id: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Command or script with `{{ steps.* }}` already rendered.
    pub action: StepAction,
    /// Plan env, then step env, then `PLUE_*` variables.
    pub env: BTreeMap<String, String>,
    /// Secret values by name: exported as env vars and masked in every log line.
    pub secrets: BTreeMap<String, String>,
    pub timeout_secs: u64,
    pub workspace: WorkspaceSource,
    /// Workspace and artifacts handed over from dependencies, and to later steps.
    #[serde(default, skip_serializing_if = "Handoff::is_empty")]
    pub handoff: Handoff,
    /// The limits of an `llm` step the runner enforces as the model streams (absent: none
    /// but `max_turns`). See the runner's `llm::budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// What the step's processes may reach (the runner's `network`); the engine resolved the
    /// kind's default.
    #[serde(default, skip_serializing_if = "NetworkPolicy::is_open")]
    pub network: NetworkPolicy,
    /// For an allow-list step: the credential the engine minted for this attempt, with
    /// which a runner of a class with an egress proxy connects through the cluster's proxy
    /// (never given to the step); the proxy asks the engine which attempt holds it and what
    /// its list is. Valid while the attempt runs; absent where the engine has no egress
    /// proxy configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_grant: Option<String>,
    /// The step's caches ([`caches`]): restored before it starts, saved after it succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<caches::CacheSpec>,
}

/// A step's network policy on the wire: `"open"` (omitted), `"none"`, or
/// `{"allow": ["pypi.org", "*.github.com:443"]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkPolicy {
    /// The host's network.
    #[default]
    Open,
    /// Loopback only.
    None,
    /// Only these host patterns, through the runner's egress proxy.
    Allow(Vec<String>),
}

impl NetworkPolicy {
    pub fn is_open(&self) -> bool {
        *self == NetworkPolicy::Open
    }
}

/// An `llm` attempt's limits. Money is in integer micro-dollars (1 USD = 1,000,000), so
/// the engine's and the runner's sums agree to the last digit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Tokens of every call together: input, output, cache writes and cache reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// What the attempt may cost: the step's `max_cost_usd` when its run has no budget,
    /// else what the attempt holds of the run's `budget_usd` (at most that `max_cost_usd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_micros: Option<u64>,
    /// The prices of the model the engine expects the step to call; a cost limit without
    /// them, or for another model, fails the step before any call (fail closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices: Option<Price>,
    /// Present when `max_cost_micros` is the attempt's hold on the run's `budget_usd`
    /// rather than the step's own `max_cost_usd`: what the step says when it is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_budget: Option<RunBudget>,
}

/// Where an attempt's cost limit came from when the run's `budget_usd` set it (the
/// figures of the engine's hold, for the step's reason; the limit itself is
/// [`Budget::max_cost_micros`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBudget {
    /// The run's `budget_usd`.
    pub budget_micros: u64,
    /// What the run's other `llm` attempts had spent or held when this one's hold was set.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub others_micros: u64,
    /// Other `llm` steps of the run, holding nothing yet and able to run at the same time
    /// as this one, that part of the remainder was left for (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shared_with: u64,
}

/// What a model's tokens cost, in micro-dollars per million tokens (`$3 / MTok` is
/// `3_000_000`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// The model these prices are for (as the step or the default names it).
    pub model: String,
    pub input: u64,
    pub output: u64,
    /// Cache writes (`cache_creation_input_tokens`, the 5-minute rate).
    pub cache_write: u64,
    /// Cache reads (`cache_read_input_tokens`).
    pub cache_read: u64,
}

impl Price {
    /// The cost of `usage` in micro-dollars: the exact sum of tokens × price, with a
    /// fraction of a micro-dollar counted as a whole one (a cost is never under-stated).
    pub fn cost_micros(&self, usage: &Usage) -> u64 {
        let product = |tokens: u64, price: u64| u128::from(tokens) * u128::from(price);
        let total = product(usage.input_tokens, self.input)
            + product(usage.output_tokens, self.output)
            + product(usage.cache_creation_input_tokens, self.cache_write)
            + product(usage.cache_read_input_tokens, self.cache_read);
        u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

// The `llm` variant is the large one: one action per assignment, decoded once, so the size
// costs nothing measurable; boxing it would put an indirection in every match on a kind.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepAction {
    Bash {
        command: String,
    },
    Python {
        script: String,
        /// Start a fresh interpreter instead of forking the runner's warm one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fresh_interpreter: bool,
    },
    /// A Claude agent with workspace tools. The engine renders `{{ steps.* }}` in `prompt`
    /// and in the string values of `inputs`; the runner resolves `prompt_file` in its
    /// checkout and applies the prompt's frontmatter and the defaults for what the step
    /// leaves unset.
    Llm {
        #[serde(default)]
        prompt: Option<String>,
        /// A repository-relative path or `builtin:NAME`.
        #[serde(default)]
        prompt_file: Option<String>,
        /// The text of `prompt_file` when the engine read it (under `plue run` against a
        /// directory other than the workflow file's repository, the prompt lives next to
        /// the workflow file): the runner uses it instead of reading its checkout. Boxed:
        /// the variant stays small.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_file_content: Option<Box<String>>,
        #[serde(default)]
        inputs: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        model: Option<String>,
        #[serde(default)]
        max_turns: Option<u32>,
        /// The tools the step offers the model (names as in `Step.llm(tools=...)`).
        #[serde(default)]
        tools: Vec<String>,
        /// `safe_outputs=`: the `propose_*` tools offered and their limits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        safe_outputs: Option<Box<ProposalLimits>>,
        /// `result=`: the conversation must end with a `finish` call of this shape.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<ResultContract>,
        /// `system_prompt=`: replaces the runner's system prompt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system_prompt: Option<String>,
        /// `mcp=`: the MCP servers whose listed tools the model may call.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mcp: Vec<crate::mcp::McpServer>,
    },
}

/// What an `llm` step with `result=` must end with (the engine resolves the `"verdict"`
/// shorthand): the `finish` tool's input schema, and result field → the values that fail
/// the step (any field equal to any of its values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultContract {
    pub schema: serde_json::Value,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fail_when: BTreeMap<String, Vec<serde_json::Value>>,
}

/// Where the step's fresh workspace comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkspaceSource {
    /// A copy of a local directory (for `plue run`), honouring `.gitignore`.
    Copy { path: String },
    /// A checkout of `sha` from `url` (a path, `file://` or `https://` URL), with
    /// `credential` when the forge needs one: added by the engine to the assignment when the
    /// step is claimed (never stored), given to the checkout's git only.
    Git {
        url: String,
        sha: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<GitCredential>,
    },
    /// An empty directory.
    Empty,
}

/// A short-lived read-only token for a checkout (a GitHub App's installation token):
/// never printed (`Debug` says `GitCredential(***)`), used only as git's
/// `http.extraHeader` through `GIT_CONFIG_*` variables of the checkout's git processes —
/// not argv, not the workspace's `.git/config`, not a step's environment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GitCredential(String);

impl GitCredential {
    pub fn new(token: String) -> GitCredential {
        GitCredential(token)
    }

    /// The token itself (to redact it from git's messages).
    pub fn token(&self) -> &str {
        &self.0
    }

    /// The `Authorization` header git sends: Basic `x-access-token:<token>`, as GitHub
    /// takes an installation token for git over HTTPS.
    pub fn header(&self) -> String {
        use base64::Engine;
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{}", self.0));
        format!("Authorization: Basic {basic}")
    }
}

impl std::fmt::Debug for GitCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GitCredential(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines the runner itself writes (workspace preparation, kill notices).
    System,
    /// A piece of an `llm` step's answer exactly as the model streamed it (it may hold
    /// `\n` or end mid-word); the pieces of a turn concatenate to its text.
    Token,
    /// An `llm` step's tool call: `{"id":..,"name":..,"input":..}`.
    ToolCall,
    /// What a tool call returned: `{"id":..,"is_error":..,"bytes":..,"content":..}`
    /// (`bytes` is the full length; the content is truncated for the log).
    ToolResult,
    /// Token usage of one model turn: a JSON [`Usage`].
    Usage,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
            Stream::Token => "token",
            Stream::ToolCall => "tool_call",
            Stream::ToolResult => "tool_result",
            Stream::Usage => "usage",
        }
    }

    pub fn parse(text: &str) -> Option<Stream> {
        match text {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            "system" => Some(Stream::System),
            "token" => Some(Stream::Token),
            "tool_call" => Some(Stream::ToolCall),
            "tool_result" => Some(Stream::ToolResult),
            "usage" => Some(Stream::Usage),
            _ => None,
        }
    }
}

/// One line of a step's log. A batch is usually sent packed (`log_batch`); in its lines
/// form a line is the array `[seq, stream, text, ts_ms]`, and the object with these names is
/// read too (serde reads a struct from either).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// 1-based, contiguous within an attempt.
    pub seq: u64,
    pub stream: Stream,
    /// Already masked; at most [`MAX_LINE_BYTES`]; no NUL characters.
    pub text: String,
    /// Milliseconds since the Unix epoch when the runner read the line.
    pub ts_ms: i64,
}

/// The array form: a line's field names were most of its bytes (a line of output is
/// short), and the engine, which a step printing a lot waits for, reads the array in about
/// half the time (`seq 1 5000`: 183 kB instead of 333 kB).
impl Serialize for LogLine {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut line = serializer.serialize_tuple(4)?;
        line.serialize_element(&self.seq)?;
        line.serialize_element(&self.stream)?;
        line.serialize_element(&self.text)?;
        line.serialize_element(&self.ts_ms)?;
        line.end()
    }
}

/// Lines of an attempt, sent packed (`log_batch` says how it is written and read).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "log_batch::WireBatch")]
pub struct LogBatch {
    /// In increasing seq order (the engine refuses a batch that is not); at most
    /// [`MAX_BATCH_LINES`]. A batch sent again stores only its lines the engine lacks.
    pub lines: Vec<LogLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogAck {
    /// The attempt was cancelled: stop the process.
    pub cancel: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchResponse {
    pub cancel: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    pub outcome: Outcome,
    /// The process's exit code, when it exited by itself.
    pub exit_code: Option<i32>,
    /// Why it did not succeed: `exit code 3`, `timed out after 2s`, `cancelled`, ...
    pub reason: Option<String>,
    /// `key=value` lines the step wrote to `$PLUE_OUTPUT`.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// The number of log lines sent (the last `seq`), so the engine can tell all arrived.
    pub lines: u64,
    /// Tokens an `llm` step used, summed over its turns; `None` for other steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What an `llm` step with `safe_outputs` proposed (see [`Proposal`]); never masked:
    /// the engine refuses a proposal holding a secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proposals: Vec<Proposal>,
    /// The model an `llm` step called (what its usage is priced at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The runner takes its next step in the answer ([`CompleteResponse::next`]), saving
    /// a poll: what a runner that keeps working asks.
    #[serde(default)]
    pub claim_next: bool,
    /// How many milliseconds before this report the attempt started. A step that ends
    /// within [`START_REPORT_AFTER`] never reports its start on its own, so this is how
    /// the engine learns it (one request and one transaction less per short step); a start
    /// already recorded is kept. The engine takes its own clock minus this, never earlier
    /// than the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms_ago: Option<u64>,
    /// Connections the step's egress proxy refused (the runner's `network`), for the metric.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub network_refused: u64,
    /// The attempt's last log lines, when it ended before they were sent (a short step's
    /// usually: see [`LOG_HOLD`]): the engine stores them exactly as a batch of their own
    /// ([`logs_path`]), before it records the end. `lines` counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogBatch>,
}

/// How long a runner holds the first lines of a batch for more, or for the attempt's end,
/// before it sends them: the lines a short step prints ride in its completion
/// ([`Completion::logs`]) instead of a request and a transaction of their own, at the cost
/// of this much delay to a long step's live log.
pub const LOG_HOLD: std::time::Duration = std::time::Duration::from_millis(5);

/// How long an attempt runs before the runner reports its start on its own
/// ([`started_path`]); a shorter one reports it with its completion
/// ([`Completion::started_ms_ago`]).
pub const START_REPORT_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// The answer to a [`Completion`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteResponse {
    /// The runner's next attempt, claimed for it, when it asked and one was ready. Only
    /// the first report of an attempt claims: a repeated one (its answer was lost) gets
    /// none.
    #[serde(default)]
    pub next: Option<Assignment>,
}

/// Token counts as the Claude Messages API reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

/// The field-wise sum (saturating).
impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .saturating_add(other.cache_creation_input_tokens),
            cache_read_input_tokens: self
                .cache_read_input_tokens
                .saturating_add(other.cache_read_input_tokens),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {}

/// The body of every 4xx/5xx the internal API returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    // A runner that says nothing about forks registers with engines old and new.
    #[test]
    fn accept_forks_is_optional_both_ways() {
        let old: RegisterRequest =
            serde_json::from_str(r#"{"name": "r", "ephemeral": false}"#).unwrap();
        assert_eq!(old.accept_forks, None);
        assert!(!serde_json::to_string(&old)
            .unwrap()
            .contains("accept_forks"));
        let asked: RegisterRequest =
            serde_json::from_str(r#"{"name": "r", "ephemeral": false, "accept_forks": false}"#)
                .unwrap();
        assert_eq!(asked.accept_forks, Some(false));
    }

    // regression (issue 69): the engine's bound was left off the wire whenever it was the
    // only hand-off value, so runners packed and unpacked caches under their own 1 GiB.
    #[test]
    fn a_bound_alone_reaches_the_runner() {
        let handoff = Handoff {
            max_bytes: 64 << 20,
            ..Handoff::default()
        };
        assert!(!handoff.is_empty());
        let wire = serde_json::to_value(&handoff).unwrap();
        assert_eq!(wire["max_bytes"], 64 << 20);
        assert!(Handoff::default().is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<PollRequest>(r#"{"wait_ms": 5, "extra": 1}"#);
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("unknown field `extra`"));
    }

    #[test]
    fn the_lines_form_of_earlier_runners_is_read_with_lines_as_arrays_or_objects() {
        let line = LogLine {
            seq: 7,
            stream: Stream::Stderr,
            text: "a \"b\"\n".into(),
            ts_ms: 1_795_533_494_271,
        };
        let array = r#"{"lines":[[7,"stderr","a \"b\"\n",1795533494271]]}"#;
        assert_eq!(
            serde_json::from_str::<LogBatch>(array).unwrap().lines,
            std::slice::from_ref(&line)
        );
        let object =
            r#"{"lines":[{"seq":7,"stream":"stderr","text":"a \"b\"\n","ts_ms":1795533494271}]}"#;
        assert_eq!(
            serde_json::from_str::<LogBatch>(object).unwrap().lines,
            [line]
        );
        // Either form is whole: a missing, an extra or an unknown field is refused.
        for bad in [
            r#"{"lines":[[7,"stderr","x"]]}"#,
            r#"{"lines":[[7,"stderr","x",1,2]]}"#,
            r#"{"lines":[[7,"nope","x",1]]}"#,
            r#"{"lines":[{"seq":7,"stream":"stderr","text":"x","ts_ms":1,"more":1}]}"#,
            r#"{"lines":[],"more":1}"#,
        ] {
            assert!(serde_json::from_str::<LogBatch>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn actions_and_workspaces_are_tagged() {
        let action: StepAction = serde_json::from_str(r#"{"kind":"bash","command":"ls"}"#).unwrap();
        assert_eq!(
            action,
            StepAction::Bash {
                command: "ls".into()
            }
        );
        let ws = serde_json::to_value(WorkspaceSource::Git {
            url: "file:///r".into(),
            sha: "abc".into(),
            credential: None,
        })
        .unwrap();
        assert_eq!(ws["kind"], "git");
        assert!(ws.get("credential").is_none(), "none: not on the wire");
        let with = WorkspaceSource::Git {
            url: "https://forge/r.git".into(),
            sha: "abc".into(),
            credential: Some(GitCredential::new("ghs_s3cr3t".into())),
        };
        assert!(!format!("{with:?}").contains("s3cr3t"));
        let wire = serde_json::to_string(&with).unwrap();
        assert_eq!(
            serde_json::from_str::<WorkspaceSource>(&wire).unwrap(),
            with
        );
    }

    #[test]
    fn llm_actions_take_defaults_and_typed_streams_round_trip() {
        let action: StepAction =
            serde_json::from_str(r#"{"kind":"llm","prompt":"hi","tools":["read_file"]}"#).unwrap();
        let StepAction::Llm {
            prompt,
            inputs,
            tools,
            max_turns,
            ..
        } = action
        else {
            panic!("not an llm action");
        };
        assert_eq!(prompt.as_deref(), Some("hi"));
        assert!(inputs.is_empty() && max_turns.is_none());
        assert_eq!(tools, ["read_file"]);
        for stream in [
            Stream::Stdout,
            Stream::Stderr,
            Stream::System,
            Stream::Token,
            Stream::ToolCall,
            Stream::ToolResult,
            Stream::Usage,
        ] {
            assert_eq!(Stream::parse(stream.as_str()), Some(stream));
            let json = serde_json::to_string(&stream).unwrap();
            assert_eq!(json, format!("\"{}\"", stream.as_str()));
        }
    }

    #[test]
    fn completions_without_usage_still_parse() {
        let old = r#"{"outcome":"succeeded","exit_code":0,"reason":null,"lines":3}"#;
        let completion: Completion = serde_json::from_str(old).unwrap();
        assert_eq!(completion.usage, None);
        let usage = Usage {
            input_tokens: 1,
            output_tokens: 2,
            ..Usage::default()
        };
        assert_eq!((usage + usage).output_tokens, 4);
    }
}
