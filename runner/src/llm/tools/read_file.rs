//! `read_file`: a regular file of the workspace as text, optionally a range of lines.
//!
//! Invariants: the path resolves inside the workspace (links followed, then checked); the
//! file is opened `O_NONBLOCK | O_NOFOLLOW` and checked with `fstat`, so a FIFO or device
//! is an error, never a hang; at most [`MAX_READ_BYTES`] are read.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use serde_json::{json, Value};

use super::args::{count_arg, string_arg};
use super::paths::{not_regular, path_schema};
use super::{blocking, ToolOutput, Toolbox};

/// The biggest file `read_file` reads (the model sees at most [`OUTPUT_CAP`] of it).
pub(super) const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;

impl Toolbox {
    pub(super) async fn read_file(&self, input: &Value) -> Result<ToolOutput, String> {
        let requested = string_arg(input, "read_file", "path")?;
        let path = self.resolve_existing(requested)?;
        let start_line = count_arg(input, "start_line")?;
        let line_count = count_arg(input, "line_count")?;
        let requested = requested.to_owned();
        blocking(move || {
            // `path` is canonical, so O_NOFOLLOW only refuses a link swapped in since.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| format!("{requested}: {e}"))?;
            let meta = file.metadata().map_err(|e| format!("{requested}: {e}"))?;
            if meta.is_dir() {
                return Err(format!(
                    "{requested} is a directory; use list_files to see its entries"
                ));
            }
            if !meta.is_file() {
                return Err(not_regular(&requested));
            }
            let mut bytes = Vec::new();
            file.take(MAX_READ_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{requested}: {e}"))?;
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            if meta.len() > MAX_READ_BYTES {
                text.push_str(&format!(
                    "\n[only the first {MAX_READ_BYTES} of {} bytes were read]",
                    meta.len()
                ));
            }
            if start_line.is_some() || line_count.is_some() {
                let first = start_line.unwrap_or(1).max(1);
                let lines: Vec<&str> = text.split_inclusive('\n').collect();
                let total = lines.len();
                let take = line_count.unwrap_or(total);
                let selected: String = lines.into_iter().skip(first - 1).take(take).collect();
                text = if selected.is_empty() {
                    format!("[{requested} has {total} lines; none from line {first}]")
                } else {
                    selected
                };
            }
            Ok(ToolOutput::ok(text))
        })
        .await
    }
}

/// What the model is told about `read_file`: its description and input schema.
pub(super) fn definition() -> (&'static str, Value) {
    (
        "Read a text file of the workspace. Paths are relative to the workspace root. \
         Output is capped at 64 KiB; use start_line and line_count for parts of big files.",
        json!({
            "type": "object",
            "properties": {
                "path": path_schema("File path relative to the workspace root"),
                "start_line": {"type": "integer", "minimum": 1, "description": "First line to return (1-based)"},
                "line_count": {"type": "integer", "minimum": 1, "description": "How many lines to return"}
            },
            "required": ["path"]
        }),
    )
}
