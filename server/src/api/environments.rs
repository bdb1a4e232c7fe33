//! `/api/repos/{owner}/{name}/environments[/{env}[/secrets[/{secret}]]]`: a repository's
//! environments (`prod`, `staging`) and their secrets, managed by its maintainers.
//!
//! Invariants: only a maintainer of the repository (or an admin) creates, changes or
//! deletes an environment or its secrets; readers see the settings and the secrets'
//! names, never a value (values are sealed with the vault on the way in and only the
//! executor opens them, for a step that passed the environment's gate). Every change is
//! in the audit trail (`environment.put`, `environment.delete`,
//! `environment.secret.put`, `environment.secret.delete`). Every name is validated
//! before it reaches the store: environment names as the evaluator checks
//! `environment=` ([`evaluator::validate::is_environment_name`]), allowed refs as branch
//! globs in the syntax the OpenAPI document states ([`super::rules::is_branch_glob`]),
//! reviewers as user names or `@group`s.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use plue_store::{valid_name, EnvironmentRow, EnvironmentSettings, RepoRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::body::Object;
use super::repos::{check_secret_name, find_repo, sealed_secret, secret_views, PutSecret};
use super::views::{ErrorView, SecretView};
use super::{audit_repo, ApiState};
use crate::access::{Caller, Role};
use crate::http_error::{ApiError, ApiResult};

/// The longest wait timer: 30 days, as GitHub's.
const MAX_WAIT_TIMER_S: u64 = 30 * 24 * 3600;
/// At most this many allowed refs and reviewers each.
const MAX_ITEMS: usize = 100;

/// A repository's environment.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EnvironmentView {
    pub name: String,
    /// Globs over branch names whose runs may use it (`*` stops at `/`, `**` does not); a
    /// pull request's run is judged by its head branch.
    pub allowed_refs: Vec<String>,
    /// User names and `@group`s; one of them must approve each step that uses it.
    pub reviewers: Vec<String>,
    /// Seconds between the review (or the step becoming ready) and the step's dispatch.
    pub wait_timer_s: i64,
    /// The run's triggerer may not review it.
    pub prevent_self_review: bool,
    /// Steps of untrusted runs (a pull request from a fork, an event the engine caused) may
    /// use it after its review, for OpenID Connect tokens that say they are untrusted;
    /// never for its secrets.
    pub untrusted_id_tokens: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl EnvironmentView {
    fn new(row: EnvironmentRow) -> EnvironmentView {
        EnvironmentView {
            name: row.name,
            allowed_refs: row.settings.allowed_refs,
            reviewers: row.settings.reviewers,
            wait_timer_s: row.settings.wait_timer_s,
            prevent_self_review: row.settings.prevent_self_review,
            untrusted_id_tokens: row.settings.untrusted_id_tokens,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// What `PUT .../environments/{env}` sets (the whole environment: what is left out takes
/// its default).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PutEnvironment {
    /// Globs over branch names, e.g. `["main", "release/*"]`; at most 100. Empty: no run
    /// may use the environment.
    #[schema(schema_with = allowed_refs_schema)]
    allowed_refs: Vec<String>,
    /// User names and `@group`s, at most 100; empty: no review.
    #[serde(default)]
    #[schema(max_items = 100, example = json!(["alice", "@release"]))]
    reviewers: Vec<String>,
    /// Seconds, at most 2592000 (30 days). Default 0.
    #[serde(default)]
    #[schema(maximum = 2592000)]
    wait_timer_s: u64,
    /// Default true.
    #[serde(default = "default_true")]
    prevent_self_review: bool,
    /// Let steps of untrusted runs (a pull request from a fork, an event the engine caused)
    /// use the environment after its review, for OpenID Connect tokens that say they are
    /// untrusted — never its secrets. Needs `reviewers`. Default false.
    #[serde(default)]
    untrusted_id_tokens: bool,
}

fn default_true() -> bool {
    true
}

fn allowed_refs_schema() -> utoipa::openapi::schema::Schema {
    super::rules::branch_globs(MAX_ITEMS)
}

/// A repository and one of its environments in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers take the segments as strings
pub(super) struct EnvironmentPath {
    /// The repository's owner.
    #[param(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "octo")]
    owner: String,
    /// The repository's name.
    #[param(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "hello")]
    name: String,
    /// The environment's name (case-insensitive).
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", example = "prod")]
    env: String,
}

/// A repository, one of its environments and one of its secrets in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers take the segments as strings
pub(super) struct EnvironmentSecretPath {
    /// The repository's owner.
    #[param(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "octo")]
    owner: String,
    /// The repository's name.
    #[param(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "hello")]
    name: String,
    /// The environment's name (case-insensitive).
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", example = "prod")]
    env: String,
    /// The secret's name, as an environment variable takes it.
    #[param(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", example = "DEPLOY_KEY")]
    secret: String,
}

fn check_environment_name(name: &str) -> ApiResult<()> {
    if evaluator::validate::is_environment_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid environment name '{}': use 1 to 64 letters, digits, '.', '_' and '-', starting with a letter or digit",
            name.escape_debug()
        )))
    }
}

