//! `/api/repos/...`, `/api/schedules` and `/api/tokens`: registering repositories, their
//! secrets, manual dispatch, the schedules' next fire times, and more API tokens.
//!
//! Invariants: webhook secrets, forge tokens and secret values go into the store sealed
//! and never come back out of the API; every body rejects unknown fields; every name in a
//! path or body is validated before it reaches the store or git.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::views::{Created, RepoView, ScheduleView, SecretView, TokenCreated};
use super::ApiState;
use crate::forge::Forge;
use crate::http_error::{ApiError, ApiResult};
use crate::registry::DispatchError;
use crate::store::{NewRepo, RepoRow};
use crate::tokens;

const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRepo {
    name: String,
    clone_url: String,
    forge: String,
    webhook_secret: String,
    api_url: Option<String>,
    api_token: Option<String>,
    default_branch: Option<String>,
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

fn check_clone_url(url: &str) -> ApiResult<()> {
    let remote = ["https://", "http://", "file://", "ssh://", "git@"]
        .iter()
        .any(|p| url.starts_with(p));
    if url.is_empty() || url.starts_with('-') || url.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("invalid clone_url '{url}'")));
    }
    if !remote && !std::path::Path::new(url).is_absolute() {
        return Err(ApiError::bad_request(format!(
            "invalid clone_url '{url}': expected https://, file:// or an absolute path"
        )));
    }
    Ok(())
}

/// Secret names as environment variables take them.
fn check_secret_name(name: &str) -> ApiResult<()> {
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

pub(super) async fn create_repo(
    State(state): State<ApiState>,
    body: Result<Json<CreateRepo>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<RepoView>)> {
    let Json(request) = body?;
    check_repo_name(&request.name)?;
    check_clone_url(&request.clone_url)?;
    let forge = Forge::parse(&request.forge).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown forge '{}': expected one of {}",
            request.forge,
            Forge::NAMES.join(", ")
        ))
    })?;
    if request.webhook_secret.trim().len() < 8 {
        return Err(ApiError::bad_request(
            "webhook_secret must be at least 8 characters",
        ));
    }
    if let Some(api_url) = &request.api_url {
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(ApiError::bad_request(format!(
                "invalid api_url '{api_url}': expected http(s)://"
            )));
        }
    }
    if let Some(branch) = &request.default_branch {
        crate::registry::git::check_ref(branch)
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
        })
        .await?
        .ok_or_else(|| {
            conflict(format!(
                "repository '{}' is already registered",
                request.name
            ))
        })?;
    if let Some(registry) = &state.registry {
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

pub(super) async fn list_repos(State(state): State<ApiState>) -> ApiResult<Json<Vec<RepoView>>> {
    let repos = state.executor.store().list_repos().await?;
    Ok(Json(repos.iter().map(RepoView::new).collect()))
}

async fn find_repo(state: &ApiState, owner: &str, name: &str) -> ApiResult<RepoRow> {
    let full = format!("{owner}/{name}");
    check_repo_name(&full)?;
    state
        .executor
        .store()
        .repo_by_name(&full)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no repository '{full}'")))
}

pub(super) async fn get_repo(
    State(state): State<ApiState>,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<RepoView>> {
    Ok(Json(RepoView::new(
        &find_repo(&state, &owner, &name).await?,
    )))
}

pub(super) async fn delete_repo(
    State(state): State<ApiState>,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<RepoView>> {
    let repo = find_repo(&state, &owner, &name).await?;
    let store = state.executor.store();
    // Running steps are stopped before their rows go.
    for run_id in store.active_runs_of_repo(repo.id).await? {
        state.executor.cancel(run_id).await?;
    }
    store.delete_repo(repo.id).await?;
    Ok(Json(RepoView::new(&repo)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PutSecret {
    value: String,
}

pub(super) async fn put_secret(
    State(state): State<ApiState>,
    Path((owner, name, secret)): Path<(String, String, String)>,
    body: Result<Json<PutSecret>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let repo = find_repo(&state, &owner, &name).await?;
    check_secret_name(&secret)?;
    let Json(body) = body?;
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
    let sealed = vault.seal(&body.value)?;
    state
        .executor
        .store()
        .put_secret(repo.id, &secret, &sealed)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn delete_secret(
    State(state): State<ApiState>,
    Path((owner, name, secret)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let repo = find_repo(&state, &owner, &name).await?;
    check_secret_name(&secret)?;
    if state
        .executor
        .store()
        .delete_secret(repo.id, &secret)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no secret '{secret}'")))
    }
}

pub(super) async fn list_secrets(
    State(state): State<ApiState>,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<SecretView>>> {
    let repo = find_repo(&state, &owner, &name).await?;
    let names = state.executor.store().secret_names(repo.id).await?;
    Ok(Json(
        names
            .into_iter()
            .map(|(name, updated_at)| SecretView { name, updated_at })
            .collect(),
    ))
}

pub(super) async fn repo_schedules(
    State(state): State<ApiState>,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<ScheduleView>>> {
    let repo = find_repo(&state, &owner, &name).await?;
    let rows = state.executor.store().schedules_of_repo(repo.id).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| ScheduleView::new(&repo.name, row))
            .collect(),
    ))
}

pub(super) async fn all_schedules(
    State(state): State<ApiState>,
) -> ApiResult<Json<Vec<ScheduleView>>> {
    let store = state.executor.store();
    let mut views = Vec::new();
    for repo in store.list_repos().await? {
        for row in store.schedules_of_repo(repo.id).await? {
            views.push(ScheduleView::new(&repo.name, row));
        }
    }
    views.sort_by_key(|v| v.next_fire_at);
    Ok(Json(views))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DispatchRequest {
    workflow: String,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, serde_json::Value>,
}

pub(super) async fn dispatch(
    State(state): State<ApiState>,
    Path((owner, name)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Result<Json<DispatchRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let repo = find_repo(&state, &owner, &name).await?;
    let Json(request) = body?;
    let Some(registry) = &state.registry else {
        return Err(ApiError::Client(
            StatusCode::NOT_IMPLEMENTED,
            "this engine has no evaluator".into(),
        ));
    };
    let git_ref = request
        .git_ref
        .or_else(|| repo.default_branch.clone())
        .unwrap_or_else(|| "HEAD".to_string());
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
        .dispatch(&repo, &request.workflow, &git_ref, &inputs)
        .await
    {
        Ok(run_id) => {
            let who = state.auth.identity(&headers).await?;
            state
                .executor
                .store()
                .record_triggerer(run_id, &who)
                .await?;
            Ok((StatusCode::CREATED, Json(Created { run_id })))
        }
        Err(DispatchError::NotFound(message)) => Err(ApiError::not_found(message)),
        Err(DispatchError::Rejected(message)) => {
            Err(ApiError::Client(StatusCode::UNPROCESSABLE_ENTITY, message))
        }
        Err(DispatchError::Internal(e)) => Err(ApiError::Internal(e)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateToken {
    name: String,
}

pub(super) async fn create_token(
    State(state): State<ApiState>,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let Json(request) = body?;
    let name = request.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "a token needs a name of 1 to 100 characters",
        ));
    }
    let token = tokens::new_token()?;
    let id = state
        .executor
        .store()
        .create_api_token(name, &tokens::hash_token(&token))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            id,
            name: name.to_string(),
            token,
        }),
    ))
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
}
