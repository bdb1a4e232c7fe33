//! The first pass over a plan in the parent: sizes, counts, string lengths and clean
//! strings, before any per-item work (suggestions, glob compilation, templates, the DAG).
//!
//! Invariant: this pass is linear in the size of the plan and allocates only for the
//! problems it reports, so a hostile plan costs the engine one scan. When it finds a
//! problem, [`crate::validate::validate`] stops there: nothing later ever sees an
//! oversized or unclean string. Every string a workflow can put in a plan has a bound
//! here (long texts — commands, scripts, prompts, env values, llm inputs — are bounded by
//! the plan's byte limit, checked first).

use crate::diagnostic::{Diagnostic, Found};
use crate::glob::MAX_GLOB_LEN;
use crate::limits::{human_bytes, Limits};
use crate::plan::{Action, Location, ManualInput, Plan, SourceMap, Trigger};
use crate::text::{check_clean, quote, TextKind};

/// Longest step id, env or secret name, `id_tokens` variable, label key, input name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest plan name, cron expression, model name, description, input default.
pub const MAX_LINE_LEN: usize = 1024;
/// Longest concurrency group template (its resolved name adds at most the `ctx` values).
pub const MAX_GROUP_LEN: usize = 256;
/// Most triggers, globs per list, env entries, secrets, inputs, options, tools, approvers,
/// `needs_artifacts` entries (`depends_on` is bounded by the step count per step and by
/// [`MAX_DEPENDENCIES`] per plan).
pub const MAX_ITEMS: usize = 100;
/// Most runner labels on a step (as many as a runner may register).
pub const MAX_LABELS: usize = 8;
/// Longest runner label value.
pub const MAX_LABEL_VALUE_LEN: usize = 63;
/// Most globs in a whole plan, and their total size: trigger matching compiles them for
/// every event, on the engine's own CPU.
pub const MAX_GLOBS: usize = 200;
pub const MAX_GLOB_BYTES: usize = 16 * 1024;
/// Most `depends_on` entries in a whole plan (a step alone may depend on every other
/// step, a fan-in): every pass over the graph — cycles, loop regions, the ancestor sets
/// templates are checked against — is linear in them, and some run once per loop.
pub const MAX_DEPENDENCIES: usize = 20_000;

