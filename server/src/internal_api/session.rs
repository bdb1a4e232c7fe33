//! The engine's side of the held runner connection ([`plue_types::protocol::session`]):
//! `GET /internal/session` upgraded to a stream of framed calls, each handed to the same
//! routes an HTTP `POST` reaches, with the token that opened the connection.
//!
//! Invariants:
//! - The connection is opened only by a live runner's session token: the upgrade is
//!   answered after [`super::authenticate`] (401 or 410 otherwise, as for any call), and
//!   only for the protocol version this engine speaks (426 naming it otherwise).
//! - Every call is authenticated again by its route, with the opening token: a runner
//!   declared lost meanwhile gets 410 on its next call, as over HTTP.
//! - Each call runs as its own task: a held poll or watch never holds back another call;
//!   answers are written by one writer, whole frames only. At most [`CALLS_IN_FLIGHT`]
//!   calls of a connection run at once; past that it is not read until one ends.
//! - A frame past the protocol's bound, or one that does not parse, closes the connection
//!   (the runner retries what was unanswered over HTTP); calls in flight when it closes are
//!   finished by their routes (nothing they write is lost), their answers dropped.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::{SinkExt, StreamExt};
use plue_types::protocol::session::{Answer, Call, MAX_FRAME_BYTES, PROTOCOL};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tower::ServiceExt;

use super::{authenticate, InternalState, MAX_BODY_BYTES};
use crate::http_error::ApiError;

/// How many answers may wait for the writer before calls wait for it.
const ANSWERS_QUEUED: usize = 64;

/// How many calls of one connection may be in flight at once (a runner has a poll or a
/// watch, a batch of logs, a heartbeat, a completion): past it the connection is not read
/// until one ends, so a runner cannot make the engine hold calls without bound.
const CALLS_IN_FLIGHT: usize = 32;

/// `GET /internal/session`: upgrades a runner's connection to the held connection, whose
/// calls `routes` answers.
pub(super) async fn open(state: InternalState, routes: Router, mut request: Request) -> Response {
    let headers = request.headers();
    if let Err(refused) = authenticate(&state, headers).await {
        return refused.into_response();
    }
    let asked = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !asked.eq_ignore_ascii_case(PROTOCOL) {
        let mut refused = ApiError::Client(
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "this engine's held runner connection speaks {PROTOCOL}, not {asked:?}: \
                 run a runner of this engine's version (or keep to one HTTP request per call)"
            ),
        )
        .into_response();
        refused
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
        return refused;
    }
    let Some(authorization) = headers.get(header::AUTHORIZATION).cloned() else {
        return ApiError::unauthorized("missing 'Authorization: Bearer <token>'").into_response();
    };
    let Some(upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return ApiError::bad_request("this connection cannot be upgraded").into_response();
    };
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                tracing::debug!("a runner's held connection opened");
                serve(
                    hyper_util::rt::TokioIo::new(upgraded),
                    routes,
                    authorization,
                )
                .await;
                tracing::debug!("a runner's held connection closed")
            }
            Err(e) => tracing::debug!("a runner's held connection did not open: {e}"),
        }
    });
    let mut switching = Response::new(Body::empty());
    *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let switched = switching.headers_mut();
    switched.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    switched.insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    switching
}

/// Reads calls off `io` until it closes, each answered by `routes` in a task of its own.
async fn serve<Io>(io: Io, routes: Router, authorization: HeaderValue)
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec();
    let (mut frames_out, mut frames_in) = StreamExt::split::<bytes::Bytes>(Framed::new(io, codec));
    let (answers, mut to_write) = tokio::sync::mpsc::channel::<Answer>(ANSWERS_QUEUED);
    let writer = tokio::spawn(async move {
        while let Some(answer) = to_write.recv().await {
            if frames_out
                .send(bytes::Bytes::from(answer.encode()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let authorization = Arc::new(authorization);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(CALLS_IN_FLIGHT));
    while let Some(frame) = frames_in.next().await {
        let call = match frame
            .map_err(anyhow::Error::from)
            .and_then(|frame| Call::decode(&frame).map_err(anyhow::Error::from))
        {
            Ok(call) => call,
            Err(e) => {
                tracing::warn!("closing a runner's held connection: {e:#}");
                break;
            }
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (routes, answers, authorization) =
            (routes.clone(), answers.clone(), authorization.clone());
        tokio::spawn(async move {
            let answer = answer(routes, &authorization, call).await;
            let _ = answers.send(answer).await;
            drop(permit);
        });
    }
    drop(answers);
    // The answers of calls still running are dropped with the connection.
    writer.abort();
}

/// The call as an HTTP `POST` of the same path and body would have been answered.
async fn answer(routes: Router, authorization: &HeaderValue, call: Call) -> Answer {
    let Call { id, path, body } = call;
    let request = Request::post(&path)
        .header(header::AUTHORIZATION, authorization)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body));
    let response = match request {
        Ok(request) => routes
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {}),
        Err(e) => ApiError::bad_request(format!("a call to {path:?}: {e}")).into_response(),
    };
    let status = response.status().as_u16();
    let body = match axum::body::to_bytes(response.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => body.to_vec(),
        Err(e) => {
            tracing::warn!("an answer on a runner's held connection: {e}");
            return Answer {
                id,
                status: StatusCode::INTERNAL_SERVER_ERROR.as_u16(),
                body: br#"{"error":"the engine could not read its own answer"}"#.to_vec(),
            };
        }
    };
    Answer { id, status, body }
}
