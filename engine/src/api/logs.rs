//! `GET /api/runs/{id}/steps/{step}/logs`: stored lines as JSON lines, or with
//! `Accept: text/event-stream` a live stream that resumes after `Last-Event-ID`.
//!
//! Invariants: the store is read in pages (memory stays flat for millions of lines);
//! the SSE event id is `"{attempt}:{seq}"`, strictly increasing, so a client that resumes
//! with it gets every later line exactly once; the stream ends with an `end` event once the
//! step is final and every stored line was sent.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;

use super::views::LineView;
use super::{parse_run_id, ApiState};
use crate::events::Event;
use crate::executor::rules::parse_status;
use crate::http_error::{ApiError, ApiResult};
use crate::store::StoredLine;

const PAGE: i64 = 5000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    /// Resume after this `attempt:seq` (like `Last-Event-ID`).
    after: Option<String>,
}

pub(super) async fn step_logs(
    State(state): State<ApiState>,
    Path((run, step)): Path<(String, String)>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let run_id = parse_run_id(&run)?;
    let store = state.executor.store();
    let step_run = store
        .step_run(run_id, &step)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run_id} has no step '{step}'")))?;
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let cursor = match last_event_id.or(query.after.as_deref()) {
        Some(text) => parse_cursor(text)?,
        None => (0, 0),
    };
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    if wants_sse {
        let stream = follow(state, run_id, step_run.id, cursor);
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let store = store.clone();
    let step_run_id = step_run.id;
    let body = futures::stream::unfold(Some(cursor), move |cursor| {
        let store = store.clone();
        async move {
            let cursor = cursor?;
            match store.read_logs(step_run_id, cursor, PAGE).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let next = lines.last().map(|l| (l.attempt, l.seq));
                    let mut chunk = String::new();
                    for line in &lines {
                        chunk.push_str(
                            &serde_json::to_string(&LineView::new(line)).unwrap_or_default(),
                        );
                        chunk.push('\n');
                    }
                    Some((Ok::<_, std::io::Error>(chunk), next))
                }
                Err(e) => {
                    tracing::error!("reading logs: {e:#}");
                    Some((Err(std::io::Error::other("reading logs failed")), None))
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

fn parse_cursor(text: &str) -> ApiResult<(i64, i64)> {
    let parsed = text
        .split_once(':')
        .and_then(|(a, s)| Some((a.trim().parse::<i64>().ok()?, s.trim().parse::<i64>().ok()?)))
        .filter(|(a, s)| *a >= 0 && *s >= 0);
    parsed.ok_or_else(|| {
        ApiError::bad_request(format!("invalid log cursor '{text}': expected ATTEMPT:SEQ"))
    })
}

fn sse_event(line: &StoredLine) -> SseEvent {
    SseEvent::default()
        .id(format!("{}:{}", line.attempt, line.seq))
        .event("line")
        .data(serde_json::to_string(&LineView::new(line)).unwrap_or_default())
}

/// Sends stored lines after `cursor`, then new ones as they are stored, until the step is
/// final and drained (or the engine shuts down).
fn follow(
    state: ApiState,
    run_id: i64,
    step_run_id: i64,
    cursor: (i64, i64),
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream(move |tx| async move {
        let store = state.executor.store().clone();
        let mut events = state.executor.events().subscribe();
        let mut cursor = cursor;
        loop {
            let lines = match store.read_logs(step_run_id, cursor, PAGE).await {
                Ok(lines) => lines,
                Err(e) => {
                    tracing::error!("reading logs: {e:#}");
                    return;
                }
            };
            if let Some(last) = lines.last() {
                cursor = (last.attempt, last.seq);
                for line in &lines {
                    if tx.send(sse_event(line)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            // Nothing new: done if the step is final (its runner sends every line before
            // reporting the end), else wait for more.
            let final_now = match store.step_run_by_id(step_run_id).await {
                Ok(Some(step)) => parse_status(&step.status).is_final(),
                _ => true,
            };
            if final_now {
                // One more read closes the gap between the last read and the status check.
                match store.read_logs(step_run_id, cursor, PAGE).await {
                    Ok(lines) if !lines.is_empty() => continue,
                    _ => {}
                }
                // regression: an `end` event with empty data is never dispatched by SSE
                // clients (the spec drops events whose data buffer is empty).
                let _ = tx.send(SseEvent::default().event("end").data("{}")).await;
                return;
            }
            let wait = async {
                loop {
                    match events.recv().await {
                        Ok(Event::Logs { step_run_id: s, .. }) if s == step_run_id => return,
                        Ok(Event::Step { run_id: r } | Event::RunFinished { run_id: r })
                            if r == run_id =>
                        {
                            return
                        }
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending().await
                        }
                    }
                }
            };
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::timeout(Duration::from_millis(500), wait) => {}
            }
        }
    })
}

/// A stream fed by a task through a small channel (the task ends when the client leaves).
fn async_stream<F, Fut>(producer: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(producer(tx));
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}
