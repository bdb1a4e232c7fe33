//! Validation of a plan as a whole: everything that a single constructor call cannot see.
//!
//! Pure functions over [`Plan`] and [`SourceMap`]. Every problem is reported (not only the
//! first), each at the place in the file that caused it. The parent process runs this on
//! whatever a worker returns, so a worker that was subverted still cannot hand the engine
//! an invalid plan.
//!
//! Why one file past ~600 lines: every whole-plan rule in one pass over the plan, each rule
//! short; its tests are in `validate/tests.rs`.

use std::collections::{HashMap, HashSet};

use croner::parser::{CronParser, Seconds, Year};

use crate::diagnostic::{Budget, Diagnostic, Found};
use crate::limits::Limits;
use crate::plan::{Action, Location, Plan, SourceMap, Step, StepKind, Trigger, DEFAULT_LLM_TOOLS};
use crate::summon;
use crate::template;

/// Pull request actions a trigger may name (GitHub's names; Gitea's `synchronized` is
/// normalised to `synchronize` when events are matched).
pub const PULL_REQUEST_ACTIONS: [&str; 12] = [
    "opened",
    "synchronize",
    "reopened",
    "closed",
    "edited",
    "labeled",
    "unlabeled",
    "assigned",
    "unassigned",
    "ready_for_review",
    "converted_to_draft",
    "review_requested",
];

/// Upper bounds on per-step numbers, so a typo cannot park a runner for a year.
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
const MAX_RETRIES: u32 = 20;
const MAX_BACKOFF_SECS: u64 = 3600;
const MAX_TURNS: u32 = 500;

/// Why `usd` is no usable cost limit (`max_cost_usd`, `budget_usd`), if it is not: it must
/// be finite, above 0 and at most [`crate::plan::MAX_COST_USD`]. A plan read from JSON
/// reaches here without the host's checks.
fn usd_problem(usd: f64) -> Option<String> {
    (!usd.is_finite() || usd <= 0.0 || usd > crate::plan::MAX_COST_USD).then(|| {
        format!(
            "must be above 0 and at most {} US dollars, got {usd}",
            crate::plan::MAX_COST_USD
        )
    })
}
const MAX_ID_LEN: usize = crate::bounds::MAX_NAME_LEN;
/// Most problems reported for one file; the rest are counted in a last line.
pub const MAX_DIAGNOSTICS: usize = crate::diagnostic::MAX_DIAGNOSTICS;

/// Checks `plan` and returns every problem found (at most [`MAX_DIAGNOSTICS`], the last
/// saying how many more), in file order. Sizes and strings are checked first
/// ([`crate::bounds`]); only a plan that passes them is looked at item by item. No
/// deadline: for `plue check` and tests; the pool uses [`validate_within`].
pub fn validate(plan: &Plan, map: &SourceMap, limits: &Limits, path: &str) -> Vec<Diagnostic> {
    validate_within(plan, map, limits, path, &mut Budget::unlimited_time())
}

/// [`validate`] spending at most `budget`: one suggestion budget for the whole plan, and
/// a deadline every check looks at inside its loops. Past the deadline validation stops
/// and answers one line ([`Budget::expired_message`]) instead of what it found so far.
///
/// Cost: linear in the plan (its size is bounded first), plus at most
/// [`crate::loops::MAX_LOOPS_PER_PLAN`] walks of the dependency graph and the capped
/// suggestions; no pass is quadratic in the number of steps or list items.
pub fn validate_within(
    plan: &Plan,
    map: &SourceMap,
    limits: &Limits,
    path: &str,
    budget: &mut Budget,
) -> Vec<Diagnostic> {
    let found = checked(plan, map, limits, path, budget);
    if budget.expired() {
        return vec![Diagnostic::whole_file(path, budget.expired_message())];
    }
    found
}

