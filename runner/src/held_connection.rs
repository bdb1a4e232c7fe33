//! The runner's side of the held connection ([`plue_types::protocol::session`]): after
//! registering, one upgraded connection to the engine on which every JSON call rides,
//! framed with an id and answered in any order — instead of an HTTP request and answer
//! per call.
//!
//! Invariants:
//! - It is opened with the runner's own session token, on the same client (and so the
//!   same socket or proxy) as its HTTP calls; an engine without it (404), of another
//!   version (426, whose message is logged) or an upgrade refused on the way leaves the
//!   runner on HTTP, as before.
//! - A call gets its answer or fails as unreachable: when the connection closes (or a
//!   frame cannot be read), every call waiting on it fails at once and the connection is
//!   never used again; the caller's retry goes over HTTP (every call is idempotent or
//!   acknowledged).
//! - A call gives up after its own timeout; its answer, if one comes later, is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use plue_types::protocol::session::{Answer, Call, MAX_FRAME_BYTES, PROTOCOL, SESSION_PATH};
use reqwest::header::{CONNECTION, UPGRADE};
use reqwest::StatusCode;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Frames waiting for the writer before a call waits for it.
const FRAMES_QUEUED: usize = 64;

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

/// Why a call over the held connection got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("the held connection to the engine closed")]
    Closed,
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// An open held connection (module docs).
pub(crate) struct HeldConnection {
    next_id: AtomicU64,
    waiting: Waiting,
    frames: mpsc::Sender<Vec<u8>>,
    open: Arc<AtomicBool>,
}

