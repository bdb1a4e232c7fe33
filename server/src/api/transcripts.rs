//! `GET /api/runs/{id}/steps/{step}/transcript`: the transcript the latest attempt of an
//! `llm` step kept (`plue_types::transcript`), for readers of the run and for
//! `plue rerun RUN --step S --replay --transcript FILE` against a server's run.
//!
//! Invariants: it needs `reader` on the run's repository, like the step's log (the run's
//! 404 for a caller who may not read it; a local run's are the admins'); the transcript is
//! served exactly as the runner kept it — masked with the step's secrets, without the API
//! key or any header — and is bounded ([`plue_core::transcripts::MAX_BLOB_BYTES`]).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use plue_core::transcripts::{self, Kept};

use super::artifacts::StepPath;
use super::views::ErrorView;
use super::{visible_run_in_path, ApiState};
use crate::access::{Caller, Role};
use crate::http_error::{ApiError, ApiResult};

#[utoipa::path(
    get,
    path = "/api/runs/{id}/steps/{step}/transcript",
    tag = "runs",
    operation_id = "get_step_transcript",
    summary = "The transcript of an llm step's latest attempt",
    description = "Every request (as the messages it added), every streamed answer as the \
                   runner assembled it, every tool call and result, with timings; secrets \
                   masked, no API key. `plue rerun RUN --step S --replay --transcript FILE` \
                   replays it.",
    params(StepPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The transcript (JSON)", body = serde_json::Value),
        (status = 400, description = "The id is not a run id", body = ErrorView),
        (status = 401, response = super::openapi::RunNotPublic),
        (status = 404, description = "No such run, a run the caller may not read, or the step kept no transcript (not an llm step, or deleted by retention)", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, step)): Path<(String, String)>,
) -> ApiResult<Response> {
    let store = state.executor.store();
    let (id, _) = visible_run_in_path(store, &caller, &id, Role::Reader).await?;
    // Masked with every secret of the run, not only the step's own.
    let wall = state.executor.walls(String::new()).of_run(id).await?;
    let transcript =
        match transcripts::for_readers(store, &state.artifacts, id, &step, &wall).await? {
            Kept::Transcript(transcript) => transcript,
            Kept::None => {
                return Err(ApiError::not_found(format!(
                    "step '{}' of run {id} kept no transcript",
                    step.escape_debug()
                )))
            }
            Kept::Gone => {
                return Err(ApiError::not_found(format!(
                    "the transcript of step '{}' of run {id} was deleted (retention)",
                    step.escape_debug()
                )))
            }
        };
    let body = serde_json::to_vec(&transcript).map_err(anyhow::Error::from)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
