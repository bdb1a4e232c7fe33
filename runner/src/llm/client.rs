//! The HTTP half of talking to Claude: one streamed `POST {base}/v1/messages` per call,
//! its server-sent events decoded into [`stream::Event`]s.
//!
//! Invariants:
//! - Headers are exactly `x-api-key`, `anthropic-version: 2023-06-01` and `content-type:
//!   application/json`; the body always has `"stream": true` (the caller builds the rest).
//! - The API key is only ever put in its header, which is marked sensitive; no error or
//!   log message of this module contains it (errors name the URL, the status and the API's
//!   own message).
//! - Redirects are not followed (a redirect to another host would carry the key there): a
//!   3xx answer is [`CallError::Redirect`], which is not retried.
//! - A non-2xx answer becomes [`CallError::Status`] with the API's error type and message
//!   (`{"type":"error","error":{"type":..,"message":..}}`), its `request-id` and
//!   `retry-after`; a transport failure, before or during the body, becomes
//!   [`CallError::Transport`]. [`CallError::retryable`] says which are worth repeating:
//!   429, 529, 5xx, and transport failures.
//! - Memory is bounded whatever the server sends: at most [`MAX_ERROR_BODY_BYTES`] of an
//!   error body are read, and a streamed answer longer than [`MAX_STREAM_BYTES`] ends with
//!   [`CallError::TooLarge`] (not retried).

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;

use super::stream::{self, Event};

/// The public API; the runner's configured base URL (`--anthropic-base-url`, or its own
/// `ANTHROPIC_BASE_URL` at start-up) replaces it.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version this client speaks.
pub const API_VERSION: &str = "2023-06-01";
/// A stream silent this long is treated as cut (the API pings much more often).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// The most bytes of an error answer read.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// The most bytes of one streamed answer read.
pub const MAX_STREAM_BYTES: usize = 32 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The API answered with an error status.
    #[error("{}", describe_status(*status, error_type.as_deref(), message, request_id.as_deref()))]
    Status {
        status: u16,
        /// `rate_limit_error`, `overloaded_error`, ... when the body said.
        error_type: Option<String>,
        message: String,
        retry_after: Option<Duration>,
        request_id: Option<String>,
    },
    /// The request or the response body failed on the way (refused connection, reset,
    /// timeout, invalid UTF-8 in the stream).
    #[error("{0}")]
    Transport(String),
    /// The client could not be built or the base URL is unusable.
    #[error("{0}")]
    Setup(String),
    /// The server answered with a redirect, which is not followed.
    #[error(
        "the Claude API at {url} answered {status} redirecting to {}; redirects are not \
         followed (the API key must not go elsewhere) — set ANTHROPIC_BASE_URL to the \
         final address",
        location.as_deref().unwrap_or("(no location)")
    )]
    Redirect {
        url: String,
        status: u16,
        location: Option<String>,
    },
    /// The streamed answer passed [`MAX_STREAM_BYTES`] (`max`).
    #[error("the answer of {url} passed {}; it was not read further", size(*max))]
    TooLarge { url: String, max: usize },
}

impl CallError {
    /// Whether the same request may succeed later.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Status { status, .. } => *status == 429 || *status >= 500,
            CallError::Transport(_) => true,
            CallError::Setup(_) | CallError::Redirect { .. } | CallError::TooLarge { .. } => false,
        }
    }

    /// How long the API asked to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn describe_status(
    status: u16,
    error_type: Option<&str>,
    message: &str,
    request_id: Option<&str>,
) -> String {
    let mut text = format!("the Claude API answered {status}");
    if let Some(kind) = error_type {
        text.push_str(&format!(" {kind}"));
    }
    if !message.is_empty() {
        text.push_str(&format!(": {message}"));
    }
    if let Some(id) = request_id {
        text.push_str(&format!(" (request-id {id})"));
    }
    text
}

/// A Messages API client for one step.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    headers: HeaderMap,
    /// [`MAX_STREAM_BYTES`]; lower in tests.
    max_stream_bytes: usize,
}

