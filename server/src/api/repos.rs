//! `/api/repos/...` and `/api/schedules`: registering repositories, their settings, members
//! and secrets, manual dispatch, and the schedules' next fire times. (API tokens are
//! [`super::user_tokens`]'.)
//!
//! Invariants: webhook secrets, forge tokens and secret values go into the store sealed
//! and never come back out of the API; every body rejects unknown fields; every name in a
//! path or body is validated before it reaches the store or git. Who may: an installation
//! admin registers and removes repositories; a repository's readers read it and its
//! schedules, its writers dispatch, its maintainers change its settings, members and
//! secrets — a caller who may not read a repository gets the same 404 as for one that does
//! not exist ([`Caller::visible_repo`]); lists hold only what the caller may read. Every
//! change is in the audit trail (secret names, never values).
//!
//! Why one file past ~600 lines: the repository routes share one lookup-and-role check
//! (`find_repo`) and one set of views; each handler is short, and splitting by sub-resource
//! would spread that one check over files.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use plue_core::registry::DispatchError;
use plue_forge::Forge;
use plue_store::{NewRepo, RepoRow};
use serde::Deserialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{IntoParams, ToSchema};

use super::body::Object;
use super::views::{Created, ErrorView, MemberView, RepoView, ScheduleView, SecretView};
use super::{audit, audit_repo, triggerer, ApiState};
use crate::access::{Caller, Readable, Role};
use crate::http_error::{ApiError, ApiResult};

pub(super) const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRepo {
    /// `owner/name`: letters, digits, `-`, `_` and `.` (neither part `.` or `..`).
    #[schema(
        example = "octo/hello",
        pattern = r"^[A-Za-z0-9._-]{1,100}/[A-Za-z0-9._-]{1,100}$"
    )]
    name: String,
    /// `http(s)://` or `ssh://` with a host, `file://`, `git@host:path` or an absolute
    /// path.
    #[schema(schema_with = super::rules::clone_url)]
    clone_url: String,
    #[schema(value_type = ForgeName)]
    forge: String,
    /// The HMAC key of the forge's webhook deliveries, at least 8 characters (not counting
    /// surrounding spaces). Stored sealed, never shown again.
    #[schema(schema_with = super::rules::webhook_secret)]
    webhook_secret: String,
    /// The forge's API (`http(s)://`), for commit statuses.
    #[schema(schema_with = super::rules::api_url)]
    api_url: Option<String>,
    /// A token for the forge's API. Stored sealed, never shown again.
    api_token: Option<String>,
    /// The branch dispatch and schedules read by default.
    #[schema(schema_with = super::rules::default_branch)]
    default_branch: Option<String>,
}

/// The forges a repository can be on.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only a schema: requests carry the name, checked by `Forge::parse`
pub(super) enum ForgeName {
    Github,
    Gitea,
}

/// `{owner}/{name}` of a repository in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers take the segments as strings
pub(super) struct RepoPath {
    /// The repository's owner: letters, digits, `-`, `_` and `.` (not `.` or `..`).
    #[param(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "octo")]
    owner: String,
    /// The repository's name: letters, digits, `-`, `_` and `.` (not `.` or `..`).
    #[param(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "hello")]
    name: String,
}

/// A repository and one of its secrets in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers take the segments as strings
pub(super) struct SecretPath {
    /// The repository's owner.
    #[param(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "octo")]
    owner: String,
    /// The repository's name.
    #[param(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "hello")]
    name: String,
    /// The secret's name, as an environment variable takes it: letters, digits and `_`, not
    /// starting with a digit or `PLUE_`.
    #[param(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", example = "DEPLOY_KEY")]
    secret: String,
}

/// A repository and one of its members in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers take the segments as strings
pub(super) struct MemberPath {
    /// The repository's owner.
    #[param(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "octo")]
    owner: String,
    /// The repository's name.
    #[param(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "hello")]
    name: String,
    /// The user's name (any case).
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,38}$", example = "alice")]
    user: String,
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::Client(StatusCode::CONFLICT, message.into())
}

