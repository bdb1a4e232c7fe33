//! `grep`: `grep -rnIE` over a file or directory of the workspace, devices and FIFOs
//! skipped, `.git` excluded, run as a short command (see `command`).

use serde_json::{json, Value};

use super::args::{bool_arg, optional_string_arg, string_arg};
use super::paths::{path_schema, relative_arg};
use super::{ToolOutput, Toolbox, COMMAND_TIMEOUT};
use crate::containment::Places;

impl Toolbox {
    pub(super) async fn grep(&self, input: &Value) -> Result<ToolOutput, String> {
        let pattern = string_arg(input, "grep", "pattern")?;
        let requested = optional_string_arg(input, "path")?.unwrap_or(".");
        let ignore_case = bool_arg(input, "ignore_case")?.unwrap_or(false);
        let target = self.resolve_existing(requested)?;
        let relative = relative_arg(&self.root, &target);
        // Devices and FIFOs are skipped even when named: reading one could block.
        let mut args = vec!["-rnI", "-E", "--devices=skip", "--exclude-dir=.git"];
        if ignore_case {
            args.push("-i");
        }
        args.extend(["-e", pattern, "--", &relative]);
        // The runner's own grep: a `grep` on the step's PATH (a workspace's `bin/`) is the
        // step's code, not the tool.
        let grep = crate::program_path::grep().map_err(|e| e.to_string())?;
        let done = self
            .command(grep, &args, Places::Own, COMMAND_TIMEOUT)
            .await?;
        if done.truncated {
            return Ok(ToolOutput::ok(done.stdout));
        }
        match done.code {
            Some(0) => Ok(ToolOutput::ok(done.stdout)),
            Some(1) => Ok(ToolOutput::ok(format!("no matches for {pattern:?}"))),
            _ => Err(format!("grep failed: {}", done.stderr.trim())),
        }
    }
}

/// What the model is told about `grep`: its description and input schema.
pub(super) fn definition() -> (&'static str, Value) {
    (
        "Search files of the workspace for an extended regular expression (grep -E); \
         prints path:line:text for each match.",
        json!({
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "Extended regular expression"},
                "path": path_schema("File or directory to search (default: the whole workspace)"),
                "ignore_case": {"type": "boolean", "description": "Match case-insensitively"}
            },
            "required": ["pattern"]
        }),
    )
}
