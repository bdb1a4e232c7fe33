//! `GET /api/provenance/keys`, `GET /api/runs/{id}/provenance` and
//! `GET /api/runs/{id}/proposals/{pid}/provenance`: the signed provenance statements of
//! the changes the engine applied (`safe_outputs::attest`), and the public keys they are
//! checked with.
//!
//! Invariants: a statement is shown to whoever may read its run (`reader` on its
//! repository, 404 otherwise, as for the run and its proposals) and exactly as it was
//! signed (the stored envelope's JSON, never rebuilt); the keys are public — readable
//! without a token even when reads are private, since a verifier must get them from
//! outside any session — and hold only public keys.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::proposals::ProposalPath;
use super::views::ErrorView;
use super::{parse_positive_id, visible_run_in_path, ApiState, RunId};
use crate::access::{Caller, Role};
use crate::http_error::{ApiError, ApiResult};

/// A public key the engine signs, or signed, provenance with.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProvenanceKeyView {
    /// `sha256:` + the hex SHA-256 of the raw key: the `keyid` of the envelopes it signed.
    pub(super) keyid: String,
    /// Always `ed25519`.
    pub(super) keytype: &'static str,
    /// Always `ed25519`.
    pub(super) scheme: &'static str,
    /// The raw 32-byte public key, hex (securesystemslib's `keyval.public`).
    pub(super) public: String,
    /// When this engine first listed it (ms since the epoch).
    pub(super) first_seen: i64,
}

/// One applied proposal's statement.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StatementView {
    pub(super) proposal_id: i64,
    /// The signing key's id.
    pub(super) keyid: String,
    pub(super) created_at: i64,
    /// The DSSE envelope, as signed: `payloadType`, `payload` (the in-toto statement,
    /// base64) and `signatures`.
    #[schema(value_type = Object)]
    pub(super) envelope: serde_json::Value,
}

#[utoipa::path(
    get,
    path = "/api/provenance/keys",
    tag = "proposals",
    operation_id = "provenance_keys",
    summary = "The public keys provenance statements are signed with, the current one first, older ones kept so statements signed before a rotation still verify",
    security(()),
    responses(
        (status = 200, description = "The keys, newest first", body = Vec<ProvenanceKeyView>),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn keys(State(state): State<ApiState>) -> ApiResult<Json<Vec<ProvenanceKeyView>>> {
    let rows = state.executor.store().signing_keys().await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| ProvenanceKeyView {
                keyid: row.key_id,
                keytype: "ed25519",
                scheme: "ed25519",
                public: row.public_key,
                first_seen: row.first_seen,
            })
            .collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/provenance",
    tag = "proposals",
    operation_id = "list_provenance",
    summary = "The signed provenance statements of the changes a run's proposals made",
    params(RunId),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "One per applied proposal, by proposal", body = Vec<StatementView>),
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
) -> ApiResult<Json<Vec<StatementView>>> {
    let store = state.executor.store();
    let (id, _) = visible_run_in_path(store, &caller, &id, Role::Reader).await?;
    let rows = store.statements_of_run(id).await?;
    let views = rows
        .into_iter()
        .map(|row| {
            Ok(StatementView {
                proposal_id: row.proposal_id,
                keyid: row.key_id,
                created_at: row.created_at,
                envelope: serde_json::from_str(&row.envelope)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Json(views))
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/proposals/{pid}/provenance",
    tag = "proposals",
    operation_id = "get_provenance",
    summary = "The DSSE envelope of one applied proposal's provenance statement, as signed (what `plue verify --statement` reads)",
    params(ProposalPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The envelope", body = serde_json::Value),
        (status = 400, description = "Not a run or proposal id", body = ErrorView),
        (status = 401, response = super::openapi::RunNotPublic),
        (status = 404, description = "No such run or statement (the proposal was not applied), or a run the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let store = state.executor.store();
    let (id, _) = visible_run_in_path(store, &caller, &id, Role::Reader).await?;
    let pid = parse_positive_id(&pid, "proposal id")?;
    let Some(row) = store.statement(id, pid).await? else {
        return Err(ApiError::not_found(format!(
            "run {id} has no provenance statement for proposal {pid}"
        )));
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], row.envelope).into_response())
}

#[cfg(test)]
mod tests;