impl Client {
    /// A client for `base` (e.g. `https://api.anthropic.com`) authenticating with `key`.
    pub fn new(base: &str, key: &str) -> Result<Client, CallError> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(CallError::Setup(format!(
                "ANTHROPIC_BASE_URL '{base}' must start with https:// or http://"
            )));
        }
        let mut key_value = HeaderValue::from_str(key).map_err(|_| {
            CallError::Setup("ANTHROPIC_API_KEY holds characters a header cannot carry".into())
        })?;
        key_value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", key_value);
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CallError::Setup(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            http,
            url: format!("{base}/v1/messages"),
            headers,
            max_stream_bytes: MAX_STREAM_BYTES,
        })
    }

    /// The same client with another cap on a streamed answer (for tests).
    pub fn with_max_stream_bytes(mut self, max: usize) -> Client {
        self.max_stream_bytes = max;
        self
    }

    /// Sends `body` (a Messages request; `"stream": true` is set here) and returns its
    /// events once the API accepted it.
    pub async fn stream(&self, body: &Value) -> Result<Events, CallError> {
        let mut body = body.clone();
        body["stream"] = Value::Bool(true);
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| CallError::Setup(format!("encoding the request: {e}")))?;
        let response = self
            .http
            .post(&self.url)
            .headers(self.headers.clone())
            .body(bytes)
            .send()
            .await
            .map_err(|e| CallError::Transport(format!("POST {}: {}", self.url, chain(&e))))?;
        let status = response.status();
        let request_id = response
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status.is_redirection() {
            let location = response.headers().get(reqwest::header::LOCATION).map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(300)
                    .collect()
            });
            return Err(CallError::Redirect {
                url: self.url.clone(),
                status: status.as_u16(),
                location,
            });
        }
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let text = read_capped(response, MAX_ERROR_BODY_BYTES).await;
            let (error_type, message) = error_of(&text);
            return Err(CallError::Status {
                status: status.as_u16(),
                error_type,
                message,
                retry_after,
                request_id,
            });
        }
        let url = self.url.clone();
        let max = self.max_stream_bytes;
        let mut read = 0usize;
        let bytes = response.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(BodyError::Http)?;
            read = read.saturating_add(chunk.len());
            if read > max {
                return Err(BodyError::TooLarge);
            }
            Ok(chunk)
        });
        let events = bytes
            .eventsource()
            // Nothing after the cap: the stream ends with the error.
            .scan(false, |capped, item| {
                if *capped {
                    return futures::future::ready(None);
                }
                *capped = matches!(item, Err(EventStreamError::Transport(BodyError::TooLarge)));
                futures::future::ready(Some(item))
            })
            .map(move |item| match item {
                Ok(event) => Ok(event.data),
                Err(EventStreamError::Transport(BodyError::TooLarge)) => Err(CallError::TooLarge {
                    url: url.clone(),
                    max,
                }),
                Err(EventStreamError::Transport(BodyError::Http(e))) => Err(CallError::Transport(
                    format!("reading the answer of {url}: {}", chain(&e)),
                )),
                Err(e) => Err(CallError::Transport(format!(
                    "reading the answer of {url}: {e}"
                ))),
            });
        Ok(Events {
            inner: Box::pin(events),
            request_id,
        })
    }
}

/// Why reading a streamed body stopped.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("{0}")]
    Http(reqwest::Error),
    /// More than the client's `max_stream_bytes`.
    #[error("the answer is too large")]
    TooLarge,
}

/// At most `max` bytes of `response`'s body, as text (what arrived when reading fails).
async fn read_capped(response: reqwest::Response, max: usize) -> String {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = max - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The events of one accepted call.
pub struct Events {
    inner: Pin<Box<dyn Stream<Item = Result<String, CallError>> + Send>>,
    /// The `request-id` header of the answer.
    pub request_id: Option<String>,
}

/// One item of a stream: a parsed event, or why reading failed.
#[derive(Debug)]
pub enum Item {
    Event(Event),
    /// The event's data was not an event (passed to the accumulator as malformed).
    Malformed(stream::StreamError),
    Broken(CallError),
}

impl Events {
    /// The next event, or `None` at the end of the body.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            return Some(match self.inner.next().await? {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => match stream::parse_event(&data) {
                    Ok(event) => Item::Event(event),
                    Err(e) => Item::Malformed(e),
                },
                Err(e) => Item::Broken(e),
            });
        }
    }
}