impl HeldConnection {
    /// Opens the held connection at `base` (the engine's URL) with the runner's session
    /// `token`; `None` when the engine does not offer it (the runner keeps to HTTP).
    pub(crate) async fn open(
        client: &reqwest::Client,
        base: &str,
        token: &str,
    ) -> Option<HeldConnection> {
        let sent = client
            .get(format!("{base}{SESSION_PATH}"))
            .bearer_auth(token)
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, PROTOCOL)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                tracing::info!(
                    "no held connection to the engine, HTTP calls: {}",
                    e.without_url()
                );
                return None;
            }
        };
        match response.status() {
            StatusCode::SWITCHING_PROTOCOLS => {}
            StatusCode::NOT_FOUND => {
                tracing::debug!("the engine offers no held connection: HTTP calls");
                return None;
            }
            status => {
                let message = response.text().await.unwrap_or_default();
                tracing::warn!(
                    "the engine refused the held connection ({status}): {message}; HTTP calls"
                );
                return None;
            }
        }
        let upgraded = match response.upgrade().await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::info!("the held connection did not open, HTTP calls: {e}");
                return None;
            }
        };
        Some(HeldConnection::over(upgraded))
    }

    /// The held connection over an open byte stream.
    fn over<Io>(io: Io) -> HeldConnection
    where
        Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME_BYTES)
            .new_codec();
        let (mut frames_out, mut frames_in) =
            StreamExt::split::<bytes::Bytes>(Framed::new(Box::pin(io), codec));
        let waiting: Waiting = Arc::default();
        let open = Arc::new(AtomicBool::new(true));
        let (frames, mut to_write) = mpsc::channel::<Vec<u8>>(FRAMES_QUEUED);
        let writer_open = open.clone();
        tokio::spawn(async move {
            while let Some(frame) = to_write.recv().await {
                if let Err(e) = frames_out.send(bytes::Bytes::from(frame)).await {
                    tracing::info!("the held connection to the engine: {e}");
                    break;
                }
            }
            writer_open.store(false, Ordering::SeqCst);
        });
        let (reader_open, reader_waiting) = (open.clone(), waiting.clone());
        tokio::spawn(async move {
            while let Some(frame) = frames_in.next().await {
                let answer = match frame
                    .map_err(anyhow::Error::from)
                    .and_then(|frame| Answer::decode(&frame).map_err(anyhow::Error::from))
                {
                    Ok(answer) => answer,
                    Err(e) => {
                        tracing::warn!("closing the held connection to the engine: {e:#}");
                        break;
                    }
                };
                if let Some(caller) = lock(&reader_waiting).remove(&answer.id) {
                    let _ = caller.send(answer);
                }
            }
            reader_open.store(false, Ordering::SeqCst);
            // Every call still waiting fails now (its sender dropped).
            lock(&reader_waiting).clear();
        });
        HeldConnection {
            next_id: AtomicU64::new(1),
            waiting,
            frames,
            open,
        }
    }

    /// Whether calls may still ride it.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Calls `path` with the JSON `body`: the engine's answer, as its HTTP status and body.
    pub(crate) async fn call(
        &self,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        if !self.is_open() {
            return Err(CallError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answered, answer) = oneshot::channel();
        lock(&self.waiting).insert(id, answered);
        let frame = Call {
            id,
            path: path.to_owned(),
            body,
        }
        .encode();
        let forget = |error| {
            lock(&self.waiting).remove(&id);
            error
        };
        if self.frames.send(frame).await.is_err() {
            return Err(forget(CallError::Closed));
        }
        // Closed after it was put among the waiting: the reader's drain may have passed it.
        if !self.is_open() {
            return Err(forget(CallError::Closed));
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(forget(CallError::Closed)),
            Err(_) => Err(forget(CallError::TimedOut(timeout))),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use futures::{SinkExt, StreamExt};
    use plue_types::protocol::session::{Answer, Call};
    use tokio_util::codec::{Framed, LengthDelimitedCodec};

    use super::*;

    /// An engine's end of a held connection that answers each call with its path, out of
    /// order (the second call first), then closes after `answers` answers.
    async fn engine(io: tokio::io::DuplexStream, answers: usize) {
        let mut frames = Framed::new(io, LengthDelimitedCodec::new());
        let mut calls = Vec::new();
        while let Some(Ok(frame)) = frames.next().await {
            calls.push(Call::decode(&frame).unwrap());
            if calls.len() == 2 || calls.len() >= answers {
                break;
            }
        }
        for call in calls.into_iter().rev().take(answers) {
            let answer = Answer {
                id: call.id,
                status: 200,
                body: call.path.into_bytes(),
            };
            frames
                .send(bytes::Bytes::from(answer.encode()))
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn answers_reach_their_calls_in_any_order() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(engine(theirs, 2));
        let held = HeldConnection::over(ours);
        let second = Duration::from_secs(5);
        let (a, b) = tokio::join!(
            held.call("/internal/a", b"{}".to_vec(), second),
            held.call("/internal/b", b"{}".to_vec(), second)
        );
        assert_eq!(a.unwrap().body, b"/internal/a");
        assert_eq!(b.unwrap().body, b"/internal/b");
    }

    #[tokio::test]
    async fn a_call_unanswered_when_the_connection_closes_fails_at_once_and_the_next_is_refused() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        // Answers one of the two calls, then closes.
        tokio::spawn(engine(theirs, 1));
        let held = HeldConnection::over(ours);
        let long = Duration::from_secs(30);
        let started = std::time::Instant::now();
        let (a, b) = tokio::join!(
            held.call("/internal/a", b"{}".to_vec(), long),
            held.call("/internal/b", b"{}".to_vec(), long)
        );
        let answered = [a.is_ok(), b.is_ok()];
        assert_eq!(answered.iter().filter(|ok| **ok).count(), 1, "{answered:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "failed at once"
        );
        // The reader saw the close: no call rides the connection again.
        for _ in 0..100 {
            if !held.is_open() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!held.is_open());
        assert!(matches!(
            held.call("/internal/c", Vec::new(), long).await,
            Err(CallError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_call_without_an_answer_times_out() {
        let (ours, _theirs) = tokio::io::duplex(1 << 16);
        let held = HeldConnection::over(ours);
        let short = Duration::from_millis(50);
        assert!(matches!(
            held.call("/internal/a", Vec::new(), short).await,
            Err(CallError::TimedOut(_))
        ));
        assert!(held.is_open(), "a slow engine is not a closed connection");
    }
}
