//! The transcript an `llm` attempt keeps: its conversation turn by turn, as the runner
//! writes it (`transcript.json`) and the engine, the dashboard and `plue rerun --replay`
//! read it. The runner's `llm::transcript` records and replays; this is only the format.
//!
//! Invariants: a transcript's JSON is at most [`MAX_BYTES`] (later turns left out and
//! `truncated` set), each string in it at most [`MAX_STRING_BYTES`], every string already
//! masked; [`parse`] reads only [`VERSION`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The file the runner writes the transcript to (inside a runner-only directory).
pub const FILE: &str = "transcript.json";
/// The largest transcript kept (its JSON).
pub const MAX_BYTES: usize = 4 << 20;
/// The longest string (a tool result, a file written) kept inside a transcript.
pub const MAX_STRING_BYTES: usize = 64 << 10;
/// The format's version.
pub const VERSION: u32 = 1;

/// An attempt's whole conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub version: u32,
    /// What the attempt was asked to do, for a replay to set it up again (the runner's
    /// `transcript::Keep::step`).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub step: Value,
    /// Turns in order; a turn is one request and its answer (retries of a turn are not
    /// kept: only the answer the conversation went on with).
    pub turns: Vec<Turn>,
    /// Later turns were left out at [`MAX_BYTES`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One request and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub turn: u32,
    /// The request's body without its `messages`; only the first turn carries `system`
    /// and `tools` (they never change).
    pub request: Value,
    /// The messages this request added to the previous one's.
    pub messages_added: Vec<Value>,
    /// The assistant message: `content` blocks, `stop_reason`, `usage`.
    pub response: Value,
    /// When the request was sent, since the conversation started.
    pub started_ms: u64,
    /// Until its answer was whole.
    pub duration_ms: u64,
    /// Answered from a recorded transcript (a replay), not by the API.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    pub tools: Vec<ToolRun>,
}

/// A tool call the model made and what it returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRun {
    pub id: String,
    pub name: String,
    pub input: Value,
    pub content: String,
    pub is_error: bool,
    pub duration_ms: u64,
}

/// Where a replayed tool's result is not what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub turn: u32,
    pub tool: String,
    pub id: String,
    pub recorded: String,
    pub now: String,
    /// The first lines that differ, `-` recorded and `+` now.
    pub diff: String,
}

/// Why [`parse`] refused some bytes.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("not a transcript: {0}")]
    NotATranscript(#[from] serde_json::Error),
    /// A transcript of another version (holds it).
    #[error("a transcript of version {0} (this plue reads version {VERSION})")]
    Version(u32),
}

/// Reads a transcript the runner kept.
pub fn parse(bytes: &[u8]) -> Result<Transcript, TranscriptError> {
    let transcript: Transcript = serde_json::from_slice(bytes)?;
    if transcript.version != VERSION {
        return Err(TranscriptError::Version(transcript.version));
    }
    Ok(transcript)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transcript_round_trips_and_only_its_version_is_read() {
        let transcript = Transcript {
            version: VERSION,
            turns: vec![Turn {
                turn: 1,
                request: serde_json::json!({"model": "m"}),
                messages_added: vec![],
                response: serde_json::json!({"content": []}),
                started_ms: 0,
                duration_ms: 5,
                replayed: false,
                tools: vec![],
            }],
            ..Transcript::default()
        };
        let bytes = serde_json::to_vec(&transcript).unwrap();
        assert_eq!(parse(&bytes).unwrap(), transcript);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            !text.contains("truncated") && !text.contains("\"step\""),
            "{text}"
        );
        assert!(matches!(
            parse(br#"{"version": 2, "turns": []}"#),
            Err(TranscriptError::Version(2))
        ));
        assert!(matches!(
            parse(b"not json"),
            Err(TranscriptError::NotATranscript(_))
        ));
    }
}