/// `bytes` for people: MiB when whole.
fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// The API's error type and message from an error body, or the body itself.
fn error_of(body: &str) -> (Option<String>, String) {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    match error {
        Some(error) if error.is_object() => (
            error["type"].as_str().map(str::to_owned),
            error["message"].as_str().unwrap_or_default().to_owned(),
        ),
        _ => {
            let mut text: String = body.trim().chars().take(500).collect();
            if text.is_empty() {
                text = "(no body)".into();
            }
            (None, text)
        }
    }
}

/// `retry-after` in seconds (the API's form); HTTP dates are not used by it.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// An error and its sources, on one line (reqwest's own message is terse).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_type_and_message() {
        let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#;
        assert_eq!(
            error_of(body),
            (Some("overloaded_error".into()), "Overloaded".into())
        );
        assert_eq!(
            error_of("<html>bad gateway</html>").1,
            "<html>bad gateway</html>"
        );
        assert_eq!(error_of("").1, "(no body)");
    }

    #[test]
    fn statuses_that_may_pass_are_retryable() {
        let status = |status| CallError::Status {
            status,
            error_type: None,
            message: String::new(),
            retry_after: None,
            request_id: None,
        };
        for retryable in [429, 500, 502, 529] {
            assert!(status(retryable).retryable(), "{retryable}");
        }
        for fatal in [400, 401, 403, 404, 413] {
            assert!(!status(fatal).retryable(), "{fatal}");
        }
        assert!(CallError::Transport("reset".into()).retryable());
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 2.5 "),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[tokio::test]
    async fn a_streamed_answer_past_the_cap_ends_with_an_error_not_retried() {
        use testkit::claude::{FakeClaude, Turn};
        let pieces: Vec<String> = (0..200).map(|i| format!("{i:0>100}")).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let server = FakeClaude::start(vec![Turn::text(&pieces).reply()]);
        let client = Client::new(server.url(), "sk-test")
            .unwrap()
            .with_max_stream_bytes(4096);
        let mut events = client.stream(&serde_json::json!({})).await.unwrap();
        let mut seen = 0;
        let error = loop {
            match events.next().await {
                Some(Item::Event(_)) => seen += 1,
                Some(Item::Broken(e)) => break e,
                other => panic!("expected the cap, got {other:?} after {seen} events"),
            }
        };
        assert!(seen > 0 && seen < 200, "{seen}");
        assert!(matches!(error, CallError::TooLarge { .. }), "{error:?}");
        assert!(!error.retryable());
        assert!(error.to_string().contains("passed 4096 bytes"), "{error}");
        assert_eq!(size(MAX_STREAM_BYTES), "32 MiB");
        assert!(
            events.next().await.is_none(),
            "the stream goes on after the cap"
        );
    }

    #[tokio::test]
    async fn an_error_body_is_read_only_up_to_its_cap() {
        use testkit::claude::{FakeClaude, Reply};
        let huge = "x".repeat(4 * MAX_ERROR_BODY_BYTES);
        let server = FakeClaude::start(vec![Reply::error(400, "invalid_request_error", &huge)]);
        let client = Client::new(server.url(), "sk-test").unwrap();
        let Err(error) = client.stream(&serde_json::json!({})).await else {
            panic!("a 400 was accepted");
        };
        // Cut, the body is no JSON any more: its first 500 characters are the message.
        let CallError::Status {
            status, message, ..
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!(*status, 400);
        assert!(message.len() <= 500, "{}", message.len());
    }

    #[test]
    fn status_errors_read_well_and_a_bad_base_is_refused() {
        let err = CallError::Status {
            status: 401,
            error_type: Some("authentication_error".into()),
            message: "invalid x-api-key".into(),
            retry_after: None,
            request_id: Some("req_9".into()),
        };
        assert_eq!(
            err.to_string(),
            "the Claude API answered 401 authentication_error: invalid x-api-key (request-id req_9)"
        );
        let Err(err) = Client::new("ftp://example.com", "sk-secret") else {
            panic!("an ftp base was accepted");
        };
        assert!(!err.to_string().contains("sk-secret"));
    }
}
