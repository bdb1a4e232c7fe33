//! Each step kind's part of an attempt on the runner: what it starts once the workspace,
//! user and network are ready. A `bash` or `python` step is a process the runner starts
//! and watches ([`super::run_process`]); an `llm` step is a conversation the runner holds
//! itself, its tools confined like a process ([`llm::run`]). One module per kind; the
//! `match`es below are the only places here a new kind is added.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use plue_types::protocol::StepAction;

mod bash;
pub(super) mod llm;
mod python;

/// How the runner runs a step of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Runs {
    /// One process from the step's code ([`command`]).
    Process,
    /// An agent conversation held by the runner ([`llm::run`]).
    Conversation,
}

/// How the runner runs a step of `action`'s kind.
pub(super) fn runs(action: &StepAction) -> Runs {
    match action {
        StepAction::Bash { .. } | StepAction::Python { .. } => Runs::Process,
        StepAction::Llm { .. } => Runs::Conversation,
    }
}

/// The process a [`Runs::Process`] step starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Command {
    pub(super) program: PathBuf,
    pub(super) args: Vec<String>,
    /// A `python` step that starts a fresh interpreter instead of forking the warm one.
    pub(super) fresh_interpreter: bool,
}

/// The command of a process step: `env` is the step's environment (its `PATH` finds
/// bash), `other_user` whether it runs as a step user, `python` the interpreter found for
/// an earlier `python` step (found and kept here on the first).
pub(super) async fn command(
    action: &StepAction,
    env: &BTreeMap<String, String>,
    other_user: bool,
    python: &mut Option<PathBuf>,
) -> anyhow::Result<Command> {
    match action {
        StepAction::Bash { command } => Ok(bash::command(command, env, other_user)),
        StepAction::Python {
            script,
            fresh_interpreter,
        } => python::command(script, *fresh_interpreter, other_user, python).await,
        StepAction::Llm { .. } => bail!("an llm step does not run as a process"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bash_step_is_bash_with_pipefail_and_an_llm_step_no_process() {
        let env = BTreeMap::from([("PATH".to_string(), "/nonexistent-plue".to_string())]);
        let bash = StepAction::Bash {
            command: "echo hi".into(),
        };
        assert_eq!(runs(&bash), Runs::Process);
        let command = command(&bash, &env, false, &mut None).await.unwrap();
        assert_eq!(command.program, PathBuf::from("bash"));
        assert_eq!(
            command.args,
            ["--noprofile", "--norc", "-eo", "pipefail", "-c", "echo hi"]
        );
        assert!(!command.fresh_interpreter);
        let llm: StepAction =
            serde_json::from_value(serde_json::json!({"kind": "llm", "prompt": "hi"})).unwrap();
        assert_eq!(runs(&llm), Runs::Conversation);
        let err = super::command(&llm, &env, false, &mut None)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "an llm step does not run as a process");
    }

    #[tokio::test]
    async fn a_python_step_runs_the_interpreter_found_first() {
        let mut python = Some(PathBuf::from("/opt/py/bin/python3"));
        let action = StepAction::Python {
            script: "print(1)".into(),
            fresh_interpreter: true,
        };
        assert_eq!(runs(&action), Runs::Process);
        let command = command(&action, &BTreeMap::new(), false, &mut python)
            .await
            .unwrap();
        assert_eq!(command.program, PathBuf::from("/opt/py/bin/python3"));
        assert_eq!(command.args, ["-u", "-c", "print(1)"]);
        assert!(command.fresh_interpreter);
    }
}
