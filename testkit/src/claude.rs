//! A scripted stand-in for the Claude Messages API (`POST /v1/messages` with
//! `"stream": true`), for tests and benchmarks of `llm` steps; the real API is not
//! reachable from test machines.
//!
//! A [`FakeClaude`] answers each request with the next [`Reply`] of its script, speaking
//! the wire format the API documents: server-sent events named after their `type`
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`, `error`), `content-type:
//! text/event-stream`, a `request-id` header on every response, and errors as
//! `{"type":"error","error":{"type":..,"message":..},"request_id":..}` with `retry-after` where
//! given. [`Reply::redirect`] answers a redirect (which a client must not follow with its
//! key). [`Turn`] builds the event sequence of one model turn.
//!
//! Invariants:
//! - Every request is recorded ([`FakeClaude::requests`]) before it is answered, so tests
//!   assert on headers and bodies (the `tool_result` blocks sent back) afterwards.
//! - The server checks what the real one would refuse: a request without `x-api-key` gets
//!   401, without `anthropic-version` 400, another path 404 — each recorded too.
//! - It runs on its own thread and runtime, so synchronous tests (which block on a `plue`
//!   child process) and asynchronous ones use it alike; dropping it stops it.
//! - When the script is exhausted, requests get a 500 `api_error` saying so.
//! - A routed script ([`FakeClaude::start_routed`]) answers each request with the first
//!   remaining reply whose `when` text occurs in the conversation's first user message
//!   (the step's prompt), so steps that run in parallel each get their own turns; a reply
//!   without `when` answers any request. [`script`] reads such a script from JSON.
//!
//! Why one file past ~600 lines: one scripted server of the streaming Messages protocol:
//! the script builders and the wire encoding change together.

