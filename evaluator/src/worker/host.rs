//! The `.plue.py` API as host types: `Plan`, `Step`, `Trigger` and `ctx`, defined in Rust.
//!
//! Longer than most files on purpose: it is the whole user-facing surface of the three host
//! classes, one `#[pymethods]` block each, kept together so the script API reads in one
//! place (splitting the options every step takes would scatter one signature over files).
//! What one step kind alone takes (`Step.llm(model=...)`) is that kind's module in
//! [`super::kinds`].
//!
//! As with starlark-rust's `#[starlark_module]`, the Rust signature is the script signature
//! and the doc comments are the user docs. Each constructor converts its arguments into
//! plan data at once (so a bad argument fails on the line that passed it) and remembers
//! where in the file it was called (for errors that only the whole plan reveals). The
//! types are frozen and immutable: a workflow cannot change them for the next one. They
//! compare by value and refuse to be hashed, so no set or dict order can depend on an
//! address.

use std::cell::Cell;
use std::collections::BTreeMap;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyModule};

use super::convert::{self, Options};
use super::kinds;
use crate::context::EvalContext;
use crate::diagnostic::did_you_mean;
use crate::loops::LoopWorkspace;
use crate::network::Network;
use crate::plan::{
    Action, Authors, Concurrency, InputKind, Location, ManualInput, Others, Plan, SourceMap, Step,
    Trigger, When, DEFAULT_BACKOFF_SECS, DEFAULT_TIMEOUT_SECS,
};

thread_local! {
    static MAX_STEPS: Cell<usize> = const { Cell::new(usize::MAX) };
    /// The references written in this evaluation's `ctx` strings
    /// ([`EvalContext::reference_texts`]), which no plan may hold.
    static CTX_REFERENCES: std::cell::RefCell<std::collections::BTreeSet<String>> =
        const { std::cell::RefCell::new(std::collections::BTreeSet::new()) };
}

/// Sets the step bound of the evaluation about to run.
pub(crate) fn set_max_steps(max: usize) {
    MAX_STEPS.with(|m| m.set(max));
}

/// The bootstrap's `caller_location()`: where in the user's file the current call is.
static CALLER_LOCATION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub(crate) fn set_caller_location(py: Python<'_>, function: Bound<'_, PyAny>) {
    let _ = CALLER_LOCATION.set(py, function.unbind());
}

fn caller(py: Python<'_>) -> Location {
    let located = CALLER_LOCATION
        .get(py)
        .and_then(|f| f.bind(py).call0().ok())
        .and_then(|r| r.extract::<(u32, u32)>().ok());
    located
        .map(|(line, col)| Location { line, col })
        .unwrap_or_default()
}

/// A workflow's plan: `Plan(name, triggers=[...], steps=[...], env={...},
/// concurrency=None, cancel_in_progress=False, budget_usd=None, max_parallel=None,
/// caches=[])`. `budget_usd` caps what the run's `llm` steps may cost together (USD, > 0,
/// at most 10,000); `max_parallel` how many of its steps hold a runner at once (1 to 1024;
/// the engine's own limit still applies when lower). `caches=[Cache(...)]` is given to
/// every `bash` and `python` step that passes no `caches=` of its own (`caches=[]` on a
/// step: none).
#[pyclass(module = "plue", name = "Plan", frozen, immutable_type)]
pub(crate) struct PlanObject {
    pub(crate) plan: Plan,
    pub(crate) source_map: SourceMap,
}

#[pymethods]
impl PlanObject {
    #[new]
    #[pyo3(signature = (name, **options))]
    fn new(
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let at = caller(py);
        let mut options = Options::new("Plan()", options, &["name"]);
        let name = convert::string(name, "Plan(): name")?;
        let mut source_map = SourceMap {
            plan: at,
            ..SourceMap::default()
        };
        let mut triggers = Vec::new();
        if let Some(value) = options.take("triggers")? {
            for (i, item) in convert::sequence(&value, "Plan(): triggers")?
                .iter()
                .enumerate()
            {
                let trigger = item
                    .cast::<TriggerObject>()
                    .map_err(|_| PyTypeError::new_err(format!("Plan(): triggers[{i}] must be made with Trigger.on_push(), Trigger.on_pull_request(), Trigger.on_schedule(), Trigger.manual(), Trigger.on_issue() or Trigger.on_comment()")))?;
                triggers.push(trigger.get().trigger.clone());
                source_map.triggers.push(trigger.get().location);
            }
        }
        let plan_caches = super::caches::from_options(&mut options, None)?.unwrap_or_default();
        let mut steps = Vec::new();
        if let Some(value) = options.take("steps")? {
            let items = convert::sequence(&value, "Plan(): steps")?;
            let max = MAX_STEPS.with(|m| m.get());
            if items.len() > max {
                return Err(PyValueError::new_err(format!(
                    "Plan(): {} steps; the limit is {max}",
                    items.len()
                )));
            }
            for (i, item) in items.iter().enumerate() {
                let step = item
                    .cast::<StepObject>()
                    .map_err(|_| PyTypeError::new_err(format!("Plan(): steps[{i}] must be made with Step.bash(), Step.python(), Step.llm() or Step.approval()")))?;
                let mut made = step.get().step.clone();
                if !step.get().caches_declared && made.action.step_kind().starts_process() {
                    made.caches = plan_caches.clone();
                }
                steps.push(made);
                source_map.steps.push(step.get().location);
            }
        }
        let env = options
            .take("env")?
            .map(|v| convert::string_map(&v, "Plan(): env"))
            .transpose()?
            .unwrap_or_default();
        let concurrency = concurrency(&mut options)?;
        let budget_usd = options
            .take("budget_usd")?
            .map(|v| convert::usd(&v, "Plan(): budget_usd"))
            .transpose()?;
        let max_parallel = options
            .take("max_parallel")?
            .map(|v| convert::count(&v, "Plan(): max_parallel"))
            .transpose()?;
        options.finish()?;
        let plan = Plan {
            name,
            triggers,
            env,
            steps,
            concurrency,
            budget_usd,
            max_parallel,
            modules: Vec::new(),
        };
        refuse_ctx_references(&plan)?;
        Ok(PlanObject { plan, source_map })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.plan.name
    }

