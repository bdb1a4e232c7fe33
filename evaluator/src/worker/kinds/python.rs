//! `Step.python(id, script, fresh_interpreter=False, **options)`: the script, run by the
//! runner's Python (forked from its warm interpreter unless `fresh_interpreter=True`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::plan::Action;
use crate::worker::convert::{self, Options};

/// The action of `Step.python()`: its `script` and the `fresh_interpreter` option.
pub(in crate::worker) fn action(
    script: &Bound<'_, PyAny>,
    options: &mut Options<'_>,
) -> PyResult<Action> {
    let script = convert::string(script, "Step.python(): script")?;
    let fresh_interpreter = match options.take("fresh_interpreter")? {
        None => false,
        Some(value) => value.extract::<bool>().map_err(|_| {
            PyTypeError::new_err("Step.python(): fresh_interpreter must be True or False")
        })?,
    };
    Ok(Action::Python {
        script,
        fresh_interpreter,
    })
}
