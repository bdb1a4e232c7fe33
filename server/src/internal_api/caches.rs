//! `/internal/attempts/{id}/caches/...`: the runner's side of step caches (protocol in
//! [`plue_types::protocol::caches`]): which entry to restore, an entry's archive, and a
//! new entry.
//!
//! Invariants:
//! - Every request is the runner's own, for an attempt it holds that is still claimed or
//!   running (401/403/404/409 otherwise, as the other attempt endpoints).
//! - The run, its scope and its partition come from the attempt, never from the request
//!   (`plue_core::caches::service`); a cache name must be one of the attempt's dispatched
//!   caches, and the restore prefixes are the dispatch's own.
//! - An entry is downloaded only by a run whose partition may read it (written under a
//!   trust the run may restore) and whose attempt has a cache of its name: any other id is
//!   the same 404 as a missing one. The archive is checked against the digest and size
//!   recorded at save as it streams, never more than the recorded size is sent, and on a
//!   mismatch the entry (every entry of its object) and its object are removed before the
//!   body ends: the runner refuses the bytes by its own digest check, and its save of the
//!   key is recorded anew.
//! - A save goes into the run's own partition, under a name and key checked before any
//!   byte is read, hashed by the engine as it streams, within the per-entry limit and the
//!   repository's quota; a refused or broken upload leaves no object and no row.

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use plue_core::caches::service::{self, RunCaches, SaveError};
use plue_core::dispatch::Dispatch;
use plue_types::protocol::caches::{CacheLookup, CacheLookupReply, CacheSaved, CacheSpec};

use super::{authenticate, owned_attempt_id, InternalState};
use crate::http_error::{ApiError, ApiResult};
use crate::json_body::JsonBody;

pub(super) fn routes() -> Router<InternalState> {
    Router::new()
        .route("/internal/attempts/{id}/caches/lookup", post(lookup))
        .route("/internal/attempts/{id}/caches/entries/{entry}", get(entry))
        .route("/internal/attempts/{id}/caches/{name}/{key}", put(save))
}

/// The attempt's run's caches and its dispatched caches, for a live attempt the runner
/// holds.
async fn attempt_caches(
    state: &InternalState,
    headers: &HeaderMap,
    raw_id: &str,
) -> ApiResult<(RunCaches, Vec<CacheSpec>)> {
    let runner = authenticate(state, headers).await?;
    let (attempt_id, owner) = owned_attempt_id(state, &runner, raw_id).await?;
    let store = state.executor.store();
    if !store.attempt_is_live(attempt_id).await? {
        return Err(ApiError::Client(
            StatusCode::CONFLICT,
            format!("attempt {attempt_id} has ended; its caches can no longer be read or saved"),
        ));
    }
    let run = service::of_run(store, owner.run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no attempt {attempt_id}")))?;
    let specs = match store.dispatch_of(owner.step_run_id).await? {
        Some(text) => serde_json::from_str::<Dispatch>(&text)
            .map_err(|e| anyhow::anyhow!("dispatch of attempt {attempt_id}: {e}"))?
            .cache_specs(&run.partition.label(), state.artifacts.cache_entry_limit()),
        None => Vec::new(),
    };
    Ok((run, specs))
}

/// The attempt's cache `name`, or 403 naming why.
fn spec_named<'a>(specs: &'a [CacheSpec], name: &str) -> ApiResult<&'a CacheSpec> {
    specs.iter().find(|s| s.name == name).ok_or_else(|| {
        ApiError::forbidden(format!(
            "the attempt's step declares no cache '{}'",
            name.escape_debug()
        ))
    })
}

/// `POST /internal/attempts/{id}/caches/lookup`: the entry to restore, or none.
async fn lookup(
    State(state): State<InternalState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<JsonBody<CacheLookup>, JsonRejection>,
) -> ApiResult<Json<CacheLookupReply>> {
    let Path(raw_id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (run, specs) = attempt_caches(&state, &headers, &raw_id).await?;
    let JsonBody(asked) = body?;
    service::check_key(&asked.name, &asked.key).map_err(ApiError::bad_request)?;
    let spec = spec_named(&specs, &asked.name)?;
    let entry = run.lookup(state.executor.store(), spec, &asked.key).await?;
    Ok(Json(CacheLookupReply { entry }))
}

/// `GET /internal/attempts/{id}/caches/entries/{entry}`: an entry's archive, when the
/// attempt's run may read it.
async fn entry(
    State(state): State<InternalState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let Path((raw_id, raw_entry)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (run, specs) = attempt_caches(&state, &headers, &raw_id).await?;
    let missing = || ApiError::not_found(format!("no cache entry {}", raw_entry.escape_debug()));
    let entry_id = raw_entry
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(missing)?;
    let store = state.executor.store();
    let entry = run
        .readable_entry(store, entry_id)
        .await?
        .filter(|entry| specs.iter().any(|s| s.name == entry.name))
        .ok_or_else(missing)?;
    let stream = run
        .download(&state.artifacts, store, &entry)
        .await?
        .ok_or_else(missing)?;
    // Chunked, without a length: a stream cut on a mismatch never ends as a whole body.
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/zstd")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `PUT /internal/attempts/{id}/caches/{name}/{key}`: a new entry in the run's partition.
async fn save(
    State(state): State<InternalState>,
    headers: HeaderMap,
    path: Result<Path<(String, String, String)>, PathRejection>,
    body: Body,
) -> ApiResult<Json<CacheSaved>> {
    let Path((raw_id, name, key)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (run, specs) = attempt_caches(&state, &headers, &raw_id).await?;
    service::check_key(&name, &key).map_err(ApiError::bad_request)?;
    spec_named(&specs, &name)?;
    let saved = run
        .save(
            &state.artifacts,
            state.executor.store(),
            &name,
            &key,
            body.into_data_stream(),
        )
        .await
        .map_err(|e| match e {
            SaveError::Invalid(why) => ApiError::bad_request(why),
            SaveError::TooLarge(why) => ApiError::Client(StatusCode::PAYLOAD_TOO_LARGE, why),
            SaveError::Body(why) => ApiError::bad_request(format!("the upload failed: {why}")),
            SaveError::Engine(e) => ApiError::Internal(e),
        })?;
    Ok(Json(saved))
}
