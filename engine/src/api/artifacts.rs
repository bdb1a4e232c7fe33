//! `GET /api/runs/{id}/artifacts` (the files every step kept), `GET
//! /api/runs/{id}/steps/{step}/artifacts` (a step's artifacts as one tar) and `GET
//! /api/runs/{id}/steps/{step}/artifacts/{path}` (one file). Reads: open unless reads are
//! private, like the rest of `/api`.
//!
//! Invariants: a file is served only when the store lists it for that run and step (the
//! latest attempt that kept artifacts), so a path never selects anything but a listed
//! file of that blob; bodies stream from the blob store, never buffered whole.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::views::ArtifactView;
use super::{parse_run_id, ApiState};
use crate::artifacts::ArtifactError;
use crate::http_error::{ApiError, ApiResult};
use crate::store::BlobRow;

pub(super) async fn list(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ArtifactView>>> {
    let id = parse_run_id(&id)?;
    let store = state.executor.store();
    if store.run(id).await?.is_none() {
        return Err(ApiError::not_found(format!("no run {id}")));
    }
    let rows = store.artifacts_of_run(id).await?;
    Ok(Json(
        rows.into_iter().map(|r| ArtifactView::new(id, r)).collect(),
    ))
}

/// The latest artifacts blob of a step.
async fn blob(state: &ApiState, id: &str, step: &str) -> ApiResult<(i64, BlobRow)> {
    let id = parse_run_id(id)?;
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

pub(super) async fn tar(
    State(state): State<ApiState>,
    Path((id, step)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (id, blob) = blob(&state, &id, &step).await?;
    let stream = state.artifacts.get(&blob.key).await.map_err(read_error)?;
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

pub(super) async fn file(
    State(state): State<ApiState>,
    Path((id, step, path)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (id, blob) = blob(&state, &id, &step).await?;
    let listed = state
        .executor
        .store()
        .artifacts_of_run(id)
        .await?
        .into_iter()
        .find(|a| a.step_id == blob.step_id && a.name == path)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "step '{}' of run {id} kept no file '{}'",
                blob.step_id,
                path.escape_debug()
            ))
        })?;
    let stream = state
        .artifacts
        .file(&blob.key, &listed.name)
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

fn read_error(e: ArtifactError) -> ApiError {
    match e {
        ArtifactError::Store(object_store::Error::NotFound { .. }) => {
            ApiError::not_found("the artifacts were deleted (retention)")
        }
        e => ApiError::Internal(anyhow::anyhow!("{e}")),
    }
}
