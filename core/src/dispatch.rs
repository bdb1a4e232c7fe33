//! Dispatch documents: what a queued step run carries to its runner — the action with its
//! templates rendered, the environment, the names of its secrets and its timeout. Built
//! when the executor queues a step; pure (no IO).
//!
//! Templates are [`evaluator::template`]s: only `{{ steps.<id>.outputs.<key> }}`,
//! `{{ steps.<id>.status }}` and their `raw` forms. How a reference renders depends on
//! where the text goes:
//! - in a `bash` command or a `python` script (code), an output is **never pasted**: the
//!   reference becomes a read of an environment variable holding the value (`"${V}"` in
//!   bash, `os.environ["V"]` in Python, fitted to the quotes around it), so an upstream
//!   output containing `$(...)`, quotes or newlines stays text. An output inside bash
//!   single quotes or a Python string literal is refused (it would become part of that
//!   text, often code for something else), and so is one the code would read as a format
//!   string, a template or a pattern (`{{ ref }}.format(obj)`, `printf {{ ref }}`:
//!   [`python::format_refusals`], [`bash::format_refusals`]), and a bash command with references may not
//!   receive an output bash would run where it evaluates values as arithmetic
//!   (`bash_values`);
//! - in env values, llm prompts and llm inputs (never parsed), it is the value as text;
//! - the `raw` form is the value as text everywhere — in code that is the author's choice
//!   to paste it (unsafe, documented), and only where the plain form may stand (never in
//!   bash single quotes, a Python literal, arithmetic, a format position).
//!
//! `bash` and `python` steps also get every output of their direct dependencies as
//! `PLUE_OUTPUT_<STEP>_<KEY>` ([`output_var`]). A name that two (step, key) pairs map to is
//! set for neither; a reference whose name is ambiguous reads a `PLUE_REF_<n>` variable
//! instead. These variables override the plan's and the step's `env`.
//!
//! Invariants: rendering is linear and bounded — [`MAX_RENDERED_BYTES`] per text,
//! [`MAX_PROCESS_RENDERED_BYTES`] per bash or python step ([`MAX_STEP_RENDERED_BYTES`] per
//! llm step), [`MAX_OUTPUT_ENV_BYTES`] of output variables — and
//! any failure is the step's reason (a [`DispatchError`]), never a panic; a reference to a missing
//! output is an error naming it rather than an empty string; secret values never enter a
//! dispatch document (only names; values are resolved at claim time).
//!
//! `llm` steps: the prompt file itself is resolved and rendered by the runner, which has the
//! checkout. `model`, `max_turns` and `tools` pass through as the step set them. Every
//! `llm` step needs the secret [`LLM_KEY_SECRET`], so it is added to the step's secrets
//! when the step did not name it.
//!
//! Every step's `network=` is resolved here ([`network`]): an `llm` step without one gets
//! `none`, any other kind `open`; the runner enforces what the document says.
//!
//! Each step kind's own part (which texts it has, how they render into the runner's
//! [`StepAction`]) is its module in `kinds`; what a kind implies here (its rendered-bytes
//! budget, the model's key, the default network) is [`evaluator::plan::StepKind`]'s.
//!
//! Why one file past ~600 lines: the reference rules every kind's texts render by (values
//! travel in the environment, never pasted into code) are one renderer; split, one rule
//! would be checked in several places.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use evaluator::network::Network;
use evaluator::plan::{Plan, Step};
use evaluator::template::{self, bash, python, Field, Reference, Template};
use plue_types::protocol::{Handoff, NetworkPolicy, StepAction};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod bash_values;
mod error;
mod kinds;

pub use error::DispatchError;
pub use kinds::mcp_server;

pub use evaluator::template::MAX_RENDERED_BYTES;

/// The secret every `llm` step gets (its API key), named or not.
pub const LLM_KEY_SECRET: &str = "ANTHROPIC_API_KEY";

/// What all the rendered texts of one `llm` step may add up to (its prompt and inputs
/// never pass through `exec`).
pub const MAX_STEP_RENDERED_BYTES: usize = 4 * 1024 * 1024;

