//! The API of steps' OpenID Connect tokens: which tokens a run's steps got
//! (`GET /api/runs/{id}/id-tokens`, for whoever may read the run) and the rotation of the
//! engine's signing key (`POST /api/id-tokens/rotate`, installation admins only). The
//! discovery document and the keys are served outside `/api`, at the paths relying parties
//! look for ([`crate::oidc`]).
//!
//! Invariants: no answer holds a token, only what the audit kept of it (step, attempt,
//! variable, audience, subject, expiry, token id); a rotation is audited.

use axum::extract::{Path, State};
use axum::Json;
use plue_store::AuditRow;
use serde::Serialize;
use utoipa::ToSchema;

use super::views::ErrorView;
use super::{parse_run_id, ApiState, RunId};
use crate::access::{Caller, Role};
use crate::http_error::ApiResult;

/// A token a step got.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct IssuedView {
    pub step: String,
    pub attempt: i64,
    /// The variable the step read it from.
    pub variable: String,
    /// Its audience (`aud`).
    pub audience: String,
    /// Its subject (`sub`), what a cloud's trust policy matches.
    pub subject: String,
    /// When it expires, in seconds since the epoch.
    pub expires_at: i64,
    /// Whether the run was trusted.
    pub trusted: bool,
    /// The token's id (`jti`).
    pub token_id: String,
    /// When it was issued, in milliseconds since the epoch.
    pub issued_at: i64,
}

impl IssuedView {
    /// The view of an `id_token.issue` audit row; `None` for a row that does not read as one.
    pub(crate) fn of(row: &AuditRow) -> Option<IssuedView> {
        let detail: serde_json::Value = serde_json::from_str(&row.detail).ok()?;
        let text = |key: &str| detail.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        Some(IssuedView {
            step: text("step")?,
            attempt: detail.get("attempt")?.as_i64()?,
            variable: text("variable")?,
            audience: text("aud")?,
            subject: text("sub")?,
            expires_at: detail.get("exp")?.as_i64()?,
            trusted: detail.get("trusted")?.as_bool()?,
            token_id: text("jti")?,
            issued_at: row.at,
        })
    }
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/id-tokens",
    tag = "runs",
    operation_id = "list_id_tokens",
    summary = "The OpenID Connect tokens a run's steps got: audience and subject, never the token",
    params(RunId),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The tokens issued, oldest first", body = Vec<IssuedView>),
        (status = 400, description = "The id is not a run id", body = ErrorView),
        (status = 401, response = super::openapi::RunNotPublic),
        (status = 404, description = "No such run, or one the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<IssuedView>>> {
    let id = parse_run_id(&id)?;
    let store = state.executor.store();
    caller.visible_run(store, id, Role::Reader).await?;
    let rows = store.id_tokens_issued(id).await?;
    Ok(Json(rows.iter().filter_map(IssuedView::of).collect()))
}

/// The new signing key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(super) struct RotatedView {
    /// The new key's id (`kid`): published now, signing in ten minutes.
    pub kid: String,
}

#[utoipa::path(
    post,
    path = "/api/id-tokens/rotate",
    tag = "users",
    operation_id = "rotate_id_token_key",
    summary = "Adds a new key to sign steps' OpenID Connect tokens, published ten minutes before it signs",
    description = "The new key is published in `/.well-known/jwks` at once and signs ten \
                   minutes later; the keys it replaces sign until then and stay published two \
                   hours more, so tokens they signed verify until they expire. Refused (409) \
                   when the engine has no `PLUE_SECRET_KEY`: its key is then never stored, and \
                   new at every start.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new key", body = RotatedView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "Not an installation admin", body = ErrorView),
        (status = 409, description = "The engine has no vault key to keep a key with", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn rotate(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<RotatedView>> {
    caller.require_admin()?;
    if !state.executor.vault().is_keyed() {
        return Err(crate::http_error::ApiError::Client(
            axum::http::StatusCode::CONFLICT,
            "this engine has no PLUE_SECRET_KEY: its token key is never stored, and a new one \
             is made at every start"
                .to_owned(),
        ));
    }
    let kid = plue_core::id_tokens::rotate(&state.executor).await?;
    let detail = serde_json::json!({ "kid": kid });
    super::audit_installation(state.executor.store(), &caller, "id_token.rotate", detail).await?;
    Ok(Json(RotatedView { kid }))
}
