//! `POST /api/runs/{id}/steps/{step}/approve|reject` and `GET /api/runs/{id}/approvals`:
//! people deciding approval steps and environment reviews.
//!
//! Two kinds of gate are decided here: an approval step of the plan (`Step.approval`), and
//! the review the engine inserts before a step naming an environment with reviewers
//! ([`plue_core::executor::environments`]), which no plan can remove.
//!
//! Invariants: the decider acts with at least `writer` on the run's repository (a reader
//! gets 403, a caller who may not read it 404; a local run: the admin only) *and* is
//! named — among the approval's `approvers` or the environment's `reviewers` (user names
//! or `@group`s, compared by user, never by a token's name; an approval naming nobody may
//! be decided by any writer). With `exclude_triggerer` (approval) or
//! `prevent_self_review` (environment), the user who started the run — by user id, a
//! linked forge login or a legacy name — may not ([`Caller::may_decide`]), nor the one who
//! started any run a re-run repeats. Who may review
//! an environment is read from the environment when deciding, never from the plan. A
//! decision is taken once: deciding a step that is not `waiting` is a 409 and changes
//! nothing; a decision after the step's deadline is a 409 too, whether or not the sweeper
//! has run (the store times the step out in the decision's own transaction). Every
//! decision is in the audit trail (`approval.approve`, `approval.reject`). A comment is one
//! clean line ([`TextKind::UserLine`]: no controls, no bidi characters). Who may decide is
//! one function, [`decider_check`]: the decision asks it, and the dashboard's approval
//! panel asks it to offer Approve/Reject only to those the decision would accept.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use evaluator::plan::Action;
use evaluator::text::{check_clean_field, TextKind};
use plue_store::{now_ms, Audit, Decided, Reviewer, RunRow, Verdict};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::body::Object;
use super::views::{ApprovalView, ErrorView};
use super::{parse_run_id, visible_run_in_path, ApiState, RunId};
use crate::access::{Caller, Role, SelfReview};
use crate::http_error::{ApiError, ApiResult};

