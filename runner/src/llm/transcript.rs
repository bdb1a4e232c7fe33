//! The transcript of an `llm` attempt, and the replay of a step from one (the format is
//! `plue_types::transcript`).
//!
//! [`Transcriber`] is what the conversation ([`super::agent`]) tells, through three small
//! hooks: a request is about to be sent ([`Transcriber::asked`]), its streamed answer was
//! assembled ([`Transcriber::answered`]), a tool call ran ([`Transcriber::tool`]). It keeps
//! per turn the messages the request added to the previous one (the first carries the
//! model, system prompt and tool definitions: the requests are rebuilt exactly by
//! concatenation, without storing the growing history once per turn), the assistant
//! message as the runner assembled it (content blocks, stop reason, usage), each tool call
//! with its result, and timings in milliseconds since the conversation started.
//!
//! Invariants:
//! - The API key never enters a transcript: only request bodies are recorded, and the key
//!   travels only in the client's header. Every string (keys included) is masked with the
//!   step's [`Masker`] before it is kept, so a secret the model or a tool saw is `***`.
//! - A transcript is bounded: each recorded string is cut at [`MAX_STRING_BYTES`], and once
//!   the whole passes [`MAX_BYTES`] later turns are left out and `truncated` says so.
//! - With a [`Replay`], turns up to [`Replay::live_after`] (all of them when `None`) are
//!   answered from the recorded transcript without any request; a turn the transcript does
//!   not hold fails the step instead of calling the API (zero requests is the promise). The
//!   tools run for real, and each result is compared with the recorded one (both masked):
//!   every difference is kept for the caller, with its turn, tool and a short diff.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::stream::{Block, Message};
use super::tools::ToolOutput;
use crate::mask::Masker;
use plue_types::protocol::Usage;
use plue_types::transcript::{
    Difference, ToolRun, Transcript, Turn, MAX_BYTES, MAX_STRING_BYTES, VERSION,
};

/// Where and with what a transcript is kept.
#[derive(Debug, Clone, Copy)]
pub struct Keep<'a> {
    /// The file written when the conversation ends (one only the runner can reach).
    pub path: &'a std::path::Path,
    /// The attempt's step as a replay needs it: `{"action", "env", "timeout_secs",
    /// "workspace_from", "network"}` (masked like the rest).
    pub step: &'a Value,
}

/// A recorded transcript to answer the conversation from.
#[derive(Debug, Clone)]
pub struct Replay {
    recorded: Arc<Transcript>,
    /// Turns after this one call the API (`--from-turn N`); `None`: none does.
    pub live_after: Option<u32>,
    differences: Arc<Mutex<Vec<Difference>>>,
    /// Turns answered from the record so far.
    replayed: Arc<std::sync::atomic::AtomicU32>,
}

impl Replay {
    pub fn new(recorded: Transcript, live_after: Option<u32>) -> Replay {
        Replay {
            recorded: Arc::new(recorded),
            live_after,
            differences: Arc::default(),
            replayed: Arc::default(),
        }
    }

    /// Whether some turn may call the API (an API key is then needed).
    pub fn goes_live(&self) -> bool {
        self.live_after.is_some()
    }

    /// The differences found so far, in the order the tools ran.
    pub fn differences(&self) -> Vec<Difference> {
        lock(&self.differences).clone()
    }

    /// How many turns were answered from the record.
    pub fn replayed_turns(&self) -> u32 {
        self.replayed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The recorded transcript.
    pub fn recorded(&self) -> &Transcript {
        &self.recorded
    }

    fn replays(&self, turn: u32) -> bool {
        self.live_after.is_none_or(|last| turn <= last)
    }

    fn recorded_turn(&self, turn: u32) -> Option<&Turn> {
        self.recorded.turns.iter().find(|t| t.turn == turn)
    }
}

/// The recorder one conversation shares with its hooks.
pub struct Transcriber {
    masker: Arc<Masker>,
    began: Instant,
    replay: Option<Replay>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    transcript: Transcript,
    /// How many messages the previous request held.
    sent_messages: usize,
    /// The request being answered: (turn, request, added messages, started).
    pending: Option<(u32, Value, Vec<Value>, Duration)>,
    bytes: usize,
}

impl Transcriber {
    pub fn new(masker: Arc<Masker>, replay: Option<Replay>) -> Transcriber {
        Transcriber {
            masker,
            began: Instant::now(),
            replay,
            state: Mutex::new(State {
                transcript: Transcript {
                    version: VERSION,
                    ..Transcript::default()
                },
                ..State::default()
            }),
        }
    }

