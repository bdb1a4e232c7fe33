//! The events of a streamed Claude Messages response and the [`Accumulator`] that turns
//! them into one assistant message.
//!
//! Event shapes (the `data:` JSON of each server-sent event, named by its `type`):
//! `message_start {message: {id, model, usage, ..}}`, `content_block_start {index,
//! content_block: {type: text|tool_use|thinking|.., ..}}`, `content_block_delta {index,
//! delta: {type: text_delta|input_json_delta|thinking_delta|signature_delta|.., ..}}`,
//! `content_block_stop {index}`, `message_delta {delta: {stop_reason, ..}, usage}`,
//! `message_stop`, `ping`, and `error {error: {type, message}}`.
//!
//! Invariants:
//! - Pure: no IO, no clock. Feed events with [`Accumulator::apply`], then
//!   [`Accumulator::finish`].
//! - Every text delta (and the text a `content_block_start` may already carry) is handed
//!   back as it arrives, unchanged, so the caller can log it at once; what was handed back
//!   for a block is exactly that block's text.
//! - A tool call's input is the concatenation of its `input_json_delta` pieces, parsed once
//!   at `content_block_stop`; with no pieces it is the `input` of `content_block_start`
//!   (`{}` when absent). Invalid JSON is an error, not a guess.
//! - The text and tool input of one message are capped at [`MAX_MESSAGE_BYTES`]: a server
//!   streaming more gets [`StreamError::TooLarge`], not unbounded memory.
//! - A message is complete only after `message_stop`: [`Accumulator::finish`] refuses
//!   anything else (`stream ended before message_stop`), so a cut connection is never
//!   mistaken for an answer.
//! - Thinking blocks and unknown block or delta types are ignored (and left out of the
//!   message sent back), as are unknown event types — the API may add them. Text blocks
//!   of only whitespace stay in [`Message::text`] but are left out of
//!   [`Message::request_content`] (the API refuses them in requests).
//! - Usage: `message_start` gives the initial counts, `message_delta` the cumulative ones;
//!   a field present in a later event replaces the earlier value. [`Accumulator::usage`]
//!   is the usage so far, for a stream cut before its end too.
//!
//! Why one file past ~600 lines: every event shape of the streaming Messages protocol and
//! the accumulator that folds them, tested against recorded streams in the same place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use plue_types::protocol::Usage;

/// The most bytes of text and tool input one message may accumulate.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// One event of the stream (the `data:` JSON).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    MessageStart {
        message: MessageStart,
    },
    ContentBlockStart {
        index: usize,
        content_block: BlockStart,
    },
    ContentBlockDelta {
        index: usize,
        delta: Delta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<ApiUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorBody,
    },
    /// An event type this client does not know; ignored.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MessageStart {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub usage: Option<ApiUsage>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockStart {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        /// Usually `{}` with the input following as deltas; kept for when it comes whole.
        #[serde(default)]
        input: Option<Value>,
    },
    /// `thinking`, `redacted_thinking` and anything newer: ignored.
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// `thinking_delta`, `signature_delta`, `citations_delta`, ...: ignored.
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MessageDeltaBody {
    #[serde(default)]
    pub stop_reason: Option<String>,
}

/// The API's usage object; every field optional because `message_delta` carries a subset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ApiUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

/// `{"type": "overloaded_error", "message": "Overloaded"}`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

/// A content block of a finished assistant message, as sent back in the next request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

/// One complete assistant turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Text and tool-use blocks in order; empty text blocks are left out.
    pub content: Vec<Block>,
    /// `end_turn`, `tool_use`, `max_tokens`, `stop_sequence`, `refusal`, ...
    pub stop_reason: Option<String>,
    pub usage: Usage,
}

impl Message {
    /// The concatenated text blocks.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|block| match block {
                Block::Text { text } => Some(text.as_str()),
                Block::ToolUse { .. } => None,
            })
            .collect()
    }

    /// The blocks to send back as the assistant's turn: text blocks of only whitespace are
    /// left out (the API refuses them in requests).
    pub fn request_content(&self) -> Vec<&Block> {
        self.content
            .iter()
            .filter(|block| !matches!(block, Block::Text { text } if text.trim().is_empty()))
            .collect()
    }

    /// The tool calls, in order.
    pub fn tool_uses(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.content.iter().filter_map(|block| match block {
            Block::ToolUse { id, name, input } => Some((id.as_str(), name.as_str(), input)),
            Block::Text { .. } => None,
        })
    }
}