/// The longest comment kept with a decision, in characters (the document's `maxLength`).
const MAX_COMMENT_CHARS: usize = 4096;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Decision {
    /// Kept with the decision; at most 4096 characters of one line, without control, bidi
    /// or invisible (format) characters.
    #[serde(default)]
    #[schema(schema_with = super::rules::comment)]
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
    summary = "Approve a waiting approval step or environment review",
    params(StepPath),
    request_body(content = Option<Decision>, description = "Optional: a decision without a body (and no `Content-Type`) has no comment"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The decision", body = ApprovalView),
        (status = 400, description = "Not a run id, malformed JSON, or a comment too long or with a control or bidi character", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller lacks `writer` on the run's repository, is not among the approvers or the environment's reviewers, or started the run (`exclude_triggerer`, `prevent_self_review`)", body = ErrorView),
        (status = 404, description = "No such run or step, or a run the caller may not read", body = ErrorView),
        (status = 409, description = "The step is not waiting for a decision (or is neither an approval nor under an environment), its deadline passed (it timed out), or its environment is no longer defined", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "A body that is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn approve(
    state: State<ApiState>,
    caller: Caller,
    path: Path<(String, String)>,
    body: Result<Option<Object<Decision>>, ApiError>,
) -> ApiResult<Json<ApprovalView>> {
    decide(state, caller, path, body, Verdict::Approve).await
}

#[utoipa::path(
    post,
    path = "/api/runs/{id}/steps/{step}/reject",
    tag = "approvals",
    operation_id = "reject_step",
    summary = "Reject a waiting approval step or environment review (the step fails)",
    params(StepPath),
    request_body(content = Option<Decision>, description = "Optional: a decision without a body (and no `Content-Type`) has no comment"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The decision", body = ApprovalView),
        (status = 400, description = "Not a run id, malformed JSON, or a comment too long or with a control or bidi character", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller lacks `writer` on the run's repository, is not among the approvers or the environment's reviewers, or started the run (`exclude_triggerer`, `prevent_self_review`)", body = ErrorView),
        (status = 404, description = "No such run or step, or a run the caller may not read", body = ErrorView),
        (status = 409, description = "The step is not waiting for a decision (or is neither an approval nor under an environment), its deadline passed (it timed out), or its environment is no longer defined", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "A body that is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn reject(
    state: State<ApiState>,
    caller: Caller,
    path: Path<(String, String)>,
    body: Result<Option<Object<Decision>>, ApiError>,
) -> ApiResult<Json<ApprovalView>> {
    decide(state, caller, path, body, Verdict::Reject).await
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/approvals",
    tag = "approvals",
    operation_id = "list_approvals",
    summary = "The decisions taken on a run's approval steps and environment reviews",
    params(RunId),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The decisions, oldest first; an environment review's with its environment and that environment's reviewers", body = Vec<ApprovalView>),
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
) -> ApiResult<Json<Vec<ApprovalView>>> {
    let store = state.executor.store();
    let (id, run) = visible_run_in_path(store, &caller, &id, Role::Reader).await?;
    let mut views = Vec::new();
    for row in store.approvals_of_run(id).await? {
        let mut view = ApprovalView::from(row);
        if let (Some(name), Some(repo_id)) = (&view.environment, run.repo_id) {
            if let Some(environment) = store.environment(repo_id, name).await? {
                view.reviewers = environment.settings.reviewers;
            }
        }
        views.push(view);
    }
    Ok(Json(views))
}

/// What a waiting step is decided as, and who may decide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Gate {
    /// An approval step of the plan.
    Approval {
        approvers: Vec<String>,
        exclude_triggerer: bool,
    },
    /// The review of the step's environment, as its repository defines it now.
    Review {
        environment: String,
        reviewers: Vec<String>,
        prevent_self_review: bool,
    },
}

impl Gate {
    /// Who may decide (user names and `@group`s; empty: any writer).
    pub(crate) fn deciders(&self) -> &[String] {
        match self {
            Gate::Approval { approvers, .. } => approvers,
            Gate::Review { reviewers, .. } => reviewers,
        }
    }

    /// Whether whoever started the run is excluded.
    pub(crate) fn self_review(&self) -> SelfReview {
        match self {
            Gate::Approval {
                exclude_triggerer: true,
                ..
            }
            | Gate::Review {
                prevent_self_review: true,
                ..
            } => SelfReview::Excluded,
            Gate::Approval { .. } | Gate::Review { .. } => SelfReview::Allowed,
        }
    }

    /// The environment under review, for a review.
    pub(crate) fn environment(&self) -> Option<&str> {
        match self {
            Gate::Approval { .. } => None,
            Gate::Review { environment, .. } => Some(environment),
        }
    }
}

/// Whether `caller` may decide step `step` of run `run_id` now, by every rule the decision
/// applies — `writer` on the run's repository (404 for a run it may not read, 403 for a
/// reader), the step a gate (404, 400, 409), among its deciders and not excluded as the
/// run's (or a repeated run's) starter (403) — with the run and its gate when it may. The
/// decision asks exactly this before it decides, and the dashboard asks it to offer
/// Approve/Reject only to those the decision would accept, and to say why to the others.
/// Whether the step still waits is the decision's own transaction's to say.
pub(crate) async fn decider_check(
    state: &ApiState,
    caller: &Caller,
    run_id: i64,
    step: &str,
) -> ApiResult<(RunRow, Gate)> {
    let store = state.executor.store();
    // Writers only: a reader learns it may not (403), others that there is no such run.
    let run = caller.visible_run(store, run_id, Role::Writer).await?;
    let gate = gate_of(state, &run, step).await?;
    let self_review = gate.self_review();
    if let Err(refusal) = caller
        .may_decide(store, run_id, gate.deciders(), self_review)
        .await?
    {
        let what = match gate.environment() {
            Some(name) => format!("the review of environment '{name}' for step '{step}'"),
            None => format!("step '{step}'"),
        };
        return Err(ApiError::forbidden(format!("{refusal} ({what})")));
    }
    if self_review == SelfReview::Excluded {
        if let Some(started) = repeated_run_started_by(store, caller, &run).await? {
            return Err(ApiError::forbidden(format!(
                "'{}' started run {started}, which run {run_id} runs again, and may not decide it",
                caller.name()
            )));
        }
    }
    Ok((run, gate))
}

/// The gate `step` of `run` is decided as: 404 when the run has no such step, 409 when it
/// is neither an approval nor a step under an environment, or its environment is no longer
/// defined.
pub(crate) async fn gate_of(state: &ApiState, run: &RunRow, step: &str) -> ApiResult<Gate> {
    let run_id = run.id;
    let no_step = || ApiError::not_found(format!("run {run_id} has no step '{step}'"));
    if run.plan_hash.is_empty() {
        // Its workflow file did not evaluate: it has no steps.
        return Err(no_step());
    }
    let plan = state.executor.plan(run_id).await?;
    let found = plan
        .steps
        .iter()
        .find(|s| s.id == step)
        .ok_or_else(no_step)?;
    if let Action::Approval(approval) = &found.action {
        return Ok(Gate::Approval {
            approvers: approval.approvers.clone(),
            exclude_triggerer: approval.exclude_triggerer,
        });
    }
    let (Some(name), Some(repo_id)) = (&found.environment, run.repo_id) else {
        // Nothing at this step waits for a decision: a 409, as for a gate already decided
        // (the request was well formed, so not a 400; the step is there, so not a 404).
        return Err(ApiError::Client(
            StatusCode::CONFLICT,
            format!(
                "step '{step}' is a {} step, not an approval, and has no environment review",
                found.action.kind()
            ),
        ));
    };
    let store = state.executor.store();
    let Some(environment) = store.environment(repo_id, name).await? else {
        return Err(ApiError::Client(
            StatusCode::CONFLICT,
            format!(
                "environment '{name}' of step '{step}' is no longer defined for {}: its review cannot be decided (cancel the run, or define the environment again)",
                run.workflow_source
            ),
        ));
    };
    Ok(Gate::Review {
        environment: environment.name,
        reviewers: environment.settings.reviewers,
        prevent_self_review: environment.settings.prevent_self_review,
    })
}

/// How many re-runs back [`repeated_run_started_by`] looks.
const MAX_RERUN_DEPTH: usize = 1000;

/// The run that `run` runs again (directly or through other re-runs) which `caller`
/// started, if any. A re-run's own triggerer is whoever re-ran it; whoever started the run
/// it repeats (pushed the code it runs) is excluded from its gates all the same. A chain
/// longer than [`MAX_RERUN_DEPTH`] counts as started by the caller.
pub(super) async fn repeated_run_started_by(
    store: &plue_store::Store,
    caller: &Caller,
    run: &RunRow,
) -> anyhow::Result<Option<i64>> {
    let mut next = run.rerun_of;
    for _ in 0..MAX_RERUN_DEPTH {
        let Some(id) = next else {
            return Ok(None);
        };
        if caller.is_triggerer_of(store, id).await? {
            return Ok(Some(id));
        }
        next = store.run(id).await?.and_then(|r| r.rerun_of);
    }
    Ok(next)
}

async fn decide(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, step)): Path<(String, String)>,
    body: Result<Option<Object<Decision>>, ApiError>,
    verdict: Verdict,
) -> ApiResult<Json<ApprovalView>> {
    // regression: a malformed body (`null`, a wrong type, bad JSON) was answered by axum's
    // rejection in plain text, not an ApiError; schemathesis found it.
    let body = body?;
    let run_id = parse_run_id(&id)?;
    // No body (no content type) is a decision without a comment.
    let decision = body.map(|Object(d)| d).unwrap_or_default();
    if decision.comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::bad_request(format!(
            "a comment is at most {MAX_COMMENT_CHARS} characters"
        )));
    }
    check_clean_field("comment", &decision.comment, TextKind::UserLine)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let store = state.executor.store();
    let (run, gate) = decider_check(&state, &caller, run_id, &step).await?;
    let environment = gate.environment();
    let who = caller.name().to_owned();
    let now = now_ms();
    let decided = match environment {
        None => {
            store
                .decide_approval(run_id, &step, verdict, &who, &decision.comment, now)
                .await?
        }
        Some(name) => {
            let reviewer = Reviewer {
                name: &who,
                user_id: caller.user_id(),
            };
            store
                .decide_review(
                    run_id,
                    &step,
                    name,
                    verdict,
                    reviewer,
                    &decision.comment,
                    now,
                )
                .await?
        }
    };
    match decided {
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
    let action = match verdict {
        Verdict::Approve => "approval.approve",
        Verdict::Reject => "approval.reject",
    };
    store
        .audit(&Audit {
            user_id: caller.user_id(),
            actor: &who,
            action,
            repo_id: run.repo_id,
            run_id: Some(run_id),
            detail: serde_json::json!({
                "step": step,
                "environment": environment,
                "comment": decision.comment,
            }),
        })
        .await?;
    state.executor.advance(run_id).await?;
    Ok(Json(ApprovalView {
        step_id: step,
        decision: verdict.as_str().into(),
        decided_by: who,
        comment: decision.comment,
        decided_at: now,
        environment: environment.map(str::to_owned),
        reviewers: match &gate {
            Gate::Review { reviewers, .. } => reviewers.clone(),
            Gate::Approval { .. } => Vec::new(),
        },
    }))
}