/// What the rendered texts of a `bash` or `python` step (its code and `env` values) may
/// add up to: they become the process's arguments and environment, which Linux refuses
/// past 2 MiB in all — a larger step could never start, and each of a run's steps would
/// cost the engine its size in memory and storage for nothing.
pub const MAX_PROCESS_RENDERED_BYTES: usize = 1024 * 1024;

/// What the output variables of one step may add up to (`NAME=value` bytes). Linux refuses
/// to start a process whose arguments and environment exceed 2 MiB in all.
pub const MAX_OUTPUT_ENV_BYTES: usize = 1024 * 1024;

/// The prefix of the variables holding dependencies' outputs.
pub const OUTPUT_VAR_PREFIX: &str = "PLUE_OUTPUT_";

/// The prefix of the variables of references whose `PLUE_OUTPUT_` name is ambiguous.
pub const REF_VAR_PREFIX: &str = "PLUE_REF_";

/// Stored in `step_runs.action` when a step is queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    pub action: StepAction,
    pub env: BTreeMap<String, String>,
    pub secrets: Vec<String>,
    pub timeout_secs: u64,
    /// What the step starts from and leaves for later steps (absent when nothing).
    #[serde(default, skip_serializing_if = "Handoff::is_empty")]
    pub handoff: Handoff,
    /// What the step's processes may reach, the kind's default resolved ([`network`]).
    #[serde(default, skip_serializing_if = "NetworkPolicy::is_open")]
    pub network: NetworkPolicy,
    /// An `llm` step's limits and its run's budget, resolved into the assignment's budget
    /// when it is claimed ([`crate::pricing::budget`]); absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::pricing::budget::Limits>,
    /// The step's caches as the plan declares them (a `bash` or `python` step's own, or the
    /// plan's); the claim adds the run's partition ([`Dispatch::cache_specs`]), and the
    /// engine's cache endpoints read a cache's restore prefixes from here. Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<evaluator::caches::Cache>,
    /// The step's `id_tokens` (variable → audience): the claim signs one token per entry
    /// when the run may have them ([`crate::id_tokens`]). Absent when none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub id_tokens: BTreeMap<String, String>,
}

impl Dispatch {
    /// The step's caches as the runner receives them, in the run's `partition` (the
    /// engine's, shown in the step's log; the engine decides it again on every request),
    /// each bounded by `max_bytes` (the engine's per-entry limit, which the runner packs
    /// and unpacks within).
    pub fn cache_specs(
        &self,
        partition: &str,
        max_bytes: u64,
    ) -> Vec<plue_types::protocol::caches::CacheSpec> {
        self.caches
            .iter()
            .map(|cache| plue_types::protocol::caches::CacheSpec {
                name: cache.name.clone(),
                paths: cache.paths.clone(),
                key_files: cache.key.clone(),
                restore_prefixes: cache.restore_prefixes.clone(),
                partition: partition.to_owned(),
                max_bytes,
            })
            .collect()
    }
}

/// What a finished dependency exposes to templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult<'a> {
    pub status: &'a str,
    /// Shared: the executor keeps a run's parsed outputs and lends them to each dispatch.
    pub outputs: Arc<BTreeMap<String, String>>,
    /// A later step of the reader's review loop, not yet run in this iteration: `outputs`
    /// are the previous iteration's (none in the first), and an output it did not set
    /// reads as empty text rather than failing the step.
    pub feedback: bool,
    /// `{{ steps.<id>.rounds }}`: the outputs of the step's rounds before the reader's
    /// (`[{"round": 1, "outputs": {...}}, ...]`), for a step of the reader's own loop.
    pub rounds: Arc<str>,
}

