//! The conversation of an `llm` step: send the prompt, stream the model's turn, run the
//! tools it calls, send the results back, until it ends its turn or `max_turns` is
//! reached.
//!
//! Invariants:
//! - Every text delta becomes a `token` log line as it streams, with the step's secrets
//!   masked across deltas ([`StreamMasker`]: only a tail that could still become a secret
//!   waits for the next delta or the end of the turn; nothing waits when there are no
//!   secrets). Only NUL becomes U+FFFD and pieces longer than [`MAX_LINE_BYTES`] are split
//!   on character boundaries, so the token lines of a turn concatenate to its masked text.
//!   Each tool call is a `tool_call` line, each result a `tool_result` line (secrets masked
//!   in the raw strings before they are cut and JSON-encoded), each finished turn a `usage`
//!   line.
//! - A turn that fails in a way that may pass (429, 529, 5xx, an `overloaded_error`,
//!   `api_error`, `rate_limit_error` or `timeout_error` event, a stream cut before
//!   `message_stop`) is retried from its start, up to [`RetryPolicy::attempts`] attempts,
//!   after `retry-after` (capped) or an exponential backoff; a `system` line says so, and
//!   that the tokens the broken attempt streamed are superseded. Other failures (4xx, a
//!   redirect, a malformed or oversized answer) fail the step at once with their message.
//! - After the tools of a turn the request carries the assistant's full content blocks,
//!   then one user message with a `tool_result` block per tool call, in order.
//! - A model still calling tools on turn `max_turns` fails the step (its calls are not run).
//! - A final reply cut at `max_tokens` fails the step, saying so. With a result contract
//!   ([`Finish`]) the conversation ends only by a matching `finish` call (a `finish` on the
//!   last turn is still run); a reply that ends without one fails the step, and a wrong
//!   input goes back to the model as a tool error (see [`tools::finish`]).
//! - The step's stop token (cancellation or timeout) ends the conversation at the next
//!   await, a tool call included: the stream is dropped, a running `bash` call is killed.
//! - The API key goes only to the client; messages here never contain it.
//! - With a [`Transcriber`], every request, answer and tool result is recorded
//!   ([`super::transcript`]); a replayed turn is answered from the recorded transcript
//!   and sends nothing.
//! - Every request to the API counts against `max_turns`, retries included, and the
//!   budget's [`Meter`] sees the usage of every one as it streams (what a cut or retried
//!   request streamed counts too): it refuses a request that would pass a limit, lowers
//!   the request's `max_tokens` to what the limits leave, and drops a stream that passes
//!   one, failing the step with the limit and the figures.
//!
//! Why one file past ~600 lines: the conversation loop (request, stream, tools, results,
//! budget checks) is one sequence whose order is the invariant.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use super::budget::{Call, Meter};
use super::client::{CallError, Client, Item};
use super::stream::{Accumulator, Message, StreamError};
use super::tools::finish::{self, Finish};
use super::tools::{self, Toolbox};
use super::transcript::Transcriber;
use crate::mask::{Masker, StreamMasker};
use plue_types::protocol::{Stream, Usage, MAX_LINE_BYTES};

/// The `max_tokens` of every request.
pub const MAX_TOKENS: u32 = 8192;
/// How much of a tool result a `tool_result` log line shows.
const LOGGED_RESULT_BYTES: usize = 2048;
/// How long a string inside a logged tool input may be.
const LOGGED_INPUT_STRING_BYTES: usize = 1024;

/// How turns that failed in a passing way are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per turn, the first included.
    pub attempts: u32,
    /// The wait before the second attempt; doubled for each further one.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `retry-after` honoured.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next` (2, 3, ...).
    fn delay(&self, next: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max_retry_after);
        }
        let doublings = next.saturating_sub(2).min(16);
        (self.first_backoff * 2u32.pow(doublings)).min(self.max_backoff)
    }
}

/// How a conversation ended badly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The step's stop token fired.
    Stopped,
    /// The step fails with this reason.
    Failed(String),
}

/// A finished conversation: the final text, and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub result: Result<String, Failure>,
    /// The fields of the `finish` call that ended it (steps with `result=`; the text is
    /// then empty).
    pub finished: Option<serde_json::Map<String, Value>>,
    pub usage: Usage,
    pub turns: u32,
}