    /// The step ids, in order.
    #[getter]
    fn step_ids(&self) -> Vec<String> {
        self.plan.steps.iter().map(|s| s.id.clone()).collect()
    }

    /// Equal when the data is equal, never by identity.
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        self.plan == other.get().plan
    }

    /// Unhashable: a hash by identity would make `set()` order depend on addresses.
    fn __hash__(&self) -> PyResult<isize> {
        Err(unhashable("Plan"))
    }

    fn __repr__(&self) -> String {
        format!(
            "Plan({:?}, {} steps)",
            self.plan.name,
            self.plan.steps.len()
        )
    }
}

/// `concurrency="deploy-{branch}"` (a group template over `ctx` fields, checked by
/// validation) and `cancel_in_progress=True|False`, which means nothing without a group.
fn concurrency(options: &mut Options<'_>) -> PyResult<Option<Concurrency>> {
    let group = convert::optional_string(options.take("concurrency")?, "Plan(): concurrency")?;
    let cancel_in_progress = match options.take("cancel_in_progress")? {
        Some(value) if !value.is_none() => Some(value.extract::<bool>().map_err(|_| {
            PyTypeError::new_err("Plan(): cancel_in_progress must be True or False")
        })?),
        _ => None,
    };
    match (group, cancel_in_progress) {
        (Some(group), cancel) => Ok(Some(Concurrency {
            group,
            cancel_in_progress: cancel.unwrap_or(false),
        })),
        (None, Some(_)) => Err(PyValueError::new_err(
            "Plan(): cancel_in_progress needs concurrency= (a group name such as 'deploy-{branch}')",
        )),
        (None, None) => Ok(None),
    }
}

/// One step of the DAG. Make one with `Step.bash`, `Step.python`, `Step.llm` or
/// `Step.approval`.
///
/// A step that runs may name a repository environment, `environment="prod"`: the engine
/// then runs it only on a ref the environment allows, after the review of the
/// environment's reviewers and its wait timer (inserted by the engine whatever the plan
/// says), and gives it the environment's secrets. An approval step takes no environment.
///
/// A step that runs may limit what its processes reach with `network=`: `"none"` (its own
/// loopback only), `"open"` (the runner host's network) or a list of host patterns
/// (`["pypi.org", "*.github.com:443"]`), reached through the runner's egress proxy. Without
/// it an `llm` step's tools get `"none"` and every other step `"open"`.
///
/// A `bash` or `python` step may keep directories from one run to the next with
/// `caches=[Cache(...)]` (without it, the plan's `caches=`; `caches=[]`: none).
///
/// A `bash` or `python` step may ask for OpenID Connect tokens, short-lived JWTs the
/// engine signs, which a cloud's or Vault's trust policy trades for credentials:
/// `id_tokens={"AWS_ID_TOKEN": "sts.amazonaws.com"}`. Each key is the environment variable
/// the step gets its token in (`^[A-Z_][A-Z0-9_]*$`, at most 64 characters, not starting
/// with `PLUE_`, not a variable the engine reserves, and not one of the step's `secrets=`
/// or `env=`); each value is the token's audience (1 to 256 visible ASCII characters, no
/// spaces: `"sts.amazonaws.com"`, `"https://vault.example.com"`,
/// `"api://AzureADTokenExchange"`). At most 8. The engine mints the tokens when the step is
/// claimed and masks them in its output like secrets. It withholds them from a run it does
/// not trust (a pull request from a fork, an event the engine itself caused): the step
/// runs without them, and `PLUE_ID_TOKENS_WITHHELD` names the variables left unset. An
/// `llm` step takes none (its agent's tools must not hold a cloud identity), nor does a
/// step a used module builds (its token would carry the calling repository's identity).
/// See the guide's "OpenID Connect tokens for steps".
#[pyclass(module = "plue", name = "Step", frozen, immutable_type)]
pub(crate) struct StepObject {
    pub(crate) step: Step,
    pub(crate) location: Location,
    /// Whether the step was given `caches=` (else it takes the plan's).
    pub(crate) caches_declared: bool,
}

#[pymethods]
impl StepObject {
    /// `Step.bash(id, command, **options)`: runs `command` with bash.
    #[staticmethod]
    #[pyo3(signature = (id, command, **options))]
    fn bash(
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        command: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let at = caller(py);
        let options = Options::new("Step.bash()", options, &["id", "command"]);
        build_step(id, kinds::bash::action(command)?, options, at)
    }

    /// `Step.python(id, script, fresh_interpreter=False, **options)`: runs `script` with the
    /// runner's Python, forked from a warm interpreter unless `fresh_interpreter=True`.
    #[staticmethod]
    #[pyo3(signature = (id, script, **options))]
    fn python(
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        script: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let at = caller(py);
        let mut options = Options::new("Step.python()", options, &["id", "script"]);
        let action = kinds::python::action(script, &mut options)?;
        build_step(id, action, options, at)
    }