/// For each step of `plan` (by index), the steps (by index) whose results its dispatch
/// may read: its dependencies, whose outputs become variables, every step a template of
/// the step or of the plan's env names, and every step its `when=` expression names.
/// [`build`] needs the results of these only.
/// Unknown ids and templates that do not parse (validation reports them) are left out.
pub fn reads(plan: &Plan) -> Vec<Vec<usize>> {
    let index: BTreeMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .rev() // the first definition of a duplicated id wins, as in validation
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut everyone = Vec::new();
    for value in plan.env.values() {
        referenced(value, &index, &mut everyone);
    }
    plan.steps
        .iter()
        .map(|step| {
            let mut read = everyone.clone();
            read.extend(step.depends_on.iter().filter_map(|d| index.get(d.as_str())));
            let mut texts = Vec::new();
            let mut values = Vec::new();
            kinds::texts(&step.action, &mut |t| texts.push(t), &mut |v| {
                values.push(v)
            });
            for text in texts {
                referenced(text, &index, &mut read);
            }
            for value in values {
                json_referenced(value, &index, &mut read);
            }
            for value in step.env.values() {
                referenced(value, &index, &mut read);
            }
            // `when="<expression>"`: decided from these results before the dispatch.
            if let Some(Ok(expr)) = step.when_expr.as_deref().map(evaluator::when_expr::parse) {
                read.extend(
                    expr.references()
                        .into_iter()
                        .filter_map(|r| index.get(r.step.as_str())),
                );
            }
            read.sort_unstable();
            read.dedup();
            read
        })
        .collect()
}