/// One conversation's fixed parts.
pub struct Agent<'a> {
    pub client: &'a Client,
    pub toolbox: &'a Toolbox,
    pub model: &'a str,
    pub system: &'a str,
    pub max_turns: u32,
    pub retry: RetryPolicy,
    pub lines: &'a Sender<(Stream, String)>,
    pub stop: &'a CancellationToken,
    /// The step's secrets, masked in token and tool lines.
    pub masker: &'a Masker,
    /// Counts every request and its usage against `max_turns` and the budget
    /// ([`budget`](super::budget)).
    pub meter: &'a Meter,
    /// With `result=`: the conversation ends only by a matching `finish` call.
    pub finish: Option<&'a Finish>,
    /// Records the conversation, and answers replayed turns ([`super::transcript`]).
    pub transcript: Option<&'a Transcriber>,
}

/// Why one attempt at a turn failed.
enum TurnError {
    Call(CallError),
    Stream(StreamError),
    /// The connection broke before `message_stop`; the detail says how.
    Cut(String),
    Stopped,
    /// The stream was dropped at a limit of the budget; the step's reason.
    Budget(String),
}

impl TurnError {
    fn retryable(&self) -> bool {
        match self {
            TurnError::Call(e) => e.retryable(),
            TurnError::Stream(e) => e.retryable(),
            TurnError::Cut(_) => true,
            TurnError::Stopped | TurnError::Budget(_) => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            TurnError::Call(e) => e.to_string(),
            TurnError::Stream(e) => e.to_string(),
            TurnError::Cut(detail) => format!("{} ({detail})", StreamError::Incomplete),
            TurnError::Stopped => "stopped".into(),
            TurnError::Budget(reason) => reason.clone(),
        }
    }
}