fn checked(
    plan: &Plan,
    map: &SourceMap,
    limits: &Limits,
    path: &str,
    budget: &mut Budget,
) -> Vec<Diagnostic> {
    if budget.expired() {
        return Vec::new();
    }
    let canonical = plan.canonical_json();
    let bounded = crate::bounds::check(plan, canonical.len(), map, limits, path);
    if !bounded.is_empty() {
        return bounded;
    }
    let mut problems = Problems {
        found: Found::new(path),
        budget,
    };
    if plan.name.trim().is_empty() {
        problems.add(map.plan, "the plan's name must not be empty".into());
    }
    for key in plan.env.keys() {
        check_env_name(&mut problems, map.plan, "env", key);
        check_reserved_env(&mut problems, map.plan, "the plan", key);
    }
    for (index, trigger) in plan.triggers.iter().enumerate() {
        if problems.budget.expired() {
            return Vec::new();
        }
        check_trigger(&mut problems, map.trigger(index), trigger);
    }
    if plan.max_parallel == Some(0) || plan.max_parallel > Some(crate::plan::MAX_PARALLEL) {
        problems.add(
            map.plan,
            format!(
                "max_parallel must be between 1 and {}",
                crate::plan::MAX_PARALLEL
            ),
        );
    }
    if let Some(usd) = plan.budget_usd {
        if let Some(problem) = usd_problem(usd) {
            problems.add(map.plan, format!("budget_usd {problem}"));
        }
    }
    if let Some(concurrency) = &plan.concurrency {
        if concurrency.group.trim().is_empty() {
            problems.add(map.plan, "the concurrency group must not be empty".into());
        } else if let Err(message) = crate::concurrency::parse(&concurrency.group) {
            problems.add(map.plan, message.to_string());
        }
    }
    check_steps(&mut problems, plan, map);
    check_dag(&mut problems, plan, map);
    if problems.budget.expired() {
        return Vec::new();
    }
    crate::loops::check(plan, map, problems.budget, &mut problems.found);
    if problems.budget.expired() {
        return Vec::new();
    }
    for diagnostic in template::check(plan, map, path, problems.budget) {
        problems.found.push(diagnostic);
    }
    if let Some(address) = memory_address(&canonical) {
        problems.add(
            map.plan,
            format!("the plan contains a memory address ('{address}'), probably from str() of a function or object; it would change on every evaluation"),
        );
    }
    problems.found.finish()
}

/// A step's `caches=` ([`crate::caches::check`]), only on a step that starts a process.
fn check_caches(problems: &mut Problems<'_>, at: Location, step: &Step) {
    if step.caches.is_empty() {
        return;
    }
    if !step.action.step_kind().starts_process() {
        problems.add(
            at,
            format!(
                "{} step '{}' takes no caches= (only {} steps have caches)",
                step.action.kind(),
                step.id,
                StepKind::listed(StepKind::starts_process, "", "and"),
            ),
        );
        return;
    }
    for problem in crate::caches::check(&step.caches) {
        problems.add(at, format!("step '{}': {problem}", step.id));
    }
}

/// A step's `id_tokens=` ([`crate::id_tokens::check`]), on a kind that takes them. An
/// approval's are refused below with the other options of steps that run.
fn check_id_tokens(problems: &mut Problems<'_>, at: Location, step: &Step) {
    if step.id_tokens.is_empty() {
        return;
    }
    let kind = step.action.step_kind();
    if let Some(why) = crate::id_tokens::refusal(kind) {
        if kind.runs_on_runner() {
            problems.add(
                at,
                format!(
                    "{kind} step '{}' takes no id_tokens= ({why}; only {} steps do)",
                    step.id,
                    crate::id_tokens::kinds_taking("", "and"),
                ),
            );
        }
        return;
    }
    for problem in crate::id_tokens::check(step) {
        problems.add(at, format!("step '{}': {problem}", step.id));
    }
}

/// What validation found so far (bounded, see [`Found`]) and what it may still spend.
struct Problems<'a> {
    found: Found,
    /// The plan's one suggestion budget and deadline.
    budget: &'a mut Budget,
}

impl Problems<'_> {
    fn add(&mut self, location: Location, message: String) {
        self.found.add(location, message);
    }
}

