//! The runner protocol's debug sessions (`plue debug RUN STEP`): a failed step run again
//! on a runner that keeps it, then an interactive shell in its workspace, its terminal
//! relayed through the engine.
//!
//! The conversation, after a poll answered with a [`DebugAssignment`]
//! (`PollResponse::debug`):
//! 1. the runner runs the step as its attempts ran (same assignment, same confinement),
//!    sending what it prints as terminal output;
//! 2. `POST` [`ready_path`] once the shell is up in the step's sandbox;
//! 3. `POST` [`output_path`]`?seq=N` with the raw bytes the terminal wrote (one request in
//!    flight, `seq` counting from 1; a repeated `seq` is acknowledged and dropped), answered
//!    with [`OutputAck`];
//! 4. `POST` [`input_path`] long-polls ([`InputPoll`]) for what the person typed and the
//!    window sizes, numbered ([`InputEvent`]); `after` acknowledges what was applied;
//! 5. `POST` [`end_path`] ([`DebugEnd`]) when the shell exited; the engine's answers say
//!    `end` when the session ended on its side (idle, detached, ended by its creator), and
//!    the runner then kills the shell. Either way the runner removes the sandbox and the
//!    workspace.
//!
//! Every path names the session, and the engine answers only the runner that claimed it.

use serde::{Deserialize, Serialize};

use super::Assignment;

/// The most bytes one output request carries.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// `POST`: the shell is up.
pub fn ready_path(session: &str) -> String {
    format!("/internal/debug/{session}/ready")
}

/// `POST ?seq=N` with the terminal's raw bytes.
pub fn output_path(session: &str, seq: u64) -> String {
    format!("/internal/debug/{session}/output?seq={seq}")
}

/// `POST` long-poll for [`InputEvent`]s.
pub fn input_path(session: &str) -> String {
    format!("/internal/debug/{session}/input")
}

/// `POST` the [`DebugEnd`].
pub fn end_path(session: &str) -> String {
    format!("/internal/debug/{session}/end")
}

/// A debug session for the runner: the step's assignment (as its attempts had it: plan
/// step, env, secrets, network policy, workspace source), and the shell's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugAssignment {
    /// The session's handle: 32 lowercase hex characters.
    pub session: String,
    /// The runner ends the session after this long without a byte either way (the engine
    /// does too; this holds when the engine cannot be reached).
    pub idle_timeout_secs: u64,
    /// The shell's `TERM`.
    pub term: String,
    pub assignment: Assignment,
}

/// The answer to an output request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputAck {
    /// The session ended on the engine's side: stop the shell.
    pub end: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputPoll {
    /// The last event the runner applied (0: none).
    pub after: u64,
    /// How long the engine may hold the request when there is nothing (capped by it).
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputBatch {
    /// Events after `after`, in order.
    pub events: Vec<InputEvent>,
    /// The session ended on the engine's side: stop the shell.
    pub end: bool,
}

/// What the person at the terminal did, numbered from 1 without gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputEvent {
    /// Keystrokes, as hex (they are few).
    Data { seq: u64, hex: String },
    /// The window's new size.
    Resize { seq: u64, cols: u16, rows: u16 },
}

impl InputEvent {
    pub fn seq(&self) -> u64 {
        match self {
            InputEvent::Data { seq, .. } | InputEvent::Resize { seq, .. } => *seq,
        }
    }
}

/// How the shell ended, by the runner's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugEnd {
    /// `shell exited with code 0`, `idle for 600s`, `the step could not be set up: ...`.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_events_are_tagged_and_strict() {
        let event: InputEvent =
            serde_json::from_str(r#"{"seq":3,"kind":"resize","cols":80,"rows":24}"#).unwrap();
        assert_eq!(
            event,
            InputEvent::Resize {
                seq: 3,
                cols: 80,
                rows: 24
            }
        );
        let json = serde_json::to_string(&InputEvent::Data {
            seq: 1,
            hex: "0a".into(),
        })
        .unwrap();
        assert_eq!(json, r#"{"kind":"data","seq":1,"hex":"0a"}"#);
        assert!(
            serde_json::from_str::<InputEvent>(r#"{"kind":"data","seq":1,"hex":"","x":1}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<InputPoll>(r#"{"after":1,"wait_ms":1,"x":1}"#).is_err());
    }
}