impl Agent<'_> {
    /// Runs the conversation that starts with `prompt`.
    pub async fn converse(&self, prompt: &str) -> Conversation {
        let mut messages = vec![json!({"role": "user", "content": prompt})];
        let mut usage = Usage::default();
        let mut turns = 0;
        let mut finished = None;
        let result = loop {
            turns += 1;
            let message = match self.turn(turns, &messages).await {
                Ok(message) => message,
                Err(failure) => break Err(failure),
            };
            usage = usage + message.usage;
            let mut line = serde_json::to_value(message.usage).unwrap_or_default();
            line["turn"] = json!(turns);
            self.log(Stream::Usage, line.to_string()).await;

            let calls_tools = message.stop_reason.as_deref() == Some("tool_use")
                && message.tool_uses().next().is_some();
            if !calls_tools {
                break self.final_text(&message).await;
            }
            // A `finish` call on the last turn still counts (it is not "more tools").
            let finishing = self.finish.is_some()
                && message.tool_uses().any(|(_, name, _)| name == finish::NAME);
            if turns >= self.max_turns && !finishing {
                break Err(Failure::Failed(format!(
                    "max_turns ({}) reached while the model was still calling tools",
                    self.max_turns
                )));
            }
            let mut results = Vec::new();
            for (id, name, input) in message.tool_uses() {
                self.log(
                    Stream::ToolCall,
                    tool_call_line(self.masker, id, name, input),
                )
                .await;
                let checked = match self.finish.filter(|_| name == finish::NAME) {
                    Some(contract) => match contract.call(input) {
                        finish::Call::Done(fields) => {
                            let accepted = tool_result_line(self.masker, id, false, "accepted");
                            self.log(Stream::ToolResult, accepted).await;
                            self.transcript
                                .inspect(|t| t.accepted(turns, (id, name, input)));
                            finished = Some(fields);
                            break;
                        }
                        finish::Call::Correct(error) => Some(tools::ToolOutput {
                            content: error,
                            is_error: true,
                        }),
                        finish::Call::GiveUp(reason) => {
                            return Conversation {
                                result: Err(Failure::Failed(reason)),
                                finished: None,
                                usage,
                                turns,
                            }
                        }
                    },
                    None => None,
                };
                // A tool that hangs (whatever the cause) must not outlive the step's stop.
                let began = std::time::Instant::now();
                let called = match checked {
                    Some(output) => Some(output),
                    None => tokio::select! {
                        output = self.toolbox.call(name, input) => Some(output),
                        () = self.stop.cancelled() => None,
                    },
                };
                let Some(output) = called.filter(|_| !self.stop.is_cancelled()) else {
                    return Conversation {
                        result: Err(Failure::Stopped),
                        finished: None,
                        usage,
                        turns,
                    };
                };
                self.log(
                    Stream::ToolResult,
                    tool_result_line(self.masker, id, output.is_error, &output.content),
                )
                .await;
                if let Some(t) = self.transcript {
                    t.tool(turns, (id, name, input), &output, began.elapsed());
                }
                results.push(json!({
                    "type": "tool_result",
                    "tool_use_id": id,
                    "content": output.content,
                    "is_error": output.is_error,
                }));
            }
            if finished.is_some() {
                break Ok(String::new());
            }
            if turns >= self.max_turns {
                break Err(Failure::Failed(format!(
                    "max_turns ({}) reached before a {} call matched the result schema",
                    self.max_turns,
                    finish::NAME
                )));
            }
            messages.push(json!({"role": "assistant", "content": message.request_content()}));
            messages.push(json!({"role": "user", "content": results}));
        };
        Conversation {
            result,
            finished,
            usage,
            turns,
        }
    }

    /// The answer of a turn that did not call tools.
    async fn final_text(&self, message: &Message) -> Result<String, Failure> {
        match message.stop_reason.as_deref() {
            Some("refusal") => Err(Failure::Failed(
                "the model refused to answer (stop_reason refusal)".into(),
            )),
            // regression: a reply cut at max_tokens counted as the step's answer.
            Some("max_tokens") => Err(Failure::Failed(format!(
                "the model's reply was cut at max_tokens ({MAX_TOKENS}) before it ended{}",
                if self.finish.is_some() {
                    format!(" or called {}", finish::NAME)
                } else {
                    String::new()
                }
            ))),
            _ if self.finish.is_some() => Err(Failure::Failed(format!(
                "the conversation ended without a {} call: this step's result= must be handed \
                 in through the {} tool",
                finish::NAME,
                finish::NAME
            ))),
            _ => Ok(message.text()),
        }
    }

    /// One turn, retried as the policy allows.
    async fn turn(&self, number: u32, messages: &[Value]) -> Result<Message, Failure> {
        let mut body = json!({
            "model": self.model,
            "max_tokens": MAX_TOKENS,
            "system": self.system,
            "messages": messages,
        });
        let mut definitions = self.toolbox.definitions();
        definitions.extend(self.finish.map(Finish::definition));
        if !definitions.is_empty() {
            body["tools"] = Value::Array(definitions);
        }
        // A replayed turn is answered from the transcript: no request, no tokens.
        if let Some(answer) = self.transcript.and_then(|t| t.asked(number, &body)) {
            return answer.map_err(Failure::Failed);
        }
        let attempts = self.retry.attempts.max(1);
        let mut attempt = 1;
        loop {
            let mut streamed = false;
            // Every request counts against max_turns and the budget, retries included.
            let asked = self
                .meter
                .before_call(
                    if attempt > 1 {
                        Call::Retry
                    } else {
                        Call::First
                    },
                    MAX_TOKENS,
                )
                .map_err(|stop| Failure::Failed(stop.to_string()))?;
            body["max_tokens"] = json!(asked);
            let error = match self.attempt(&body, &mut streamed).await {
                Ok(message)
                    if message.stop_reason.as_deref() == Some("max_tokens")
                        && asked < MAX_TOKENS =>
                {
                    return Err(Failure::Failed(self.meter.cut_short(asked)))
                }
                Ok(message) => {
                    self.transcript.inspect(|t| t.answered(&message));
                    return Ok(message);
                }
                Err(TurnError::Stopped) => return Err(Failure::Stopped),
                Err(error) => error,
            };
            if !error.retryable() {
                return Err(Failure::Failed(error.describe()));
            }
            if attempt >= attempts {
                return Err(Failure::Failed(format!(
                    "{} (turn {number}, after {attempt} attempts)",
                    error.describe()
                )));
            }
            attempt += 1;
            let retry_after = match &error {
                TurnError::Call(call) => call.retry_after(),
                _ => None,
            };
            let delay = self.retry.delay(attempt, retry_after);
            let mut notice = format!(
                "{}; retrying turn {number} in {} (attempt {attempt} of {attempts})",
                error.describe(),
                human(delay)
            );
            if streamed {
                notice.push_str(
                    "; the tokens above from the broken attempt are superseded by the retry",
                );
            }
            self.log(Stream::System, notice).await;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stop.cancelled() => return Err(Failure::Stopped),
            }
        }
    }

    /// One attempt at a turn: the request, then every event until `message_stop`. Text
    /// held back for masking is logged when the attempt ends, however it ends.
    async fn attempt(&self, body: &Value, streamed: &mut bool) -> Result<Message, TurnError> {
        let mut tokens = StreamMasker::new(self.masker);
        let mut accumulator = Accumulator::new();
        let result = self
            .attempt_events(body, streamed, &mut tokens, &mut accumulator)
            .await;
        self.log_tokens(&tokens.finish()).await;
        // Whatever became of it, a request is billed for what it streamed.
        self.meter.settle(accumulator.usage());
        result?;
        accumulator.finish().map_err(|e| match e {
            StreamError::Incomplete => TurnError::Cut("the connection closed".into()),
            other => TurnError::Stream(other),
        })
    }

    async fn attempt_events(
        &self,
        body: &Value,
        streamed: &mut bool,
        tokens: &mut StreamMasker<'_>,
        accumulator: &mut Accumulator,
    ) -> Result<(), TurnError> {
        let mut events = tokio::select! {
            opened = self.client.stream(body) => opened.map_err(TurnError::Call)?,
            () = self.stop.cancelled() => return Err(TurnError::Stopped),
        };
        loop {
            let item = tokio::select! {
                item = events.next() => item,
                () = self.stop.cancelled() => return Err(TurnError::Stopped),
            };
            match item {
                None => break,
                Some(Item::Event(event)) => {
                    let applied = accumulator.apply(event);
                    // The moment a limit is passed the stream is dropped (budget.rs).
                    self.meter
                        .check(accumulator.usage())
                        .map_err(|stop| TurnError::Budget(stop.to_string()))?;
                    match applied {
                        Ok(Some(text)) => {
                            *streamed = true;
                            self.log_tokens(&tokens.push(&text)).await;
                        }
                        Ok(None) if accumulator.is_stopped() => break,
                        Ok(None) => {}
                        Err(e) => return Err(TurnError::Stream(e)),
                    }
                }
                Some(Item::Malformed(e)) => return Err(TurnError::Stream(e)),
                Some(Item::Broken(e)) if e.retryable() => {
                    return Err(TurnError::Cut(e.to_string()))
                }
                Some(Item::Broken(e)) => return Err(TurnError::Call(e)),
            }
        }
        Ok(())
    }

    async fn log_tokens(&self, text: &str) {
        for piece in token_pieces(text) {
            self.log(Stream::Token, piece).await;
        }
    }

    async fn log(&self, stream: Stream, text: String) {
        // A closed channel means the attempt is being torn down; nothing to tell.
        let _ = self.lines.send((stream, text)).await;
    }
}

