//! `GET /api/repos/{owner}/{name}/caches`: a repository's step cache entries, the most
//! recently used first, each with the trust partition that saved it, the run that saved
//! it, who caused that run and the trust it was written under.
//!
//! Invariants: readable by whoever may read the repository (a reader, a maintainer, an
//! admin; anyone for a public repository), a 404 like a missing repository for anyone
//! else; read only, and bounded ([`MAX_LISTED`]): entries are deleted by eviction and
//! retention, never through the API.

use axum::extract::{Path, State};
use axum::Json;
use plue_store::{cache_scope, CacheEntryRow};
use serde::Serialize;
use utoipa::ToSchema;

use super::repos::{find_repo, RepoPath};
use super::views::ErrorView;
use super::ApiState;
use crate::access::{Caller, Role};
use crate::http_error::ApiResult;

/// The most entries one answer lists.
const MAX_LISTED: i64 = 1000;

/// A repository's cache entry.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CacheEntryView {
    pub id: i64,
    /// The cache's name, as the step declares it.
    pub name: String,
    pub key: String,
    /// The trust partition of the run that saved it (`protected`, `default`,
    /// `branch:<name>`, `pull:<number>`, `fork:<owner/name>`, `agents`, `agents:<login>`,
    /// `untrusted`).
    pub partition: String,
    /// The trust it was written under: `trusted` (secrets given, the causer's own code or
    /// words), `relayed` (secrets given by a trusted summoner, on another's words),
    /// `outsider` (secrets withheld). A run restores nothing of a lower trust.
    pub trust: String,
    /// Who caused the run that saved it, as recorded with the run (`github:alice`, a
    /// user's name, `schedule`); null when nobody was recorded.
    #[schema(required = true)]
    pub causer: Option<String>,
    /// `sha256:<hex>` of its archive, computed by the engine when it was saved.
    pub digest: String,
    pub size: i64,
    /// The run that saved it.
    #[schema(required = true)]
    pub run_id: Option<i64>,
    pub created_at: i64,
    /// When a run last restored it (or when it was saved).
    pub last_used_at: i64,
}

impl CacheEntryView {
    fn new(row: CacheEntryRow) -> CacheEntryView {
        CacheEntryView {
            id: row.id,
            name: row.name,
            key: row.key,
            partition: row.partition_name,
            trust: row.trust,
            causer: row.causer,
            digest: row.digest,
            size: row.size,
            run_id: row.run_id,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/caches",
    tag = "repos",
    summary = "A repository's step cache entries, the most recently used first",
    params(RepoPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "At most 1000 entries, the most recently used first", body = Vec<CacheEntryView>),
        (status = 400, description = "An invalid repository name", body = ErrorView),
        (status = 401, response = super::openapi::RepoNotPublic),
        (status = 404, description = "No such repository, or one the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list_caches(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<CacheEntryView>>> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Reader).await?;
    let rows = state
        .executor
        .store()
        .cache_entries_of(&cache_scope(Some(repo.id)), MAX_LISTED)
        .await?;
    Ok(Json(rows.into_iter().map(CacheEntryView::new).collect()))
}