    /// `Step.llm(id, prompt=None, prompt_file=None, inputs=None, model=None, max_turns=None,
    /// tools=None, max_tokens=None, max_cost_usd=None, **options)`: a Claude agent with
    /// workspace tools. `max_turns` counts every request to the model, retries included;
    /// `max_tokens` (input, output and cache tokens of all calls) and `max_cost_usd` stop
    /// the conversation before it would pass them, and the step fails saying so.
    ///
    /// `result="verdict"` or `result={JSON Schema}`: the agent must end by calling the
    /// `finish` tool with that shape (a wrong shape goes back to it to correct, at most 3
    /// times); the fields become the step's outputs (strings as they are, other values as
    /// JSON text) and `result` holds the whole input as JSON. `"verdict"` is
    /// `{"verdict": "approve"|"reject", "reason": str}`, and a `reject` fails the step with
    /// the reason (so `loop_to` goes back). `fail_when={"field": value or [values]}` fails
    /// the step when any field equals any of its values. `system_prompt=` replaces the
    /// runner's system prompt (a prompt file's `system:` frontmatter otherwise).
    ///
    /// `safe_outputs=SafeOutputs(...)` offers the `propose_*` tools it allows; the engine
    /// checks what the agent proposed when the step succeeds (any refusal fails the step)
    /// and writes it to the forge itself. `approve_outputs=True` holds each proposal until
    /// a person with write access approves it.
    ///
    /// `mcp={"name": {...}}` gives the model the listed tools of Model Context Protocol
    /// servers, shown as `mcp__<name>__<tool>`: a stdio server is `{"command": [...],
    /// "tools": [...], "env": {...}}`, started in the step's room (its user, namespaces,
    /// cgroup and `network=` policy); an HTTP one is `{"url": "https://...", "tools":
    /// [...], "bearer_secret": "SECRET"}`, reached only where `network=` lets the step
    /// reach it, with a token from the step's `secrets`. Optional `timeout_secs` (per call,
    /// default 60) and `max_calls` (default 100). Only the listed tools are shown; each is
    /// pinned by `plue lock` in `.plue/lock.json`, and a tool unpinned or changed since
    /// fails the step before the model sees it.
    #[staticmethod]
    #[pyo3(signature = (id, prompt=None, **options))]
    fn llm(
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        prompt: Option<Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let at = caller(py);
        let mut options = Options::new("Step.llm()", options, &["id", "prompt"]);
        let action = kinds::llm::action(prompt, &mut options)?;
        build_step(id, action, options, at)
    }

    /// `Step.approval(id, message=None, approvers=None, exclude_triggerer=False,
    /// **options)`: waits for a person to approve or reject; `timeout` bounds the wait.
    #[staticmethod]
    #[pyo3(signature = (id, message=None, **options))]
    fn approval(
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        message: Option<Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let at = caller(py);
        let mut options = Options::new("Step.approval()", options, &["id", "message"]);
        let action = kinds::approval::action(message, &mut options)?;
        build_step(id, action, options, at)
    }

    #[getter]
    fn id(&self) -> &str {
        &self.step.id
    }

    #[getter]
    fn kind(&self) -> &'static str {
        self.step.action.kind()
    }

    /// Equal when the data is equal, never by identity.
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        self.step == other.get().step
    }

    /// Unhashable: a hash by identity would make `set()` order depend on addresses.
    fn __hash__(&self) -> PyResult<isize> {
        Err(unhashable("Step"))
    }

    fn __repr__(&self) -> String {
        format!("Step.{}({:?})", self.step.action.kind(), self.step.id)
    }
}