/// Problems with the plan's size and strings; empty when the plan may be validated.
pub fn check(
    plan: &Plan,
    canonical_len: usize,
    map: &SourceMap,
    limits: &Limits,
    path: &str,
) -> Vec<Diagnostic> {
    let mut c = Checker {
        found: Found::new(path),
    };
    if canonical_len > limits.max_plan_bytes {
        c.add(
            map.plan,
            format!(
                "the plan's JSON is {canonical_len} bytes; the limit is {}",
                human_bytes(limits.max_plan_bytes as u64)
            ),
        );
        return c.found.finish();
    }
    if plan.steps.len() > limits.max_steps {
        c.add(
            map.plan,
            format!(
                "the plan has {} steps; the limit is {}",
                plan.steps.len(),
                limits.max_steps
            ),
        );
        return c.found.finish();
    }
    c.line(map.plan, "the plan's name", &plan.name, MAX_LINE_LEN);
    if let Some(concurrency) = &plan.concurrency {
        c.line(
            map.plan,
            "the concurrency group",
            &concurrency.group,
            MAX_GROUP_LEN,
        );
    }
    let (globs, glob_bytes) = glob_totals(plan);
    if globs > MAX_GLOBS || glob_bytes > MAX_GLOB_BYTES {
        c.add(
            map.plan,
            format!("the triggers hold {globs} patterns of {glob_bytes} bytes in all; the limit is {MAX_GLOBS} patterns and {MAX_GLOB_BYTES} bytes"),
        );
    }
    c.count(map.plan, "triggers", plan.triggers.len(), MAX_ITEMS);
    c.env(map.plan, "the plan's env", &plan.env);
    for (i, trigger) in plan.triggers.iter().enumerate() {
        c.trigger(map.trigger(i), trigger);
    }
    for (i, step) in plan.steps.iter().enumerate() {
        let at = map.step(i);
        if step.id.len() > MAX_NAME_LEN {
            c.add(
                at,
                format!(
                    "step id '{}' is {} bytes; the limit is {MAX_NAME_LEN}",
                    quote(&step.id, 40),
                    step.id.len()
                ),
            );
            continue;
        }
        c.line(at, "step id", &step.id, MAX_NAME_LEN);
        c.count(
            at,
            "depends_on entries",
            step.depends_on.len(),
            limits.max_steps,
        );
        for dep in &step.depends_on {
            c.line(at, "depends_on", dep, MAX_NAME_LEN);
        }
        if let Some(target) = &step.loop_to {
            c.line(at, "loop_to", target, MAX_NAME_LEN);
        }
        if let Some(environment) = &step.environment {
            c.line(at, "environment", environment, MAX_NAME_LEN);
        }
        match &step.action {
            Action::Bash { command } => c.multi(at, "the command", command),
            Action::Python { script, .. } => c.multi(at, "the script", script),
            Action::Llm(llm) => {
                if let Some(prompt) = &llm.prompt {
                    c.multi(at, "the prompt", prompt);
                }
                if let Some(file) = &llm.prompt_file {
                    c.line(at, "prompt_file", file, MAX_LINE_LEN);
                }
                if let Some(model) = &llm.model {
                    c.line(at, "model", model, MAX_LINE_LEN);
                }
                c.count(at, "tools", llm.tools.len(), MAX_ITEMS);
                for tool in &llm.tools {
                    c.line(at, "tool", tool, MAX_NAME_LEN);
                }
                c.count(at, "inputs", llm.inputs.len(), MAX_ITEMS);
                for (key, value) in &llm.inputs {
                    c.line(at, "input name", key, MAX_NAME_LEN);
                    c.json(at, value);
                }
            }
            Action::Approval(approval) => {
                if let Some(message) = &approval.message {
                    c.multi(at, "the message", message);
                }
                c.count(at, "approvers", approval.approvers.len(), MAX_ITEMS);
                for approver in &approval.approvers {
                    c.line(at, "approver", approver, MAX_NAME_LEN);
                }
            }
        }
        c.env(at, "env", &step.env);
        c.count(at, "secrets", step.secrets.len(), MAX_ITEMS);
        for secret in &step.secrets {
            c.line(at, "secret name", secret, MAX_NAME_LEN);
        }
        c.count(
            at,
            "id_tokens entries",
            step.id_tokens.len(),
            crate::id_tokens::MAX_ID_TOKENS,
        );
        for (name, audience) in step.id_tokens.iter().take(crate::id_tokens::MAX_ID_TOKENS) {
            c.line(at, "id_tokens variable", name, MAX_NAME_LEN);
            c.line(
                at,
                "id_tokens audience",
                audience,
                crate::id_tokens::MAX_AUDIENCE_LEN,
            );
        }
        c.labels(at, &step.runner);
        if let Some(from) = &step.workspace_from {
            c.line(at, "workspace_from", from, MAX_NAME_LEN);
        }
        c.globs(at, "artifacts", &step.artifacts);
        c.count(
            at,
            "needs_artifacts entries",
            step.needs_artifacts.len(),
            MAX_ITEMS,
        );
        for dep in step.needs_artifacts.iter().take(MAX_ITEMS) {
            c.line(at, "needs_artifacts", dep, MAX_NAME_LEN);
        }
    }
    let dependencies: usize = plan.steps.iter().map(|s| s.depends_on.len()).sum();
    if dependencies > MAX_DEPENDENCIES {
        c.add(
            map.plan,
            format!("the steps' depends_on= hold {dependencies} entries in all; the limit is {MAX_DEPENDENCIES}"),
        );
    }
    let (globs, glob_bytes) = artifact_glob_totals(plan);
    if globs > MAX_GLOBS || glob_bytes > MAX_GLOB_BYTES {
        c.add(
            map.plan,
            format!("the steps' artifacts= hold {globs} patterns of {glob_bytes} bytes in all; the limit is {MAX_GLOBS} patterns and {MAX_GLOB_BYTES} bytes"),
        );
    }
    c.found.finish()
}