    /// A request for `turn` with `body` is about to be sent (or replayed). With a replay
    /// covering `turn`, the recorded answer (or why there is none): the caller sends
    /// nothing then.
    pub fn asked(&self, turn: u32, body: &Value) -> Option<Result<Message, String>> {
        let mut state = lock(&self.state);
        let mut request = body.clone();
        let messages = match request.get_mut("messages").map(Value::take) {
            Some(Value::Array(messages)) => messages,
            _ => Vec::new(),
        };
        if let Value::Object(map) = &mut request {
            map.remove("messages");
            if turn > 1 {
                map.remove("system");
                map.remove("tools");
            }
        }
        let added = messages
            .get(state.sent_messages.min(messages.len())..)
            .unwrap_or_default()
            .iter()
            .map(|m| self.clean(m))
            .collect();
        state.sent_messages = messages.len();
        state.pending = Some((turn, self.clean(&request), added, self.began.elapsed()));
        drop(state);
        let replay = self.replay.as_ref().filter(|r| r.replays(turn))?;
        let Some(recorded) = replay.recorded_turn(turn) else {
            return Some(Err(format!(
                "replay: the transcript holds no turn {turn} (it ends at turn {}{}); no request \
                 is made in a replay — use --from-turn to continue live",
                replay.recorded.turns.len(),
                if replay.recorded.truncated {
                    ", cut at its size limit"
                } else {
                    ""
                }
            )));
        };
        let answer =
            message_of(&recorded.response).map_err(|e| format!("replay: turn {turn}: {e}"));
        if let Ok(message) = &answer {
            self.record_answer(message, true);
            replay
                .replayed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Some(answer)
    }

    /// The answer of the pending request, as the stream assembled it.
    pub fn answered(&self, message: &Message) {
        self.record_answer(message, false);
    }

    fn record_answer(&self, message: &Message, replayed: bool) {
        let mut state = lock(&self.state);
        let Some((turn, request, messages_added, started)) = state.pending.take() else {
            return;
        };
        let response = self.clean(&json!({
            "content": message.content,
            "stop_reason": message.stop_reason,
            "usage": message.usage,
        }));
        let entry = Turn {
            turn,
            request,
            messages_added,
            response,
            started_ms: millis(started),
            duration_ms: millis(self.began.elapsed().saturating_sub(started)),
            replayed,
            tools: Vec::new(),
        };
        let size = serde_json::to_string(&entry).map_or(0, |s| s.len());
        if state.transcript.truncated || state.bytes + size > MAX_BYTES {
            state.transcript.truncated = true;
            return;
        }
        state.bytes += size;
        state.transcript.turns.push(entry);
    }

    /// Tool call `(id, name, input)` of `turn` returned `output`; `took` is how long it
    /// ran. In a replay, compared with the recorded result.
    pub fn tool(
        &self,
        turn: u32,
        (id, name, input): (&str, &str, &Value),
        output: &ToolOutput,
        took: Duration,
    ) {
        let (content, is_error) = (output.content.as_str(), output.is_error);
        let run = ToolRun {
            id: self.text(id),
            name: self.text(name),
            input: self.clean(input),
            content: self.text(content),
            is_error,
            duration_ms: millis(took),
        };
        if let Some(replay) = self.replay.as_ref().filter(|r| r.replays(turn)) {
            let recorded = replay
                .recorded_turn(turn)
                .and_then(|t| t.tools.iter().find(|r| r.id == run.id));
            let (was, was_error) = recorded.map_or(("(no recorded result)", false), |r| {
                (r.content.as_str(), r.is_error)
            });
            if was != run.content || was_error != run.is_error {
                let mark = |text: &str, error: bool| {
                    if error {
                        format!("(error) {text}")
                    } else {
                        text.to_owned()
                    }
                };
                let (was, now) = (mark(was, was_error), mark(&run.content, run.is_error));
                lock(&replay.differences).push(Difference {
                    turn,
                    tool: run.name.clone(),
                    id: run.id.clone(),
                    diff: short_diff(&was, &now),
                    recorded: was,
                    now,
                });
            }
        }
        let mut state = lock(&self.state);
        let size = serde_json::to_string(&run).map_or(0, |s| s.len());
        if state.transcript.truncated || state.bytes + size > MAX_BYTES {
            state.transcript.truncated = true;
            return;
        }
        let Some(last) = state.transcript.turns.last_mut().filter(|t| t.turn == turn) else {
            return;
        };
        last.tools.push(run);
        state.bytes += size;
    }

    /// A `finish` call of `turn` was accepted (the conversation ends there).
    pub fn accepted(&self, turn: u32, call: (&str, &str, &Value)) {
        let output = ToolOutput {
            content: "accepted".into(),
            is_error: false,
        };
        self.tool(turn, call, &output, Duration::ZERO);
    }

    /// The transcript so far.
    pub fn transcript(&self) -> Transcript {
        lock(&self.state).transcript.clone()
    }

    /// Writes the transcript, with `keep.step`, to `keep.path` (created, or replaced).
    pub async fn keep(&self, keep: Keep<'_>) -> std::io::Result<()> {
        let mut transcript = self.transcript();
        transcript.step = self.clean(keep.step);
        let text = serde_json::to_vec(&transcript).map_err(std::io::Error::other)?;
        tokio::fs::write(keep.path, text).await
    }

    /// A string masked, then cut at [`MAX_STRING_BYTES`] (masked first: a cut cannot split
    /// a secret out of the mask's reach).
    fn text(&self, text: &str) -> String {
        super::tools::cap(self.masker.mask(text).into_owned(), MAX_STRING_BYTES)
    }

    /// A JSON value with every string and key masked and cut.
    fn clean(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.text(text)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.clean(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.text(k), self.clean(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// A recorded response as the message the conversation goes on with.
fn message_of(response: &Value) -> Result<Message, String> {
    let blocks = response["content"]
        .as_array()
        .ok_or("the recorded response has no content")?;
    let mut content = Vec::with_capacity(blocks.len());
    for block in blocks {
        content.push(match block["type"].as_str() {
            Some("text") => Block::Text {
                text: block["text"].as_str().unwrap_or_default().to_owned(),
            },
            Some("tool_use") => Block::ToolUse {
                id: block["id"].as_str().unwrap_or_default().to_owned(),
                name: block["name"].as_str().unwrap_or_default().to_owned(),
                input: block["input"].clone(),
            },
            other => return Err(format!("a recorded block of unknown type {other:?}")),
        });
    }
    Ok(Message {
        content,
        stop_reason: response["stop_reason"].as_str().map(str::to_owned),
        // A replayed answer costs nothing: no tokens were used.
        usage: Usage::default(),
    })
}

/// The first differing lines of two texts (up to 3 on each side), `-` then `+`.
pub fn short_diff(was: &str, now: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (was.lines().collect(), now.lines().collect());
    let first = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = format!("@@ line {} @@\n", first + 1);
    for line in a.iter().skip(first).take(3) {
        out.push_str(&format!("-{line}\n"));
    }
    for line in b.iter().skip(first).take(3) {
        out.push_str(&format!("+{line}\n"));
    }
    super::tools::cap(out, 2048)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it left plain data behind; still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str, calls: &[(&str, &str)]) -> Message {
        let mut content = vec![Block::Text { text: text.into() }];
        for (id, name) in calls {
            content.push(Block::ToolUse {
                id: (*id).into(),
                name: (*name).into(),
                input: json!({"command": "cat a.txt"}),
            });
        }
        Message {
            content,
            stop_reason: Some(
                if calls.is_empty() {
                    "end_turn"
                } else {
                    "tool_use"
                }
                .into(),
            ),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                ..Usage::default()
            },
        }
    }

    fn ok(content: &str) -> ToolOutput {
        ToolOutput {
            content: content.into(),
            is_error: false,
        }
    }

    fn body(messages: Vec<Value>) -> Value {
        json!({"model": "m", "system": "sys", "tools": [{"name": "bash"}], "messages": messages})
    }

    #[test]
    fn records_requests_as_added_messages_masked() {
        let t = Transcriber::new(Arc::new(Masker::new(["hunter2"])), None);
        let first = vec![json!({"role": "user", "content": "use hunter2"})];
        assert!(t.asked(1, &body(first.clone())).is_none());
        t.answered(&reply("ok", &[("t1", "bash")]));
        t.tool(
            1,
            ("t1", "bash", &json!({})),
            &ok("hunter2 here"),
            Duration::ZERO,
        );
        let mut second = first;
        second.push(json!({"role": "assistant", "content": []}));
        second.push(json!({"role": "user", "content": [{"type": "tool_result"}]}));
        assert!(t.asked(2, &body(second)).is_none());
        t.answered(&reply("done", &[]));
        let transcript = t.transcript();
        let text = serde_json::to_string(&transcript).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(transcript.turns.len(), 2);
        assert_eq!(transcript.turns[0].request["system"], "sys");
        assert!(transcript.turns[1].request.get("system").is_none());
        assert_eq!(transcript.turns[1].messages_added.len(), 2);
        assert_eq!(transcript.turns[0].tools[0].content, "*** here");
        assert_eq!(transcript.turns[0].response["usage"]["input_tokens"], 10);
    }

    #[test]
    fn a_replay_answers_from_the_record_and_reports_changed_results() {
        let rec = Transcriber::new(Arc::new(Masker::default()), None);
        rec.asked(1, &body(vec![]));
        rec.answered(&reply("look", &[("t1", "bash")]));
        rec.tool(
            1,
            ("t1", "bash", &json!({})),
            &ok("one\ntwo\n"),
            Duration::ZERO,
        );
        rec.asked(2, &body(vec![]));
        rec.answered(&reply("done", &[]));
        let recorded = rec.transcript();

        let replay = Replay::new(recorded.clone(), None);
        let t = Transcriber::new(Arc::new(Masker::default()), Some(replay.clone()));
        let answer = t.asked(1, &body(vec![])).unwrap().unwrap();
        assert_eq!(answer.tool_uses().count(), 1);
        assert_eq!(answer.usage, Usage::default());
        t.tool(
            1,
            ("t1", "bash", &json!({})),
            &ok("one\nTWO\n"),
            Duration::ZERO,
        );
        let differences = replay.differences();
        assert_eq!(differences.len(), 1);
        assert_eq!(differences[0].turn, 1);
        assert_eq!(differences[0].diff, "@@ line 2 @@\n-two\n+TWO\n");
        assert!(t.asked(2, &body(vec![])).unwrap().is_ok());
        // A turn the record does not hold fails rather than calling the API.
        assert!(t.asked(3, &body(vec![])).unwrap().is_err());

        // --from-turn 1: turn 2 goes live.
        let t = Transcriber::new(
            Arc::new(Masker::default()),
            Some(Replay::new(recorded, Some(1))),
        );
        assert!(t.asked(1, &body(vec![])).is_some());
        assert!(t.asked(2, &body(vec![])).is_none());
    }

    #[test]
    fn a_transcript_stays_bounded() {
        let t = Transcriber::new(Arc::new(Masker::default()), None);
        let big = "x".repeat(MAX_STRING_BYTES * 2);
        for turn in 1..200 {
            t.asked(turn, &body(vec![]));
            t.answered(&reply("r", &[("t", "bash")]));
            t.tool(turn, ("t", "bash", &json!({})), &ok(&big), Duration::ZERO);
        }
        let transcript = t.transcript();
        assert!(transcript.truncated);
        assert!(serde_json::to_string(&transcript).unwrap().len() <= MAX_BYTES + 1024);
        assert!(transcript.turns[0].tools[0].content.len() <= MAX_STRING_BYTES + 100);
    }
}
