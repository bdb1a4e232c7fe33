//! `/api/runner-tokens`: scoped registration tokens for runners an operator starts —
//! making one (shown once), listing them, revoking one.
//!
//! Invariants: every route needs an installation admin (a scoped token decides which
//! steps and secrets a runner may be handed, so no repository role is enough); tokens are
//! stored hashed and never come back; making and revoking one is in the audit trail;
//! revoking a token also retires the live runners registered with it and fails their
//! attempts.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use plue_core::executor::Report;
use plue_pool::scope;
use plue_store::{now_ms, NewRunnerToken, RunnerTokenKind};
use plue_types::protocol::Outcome;
use plue_vault::tokens;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::body::Object;
use super::views::{ErrorView, RunnerTokenCreated, RunnerTokenRevoked, RunnerTokenView};
use super::{audit_installation, parse_positive_id, ApiState};
use crate::access::Caller;
use crate::http_error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRunnerToken {
    /// What the token is for: 1 to 100 characters, not blank, no control, bidi, invisible
    /// (format) or line-separator characters.
    #[schema(schema_with = super::rules::token_name)]
    name: String,
    /// The labels its runners may announce (none: unlabelled steps only).
    #[serde(default)]
    #[schema(schema_with = super::rules::labels)]
    labels: BTreeMap<String, String>,
    /// Whether its runners may be handed steps that name secrets.
    #[serde(default = "default_secrets")]
    #[schema(default = true)]
    secrets: bool,
    /// Whether its runners may claim steps of runs of pull requests from forks (code
    /// from outside the repository). Off by default: a token made for trusted work must
    /// not run strangers' code.
    #[serde(default)]
    #[schema(default = false)]
    accept_forks: bool,
}

/// The `{id}` of a runner registration token in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: the handler parses the id itself (400 when it is none)
pub(super) struct TokenId {
    /// The token's id.
    #[param(minimum = 1, example = 1)]
    id: i64,
}

fn default_secrets() -> bool {
    true
}

#[utoipa::path(
    post,
    path = "/api/runner-tokens",
    tag = "tokens",
    operation_id = "create_runner_token",
    summary = "Make a scoped runner registration token",
    description = "Needs an installation admin.",
    request_body = CreateRunnerToken,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The token, shown this once", body = RunnerTokenCreated),
        (status = 400, description = "A malformed body, an invalid name or labels", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Object<CreateRunnerToken>, ApiError>,
) -> ApiResult<(StatusCode, Json<RunnerTokenCreated>)> {
    caller.require_admin()?;
    let Object(request) = body?;
    // As the document says it (`maxLength`, and the pattern over the whole name): the
    // length and the characters of the name as sent; then it is kept trimmed.
    if request.name.trim().is_empty() || request.name.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "a runner token needs a name of 1 to 100 characters",
        ));
    }
    // regression: bidi overrides passed (only controls were refused), so a name could
    // display as another.
    evaluator::text::check_clean_field("name", &request.name, evaluator::text::TextKind::UserLine)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let name = request.name.trim();
    scope::check_labels(&request.labels).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let token = tokens::new_token()?;
    let labels_json = serde_json::to_string(&request.labels).map_err(anyhow::Error::from)?;
    let id = state
        .executor
        .store()
        .create_runner_token(&NewRunnerToken {
            kind: RunnerTokenKind::Scoped,
            name,
            token_hash: &tokens::hash_token(&token),
            labels_json: &labels_json,
            secrets: request.secrets,
            accept_forks: request.accept_forks,
            expires_at: None,
            now: now_ms(),
        })
        .await?;
    let detail = serde_json::json!({
        "id": id, "name": name, "labels": request.labels, "secrets": request.secrets,
        "accept_forks": request.accept_forks,
    });
    let store = state.executor.store();
    audit_installation(store, &caller, "runner_token.create", detail).await?;
    Ok((
        StatusCode::CREATED,
        Json(RunnerTokenCreated {
            id,
            name: name.to_string(),
            labels: request.labels,
            secrets: request.secrets,
            accept_forks: request.accept_forks,
            token,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/runner-tokens",
    tag = "tokens",
    operation_id = "list_runner_tokens",
    summary = "Scoped runner registration tokens (never the tokens)",
    description = "Needs an installation admin.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tokens", body = Vec<RunnerTokenView>),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<Vec<RunnerTokenView>>> {
    caller.require_admin()?;
    let rows = state.executor.store().list_runner_tokens().await?;
    Ok(Json(rows.into_iter().map(RunnerTokenView::new).collect()))
}

#[utoipa::path(
    delete,
    path = "/api/runner-tokens/{id}",
    tag = "tokens",
    operation_id = "revoke_runner_token",
    summary = "Revoke a runner registration token, retiring its runners",
    description = "Needs an installation admin. Attempts on its runners fail.",
    params(TokenId),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoked", body = RunnerTokenRevoked),
        (status = 400, description = "The id is not a runner token id", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 404, description = "No such runner token", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn revoke(
    State(state): State<ApiState>,
    caller: Caller,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Json<RunnerTokenRevoked>> {
    caller.require_admin()?;
    let Path(raw) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id = parse_positive_id(&raw, "runner token id")?;
    let store = state.executor.store();
    let Some(runners) = store.revoke_runner_token(id, now_ms()).await? else {
        return Err(ApiError::not_found(format!("no runner token {id}")));
    };
    let detail = serde_json::json!({ "id": id, "runners_stopped": runners.len() });
    audit_installation(store, &caller, "runner_token.revoke", detail).await?;
    // Their runners get 410 on their next heartbeat or poll and stop their steps; the
    // attempts end here so the runs move on.
    let failed = Report {
        outcome: Outcome::Failed,
        exit_code: None,
        reason: Some("the runner's registration token was revoked".into()),
        outputs: BTreeMap::new(),
    };
    for runner_id in &runners {
        for (attempt_id, run_id) in store.active_attempts_of(*runner_id).await? {
            state
                .executor
                .complete(attempt_id, run_id, None, &failed)
                .await?;
        }
    }
    Ok(Json(RunnerTokenRevoked {
        id,
        runners_stopped: runners.len(),
    }))
}