/// How many `artifacts=` patterns the plan's steps hold, and their bytes: validation
/// compiles each, on the engine's CPU.
fn artifact_glob_totals(plan: &Plan) -> (usize, usize) {
    plan.steps.iter().fold((0, 0), |(count, bytes), step| {
        (
            count + step.artifacts.len(),
            bytes + step.artifacts.iter().map(String::len).sum::<usize>(),
        )
    })
}

/// How many branch, tag and path patterns the plan's triggers hold, and their bytes.
fn glob_totals(plan: &Plan) -> (usize, usize) {
    let mut count = 0;
    let mut bytes = 0;
    for trigger in &plan.triggers {
        let lists: &[&Vec<String>] = match trigger {
            Trigger::Push {
                branches,
                tags,
                paths,
                paths_ignore,
            } => &[branches, tags, paths, paths_ignore],
            Trigger::PullRequest {
                branches,
                paths,
                paths_ignore,
                ..
            } => &[branches, paths, paths_ignore],
            Trigger::Schedule { .. }
            | Trigger::Manual { .. }
            | Trigger::Issue { .. }
            | Trigger::Comment { .. } => &[],
        };
        for list in lists {
            count += list.len();
            bytes += list.iter().map(String::len).sum::<usize>();
        }
    }
    (count, bytes)
}

/// What the scan found: at most [`crate::diagnostic::MAX_DIAGNOSTICS`] kept, the rest
/// counted, so a plan of a hundred thousand bad names costs fifty messages of memory.
struct Checker {
    found: Found,
}

impl Checker {
    fn add(&mut self, at: Location, message: String) {
        self.found.add(at, message);
    }

    fn count(&mut self, at: Location, what: &str, count: usize, max: usize) {
        if count > max {
            self.add(at, format!("{count} {what}; the limit is {max}"));
        }
    }

    /// A one-line string of at most `max` bytes.
    fn line(&mut self, at: Location, what: &str, text: &str, max: usize) {
        if text.len() > max {
            self.add(
                at,
                format!(
                    "{what} '{}' is {} bytes; the limit is {max}",
                    quote(text, 40),
                    text.len()
                ),
            );
        } else if let Err(why) = check_clean(text, TextKind::Line) {
            self.add(at, format!("{what} '{}' {why}", quote(text, 60)));
        }
    }

    /// Multi-line text, bounded by the plan's size.
    fn multi(&mut self, at: Location, what: &str, text: &str) {
        if let Err(why) = check_clean(text, TextKind::MultiLine) {
            self.add(at, format!("{what} {why}"));
        }
    }

    fn env(&mut self, at: Location, what: &str, env: &std::collections::BTreeMap<String, String>) {
        self.count(at, &format!("{what} entries"), env.len(), MAX_ITEMS);
        for (key, value) in env {
            self.line(at, &format!("{what} name"), key, MAX_NAME_LEN);
            if let Err(why) = check_clean(value, TextKind::MultiLine) {
                self.add(at, format!("{what} value of '{}' {why}", quote(key, 40)));
            }
        }
    }

    /// A list of at most [`MAX_ITEMS`] one-line names.
    fn names(&mut self, at: Location, what: &str, names: &[String]) {
        self.count(at, &format!("{what}s"), names.len(), MAX_ITEMS);
        for name in names.iter().take(MAX_ITEMS) {
            self.line(at, what, name, MAX_NAME_LEN);
        }
    }

    fn globs(&mut self, at: Location, what: &str, globs: &[String]) {
        self.count(at, &format!("{what} patterns"), globs.len(), MAX_ITEMS);
        for glob in globs.iter().take(MAX_ITEMS) {
            self.line(at, &format!("{what} pattern"), glob, MAX_GLOB_LEN);
        }
    }