/// Why a stream did not make a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The API sent an `error` event (`overloaded_error`, `api_error`, ...).
    #[error("{kind}: {message}")]
    Api { kind: String, message: String },
    /// The events ended before `message_stop` (a dropped connection).
    #[error("stream ended before message_stop")]
    Incomplete,
    /// The events made no sense (a delta for an unknown block, invalid tool input JSON).
    #[error("malformed stream: {0}")]
    Malformed(String),
    /// The message's text and tool input passed [`MAX_MESSAGE_BYTES`].
    #[error("the answer's text and tool input passed {} MiB; it was not read further", MAX_MESSAGE_BYTES >> 20)]
    TooLarge,
}

impl StreamError {
    /// Whether trying the turn again may help.
    pub fn retryable(&self) -> bool {
        match self {
            StreamError::Api { kind, .. } => {
                matches!(
                    kind.as_str(),
                    "overloaded_error" | "api_error" | "rate_limit_error" | "timeout_error"
                )
            }
            StreamError::Incomplete => true,
            StreamError::Malformed(_) | StreamError::TooLarge => false,
        }
    }
}

enum Building {
    Text(String),
    Tool {
        id: String,
        name: String,
        json: String,
        /// The `input` of `content_block_start`, used when no delta comes.
        start_input: Option<Value>,
    },
    Ignored,
}

/// Folds the events of one response into a [`Message`]; see the module invariants.
#[derive(Default)]
pub struct Accumulator {
    started: bool,
    stopped: bool,
    open: BTreeMap<usize, Building>,
    /// Finished blocks by index (the API sends them in index order; this keeps it anyway).
    done: BTreeMap<usize, Block>,
    stop_reason: Option<String>,
    usage: ApiUsage,
    /// Text and tool input bytes so far (see [`MAX_MESSAGE_BYTES`]).
    bytes: usize,
    /// Content deltas received: each carries at least one output token, a floor for the
    /// output of a message still streaming ([`Accumulator::usage`]).
    deltas: u64,
}

impl Accumulator {
    pub fn new() -> Accumulator {
        Accumulator::default()
    }

