//! `when="<expression>"` ([`evaluator::when_expr`]) where the executor decides: a step the
//! schedule would queue (its dependencies final and succeeded) is queued only if its
//! expression is true of the results of the steps it names, and skipped otherwise with a
//! reason that quotes the expression. Those results are among the step's reads
//! ([`crate::dispatch::reads`]), so their outputs are loaded like a template's.

use std::collections::HashMap;

use evaluator::loops::Loops;
use evaluator::plan::Plan;
use plue_store::StepRunRow;
use plue_types::status::StepStatus;

use super::results;
use crate::executor::outputs::Outputs;
use crate::schedule::Decision;

/// A step the schedule would queue, with its `when="<expression>"` (if any) applied: the
/// expression is read against the results of the steps it names (a missing output is the
/// empty string) and a false one skips the step, naming the expression.
#[allow(clippy::too_many_arguments)] // the views `results` takes
pub(super) fn decide(
    step: usize,
    plan: &Plan,
    read: &[usize],
    rows: &[StepRunRow],
    statuses: &[StepStatus],
    iterations: &[i64],
    loops: &Loops,
    outputs: &HashMap<(i64, i64), Outputs>,
) -> Decision {
    let Some(text) = &plan.steps[step].when_expr else {
        return Decision::Queue { step };
    };
    let expr = match evaluator::when_expr::parse(text) {
        Ok(expr) => expr,
        // Validation refuses it; a stored plan from before a grammar change still ends.
        Err(error) => {
            return Decision::Skip {
                step,
                reason: format!("when=\"{text}\" does not parse: {error}"),
            }
        }
    };
    let results = results(step, read, rows, statuses, iterations, loops, outputs);
    let value = |r: &evaluator::when_expr::Reference| {
        results
            .get(r.step.as_str())
            .map(|result| match &r.output {
                None => result.status.to_string(),
                Some(key) => result.outputs.get(key).cloned().unwrap_or_default(),
            })
            .unwrap_or_default()
    };
    if expr.eval(&value) {
        Decision::Queue { step }
    } else {
        Decision::Skip {
            step,
            reason: format!("when=\"{text}\" is false"),
        }
    }
}
