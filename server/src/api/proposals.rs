//! `GET /api/runs/{id}/proposals` and `POST /api/runs/{id}/proposals/{pid}/decision`: what
//! a run's `llm` steps proposed to the forge (`safe_outputs`), and people approving or
//! rejecting the proposals of a step with `approve_outputs=True`.
//!
//! Invariants: reading needs `reader` on the run's repository (404 otherwise, as for the
//! run); deciding needs `writer` (a reader gets 403) and the same rules as an approval
//! step ([`Caller::may_decide`], reused): any writer may decide, but never the user who
//! started a repository's run (nor one who started a run it repeats) — an agent summoned
//! by someone does not have its work approved by the same someone. (A local run's only
//! decider is the admin who started it.) A proposal is decided
//! once (409 when it is not `waiting`). Every decision is in the audit trail
//! (`proposal.approve`, `proposal.reject`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use plue_store::{Audit, ProposalDecided, ProposalRow, Verdict};
use plue_types::status::ProposalState;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::body::Object;
use super::views::ErrorView;
use super::{parse_positive_id, parse_run_id, visible_run_in_path, ApiState, RunId};
use crate::access::{Caller, Role, SelfReview};
use crate::http_error::{ApiError, ApiResult};

/// One proposal of a run, as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProposalView {
    pub id: i64,
    /// The step that proposed it.
    pub step_id: String,
    pub attempt_id: i64,
    /// `pull_request`, `comment`, `labels` or `issue`.
    pub kind: String,
    /// The proposal: `title`, `body`, `diff` (a pull request's `git diff --binary`),
    /// `labels`, by kind.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// `refused`, `waiting`, `rejected`, `ready`, `applying`, `applied` or `failed`.
    #[schema(value_type = String)]
    pub state: ProposalState,
    /// Why it was refused or failed.
    pub reason: Option<String>,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    /// The forge's page of what was written (the pull request, the comment), once applied.
    pub applied_url: Option<String>,
    pub applied_at: Option<i64>,
    pub created_at: i64,
    /// The engine's threat check of the proposal, when it ran: `verdict` (`pass`,
    /// `needs_approval`, `refused`), `findings` (each `rule`, `severity` — `warning` or
    /// `critical` —, `file`, `line`, `reason`) and the model `review` when one was asked.
    #[schema(value_type = Option<Object>)]
    pub threat: Option<serde_json::Value>,
}

impl ProposalView {
    fn new(row: ProposalRow, step_id: String) -> ProposalView {
        ProposalView {
            id: row.id,
            step_id,
            attempt_id: row.attempt_id,
            kind: row.kind,
            payload: serde_json::from_str(&row.payload).unwrap_or(serde_json::Value::Null),
            state: row.state,
            reason: row.reason,
            decided_by: row.decided_by,
            decided_at: row.decided_at,
            applied_url: row.applied_url,
            applied_at: row.applied_at,
            created_at: row.created_at,
            threat: row
                .threat
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
        }
    }
}

/// A decision on a waiting proposal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProposalDecision {
    /// True to apply it, false to drop it.
    approve: bool,
}

/// A run and one of its proposals in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers parse the segments themselves
pub(super) struct ProposalPath {
    /// The run's id.
    #[param(minimum = 1, example = 1)]
    id: i64,
    /// The proposal's id.
    #[param(minimum = 1, example = 1)]
    pid: i64,
}

/// The views of `rows`, each with its step's id.
pub(crate) async fn views(
    store: &plue_store::Store,
    rows: Vec<ProposalRow>,
) -> anyhow::Result<Vec<ProposalView>> {
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        let step = store.step_run_by_id(row.step_run_id).await?;
        let step_id = step.map(|s| s.step_id).unwrap_or_default();
        views.push(ProposalView::new(row, step_id));
    }
    Ok(views)
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/proposals",
    tag = "proposals",
    operation_id = "list_proposals",
    summary = "What a run's llm steps proposed to the forge, with the validation result, the decision and the forge link once applied",
    params(RunId),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The proposals, oldest first", body = Vec<ProposalView>),
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
) -> ApiResult<Json<Vec<ProposalView>>> {
    let store = state.executor.store();
    let (id, _) = visible_run_in_path(store, &caller, &id, Role::Reader).await?;
    let rows = store.list_for_run(id).await?;
    Ok(Json(views(store, rows).await?))
}