pub mod script;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use crate::server_thread::ServerThread;

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lowercased; the last value of repeated ones.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Value::Null` when it was not JSON).
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The `tool_result` blocks of the last user message of the request.
    pub fn tool_results(&self) -> Vec<Value> {
        let messages = self.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(last) = messages.last() else {
            return Vec::new();
        };
        last["content"]
            .as_array()
            .map(|blocks| {
                blocks
                    .iter()
                    .filter(|b| b["type"] == "tool_result")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One piece of a streamed answer.
#[derive(Debug, Clone)]
pub enum Part {
    /// An event: `event: NAME\ndata: JSON\n\n`, the name being `data["type"]`.
    Event(Value),
    /// Pause before the next part.
    Sleep(Duration),
    /// Drop the connection here, as a network failure would (the body ends with an error,
    /// so the client sees a broken stream, not a clean end).
    Cut,
    /// Write the next event's frame in two network chunks split at this byte offset (which
    /// may fall inside a multi-byte character), 20 ms apart.
    SplitNext(usize),
}

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `200` with an event stream.
    Stream(Vec<Part>),
    /// An error response: the status, extra headers, and the API's error body.
    Error {
        status: u16,
        headers: Vec<(String, String)>,
        error_type: String,
        message: String,
    },
    /// A redirect (`307`, `308`, ...) to `location`, with no body.
    Redirect { status: u16, location: String },
}

impl Reply {
    /// An HTTP error with the API's body, e.g. `(529, "overloaded_error", "Overloaded")`.
    pub fn error(status: u16, error_type: &str, message: &str) -> Reply {
        Reply::Error {
            status,
            headers: Vec::new(),
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// A redirect to `location` (e.g. another server's `/v1/messages`).
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::Redirect {
            status,
            location: location.into(),
        }
    }

    /// `429 rate_limit_error` with `retry-after: SECS`.
    pub fn rate_limited(retry_after_secs: u64) -> Reply {
        Reply::Error {
            status: 429,
            headers: vec![("retry-after".into(), retry_after_secs.to_string())],
            error_type: "rate_limit_error".into(),
            message: "Number of request tokens has exceeded your per-minute rate limit".into(),
        }
    }
}

/// Builds the event stream of one assistant turn, in the API's order: `message_start`,
/// then each content block (`content_block_start`, deltas, `content_block_stop`), then
/// `message_delta` with the stop reason and usage, then `message_stop`.
#[derive(Debug, Clone)]
pub struct Turn {
    id: String,
    model: String,
    parts: Vec<Part>,
    blocks: usize,
    input_tokens: u64,
    output_tokens: u64,
    stop_reason: Option<String>,
    has_tool_use: bool,
}

impl Turn {
    pub fn new() -> Turn {
        Turn {
            id: "msg_01FakeClaudeTurn".into(),
            model: "claude-sonnet-4-5".into(),
            parts: Vec::new(),
            blocks: 0,
            input_tokens: 25,
            output_tokens: 1,
            stop_reason: None,
            has_tool_use: false,
        }
    }

    /// A turn that answers with `pieces` as one text block and ends the conversation.
    pub fn text(pieces: &[&str]) -> Turn {
        Turn::new().text_block(pieces)
    }

    /// Token counts reported by `message_start` (input) and `message_delta` (output).
    pub fn usage(mut self, input_tokens: u64, output_tokens: u64) -> Turn {
        self.input_tokens = input_tokens;
        self.output_tokens = output_tokens;
        self
    }

    /// A text block streamed as one `text_delta` per piece, with a `ping` after the start.
    pub fn text_block(mut self, pieces: &[&str]) -> Turn {
        let index = self.next_block();
        self.parts.push(Part::Event(json!({
            "type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}
        })));
        self.parts.push(Part::Event(json!({"type": "ping"})));
        for piece in pieces {
            self.parts.push(Part::Event(json!({
                "type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": piece}
            })));
        }
        self.parts.push(Part::Event(
            json!({"type": "content_block_stop", "index": index}),
        ));
        self
    }

    /// A text block whose deltas are `pieces` with `gap` before each (for latency
    /// measurements).
    pub fn paced_text_block(mut self, pieces: &[String], gap: Duration) -> Turn {
        let index = self.next_block();
        self.parts.push(Part::Event(json!({
            "type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}
        })));
        for piece in pieces {
            self.parts.push(Part::Sleep(gap));
            self.parts.push(Part::Event(json!({
                "type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": piece}
            })));
        }
        self.parts.push(Part::Event(
            json!({"type": "content_block_stop", "index": index}),
        ));
        self
    }

    /// A thinking block (`thinking_delta` and `signature_delta`), which clients ignore.
    pub fn thinking_block(mut self, thought: &str) -> Turn {
        let index = self.next_block();
        self.parts.push(Part::Event(json!({
            "type": "content_block_start", "index": index,
            "content_block": {"type": "thinking", "thinking": ""}
        })));
        self.parts.push(Part::Event(json!({
            "type": "content_block_delta", "index": index,
            "delta": {"type": "thinking_delta", "thinking": thought}
        })));
        self.parts.push(Part::Event(json!({
            "type": "content_block_delta", "index": index,
            "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}
        })));
        self.parts.push(Part::Event(
            json!({"type": "content_block_stop", "index": index}),
        ));
        self
    }

    /// A `tool_use` block whose input JSON is streamed in pieces (`input_json_delta`,
    /// starting with an empty `partial_json` as the API does). The turn then stops with
    /// `tool_use` unless told otherwise.
    pub fn tool_use(mut self, id: &str, name: &str, input: &Value) -> Turn {
        let json_text = input.to_string();
        let index = self.next_block();
        self.has_tool_use = true;
        self.parts.push(Part::Event(json!({
            "type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}
        })));
        let mut pieces = vec![String::new()];
        let chars: Vec<char> = json_text.chars().collect();
        pieces.extend(chars.chunks(7).map(|c| c.iter().collect::<String>()));
        for piece in pieces {
            self.parts.push(Part::Event(json!({
                "type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}
            })));
        }
        self.parts.push(Part::Event(
            json!({"type": "content_block_stop", "index": index}),
        ));
        self
    }

    /// Overrides the stop reason (`end_turn`, or `tool_use` when the turn has a tool call).
    pub fn stop_reason(mut self, reason: &str) -> Turn {
        self.stop_reason = Some(reason.into());
        self
    }

    /// The complete turn as a reply.
    pub fn reply(self) -> Reply {
        Reply::Stream(self.parts())
    }

    /// The turn cut after its first `keep` parts (events and pauses), as a dropped
    /// connection.
    pub fn cut_after(self, keep: usize) -> Reply {
        let mut parts = self.parts();
        parts.truncate(keep);
        parts.push(Part::Cut);
        Reply::Stream(parts)
    }

    /// The turn's first `keep` parts, then an `error` event (e.g. `overloaded_error`), as
    /// the API sends when it fails after answering 200.
    pub fn error_after(self, keep: usize, error_type: &str, message: &str) -> Reply {
        let mut parts = self.parts();
        parts.truncate(keep);
        parts.push(Part::Event(json!({
            "type": "error",
            "error": {"type": error_type, "message": message}
        })));
        Reply::Stream(parts)
    }

    /// Every part of the turn, framed by the message events.
    pub fn parts(self) -> Vec<Part> {
        let stop = self.stop_reason.clone().unwrap_or_else(|| {
            if self.has_tool_use {
                "tool_use".into()
            } else {
                "end_turn".into()
            }
        });
        let mut parts = vec![Part::Event(json!({
            "type": "message_start",
            "message": {
                "id": self.id, "type": "message", "role": "assistant", "content": [],
                "model": self.model, "stop_reason": null, "stop_sequence": null,
                "usage": {
                    "input_tokens": self.input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1,
                    "service_tier": "standard"
                }
            }
        }))];
        parts.extend(self.parts);
        parts.push(Part::Event(json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": self.output_tokens}
        })));
        parts.push(Part::Event(json!({"type": "message_stop"})));
        parts
    }

    fn next_block(&mut self) -> usize {
        self.blocks += 1;
        self.blocks - 1
    }
}

impl Default for Turn {
    fn default() -> Self {
        Turn::new()
    }
}

/// When the server handed an event's bytes to the connection.
#[derive(Debug, Clone)]
pub struct Sent {
    pub event: Value,
    pub at: SystemTime,
}

/// One reply of a routed script and the requests it may answer.
#[derive(Debug, Clone)]
pub struct Routed {
    /// Text the conversation's first user message must contain (`None`: any request).
    pub when: Option<String>,
    pub reply: Reply,
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Routed>,
    requests: Vec<Recorded>,
    sent: Vec<Sent>,
    next_request_id: u64,
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(shared: &SharedState) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fake API server; see the module doc. Stops when dropped.
pub struct FakeClaude {
    url: String,
    shared: SharedState,
    _server: ServerThread,
}

impl FakeClaude {
    /// Serves `script` on `127.0.0.1:<free port>`, in order.
    pub fn start(script: Vec<Reply>) -> FakeClaude {
        FakeClaude::start_routed(
            script
                .into_iter()
                .map(|reply| Routed { when: None, reply })
                .collect(),
        )
    }

    /// Serves a routed `script` (see the module doc) on `127.0.0.1:<free port>`.
    pub fn start_routed(script: Vec<Routed>) -> FakeClaude {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        FakeClaude::serve(listener, script)
    }

    /// Serves a routed `script` on `listener` (bound by the caller, e.g. to a fixed port).
    pub fn serve(listener: std::net::TcpListener, script: Vec<Routed>) -> FakeClaude {
        let shared: SharedState = Arc::new(Mutex::new(Shared {
            script: script.into(),
            ..Shared::default()
        }));
        listener.set_nonblocking(true).expect("non-blocking");
        let addr: SocketAddr = listener.local_addr().expect("local address");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let server = ServerThread::spawn("fake-claude", "fake Claude server", listener, app)
            .expect("starting the fake Claude thread");
        FakeClaude {
            url: format!("http://{addr}"),
            shared,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT` — what `ANTHROPIC_BASE_URL` should be.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared).requests.clone()
    }

    /// Every event written so far, with when it was handed to the connection.
    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.shared).sent.clone()
    }

    /// Replies not used yet.
    pub fn remaining(&self) -> usize {
        lock(&self.shared).script.len()
    }

    /// Appends replies to the script.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.shared).script.extend(
            replies
                .into_iter()
                .map(|reply| Routed { when: None, reply }),
        );
    }
}

