//! Validation of every template in a plan: commands, scripts, env values (the plan's and
//! each step's), llm prompts and every string in llm `inputs`.
//!
//! A template must parse ([`Template::parse`]); each reference must name a step that the
//! step transitively depends on (so its result exists when the step is dispatched), or the
//! outputs of a later step of the same review loop ([`crate::loops`]: the previous
//! iteration's, empty in the first); in a
//! `bash` command or `python` script each reference, raw or not, must stand where it can be
//! expanded safely (an output: where the language itself would expand a variable, so never
//! inside single quotes in bash or a string literal in Python, and never where code reads
//! it as a format string, a template or a pattern). Cost: linear in the plan's text, plus the ancestor sets (one bitset per
//! step, computed only when a plan has references). At most [`MAX_DIAGNOSTICS`] problems.
//!
//! Each step's `when=` expression ([`crate::when_expr`]) is checked here too, with the same
//! rule: its references name transitive dependencies (never the step's own loop feedback).

use std::collections::HashMap;
use std::ops::ControlFlow;

use serde_json::Value;

use super::{bash, echo, python, Field, Template};
use crate::diagnostic::{Budget, Diagnostic};
use crate::loops::Loops;
use crate::plan::{Action, Plan, SourceMap};

/// Template problems reported per plan; the rest are counted in one last message.
pub(crate) const MAX_DIAGNOSTICS: usize = 50;

/// What a template's text becomes, which decides where references may stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Language {
    Bash,
    Python,
    /// Env values, prompts, llm inputs: plain text, never parsed by anyone.
    Text,
}

/// One template of a plan: whose it is, where it sits, its text.
pub(crate) struct Site<'a, 'p> {
    /// The step index, or `None` for the plan's env.
    pub(crate) step: Option<usize>,
    pub(crate) what: What<'a, 'p>,
    pub(crate) text: &'a str,
    pub(crate) language: Language,
}

/// Where a template sits in its step (or the plan): `command`, `script`, `prompt`,
/// `env NAME`, `inputs.a[1].b`. Kept as borrowed parts and rendered only for a message: a
/// string deep in an llm input would otherwise cost its whole path in memory, and a plan
/// can hold hundreds of thousands of strings under long keys.
#[derive(Debug, Clone, Copy)]
pub(crate) enum What<'a, 'p> {
    Command,
    Script,
    Prompt,
    Env(&'a str),
    /// A string in an llm input: the input's name and the keys and indices down to it.
    Input(&'a str, &'p [Part<'a>]),
}

/// One step down into a JSON value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part<'a> {
    Index(usize),
    Key(&'a str),
}

impl std::fmt::Display for What<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            What::Command => f.write_str("command"),
            What::Script => f.write_str("script"),
            What::Prompt => f.write_str("prompt"),
            What::Env(name) => write!(f, "env {name}"),
            What::Input(name, path) => {
                write!(f, "inputs.{name}")?;
                path.iter().try_for_each(|part| match part {
                    Part::Index(i) => write!(f, "[{i}]"),
                    Part::Key(key) => write!(f, ".{key}"),
                })
            }
        }
    }
}

/// Calls `visit` for every template site of `plan` that holds `{{` (text without it has
/// no reference and nothing to check), in plan order, until it breaks. No allocation per
/// string: the path of an llm input's string is one shared stack.
pub(crate) fn sites<'a>(
    plan: &'a Plan,
    visit: &mut dyn FnMut(&Site<'a, '_>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    for (name, value) in &plan.env {
        if value.contains("{{") {
            visit(&Site {
                step: None,
                what: What::Env(name),
                text: value,
                language: Language::Text,
            })?;
        }
    }
    for (index, step) in plan.steps.iter().enumerate() {
        step_sites(index, &step.action, &step.env, visit)?;
    }
    ControlFlow::Continue(())
}

/// [`sites`] of one step: its action's code or prompt and inputs, its env.
pub(crate) fn step_sites<'a>(
    index: usize,
    action: &'a Action,
    env: &'a std::collections::BTreeMap<String, String>,
    visit: &mut dyn FnMut(&Site<'a, '_>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let mut at = |what: What<'a, '_>, text: &'a str, language| {
        if text.contains("{{") {
            visit(&Site {
                step: Some(index),
                what,
                text,
                language,
            })
        } else {
            ControlFlow::Continue(())
        }
    };
    match action {
        Action::Bash { command } => at(What::Command, command, Language::Bash)?,
        Action::Python { script, .. } => at(What::Script, script, Language::Python)?,
        Action::Llm(llm) => {
            if let Some(prompt) = &llm.prompt {
                at(What::Prompt, prompt, Language::Text)?;
            }
            let mut path = Vec::new();
            for (name, value) in &llm.inputs {
                json_strings(value, &mut path, &mut |path, text| {
                    at(What::Input(name, path), text, Language::Text)
                })?;
            }
        }
        // An approval's message is shown as written, never rendered.
        Action::Approval(_) => {}
    }
    for (name, value) in env {
        at(What::Env(name), value, Language::Text)?;
    }
    ControlFlow::Continue(())
}