#[utoipa::path(
    post,
    path = "/api/runs/{id}/proposals/{pid}/decision",
    tag = "proposals",
    operation_id = "decide_proposal",
    summary = "Approve (apply) or reject a proposal waiting for a person (approve_outputs=True)",
    params(ProposalPath),
    request_body(content = ProposalDecision),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The proposal after the decision", body = ProposalView),
        (status = 400, description = "Not a run or proposal id, or malformed JSON", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller lacks `writer` on the run's repository, or started the run", body = ErrorView),
        (status = 404, description = "No such run or proposal, or a run the caller may not read", body = ErrorView),
        (status = 409, description = "The proposal is not waiting for a decision", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "A body that is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn decide(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    body: Result<Object<ProposalDecision>, ApiError>,
) -> ApiResult<Json<ProposalView>> {
    let Object(decision) = body?;
    let run_id = parse_run_id(&id)?;
    let pid = parse_positive_id(&pid, "proposal id")?;
    let store = state.executor.store();
    // Writers only: a reader learns it may not (403), others that there is no such run.
    let run = caller.visible_run(store, run_id, Role::Writer).await?;
    let exists = store
        .list_for_run(run_id)
        .await?
        .iter()
        .any(|r| r.id == pid);
    if !exists {
        return Err(ApiError::not_found(format!(
            "run {run_id} has no proposal {pid}"
        )));
    }
    // A local run has one decider, the admin, who also started it: only a repository's
    // runs have a second person to ask.
    let self_review = match run.repo_id {
        Some(_) => SelfReview::Excluded,
        None => SelfReview::Allowed,
    };
    if let Err(refusal) = caller.may_decide(store, run_id, &[], self_review).await? {
        return Err(ApiError::forbidden(format!("{refusal} (proposal {pid})")));
    }
    let repeated = match self_review {
        SelfReview::Excluded => {
            super::approvals::repeated_run_started_by(store, &caller, &run).await?
        }
        SelfReview::Allowed => None,
    };
    if let Some(started) = repeated {
        return Err(ApiError::forbidden(format!(
            "'{}' started run {started}, which run {run_id} runs again, and may not decide its proposals",
            caller.name()
        )));
    }
    let who = caller.name().to_owned();
    let verdict = match decision.approve {
        true => Verdict::Approve,
        false => Verdict::Reject,
    };
    match store.decide_proposal(run_id, pid, &who, verdict).await? {
        ProposalDecided::Done => {}
        ProposalDecided::NotFound => {
            return Err(ApiError::not_found(format!(
                "run {run_id} has no proposal {pid}"
            )))
        }
        ProposalDecided::NotWaiting(state) => {
            return Err(ApiError::Client(
                StatusCode::CONFLICT,
                format!("proposal {pid} is {state}, not waiting for a decision"),
            ))
        }
    }
    store
        .audit(&Audit {
            user_id: caller.user_id(),
            actor: &who,
            action: if decision.approve {
                "proposal.approve"
            } else {
                "proposal.reject"
            },
            repo_id: run.repo_id,
            run_id: Some(run_id),
            detail: serde_json::json!({ "proposal": pid }),
        })
        .await?;
    let row = store
        .list_for_run(run_id)
        .await?
        .into_iter()
        .filter(|r| r.id == pid)
        .collect();
    let view = views(store, row).await?.pop();
    view.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("run {run_id} has no proposal {pid}")))
}