/// The options every step kind takes.
fn build_step(
    id: &Bound<'_, PyAny>,
    action: Action,
    mut options: Options<'_>,
    location: Location,
) -> PyResult<StepObject> {
    let function = options.function();
    let id = convert::string(id, &format!("{function}: id"))?;
    let depends_on = match options.take("depends_on")? {
        None => Vec::new(),
        Some(value) => dependency_ids(&value, function, "depends_on")?,
    };
    let timeout = options
        .take("timeout")?
        .map(|v| convert::seconds(&v, &format!("{function}: timeout")))
        .transpose()?
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    let retries = options
        .take("retries")?
        .map(|v| convert::count(&v, &format!("{function}: retries")))
        .transpose()?
        .unwrap_or(0);
    let backoff = options
        .take("backoff")?
        .map(|v| convert::seconds(&v, &format!("{function}: backoff")))
        .transpose()?
        .unwrap_or(DEFAULT_BACKOFF_SECS);
    let (when, when_expr) = match options.take("when")? {
        None => (When::Success, None),
        Some(value) => {
            let name = convert::string(&value, &format!("{function}: when"))?;
            when_option(&name, function)?
        }
    };
    let env = options
        .take("env")?
        .map(|v| convert::string_map(&v, &format!("{function}: env")))
        .transpose()?
        .unwrap_or_default();
    let secrets = options
        .take("secrets")?
        .map(|v| convert::string_list(&v, &format!("{function}: secrets")))
        .transpose()?
        .unwrap_or_default();
    let runner = match options.take("runner")? {
        None => BTreeMap::new(),
        Some(value) if value.is_instance_of::<PyDict>() => {
            convert::string_map(&value, &format!("{function}: runner"))?
        }
        Some(value) => runner_labels(
            &convert::string(&value, &format!("{function}: runner"))?,
            function,
        )?,
    };
    let (workspace_from, artifacts, needs_artifacts) = if !action.step_kind().runs_on_runner() {
        // Nothing runs, so there is no workspace: passing these is the "unexpected keyword"
        // error below.
        (None, Vec::new(), Vec::new())
    } else {
        hand_off(&mut options, function)?
    };
    let loop_to = options
        .take("loop_to")?
        .map(|value| match value.cast::<StepObject>() {
            Ok(step) => Ok(step.get().step.id.clone()),
            Err(_) => convert::string(&value, &format!("{function}: loop_to")),
        })
        .transpose()?;
    let max_loops = options
        .take("max_loops")?
        .map(|v| convert::count(&v, &format!("{function}: max_loops")))
        .transpose()?;
    let environment = options
        .take("environment")?
        .map(|v| convert::string(&v, &format!("{function}: environment")))
        .transpose()?;
    if environment.is_some() && !action.step_kind().runs_on_runner() {
        // An approval step neither runs nor gets secrets; the environment's review is
        // inserted by the engine before the step that names the environment.
        return Err(PyTypeError::new_err(format!(
            "{function}: environment= goes on the step that deploys (Step.bash, Step.python \
             or Step.llm); the engine inserts the environment's review before that step"
        )));
    }
    let network = options
        .take("network")?
        .map(|value| network(&value, function))
        .transpose()?;
    if network.is_some() && !action.step_kind().runs_on_runner() {
        return Err(PyTypeError::new_err(format!(
            "{function}: network= goes on a step that runs (Step.bash, Step.python or Step.llm)"
        )));
    }
    let loop_workspace = match options.take("loop_workspace")? {
        None => None,
        Some(_) if !action.step_kind().runs_on_runner() => {
            return Err(PyTypeError::new_err(format!(
                "{function}: loop_workspace= goes on a step that runs (an approval has no workspace)"
            )))
        }
        Some(value) => {
            let name = convert::string(&value, &format!("{function}: loop_workspace"))?;
            Some(LoopWorkspace::parse(&name).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "{function}: loop_workspace must be 'previous' or 'fresh', got '{name}'"
                ))
            })?)
        }
    };
    let caches = super::caches::from_options(&mut options, Some(action.step_kind()))?;
    let id_tokens = options
        .take("id_tokens")?
        .map(|value| id_tokens(&value, action.step_kind(), function))
        .transpose()?
        .unwrap_or_default();
    let continue_on_error = match options.take("continue_on_error")? {
        None => false,
        Some(value) => value.extract::<bool>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{function}: continue_on_error must be True or False"
            ))
        })?,
    };
    options.finish()?;
    Ok(StepObject {
        step: Step {
            id,
            action,
            depends_on,
            timeout,
            retries,
            backoff,
            when,
            env,
            secrets,
            runner,
            workspace_from,
            artifacts,
            needs_artifacts,
            loop_to,
            max_loops,
            environment,
            network,
            loop_workspace,
            continue_on_error,
            when_expr,
            caches: caches.clone().unwrap_or_default(),
            id_tokens,
        },
        location,
        caches_declared: caches.is_some(),
    })
}

/// `when=`: one of [`When::NAMES`], or an expression ([`crate::when_expr`]) that runs the
/// step like `success` when it is true. A bare word is taken as a misspelt name.
fn when_option(text: &str, function: &'static str) -> PyResult<(When, Option<String>)> {
    if let Some(when) = When::parse(text) {
        return Ok((when, None));
    }
    let word = text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if word {
        let hint = did_you_mean(text, When::NAMES);
        return Err(PyValueError::new_err(format!("{function}: when must be one of 'success', 'failure', 'always' or an expression such as \"steps.review.outputs.verdict == 'approve'\", got '{text}'{hint}")));
    }
    match crate::when_expr::parse(text) {
        Ok(_) => Ok((When::Success, Some(text.to_string()))),
        Err(error) => Err(PyValueError::new_err(format!("{function}: when: {error}"))),
    }
}

/// `network="none"`, `network="open"` or `network=["pypi.org", "*.github.com:443"]`; the
/// patterns themselves are checked by validation, which reports each at the step.
fn network(value: &Bound<'_, PyAny>, function: &'static str) -> PyResult<Network> {
    let what = format!("{function}: network");
    if value.is_instance_of::<pyo3::types::PyString>() {
        let word = convert::string(value, &what)?;
        return match word.as_str() {
            "none" => Ok(Network::None),
            "open" => Ok(Network::Open),
            other => {
                let hint = if other.contains(['.', ':']) {
                    format!(" (for one host write ['{other}'])")
                } else {
                    did_you_mean(other, ["none", "open"])
                };
                Err(PyValueError::new_err(format!(
                    "{what} must be 'none', 'open' or a list of hosts such as ['pypi.org'], got '{other}'{hint}"
                )))
            }
        };
    }
    Ok(Network::Allow(convert::string_list(value, &what)?))
}

/// `id_tokens={"AWS_ID_TOKEN": "sts.amazonaws.com"}` of a step whose kind takes tokens
/// ([`crate::id_tokens::refusal`]): a dict of `str` to `str`. The names and audiences are
/// checked by validation ([`crate::id_tokens::check`]), which reports each at the step.
fn id_tokens(
    value: &Bound<'_, PyAny>,
    kind: crate::plan::StepKind,
    function: &'static str,
) -> PyResult<BTreeMap<String, String>> {
    if let Some(why) = crate::id_tokens::refusal(kind) {
        return Err(PyTypeError::new_err(format!(
            "{function}: id_tokens= goes on a {} ({why})",
            crate::id_tokens::kinds_taking("Step.", "or")
        )));
    }
    convert::str_map(value, &format!("{function}: id_tokens"))
}

