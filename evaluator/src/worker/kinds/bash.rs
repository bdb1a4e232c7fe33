//! `Step.bash(id, command, **options)`: the command, run by the runner with
//! `bash --noprofile --norc -eo pipefail -c`.

use pyo3::prelude::*;

use crate::plan::Action;
use crate::worker::convert;

/// The action of `Step.bash()`: its `command`, which takes no options of its own.
pub(in crate::worker) fn action(command: &Bound<'_, PyAny>) -> PyResult<Action> {
    let command = convert::string(command, "Step.bash(): command")?;
    Ok(Action::Bash { command })
}