/// The ids of the steps whose `{{ steps.<id>.rounds }}` the texts of `step` read (the
/// texts of a kind that does not start a process — an llm prompt and inputs — and its
/// env; code never renders rounds): the engine loads their earlier rounds' outputs for it.
pub fn rounds_read(step: &Step) -> BTreeSet<String> {
    let mut texts: Vec<&str> = step.env.values().map(String::as_str).collect();
    if !step.action.step_kind().starts_process() {
        let mut stack: Vec<&Value> = Vec::new();
        kinds::texts(&step.action, &mut |t| texts.push(t), &mut |v| stack.push(v));
        while let Some(value) = stack.pop() {
            match value {
                Value::String(text) => texts.push(text),
                Value::Array(items) => stack.extend(items),
                Value::Object(map) => stack.extend(map.values()),
                _ => {}
            }
        }
    }
    texts
        .into_iter()
        .filter(|text| text.contains("rounds"))
        .filter_map(|text| Template::parse(text).ok())
        .flat_map(|template| {
            template
                .references()
                .filter(|r| r.field == Field::Rounds)
                .map(|r| r.step.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Adds the steps `text`'s references name to `read`.
fn referenced(text: &str, index: &BTreeMap<&str, usize>, read: &mut Vec<usize>) {
    if !text.contains("{{") {
        return;
    }
    if let Ok(template) = Template::parse(text) {
        read.extend(
            template
                .references()
                .filter_map(|r| index.get(r.step.as_str())),
        );
    }
}

/// [`referenced`] for every string in `value`.
fn json_referenced(value: &Value, index: &BTreeMap<&str, usize>, read: &mut Vec<usize>) {
    match value {
        Value::String(text) => referenced(text, index, read),
        Value::Array(items) => items
            .iter()
            .for_each(|item| json_referenced(item, index, read)),
        Value::Object(map) => map
            .values()
            .for_each(|item| json_referenced(item, index, read)),
        _ => {}
    }
}

/// `PLUE_OUTPUT_<STEP>_<KEY>`: upper-cased, every character outside `[A-Z0-9_]` as `_`.
pub fn output_var(step: &str, key: &str) -> String {
    let mut name = String::from(OUTPUT_VAR_PREFIX);
    let clean = |c: char| {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    };
    name.extend(step.chars().map(clean));
    name.push('_');
    name.extend(key.chars().map(clean));
    name
}

/// The variables every step of a run an issue or a comment started gets: the issue's and
/// the comment's text exactly as written (plain values, never rendered as templates), set
/// after the plan's and the step's `env` so no workflow can change them. A value longer
/// than [`MAX_SUMMONED_VALUE_BYTES`] is cut there (at a character boundary) and named in
/// `PLUE_SUMMON_TRUNCATED`.
pub fn summoned_env(ctx: &evaluator::EvalContext) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if let Some(issue) = &ctx.issue {
        env.insert("PLUE_ISSUE_NUMBER".into(), issue.number.to_string());
        env.insert("PLUE_ISSUE_TITLE".into(), issue.title.clone());
        env.insert("PLUE_ISSUE_BODY".into(), issue.body.clone());
        env.insert("PLUE_ISSUE_AUTHOR".into(), issue.author.clone());
        env.insert("PLUE_ISSUE_URL".into(), issue.url.clone());
    }
    if let Some(comment) = &ctx.comment {
        env.insert("PLUE_COMMENT_BODY".into(), comment.body.clone());
        env.insert("PLUE_COMMENT_AUTHOR".into(), comment.author.clone());
    }
    let mut truncated = Vec::new();
    for (name, value) in env.iter_mut() {
        // No environment variable holds a NUL; the payload reader already replaced it.
        if value.contains('\0') {
            *value = value.replace('\0', "\u{fffd}");
        }
        // Linux refuses to start a process with one variable over 128 KiB (E2BIG), which
        // would fail every step of the run; the whole text stays in `ctx`.
        if value.len() > MAX_SUMMONED_VALUE_BYTES {
            let mut end = MAX_SUMMONED_VALUE_BYTES;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            value.truncate(end);
            truncated.push(name.clone());
        }
    }
    if !truncated.is_empty() {
        env.insert("PLUE_SUMMON_TRUNCATED".into(), truncated.join(","));
    }
    env
}

/// The longest `PLUE_ISSUE_*`/`PLUE_COMMENT_*` value, in bytes: under Linux's 128 KiB per
/// variable (`MAX_ARG_STRLEN`), with room for the name.
pub const MAX_SUMMONED_VALUE_BYTES: usize = 120 * 1024;

/// Builds the dispatch document of `step`, rendering its templates against the results of
/// the run's final steps (by step id). The error is the reason the step fails.
pub fn build(
    plan: &Plan,
    step: &Step,
    run_id: i64,
    results: &BTreeMap<&str, StepResult<'_>>,
) -> Result<Dispatch, DispatchError> {
    let kind = step.action.step_kind();
    let budget = if kind.starts_process() {
        MAX_PROCESS_RENDERED_BYTES
    } else {
        MAX_STEP_RENDERED_BYTES
    };
    let renderer = Renderer {
        results,
        budget: std::cell::Cell::new(budget),
    };
    // The kind's action; a code step's output variables, and what a bash command's
    // references read (checked once the env is whole).
    let kinds::Rendered {
        action,
        output_env,
        bash_reads,
    } = kinds::render(step, &renderer, results)?;
    let mut secrets = step.secrets.clone();
    if kind.talks_to_model() && !secrets.iter().any(|s| s == LLM_KEY_SECRET) {
        secrets.push(LLM_KEY_SECRET.to_owned());
    }
    let mut env = BTreeMap::new();
    // The variables whose values come from outputs (for the bash check below).
    let mut from_outputs: BTreeSet<String> = output_env.keys().cloned().collect();
    for (name, value) in plan.env.iter().chain(step.env.iter()) {
        env.insert(name.clone(), renderer.text(&format!("env {name}"), value)?);
        if reads_output(value) {
            from_outputs.insert(name.clone());
        }
    }
    // After the plan's and the step's env: a reference must read the value it names.
    env.extend(output_env);
    env.insert("CI".into(), "true".into());
    env.insert("PLUE".into(), "true".into());
    env.insert("PLUE_RUN_ID".into(), run_id.to_string());
    env.insert("PLUE_STEP_ID".into(), step.id.clone());
    bash_values::check("command", &env, &bash_reads, &from_outputs)?;
    Ok(Dispatch {
        action,
        env,
        secrets,
        timeout_secs: step.timeout,
        handoff: handoff(plan, step),
        network: network(step),
        budget: crate::pricing::budget::Limits::of(plan, step),
        caches: if kind.starts_process() {
            step.caches.clone()
        } else {
            Vec::new()
        },
        id_tokens: step.id_tokens.clone(),
    })
}

/// The step's `network=`, or its kind's default: the tools of a step that talks to a model
/// (`llm`) reach nothing but loopback (the model's API is the runner's, not the step's),
/// every other kind the host's network as before network policies.
pub fn network(step: &Step) -> NetworkPolicy {
    match &step.network {
        Some(Network::None) => NetworkPolicy::None,
        None if step.action.step_kind().talks_to_model() => NetworkPolicy::None,
        Some(Network::Open) | None => NetworkPolicy::Open,
        Some(Network::Allow(hosts)) => NetworkPolicy::Allow(hosts.clone()),
    }
}

/// The step's part in hand-offs: its own options, and whether a later step starts from its
/// workspace (then the runner keeps it).
fn handoff(plan: &Plan, step: &Step) -> Handoff {
    Handoff {
        workspace_from: step.workspace_from.clone(),
        needs_artifacts: step.needs_artifacts.clone(),
        artifacts: step.artifacts.clone(),
        keep_workspace: plan
            .steps
            .iter()
            .any(|s| s.workspace_from.as_deref() == Some(step.id.as_str())),
        max_bytes: 0,
    }
}

/// Whether `text` is a template with a reference to an output.
fn reads_output(text: &str) -> bool {
    text.contains("{{")
        && Template::parse(text)
            .is_ok_and(|t| t.references().any(|r| matches!(r.field, Field::Output(_))))
}

/// One step down into an llm input's JSON.
enum Part<'v> {
    Index(usize),
    Key(&'v str),
}

/// `inputs.<input>[1].key`: where in an llm input a string is, for a message.
fn input_path(input: &str, path: &[Part<'_>]) -> String {
    let mut text = format!("inputs.{input}");
    for part in path {
        match part {
            Part::Index(i) => text.push_str(&format!("[{i}]")),
            Part::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
        }
    }
    text
}

/// `text` as a template; the error says it is in the text `what`.
fn parse(what: &str, text: &str) -> Result<Template, DispatchError> {
    Template::parse(text).map_err(|e| DispatchError::from(e).at(what))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Code {
    Bash,
    Python,
}

/// The output variables of a code step and the variable each output reference reads.
struct OutputVars {
    env: BTreeMap<String, String>,
    /// (step, key) of a non-raw output reference → the variable holding its value.
    by_reference: BTreeMap<(String, String), String>,
}

impl OutputVars {
    /// Every output of `step`'s direct dependencies under its [`output_var`] name (names
    /// shared by several outputs are left out), plus a variable for each output `template`
    /// references. Fails when a referenced output is missing or the variables are too big.
    fn new(
        step: &Step,
        what: &str,
        template: &Template,
        results: &BTreeMap<&str, StepResult<'_>>,
    ) -> Result<OutputVars, DispatchError> {
        // name → the (step, key) pairs that map to it, with their value.
        let mut named: BTreeMap<String, BTreeMap<(String, String), &str>> = BTreeMap::new();
        for dep in &step.depends_on {
            let Some(result) = results.get(dep.as_str()) else {
                continue;
            };
            for (key, value) in result.outputs.iter() {
                named
                    .entry(output_var(dep, key))
                    .or_default()
                    .insert((dep.clone(), key.clone()), value);
            }
        }
        let mut referenced = Vec::new();
        for reference in template.references() {
            if let (Field::Output(key), false) = (&reference.field, reference.raw) {
                let value = output_value(results, reference, key).map_err(|e| e.at(what))?;
                let pair = (reference.step.clone(), key.clone());
                named
                    .entry(output_var(&reference.step, key))
                    .or_default()
                    .insert(pair.clone(), value);
                referenced.push(pair);
            }
        }
        let mut env = BTreeMap::new();
        let mut by_name: BTreeMap<(String, String), String> = BTreeMap::new();
        for (name, pairs) in &named {
            if let [(pair, value)] = pairs.iter().collect::<Vec<_>>().as_slice() {
                env.insert(name.clone(), value.to_string());
                by_name.insert((*pair).clone(), name.clone());
            }
        }
        let mut by_reference = BTreeMap::new();
        for pair in referenced {
            if by_reference.contains_key(&pair) {
                continue;
            }
            let var = match by_name.get(&pair) {
                Some(name) => name.clone(),
                None => {
                    let name = format!("{REF_VAR_PREFIX}{}", by_reference.len());
                    let value = named[&output_var(&pair.0, &pair.1)][&pair];
                    env.insert(name.clone(), value.to_string());
                    name
                }
            };
            by_reference.insert(pair, var);
        }
        let bytes: usize = env.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
        if bytes > MAX_OUTPUT_ENV_BYTES {
            return Err(DispatchError::OutputVarsTooLarge { bytes });
        }
        Ok(OutputVars { env, by_reference })
    }
}

/// The value of output `key` of the step `reference` names, or why it has none.
fn output_value<'r>(
    results: &'r BTreeMap<&str, StepResult<'_>>,
    reference: &Reference,
    key: &str,
) -> Result<&'r str, DispatchError> {
    let result = results.get(reference.step.as_str());
    if let Some(result) = result.filter(|r| r.feedback) {
        return Ok(result.outputs.get(key).map_or("", String::as_str));
    }
    result
        .and_then(|r| r.outputs.get(key))
        .map(String::as_str)
        .ok_or_else(|| DispatchError::OutputNotSet {
            reference: reference.to_string(),
        })
}

/// Renders the templates of one step within its byte budget.
struct Renderer<'a, 'r> {
    results: &'a BTreeMap<&'a str, StepResult<'r>>,
    /// Bytes the step's texts may still render to.
    budget: std::cell::Cell<usize>,
}

impl Renderer<'_, '_> {
    /// A text nobody parses: every reference is its value.
    fn text(&self, what: &str, text: &str) -> Result<String, DispatchError> {
        self.plain_text(text).map_err(|e| e.at(what))
    }

    /// [`Renderer::text`] whose error does not say where the text is.
    fn plain_text(&self, text: &str) -> Result<String, DispatchError> {
        if !text.contains("{{") {
            return Ok(text.to_string());
        }
        let template = Template::parse(text)?;
        self.render_plain(&template, |_, reference| {
            self.value_text(reference).map(str::to_owned)
        })
    }

    /// `value`, the llm input `input`, with every string in it (keys excepted) rendered
    /// as text. `path` (the keys and indices down to `value`) becomes text only for an
    /// error: a string deep under long keys costs no copy of its path.
    fn strings<'v>(
        &self,
        input: &str,
        value: &'v Value,
        path: &mut Vec<Part<'v>>,
    ) -> Result<Value, DispatchError> {
        Ok(match value {
            Value::String(text) => Value::String(
                self.plain_text(text)
                    .map_err(|e| e.at(input_path(input, path)))?,
            ),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    path.push(Part::Index(i));
                    let rendered = self.strings(input, item, path);
                    path.pop();
                    out.push(rendered?);
                }
                Value::Array(out)
            }
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, item) in map {
                    path.push(Part::Key(key));
                    let rendered = self.strings(input, item, path);
                    path.pop();
                    out.insert(key.clone(), rendered?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// A bash command or python script: outputs are read from `vars`, never pasted.
    fn code(
        &self,
        what: &str,
        template: &Template,
        code: Code,
        vars: &OutputVars,
    ) -> Result<String, DispatchError> {
        let (literal, at) = template.literal_text();
        let (bash_at, python_at, formats) = match code {
            Code::Bash => (
                bash::contexts(&literal, &at),
                Vec::new(),
                bash::format_refusals(&literal, &at),
            ),
            Code::Python => (
                Vec::new(),
                python::contexts(&literal, &at),
                python::format_refusals(&literal, &at),
            ),
        };
        self.render(what, template, |i, reference| {
            let refused = |why: &'static str| DispatchError::Refused {
                reference: reference.to_string(),
                why,
                raw: false,
            };
            if reference.raw {
                // Refused wherever the plain form is (validation said so already).
                let output = matches!(reference.field, Field::Output(_));
                let why = match (code, output) {
                    (Code::Bash, true) => bash_at[i].output_refusal().or(formats[i]),
                    (Code::Bash, false) => bash_at[i].refusal(),
                    (Code::Python, true) => python_at[i].output_refusal().or(formats[i]),
                    (Code::Python, false) => python_at[i].refusal(),
                };
                if let Some(why) = why {
                    return Err(DispatchError::Refused {
                        reference: reference.to_string(),
                        why,
                        raw: true,
                    });
                }
                return self.value_text(reference).map(str::to_owned);
            }
            match &reference.field {
                Field::Status => {
                    let status = self.status(reference)?;
                    Ok(match code {
                        Code::Bash => {
                            if let Some(why) = bash_at[i].refusal() {
                                return Err(refused(why));
                            }
                            status.to_string()
                        }
                        Code::Python => {
                            if let Some(why) = python_at[i].refusal() {
                                return Err(refused(why));
                            }
                            python::word(&python_at[i], status)
                        }
                    })
                }
                // Validation keeps rounds out of code; a plan read from elsewhere too.
                Field::Rounds => Err(refused("rounds are JSON text for llm prompts and inputs")),
                Field::Output(key) => {
                    let var = &vars.by_reference[&(reference.step.clone(), key.clone())];
                    // Where the language would not expand it first, then where the code
                    // would read it as a format, template or pattern.
                    let context = match code {
                        Code::Bash => bash_at[i].output_refusal(),
                        Code::Python => python_at[i].output_refusal(),
                    };
                    if let Some(why) = context.or(formats[i]) {
                        return Err(refused(why));
                    }
                    match code {
                        Code::Bash => bash::expand(bash_at[i], var),
                        Code::Python => python::expand(&python_at[i], var),
                    }
                    .map_err(refused)
                }
            }
        })
    }

    fn render(
        &self,
        what: &str,
        template: &Template,
        piece: impl FnMut(usize, &Reference) -> Result<String, DispatchError>,
    ) -> Result<String, DispatchError> {
        self.render_plain(template, piece).map_err(|e| e.at(what))
    }

    /// [`Renderer::render`] whose error does not say where the text is.
    fn render_plain(
        &self,
        template: &Template,
        piece: impl FnMut(usize, &Reference) -> Result<String, DispatchError>,
    ) -> Result<String, DispatchError> {
        let limit = MAX_RENDERED_BYTES.min(self.budget.get());
        let text = template.render(limit, piece).map_err(|e| match e {
            template::RenderError::TooLarge { .. } if limit < MAX_RENDERED_BYTES => {
                DispatchError::StepTooLarge
            }
            template::RenderError::TooLarge { limit } => DispatchError::TextTooLarge { limit },
            template::RenderError::Unresolved(e) => e,
        })?;
        self.budget.set(self.budget.get() - text.len());
        Ok(text)
    }

    /// A reference's value as plain text.
    fn value_text(&self, reference: &Reference) -> Result<&str, DispatchError> {
        match &reference.field {
            Field::Status => self.status(reference),
            Field::Output(key) => output_value(self.results, reference, key),
            Field::Rounds => self
                .results
                .get(reference.step.as_str())
                .map(|r| &*r.rounds)
                .ok_or_else(|| DispatchError::RoundsNotSet {
                    reference: reference.to_string(),
                }),
        }
    }

    /// A step's final status: a lowercase word, safe as is in any quoting.
    fn status(&self, reference: &Reference) -> Result<&str, DispatchError> {
        let status = self
            .results
            .get(reference.step.as_str())
            .map(|r| r.status)
            .ok_or_else(|| DispatchError::StatusNotSet {
                reference: reference.to_string(),
            })?;
        if status.is_empty() || !status.bytes().all(|c| c.is_ascii_lowercase()) {
            return Err(DispatchError::UnexpectedStatus {
                reference: reference.to_string(),
                status: template::echo(status),
            });
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests;
