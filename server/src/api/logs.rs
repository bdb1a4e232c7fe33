//! `GET /api/runs/{id}/steps/{step}/logs`: stored lines as JSON lines, or with
//! `Accept: text/event-stream` a live stream that resumes after `Last-Event-ID`.
//!
//! Invariants: the store is read in pages (memory stays flat for millions of lines);
//! the SSE event id is `"{attempt}:{seq}"`, strictly increasing, so a client that resumes
//! with it gets every later line exactly once; the stream ends with an `end` event once the
//! step is final and every stored line was sent.
//!
//! Followers are bounded (see [`super::followers`]): each is counted while its stream
//! lives — by its user when it is signed in, else by its address — past a cap the answer
//! is 429, an idle one is woken by notifications and otherwise re-reads the store ever more
//! rarely, and a client that leaves takes its follower with it (the stream is the
//! follower; a heartbeat comment makes a silent hang-up show; a client that stops reading
//! loses its place at the idle-send timeout). An anonymous stream ends after its lifetime
//! without an `end` event: SSE clients reconnect with `Last-Event-ID`
//! and resume exactly where they were.
//!
//! A stream reads only while its caller may: at least every [`ACCESS_RECHECK`] it asks
//! again whether the caller's token still holds and it still reads the run's repository
//! (a revoked token or role, a disabled user, a repository made private), and ends —
//! without an `end` event, so a client that reconnects meets the refusal — when not.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::Stream;
use plue_store::events::Event;
use plue_store::{Store, StoredLine};
use serde::Deserialize;
use tokio::sync::broadcast;
use utoipa::IntoParams;

use super::approvals::StepPath;
use super::followers::{leash, FollowerLimits, Who};
use super::views::{ErrorView, LineView};
use super::{visible_run_in_path, ApiState};
use crate::access::{Caller, Role};
use crate::http_error::{ApiError, ApiResult};

const PAGE: i64 = 5000;

