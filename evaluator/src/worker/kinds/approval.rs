//! `Step.approval(id, message=None, approvers=None, exclude_triggerer=False, **options)`:
//! a person's decision. Nothing runs, so `host::build_step` refuses the options of steps
//! that run ([`crate::plan::StepKind::runs_on_runner`]).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::plan::{Action, ApprovalAction};
use crate::worker::convert::{self, Options};

/// The action of `Step.approval()`: its `message` and its own options.
pub(in crate::worker) fn action(
    message: Option<Bound<'_, PyAny>>,
    options: &mut Options<'_>,
) -> PyResult<Action> {
    let message = convert::optional_string(message, "Step.approval(): message")?;
    let approvers = match options.take("approvers")? {
        Some(value) => convert::string_list(&value, "Step.approval(): approvers")?,
        None => Vec::new(),
    };
    let exclude_triggerer = match options.take("exclude_triggerer")? {
        Some(value) => value.extract::<bool>().map_err(|_| {
            PyTypeError::new_err("Step.approval(): exclude_triggerer must be True or False")
        })?,
        None => false,
    };
    Ok(Action::Approval(ApprovalAction {
        message,
        approvers,
        exclude_triggerer,
    }))
}