    /// Applies one event; returns the text of a text delta (or of a text block's start), to
    /// be shown at once.
    pub fn apply(&mut self, event: Event) -> Result<Option<String>, StreamError> {
        if self.stopped && !matches!(event, Event::Ping | Event::Unknown) {
            return Err(StreamError::Malformed("an event after message_stop".into()));
        }
        match event {
            Event::MessageStart { message } => {
                self.started = true;
                if let Some(usage) = message.usage {
                    self.merge_usage(usage);
                }
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => {
                self.require_started("content_block_start")?;
                let mut shown = None;
                let building = match content_block {
                    BlockStart::Text { text } => {
                        self.count(text.len())?;
                        if !text.is_empty() {
                            shown = Some(text.clone());
                        }
                        Building::Text(text)
                    }
                    BlockStart::ToolUse { id, name, input } => {
                        let given = input.as_ref().map_or(0, |v| v.to_string().len());
                        self.count(given)?;
                        Building::Tool {
                            id,
                            name,
                            json: String::new(),
                            start_input: input,
                        }
                    }
                    BlockStart::Other => Building::Ignored,
                };
                if self.open.insert(index, building).is_some() || self.done.contains_key(&index) {
                    return Err(StreamError::Malformed(format!(
                        "content block {index} started twice"
                    )));
                }
                return Ok(shown);
            }
            Event::ContentBlockDelta { index, delta } => {
                let Some(block) = self.open.get_mut(&index) else {
                    return Err(StreamError::Malformed(format!(
                        "a delta for content block {index}, which is not open"
                    )));
                };
                let added = match &delta {
                    Delta::TextDelta { text } => text.len(),
                    Delta::InputJsonDelta { partial_json } => partial_json.len(),
                    Delta::Other => 0,
                };
                if self.bytes + added > MAX_MESSAGE_BYTES {
                    return Err(StreamError::TooLarge);
                }
                if added > 0 {
                    self.deltas += 1;
                }
                match (block, delta) {
                    (Building::Text(text), Delta::TextDelta { text: piece }) => {
                        self.bytes += added;
                        text.push_str(&piece);
                        return Ok(Some(piece));
                    }
                    (Building::Tool { json, .. }, Delta::InputJsonDelta { partial_json }) => {
                        self.bytes += added;
                        json.push_str(&partial_json);
                    }
                    (_, Delta::Other) | (Building::Ignored, _) => {}
                    (_, delta) => {
                        return Err(StreamError::Malformed(format!(
                            "a {} for content block {index} of another kind",
                            delta_name(&delta)
                        )))
                    }
                }
            }
            Event::ContentBlockStop { index } => {
                let Some(block) = self.open.remove(&index) else {
                    return Err(StreamError::Malformed(format!(
                        "content block {index} stopped but was not open"
                    )));
                };
                match block {
                    Building::Text(text) => {
                        self.done.insert(index, Block::Text { text });
                    }
                    Building::Tool {
                        id,
                        name,
                        json,
                        start_input,
                    } => {
                        let input = if json.trim().is_empty() {
                            start_input
                                .filter(|v| !v.is_null())
                                .unwrap_or_else(|| Value::Object(Default::default()))
                        } else {
                            serde_json::from_str(&json).map_err(|e| {
                                StreamError::Malformed(format!(
                                    "the input of tool call {id} ({name}) is not JSON: {e}"
                                ))
                            })?
                        };
                        self.done.insert(index, Block::ToolUse { id, name, input });
                    }
                    Building::Ignored => {}
                }
            }
            Event::MessageDelta { delta, usage } => {
                self.require_started("message_delta")?;
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                if let Some(usage) = usage {
                    self.merge_usage(usage);
                }
            }
            Event::MessageStop => {
                self.require_started("message_stop")?;
                self.stopped = true;
            }
            Event::Ping | Event::Unknown => {}
            Event::Error { error } => {
                return Err(StreamError::Api {
                    kind: error.kind,
                    message: error.message,
                })
            }
        }
        Ok(None)
    }

    /// The usage so far: what the API reported; while the message is still streaming, its
    /// output is at least the number of content deltas received (the API reports output
    /// only at the end, and a cut stream was still billed for what it streamed).
    pub fn usage(&self) -> Usage {
        let reported = self.usage.output_tokens.unwrap_or(0);
        Usage {
            input_tokens: self.usage.input_tokens.unwrap_or(0),
            output_tokens: if self.stopped {
                reported
            } else {
                reported.max(self.deltas)
            },
            cache_creation_input_tokens: self.usage.cache_creation_input_tokens.unwrap_or(0),
            cache_read_input_tokens: self.usage.cache_read_input_tokens.unwrap_or(0),
        }
    }

    /// Whether `message_stop` arrived (nothing more belongs to this message).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The message, if the stream reached `message_stop`.
    pub fn finish(self) -> Result<Message, StreamError> {
        if !self.stopped {
            return Err(StreamError::Incomplete);
        }
        if let Some(index) = self.open.keys().next() {
            return Err(StreamError::Malformed(format!(
                "content block {index} was never stopped"
            )));
        }
        let content = self
            .done
            .into_values()
            .filter(|block| !matches!(block, Block::Text { text } if text.is_empty()))
            .collect();
        Ok(Message {
            content,
            stop_reason: self.stop_reason,
            usage: Usage {
                input_tokens: self.usage.input_tokens.unwrap_or(0),
                output_tokens: self.usage.output_tokens.unwrap_or(0),
                cache_creation_input_tokens: self.usage.cache_creation_input_tokens.unwrap_or(0),
                cache_read_input_tokens: self.usage.cache_read_input_tokens.unwrap_or(0),
            },
        })
    }

    /// Counts `added` bytes of text or tool input against [`MAX_MESSAGE_BYTES`].
    fn count(&mut self, added: usize) -> Result<(), StreamError> {
        self.bytes += added;
        if self.bytes > MAX_MESSAGE_BYTES {
            return Err(StreamError::TooLarge);
        }
        Ok(())
    }

    fn require_started(&self, what: &str) -> Result<(), StreamError> {
        if self.started {
            Ok(())
        } else {
            Err(StreamError::Malformed(format!(
                "{what} before message_start"
            )))
        }
    }

    fn merge_usage(&mut self, usage: ApiUsage) {
        let current = &mut self.usage;
        current.input_tokens = usage.input_tokens.or(current.input_tokens);
        current.output_tokens = usage.output_tokens.or(current.output_tokens);
        current.cache_creation_input_tokens = usage
            .cache_creation_input_tokens
            .or(current.cache_creation_input_tokens);
        current.cache_read_input_tokens = usage
            .cache_read_input_tokens
            .or(current.cache_read_input_tokens);
    }
}

fn delta_name(delta: &Delta) -> &'static str {
    match delta {
        Delta::TextDelta { .. } => "text_delta",
        Delta::InputJsonDelta { .. } => "input_json_delta",
        Delta::Other => "delta",
    }
}