/// `owner/name`: two non-empty parts of letters, digits, `-`, `_` and `.`.
pub(crate) fn check_repo_name(name: &str) -> ApiResult<()> {
    let valid_part = |part: &str| {
        !part.is_empty()
            && part.len() <= 100
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match name.split_once('/') {
        Some((owner, repo)) if valid_part(owner) && valid_part(repo) => Ok(()),
        _ => Err(ApiError::bad_request(format!(
            "invalid repository name '{name}': expected owner/name"
        ))),
    }
}

// regression: api_url was only prefix-checked and clone_url refused only controls, so
// both stored newlines, escapes or bidi characters that the dashboard and `plue repo list`
// show, and the refusals echoed the raw URL. Both are clean one-line text now, and the
// messages show them escaped.
//
// regression: after the scheme any clean text was a URL, so `https://x[` (a host no URL
// parser reads: Python's `urlsplit` raises "Invalid IPv6 URL") was registered and crashed
// schemathesis reading it back. Both URLs now fit the grammar the document states, the
// handler compiling the document's own pattern (`rules::clone_url_pattern`,
// `rules::api_url_pattern`).
pub(super) fn check_clone_url(url: &str) -> ApiResult<()> {
    check_clean_url("clone_url", url)?;
    if !super::rules::is_clone_url(url) {
        return Err(ApiError::bad_request(format!(
            "invalid clone_url '{}': expected http(s):// or ssh:// with a host (a name, an \
             IPv4 address or a bracketed IPv6 address) and an optional port, file://, \
             git@host:path or an absolute path",
            evaluator::text::quote(url, 200)
        )));
    }
    Ok(())
}

pub(super) fn check_api_url(url: &str) -> ApiResult<()> {
    check_clean_url("api_url", url)?;
    if !super::rules::is_api_url(url) {
        return Err(ApiError::bad_request(format!(
            "invalid api_url '{}': expected http(s):// with a host (a name, an IPv4 address \
             or a bracketed IPv6 address) and an optional port",
            evaluator::text::quote(url, 200)
        )));
    }
    Ok(())
}

/// A repository URL is clean one-line text (no controls, bidi or invisible characters).
fn check_clean_url(field: &str, url: &str) -> ApiResult<()> {
    evaluator::text::check_clean_field(field, url, evaluator::text::TextKind::UserLine).map_err(
        |problem| {
            ApiError::bad_request(format!(
                "invalid {field} '{}': {problem}",
                evaluator::text::quote(url, 200)
            ))
        },
    )
}

/// Secret names as environment variables take them.
pub(super) fn check_secret_name(name: &str) -> ApiResult<()> {
    let mut chars = name.chars();
    let valid = name.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid && !name.starts_with("PLUE_") {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid secret name '{name}': letters, digits and _, not starting with a digit or PLUE_"
        )))
    }
}

