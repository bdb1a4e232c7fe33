//! `GET /live` (every run) and `GET /live?run=<id>` (one run): a Server-Sent Events stream
//! of `changed` hints from the engine's event bus ([`crate::events`]), on which
//! `assets/live.js` re-fetches the live part of the runs list or a run page at once instead
//! of waiting for its next poll.
//!
//! Invariants:
//! - A hint carries no data (`changed`, data `{}`): the page re-reads the server's rendered,
//!   escaped HTML, which the session was allowed to read. Reading the stream needs what
//!   reading the page needs (`--private-reads` asks for a signed-in token).
//! - Streams are counted with the API's log followers ([`crate::api::followers`]) under
//!   keys no step run has (negative), so the same caps bound them — per session token's
//!   owner when signed in, per address otherwise, with places kept for signed-in users;
//!   past a cap the answer is 429 and the page keeps polling. The stream is on the
//!   followers' leash: an anonymous one ends at its lifetime (the browser reconnects by
//!   itself), any one whose browser stops reading at the idle-send timeout.
//! - Hints are coalesced: at most one per [`THROTTLE`] per stream, and a lagging receiver
//!   (missed hints) is told `changed` too, since the page re-reads everything anyway.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{WebError, WebResult};
use super::forward::Client;
use super::session::Session;
use super::{parse_run_id, Web};
use crate::api::followers::{leash, Who};
use crate::events::Event;
use crate::http_error::ApiError;

/// Fewest milliseconds between two hints of one stream.
pub(super) const THROTTLE: Duration = Duration::from_millis(150);

/// The follower key of the every-runs stream (no step run id is negative).
const ALL_RUNS_KEY: i64 = i64::MIN;

#[derive(Debug, Deserialize)]
pub(super) struct LiveQuery {
    run: Option<String>,
}

/// `GET /live[?run=<id>]`.
pub(super) async fn stream(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<LiveQuery>,
    client: Client,
) -> WebResult<Response> {
    let run = query.run.as_deref().map(parse_run_id).transpose()?;
    let page = run.map_or_else(|| "/".to_string(), |id| format!("/runs/{id}"));
    let session = Session::load(&web, &headers, &page).await?;
    let key = run.map_or(ALL_RUNS_KEY, |id| -id);
    let peer = client.map(|Extension(ConnectInfo(address))| address);
    let who = match &session.token {
        // Checked by `Session::load`; with no admin token nobody signs in.
        Some(token) if web.auth().enforced() => {
            let owner = web.auth().owner_of(token).await.map_err(|e| match e {
                ApiError::Client(status, message) => WebError::Client(status, message),
                ApiError::Internal(e) => WebError::Internal(e),
            })?;
            Who::owner(owner)
        }
        _ => Who::anonymous(web.state.followers.client_address(peer, &headers)),
    };
    let guard =
        web.state.followers.enter(key, who).map_err(|refused| {
            WebError::Client(StatusCode::TOO_MANY_REQUESTS, refused.to_string())
        })?;
    let heartbeat = web.state.followers.limits().heartbeat;
    let watch = Watch {
        events: web.state.executor.events().subscribe(),
        run,
        shutdown: web.state.shutdown.clone(),
        last: None,
    };
    let hints = futures::stream::unfold(watch, |mut watch| async move {
        watch.next().await?;
        Some((
            Ok::<_, Infallible>(SseEvent::default().event("changed").data("{}")),
            watch,
        ))
    });
    // The leash frees the place at an anonymous stream's lifetime and when the browser
    // stops reading, whether or not hyper still polls the stream.
    Ok(Sse::new(leash(hints, guard))
        .keep_alive(KeepAlive::new().interval(heartbeat))
        .into_response())
}

/// One stream's subscription to the event bus.
struct Watch {
    events: broadcast::Receiver<Event>,
    /// Only this run's events (`None`: every run's).
    run: Option<i64>,
    shutdown: CancellationToken,
    /// When the last hint was sent.
    last: Option<Instant>,
}

impl Watch {
    /// Waits for the next change worth a hint; `None` ends the stream.
    async fn next(&mut self) -> Option<()> {
        let shutdown = self.shutdown.clone();
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            changed = self.changed() => changed?,
        }
        if let Some(last) = self.last {
            tokio::time::sleep_until(last + THROTTLE).await;
        }
        // Everything that arrived meanwhile is covered by this one hint.
        while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = self.events.try_recv() {}
        self.last = Some(Instant::now());
        Some(())
    }

    /// Waits for an event about the watched runs (`None`: the bus is gone).
    async fn changed(&mut self) -> Option<()> {
        loop {
            match self.events.recv().await {
                Ok(
                    Event::Step { run_id }
                    | Event::RunFinished { run_id }
                    | Event::Cancel { run_id },
                ) if self.run.is_none_or(|watched| watched == run_id) => return Some(()),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => return Some(()),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