/// `workspace_from=` (a step id or a `Step`), `artifacts=` (a glob or a list of globs) and
/// `needs_artifacts=` (step ids or `Step`s) of a step that runs.
fn hand_off(
    options: &mut Options<'_>,
    function: &'static str,
) -> PyResult<(Option<String>, Vec<String>, Vec<String>)> {
    let workspace_from = match options.take("workspace_from")? {
        None => None,
        Some(value) => Some(match value.cast::<StepObject>() {
            Ok(step) => step.get().step.id.clone(),
            Err(_) => convert::string(&value, &format!("{function}: workspace_from"))?,
        }),
    };
    let artifacts = match options.take("artifacts")? {
        None => Vec::new(),
        Some(value) if value.is_instance_of::<pyo3::types::PyString>() => {
            vec![convert::string(&value, &format!("{function}: artifacts"))?]
        }
        Some(value) => convert::string_list(&value, &format!("{function}: artifacts"))?,
    };
    let needs_artifacts = match options.take("needs_artifacts")? {
        None => Vec::new(),
        Some(value) => dependency_ids(&value, function, "needs_artifacts")?,
    };
    Ok((workspace_from, artifacts, needs_artifacts))
}

/// `depends_on` accepts a step id, a `Step`, or a list of either; repeats are dropped.
fn dependency_ids(value: &Bound<'_, PyAny>, function: &str, option: &str) -> PyResult<Vec<String>> {
    let what = format!("{function}: {option}");
    let items =
        if value.is_instance_of::<PyList>() || value.is_instance_of::<pyo3::types::PyTuple>() {
            convert::sequence(value, &what)?
        } else {
            vec![value.clone()]
        };
    let mut ids: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let id = match item.cast::<StepObject>() {
            Ok(step) => step.get().step.id.clone(),
            Err(_) => convert::string(item, &format!("{what}[{i}]"))?,
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// `"gpu=true,zone=eu"` → labels.
fn runner_labels(text: &str, function: &str) -> PyResult<BTreeMap<String, String>> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            part.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| PyValueError::new_err(format!("{function}: runner labels must look like 'key=value,key2=value2', got '{text}'")))
        })
        .collect()
}

/// What starts a run. Make one with `Trigger.on_push`, `Trigger.on_pull_request`,
/// `Trigger.on_schedule`, `Trigger.manual`, `Trigger.on_issue` or `Trigger.on_comment`.
#[pyclass(module = "plue", name = "Trigger", frozen, immutable_type)]
pub(crate) struct TriggerObject {
    pub(crate) trigger: Trigger,
    pub(crate) location: Location,
}

#[pymethods]
impl TriggerObject {
    /// `Trigger.on_push(branch=None, branches=None, tags=None, paths=None, paths_ignore=None)`.
    /// With neither branches nor tags, every branch and tag push matches.
    #[staticmethod]
    #[pyo3(signature = (**options))]
    fn on_push(py: Python<'_>, options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let location = caller(py);
        let mut options = Options::new("Trigger.on_push()", options, &[]);
        let mut branches = branch_globs(&mut options)?;
        let mut tags = options
            .take("tags")?
            .map(|v| convert::string_list(&v, "Trigger.on_push(): tags"))
            .transpose()?;
        let (paths, paths_ignore) = path_filters(&mut options)?;
        options.finish()?;
        if branches.is_none() && tags.is_none() {
            branches = Some(vec!["**".into()]);
            tags = Some(vec!["**".into()]);
        }
        let trigger = Trigger::Push {
            branches: branches.unwrap_or_default(),
            tags: tags.unwrap_or_default(),
            paths,
            paths_ignore,
        };
        Ok(TriggerObject { trigger, location })
    }

    /// `Trigger.on_pull_request(branch=None, branches=None, actions=None, paths=None,
    /// paths_ignore=None)`: `branches` match the base branch; actions default to opened,
    /// synchronize and reopened.
    #[staticmethod]
    #[pyo3(signature = (**options))]
    fn on_pull_request(py: Python<'_>, options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let location = caller(py);
        let mut options = Options::new("Trigger.on_pull_request()", options, &[]);
        let branches = branch_globs(&mut options)?.unwrap_or_else(|| vec!["**".into()]);
        let actions = options
            .take("actions")?
            .map(|v| convert::string_list(&v, "Trigger.on_pull_request(): actions"))
            .transpose()?
            .unwrap_or_else(|| {
                ["opened", "synchronize", "reopened"]
                    .map(String::from)
                    .to_vec()
            });
        let (paths, paths_ignore) = path_filters(&mut options)?;
        options.finish()?;
        Ok(TriggerObject {
            trigger: Trigger::PullRequest {
                branches,
                actions,
                paths,
                paths_ignore,
            },
            location,
        })
    }

    /// `Trigger.on_schedule(cron)`: a 5-field cron expression in UTC.
    #[staticmethod]
    #[pyo3(signature = (cron, **options))]
    fn on_schedule(
        py: Python<'_>,
        cron: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let location = caller(py);
        Options::new("Trigger.on_schedule()", options, &["cron"]).finish()?;
        let cron = convert::string(cron, "Trigger.on_schedule(): cron")?;
        Ok(TriggerObject {
            trigger: Trigger::Schedule { cron },
            location,
        })
    }