#[utoipa::path(
    post,
    path = "/api/repos",
    tag = "repos",
    summary = "Register a repository",
    request_body = CreateRepo,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The registered repository (never its secrets); private until a maintainer makes its reads public", body = RepoView),
        (status = 400, description = "A malformed body or an invalid name, clone URL, forge, webhook secret, API URL or branch", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 409, description = "A repository of that name is already registered", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn create_repo(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Object<CreateRepo>, ApiError>,
) -> ApiResult<(StatusCode, Json<RepoView>)> {
    caller.require_admin()?;
    let Object(request) = body?;
    check_repo_name(&request.name)?;
    check_clone_url(&request.clone_url)?;
    let forge = Forge::parse(&request.forge).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown forge '{}': expected one of {}",
            request.forge,
            Forge::NAMES.join(", ")
        ))
    })?;
    if request.webhook_secret.trim().chars().count() < 8 {
        return Err(ApiError::bad_request(
            "webhook_secret must be at least 8 characters",
        ));
    }
    if let Some(api_url) = &request.api_url {
        check_api_url(api_url)?;
    }
    if let Some(branch) = &request.default_branch {
        plue_core::registry::git::check_ref(branch)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let vault = state.executor.vault();
    let webhook_secret = vault.seal_or_keep(&request.webhook_secret)?;
    let api_token = request
        .api_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| vault.seal_or_keep(t))
        .transpose()?;
    let created = state
        .executor
        .store()
        .create_repo(&NewRepo {
            name: &request.name,
            clone_url: &request.clone_url,
            forge: forge.as_str(),
            webhook_secret_sealed: &webhook_secret,
            api_url: request.api_url.as_deref(),
            api_token_sealed: api_token.as_deref(),
            default_branch: request.default_branch.as_deref(),
            forge_repo_id: None,
        })
        .await?
        .ok_or_else(|| {
            conflict(format!(
                "repository '{}' is already registered",
                request.name
            ))
        })?;
    let detail = serde_json::json!({ "name": created.name });
    let store = state.executor.store();
    audit_repo(store, &caller, "repo.create", created.id, detail).await?;
    if let Some(registry) = &state.registry {
        // A mirror left under this id is another repository's: it goes before any fetch.
        registry.forget_mirror(created.id).await?;
        // Schedules of the default branch, read in the background: a slow or unreachable
        // remote must not hold up registration.
        let registry = registry.clone();
        let repo = created.clone();
        tokio::spawn(async move {
            if let Err(e) = registry.sync_schedules(&repo).await {
                tracing::warn!(repository = %repo.name, "reading schedules: {e:#}");
            }
        });
    }
    Ok((StatusCode::CREATED, Json(RepoView::new(&created))))
}

