//! A `bash` step's dispatch: its command rendered as bash code (an output reference
//! becomes `"${PLUE_OUTPUT_…}"`, never the value), and its dependencies' outputs as
//! variables. The values it receives are checked once the environment is whole
//! ([`super::super::bash_values`]).

use std::collections::BTreeMap;

use evaluator::plan::Step;
use plue_types::protocol::StepAction;

use super::super::{parse, Code, DispatchError, OutputVars, Renderer, StepResult};
use super::Rendered;

pub(super) fn render(
    step: &Step,
    command: &str,
    renderer: &Renderer<'_, '_>,
    results: &BTreeMap<&str, StepResult<'_>>,
) -> Result<Rendered, DispatchError> {
    let template = parse("command", command)?;
    let vars = OutputVars::new(step, "command", &template, results)?;
    let command = renderer.code("command", &template, Code::Bash, &vars)?;
    Ok(Rendered {
        action: StepAction::Bash { command },
        output_env: vars.env,
        bash_reads: vars.by_reference,
    })
}