    /// `Trigger.manual(inputs=None)`: each input maps to its default (a str, int, float or
    /// bool), to `None` (required), or to a dict with `default`, `required`, `description`,
    /// `options` and `type` (`"string"`, `"boolean"` or `"number"`; by default the type of
    /// `default`: a bool makes a boolean, an int or float a number). A dispatch must give a
    /// boolean as `true`/`false` and a number as a decimal number; `ctx.inputs` holds text.
    #[staticmethod]
    #[pyo3(signature = (**options))]
    fn manual(py: Python<'_>, options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let location = caller(py);
        let mut options = Options::new("Trigger.manual()", options, &[]);
        let mut inputs = BTreeMap::new();
        if let Some(value) = options.take("inputs")? {
            let dict = value
                .cast::<PyDict>()
                .map_err(|_| PyTypeError::new_err("Trigger.manual(): inputs must be a dict"))?;
            for (name, spec) in dict.iter() {
                let name = convert::string(&name, "Trigger.manual(): input name")?;
                inputs.insert(name.clone(), manual_input(&name, &spec)?);
            }
        }
        options.finish()?;
        Ok(TriggerObject {
            trigger: Trigger::Manual { inputs },
            location,
        })
    }

    /// `Trigger.on_issue(actions=["opened"], labels=[], authors="write", others="ignore")`:
    /// an issue event whose action is listed (GitHub's names; Gitea's label changes are
    /// `labeled`/`unlabeled`). With `labels`, the label added (or, when the forge does not
    /// say which, one of the issue's labels) must be listed. `authors` is the least
    /// permission on the repository (`"write"`, `"maintain"` or `"admin"`) of whoever caused
    /// the event (who opened the issue, who added the label); for anyone else
    /// `others="ignore"` starts nothing and `others="untrusted"` starts a run treated like
    /// a fork's (no secrets, no environment, only runners that accept forks).
    #[staticmethod]
    #[pyo3(signature = (**options))]
    fn on_issue(py: Python<'_>, options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let location = caller(py);
        let mut options = Options::new("Trigger.on_issue()", options, &[]);
        let actions = names_option(&mut options, "actions", &["opened"])?;
        let labels = names_option(&mut options, "labels", &[])?;
        let (authors, others) = summoners(&mut options)?;
        options.finish()?;
        Ok(TriggerObject {
            trigger: Trigger::Issue {
                actions,
                labels,
                authors,
                others,
            },
            location,
        })
    }

    /// `Trigger.on_comment(pattern=r"^/plue\s+fix\b", on=["issue", "pull_request"],
    /// actions=["created"], authors="write", others="ignore")`: a comment whose body
    /// matches `pattern` (a Rust regex, searched anywhere in the body unless anchored) on an
    /// issue or a pull request. A comment on a pull request evaluates the workflow files at
    /// the pull request's base, never its head. `authors` and `others` are as for
    /// `Trigger.on_issue`, checked against the commenter.
    #[staticmethod]
    #[pyo3(signature = (**options))]
    fn on_comment(py: Python<'_>, options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let location = caller(py);
        let mut options = Options::new("Trigger.on_comment()", options, &[]);
        let pattern = match options.take("pattern")? {
            Some(value) => convert::string(&value, "Trigger.on_comment(): pattern")?,
            None => return Err(PyTypeError::new_err(
                "Trigger.on_comment(): pattern= is required, e.g. pattern=r\"^/plue\\s+fix\\b\"",
            )),
        };
        let on = names_option(&mut options, "on", &["issue", "pull_request"])?;
        let actions = names_option(&mut options, "actions", &["created"])?;
        let (authors, others) = summoners(&mut options)?;
        options.finish()?;
        Ok(TriggerObject {
            trigger: Trigger::Comment {
                pattern,
                on,
                actions,
                authors,
                others,
            },
            location,
        })
    }

    #[getter]
    fn kind(&self) -> &'static str {
        self.trigger.kind()
    }

    /// Equal when the data is equal, never by identity.
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        self.trigger == other.get().trigger
    }

    /// Unhashable: a hash by identity would make `set()` order depend on addresses.
    fn __hash__(&self) -> PyResult<isize> {
        Err(unhashable("Trigger"))
    }

    fn __repr__(&self) -> String {
        format!("Trigger({})", self.trigger.kind())
    }
}

/// A list-of-names option (a single string is a list of one), `default` when not given.
fn names_option(
    options: &mut Options<'_>,
    name: &'static str,
    default: &[&str],
) -> PyResult<Vec<String>> {
    let function = options.function();
    Ok(options
        .take(name)?
        .map(|v| convert::string_list(&v, &format!("{function}: {name}")))
        .transpose()?
        .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect()))
}

/// `authors=` and `others=` of an issue or comment trigger, each one of its closed set.
fn summoners(options: &mut Options<'_>) -> PyResult<(Authors, Others)> {
    let function = options.function();
    let authors = match options.take("authors")? {
        None => Authors::Write,
        Some(value) => {
            let name = convert::string(&value, &format!("{function}: authors"))?;
            Authors::parse(&name).ok_or_else(|| {
                let hint = did_you_mean(&name, Authors::NAMES);
                PyValueError::new_err(format!(
                    "{function}: authors='{}'{hint}: expected one of {}",
                    crate::template::echo(&name),
                    Authors::NAMES.join(", ")
                ))
            })?
        }
    };
    let others = match options.take("others")? {
        None => Others::Ignore,
        Some(value) => {
            let name = convert::string(&value, &format!("{function}: others"))?;
            Others::parse(&name).ok_or_else(|| {
                let hint = did_you_mean(&name, Others::NAMES);
                PyValueError::new_err(format!(
                    "{function}: others='{}'{hint}: expected one of {}",
                    crate::template::echo(&name),
                    Others::NAMES.join(", ")
                ))
            })?
        }
    };
    Ok((authors, others))
}

