//! Each step kind's part of a dispatch: how the engine turns the plan's
//! [`evaluator::plan::Action`] into the runner's [`StepAction`], rendering the kind's
//! templates by the rules of [`super`] (code never receives a pasted output). One module
//! per kind; the `match`es below are the only places here a new kind is added. Facts that
//! several places need (the rendered-bytes budget, the model's key, the default network)
//! are [`evaluator::plan::StepKind`]'s methods, read by [`super::build`].

use std::collections::BTreeMap;

use evaluator::plan::{Action, Step};
use plue_types::protocol::StepAction;
use serde_json::Value;

use super::{DispatchError, Renderer, StepResult};

mod approval;
mod bash;
mod llm;
pub use llm::mcp_server;
mod python;

/// A kind's rendered action and what it adds to the step's environment.
pub(super) struct Rendered {
    pub(super) action: StepAction,
    /// The `PLUE_OUTPUT_*`/`PLUE_REF_*` variables of a step that starts a process.
    pub(super) output_env: BTreeMap<String, String>,
    /// (step, key) → variable for each output reference of a bash command, whose values
    /// [`super::bash_values::check`] checks once the environment is whole.
    pub(super) bash_reads: BTreeMap<(String, String), String>,
}

impl Rendered {
    /// An action that adds no variables.
    fn alone(action: StepAction) -> Rendered {
        Rendered {
            action,
            output_env: BTreeMap::new(),
            bash_reads: BTreeMap::new(),
        }
    }
}

/// The runner's action for `step`, its templates rendered against `results`.
pub(super) fn render(
    step: &Step,
    renderer: &Renderer<'_, '_>,
    results: &BTreeMap<&str, StepResult<'_>>,
) -> Result<Rendered, DispatchError> {
    match &step.action {
        Action::Bash { command } => bash::render(step, command, renderer, results),
        Action::Python {
            script,
            fresh_interpreter,
        } => python::render(step, script, *fresh_interpreter, renderer, results),
        Action::Llm(llm) => llm::render(llm, renderer),
        Action::Approval(_) => approval::render(step),
    }
}

/// The texts of `action` that may hold templates: each plain text to `text`, each JSON
/// value whose strings are texts to `json` (for [`super::reads`]).
pub(super) fn texts<'a>(
    action: &'a Action,
    text: &mut dyn FnMut(&'a str),
    json: &mut dyn FnMut(&'a Value),
) {
    match action {
        Action::Bash { command } => text(command),
        Action::Python { script, .. } => text(script),
        Action::Llm(llm) => {
            llm.prompt.as_deref().into_iter().for_each(&mut *text);
            llm.inputs.values().for_each(json);
        }
        Action::Approval(_) => {}
    }
}
