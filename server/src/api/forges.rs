//! `GET /api/forges`: who the engine is on each repository's forge — the account its
//! `api_token` writes as (`GET /user` of the forge), no token, or why the forge could not
//! say. An engine that cannot say trusts nothing that might be its own on that repository:
//! every push and pull request runs like a fork's and no issue or comment summons a run
//! (`plue_core::registry::summon`), so this is where an operator learns why.
//!
//! Invariants: only the repositories the caller may read are listed (as `GET /api/repos`);
//! the forge is asked at most as often as events ask it (the registry's cache: a minute for
//! an answer, a few seconds for a failure) and at most [`AT_ONCE`] repositories at a time;
//! no token, and no credential of a URL, is ever shown.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use futures::StreamExt;

use super::repos::readable_repos;
use super::views::{ErrorView, ForgeIdentityView};
use super::ApiState;
use crate::access::Caller;
use crate::http_error::{ApiError, ApiResult};

/// The most forges asked at once by one request.
const AT_ONCE: usize = 8;

#[utoipa::path(
    get,
    path = "/api/forges",
    tag = "repos",
    summary = "Who the engine is on each repository's forge",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "For each repository the caller may read: whether the engine knows the forge account its token writes as, that login, or why not (then every push and pull request runs like a fork's and no issue or comment summons a run)", body = Vec<ForgeIdentityView>),
        (status = 401, response = super::openapi::InvalidToken),
        (status = 500, response = super::openapi::EngineFailed),
        (status = 501, description = "This engine handles no forge events", body = ErrorView),
    )
)]
pub(super) async fn list_forges(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ForgeIdentityView>>> {
    let repos = readable_repos(&state, &caller).await?;
    let Some(registry) = &state.registry else {
        return Err(ApiError::Client(
            StatusCode::NOT_IMPLEMENTED,
            "this engine handles no forge events".into(),
        ));
    };
    let lookups = repos.into_iter().map(|repo| {
        let registry = registry.clone();
        async move {
            let identity = registry.engine_identity(&repo).await;
            ForgeIdentityView::new(&repo, &identity)
        }
    });
    let views = futures::stream::iter(lookups)
        .buffered(AT_ONCE)
        .collect()
        .await;
    Ok(Json(views))
}