fn branch_globs(options: &mut Options<'_>) -> PyResult<Option<Vec<String>>> {
    let function = options.function();
    let branch = options
        .take("branch")?
        .map(|v| convert::string_list(&v, &format!("{function}: branch")))
        .transpose()?;
    let branches = options
        .take("branches")?
        .map(|v| convert::string_list(&v, &format!("{function}: branches")))
        .transpose()?;
    match (branch, branches) {
        (Some(_), Some(_)) => Err(PyTypeError::new_err(format!(
            "{function}: give branch= or branches=, not both"
        ))),
        (one, other) => Ok(one.or(other)),
    }
}

fn path_filters(options: &mut Options<'_>) -> PyResult<(Vec<String>, Vec<String>)> {
    let function = options.function();
    let paths = options
        .take("paths")?
        .map(|v| convert::string_list(&v, &format!("{function}: paths")))
        .transpose()?
        .unwrap_or_default();
    let ignore = options
        .take("paths_ignore")?
        .map(|v| convert::string_list(&v, &format!("{function}: paths_ignore")))
        .transpose()?
        .unwrap_or_default();
    Ok((paths, ignore))
}

fn manual_input(name: &str, spec: &Bound<'_, PyAny>) -> PyResult<ManualInput> {
    let what = format!("Trigger.manual(): input '{name}'");
    if spec.is_none() {
        return Ok(ManualInput {
            default: None,
            required: true,
            description: None,
            options: vec![],
            kind: InputKind::String,
        });
    }
    let Ok(dict) = spec.cast::<PyDict>() else {
        return Ok(ManualInput {
            default: Some(convert::scalar_string(spec, &what)?),
            required: false,
            description: None,
            options: vec![],
            kind: kind_of(spec),
        });
    };
    let mut options = Options::new("Trigger.manual() input", Some(dict), &[]);
    let default_value = options.take("default")?;
    let default = default_value
        .as_ref()
        .map(|v| convert::scalar_string(v, &format!("{what} default")))
        .transpose()?;
    let required = options
        .take("required")?
        .map(|v| v.is_truthy())
        .transpose()?
        .unwrap_or(default.is_none());
    let description =
        convert::optional_string(options.take("description")?, &format!("{what} description"))?;
    let choices = options
        .take("options")?
        .map(|v| convert::string_list(&v, &format!("{what} options")))
        .transpose()?
        .unwrap_or_default();
    let kind = match options.take("type")? {
        Some(value) => {
            let name = convert::string(&value, &format!("{what} type"))?;
            InputKind::parse(&name).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "{what} type must be \"string\", \"boolean\" or \"number\", not {name:?}"
                ))
            })?
        }
        None => default_value.as_ref().map_or(InputKind::String, kind_of),
    };
    options.finish()?;
    Ok(ManualInput {
        default,
        required,
        description,
        options: choices,
        kind,
    })
}

/// The input type a default's Python type implies: `bool` a boolean, `int`/`float` a number.
fn kind_of(value: &Bound<'_, PyAny>) -> InputKind {
    if value.is_instance_of::<pyo3::types::PyBool>() {
        InputKind::Boolean
    } else if value.is_instance_of::<pyo3::types::PyInt>()
        || value.is_instance_of::<pyo3::types::PyFloat>()
    {
        InputKind::Number
    } else {
        InputKind::String
    }
}

/// `ctx`: read-only facts about the triggering event.
#[pyclass(module = "plue", name = "Context", frozen, immutable_type)]
pub(crate) struct ContextObject {
    ctx: EvalContext,
}

#[pymethods]
impl ContextObject {
    /// `push`, `pull_request`, `schedule`, `manual`, `issue` or `comment`.
    #[getter]
    fn event(&self) -> &'static str {
        self.ctx.event.as_str()
    }
    #[getter]
    fn repo(&self) -> &str {
        &self.ctx.repo
    }
    #[getter(r#ref)]
    fn git_ref(&self) -> &str {
        &self.ctx.git_ref
    }
    #[getter]
    fn branch(&self) -> Option<&str> {
        self.ctx.branch.as_deref()
    }
    #[getter]
    fn sha(&self) -> &str {
        &self.ctx.sha
    }
    /// `None` unless the event is a pull request.
    #[getter]
    fn pr(&self) -> Option<PullRequestObject> {
        self.ctx.pr.as_ref().map(|pr| PullRequestObject {
            number: pr.number,
            base: pr.base.clone(),
            head: pr.head.clone(),
            action: pr.action.clone(),
        })
    }
    /// A new list on each access.
    #[getter]
    fn changed_files(&self) -> Vec<String> {
        self.ctx.changed_files.clone()
    }
    /// A new dict on each access.
    #[getter]
    fn inputs(&self) -> BTreeMap<String, String> {
        self.ctx.inputs.clone()
    }
    /// `None` unless the event is `issue` or `comment`: the issue (or pull request) with
    /// `number`, `title`, `body`, `labels`, `author` and `url`. Text its author wrote: paste
    /// it into a prompt's inputs or read it from `PLUE_ISSUE_*` in a step, never into code.
    #[getter]
    fn issue(&self) -> Option<IssueObject> {
        self.ctx.issue.as_ref().map(|issue| IssueObject {
            number: issue.number,
            title: issue.title.clone(),
            body: issue.body.clone(),
            labels: issue.labels.clone(),
            author: issue.author.clone(),
            url: issue.url.clone(),
        })
    }
    /// `None` unless the event is `comment`: the comment with `id`, `body`, `author` and
    /// `association` (the forge's word for the commenter's relation to the repository).
    #[getter]
    fn comment(&self) -> Option<CommentObject> {
        self.ctx.comment.as_ref().map(|comment| CommentObject {
            id: comment.id,
            body: comment.body.clone(),
            author: comment.author.clone(),
            association: comment.association.clone(),
        })
    }
    /// Equal when the data is equal, never by identity.
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        self.ctx == other.get().ctx
    }

    /// Unhashable: a hash by identity would make `set()` order depend on addresses.
    fn __hash__(&self) -> PyResult<isize> {
        Err(unhashable("ctx"))
    }

    fn __repr__(&self) -> String {
        format!(
            "ctx(event={:?}, repo={:?}, ref={:?}, sha={:?})",
            self.ctx.event.as_str(),
            self.ctx.repo,
            self.ctx.git_ref,
            self.ctx.sha
        )
    }
}

