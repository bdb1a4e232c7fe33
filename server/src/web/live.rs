//! `GET /live` (every run) and `GET /live?run=<id>` (one run): a Server-Sent Events stream
//! of `changed` hints from the engine's event bus ([`plue_store::events`]), on which
//! `assets/live.js` re-fetches the live part of the runs list or a run page at once instead
//! of waiting for its next poll.
//!
//! Invariants:
//! - A hint carries no data (`changed`, data `{}`): the page re-reads the server's rendered,
//!   escaped HTML, which the session was allowed to read. Reading the stream needs what
//!   reading the page needs: one run's stream, that run (the same 404 as a missing one, or
//!   the sign-in page); the every-runs stream hints only at runs of repositories the caller
//!   may read ([`Caller::readable`]), so not even the timing of a private repository's runs
//!   reaches another user. What the caller may read is asked again before a hint at most
//!   every [`RECHECK`] ([`Caller::still_valid`], then the run or [`Caller::readable`]): a
//!   stream whose token was revoked, whose user was disabled or whose run became unreadable
//!   ends, and one whose roles changed hints only at what it may read now.
//! - Streams are counted with the API's log followers ([`crate::api::followers`]) under
//!   keys no step run has (negative), so the same caps bound them — per user when signed
//!   in, per address otherwise, with places kept for signed-in users;
//!   past a cap the answer is 429 and the page keeps polling. The stream is on the
//!   followers' leash: an anonymous one ends at its lifetime (the browser reconnects by
//!   itself), any one whose browser stops reading at the idle-send timeout.
//! - Hints are coalesced: at most one per [`THROTTLE`] per stream, and a lagging receiver
//!   (missed hints) is told `changed` too, since the page re-reads everything anyway.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use plue_store::events::Event;
use plue_store::Store;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{WebError, WebResult};
use super::forward::Client;
use super::session::{denied, Session};
use super::{parse_run_id, Web};
use crate::access::{Caller, Readable, Role};
use crate::api::followers::{leash, Who};

/// Fewest milliseconds between two hints of one stream.
pub(super) const THROTTLE: Duration = Duration::from_millis(150);

/// How long what a stream's caller may read is trusted before it is asked again.
const RECHECK: Duration = Duration::from_secs(1);

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
    let session = Session::load(&web, &headers).await?;
    let store = web.store();
    let readable = match run {
        Some(id) => {
            session
                .caller
                .visible_run(store, id, Role::Reader)
                .await
                .map_err(|e| denied(e, &page))?;
            Readable::All
        }
        None => session.caller.readable(store).await?,
    };
    let key = run.map_or(ALL_RUNS_KEY, |id| -id);
    let peer = client.map(|Extension(ConnectInfo(address))| address);
    let who = Who::of_caller(
        &session.caller,
        web.state.followers.client_address(peer, &headers),
    );
    let guard =
        web.state.followers.enter(key, who).map_err(|refused| {
            WebError::Client(StatusCode::TOO_MANY_REQUESTS, refused.to_string())
        })?;
    let heartbeat = web.state.followers.limits().heartbeat;
    let watch = Watch {
        events: web.state.executor.events().subscribe(),
        run,
        readable,
        caller: session.caller.clone(),
        checked: Instant::now(),
        store: store.clone(),
        repos: HashMap::new(),
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

/// Most runs whose readability a stream remembers (then it forgets them all).
const REMEMBERED: usize = 10_000;

/// One stream's subscription to the event bus.
struct Watch {
    events: broadcast::Receiver<Event>,
    /// Only this run's events (`None`: every run's).
    run: Option<i64>,
    /// Only events of runs of these repositories.
    readable: Readable,
    /// Who reads: asked again before a hint once [`RECHECK`] has passed since `checked`.
    caller: Caller,
    checked: Instant,
    store: Store,
    /// Each run seen: whether it is readable.
    repos: HashMap<i64, bool>,
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
            let run_id = match self.events.recv().await {
                Ok(
                    Event::Step { run_id }
                    | Event::RunFinished { run_id }
                    | Event::Cancel { run_id },
                ) => run_id,
                Ok(_) => continue,
                // Missed events: the page re-reads what it may read anyway.
                Err(broadcast::error::RecvError::Lagged(_)) => return Some(()),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if self.run.is_none_or(|watched| watched == run_id) {
                // regression: a stream went on hinting after its token was revoked.
                self.recheck().await?;
                if self.readable(run_id).await {
                    return Some(());
                }
            }
        }
    }

    /// Asks again, once [`RECHECK`] has passed, what the caller may read; `None` ends the
    /// stream (its credentials no longer hold, or its one run is no longer readable).
    async fn recheck(&mut self) -> Option<()> {
        if self.checked.elapsed() < RECHECK {
            return Some(());
        }
        let store = &self.store;
        let fresh = async {
            if !self.caller.still_valid(store).await? {
                return anyhow::Ok(None);
            }
            Ok(Some(match self.run {
                Some(id) => match self.caller.visible_run(store, id, Role::Reader).await {
                    Ok(_) => Readable::All,
                    Err(_) => return Ok(None),
                },
                None => self.caller.readable(store).await?,
            }))
        };
        match fresh.await {
            Ok(Some(readable)) => {
                self.readable = readable;
                self.repos.clear();
                self.checked = Instant::now();
                Some(())
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("dashboard: checking a live stream's reader: {e:#}");
                None
            }
        }
    }

    /// Whether run `run_id` is of a repository the stream's caller may read (a run that
    /// cannot be read from the store is not).
    async fn readable(&mut self, run_id: i64) -> bool {
        if self.readable == Readable::All {
            return true;
        }
        if let Some(known) = self.repos.get(&run_id) {
            return *known;
        }
        let allowed = match self.store.run(run_id).await {
            Ok(Some(run)) => self.readable.allows(run.repo_id),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!("dashboard: reading run {run_id} for a live stream: {e:#}");
                false
            }
        };
        if self.repos.len() >= REMEMBERED {
            self.repos.clear();
        }
        self.repos.insert(run_id, allowed);
        allowed
    }
}