/// Calls `found(path, text)` for every string in `value` (object keys excepted), `path`
/// being the keys and indices from `value` down to it, until `found` breaks.
fn json_strings<'a>(
    value: &'a Value,
    path: &mut Vec<Part<'a>>,
    found: &mut dyn FnMut(&[Part<'a>], &'a str) -> ControlFlow<()>,
) -> ControlFlow<()> {
    match value {
        Value::String(text) => found(path, text)?,
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Part::Index(i));
                let flow = json_strings(item, path, found);
                path.pop();
                flow?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                path.push(Part::Key(key));
                let flow = json_strings(item, path, found);
                path.pop();
                flow?;
            }
        }
        _ => {}
    }
    ControlFlow::Continue(())
}

/// Every template problem of `plan`, each at its step (or the plan, for plan env); at most
/// `MAX_DIAGNOSTICS` and a last line saying there are more. Suggestions come out of the
/// plan's `budget`; past its deadline this stops (the caller reports it).
pub fn check(plan: &Plan, map: &SourceMap, path: &str, budget: &mut Budget) -> Vec<Diagnostic> {
    let index: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .rev() // the first definition of a duplicated id wins
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut ancestors: Option<Vec<Option<Bits>>> = None;
    let loops = Loops::of(plan);
    let mut found = Vec::new();
    let _ = sites(plan, &mut |site| {
        if budget.expired() {
            return ControlFlow::Break(());
        }
        let Some(message) = site_problem(plan, &index, &mut ancestors, &loops, site, budget) else {
            return ControlFlow::Continue(());
        };
        if found.len() == MAX_DIAGNOSTICS {
            found.push(Diagnostic::at(
                path,
                map.plan,
                format!(
                    "... and more template problems (only the first {MAX_DIAGNOSTICS} are shown)"
                ),
            ));
            return ControlFlow::Break(());
        }
        let (at, owner) = match site.step {
            Some(i) => (map.step(i), format!("step '{}'", echo(&plan.steps[i].id))),
            None => (map.plan, "the plan".to_string()),
        };
        found.push(Diagnostic::at(
            path,
            at,
            format!("{owner}: {}: {message}", site.what),
        ));
        ControlFlow::Continue(())
    });
    for (i, step) in plan.steps.iter().enumerate() {
        let Some(text) = &step.when_expr else {
            continue;
        };
        if found.len() >= MAX_DIAGNOSTICS || budget.expired() {
            break;
        }
        if let Some(message) = when_problem(plan, &index, &mut ancestors, i, text, budget) {
            found.push(Diagnostic::at(
                path,
                map.step(i),
                format!("step '{}': when: {message}", echo(&step.id)),
            ));
        }
    }
    found
}

/// The first problem of step `reader`'s `when=` expression ([`crate::when_expr`]): it must
/// parse, and each reference must name a step `reader` transitively depends on (its result
/// is final when the step is decided; a later step of its loop is not).
fn when_problem(
    plan: &Plan,
    index: &HashMap<&str, usize>,
    ancestors: &mut Option<Vec<Option<Bits>>>,
    reader: usize,
    text: &str,
    budget: &mut Budget,
) -> Option<String> {
    let expr = match crate::when_expr::parse(text) {
        Ok(expr) => expr,
        Err(error) => return Some(error.to_string()),
    };
    for reference in expr.references() {
        let shown = echo(&reference.to_string());
        let Some(&target) = index.get(reference.step.as_str()) else {
            let hint =
                budget.did_you_mean(&reference.step, plan.steps.iter().map(|s| s.id.as_str()));
            return Some(format!(
                "'{shown}' names unknown step '{}'{hint}",
                echo(&reference.step)
            ));
        };
        let sets = ancestors.get_or_insert_with(|| ancestor_sets(plan, index));
        // A step in a dependency cycle has no ancestor set; the cycle is reported.
        let Some(set) = &sets[reader] else { continue };
        if !set.get(target) {
            let fix = if reader == target {
                "a step cannot read its own result".to_string()
            } else {
                format!(
                    "add depends_on=[\"{}\"] to step '{}'",
                    echo(&reference.step),
                    echo(&plan.steps[reader].id)
                )
            };
            return Some(format!(
                "'{shown}' reads step '{}', which is not a dependency; {fix}",
                echo(&reference.step)
            ));
        }
    }
    None
}

