//! `POST /api/runs/{id}/steps/{step}/approve|reject` and `GET /api/runs/{id}/approvals`:
//! people deciding approval steps.
//!
//! Invariants: the decider is whoever the bearer token names ([`Auth::identity`]: `admin`
//! for the admin token, the token's name otherwise); when the step lists `approvers`, only
//! those names may decide, the admin token included; with `exclude_triggerer`, the name
//! that started the run through the API (`run_triggerers`) may not. A decision is taken once: deciding a
//! step that is not `waiting` is a 409 and changes nothing; a decision after the step's
//! deadline is a 409 too, whether or not the sweeper has run (the store times the step
//! out in the decision's own transaction). A comment is one clean line
//! ([`TextKind::UserLine`]: no controls, no bidi characters).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use evaluator::plan::Action;
use evaluator::text::{check_clean_field, TextKind};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::body::Object;
use super::views::{ApprovalView, ErrorView};
use super::{parse_run_id, ApiState, RunId};
use crate::http_error::{ApiError, ApiResult};
use crate::store::{now_ms, Decided, Verdict};

/// The longest comment kept with a decision, in bytes.
const MAX_COMMENT_BYTES: usize = 4096;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Decision {
    /// Kept with the decision; at most 4096 bytes of one line, without control or bidi
    /// characters.
    #[serde(default)]
    comment: String,
}

/// A run and one of its steps in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers parse the segments themselves
pub(super) struct StepPath {
    /// The run's id.
    #[param(minimum = 1, example = 1)]
    id: i64,
    /// The step's id in the run's plan.
    #[param(example = "gate")]
    step: String,
}

#[utoipa::path(
    post,
    path = "/api/runs/{id}/steps/{step}/approve",
    tag = "approvals",
    operation_id = "approve_step",
    summary = "Approve a waiting approval step",
    params(StepPath),
    request_body(content = Option<Decision>, description = "Optional: a decision without a body (and no `Content-Type`) has no comment"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The decision", body = ApprovalView),
        (status = 400, description = "Not a run id, malformed JSON, a comment too long or with a control or bidi character, or a step that is not an approval", body = ErrorView),
        (status = 401, description = "No valid bearer token", body = ErrorView),
        (status = 403, description = "The token's name may not decide this step (not among its approvers, or the run's triggerer)", body = ErrorView),
        (status = 404, description = "No such run or step", body = ErrorView),
        (status = 409, description = "The step is not waiting for a decision, or its deadline passed (it timed out)", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "A body that is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, description = "The engine failed (see its log)", body = ErrorView),
    )
)]
pub(super) async fn approve(
    state: State<ApiState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Option<Object<Decision>>, ApiError>,
) -> ApiResult<Json<ApprovalView>> {
    decide(state, path, headers, body, Verdict::Approve).await
}