/// How often a live stream asks again whether its caller may still read the run.
pub(super) const ACCESS_RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct LogQuery {
    /// Resume after this `attempt:seq` (like `Last-Event-ID`, which wins when both are
    /// given); an `attempt` alone starts at that attempt's first line.
    #[param(pattern = r"^[0-9]{1,18}(:[0-9]{1,18})?$", example = "1:42")]
    after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/steps/{step}/logs",
    tag = "logs",
    summary = "A step's log lines: stored ones, or a live stream",
    description = "Without `Accept: text/event-stream`: every stored line after the cursor \
                   as JSON lines (`application/x-ndjson`, one `Line` per line). With it: \
                   Server-Sent Events — a `line` event per line (its id `attempt:seq`, its \
                   data a `Line`), new lines as they are stored, then an `end` event (data \
                   `{}`) once the step is final and every line was sent; comments keep the \
                   connection alive. Resume with `Last-Event-ID` or `after`. Live streams \
                   are counted per user (a request with a token: all of a user's tokens \
                   count as one) or per client address, with a share of \
                   places kept for requests with a token; a stream without a token ends \
                   after 10 minutes without an `end` event, and the client reconnects with \
                   `Last-Event-ID`; a stream whose client reads nothing for 60 seconds \
                   ends.",
    params(
        StepPath,
        LogQuery,
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = r"^[0-9]{1,18}(:[0-9]{1,18})?$",
         example = "1:42", description = "Resume after this `attempt:seq`, the id of the last event received; an `attempt` alone starts at that attempt's first line"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The lines",
         content(
             (LineView = "application/x-ndjson"),
             (String = "text/event-stream"),
         )),
        (status = 400, description = "Not a run id, an unknown query parameter or a malformed cursor", body = ErrorView),
        (status = 401, response = super::openapi::RunNotPublic),
        (status = 404, description = "No such run or step, or a run the caller may not read", body = ErrorView),
        (status = 429, description = "Too many live followers (of this step, of this client, or in all), or every place open to requests without a token is taken", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn step_logs(
    State(state): State<ApiState>,
    caller: Caller,
    Path((run, step)): Path<(String, String)>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let store = state.executor.store();
    let (run_id, run) = visible_run_in_path(store, &caller, &run, Role::Reader).await?;
    let step_run = store
        .step_run(run_id, &step)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run_id} has no step '{step}'")))?;
    // regression: a malformed `after` beside a `Last-Event-ID` was ignored, not refused;
    // schemathesis found it. Both are checked; the header wins.
    let after = query.after.as_deref().map(parse_cursor).transpose()?;
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let cursor = match last_event_id {
        Some(text) => parse_cursor(text)?,
        None => after.unwrap_or((0, 0)),
    };
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    if wants_sse {
        let peer = client.map(|Extension(ConnectInfo(addr))| addr);
        let address = state.followers.client_address(peer, &headers);
        let who = Who::of_caller(&caller, address);
        let guard = state.followers.enter(step_run.id, who).map_err(|refused| {
            ApiError::Client(StatusCode::TOO_MANY_REQUESTS, refused.to_string())
        })?;
        let heartbeat = state.followers.limits().heartbeat;
        // regression: the lifetime was checked inside the stream, which hyper stops polling
        // when the client stops reading, so a silent anonymous client kept its place.
        let reader = Reader {
            caller,
            repo_id: run.repo_id,
        };
        let stream = leash(follow(&state, reader, run_id, step_run.id, cursor), guard);
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(heartbeat))
            .into_response());
    }
    let body = stored_lines(
        store.clone(),
        step_run.id,
        cursor,
        "reading logs",
        |line, chunk| {
            chunk.push_str(&serde_json::to_string(&LineView::new(line)).unwrap_or_default())
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

/// The stored lines of step run `step_run_id` from `cursor` on, read a page at a time, each
/// as `write` adds it to the chunk and ended by a newline: a response body's chunks (the
/// API's NDJSON, the dashboard's raw text). A failed read is logged (`log_as: {error}`) and
/// ends the body with an error.
pub(crate) fn stored_lines(
    store: Store,
    step_run_id: i64,
    cursor: (i64, i64),
    log_as: &'static str,
    write: fn(&StoredLine, &mut String),
) -> impl Stream<Item = Result<String, std::io::Error>> {
    futures::stream::unfold(Some(cursor), move |cursor| {
        let store = store.clone();
        async move {
            let cursor = cursor?;
            match store.read_logs(step_run_id, cursor, PAGE).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let next = lines.last().map(|l| (l.attempt, l.seq));
                    let mut chunk = String::new();
                    for line in &lines {
                        write(line, &mut chunk);
                        chunk.push('\n');
                    }
                    Some((Ok(chunk), next))
                }
                Err(e) => {
                    tracing::error!("{log_as}: {e:#}");
                    Some((Err(std::io::Error::other("reading logs failed")), None))
                }
            }
        }
    })
}

/// `ATTEMPT:SEQ`, two runs of ASCII digits (the engine sends event ids in that form, and
/// clients echo them back unchanged), or `ATTEMPT` alone, which is `ATTEMPT:0` — from that
/// attempt's first line (seqs start at 1): exactly the documented pattern. Alone, because a
/// header value of digits only is one every client and fuzzer can send (schemathesis's
/// header values are letters and digits: it sent `Last-Event-ID: 0`).
fn parse_cursor(text: &str) -> ApiResult<(i64, i64)> {
    // The document's pattern, `^[0-9]{1,18}(:[0-9]{1,18})?$`: 18 digits always fit an i64.
    let number = |part: &str| {
        if !(1..=18).contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse::<i64>().ok()
    };
    let parsed = match text.split_once(':') {
        Some((attempt, seq)) => number(attempt).zip(number(seq)),
        None => number(text).map(|attempt| (attempt, 0)),
    };
    parsed.ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid log cursor '{}': expected ATTEMPT:SEQ or ATTEMPT",
            text.escape_debug()
        ))
    })
}

fn sse_event(line: &StoredLine) -> SseEvent {
    SseEvent::default()
        .id(format!("{}:{}", line.attempt, line.seq))
        .event("line")
        .data(serde_json::to_string(&LineView::new(line)).unwrap_or_default())
}

/// Who follows a stream, asked again as it goes whether it still may read it.
struct Reader {
    caller: Caller,
    /// The run's repository (`None`: a local run).
    repo_id: Option<i64>,
}

impl Reader {
    /// Whether the caller's credentials still hold and it still reads the run (a failure
    /// to tell counts as no).
    async fn still_reads(&self, store: &plue_store::Store) -> bool {
        match self.caller.still_valid(store).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::error!("checking a log follower's token: {e:#}");
                return false;
            }
        }
        self.caller
            .require_repo(store, self.repo_id, Role::Reader)
            .await
            .is_ok()
    }
}