/// Parses the `data:` of one server-sent event.
pub fn parse_event(data: &str) -> Result<Event, StreamError> {
    serde_json::from_str(data)
        .map_err(|e| StreamError::Malformed(format!("an event that is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Feeds recorded `data:` lines; returns the text deltas and the outcome.
    fn feed(events: &[Value]) -> (Vec<String>, Result<Message, StreamError>) {
        let mut acc = Accumulator::new();
        let mut texts = Vec::new();
        for event in events {
            match acc.apply(parse_event(&event.to_string()).unwrap()) {
                Ok(Some(text)) => texts.push(text),
                Ok(None) => {}
                Err(e) => return (texts, Err(e)),
            }
        }
        (texts, acc.finish())
    }

    fn start() -> Value {
        json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",
            "content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,
            "usage":{"input_tokens":25,"cache_creation_input_tokens":3,"cache_read_input_tokens":7,
            "output_tokens":1,"service_tier":"standard"}}})
    }

    fn text_delta(index: usize, text: &str) -> Value {
        json!({"type":"content_block_delta","index":index,"delta":{"type":"text_delta","text":text}})
    }

    #[test]
    fn a_text_answer_streams_its_deltas_exactly() {
        let events = [
            start(),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            json!({"type":"ping"}),
            text_delta(0, "Hello"),
            text_delta(0, ", wörld\n"),
            text_delta(0, "  second line"),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
                "usage":{"output_tokens":15}}),
            json!({"type":"message_stop"}),
        ];
        let (texts, message) = feed(&events);
        assert_eq!(texts, ["Hello", ", wörld\n", "  second line"]);
        let message = message.unwrap();
        assert_eq!(message.text(), "Hello, wörld\n  second line");
        assert_eq!(message.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(
            message.usage,
            Usage {
                input_tokens: 25,
                output_tokens: 15,
                cache_creation_input_tokens: 3,
                cache_read_input_tokens: 7
            }
        );
    }

    #[test]
    fn tool_input_is_concatenated_and_parsed_at_block_stop() {
        let events = [
            start(),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            text_delta(0, "Let me look."),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"content_block_start","index":1,"content_block":
                {"type":"tool_use","id":"toolu_01","name":"read_file","input":{}}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"pa"}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"th\": \"src/é.rs\"}"}}),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"content_block_start","index":2,"content_block":
                {"type":"tool_use","id":"toolu_02","name":"git_diff","input":{}}}),
            json!({"type":"content_block_stop","index":2}),
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":40}}),
            json!({"type":"message_stop"}),
        ];
        let (_, message) = feed(&events);
        let message = message.unwrap();
        assert_eq!(message.stop_reason.as_deref(), Some("tool_use"));
        let calls: Vec<_> = message.tool_uses().collect();
        assert_eq!(
            calls,
            [
                ("toolu_01", "read_file", &json!({"path": "src/é.rs"})),
                ("toolu_02", "git_diff", &json!({})),
            ]
        );
        let sent = serde_json::to_value(&message.content).unwrap();
        assert_eq!(
            sent[1],
            json!({"type":"tool_use","id":"toolu_01","name":"read_file","input":{"path":"src/é.rs"}})
        );
    }

    #[test]
    fn thinking_and_unknown_things_are_ignored() {
        let events = [
            start(),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQ"}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"some_future_event","x":1}),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"citations_delta","citation":{}}}),
            text_delta(1, "ok"),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn"}}),
            json!({"type":"message_stop"}),
        ];
        let (texts, message) = feed(&events);
        assert_eq!(texts, ["ok"]);
        assert_eq!(
            message.unwrap().content,
            [Block::Text { text: "ok".into() }]
        );
    }

    #[test]
    fn an_error_event_is_an_api_error() {
        let events = [
            start(),
            json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
        ];
        let (_, outcome) = feed(&events);
        let err = outcome.unwrap_err();
        assert_eq!(err.to_string(), "overloaded_error: Overloaded");
        assert!(err.retryable());
        let invalid = StreamError::Api {
            kind: "invalid_request_error".into(),
            message: "bad".into(),
        };
        assert!(!invalid.retryable());
    }

    #[test]
    fn a_stream_cut_before_message_stop_is_incomplete() {
        let events = [
            start(),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            text_delta(0, "partial"),
        ];
        let (texts, outcome) = feed(&events);
        assert_eq!(texts, ["partial"]);
        assert_eq!(outcome.unwrap_err(), StreamError::Incomplete);
        assert_eq!(
            StreamError::Incomplete.to_string(),
            "stream ended before message_stop"
        );
    }

    #[test]
    fn text_in_a_block_start_is_shown_like_a_delta() {
        let events = [
            start(),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":"Hi"}}),
            text_delta(0, " there"),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn"}}),
            json!({"type":"message_stop"}),
        ];
        let (texts, message) = feed(&events);
        // regression: the start's text was in the result but never logged.
        assert_eq!(texts, ["Hi", " there"]);
        assert_eq!(message.unwrap().text(), texts.concat());
    }

    #[test]
    fn a_tool_input_given_whole_at_block_start_is_kept() {
        let events = [
            start(),
            json!({"type":"content_block_start","index":0,"content_block":
                {"type":"tool_use","id":"toolu_1","name":"read_file","input":{"path":"a.txt"}}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"content_block_start","index":1,"content_block":
                {"type":"tool_use","id":"toolu_2","name":"git_diff"}}),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"}}),
            json!({"type":"message_stop"}),
        ];
        let (_, message) = feed(&events);
        let message = message.unwrap();
        let calls: Vec<_> = message.tool_uses().collect();
        // regression: an input without deltas was replaced by {}.
        assert_eq!(
            calls,
            [
                ("toolu_1", "read_file", &json!({"path": "a.txt"})),
                ("toolu_2", "git_diff", &json!({})),
            ]
        );
    }

    #[test]
    fn whitespace_only_text_blocks_are_not_sent_back() {
        let events = [
            start(),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            text_delta(0, "\n\n"),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"content_block_start","index":1,"content_block":
                {"type":"tool_use","id":"toolu_1","name":"git_diff","input":{}}}),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"}}),
            json!({"type":"message_stop"}),
        ];
        let (texts, message) = feed(&events);
        let message = message.unwrap();
        assert_eq!(message.text(), texts.concat());
        let sent = serde_json::to_value(message.request_content()).unwrap();
        assert_eq!(
            sent,
            json!([{"type":"tool_use","id":"toolu_1","name":"git_diff","input":{}}])
        );
    }

    #[test]
    fn a_message_past_the_size_cap_is_refused() {
        let piece = "x".repeat(1024 * 1024);
        let mut events = vec![
            start(),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ];
        events.extend((0..=MAX_MESSAGE_BYTES / piece.len()).map(|_| text_delta(0, &piece)));
        let (texts, outcome) = feed(&events);
        assert_eq!(texts.len(), MAX_MESSAGE_BYTES / piece.len());
        assert_eq!(outcome.unwrap_err(), StreamError::TooLarge);
        assert!(!StreamError::TooLarge.retryable());
    }

    #[test]
    fn rate_limit_and_timeout_error_events_are_retryable() {
        for kind in [
            "rate_limit_error",
            "timeout_error",
            "overloaded_error",
            "api_error",
        ] {
            let error = StreamError::Api {
                kind: kind.into(),
                message: "later".into(),
            };
            assert!(error.retryable(), "{kind}");
        }
    }

    #[test]
    fn malformed_streams_are_refused() {
        let bad_json = [
            start(),
            json!({"type":"content_block_start","index":0,"content_block":
                {"type":"tool_use","id":"t","name":"bash","input":{}}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"command\": "}}),
            json!({"type":"content_block_stop","index":0}),
        ];
        let (_, outcome) = feed(&bad_json);
        assert!(matches!(outcome, Err(StreamError::Malformed(m)) if m.contains("not JSON")));
        let (_, outcome) = feed(&[start(), text_delta(3, "x")]);
        assert!(matches!(outcome, Err(StreamError::Malformed(m)) if m.contains("not open")));
        let (_, outcome) = feed(&[json!({"type":"message_stop"})]);
        assert!(
            matches!(outcome, Err(StreamError::Malformed(m)) if m.contains("before message_start"))
        );
        assert!(parse_event("not json").is_err());
    }
}
