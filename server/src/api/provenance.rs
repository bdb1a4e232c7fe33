//! `GET /api/provenance/keys`, `GET /api/runs/{id}/provenance` and
//! `GET /api/runs/{id}/proposals/{pid}/provenance`: the signed provenance statements of
//! the changes the engine applied (`safe_outputs::attest`), and the public keys they are
//! checked with.
//!
//! Invariants: a statement is shown to whoever may read its run (`reader` on its
//! repository, 404 otherwise, as for the run and its proposals) and exactly as it was
//! signed (the stored envelope's JSON, never rebuilt); the envelope of a statement whose
//! change has not landed — `pending` (being written) or `failed` (the forge did not accept
//! the write) — is never served: the list shows its state and, for a failed one, the
//! reason (as the run's outbound wall redacted it), and the statement's own URL answers
//! 409 saying so, so a signed statement never vouches for a change the forge refused; the
//! keys are public — readable without a token even when reads are private, since a
//! verifier must get them from outside any session — and hold only public keys.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use axum::http::StatusCode;
use plue_store::{Landing, StatementRow};
use plue_types::status::StatementState;

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

/// Whether a statement's change landed on the forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StatementStateView {
    /// Signed and recorded before its change is written; the write is under way, or will
    /// be tried again. Its envelope is not served yet.
    Pending,
    /// The forge accepted the write (a pull request's push and the pull request itself, a
    /// comment, the labels, an issue). Its envelope is served.
    Applied,
    /// The write failed for good (the forge refused it, or it failed too often); `reason`
    /// says why. Its envelope is never served.
    Failed,
}

impl From<StatementState> for StatementStateView {
    fn from(state: StatementState) -> StatementStateView {
        match state {
            StatementState::Pending => StatementStateView::Pending,
            StatementState::Applied => StatementStateView::Applied,
            StatementState::Failed => StatementStateView::Failed,
        }
    }
}

/// One proposal's statement, with whether its change landed.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StatementView {
    pub(super) proposal_id: i64,
    /// The signing key's id.
    pub(super) keyid: String,
    pub(super) created_at: i64,
    pub(super) state: StatementStateView,
    /// Why the write failed, for a `failed` statement (as the run's outbound wall shows
    /// it); `null` otherwise.
    #[schema(required = true)]
    pub(super) reason: Option<String>,
    /// The DSSE envelope, as signed: `payloadType`, `payload` (the in-toto statement,
    /// base64) and `signatures` — for an `applied` statement only; `null` while `pending`
    /// and for a `failed` one (a signed statement of a change that did not land is never
    /// handed out).
    #[schema(value_type = Option<Object>, required = true)]
    pub(super) envelope: Option<serde_json::Value>,
}

impl StatementView {
    fn new(row: StatementRow) -> anyhow::Result<StatementView> {
        let envelope = match row.state {
            StatementState::Applied => Some(serde_json::from_str(&row.envelope)?),
            StatementState::Pending | StatementState::Failed => None,
        };
        let reason = match row.landing() {
            Landing::Failed(reason) => Some(reason.to_owned()),
            Landing::Pending | Landing::Applied => None,
        };
        Ok(StatementView {
            proposal_id: row.proposal_id,
            keyid: row.key_id,
            created_at: row.created_at,
            state: row.state.into(),
            reason,
            envelope,
        })
    }
}

/// Why statement `row` (of proposal `pid`) is not served: its change did not land (yet).
fn not_landed(pid: i64, row: &StatementRow) -> Option<String> {
    match row.landing() {
        Landing::Applied => None,
        Landing::Pending => Some(format!(
            "the change of proposal {pid} has not landed yet (statement pending): its \
             statement is served once the forge accepts the write"
        )),
        Landing::Failed(reason) => Some(format!(
            "the change of proposal {pid} did not land (statement failed: {reason}): its \
             statement is not served"
        )),
    }
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
        (status = 200, description = "One per proposal the engine signed a statement for before writing it, by proposal; only an applied one carries its envelope", body = Vec<StatementView>),
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
        .map(StatementView::new)
        .collect::<anyhow::Result<_>>()?;
    Ok(Json(views))
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/proposals/{pid}/provenance",
    tag = "proposals",
    operation_id = "get_provenance",
    summary = "The DSSE envelope of one applied proposal's provenance statement, as signed (what `plue verify --statement` reads), once the forge accepted its change",
    params(ProposalPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The envelope", body = serde_json::Value),
        (status = 400, description = "Not a run or proposal id", body = ErrorView),
        (status = 401, response = super::openapi::RunNotPublic),
        (status = 404, description = "No such run or statement (none was signed: the proposal was never written, or the engine signs none), or a run the caller may not read", body = ErrorView),
        (status = 409, description = "The change has not landed: its statement is pending (being written) or failed (the forge did not accept the write; the message gives the reason), and is not served", body = ErrorView),
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
    if let Some(why) = not_landed(pid, &row) {
        return Err(ApiError::Client(StatusCode::CONFLICT, why));
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], row.envelope).into_response())
}

#[cfg(test)]
mod tests;