/// The environment `env` of `repo`, or 404.
async fn environment(state: &ApiState, repo: &RepoRow, env: &str) -> ApiResult<EnvironmentRow> {
    check_environment_name(env)?;
    state
        .executor
        .store()
        .environment(repo.id, env)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no environment '{env}' in {}", repo.name)))
}

/// The settings a body asks for, checked.
fn settings(body: PutEnvironment) -> ApiResult<EnvironmentSettings> {
    if body.allowed_refs.len() > MAX_ITEMS || body.reviewers.len() > MAX_ITEMS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_ITEMS} allowed_refs and {MAX_ITEMS} reviewers"
        )));
    }
    for pattern in &body.allowed_refs {
        // The document's syntax first: it is a part of what compiles, so a glob the
        // document allows is never refused below.
        let compiled = if super::rules::is_branch_glob(pattern) {
            evaluator::glob::compile(pattern)
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            Err(format!(
                "use 1 to {} characters a branch name may hold, `*`, `**`, `?`, classes \
                 `[a-z]`/`[!0-9]` and `{{a,b}}` (GET /api/openapi.json states the syntax)",
                super::rules::MAX_GLOB_CHARS
            ))
        };
        compiled.map_err(|e| {
            ApiError::bad_request(format!(
                "allowed_refs: '{}' is not a branch glob: {e}",
                pattern.escape_debug()
            ))
        })?;
    }
    for reviewer in &body.reviewers {
        let name = reviewer.strip_prefix('@').unwrap_or(reviewer);
        if !valid_name(name) {
            return Err(ApiError::bad_request(format!(
                "reviewers: '{}' is neither a user name nor an @group",
                reviewer.escape_debug()
            )));
        }
    }
    if body.wait_timer_s > MAX_WAIT_TIMER_S {
        return Err(ApiError::bad_request(format!(
            "wait_timer_s is at most {MAX_WAIT_TIMER_S} (30 days), got {}",
            body.wait_timer_s
        )));
    }
    if body.untrusted_id_tokens && body.reviewers.is_empty() {
        return Err(ApiError::bad_request(
            "untrusted_id_tokens needs reviewers: a step of an untrusted run gets a token only              after one of them approved it",
        ));
    }
    Ok(EnvironmentSettings {
        allowed_refs: body.allowed_refs,
        reviewers: body.reviewers,
        wait_timer_s: body.wait_timer_s as i64,
        prevent_self_review: body.prevent_self_review,
        untrusted_id_tokens: body.untrusted_id_tokens,
    })
}

