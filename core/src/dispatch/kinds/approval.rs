//! An `approval` step has no dispatch: a person decides it and no runner runs it (the
//! executor never queues one; see `crate::executor::approvals`).

use evaluator::plan::Step;

use super::super::DispatchError;
use super::Rendered;

pub(super) fn render(step: &Step) -> Result<Rendered, DispatchError> {
    Err(DispatchError::Approval {
        step: step.id.clone(),
    })
}