#[utoipa::path(
    get,
    path = "/api/repos",
    tag = "repos",
    summary = "Registered repositories",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The registered repositories the caller may read (never their secrets)", body = Vec<RepoView>),
        (status = 401, response = super::openapi::InvalidToken),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list_repos(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<Vec<RepoView>>> {
    let repos = readable_repos(&state, &caller).await?;
    Ok(Json(repos.iter().map(RepoView::new).collect()))
}

/// The repositories `caller` may read, by name.
pub(super) async fn readable_repos(state: &ApiState, caller: &Caller) -> ApiResult<Vec<RepoRow>> {
    let store = state.executor.store();
    Ok(match caller.readable(store).await? {
        Readable::All => store.list_repos_in(None).await?,
        Readable::Repos(ids) => {
            let ids: Vec<i64> = ids.into_iter().collect();
            store.list_repos_in(Some(&ids)).await?
        }
    })
}

/// Repository `owner/name` when `caller` acts with at least `role` on it (404 alike when
/// there is none and when the caller may not read it; 403 when it reads but lacks `role`).
pub(super) async fn find_repo(
    state: &ApiState,
    caller: &Caller,
    owner: &str,
    name: &str,
    role: Role,
) -> ApiResult<RepoRow> {
    let full = format!("{owner}/{name}");
    check_repo_name(&full)?;
    caller
        .visible_repo(state.executor.store(), &full, role)
        .await
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}",
    tag = "repos",
    summary = "One registered repository",
    params(RepoPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The repository (never its secrets)", body = RepoView),
        (status = 400, description = "An invalid repository name", body = ErrorView),
        (status = 401, response = super::openapi::RepoNotPublic),
        (status = 404, description = "No such repository, or one the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn get_repo(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<RepoView>> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Reader).await?;
    let mut view = RepoView::new(&repo);
    view.cost_usd = state
        .executor
        .store()
        .repository_cost(repo.id)
        .await?
        .map(|micros| plue_core::pricing::usd(u64::try_from(micros).unwrap_or(0)));
    Ok(Json(view))
}

#[utoipa::path(
    delete,
    path = "/api/repos/{owner}/{name}",
    tag = "repos",
    summary = "Unregister a repository, cancelling its active runs",
    params(RepoPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The repository that was removed", body = RepoView),
        (status = 400, description = "An invalid repository name", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 404, description = "No such repository", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn delete_repo(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<RepoView>> {
    caller.require_admin()?;
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    let store = state.executor.store();
    // Running steps are stopped before their rows go.
    for run_id in store.active_runs_of_repo(repo.id).await? {
        state.executor.cancel(run_id).await?;
    }
    store.delete_repo(repo.id).await?;
    let detail = serde_json::json!({ "name": repo.name });
    audit_repo(store, &caller, "repo.delete", repo.id, detail).await?;
    if let Some(registry) = &state.registry {
        if let Err(e) = registry.forget_mirror(repo.id).await {
            tracing::warn!("deleting repository {}: {e:#}", repo.name);
        }
    }
    // Its runs' blob rows went with it, leaving their keys doomed: their objects go now
    // (or, should this fail, at the next sweep).
    if let Err(e) = state.artifacts.sweep_doomed(store).await {
        tracing::warn!("deleting the blobs of repository {}: {e:#}", repo.name);
    }
    Ok(Json(RepoView::new(&repo)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateRepo {
    /// Whether anyone, signed in or not, may read the repository's runs, logs, artifacts
    /// and schedules (never its secrets or settings).
    public_read: bool,
}

#[utoipa::path(
    patch,
    path = "/api/repos/{owner}/{name}",
    tag = "repos",
    summary = "Change a repository's settings (its public reads)",
    params(RepoPath),
    request_body = UpdateRepo,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The repository as it is now", body = RepoView),
        (status = 400, description = "An invalid repository name or a malformed body", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller reads the repository but is not its maintainer", body = ErrorView),
        (status = 404, description = "No such repository, or one the caller may not read", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn update_repo(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: Result<Object<UpdateRepo>, ApiError>,
) -> ApiResult<Json<RepoView>> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    let Object(request) = body?;
    let store = state.executor.store();
    store.set_public_read(repo.id, request.public_read).await?;
    let detail = serde_json::json!({ "public_read": request.public_read });
    audit_repo(store, &caller, "repo.settings", repo.id, detail).await?;
    let repo = store
        .repo_by_id(repo.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no repository {}", repo.name)))?;
    Ok(Json(RepoView::new(&repo)))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/members",
    tag = "repos",
    summary = "Who holds which role on a repository",
    params(RepoPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The members, by name", body = Vec<MemberView>),
        (status = 400, description = "An invalid repository name", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller reads the repository but is not its maintainer", body = ErrorView),
        (status = 404, description = "No such repository, or one the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list_members(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<MemberView>>> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    let members = state.executor.store().members_of(repo.id).await?;
    Ok(Json(
        members.into_iter().filter_map(MemberView::new).collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PutMember {
    /// The role to hold (replacing the one held).
    role: Role,
}

/// The user `name` names, for a member route: 404 when there is none, or (`enabled`) when
/// it is disabled — a disabled user is granted nothing, but its roles may be taken away.
async fn member_user(
    state: &ApiState,
    name: &str,
    enabled: bool,
) -> ApiResult<plue_store::UserRow> {
    let unknown = || ApiError::not_found(format!("no user '{}'", name.escape_debug()));
    if !plue_store::valid_name(name) {
        return Err(unknown());
    }
    state
        .executor
        .store()
        .user_by_name(name)
        .await?
        .filter(|user| !enabled || user.disabled_at.is_none())
        .ok_or_else(unknown)
}

#[utoipa::path(
    put,
    path = "/api/repos/{owner}/{name}/members/{user}",
    tag = "repos",
    summary = "Give a user a role on a repository",
    description = "A maintainer grants any role up to maintainer; the role replaces the one \
                   the user held.",
    params(MemberPath),
    request_body = PutMember,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The member as it is now", body = MemberView),
        (status = 400, description = "An invalid repository name or a malformed body", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller reads the repository but is not its maintainer", body = ErrorView),
        (status = 404, description = "No such repository or user, or a repository the caller may not read", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema (an unknown role)", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn put_member(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name, user)): Path<(String, String, String)>,
    body: Result<Object<PutMember>, ApiError>,
) -> ApiResult<Json<MemberView>> {
    // Maintainer is the highest role: holding it (an admin holds it everywhere) is what
    // granting any role up to it takes.
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    let Object(request) = body?;
    let store = state.executor.store();
    let member = member_user(&state, &user, true).await?;
    store
        .grant_role(repo.id, member.id, request.role.as_str())
        .await?;
    let detail =
        serde_json::json!({ "user": member.name, "user_id": member.id, "role": request.role });
    audit_repo(store, &caller, "role.grant", repo.id, detail).await?;
    Ok(Json(MemberView {
        user: member.name,
        role: request.role,
        granted_at: plue_store::now_ms(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/repos/{owner}/{name}/members/{user}",
    tag = "repos",
    summary = "Take a user's role on a repository away",
    params(MemberPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "An invalid repository name", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller reads the repository but is not its maintainer", body = ErrorView),
        (status = 404, description = "No such repository, user or member, or a repository the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn delete_member(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name, user)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    let member = member_user(&state, &user, false).await?;
    let store = state.executor.store();
    if !store.revoke_role(repo.id, member.id).await? {
        return Err(ApiError::not_found(format!(
            "'{}' holds no role on {}",
            member.name, repo.name
        )));
    }
    let detail = serde_json::json!({ "user": member.name, "user_id": member.id });
    audit_repo(store, &caller, "role.revoke", repo.id, detail).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PutSecret {
    /// At most 64 KiB. Stored sealed; never shown again.
    pub(super) value: String,
}

/// Secrets' names and when each was set, as the store lists them, for a list response.
pub(super) fn secret_views(names: Vec<(String, i64)>) -> Json<Vec<SecretView>> {
    Json(
        names
            .into_iter()
            .map(|(name, updated_at)| SecretView { name, updated_at })
            .collect(),
    )
}

/// The value a `PUT` of the secret `secret` sets, sealed, after the checks every secret
/// (a repository's or an environment's) passes: its name (400), the body (400/413/415/422),
/// the value's size (413) and a key to seal it with (409).
pub(super) fn sealed_secret(
    state: &ApiState,
    secret: &str,
    body: Result<Object<PutSecret>, ApiError>,
) -> ApiResult<String> {
    check_secret_name(secret)?;
    let Object(body) = body?;
    if body.value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::Client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a secret is at most {MAX_SECRET_BYTES} bytes"),
        ));
    }
    let vault = state.executor.vault();
    if !vault.is_keyed() {
        return Err(conflict(
            "secrets cannot be stored: start the server with PLUE_SECRET_KEY set",
        ));
    }
    Ok(vault.seal(&body.value)?)
}

#[utoipa::path(
    put,
    path = "/api/repos/{owner}/{name}/secrets/{secret}",
    tag = "repos",
    summary = "Set a repository's secret",
    params(SecretPath),
    request_body = PutSecret,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "An invalid repository or secret name, or a malformed body", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller reads the repository but is not its maintainer", body = ErrorView),
        (status = 404, description = "No such repository, or one the caller may not read", body = ErrorView),
        (status = 409, description = "The engine has no PLUE_SECRET_KEY to seal secrets with", body = ErrorView),
        (status = 413, description = "The body or the value is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn put_secret(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name, secret)): Path<(String, String, String)>,
    body: Result<Object<PutSecret>, ApiError>,
) -> ApiResult<StatusCode> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    let sealed = sealed_secret(&state, &secret, body)?;
    let store = state.executor.store();
    store.put_secret(repo.id, &secret, &sealed).await?;
    let detail = serde_json::json!({ "name": secret });
    audit_repo(store, &caller, "secret.put", repo.id, detail).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/api/repos/{owner}/{name}/secrets/{secret}",
    tag = "repos",
    summary = "Delete a repository's secret",
    params(SecretPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "An invalid repository or secret name", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller reads the repository but is not its maintainer", body = ErrorView),
        (status = 404, description = "No such repository or secret, or a repository the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn delete_secret(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name, secret)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    check_secret_name(&secret)?;
    let store = state.executor.store();
    if store.delete_secret(repo.id, &secret).await? {
        let detail = serde_json::json!({ "name": secret });
        audit_repo(store, &caller, "secret.delete", repo.id, detail).await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no secret '{secret}'")))
    }
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/secrets",
    tag = "repos",
    summary = "A repository's secret names (never their values)",
    params(RepoPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The secrets' names and when each was set", body = Vec<SecretView>),
        (status = 400, description = "An invalid repository name", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller reads the repository but is not its maintainer", body = ErrorView),
        (status = 404, description = "No such repository, or one the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list_secrets(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<SecretView>>> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    let names = state.executor.store().secret_names(repo.id).await?;
    Ok(secret_views(names))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/schedules",
    tag = "repos",
    summary = "A repository's schedules and their next fire times",
    params(RepoPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The repository's schedules", body = Vec<ScheduleView>),
        (status = 400, description = "An invalid repository name", body = ErrorView),
        (status = 401, response = super::openapi::RepoNotPublic),
        (status = 404, description = "No such repository, or one the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn repo_schedules(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<ScheduleView>>> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Reader).await?;
    let rows = state.executor.store().schedules_of_repo(repo.id).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| ScheduleView::new(&repo.name, row))
            .collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/schedules",
    tag = "repos",
    summary = "Every repository's schedules, soonest first",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The schedules of the repositories the caller may read, by next fire time", body = Vec<ScheduleView>),
        (status = 401, response = super::openapi::SignedInRead),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn all_schedules(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ScheduleView>>> {
    caller.require_signed_in()?;
    let store = state.executor.store();
    let mut views = Vec::new();
    for repo in readable_repos(&state, &caller).await? {
        for row in store.schedules_of_repo(repo.id).await? {
            views.push(ScheduleView::new(&repo.name, row));
        }
    }
    views.sort_by_key(|v| v.next_fire_at);
    Ok(Json(views))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DispatchRequest {
    /// The workflow file's path in the repository, or its plan's name.
    workflow: String,
    /// The branch, tag or commit (default: the repository's default branch, else `HEAD`).
    #[serde(rename = "ref")]
    #[schema(schema_with = super::rules::dispatch_ref)]
    git_ref: Option<String>,
    /// The manual inputs: strings, numbers or booleans (passed on as text).
    #[serde(default)]
    #[schema(schema_with = input_values)]
    inputs: BTreeMap<String, serde_json::Value>,
}

/// An object whose values are strings, numbers or booleans.
fn input_values() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(ObjectBuilder::new().schema_type(
                SchemaType::from_iter([Type::String, Type::Number, Type::Boolean]),
            )))
            .build(),
    )
}

#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/dispatch",
    tag = "repos",
    summary = "Run a repository's workflow by hand (its manual trigger)",
    params(RepoPath),
    request_body = DispatchRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new run", body = Created),
        (status = 400, description = "An invalid repository name or ref, a malformed body or an input that is not a string, number or boolean", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller reads the repository but lacks `writer` on it", body = ErrorView),
        (status = 404, description = "No such repository, ref or workflow, or a repository the caller may not read", body = ErrorView),
        (status = 409, description = "The repository's workflow at that ref refuses the dispatch (no manual trigger, an unknown, missing or invalid input, a file that does not evaluate), or the repository could not be fetched from its clone URL (the answer gives git's reason; the engine logs it at `warn`)", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
        (status = 501, description = "This engine has no evaluator", body = ErrorView),
    )
)]
pub(super) async fn dispatch(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: Result<Object<DispatchRequest>, ApiError>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Writer).await?;
    let Object(request) = body?;
    if let Some(git_ref) = &request.git_ref {
        // The document's pattern, before anything is fetched.
        plue_core::registry::git::check_ref(git_ref).map_err(|_| {
            ApiError::bad_request(format!(
                "'{}' is not a valid branch, tag or commit name",
                git_ref.escape_debug()
            ))
        })?;
    }
    let Some(registry) = &state.registry else {
        return Err(ApiError::Client(
            StatusCode::NOT_IMPLEMENTED,
            "this engine has no evaluator".into(),
        ));
    };
    let git_ref = match request.git_ref {
        Some(git_ref) => git_ref,
        // The default branch, learnt from the forge when not yet recorded: never `HEAD`.
        None => match registry.default_branch(&repo).await {
            Ok(branch) => branch,
            Err(refused) => return Err(dispatch_refused(refused)),
        },
    };
    let mut inputs = BTreeMap::new();
    for (key, value) in request.inputs {
        let text = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => value.to_string(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "input '{key}' must be a string, number or boolean, not {other}"
                )))
            }
        };
        inputs.insert(key, text);
    }
    match registry
        .dispatch(
            &repo,
            &request.workflow,
            &git_ref,
            &inputs,
            Some(triggerer(&caller)),
        )
        .await
    {
        Ok(run_id) => {
            let store = state.executor.store();
            let detail = serde_json::json!({ "workflow": request.workflow, "ref": git_ref });
            audit(
                store,
                &caller,
                "run.dispatch",
                Some(repo.id),
                Some(run_id),
                detail,
            )
            .await?;
            Ok((StatusCode::CREATED, Json(Created { run_id })))
        }
        Err(refused) => Err(dispatch_refused(refused)),
    }
}

/// A refused dispatch as the API answers it. What the repository holds decides the rest,
/// so both are 409s for a request the document allows: the workflow at that ref refusing
/// it (its manual trigger's inputs are in no schema the document could state), and a
/// repository that cannot be fetched — the repository as registered (its clone URL, its
/// forge's answer) does not let it be read now, a fault of the repository, not the engine,
/// so no 5xx (the registry logs git's reason at `warn`).
pub(crate) fn dispatch_refused(refused: DispatchError) -> ApiError {
    match refused {
        DispatchError::NotFound(message) => ApiError::not_found(message),
        DispatchError::Rejected(message) => ApiError::Client(StatusCode::CONFLICT, message),
        DispatchError::Unavailable(message) | DispatchError::Moved(message) => {
            ApiError::Client(StatusCode::CONFLICT, message)
        }
        DispatchError::Internal(e) => ApiError::Internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["octo/hello", "a-b/c.d_e"] {
            assert!(check_repo_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "octo", "octo/", "/x", "a/b/c", "../x", "a/..", "a b/c", "a/-\n",
        ] {
            assert!(check_repo_name(bad).is_err(), "{bad}");
        }
        for good in ["TOKEN", "_x", "A1_B"] {
            assert!(check_secret_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "PLUE_X", "a b"] {
            assert!(check_secret_name(bad).is_err(), "{bad}");
        }
        for good in ["https://x/y.git", "file:///srv/r", "/srv/r"] {
            assert!(check_clone_url(good).is_ok(), "{good}");
        }
        for bad in ["", "-u", "relative/path", "https://x/\ny"] {
            assert!(check_clone_url(bad).is_err(), "{bad}");
        }
    }

    fn message_of(error: ApiError) -> String {
        match error {
            ApiError::Client(_, message) => message,
            ApiError::Internal(e) => panic!("internal: {e}"),
        }
    }

    // The attack (issue 30): URLs that print as other text in the dashboard and in `plue
    // repo list` (a newline, an escape sequence, bidi or invisible characters), and
    // refusals that echoed them raw.
    #[test]
    fn repository_urls_are_clean_and_refusals_escape_them() {
        for hidden in [
            "\n", "\x1b[2J", "\u{202e}", "\u{2066}", "\u{200b}", "\u{2028}",
        ] {
            let url = format!("https://forge.example/api{hidden}v1");
            for refused in [check_api_url(&url), check_clone_url(&url)] {
                let message = message_of(refused.unwrap_err());
                assert!(message.contains("at character 26"), "{message}");
                assert!(!message.contains(hidden), "escaped: {message:?}");
            }
        }
        let message = message_of(check_api_url("ftp://x\x1b").unwrap_err());
        assert!(!message.contains('\x1b'), "{message:?}");
        let message = message_of(check_clone_url("relative\x1b").unwrap_err());
        assert!(!message.contains('\x1b'), "{message:?}");
        assert!(check_api_url("https://forge.example/api/v1").is_ok());
        assert!(check_clone_url("git@forge.example:o/r.git").is_ok());
    }
}