fn check_trigger(problems: &mut Problems<'_>, at: Location, trigger: &Trigger) {
    for (what, globs) in trigger.globs() {
        check_globs(problems, at, what, globs);
    }
    match trigger {
        Trigger::Push { .. } => {}
        Trigger::PullRequest { actions, .. } => {
            for action in actions {
                if !PULL_REQUEST_ACTIONS.contains(&action.as_str()) {
                    let hint = problems.budget.did_you_mean(action, PULL_REQUEST_ACTIONS);
                    problems.add(
                        at,
                        format!(
                            "unknown pull request action '{action}'{hint}; expected one of {}",
                            PULL_REQUEST_ACTIONS.join(", ")
                        ),
                    );
                }
            }
        }
        Trigger::Schedule { cron } => {
            if let Err(message) = check_cron(cron) {
                problems.add(at, message.to_string());
            }
        }
        Trigger::Issue { actions, .. } => {
            check_names(
                problems,
                at,
                "issue action",
                actions,
                &summon::ISSUE_ACTIONS,
            );
        }
        Trigger::Comment {
            pattern,
            on,
            actions,
            ..
        } => {
            if let Err(message) = summon::compile_pattern(pattern) {
                problems.add(at, message.to_string());
            }
            if on.is_empty() {
                problems.add(
                    at,
                    "on= of a comment trigger must name 'issue', 'pull_request' or both".into(),
                );
            }
            check_names(problems, at, "comment target", on, &summon::COMMENT_ON);
            check_names(
                problems,
                at,
                "comment action",
                actions,
                &summon::COMMENT_ACTIONS,
            );
        }
        Trigger::Manual { inputs } => {
            for (name, input) in inputs {
                if !is_identifier(name) {
                    problems.add(at, format!("manual input name '{name}' must be letters, digits, '_' or '-', starting with a letter or '_'"));
                }
                if let Some(default) = &input.default {
                    if !input.options.is_empty() && !input.options.contains(default) {
                        problems.add(at, format!("manual input '{name}': default '{default}' is not one of its options ({})", input.options.join(", ")));
                    } else if !input.kind.accepts(default) {
                        problems.add(
                            at,
                            format!(
                                "manual input '{name}': default '{default}' is not a {} value",
                                input.kind.as_str()
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Each of `names` one of `known`, with a suggestion for a near miss.
fn check_names(
    problems: &mut Problems<'_>,
    at: Location,
    what: &str,
    names: &[String],
    known: &[&str],
) {
    for name in names {
        if !known.contains(&name.as_str()) {
            let hint = problems.budget.did_you_mean(name, known.iter().copied());
            problems.add(
                at,
                format!(
                    "unknown {what} '{name}'{hint}; expected one of {}",
                    known.join(", ")
                ),
            );
        }
    }
}

/// A cron expression [`check_cron`] or [`parse_cron`] refused.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// Not 5 fields (and not a `@daily`-style nickname).
    #[error(
        "invalid cron expression '{expression}': expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
    )]
    FieldCount { expression: String, fields: usize },
    /// 5 fields that `croner` does not accept.
    #[error("invalid cron expression '{expression}': {source}")]
    Parse {
        expression: String,
        source: croner::errors::CronError,
    },
}

/// Checks a 5-field cron expression (minute hour day-of-month month day-of-week, UTC).
pub fn check_cron(expression: &str) -> Result<(), CronError> {
    let fields = expression.split_whitespace().count();
    if fields != 5 && !expression.trim_start().starts_with('@') {
        return Err(CronError::FieldCount {
            expression: expression.to_owned(),
            fields,
        });
    }
    parse_cron(expression).map(|_| ())
}

/// Parses a cron expression the way [`check_cron`] accepts it (no seconds, no year), for
/// computing fire times.
pub fn parse_cron(expression: &str) -> Result<croner::Cron, CronError> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|source| CronError::Parse {
            expression: expression.to_owned(),
            source,
        })
}

/// Each glob compiled exactly as trigger matching compiles it ([`crate::glob`]).
fn check_globs(problems: &mut Problems<'_>, at: Location, what: &str, globs: &[String]) {
    for glob in globs {
        if glob.is_empty() {
            problems.add(at, format!("empty {what} pattern"));
        } else if let Err(e) = crate::glob::compile(glob) {
            problems.add(at, format!("invalid {what} pattern '{glob}': {e}"));
        }
    }
}

fn check_steps(problems: &mut Problems<'_>, plan: &Plan, map: &SourceMap) {
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let steps = StepIndex::new(plan);
    for (index, step) in plan.steps.iter().enumerate() {
        if problems.budget.expired() {
            return;
        }
        let at = map.step(index);
        if !is_identifier(&step.id) || step.id.len() > MAX_ID_LEN {
            problems.add(
                at,
                format!("invalid step id '{}': use at most {MAX_ID_LEN} letters, digits, '_' or '-', starting with a letter or '_'", step.id),
            );
        }
        if let Some(&first) = first_seen.get(step.id.as_str()) {
            problems.add(
                at,
                format!(
                    "duplicate step id '{}' (first defined at line {})",
                    step.id,
                    map.step(first).line
                ),
            );
        } else {
            first_seen.insert(&step.id, index);
        }
        if step.timeout == 0 || step.timeout > MAX_TIMEOUT_SECS {
            problems.add(
                at,
                format!(
                    "step '{}': timeout must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {}",
                    step.id, step.timeout
                ),
            );
        }
        if step.retries > MAX_RETRIES {
            problems.add(
                at,
                format!(
                    "step '{}': retries must be at most {MAX_RETRIES}, got {}",
                    step.id, step.retries
                ),
            );
        }
        if step.backoff > MAX_BACKOFF_SECS {
            problems.add(
                at,
                format!(
                    "step '{}': backoff must be at most {MAX_BACKOFF_SECS} seconds, got {}",
                    step.id, step.backoff
                ),
            );
        }
        for key in step.env.keys() {
            check_env_name(problems, at, "env", key);
            check_reserved_env(problems, at, &format!("step '{}'", step.id), key);
        }
        for name in &step.secrets {
            check_env_name(problems, at, "secret", name);
        }
        check_hand_off(problems, &steps, step, at);
        check_environment(problems, at, step);
        if let Some(network) = &step.network {
            for problem in crate::network::check(network) {
                problems.add(at, format!("step '{}': {problem}", step.id));
            }
        }
        check_caches(problems, at, step);
        check_id_tokens(problems, at, step);
        if !step.action.step_kind().runs_on_runner() {
            // A decision is made once: nothing runs, so retries, secrets and runner labels
            // would be silently ignored.
            let ignored = [
                ("retries", step.retries > 0),
                ("secrets", !step.secrets.is_empty()),
                ("runner", !step.runner.is_empty()),
                ("env", !step.env.is_empty()),
                ("loop_to", step.loop_to.is_some()),
                ("environment", step.environment.is_some()),
                ("network", step.network.is_some()),
                ("id_tokens", !step.id_tokens.is_empty()),
            ];
            for (option, given) in ignored {
                if given {
                    problems.add(
                        at,
                        format!(
                            "{} step '{}' takes no {option}= (nothing runs)",
                            step.action.kind(),
                            step.id
                        ),
                    );
                }
            }
        }
        if let Action::Llm(llm) = &step.action {
            match (&llm.prompt, &llm.prompt_file) {
                (None, None) => problems.add(
                    at,
                    format!("llm step '{}' needs prompt= or prompt_file=", step.id),
                ),
                (Some(_), Some(_)) => problems.add(
                    at,
                    format!(
                        "llm step '{}' takes prompt= or prompt_file=, not both",
                        step.id
                    ),
                ),
                _ => {}
            }
            if let Some(file) = &llm.prompt_file {
                if file.starts_with('/') || file.split('/').any(|part| part == "..") {
                    problems.add(at, format!("llm step '{}': prompt_file '{file}' must be a relative path inside the repository", step.id));
                }
            }
            if llm.max_turns == Some(0) || llm.max_turns.is_some_and(|t| t > MAX_TURNS) {
                problems.add(
                    at,
                    format!(
                        "llm step '{}': max_turns must be between 1 and {MAX_TURNS}",
                        step.id
                    ),
                );
            }
            if llm.max_tokens == Some(0) {
                problems.add(
                    at,
                    format!("llm step '{}': max_tokens must be at least 1", step.id),
                );
            }
            if let Some(problem) = llm.max_cost_usd.and_then(usd_problem) {
                problems.add(
                    at,
                    format!("llm step '{}': max_cost_usd {problem}", step.id),
                );
            }
            for tool in &llm.tools {
                if !DEFAULT_LLM_TOOLS.contains(&tool.as_str()) {
                    let hint = problems.budget.did_you_mean(tool, DEFAULT_LLM_TOOLS);
                    problems.add(
                        at,
                        format!(
                            "llm step '{}': unknown tool '{tool}'{hint}; available: {}",
                            step.id,
                            DEFAULT_LLM_TOOLS.join(", ")
                        ),
                    );
                }
            }
            for problem in llm
                .safe_outputs
                .iter()
                .flat_map(|so| crate::safe_outputs::check(so))
            {
                problems.add(at, format!("llm step '{}': {problem}", step.id));
            }
            for problem in crate::mcp::check(&llm.mcp, &step.secrets, step.network.as_ref()) {
                problems.add(at, format!("llm step '{}': {problem}", step.id));
            }
            for problem in crate::result::check(llm.result.as_ref(), llm.fail_when.as_ref()) {
                problems.add(at, format!("llm step '{}': {problem}", step.id));
            }
            if let Some(system) = &llm.system_prompt {
                if system.trim().is_empty() || system.len() > crate::result::MAX_SYSTEM_PROMPT_BYTES
                {
                    problems.add(
                        at,
                        format!(
                            "llm step '{}': system_prompt must be non-empty and at most {} bytes",
                            step.id,
                            crate::result::MAX_SYSTEM_PROMPT_BYTES
                        ),
                    );
                }
            }
        }
    }
}

/// The steps of a plan by id (the first definition of a duplicated id wins), so that a
/// name is looked up once, not searched for in every step.
struct StepIndex<'a> {
    by_id: HashMap<&'a str, &'a Step>,
}

impl<'a> StepIndex<'a> {
    fn new(plan: &'a Plan) -> StepIndex<'a> {
        let mut by_id = HashMap::with_capacity(plan.steps.len());
        for step in &plan.steps {
            by_id.entry(step.id.as_str()).or_insert(step);
        }
        StepIndex { by_id }
    }

    fn get(&self, id: &str) -> Option<&'a Step> {
        self.by_id.get(id).copied()
    }
}

/// `workspace_from=` and `needs_artifacts=` name dependencies (so what they read is final
/// before the step starts) that run on a runner; `artifacts=` are relative globs that
/// compile as trigger globs do. Each name is looked up in hashed sets: linear in the
/// step's lists.
fn check_hand_off(problems: &mut Problems<'_>, steps: &StepIndex<'_>, step: &Step, at: Location) {
    let runs = |id: &str| steps.get(id).map(|s| s.action.step_kind().runs_on_runner());
    let mut named: Vec<(&str, &str)> = Vec::new();
    if let Some(from) = &step.workspace_from {
        named.push(("workspace_from", from));
    }
    named.extend(
        step.needs_artifacts
            .iter()
            .map(|d| ("needs_artifacts", d.as_str())),
    );
    let dependencies: HashSet<&str> = if named.is_empty() {
        HashSet::new()
    } else {
        step.depends_on.iter().map(String::as_str).collect()
    };
    for (option, dep) in named {
        if !dependencies.contains(dep) {
            let hint = if runs(dep).is_some() {
                format!("; add depends_on=[\"{dep}\"]")
            } else {
                problems
                    .budget
                    .did_you_mean(dep, step.depends_on.iter().map(String::as_str))
            };
            problems.add(
                at,
                format!(
                    "step '{}': {option} '{dep}' is not one of its dependencies{hint}",
                    step.id
                ),
            );
        } else if runs(dep) == Some(false) {
            problems.add(
                at,
                format!(
                    "step '{}': {option} '{dep}' is an approval step, which has no workspace",
                    step.id
                ),
            );
        } else if option == "needs_artifacts"
            && steps.get(dep).is_some_and(|s| s.artifacts.is_empty())
        {
            problems.add(
                at,
                format!(
                    "step '{}': needs_artifacts '{dep}', but step '{dep}' declares no artifacts=",
                    step.id
                ),
            );
        }
    }
    for glob in &step.artifacts {
        let escapes = glob.starts_with('/') || glob.split('/').any(|part| part == "..");
        if escapes {
            problems.add(
                at,
                format!(
                    "step '{}': artifacts pattern '{glob}' must be relative to the workspace (no leading '/', no '..')",
                    step.id
                ),
            );
        }
    }
    check_globs(problems, at, "artifacts", &step.artifacts);
}

/// Whether `name` may name a repository environment (`environment="prod"`):
/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`. The engine's environment API checks the same rule,
/// so every name a step can give is a name a maintainer can define.
pub fn is_environment_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `environment=` of a step that runs: a well-formed name (approval steps take none).
fn check_environment(problems: &mut Problems<'_>, at: Location, step: &Step) {
    let Some(name) = &step.environment else {
        return;
    };
    if !is_environment_name(name) {
        problems.add(
            at,
            format!(
                "step '{}': invalid environment name '{name}': use 1 to 64 letters, digits, '.', '_' and '-', starting with a letter or digit",
                step.id
            ),
        );
    }
}

fn check_env_name(problems: &mut Problems<'_>, at: Location, what: &str, name: &str) {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        problems.add(at, format!("invalid {what} name '{name}': use letters, digits and '_', not starting with a digit"));
    }
}

/// A plan's or step's `env` key that [`crate::plan::reserved_env`] refuses.
fn check_reserved_env(problems: &mut Problems<'_>, at: Location, owner: &str, key: &str) {
    if let Some(why) = crate::plan::reserved_env(key) {
        problems.add(at, format!("{owner} sets '{key}' in env: {why}"));
    }
}

/// Unknown dependencies and cycles.
fn check_dag(problems: &mut Problems<'_>, plan: &Plan, map: &SourceMap) {
    let index: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    for (i, step) in plan.steps.iter().enumerate() {
        if problems.budget.expired() {
            return;
        }
        for dep in &step.depends_on {
            if !index.contains_key(dep.as_str()) {
                let hint = problems.budget.did_you_mean(dep, ids.iter().copied());
                problems.add(
                    map.step(i),
                    format!("step '{}' depends on unknown step '{dep}'{hint}", step.id),
                );
            }
        }
    }
    if let Some(cycle) = find_cycle(plan, &index) {
        let names: Vec<&str> = cycle.iter().map(|&i| plan.steps[i].id.as_str()).collect();
        problems.add(
            map.step(cycle[0]),
            format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
        );
    }
}

/// The first cycle found, as step indices in dependency order, starting from the step
/// declared first. Iterative, so a 1,000-step chain cannot overflow the stack.
fn find_cycle(plan: &Plan, index: &HashMap<&str, usize>) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let edges: Vec<Vec<usize>> = plan
        .steps
        .iter()
        .map(|s| {
            s.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    let mut mark = vec![Mark::New; plan.steps.len()];
    for root in 0..plan.steps.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // (node, next edge to follow)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&dep) = edges[node].get(*next) {
                *next += 1;
                match mark[dep] {
                    Mark::New => {
                        mark[dep] = Mark::OnPath;
                        path.push((dep, 0));
                    }
                    Mark::OnPath => {
                        let start = path
                            .iter()
                            .position(|&(n, _)| n == dep)
                            .expect("a node on the path is in the path");
                        let mut cycle: Vec<usize> = path[start..].iter().map(|&(n, _)| n).collect();
                        // Start the printed cycle at the step declared first, for stable messages.
                        let first = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                        cycle.rotate_left(first);
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                path.pop();
            }
        }
    }
    None
}

/// Letters, digits, `_` and `-`, starting with a letter or `_`.
pub fn is_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Finds `at 0x7f..>` as printed by Python's default `repr`, which differs per process.
fn memory_address(json: &str) -> Option<&str> {
    let mut rest = json;
    while let Some(pos) = rest.find(" at 0x") {
        let tail = &rest[pos + 6..];
        let digits = tail.chars().take_while(|c| c.is_ascii_hexdigit()).count();
        if digits >= 4 && tail[digits..].starts_with('>') {
            return Some(&rest[pos + 1..pos + 6 + digits]);
        }
        rest = &rest[pos + 6..];
    }
    None
}

#[cfg(test)]
mod tests;
