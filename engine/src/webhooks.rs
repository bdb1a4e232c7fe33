//! `POST /webhooks/github` and `POST /webhooks/gitea`: authenticate a forge's delivery,
//! de-duplicate it, and hand the event to the registry.
//!
//! The order of checks, each with its answer: body over 5 MiB → 413; no event or delivery
//! header → 400; body not a JSON object naming `repository.full_name` → 400; repository
//! not registered → 404; signature missing or wrong → 401 (checked in constant time over
//! the exact bytes received); payload lacking what its event needs → 400; delivery id seen
//! before → 200 with the runs it started; `ping` → 200; the registry failing to fetch the
//! commit → 422 (the delivery is forgotten, so a redelivery tries again).
//!
//! Invariant: nothing a request contains can make the handler panic or answer 5xx except
//! a failure reaching the repository or the database.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use crate::forge::payload::{self, ForgeEvent};
use crate::forge::{signature, Forge};
use crate::http_error::{ApiError, ApiResult};
use crate::registry::Registry;
use crate::store::Store;
use crate::vault::Vault;

/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
const MAX_DELIVERY_ID_CHARS: usize = 200;

#[derive(Clone)]
pub struct WebhookState {
    pub store: Store,
    pub vault: Vault,
    pub registry: Option<Arc<Registry>>,
}

/// The answer to an accepted delivery.
#[derive(Debug, Serialize)]
pub struct DeliveryResult {
    pub delivery: String,
    pub event: String,
    pub repository: String,
    /// Runs started by this delivery (or by its first copy, for a duplicate).
    pub runs: Vec<i64>,
    pub duplicate: bool,
}

pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhooks/github", post(github))
        .route("/webhooks/gitea", post(gitea))
        .with_state(state)
}

async fn github(
    State(state): State<WebhookState>,
    request: Request,
) -> ApiResult<Json<DeliveryResult>> {
    receive(&state, Forge::GitHub, request).await
}

async fn gitea(
    State(state): State<WebhookState>,
    request: Request,
) -> ApiResult<Json<DeliveryResult>> {
    receive(&state, Forge::Gitea, request).await
}

/// The headers a forge names its event and delivery with.
fn event_headers(forge: Forge) -> (&'static str, &'static str) {
    match forge {
        Forge::GitHub => ("x-github-event", "x-github-delivery"),
        Forge::Gitea => ("x-gitea-event", "x-gitea-delivery"),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

async fn receive(
    state: &WebhookState,
    forge: Forge,
    request: Request,
) -> ApiResult<Json<DeliveryResult>> {
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body).await?;
    let (event_header, delivery_header) = event_headers(forge);
    let event = header(&parts.headers, event_header)
        .ok_or_else(|| ApiError::bad_request(format!("missing header {event_header}")))?
        .to_string();
    let delivery = header(&parts.headers, delivery_header)
        .ok_or_else(|| ApiError::bad_request(format!("missing header {delivery_header}")))?
        .to_string();
    if delivery.chars().count() > MAX_DELIVERY_ID_CHARS || delivery.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid delivery id"));
    }
    let repo_name = repository_name(&body)?;
    let repo = state.store.repo_by_name(&repo_name).await?.ok_or_else(|| {
        ApiError::not_found(format!("repository '{repo_name}' is not registered"))
    })?;
    let secret = state
        .vault
        .open(&repo.webhook_secret)
        .map_err(|e| anyhow::anyhow!("webhook secret of {}: {e}", repo.name))?;
    signature::verify(
        forge,
        header(&parts.headers, signature::header_name(forge)),
        &body,
        &secret,
    )
    .map_err(|e| ApiError::unauthorized(e.to_string()))?;

    let parsed =
        payload::parse(forge, &event, &body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut result = DeliveryResult {
        delivery: delivery.clone(),
        event: event.clone(),
        repository: repo.name.clone(),
        runs: Vec::new(),
        duplicate: false,
    };
    if !state
        .store
        .record_delivery(forge.as_str(), &delivery, repo.id, &event)
        .await?
    {
        result.duplicate = true;
        result.runs = state.store.delivery_runs(forge.as_str(), &delivery).await?;
        return Ok(Json(result));
    }
    let started = match (&parsed, &state.registry) {
        (ForgeEvent::Push(_) | ForgeEvent::PullRequest(_), None) => {
            state
                .store
                .forget_delivery(forge.as_str(), &delivery)
                .await?;
            return Err(ApiError::Client(
                StatusCode::NOT_IMPLEMENTED,
                "this engine has no evaluator".into(),
            ));
        }
        (ForgeEvent::Push(push), Some(registry)) => registry.on_push(&repo, push).await,
        (ForgeEvent::PullRequest(pr), Some(registry)) => registry.on_pull_request(&repo, pr).await,
        (ForgeEvent::Ping { .. } | ForgeEvent::Delete { .. } | ForgeEvent::Ignored { .. }, _) => {
            Ok(Vec::new())
        }
    };
    match started {
        Ok(runs) => {
            state
                .store
                .set_delivery_runs(forge.as_str(), &delivery, &runs)
                .await?;
            result.runs = runs;
            Ok(Json(result))
        }
        Err(e) => {
            state
                .store
                .forget_delivery(forge.as_str(), &delivery)
                .await?;
            tracing::warn!(repository = %repo.name, %delivery, "delivery failed: {e:#}");
            Err(ApiError::Client(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot process the {event} event: {e:#}"),
            ))
        }
    }
}

async fn read_body(headers: &HeaderMap, body: Body) -> ApiResult<Vec<u8>> {
    let too_large = || {
        ApiError::Client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => {
            let limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if limit {
                Err(too_large())
            } else {
                Err(ApiError::bad_request(format!("cannot read the body: {e}")))
            }
        }
    }
}

/// `repository.full_name` of a JSON body, which picks the secret to check it with.
fn repository_name(body: &[u8]) -> ApiResult<String> {
    #[derive(serde::Deserialize)]
    struct Repository {
        full_name: String,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        repository: Option<Repository>,
    }
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not a JSON object: {e}")))?;
    envelope
        .repository
        .map(|r| r.full_name)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| ApiError::bad_request("body has no repository.full_name"))
}
