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

use utoipa::IntoParams;

use super::views::{ArtifactView, ErrorView};
use super::{parse_run_id, ApiState, RunId};
use crate::artifacts::ArtifactError;
use crate::http_error::{ApiError, ApiResult};
use crate::store::BlobRow;

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
    summary = "The files every step of a run kept (`artifacts=[...]`)",
    params(RunId),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Each kept file, by step", body = Vec<ArtifactView>),
        (status = 400, description = "The id is not a run id", body = ErrorView),
        (status = 401, description = "Reads are private and the request has no valid token", body = ErrorView),
        (status = 404, description = "No such run", body = ErrorView),
        (status = 500, description = "The engine failed (see its log)", body = ErrorView),
    )
)]
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
        (status = 401, description = "Reads are private and the request has no valid token", body = ErrorView),
        (status = 404, description = "No such run, or the step kept no artifacts (or they were deleted by retention)", body = ErrorView),
        (status = 500, description = "The engine failed (see its log)", body = ErrorView),
    )
)]
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
        (status = 401, description = "Reads are private and the request has no valid token", body = ErrorView),
        (status = 404, description = "No such run, step or listed file (or deleted by retention)", body = ErrorView),
        (status = 500, description = "The engine failed (see its log)", body = ErrorView),
    )
)]
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