/// A text delta as log lines: NUL replaced, cut at [`MAX_LINE_BYTES`] on character
/// boundaries, nothing else changed. Empty deltas give no line.
pub fn token_pieces(text: &str) -> Vec<String> {
    let text = if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    let mut pieces = Vec::new();
    let mut rest = text.as_ref();
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_LINE_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        pieces.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    pieces
}

/// `{"id":..,"name":..,"input":..}`, secrets masked and long strings in the input
/// shortened (masked first, so a cut cannot split a secret out of reach of the mask).
pub fn tool_call_line(masker: &Masker, id: &str, name: &str, input: &Value) -> String {
    let id = masker.mask(id);
    let name = masker.mask(name);
    let line = json!({"id": id, "name": name, "input": shorten(masker, input)}).to_string();
    if line.len() <= MAX_LINE_BYTES {
        return line;
    }
    json!({"id": id, "name": name, "input_bytes": input.to_string().len()}).to_string()
}

/// `{"id":..,"is_error":..,"bytes":..,"content":..}`, the content masked, then cut for the
/// log.
pub fn tool_result_line(masker: &Masker, id: &str, is_error: bool, content: &str) -> String {
    json!({
        "id": masker.mask(id),
        "is_error": is_error,
        "bytes": content.len(),
        "content": tools::cap(masker.mask(content).into_owned(), LOGGED_RESULT_BYTES),
    })
    .to_string()
}