async fn handle(
    State(shared): State<SharedState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let (reply, request_id) = {
        let mut shared = lock(&shared);
        shared.next_request_id += 1;
        let request_id = format!("req_fake{:08}", shared.next_request_id);
        let refusal = refusal(&recorded);
        shared.requests.push(recorded);
        let reply = match refusal {
            Some(reply) => reply,
            None => {
                let prompt = first_prompt(&shared.requests[shared.requests.len() - 1].body);
                let found = shared
                    .script
                    .iter()
                    .position(|r| r.when.as_deref().is_none_or(|when| prompt.contains(when)));
                match found.and_then(|i| shared.script.remove(i)) {
                    Some(routed) => routed.reply,
                    None if shared.script.is_empty() => {
                        Reply::error(500, "api_error", "the fake Claude script is exhausted")
                    }
                    None => Reply::error(
                        500,
                        "api_error",
                        "no reply of the fake Claude script matches this conversation's first message",
                    ),
                }
            }
        };
        (reply, request_id)
    };
    match reply {
        Reply::Redirect { status, location } => Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT))
            .header("location", location)
            .header("request-id", &request_id)
            .body(Body::empty())
            .expect("a response"),
        Reply::Error {
            status,
            headers,
            error_type,
            message,
        } => {
            let body = json!({
                "type": "error",
                "error": {"type": error_type, "message": message},
                "request_id": request_id,
            });
            let mut response = Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header("content-type", "application/json")
                .header("request-id", &request_id);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response
                .body(Body::from(body.to_string()))
                .expect("a response")
        }
        Reply::Stream(parts) => {
            let state = Writer {
                parts: parts.into_iter(),
                shared,
                split_next: None,
                pending: None,
            };
            let stream = futures::stream::unfold(state, |mut state| async move {
                if let Some(rest) = state.pending.take() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return Some((Ok(rest), state));
                }
                loop {
                    match state.parts.next()? {
                        Part::Sleep(gap) => tokio::time::sleep(gap).await,
                        Part::SplitNext(at) => state.split_next = Some(at),
                        Part::Cut => {
                            // Let what was written reach the client first, as it would
                            // before a real connection drops.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let cut = std::io::Error::new(
                                std::io::ErrorKind::ConnectionReset,
                                "the fake Claude server cut the stream",
                            );
                            return Some((Err(cut), state));
                        }
                        Part::Event(event) => {
                            let name = event["type"].as_str().unwrap_or("unknown").to_owned();
                            let frame = Bytes::from(format!("event: {name}\ndata: {event}\n\n"));
                            lock(&state.shared).sent.push(Sent {
                                event,
                                at: SystemTime::now(),
                            });
                            let chunk = match state.split_next.take() {
                                Some(at) if at > 0 && at < frame.len() => {
                                    state.pending = Some(frame.slice(at..));
                                    frame.slice(..at)
                                }
                                _ => frame,
                            };
                            return Some((Ok(chunk), state));
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/event-stream; charset=utf-8")
                .header("cache-control", "no-cache")
                .header("request-id", &request_id)
                .body(Body::from_stream(stream))
                .expect("a response")
        }
    }
}

/// The state of one streamed answer.
struct Writer {
    parts: std::vec::IntoIter<Part>,
    shared: SharedState,
    split_next: Option<usize>,
    /// The second half of a split frame, written next.
    pending: Option<Bytes>,
}

/// The text of a request's first user message (its string content, or its text blocks
/// joined), which routed replies match against.
fn first_prompt(body: &Value) -> String {
    let content = &body["messages"][0]["content"];
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// What the real API would answer instead of the script, if anything.
fn refusal(request: &Recorded) -> Option<Reply> {
    if request.method != "POST" || request.path != "/v1/messages" {
        return Some(Reply::error(
            404,
            "not_found_error",
            &format!("{} {}: not found", request.method, request.path),
        ));
    }
    if request.header("x-api-key").is_none_or(str::is_empty) {
        return Some(Reply::error(
            401,
            "authentication_error",
            "x-api-key header is required",
        ));
    }
    if request.header("anthropic-version").is_none() {
        return Some(Reply::error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    if request.body.is_null() {
        return Some(Reply::error(
            400,
            "invalid_request_error",
            "the body is not JSON",
        ));
    }
    None
}