/// `ctx.pr`: the pull request of a `pull_request` event.
#[pyclass(module = "plue", name = "PullRequest", frozen, immutable_type, get_all)]
pub(crate) struct PullRequestObject {
    number: u64,
    base: String,
    head: String,
    action: String,
}

#[pymethods]
impl PullRequestObject {
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        let other = other.get();
        (self.number, &self.base, &self.head, &self.action)
            == (other.number, &other.base, &other.head, &other.action)
    }

    fn __hash__(&self) -> PyResult<isize> {
        Err(unhashable("ctx.pr"))
    }
}

/// `ctx.issue`: the issue (or pull request) of an `issue` or `comment` event.
#[pyclass(module = "plue", name = "Issue", frozen, immutable_type, get_all)]
pub(crate) struct IssueObject {
    number: u64,
    title: String,
    body: String,
    labels: Vec<String>,
    author: String,
    url: String,
}

#[pymethods]
impl IssueObject {
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        let other = other.get();
        (
            self.number,
            &self.title,
            &self.body,
            &self.labels,
            &self.author,
            &self.url,
        ) == (
            other.number,
            &other.title,
            &other.body,
            &other.labels,
            &other.author,
            &other.url,
        )
    }

    fn __hash__(&self) -> PyResult<isize> {
        Err(unhashable("ctx.issue"))
    }
}

/// `ctx.comment`: the comment of a `comment` event.
#[pyclass(module = "plue", name = "Comment", frozen, immutable_type, get_all)]
pub(crate) struct CommentObject {
    id: u64,
    body: String,
    author: String,
    association: String,
}

#[pymethods]
impl CommentObject {
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        let other = other.get();
        (self.id, &self.body, &self.author, &self.association)
            == (other.id, &other.body, &other.author, &other.association)
    }

    fn __hash__(&self) -> PyResult<isize> {
        Err(unhashable("ctx.comment"))
    }
}

/// The error of `hash()` on a host object (and so of putting one in a `set` or using it
/// as a dict key): identity hashes would make a plan depend on memory addresses.
fn unhashable(what: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "unhashable type: '{what}' (Plue objects cannot go in a set or be dict keys, so a plan never depends on memory addresses; deduplicate by id, e.g. {{s.id: s for s in steps}}.values())"
    ))
}

/// Refuses a plan whose templates hold a reference written in this evaluation's `ctx`:
/// ctx text reaches workflow code escaped ([`EvalContext::as_template_text`]), and a
/// reference from it in a plan means the escape was lost on the way (`repr()` and
/// `json.dumps()` double the backslash, a `replace()` may drop it) — expanded, an upstream
/// output would be pasted where the workflow meant a branch or file name.
fn refuse_ctx_references(plan: &Plan) -> PyResult<()> {
    CTX_REFERENCES.with(|known| {
        let known = known.borrow();
        if known.is_empty() {
            return Ok(());
        }
        let mut refused = None;
        let _ = crate::template::sites(plan, &mut |site| {
            // A template that does not parse is reported by validation.
            let Ok(template) = crate::template::Template::parse(site.text) else {
                return std::ops::ControlFlow::Continue(());
            };
            let Some(written) = template
                .sources
                .iter()
                .map(|source| &site.text[source.clone()])
                .find(|written| known.contains(*written))
            else {
                return std::ops::ControlFlow::Continue(());
            };
            let owner = match site.step {
                Some(i) => format!("step '{}'", crate::template::echo(&plan.steps[i].id)),
                None => "the plan".into(),
            };
            refused = Some(format!(
                "Plan(): {owner}: {}: '{}' is text from ctx (a branch, file name or input), which never becomes a reference, but its escape was lost on the way (repr() and json.dumps() double the backslash of '\\{{{{', a replace() may drop it); paste ctx text as it is or with shlex.quote()",
                site.what,
                crate::template::echo(written)
            ));
            std::ops::ControlFlow::Break(())
        });
        refused.map_or(Ok(()), |message| Err(PyValueError::new_err(message)))
    })
}

/// Makes the `ctx` object for one evaluation. Its strings are template text
/// ([`EvalContext::as_template_text`]): a `{{` in a branch or file name reaches a step as
/// written, never as a reference.
pub(crate) fn context<'py>(
    py: Python<'py>,
    ctx: EvalContext,
) -> PyResult<Bound<'py, ContextObject>> {
    CTX_REFERENCES.with(|known| *known.borrow_mut() = ctx.reference_texts());
    Bound::new(
        py,
        ContextObject {
            ctx: ctx.as_template_text(),
        },
    )
}

/// The `plue` module that workflows import.
pub(crate) fn plue_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let module = PyModule::new(py, "plue")?;
    module.add_class::<PlanObject>()?;
    module.add_class::<StepObject>()?;
    module.add_class::<TriggerObject>()?;
    module.add_class::<super::safe_outputs::SafeOutputsObject>()?;
    module.add_class::<super::caches::CacheObject>()?;
    Ok(module)
}
