//! `bash`: a command in the workspace root through [`crate::process`] — its own process
//! group (and cgroup where the host allows), the step's built environment and user, killed
//! with everything it started when it ends, times out or the step stops.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::args::{count_arg, string_arg};
use super::{ToolOutput, Toolbox, DEFAULT_BASH_TIMEOUT, OUTPUT_CAP};
use crate::process::{self, Ending, ProcessSpec};

/// The longest `timeout_secs` a `bash` call may ask for.
pub(super) const MAX_BASH_TIMEOUT_SECS: u64 = 1800;

impl Toolbox {
    pub(super) async fn bash(&self, input: &Value) -> Result<ToolOutput, String> {
        let command = string_arg(input, "bash", "command")?;
        let timeout = match count_arg(input, "timeout_secs")? {
            Some(secs) => Duration::from_secs((secs as u64).clamp(1, MAX_BASH_TIMEOUT_SECS)),
            None => DEFAULT_BASH_TIMEOUT,
        };
        let spec = ProcessSpec {
            program: PathBuf::from("bash"),
            args: vec![
                "--noprofile".into(),
                "--norc".into(),
                "-o".into(),
                "pipefail".into(),
                "-c".into(),
                command.to_owned(),
            ],
            cwd: self.root.clone(),
            env: self.env.clone(),
            user: self.user,
            timeout,
            // The model sees what its command printed; the agent masks what is logged.
            masker: Default::default(),
            fresh_interpreter: false,
            network: self.network.clone(),
        };
        let (tx, mut rx) = mpsc::channel(1024);
        let collect = tokio::spawn(async move {
            let mut text = String::new();
            let mut dropped = 0usize;
            while let Some((_, line)) = rx.recv().await {
                let line: String = line;
                if text.len() + line.len() < OUTPUT_CAP {
                    text.push_str(&line);
                    text.push('\n');
                } else {
                    dropped += line.len() + 1;
                }
            }
            (text, dropped)
        });
        let result = process::run(spec, tx, self.stop.clone())
            .await
            .map_err(|e| format!("cannot start bash: {e}"))?;
        let (mut text, dropped) = collect.await.unwrap_or_default();
        if dropped > 0 {
            text.push_str(&format!("[output truncated: {dropped} more bytes]\n"));
        }
        Ok(match result.ending {
            Ending::Exited(0) => {
                if text.is_empty() {
                    text.push_str("(no output)\n");
                }
                text.push_str("[exit code 0]");
                ToolOutput::ok(text)
            }
            Ending::Exited(code) => {
                text.push_str(&format!("[exit code {code}]"));
                ToolOutput::error(text)
            }
            Ending::Signalled(signal) => {
                text.push_str(&format!("[killed by signal {signal}]"));
                ToolOutput::error(text)
            }
            Ending::TimedOut => {
                text.push_str(&format!(
                    "[timed out after {}s; the command and its processes were killed]",
                    timeout.as_secs()
                ));
                ToolOutput::error(text)
            }
            Ending::Cancelled => {
                text.push_str("[the step was stopped; the command was killed]");
                ToolOutput::error(text)
            }
        })
    }
}

/// What the model is told about `bash`: its description and input schema.
pub(super) fn definition() -> (&'static str, Value) {
    (
        "Run a bash command in the workspace root and return its output (stdout and \
         stderr) and exit code. Commands are killed after timeout_secs (default 120).",
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The bash command"},
                "timeout_secs": {"type": "integer", "minimum": 1, "maximum": MAX_BASH_TIMEOUT_SECS}
            },
            "required": ["command"]
        }),
    )
}
