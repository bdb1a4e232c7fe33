//! `GET /api/runs/{id}/artifacts` (the files every step kept), `GET
//! /api/runs/{id}/steps/{step}/artifacts` (a step's artifacts as one tar) and `GET
//! /api/runs/{id}/steps/{step}/artifacts/{path}` (one file). Each needs `reader` on the
//! run's repository (the run's 404 for a caller who may not read it; a local run's
//! artifacts are the admins').
//!
//! Invariants: a file is served only when the store lists it for that run and step (the
//! latest attempt that kept artifacts), so a path never selects anything but a listed
//! file of that blob; bodies stream from the blob store, never buffered whole, each in a
//! download slot of its client (see `plue_core::artifacts::read`: capped in all and per
//! client address, 503 past either, dropped when the client stops reading); a listing
//! is a page of at most [`MAX_PAGE`] files (default [`DEFAULT_PAGE`]) whose `Link` header
//! names the next one, so no answer grows with the run.

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use plue_core::artifacts::{ArtifactError, Slot};
use plue_store::BlobRow;
use serde::Deserialize;
use utoipa::IntoParams;

use super::views::{ArtifactView, ErrorView};
use super::{parse_run_id, ApiState, RunId};
use crate::access::{Caller, Role};
use crate::http_error::{ApiError, ApiResult};
use crate::percent::encode;

/// Files in a listing page unless `limit` says otherwise.
pub(crate) const DEFAULT_PAGE: i64 = 100;
/// The most files in one listing page.
pub(crate) const MAX_PAGE: i64 = 1000;

/// A page of a run's artifacts.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// At most this many files (default 100; below 1 counts as 1, above 1000 as 1000).
    limit: Option<i64>,
    /// Only the files after this one, as `STEP/PATH` (the `Link: rel="next"` header of
    /// the previous page carries it).
    #[param(example = "build/dist/out.txt", pattern = "^[^/]+/.+$")]
    after: Option<String>,
    /// Only this step's files.
    #[param(example = "build")]
    step: Option<String>,
}

/// A step's part of an artifact path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers parse the segments themselves
pub(super) struct StepPath {
    /// The run's id.
    #[param(minimum = 1, example = 1)]
    id: i64,
    /// The step's id in the run's plan.
    #[param(example = "build")]
    step: String,
}

/// One file of a step's artifacts.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers parse the segments themselves
pub(super) struct FilePath {
    /// The run's id.
    #[param(minimum = 1, example = 1)]
    id: i64,
    /// The step's id in the run's plan.
    #[param(example = "build")]
    step: String,
    /// The file's path in the step's workspace, as listed (`/` between segments).
    #[param(example = "dist/out.txt")]
    path: String,
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/artifacts",
    tag = "runs",
    operation_id = "list_artifacts",
    summary = "The files every step of a run kept (`artifacts=[...]`), a page at a time",
    description = "Files in step and path order. When more follow, the `Link` header names \
                   the next page (`rel=\"next\"`), the same query with `after` set.",
    params(RunId, ListQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of kept files, by step and path", body = Vec<ArtifactView>,
         headers(("Link" = String, description = "`</api/runs/{id}/artifacts?...&after=...>; rel=\"next\"` when more files follow"))),
        (status = 400, description = "The id is not a run id, or an unknown or malformed query parameter", body = ErrorView),
        (status = 401, response = super::openapi::RunNotPublic),
        (status = 404, description = "No such run, or one the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let id = parse_run_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let after = query
        .after
        .as_deref()
        .map(|after| {
            after
                .split_once('/')
                .filter(|(step, name)| !step.is_empty() && !name.is_empty())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid artifacts cursor '{}': expected STEP/PATH",
                        after.escape_debug()
                    ))
                })
        })
        .transpose()?;
    let store = state.executor.store();
    caller.visible_run(store, id, Role::Reader).await?;
    let mut rows = store
        .artifacts_page(id, query.step.as_deref(), after, limit + 1)
        .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = more.then(|| rows.last()).flatten().map(|last| {
        let mut url = format!("/api/runs/{id}/artifacts?limit={limit}");
        if let Some(step) = &query.step {
            url.push_str(&format!("&step={}", encode(step)));
        }
        url.push_str(&format!(
            "&after={}",
            encode(&format!("{}/{}", last.step_id, last.name))
        ));
        format!("<{url}>; rel=\"next\"")
    });
    let body = Json(
        rows.into_iter()
            .map(|r| ArtifactView::new(id, r))
            .collect::<Vec<_>>(),
    );
    Ok(match next {
        Some(link) => ([(header::LINK, link)], body).into_response(),
        None => body.into_response(),
    })
}

