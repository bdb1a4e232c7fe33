//! `list_files`: the entries of a workspace directory, `.gitignore` honoured, at most
//! [`MAX_LIST_ENTRIES`].

use serde_json::{json, Value};

use super::args::{bool_arg, optional_string_arg};
use super::paths::path_schema;
use super::{blocking, ToolOutput, Toolbox};

/// The most entries `list_files` returns.
pub(super) const MAX_LIST_ENTRIES: usize = 2000;

impl Toolbox {
    pub(super) async fn list_files(&self, input: &Value) -> Result<ToolOutput, String> {
        let requested = optional_string_arg(input, "path")?
            .unwrap_or(".")
            .to_owned();
        let recursive = bool_arg(input, "recursive")?.unwrap_or(false);
        let dir = self.resolve_existing(&requested)?;
        let root = self.root.clone();
        blocking(move || {
            if !dir.is_dir() {
                return Err(format!("{requested} is not a directory"));
            }
            let mut entries = Vec::new();
            let mut more = false;
            let walk = ignore::WalkBuilder::new(&dir)
                .hidden(false)
                // Only rules inside the listed directory: what lies above the workspace
                // (the runner's directories) must not decide what the model sees.
                .parents(false)
                .git_global(false)
                .require_git(false)
                .follow_links(false)
                .max_depth(if recursive { None } else { Some(1) })
                .filter_entry(|entry| entry.file_name() != ".git")
                .sort_by_file_name(|a, b| a.cmp(b))
                .build();
            for entry in walk.flatten() {
                if entry.depth() == 0 {
                    continue;
                }
                if entries.len() >= MAX_LIST_ENTRIES {
                    more = true;
                    break;
                }
                let relative = entry.path().strip_prefix(&root).unwrap_or(entry.path());
                let mut line = relative.display().to_string();
                match entry.file_type() {
                    Some(kind) if kind.is_dir() => line.push('/'),
                    Some(kind) if kind.is_symlink() => line.push('@'),
                    _ => {}
                }
                entries.push(line);
            }
            if entries.is_empty() {
                return Ok(ToolOutput::ok(format!("{requested} is empty")));
            }
            let mut text = entries.join("\n");
            if more {
                text.push_str(&format!(
                    "\n[only the first {MAX_LIST_ENTRIES} entries are listed]"
                ));
            }
            Ok(ToolOutput::ok(text))
        })
        .await
    }
}

/// What the model is told about `list_files`: its description and input schema.
pub(super) fn definition() -> (&'static str, Value) {
    (
        "List the entries of a directory of the workspace (directories end with '/', \
         symbolic links with '@'), honouring .gitignore.",
        json!({
            "type": "object",
            "properties": {
                "path": path_schema("Directory relative to the workspace root (default: the root)"),
                "recursive": {"type": "boolean", "description": "List everything below it (default false)"}
            }
        }),
    )
}