fn shorten(masker: &Masker, value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(tools::cap(
            masker.mask(text).into_owned(),
            LOGGED_INPUT_STRING_BYTES,
        )),
        Value::Array(items) => Value::Array(items.iter().map(|v| shorten(masker, v)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (masker.mask(k).into_owned(), shorten(masker, v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

fn human(delay: Duration) -> String {
    if delay < Duration::from_secs(1) {
        format!("{}ms", delay.as_millis())
    } else if delay.subsec_millis() == 0 {
        format!("{}s", delay.as_secs())
    } else {
        format!("{:.1}s", delay.as_secs_f64())
    }
}

/// The step's outputs: those a `bash` call wrote to `$PLUE_OUTPUT`, then `result`.
pub fn outputs_with_result(
    mut outputs: BTreeMap<String, String>,
    result: &str,
) -> BTreeMap<String, String> {
    let mut result = result.replace('\0', "\u{FFFD}");
    if result.len() > plue_types::protocol::MAX_OUTPUT_VALUE_BYTES {
        let mut cut = plue_types::protocol::MAX_OUTPUT_VALUE_BYTES;
        while !result.is_char_boundary(cut) {
            cut -= 1;
        }
        result.truncate(cut);
    }
    outputs.insert("result".into(), result);
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_pieces_keep_text_exactly() {
        assert_eq!(token_pieces("a\nb "), ["a\nb "]);
        assert!(token_pieces("").is_empty());
        assert_eq!(token_pieces("x\0y"), ["x\u{FFFD}y"]);
        let long = "é".repeat(MAX_LINE_BYTES);
        let pieces = token_pieces(&long);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.len() <= MAX_LINE_BYTES));
        assert_eq!(pieces.concat(), long);
    }

    #[test]
    fn backoff_doubles_and_honours_retry_after() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(2, None), Duration::from_secs(1));
        assert_eq!(policy.delay(3, None), Duration::from_secs(2));
        assert_eq!(policy.delay(30, None), Duration::from_secs(30));
        assert_eq!(
            policy.delay(2, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            policy.delay(2, Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn log_lines_are_compact_json() {
        let none = Masker::default();
        let input = json!({"path": "a.rs", "content": "x".repeat(5000)});
        let line: Value =
            serde_json::from_str(&tool_call_line(&none, "t1", "write_file", &input)).unwrap();
        assert_eq!(line["name"], "write_file");
        assert_eq!(line["input"]["path"], "a.rs");
        assert!(line["input"]["content"].as_str().unwrap().len() < 1200);
        let line: Value =
            serde_json::from_str(&tool_result_line(&none, "t1", true, &"y".repeat(10_000)))
                .unwrap();
        assert_eq!(line["is_error"], true);
        assert_eq!(line["bytes"], 10_000);
        assert!(line["content"].as_str().unwrap().len() < 2200);
    }

    #[test]
    fn secrets_are_masked_in_tool_lines_before_the_cut_and_the_encoding() {
        // regression: a secret straddling the cut, or holding `"` or `\`, was masked only in
        // the JSON-encoded, already cut line, where it no longer matched.
        let secret = "s3cr\"et\\v4lue";
        let masker = Masker::new([secret]);
        let padded = format!("{}{secret}", "x".repeat(LOGGED_RESULT_BYTES - 5));
        let input = json!({
            "command": format!("{}{secret}", "x".repeat(LOGGED_INPUT_STRING_BYTES - 5)),
            "path": secret,
        });
        let call = tool_call_line(&masker, "t1", "bash", &input);
        let result = tool_result_line(&masker, "t1", false, &padded);
        for line in [&call, &result] {
            for part in ["s3cr", "v4lue"] {
                assert!(!line.contains(part), "{part:?} in {line}");
            }
        }
        let call: Value = serde_json::from_str(&call).unwrap();
        assert_eq!(call["input"]["path"], "***");
        let result: Value = serde_json::from_str(&result).unwrap();
        assert!(result["content"].as_str().unwrap().contains("x***"));
    }

    #[test]
    fn results_are_capped_outputs() {
        let outputs = outputs_with_result(
            BTreeMap::from([
                ("other".into(), "1".into()),
                ("result".into(), "old".into()),
            ]),
            "new",
        );
        assert_eq!(outputs["result"], "new");
        assert_eq!(outputs["other"], "1");
        let big = "é".repeat(plue_types::protocol::MAX_OUTPUT_VALUE_BYTES);
        let outputs = outputs_with_result(BTreeMap::new(), &big);
        assert!(outputs["result"].len() <= plue_types::protocol::MAX_OUTPUT_VALUE_BYTES);
    }
}
