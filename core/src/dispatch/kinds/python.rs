//! A `python` step's dispatch: its script rendered as Python code (an output reference
//! becomes `os.environ["PLUE_OUTPUT_…"]`, never the value), and its dependencies' outputs
//! as variables.

use std::collections::BTreeMap;

use evaluator::plan::Step;
use plue_types::protocol::StepAction;

use super::super::{parse, Code, DispatchError, OutputVars, Renderer, StepResult};
use super::Rendered;

pub(super) fn render(
    step: &Step,
    script: &str,
    fresh_interpreter: bool,
    renderer: &Renderer<'_, '_>,
    results: &BTreeMap<&str, StepResult<'_>>,
) -> Result<Rendered, DispatchError> {
    let template = parse("script", script)?;
    let vars = OutputVars::new(step, "script", &template, results)?;
    let script = renderer.code("script", &template, Code::Python, &vars)?;
    Ok(Rendered {
        action: StepAction::Python {
            script,
            fresh_interpreter,
        },
        output_env: vars.env,
        bash_reads: BTreeMap::new(),
    })
}
