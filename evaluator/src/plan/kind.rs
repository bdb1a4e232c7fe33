//! [`StepKind`]: the kinds of step a plan may hold, and every fact about a kind that more
//! than one place needs (its name, whether a runner runs it, whether it starts a process,
//! whether it talks to a model). A new kind is added here first; the compiler then points
//! at every `match` over [`StepKind`] or [`super::Action`] that must learn it
//! (the checklist is `docs/src/internals/adding-a-step-kind.md`).
//!
//! Invariant: [`StepKind::name`] is the `kind` tag of the canonical plan JSON (serde's
//! `rename_all = "snake_case"` of the [`super::Action`] variant); changing it changes every
//! plan's hash.

use std::fmt;

/// What kind of step a step is, without its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepKind {
    /// `Step.bash(...)`: a bash script.
    Bash,
    /// `Step.python(...)`: a Python script.
    Python,
    /// `Step.llm(...)`: a Claude agent with workspace tools.
    Llm,
    /// `Step.approval(...)`: a person's decision; nothing runs.
    Approval,
}

impl StepKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [StepKind; 4] = [
        StepKind::Bash,
        StepKind::Python,
        StepKind::Llm,
        StepKind::Approval,
    ];

    /// The `kind` tag in the plan JSON and the name of its `Step.<name>()` constructor.
    pub const fn name(self) -> &'static str {
        match self {
            StepKind::Bash => "bash",
            StepKind::Python => "python",
            StepKind::Llm => "llm",
            StepKind::Approval => "approval",
        }
    }

    /// The kind named `name` (a plan's `kind` tag), if any.
    pub fn parse(name: &str) -> Option<StepKind> {
        StepKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether a runner runs the step: it then has a workspace, an environment, secrets,
    /// a network policy and may name a repository environment. An approval does not (a
    /// person decides it while the run holds no runner).
    pub const fn runs_on_runner(self) -> bool {
        match self {
            StepKind::Bash | StepKind::Python | StepKind::Llm => true,
            StepKind::Approval => false,
        }
    }

    /// Whether the runner starts the step as one process from code the plan holds (a
    /// bash command, a Python script): its templates render as code (outputs read from
    /// `PLUE_OUTPUT_*` variables, never pasted), it receives its dependencies' outputs as
    /// variables, and its rendered texts fit what Linux lets a process start with.
    pub const fn starts_process(self) -> bool {
        match self {
            StepKind::Bash | StepKind::Python => true,
            StepKind::Llm | StepKind::Approval => false,
        }
    }

    /// Whether the step is a conversation with a model: it always gets the model's API key
    /// secret, its tools reach no network unless the step says `network=`, and its cost
    /// counts against the run's `budget_usd`.
    pub const fn talks_to_model(self) -> bool {
        match self {
            StepKind::Llm => true,
            StepKind::Bash | StepKind::Python | StepKind::Approval => false,
        }
    }

    /// The kinds with `fact`, each as `prefix` + name, in English: `"bash and python"`
    /// (`conjunction` "and"), `"Step.bash or Step.python"` (prefix "Step.", "or"). For
    /// messages that name the kinds a rule allows, so that they stay true for a new kind.
    pub fn listed(fact: fn(StepKind) -> bool, prefix: &str, conjunction: &str) -> String {
        let names: Vec<String> = StepKind::ALL
            .into_iter()
            .filter(|&kind| fact(kind))
            .map(|kind| format!("{prefix}{}", kind.name()))
            .collect();
        match names.split_last() {
            None => String::new(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} {conjunction} {last}", rest.join(", ")),
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::StepKind;
    use crate::plan::{Action, ApprovalAction, LlmAction};

    /// One action of each kind, built exhaustively: a new kind fails to compile here until
    /// it has an example.
    fn example(kind: StepKind) -> Action {
        match kind {
            StepKind::Bash => Action::Bash {
                command: "true".into(),
            },
            StepKind::Python => Action::Python {
                script: "pass".into(),
                fresh_interpreter: false,
            },
            StepKind::Llm => Action::Llm(LlmAction::default()),
            StepKind::Approval => Action::Approval(ApprovalAction {
                message: None,
                approvers: Vec::new(),
                exclude_triggerer: false,
            }),
        }
    }

    #[test]
    fn the_name_is_the_json_kind_tag_and_parses_back() {
        for kind in StepKind::ALL {
            let action = example(kind);
            assert_eq!(action.step_kind(), kind);
            assert_eq!(action.kind(), kind.name());
            let json = serde_json::to_value(&action).unwrap();
            assert_eq!(json["kind"], kind.name(), "{json}");
            assert_eq!(StepKind::parse(kind.name()), Some(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(StepKind::parse("shell"), None);
    }

    #[test]
    fn only_steps_that_run_start_processes_or_talk_to_a_model() {
        for kind in StepKind::ALL {
            if kind.starts_process() || kind.talks_to_model() {
                assert!(kind.runs_on_runner(), "{kind}");
            }
            assert!(!(kind.starts_process() && kind.talks_to_model()), "{kind}");
        }
        assert!(!StepKind::Approval.runs_on_runner());
        assert!(StepKind::Llm.talks_to_model());
    }

    #[test]
    fn listed_names_the_kinds_with_a_fact_in_english() {
        assert_eq!(
            StepKind::listed(StepKind::starts_process, "", "and"),
            "bash and python"
        );
        assert_eq!(
            StepKind::listed(StepKind::starts_process, "Step.", "or"),
            "Step.bash or Step.python"
        );
        assert_eq!(
            StepKind::listed(StepKind::runs_on_runner, "", "and"),
            "bash, python and llm"
        );
        assert_eq!(StepKind::listed(StepKind::talks_to_model, "", "or"), "llm");
        assert_eq!(StepKind::listed(|_| false, "", "or"), "");
    }
}