/// The latest artifacts blob of a step of a run the caller may read.
async fn blob(
    state: &ApiState,
    caller: &Caller,
    id: &str,
    step: &str,
) -> ApiResult<(i64, BlobRow)> {
    let id = parse_run_id(id)?;
    caller
        .visible_run(state.executor.store(), id, Role::Reader)
        .await?;
    let blob = state
        .executor
        .store()
        .latest_blob(id, step, "artifacts")
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "run {id} has no artifacts of step '{}'",
                step.escape_debug()
            ))
        })?;
    Ok((id, blob))
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/steps/{step}/artifacts",
    tag = "runs",
    operation_id = "download_step_artifacts",
    summary = "A step's artifacts as one tar (streamed)",
    params(StepPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The tar", content_type = "application/x-tar", body = Vec<u8>),
        (status = 400, description = "The id is not a run id", body = ErrorView),
        (status = 401, response = super::openapi::RunNotPublic),
        (status = 404, description = "No such run, a run the caller may not read, or the step kept no artifacts (or they were deleted by retention)", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
        (status = 503, description = "Every download slot (in all, or of this client) is taken; try again later", body = ErrorView),
    )
)]
pub(super) async fn tar(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, step)): Path<(String, String)>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (id, blob) = blob(&state, &caller, &id, &step).await?;
    let slot = slot(&state, peer, &headers)?;
    let stream = state
        .artifacts
        .download(&blob.key, slot)
        .await
        .map_err(read_error)?;
    let disposition = format!("attachment; filename=\"run-{id}-{}.tar\"", blob.step_id);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/steps/{step}/artifacts/{*path}",
    tag = "runs",
    operation_id = "download_artifact_file",
    summary = "One file a step kept (streamed)",
    params(FilePath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "The id is not a run id", body = ErrorView),
        (status = 401, response = super::openapi::RunNotPublic),
        (status = 404, description = "No such run, step or listed file (or deleted by retention), or a run the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
        (status = 503, description = "Every download slot (in all, or of this client) is taken; try again later", body = ErrorView),
    )
)]
pub(super) async fn file(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, step, path)): Path<(String, String, String)>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (id, blob) = blob(&state, &caller, &id, &step).await?;
    let listed = state
        .executor
        .store()
        .artifact_of_blob(blob.id, &path)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "step '{}' of run {id} kept no file '{}'",
                blob.step_id,
                path.escape_debug()
            ))
        })?;
    let stream = state
        .artifacts
        .file(&blob.key, &listed.name, slot(&state, peer, &headers)?)
        .await
        .map_err(read_error)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, listed.size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A download slot of the client behind a request (the address a trusted proxy
/// forwarded, or the peer's), or 503 when every one is taken.
fn slot(
    state: &ApiState,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> ApiResult<Slot> {
    let peer = peer.map(|Extension(ConnectInfo(address))| address);
    let client = state.followers.client_address(peer, headers);
    state
        .artifacts
        .downloads()
        .enter(client)
        .map_err(|busy| ApiError::Client(StatusCode::SERVICE_UNAVAILABLE, busy.to_string()))
}

fn read_error(e: ArtifactError) -> ApiError {
    match e {
        ArtifactError::Store(object_store::Error::NotFound { .. }) => {
            ApiError::not_found("the artifacts were deleted (retention)")
        }
        e => ApiError::Internal(anyhow::anyhow!("{e}")),
    }
}