/// The first problem of one template, if any.
fn site_problem(
    plan: &Plan,
    index: &HashMap<&str, usize>,
    ancestors: &mut Option<Vec<Option<Bits>>>,
    loops: &Loops,
    site: &Site<'_, '_>,
    budget: &mut Budget,
) -> Option<String> {
    let template = match Template::parse(site.text) {
        Ok(t) => t,
        Err(e) => return Some(e.message),
    };
    for reference in template.references() {
        let Some(&target) = index.get(reference.step.as_str()) else {
            let hint =
                budget.did_you_mean(&reference.step, plan.steps.iter().map(|s| s.id.as_str()));
            return Some(format!(
                "'{}' names unknown step '{}'{hint}",
                echo(&reference.to_string()),
                echo(&reference.step)
            ));
        };
        let sets = ancestors.get_or_insert_with(|| ancestor_sets(plan, index));
        let readers: Vec<usize> = match site.step {
            Some(i) => vec![i],
            None => (0..plan.steps.len()).collect(),
        };
        for reader in readers {
            // A step in a dependency cycle has no ancestor set; the cycle is reported.
            let Some(set) = &sets[reader] else { continue };
            // Rounds: the earlier iterations of a step of the reader's own loop (itself
            // included), data for prompts only.
            if reference.field == Field::Rounds {
                if site.step.is_none() || !loops.same_loop(reader, target) {
                    return Some(format!(
                        "'{}' reads the rounds of step '{}', which is not in this step's review loop: rounds are the earlier iterations of a loop, readable by the steps of that loop",
                        echo(&reference.to_string()),
                        echo(&reference.step)
                    ));
                }
                if site.language != Language::Text {
                    return Some(format!(
                        "'{}' is JSON text for llm prompts and inputs (and env values); read it from a file or an output in code",
                        echo(&reference.to_string())
                    ));
                }
                continue;
            }
            // Loop feedback: a later step of the reader's own loop (one that has the reader
            // as an ancestor) has not run in this iteration; its outputs are the previous
            // iteration's.
            if loops.is_feedback(reader, target) && site.step.is_some() {
                if reference.field == Field::Status {
                    return Some(format!(
                        "'{}' reads the status of step '{}', a later step of the same loop: only its outputs can be read (the previous iteration's, empty in the first)",
                        echo(&reference.to_string()),
                        echo(&reference.step)
                    ));
                }
                continue;
            }
            if !set.get(target) {
                let whose = if site.step.is_some() {
                    String::new()
                } else {
                    format!(
                        " (the plan's env reaches every step, '{}' too)",
                        echo(&plan.steps[reader].id)
                    )
                };
                let fix = if reader == target {
                    "a step cannot read its own result".to_string()
                } else {
                    format!(
                        "add depends_on=[\"{}\"] to step '{}'",
                        echo(&reference.step),
                        echo(&plan.steps[reader].id)
                    )
                };
                return Some(format!(
                    "'{}' reads step '{}', which is not a dependency{whose}; {fix}",
                    echo(&reference.to_string()),
                    echo(&reference.step)
                ));
            }
        }
    }
    let refusals = context_refusals(&template, site.language);
    refusals.into_iter().next()
}

/// What a refusal of a `raw` reference adds.
pub const RAW_TOO: &str = " ('raw' is refused wherever the plain form is: pasted there, the value would be code for whatever reads that text)";

/// Why some reference of `template` (raw or not) cannot stand where it is, in `language`.
fn context_refusals(template: &Template, language: Language) -> Vec<String> {
    if language == Language::Text {
        return Vec::new();
    }
    let (text, at) = template.literal_text();
    let references: Vec<_> = template.references().collect();
    let output = references
        .iter()
        .map(|r| matches!(r.field, Field::Output(_)));
    let why: Vec<Option<&'static str>> = match language {
        Language::Bash => bash::contexts(&text, &at)
            .into_iter()
            .zip(output)
            .zip(bash::format_refusals(&text, &at))
            .map(|((c, output), format)| match output {
                true => c.output_refusal().or(format),
                false => c.refusal(),
            })
            .collect(),
        Language::Python => python::contexts(&text, &at)
            .iter()
            .zip(output)
            .zip(python::format_refusals(&text, &at))
            .map(|((c, output), format)| match output {
                true => c.output_refusal().or(format),
                false => c.refusal(),
            })
            .collect(),
        Language::Text => unreachable!("returned above"),
    };
    // The raw form is refused wherever the plain one is: pasted there, the value would be
    // code for whatever reads that text (a format string, `bash -c '...'`, arithmetic).
    references
        .iter()
        .zip(why)
        .filter_map(|(r, why)| {
            let raw = if r.raw { RAW_TOO } else { "" };
            why.map(|w| format!("'{}': {w}{raw}", echo(&r.to_string())))
        })
        .collect()
}

/// A fixed-size set of step indices.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn union(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

/// For each step, the steps it transitively depends on; `None` for steps on or after a
/// cycle. Kahn's order, so each edge costs one bitset union.
fn ancestor_sets(plan: &Plan, index: &HashMap<&str, usize>) -> Vec<Option<Bits>> {
    let n = plan.steps.len();
    let deps: Vec<Vec<usize>> = plan
        .steps
        .iter()
        .map(|s| {
            let mut d: Vec<usize> = s
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect();
            d.sort_unstable();
            d.dedup();
            d
        })
        .collect();
    let mut dependents = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, d) in deps.iter().enumerate() {
        for &dep in d {
            dependents[dep].push(i);
        }
    }
    let mut sets: Vec<Option<Bits>> = vec![None; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = ready.pop() {
        let mut set = Bits::new(n);
        for &dep in &deps[i] {
            set.set(dep);
            if let Some(of_dep) = &sets[dep] {
                set.union(of_dep);
            }
        }
        sets[i] = Some(set);
        for &next in &dependents[i] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(next);
            }
        }
    }
    sets
}
