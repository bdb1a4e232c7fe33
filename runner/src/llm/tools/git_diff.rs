//! `git_diff`: the uncommitted changes of the workspace's own checkout (`<root>/.git`)
//! and its untracked files. Git runs on a [`Shadow`] of the checkout's git directory, so
//! nothing the workspace's config, attributes or hooks name ever runs, no index entry
//! outside the working tree and no alternate object directory is read (see
//! [`crate::git_sandbox`]); external diff, textconv and submodules are off too. The git
//! run is the runner's own, by its absolute path ([`crate::program_path::git`]): never
//! one the step's `PATH` finds.

use serde_json::{json, Value};

use super::args::{bool_arg, optional_string_arg};
use super::paths::{lexical, path_schema, rel_or_dot};
use super::{blocking, ToolOutput, Toolbox, COMMAND_TIMEOUT};
use crate::containment::Places;
use crate::git_sandbox::Shadow;

impl Toolbox {
    pub(super) async fn git_diff(&self, input: &Value) -> Result<ToolOutput, String> {
        let requested = optional_string_arg(input, "path")?;
        let staged = bool_arg(input, "staged")?.unwrap_or(false);
        let relative = match requested {
            Some(path) => {
                let rel = lexical(path)?;
                // A deleted file has no canonical path; its parent must still be inside.
                let full = self.root.join(&rel);
                if full.symlink_metadata().is_ok() {
                    self.resolve_existing(path)?;
                } else {
                    self.check_ancestors(path, &full)?;
                }
                rel_or_dot(&rel)
            }
            None => ".".to_owned(),
        };
        // A copied workspace has no .git, and lives inside the host's repository: git must
        // not find that one (the shadow is of `<root>/.git` only).
        let git = crate::program_path::git().map_err(|e| e.to_string())?;
        let (root, user) = (self.root.clone(), self.user);
        let shadow = blocking(move || Shadow::of_checkout(&root, user).map_err(|e| e.to_string()))
            .await
            .map_err(|e| format!("{e}, so there is no diff to show"))?;
        let common = shadow
            .git_args()
            .ok_or("the runner's temporary directory is not UTF-8")?;
        let mut args: Vec<&str> = common.iter().map(String::as_str).collect();
        args.extend([
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--ignore-submodules=all",
        ]);
        if staged {
            args.push("--cached");
        }
        args.extend(["--", &relative]);
        let diff = self
            .command(git, &args, Places::Host, COMMAND_TIMEOUT)
            .await?;
        if diff.code != Some(0) && !diff.truncated {
            return Err(format!("git diff failed: {}", diff.stderr.trim()));
        }
        let mut args: Vec<&str> = common.iter().map(String::as_str).collect();
        args.extend([
            "ls-files",
            "--others",
            "--exclude-standard",
            "--",
            &relative,
        ]);
        let untracked = self
            .command(git, &args, Places::Host, COMMAND_TIMEOUT)
            .await?;
        drop(shadow);
        let mut text = diff.stdout;
        if untracked.code == Some(0) && !untracked.stdout.trim().is_empty() {
            text.push_str("\n# untracked files (not in the diff):\n");
            text.push_str(&untracked.stdout);
        }
        if text.trim().is_empty() {
            text = "no changes".into();
        }
        Ok(ToolOutput::ok(text))
    }
}

/// What the model is told about `git_diff`: its description and input schema.
pub(super) fn definition() -> (&'static str, Value) {
    (
        "Show the uncommitted changes of the workspace's git checkout (git diff) and \
         list untracked files.",
        json!({
            "type": "object",
            "properties": {
                "path": path_schema("Limit the diff to this file or directory"),
                "staged": {"type": "boolean", "description": "Show staged changes (git diff --cached)"}
            }
        }),
    )
}
