//! `POST /api/runs/{id}/rerun?failed=true`: "re-run failed steps" — a new run of the run's
//! plan in which its succeeded and skipped steps are carried over (with their outputs and
//! files) and only its failed and cancelled steps, and the steps after them, run again
//! (`plue_core::executor::reruns`). The route itself is the re-run's (`super::rerun`), which
//! checks `writer` on the run's repository before it comes here.
//!
//! Invariants: only a final run with at least one step that did not succeed is re-run
//! this way (409 otherwise, saying why); the re-run is audited as `run.rerun` with
//! `failed_only` in its detail.

use axum::http::StatusCode;
use axum::Json;
use plue_core::executor::reruns::RerunFailed;
use plue_store::RunRow;
use serde::Deserialize;
use utoipa::IntoParams;

use super::views::Created;
use super::{audit, triggerer, ApiState};
use crate::access::Caller;
use crate::http_error::{ApiError, ApiResult};

/// How much of the run runs again.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RerunQuery {
    /// `true`: only the failed and cancelled steps and the steps after them run again; the
    /// others are carried over from this run with their outputs and files (the run must be
    /// final). `false` (the default): every step runs again.
    #[serde(default)]
    pub(super) failed: bool,
}

/// The answer to a re-run of `run` by `caller` that started `run_id`, audited as
/// `run.rerun` with `detail`.
pub(super) async fn started(
    state: &ApiState,
    caller: &Caller,
    run: &RunRow,
    run_id: i64,
    detail: serde_json::Value,
) -> ApiResult<Json<Created>> {
    let store = state.executor.store();
    audit(
        store,
        caller,
        "run.rerun",
        run.repo_id,
        Some(run_id),
        detail,
    )
    .await?;
    Ok(Json(Created { run_id }))
}

/// Refuses a re-run of a run of a repository whose name now names another repository on
/// its forge (409, like a dispatch): the re-run would hand the old repository's secrets to
/// whoever holds the name now. A local run (no repository) or an engine without a registry
/// has nothing to confirm.
pub(super) async fn confirm_repository(state: &ApiState, run: &RunRow) -> ApiResult<()> {
    let (Some(registry), Some(repo_id)) = (&state.registry, run.repo_id) else {
        return Ok(());
    };
    let Some(repo) = state.executor.store().repo_by_id(repo_id).await? else {
        return Ok(());
    };
    registry
        .confirm_repository(&repo)
        .await
        .map_err(super::repos::dispatch_refused)
}

/// The failed-steps re-run of `run` (which `caller` may write), audited.
pub(super) async fn failed(
    state: &ApiState,
    caller: &Caller,
    run: &RunRow,
) -> ApiResult<Json<Created>> {
    let id = run.id;
    let conflict = |message: String| ApiError::Client(StatusCode::CONFLICT, message);
    match state
        .executor
        .rerun_failed(id, Some(&triggerer(caller)))
        .await?
    {
        RerunFailed::Started(run_id) => {
            let detail = serde_json::json!({ "rerun_of": id, "failed_only": true });
            started(state, caller, run, run_id, detail).await
        }
        RerunFailed::NoSuchRun => Err(ApiError::not_found(format!("no run {id}"))),
        RerunFailed::NotFinal(status) => Err(conflict(format!(
            "run {id} is {status}: its failed steps can be re-run once it has ended"
        ))),
        RerunFailed::NothingFailed => Err(conflict(format!(
            "run {id} has no failed or cancelled step to re-run (re-run it whole instead)"
        ))),
    }
}
