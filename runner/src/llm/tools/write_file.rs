//! `write_file`: create or overwrite a regular file of the workspace.
//!
//! Invariants: never under a `.git` directory (any case), never through a symbolic link
//! (the target is checked and opened `O_NOFOLLOW`), only inside the workspace (the parent
//! directory is checked, not just the name); what it creates belongs to the step's user.

use std::os::unix::fs::OpenOptionsExt;

use serde_json::{json, Value};

use super::args::string_arg;
use super::paths::{git_refused, has_git, not_regular, outside, path_schema, symlink_refused};
use super::{blocking, ToolOutput, Toolbox};

impl Toolbox {
    pub(super) async fn write_file(&self, input: &Value) -> Result<ToolOutput, String> {
        let requested = string_arg(input, "write_file", "path")?.to_owned();
        let content = string_arg(input, "write_file", "content")?.to_owned();
        let path = self.resolve_for_write(&requested)?;
        let root = self.root.clone();
        let user = self.user;
        blocking(move || {
            let parent = path.parent().unwrap_or(&root).to_path_buf();
            std::fs::create_dir_all(&parent)
                .map_err(|e| format!("creating the directories of {requested}: {e}"))?;
            // What a root runner creates belongs to the step's user, like its workspace.
            if let Some(user) = user {
                for dir in parent
                    .ancestors()
                    .take_while(|d| d.starts_with(&root) && *d != root)
                {
                    std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid))
                        .map_err(|e| format!("{requested}: {e}"))?;
                }
            }
            // Re-checked after creating: nothing may have swapped a directory for a link.
            let real_parent = parent
                .canonicalize()
                .map_err(|e| format!("{requested}: {e}"))?;
            if !real_parent.starts_with(&root) {
                return Err(outside(&requested));
            }
            // A link into `.git` on the way (the name alone looked harmless).
            if real_parent.strip_prefix(&root).is_ok_and(has_git) {
                return Err(git_refused(&requested));
            }
            // Not truncated on open: a FIFO or device must be refused before anything else.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP) => symlink_refused(&requested),
                    // A FIFO without a reader.
                    Some(libc::ENXIO) => not_regular(&requested),
                    _ => format!("{requested}: {e}"),
                })?;
            let meta = file.metadata().map_err(|e| format!("{requested}: {e}"))?;
            if !meta.is_file() {
                return Err(not_regular(&requested));
            }
            if let Some(user) = user {
                std::os::unix::fs::fchown(&file, Some(user.uid), Some(user.gid))
                    .map_err(|e| format!("{requested}: {e}"))?;
            }
            file.set_len(0)
                .and_then(|()| std::io::Write::write_all(&mut file, content.as_bytes()))
                .map_err(|e| format!("{requested}: {e}"))?;
            Ok(ToolOutput::ok(format!(
                "wrote {} bytes to {requested}",
                content.len()
            )))
        })
        .await
    }
}

/// What the model is told about `write_file`: its description and input schema.
pub(super) fn definition() -> (&'static str, Value) {
    (
        "Create or overwrite a file of the workspace with the given content (parent \
         directories are created). Paths are relative to the workspace root.",
        json!({
            "type": "object",
            "properties": {
                "path": path_schema("File path relative to the workspace root"),
                "content": {"type": "string", "description": "The complete new content of the file"}
            },
            "required": ["path", "content"]
        }),
    )
}