    fn trigger(&mut self, at: Location, trigger: &Trigger) {
        for (what, globs) in trigger.globs() {
            self.globs(at, what, globs);
        }
        match trigger {
            Trigger::Push { .. } => {}
            Trigger::PullRequest { actions, .. } => {
                self.count(at, "pull request actions", actions.len(), MAX_ITEMS);
                for action in actions.iter().take(MAX_ITEMS) {
                    self.line(at, "pull request action", action, MAX_NAME_LEN);
                }
            }
            Trigger::Schedule { cron } => self.line(at, "cron expression", cron, MAX_LINE_LEN),
            Trigger::Issue {
                actions, labels, ..
            } => {
                self.names(at, "issue action", actions);
                self.names(at, "issue label", labels);
            }
            Trigger::Comment {
                pattern,
                on,
                actions,
                ..
            } => {
                self.line(
                    at,
                    "comment pattern",
                    pattern,
                    crate::summon::MAX_PATTERN_LEN,
                );
                self.names(at, "comment target", on);
                self.names(at, "comment action", actions);
            }
            Trigger::Manual { inputs } => {
                self.count(at, "manual inputs", inputs.len(), MAX_ITEMS);
                for (name, input) in inputs.iter().take(MAX_ITEMS) {
                    self.line(at, "manual input name", name, MAX_NAME_LEN);
                    self.manual_input(at, input);
                }
            }
        }
    }

    fn manual_input(&mut self, at: Location, input: &ManualInput) {
        if let Some(default) = &input.default {
            self.line(at, "manual input default", default, MAX_LINE_LEN);
        }
        if let Some(description) = &input.description {
            self.line(at, "manual input description", description, MAX_LINE_LEN);
        }
        self.count(at, "manual input options", input.options.len(), MAX_ITEMS);
        for option in input.options.iter().take(MAX_ITEMS) {
            self.line(at, "manual input option", option, MAX_LINE_LEN);
        }
    }

    /// Runner labels: the grammar the engine applies to a runner's own labels, so a step's
    /// labels can always be told apart and matched (`a=b,c` is not two labels).
    fn labels(&mut self, at: Location, labels: &std::collections::BTreeMap<String, String>) {
        self.count(at, "runner labels", labels.len(), MAX_LABELS);
        for (key, value) in labels.iter().take(MAX_LABELS) {
            let key_ok = !key.is_empty()
                && key.len() <= 63
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
            if !key_ok {
                self.add(at, format!("invalid runner label key '{}': use 1 to 63 letters, digits, '.', '_', '-' or '/'", quote(key, 40)));
            }
            let value_ok = value.len() <= MAX_LABEL_VALUE_LEN
                && !value.contains([',', '='])
                && check_clean(value, TextKind::Line).is_ok()
                && !value.contains('\t');
            if !value_ok {
                self.add(at, format!("invalid runner label value '{}' for '{}': at most {MAX_LABEL_VALUE_LEN} bytes, no ',', '=' or control characters", quote(value, 40), quote(key, 40)));
            }
        }
    }

    /// llm `inputs`: keys are lines, strings are multi-line text.
    fn json(&mut self, at: Location, value: &serde_json::Value) {
        use serde_json::Value;
        // Iterative: the worker bounds the depth, but the parent trusts no worker.
        let mut stack = vec![value];
        while let Some(value) = stack.pop() {
            match value {
                Value::String(s) => self.multi(at, "an llm input", s),
                Value::Array(items) => stack.extend(items),
                Value::Object(map) => {
                    for (key, item) in map {
                        self.line(at, "an llm input key", key, MAX_LINE_LEN);
                        stack.push(item);
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use super::*;
    use crate::plan::Step;

    fn plan_with(step: Step) -> Plan {
        Plan {
            name: "p".into(),
            triggers: vec![],
            env: BTreeMap::new(),
            steps: vec![step],
            concurrency: None,
            budget_usd: None,
            max_parallel: None,
            modules: Vec::new(),
        }
    }

    fn problems(plan: &Plan) -> Vec<String> {
        let map = SourceMap::default();
        check(
            plan,
            plan.canonical_json().len(),
            &map,
            &Limits::default(),
            "w",
        )
        .iter()
        .map(|d| d.message.clone())
        .collect()
    }

    fn bash(id: &str) -> Step {
        Step::bash(id, "true")
    }

    #[test]
    fn nul_controls_and_bidi_are_refused_in_plan_strings() {
        let mut step = bash("a");
        step.env.insert("X".into(), "a\0b".into());
        step.action = Action::Bash {
            command: "echo \u{202e}".into(),
        };
        let mut plan = plan_with(step);
        plan.name = "ci\x1b[2J".into();
        let found = problems(&plan);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().any(|f| f.contains("NUL")), "{found:?}");
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("the plan's name 'ci\\x1b[2J'")),
            "{found:?}"
        );
    }

    #[test]
    fn the_globs_of_a_whole_plan_are_bounded() {
        let push = Trigger::Push {
            branches: (0..60).map(|i| format!("b{i}")).collect(),
            tags: vec![],
            paths: vec![],
            paths_ignore: vec![],
        };
        let mut plan = plan_with(bash("a"));
        plan.triggers = vec![push; 4];
        let found = problems(&plan);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("the triggers hold 240 patterns"),
            "{found:?}"
        );
    }

    #[test]
    fn runner_labels_have_a_grammar() {
        let mut step = bash("a");
        step.runner.insert("".into(), "x".into());
        step.runner.insert("zone".into(), "eu,gpu=true".into());
        step.runner.insert("ok".into(), "fine".into());
        let found = problems(&plan_with(step));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("invalid runner label key ''"));
        assert!(found[1].contains("invalid runner label value 'eu,gpu=true'"));
    }