#[utoipa::path(
    post,
    path = "/api/runs/{id}/steps/{step}/reject",
    tag = "approvals",
    operation_id = "reject_step",
    summary = "Reject a waiting approval step (it fails)",
    params(StepPath),
    request_body(content = Option<Decision>, description = "Optional: a decision without a body (and no `Content-Type`) has no comment"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The decision", body = ApprovalView),
        (status = 400, description = "Not a run id, malformed JSON, a comment too long or with a control or bidi character, or a step that is not an approval", body = ErrorView),
        (status = 401, description = "No valid bearer token", body = ErrorView),
        (status = 403, description = "The token's name may not decide this step (not among its approvers, or the run's triggerer)", body = ErrorView),
        (status = 404, description = "No such run or step", body = ErrorView),
        (status = 409, description = "The step is not waiting for a decision, or its deadline passed (it timed out)", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "A body that is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, description = "The engine failed (see its log)", body = ErrorView),
    )
)]
pub(super) async fn reject(
    state: State<ApiState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Option<Object<Decision>>, ApiError>,
) -> ApiResult<Json<ApprovalView>> {
    decide(state, path, headers, body, Verdict::Reject).await
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/approvals",
    tag = "approvals",
    operation_id = "list_approvals",
    summary = "The decisions taken on a run's approval steps",
    params(RunId),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The decisions, oldest first (none for an unknown run)", body = Vec<ApprovalView>),
        (status = 400, description = "The id is not a run id", body = ErrorView),
        (status = 401, description = "Reads are private and the request has no valid token", body = ErrorView),
        (status = 500, description = "The engine failed (see its log)", body = ErrorView),
    )
)]
pub(super) async fn list(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ApprovalView>>> {
    let id = parse_run_id(&id)?;
    let rows = state.executor.store().approvals_of_run(id).await?;
    Ok(Json(rows.into_iter().map(ApprovalView::from).collect()))
}

async fn decide(
    State(state): State<ApiState>,
    Path((id, step)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Option<Object<Decision>>, ApiError>,
    verdict: Verdict,
) -> ApiResult<Json<ApprovalView>> {
    // regression: a malformed body (`null`, a wrong type, bad JSON) was answered by axum's
    // rejection in plain text, not an ApiError; schemathesis found it.
    let body = body?;
    let run_id = parse_run_id(&id)?;
    // No body (no content type) is a decision without a comment.
    let decision = body.map(|Object(d)| d).unwrap_or_default();
    if decision.comment.len() > MAX_COMMENT_BYTES {
        return Err(ApiError::bad_request(format!(
            "a comment is at most {MAX_COMMENT_BYTES} bytes"
        )));
    }
    check_clean_field("comment", &decision.comment, TextKind::UserLine)
        .map_err(ApiError::bad_request)?;
    let who = state.auth.identity(&headers).await?;
    let store = state.executor.store();
    let Some(run) = store.run(run_id).await? else {
        return Err(ApiError::not_found(format!("no run {run_id}")));
    };
    if run.plan_hash.is_empty() {
        // Its workflow file did not evaluate: it has no steps.
        return Err(ApiError::not_found(format!(
            "run {run_id} has no step '{step}'"
        )));
    }
    let plan = state.executor.plan(run_id).await?;
    let Some(found) = plan.steps.iter().find(|s| s.id == step) else {
        return Err(ApiError::not_found(format!(
            "run {run_id} has no step '{step}'"
        )));
    };
    let Action::Approval(approval) = &found.action else {
        return Err(ApiError::bad_request(format!(
            "step '{step}' is a {} step, not an approval",
            found.action.kind()
        )));
    };
    if !approval.approvers.is_empty() && !approval.approvers.contains(&who) {
        return Err(ApiError::forbidden(format!(
            "'{who}' may not decide step '{step}'; its approvers are: {}",
            approval.approvers.join(", ")
        )));
    }
    if approval.exclude_triggerer
        && store.triggerer_of(run_id).await?.as_deref() == Some(who.as_str())
    {
        return Err(ApiError::forbidden(format!(
            "'{who}' started run {run_id} and so may not decide step '{step}'"
        )));
    }
    let now = now_ms();
    match store
        .decide_approval(run_id, &step, verdict, &who, &decision.comment, now)
        .await?
    {
        Decided::Done => {}
        Decided::NoStep => {
            return Err(ApiError::not_found(format!(
                "run {run_id} has no step '{step}'"
            )))
        }
        Decided::NotWaiting(status) => {
            return Err(ApiError::Client(
                StatusCode::CONFLICT,
                format!("step '{step}' is {status}, not waiting for a decision"),
            ))
        }
        Decided::TimedOut { deadline } => {
            // The step failed as timed out in the decision's transaction: move the run on.
            state.executor.advance(run_id).await?;
            let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(deadline)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| format!("{deadline} ms"));
            return Err(ApiError::Client(
                StatusCode::CONFLICT,
                format!(
                    "step '{step}' timed out at {at}, before this decision: the decision was \
                     not taken and the step failed"
                ),
            ));
        }
    }
    state.executor.advance(run_id).await?;
    Ok(Json(ApprovalView {
        step_id: step,
        decision: verdict.as_str().into(),
        decided_by: who,
        comment: decision.comment,
        decided_at: now,
        environment: None,
        reviewers: Vec::new(),
    }))
}
