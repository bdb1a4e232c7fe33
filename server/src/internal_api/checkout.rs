//! `GET /internal/attempts/{id}/checkout`: the commit a runner's attempt checks out, as a
//! pack made from the engine's mirror (`plue_core::registry::checkout_packs`), so the
//! runner need not fetch it from the forge.
//!
//! Invariants:
//! - The request is the runner's own, for an attempt it holds that is still claimed or
//!   running (401/403/404/409 otherwise, as the other attempt endpoints).
//! - The commit and the repository come from the attempt's run (its stored workspace and
//!   repository), never from the request: a runner gets exactly the commit its step was
//!   going to fetch, and nothing else of the mirror.
//! - Only a checkout from the repository's own clone URL is served, as only that one gets
//!   the repository's credential (`plue_core::attempts::checkout`): a fork's pull request
//!   fetches from the fork, whatever the mirror holds.
//! - Anything the engine does not serve (a run of no repository, a workspace that is no
//!   checkout, a commit the mirror lacks, a pack too large, no mirrors at all) is `404`
//!   with the reason: the runner then fetches from the forge.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use plue_types::protocol::WorkspaceSource;

use super::{authenticate, owned_attempt_id, InternalState};
use crate::http_error::{ApiError, ApiResult};

pub(super) fn routes() -> Router<InternalState> {
    Router::new().route("/internal/attempts/{id}/checkout", get(checkout))
}

async fn checkout(
    State(state): State<InternalState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let runner = authenticate(&state, &headers).await?;
    let Path(raw_id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (attempt_id, owner) = owned_attempt_id(&state, &runner, &raw_id).await?;
    let store = state.executor.store();
    if !store.attempt_is_live(attempt_id).await? {
        return Err(ApiError::Client(
            StatusCode::CONFLICT,
            format!("attempt {attempt_id} has ended; its checkout is no longer served"),
        ));
    }
    let not_served = |why: &str| ApiError::not_found(format!("not served by the engine: {why}"));
    let Some(packs) = &state.checkouts else {
        return Err(not_served(
            "this engine serves no checkouts (no mirrors, or --checkouts-from-forge)",
        ));
    };
    let Some(repo_id) = store.run(owner.run_id).await?.and_then(|run| run.repo_id) else {
        return Err(not_served("the run is of no repository"));
    };
    let repo = store
        .repo_by_id(repo_id)
        .await?
        .ok_or_else(|| not_served("the run's repository is gone"))?;
    let documents = store
        .run_documents(owner.run_id)
        .await?
        .ok_or_else(|| not_served("the run has no workspace"))?;
    let workspace: WorkspaceSource = serde_json::from_str(&documents.workspace)
        .map_err(|e| anyhow::anyhow!("stored workspace of run {}: {e}", owner.run_id))?;
    let WorkspaceSource::Git { sha, url, .. } = workspace else {
        return Err(not_served("the workspace is not a checkout"));
    };
    if url != repo.clone_url {
        return Err(not_served(
            "the checkout is not from the repository's own URL",
        ));
    }
    let pack = packs
        .pack(repo_id, &sha)
        .await
        .map_err(|e| anyhow::anyhow!("the checkout of attempt {attempt_id}: {e:#}"))?
        .ok_or_else(|| not_served("the mirror does not hold the commit, or it is too large"))?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-git-packed-objects")],
        pack,
    )
        .into_response())
}