/// One SSE follower: its place in the step's logs and everything it waits on. It lives in
/// the response stream itself (no task of its own), so when hyper drops the stream of a
/// client that left, the follower and its subscription go with it; its place is held by
/// the [`leash`] around it.
struct Follower {
    store: plue_store::Store,
    events: tokio::sync::broadcast::Receiver<Event>,
    shutdown: tokio_util::sync::CancellationToken,
    reader: Reader,
    /// When the reader's access was last checked.
    checked: tokio::time::Instant,
    run_id: i64,
    step_run_id: i64,
    cursor: (i64, i64),
    /// Read but not yet sent.
    ready: VecDeque<SseEvent>,
    /// The wait before re-reading an idle step by itself; doubles while nothing comes.
    idle: Duration,
    limits: FollowerLimits,
    done: bool,
}

/// Sends stored lines after `cursor`, then new ones as they are stored, until the step is
/// final and drained, the engine shuts down or the client is gone.
fn follow(
    state: &ApiState,
    reader: Reader,
    run_id: i64,
    step_run_id: i64,
    cursor: (i64, i64),
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let follower = Follower {
        store: state.executor.store().clone(),
        events: state.executor.events().subscribe(),
        shutdown: state.shutdown.clone(),
        reader,
        checked: tokio::time::Instant::now(),
        run_id,
        step_run_id,
        cursor,
        ready: VecDeque::new(),
        idle: Duration::ZERO,
        limits: *state.followers.limits(),
        done: false,
    };
    futures::stream::unfold(follower, |mut follower| async move {
        loop {
            if let Some(event) = follower.ready.pop_front() {
                return Some((Ok(event), follower));
            }
            if follower.done {
                return None;
            }
            follower.advance().await;
        }
    })
}

impl Follower {
    /// Reads what is new, or ends the stream, or waits until something may have changed.
    async fn advance(&mut self) {
        // regression: a stream checked its caller once, when it opened, and went on sending
        // after the token or the role was revoked or the repository made private.
        if self.checked.elapsed() >= ACCESS_RECHECK {
            if !self.reader.still_reads(&self.store).await {
                self.done = true;
                return;
            }
            self.checked = tokio::time::Instant::now();
        }
        let lines = match self
            .store
            .read_logs(self.step_run_id, self.cursor, PAGE)
            .await
        {
            Ok(lines) => lines,
            Err(e) => {
                tracing::error!("reading logs: {e:#}");
                self.done = true;
                return;
            }
        };
        if let Some(last) = lines.last() {
            self.cursor = (last.attempt, last.seq);
            self.ready.extend(lines.iter().map(sse_event));
            self.idle = Duration::ZERO;
            return;
        }
        // Nothing new: done if the step is final (its runner sends every line before
        // reporting the end), else wait for more.
        let final_now = match self.store.step_run_by_id(self.step_run_id).await {
            Ok(Some(step)) => step.status.is_final(),
            _ => true,
        };
        if final_now {
            // One more read closes the gap between the last read and the status check.
            match self
                .store
                .read_logs(self.step_run_id, self.cursor, PAGE)
                .await
            {
                Ok(lines) if !lines.is_empty() => return,
                _ => {}
            }
            // regression: an `end` event with empty data is never dispatched by SSE
            // clients (the spec drops events whose data buffer is empty).
            self.ready
                .push_back(SseEvent::default().event("end").data("{}"));
            self.done = true;
            return;
        }
        // regression: every idle follower re-read the store twice every 500 ms until its
        // step ended, so thousands of followers of a queued step kept the engine busy. Now
        // a notification wakes it; without one it re-reads after a wait that doubles.
        self.idle = self.limits.next_backoff(self.idle);
        let (run_id, step_run_id) = (self.run_id, self.step_run_id);
        let events = &mut self.events;
        let notified = async {
            loop {
                match events.recv().await {
                    Ok(Event::Logs { step_run_id: s, .. }) if s == step_run_id => return,
                    Ok(Event::Step { run_id: r } | Event::RunFinished { run_id: r })
                        if r == run_id =>
                    {
                        return
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => self.done = true,
            _ = tokio::time::timeout(self.idle, notified) => {}
        }
    }
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