    #[test]
    fn artifact_patterns_are_bounded_per_step_and_per_plan() {
        let mut step = bash("a");
        step.artifacts = vec!["x".repeat(MAX_GLOB_LEN + 1)];
        step.needs_artifacts = vec!["y".repeat(MAX_NAME_LEN + 1)];
        step.workspace_from = Some("\x1b".into());
        let found = problems(&plan_with(step));
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("workspace_from '\\x1b'"), "{found:?}");
        assert!(found[1].starts_with("artifacts pattern 'xxx"), "{found:?}");
        assert!(found[2].starts_with("needs_artifacts 'yyy"), "{found:?}");

        let mut plan = plan_with(bash("a"));
        plan.steps = (0..3)
            .map(|i| {
                let mut step = bash(&format!("s{i}"));
                step.artifacts = (0..90).map(|g| format!("d{g}/**")).collect();
                step
            })
            .collect();
        let found = problems(&plan);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("the steps' artifacts= hold 270 patterns"),
            "{found:?}"
        );
    }

    // regression: `depends_on` was bounded per step only (by the step count), so a plan
    // held a million dependency edges for every graph pass to walk.
    #[test]
    fn depends_on_entries_are_bounded_per_plan() {
        let mut plan = plan_with(bash("a"));
        plan.steps = (0..201)
            .map(|i| {
                let mut step = bash(&format!("s{i}"));
                step.depends_on = (0..100).map(|j| format!("s{j}")).collect();
                step
            })
            .collect();
        let found = problems(&plan);
        assert_eq!(
            found,
            vec!["the steps' depends_on= hold 20100 entries in all; the limit is 20000"]
        );
        plan.steps.pop();
        assert!(problems(&plan).is_empty());
    }

    // regression: every problem of the scan was kept, a message each (100,000 bad names
    // of a 1 MB plan, ~30 MB of messages).
    #[test]
    fn the_scan_keeps_fifty_problems_and_counts_the_rest() {
        let mut plan = plan_with(bash("a"));
        plan.steps = (0..1000)
            .map(|i| {
                let mut step = bash(&format!("s{i}"));
                step.secrets = (0..10).map(|j| format!("b\x1b{j}")).collect();
                step
            })
            .collect();
        let found = problems(&plan);
        assert_eq!(found.len(), crate::diagnostic::MAX_DIAGNOSTICS);
        assert_eq!(found[49], "and 9951 more problems");
    }

    // regression: a 520,000-character step id with an unknown dependency kept the engine
    // busy for minutes computing "did you mean" suggestions.
    #[test]
    fn a_huge_step_id_is_refused_in_one_scan() {
        let mut step = bash(&"x".repeat(520_000));
        step.depends_on = vec!["y".repeat(400_000)];
        let plan = plan_with(step);
        let started = Instant::now();
        let found =
            crate::validate::validate(&plan, &SourceMap::default(), &Limits::default(), "w");
        // Minutes before the fix; the bound is loose so that a loaded machine running a
        // debug build beside other suites cannot fail it (100 ms once did, at 122 ms).
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0]
            .message
            .ends_with("is 520000 bytes; the limit is 64"));
        assert!(found[0].message.len() < 200);
    }
}