/// Records that `caller` did `action` (`environment.secret.put` or `.delete`) on the
/// secret `secret` of `environment` in `repo`.
async fn audit_secret(
    state: &ApiState,
    caller: &Caller,
    action: &str,
    repo: &RepoRow,
    environment: &EnvironmentRow,
    secret: &str,
) -> ApiResult<()> {
    let detail = serde_json::json!({"environment": environment.name, "secret": secret});
    audit_repo(state.executor.store(), caller, action, repo.id, detail).await?;
    Ok(())
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/environments",
    tag = "environments",
    operation_id = "list_environments",
    summary = "A repository's environments",
    params(super::repos::RepoPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The environments, by name", body = Vec<EnvironmentView>),
        (status = 400, description = "An invalid repository name", body = ErrorView),
        (status = 401, response = super::openapi::RepoNotPublic),
        (status = 404, description = "No such repository, or one the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<EnvironmentView>>> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Reader).await?;
    let rows = state.executor.store().environments(repo.id).await?;
    Ok(Json(rows.into_iter().map(EnvironmentView::new).collect()))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/environments/{env}",
    tag = "environments",
    operation_id = "get_environment",
    summary = "One environment of a repository",
    params(EnvironmentPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The environment", body = EnvironmentView),
        (status = 400, description = "An invalid repository or environment name", body = ErrorView),
        (status = 401, response = super::openapi::RepoNotPublic),
        (status = 404, description = "No such repository or environment, or a repository the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name, env)): Path<(String, String, String)>,
) -> ApiResult<Json<EnvironmentView>> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Reader).await?;
    Ok(Json(EnvironmentView::new(
        environment(&state, &repo, &env).await?,
    )))
}

#[utoipa::path(
    put,
    path = "/api/repos/{owner}/{name}/environments/{env}",
    tag = "environments",
    operation_id = "put_environment",
    summary = "Create or replace an environment (maintainers)",
    params(EnvironmentPath),
    request_body = PutEnvironment,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The environment as stored (its secrets kept when it existed)", body = EnvironmentView),
        (status = 400, description = "An invalid repository or environment name, allowed ref, reviewer or wait timer, or a malformed body", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller is not a maintainer of the repository", body = ErrorView),
        (status = 404, description = "No such repository, or one the caller may not read", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn put(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name, env)): Path<(String, String, String)>,
    body: Result<Object<PutEnvironment>, ApiError>,
) -> ApiResult<Json<EnvironmentView>> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    check_environment_name(&env)?;
    let Object(body) = body?;
    let settings = settings(body)?;
    let store = state.executor.store();
    let row = store.put_environment(repo.id, &env, &settings).await?;
    let detail = serde_json::json!({"environment": row.name, "settings": settings});
    audit_repo(store, &caller, "environment.put", repo.id, detail).await?;
    Ok(Json(EnvironmentView::new(row)))
}

#[utoipa::path(
    delete,
    path = "/api/repos/{owner}/{name}/environments/{env}",
    tag = "environments",
    operation_id = "delete_environment",
    summary = "Delete an environment and its secrets (maintainers)",
    params(EnvironmentPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted; steps naming it fail from now on"),
        (status = 400, description = "An invalid repository or environment name", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller is not a maintainer of the repository", body = ErrorView),
        (status = 404, description = "No such repository or environment, or a repository the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name, env)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    check_environment_name(&env)?;
    let store = state.executor.store();
    if !store.delete_environment(repo.id, &env).await? {
        return Err(ApiError::not_found(format!(
            "no environment '{env}' in {}",
            repo.name
        )));
    }
    let detail = serde_json::json!({"environment": env});
    audit_repo(store, &caller, "environment.delete", repo.id, detail).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/environments/{env}/secrets",
    tag = "environments",
    operation_id = "list_environment_secrets",
    summary = "An environment's secret names (never their values)",
    params(EnvironmentPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The secrets' names and when each was set", body = Vec<SecretView>),
        (status = 400, description = "An invalid repository or environment name", body = ErrorView),
        (status = 401, response = super::openapi::RepoNotPublic),
        (status = 404, description = "No such repository or environment, or a repository the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list_secrets(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name, env)): Path<(String, String, String)>,
) -> ApiResult<Json<Vec<SecretView>>> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Reader).await?;
    let environment = environment(&state, &repo, &env).await?;
    let names = state
        .executor
        .store()
        .environment_secret_names(environment.id)
        .await?;
    Ok(secret_views(names))
}

#[utoipa::path(
    put,
    path = "/api/repos/{owner}/{name}/environments/{env}/secrets/{secret}",
    tag = "environments",
    operation_id = "put_environment_secret",
    summary = "Set an environment's secret (maintainers)",
    params(EnvironmentSecretPath),
    request_body = PutSecret,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "An invalid repository, environment or secret name, or a malformed body", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller is not a maintainer of the repository", body = ErrorView),
        (status = 404, description = "No such repository or environment, or a repository the caller may not read", body = ErrorView),
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
    Path((owner, name, env, secret)): Path<(String, String, String, String)>,
    body: Result<Object<PutSecret>, ApiError>,
) -> ApiResult<StatusCode> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    let environment = environment(&state, &repo, &env).await?;
    let sealed = sealed_secret(&state, &secret, body)?;
    let store = state.executor.store();
    store
        .put_environment_secret(environment.id, &secret, &sealed)
        .await?;
    audit_secret(
        &state,
        &caller,
        "environment.secret.put",
        &repo,
        &environment,
        &secret,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/api/repos/{owner}/{name}/environments/{env}/secrets/{secret}",
    tag = "environments",
    operation_id = "delete_environment_secret",
    summary = "Delete an environment's secret (maintainers)",
    params(EnvironmentSecretPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "An invalid repository, environment or secret name", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller is not a maintainer of the repository", body = ErrorView),
        (status = 404, description = "No such repository, environment or secret, or a repository the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn delete_secret(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name, env, secret)): Path<(String, String, String, String)>,
) -> ApiResult<StatusCode> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Maintainer).await?;
    let environment = environment(&state, &repo, &env).await?;
    check_secret_name(&secret)?;
    let store = state.executor.store();
    if !store
        .delete_environment_secret(environment.id, &secret)
        .await?
    {
        return Err(ApiError::not_found(format!(
            "no secret '{secret}' in environment '{}'",
            environment.name
        )));
    }
    audit_secret(
        &state,
        &caller,
        "environment.secret.delete",
        &repo,
        &environment,
        &secret,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(allowed: &[&str], reviewers: &[&str], wait: u64) -> PutEnvironment {
        PutEnvironment {
            allowed_refs: allowed.iter().map(|s| s.to_string()).collect(),
            reviewers: reviewers.iter().map(|s| s.to_string()).collect(),
            wait_timer_s: wait,
            prevent_self_review: true,
            untrusted_id_tokens: false,
        }
    }

    #[test]
    fn settings_are_checked_before_they_are_stored() {
        let ok = settings(body(&["main", "release/*"], &["alice", "@release"], 60)).unwrap();
        assert_eq!(ok.wait_timer_s, 60);
        assert!(settings(body(&[""], &[], 0)).is_err());
        assert!(settings(body(&["main"], &["al ice"], 0)).is_err());
        assert!(settings(body(&["main"], &["@"], 0)).is_err());
        assert!(settings(body(&["main"], &[], MAX_WAIT_TIMER_S + 1)).is_err());
        // Untrusted runs' tokens need somebody to review each step.
        let unreviewed = PutEnvironment {
            untrusted_id_tokens: true,
            ..body(&[], &[], 0)
        };
        assert!(settings(unreviewed).is_err());
        let reviewed = PutEnvironment {
            untrusted_id_tokens: true,
            ..body(&[], &["alice"], 0)
        };
        assert!(settings(reviewed).unwrap().untrusted_id_tokens);
        assert!(check_environment_name("prod").is_ok());
        assert!(check_environment_name("../prod").is_err());
    }

    #[test]
    fn prevent_self_review_defaults_to_true() {
        let body: PutEnvironment = serde_json::from_str(r#"{"allowed_refs": ["main"]}"#).unwrap();
        assert!(body.prevent_self_review);
        assert!(body.reviewers.is_empty());
        assert!(serde_json::from_str::<PutEnvironment>(r#"{"allowed_refs": [], "x": 1}"#).is_err());
    }
}
