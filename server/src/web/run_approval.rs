//! The approval panel: for each step of a run that waits for a person — an approval step
//! of the plan or the review of a step's environment — its question, who may decide, the
//! deadline, a comment box and Approve/Reject; once decided, each decision with its
//! comment. The run page shows it at the top of a waiting run, and of a run whose
//! approval steps were decided (`templates/run_approval.html`, anchor
//! `#approval-<step>`), an approval
//! step's page in place of its (empty) log (`web/log_approval.rs`). `POST
//! /runs/{id}/steps/{step}/approve|reject` decide through the API.
//!
//! Invariants:
//! - The API decides. The buttons are offered exactly when the API's own check
//!   ([`approvals::decider_check`]: writer, named among the deciders, not the run's
//!   starter when excluded) passes for the session's caller; anyone else signed in is told
//!   the API's reason instead, and the anonymous are offered to sign in. A post goes
//!   through the API called in-process as the session's caller ([`forward`]), with the
//!   session's CSRF token, so a forged form or a hand-made post gains nothing the API
//!   would not grant.
//! - Who may decide is read as the decision reads it: an approval's approvers from the
//!   plan, an environment's reviewers from the environment as defined now.
//! - Nothing here is shown to a caller who may not read the run: the run page and the step
//!   page check that first.

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use evaluator::plan::{Action, Plan};
use plue_store::{RunRow, StepRunRow};
use plue_types::status::StepStatus;
use serde::{Deserialize, Serialize};

use super::error::{WebError, WebResult};
use super::forward;
use super::session::Session;
use super::{encode, parse_run_id, Web};
use crate::access::SelfReview;
use crate::api::approvals::{self, Gate};
use crate::api::views::ApprovalView;
use crate::http_error::ApiError;

/// One gate of a run as the panel shows it.
#[derive(Debug, Serialize)]
pub(super) struct GateView {
    pub(super) step: String,
    /// `approval` (a step of the plan) or `review` (of the step's environment).
    pub(super) kind: &'static str,
    /// The environment under review.
    pub(super) environment: Option<String>,
    /// What the approval asks (the plan's `message`).
    pub(super) message: Option<String>,
    /// Who may decide: user names and `@group`s; empty, any writer of the repository.
    pub(super) deciders: Vec<String>,
    /// Whoever started the run may not decide.
    pub(super) exclude_triggerer: bool,
    /// The step's status (`waiting` until decided).
    pub(super) status: StepStatus,
    /// When an undecided step fails (ms since the epoch), while it waits.
    pub(super) deadline: Option<i64>,
    /// The session's caller may decide now (the API's check passes).
    pub(super) may_decide: bool,
    /// Why not, for a signed-in caller who may not.
    pub(super) why_not: Option<String>,
    /// The decisions taken on this step, with their comments (both pages show them).
    pub(super) decisions: Vec<ApprovalView>,
    /// The page a decision returns to: `run` or `step`.
    pub(super) back: &'static str,
}

/// The panels of `run`'s steps that wait for a decision, and of its approval steps
/// already decided (who decided, when, and their comment), in plan order.
pub(super) async fn waiting(
    web: &Web,
    session: &Session,
    run: &RunRow,
    steps: &[StepRunRow],
    plan: Option<&Plan>,
) -> WebResult<Vec<GateView>> {
    let decided: std::collections::HashSet<String> = web
        .store()
        .approvals_of_run(run.id)
        .await?
        .into_iter()
        .map(|row| row.step_id)
        .collect();
    let mut gates = Vec::new();
    for step in steps
        .iter()
        .filter(|s| s.status == StepStatus::Waiting || decided.contains(&s.step_id))
    {
        if let Some(gate) = gate(web, session, run, step, plan, "run").await? {
            gates.push(gate);
        }
    }
    Ok(gates)
}

/// The panel of step `step` of `run`: for an approval step whatever its status, for a
/// step under an environment while its review waits; `None` for any other step. A
/// decision returns to `back` (`run` or `step`).
pub(super) async fn gate(
    web: &Web,
    session: &Session,
    run: &RunRow,
    step: &StepRunRow,
    plan: Option<&Plan>,
    back: &'static str,
) -> WebResult<Option<GateView>> {
    let planned = plan.and_then(|p| p.steps.iter().find(|s| s.id == step.step_id));
    let message = match planned.map(|s| &s.action) {
        Some(Action::Approval(approval)) => approval.message.clone(),
        _ if step.status == StepStatus::Waiting => None,
        // Not an approval, and not waiting for a review: no panel.
        _ => return Ok(None),
    };
    let found = match approvals::gate_of(&web.state, run, &step.step_id).await {
        Ok(gate) => gate,
        // Not a gate, or an environment no longer defined (both 409): the step's own
        // status and reason say what happens; nobody can decide it here.
        Err(ApiError::Client(..)) => return Ok(None),
        Err(ApiError::Internal(e)) => return Err(WebError::Internal(e)),
    };
    let waiting = step.status == StepStatus::Waiting;
    let (may_decide, why_not) = if !waiting {
        (false, None)
    } else {
        match approvals::decider_check(&web.state, &session.caller, run.id, &step.step_id).await {
            Ok(_) => (true, None),
            Err(ApiError::Client(_, reason)) => (false, Some(reason)),
            Err(ApiError::Internal(e)) => return Err(WebError::Internal(e)),
        }
    };
    let decisions = web
        .store()
        .approvals_of_run(run.id)
        .await?
        .into_iter()
        .filter(|row| row.step_id == step.step_id)
        .map(ApprovalView::from)
        .collect();
    Ok(Some(GateView {
        step: step.step_id.clone(),
        kind: match found {
            Gate::Approval { .. } => "approval",
            Gate::Review { .. } => "review",
        },
        environment: found.environment().map(str::to_owned),
        message,
        deciders: found.deciders().to_vec(),
        exclude_triggerer: found.self_review() == SelfReview::Excluded,
        status: step.status,
        deadline: if waiting { step.ready_at } else { None },
        may_decide,
        why_not,
        decisions,
        back,
    }))
}

/// A decision posted from the panel.
#[derive(Debug, Deserialize)]
pub(super) struct DecisionForm {
    csrf: String,
    /// Kept with the decision (the API checks it: one clean line, at most 4096 bytes).
    #[serde(default)]
    comment: String,
    /// `step` to come back to the step's page; anything else, the run's.
    #[serde(default)]
    back: String,
}

/// `POST /runs/{id}/steps/{step}/approve`.
pub(super) async fn approve(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    Form(form): Form<DecisionForm>,
) -> WebResult<Response> {
    decide(&web, &headers, &id, &step, &form, "approve").await
}

/// `POST /runs/{id}/steps/{step}/reject`: the step fails.
pub(super) async fn reject(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    Form(form): Form<DecisionForm>,
) -> WebResult<Response> {
    decide(&web, &headers, &id, &step, &form, "reject").await
}

async fn decide(
    web: &Web,
    headers: &HeaderMap,
    id: &str,
    step: &str,
    form: &DecisionForm,
    verb: &str,
) -> WebResult<Response> {
    let id = parse_run_id(id)?;
    let api_path = format!("/api/runs/{id}/steps/{}/{verb}", encode(step));
    let json = serde_json::json!({ "comment": form.comment.trim() });
    forward::post(web, headers, &form.csrf, &api_path, Some(json)).await?;
    // Only the two pages of this run: never a URL the form names.
    let to = match form.back.as_str() {
        "step" => format!("/runs/{id}/steps/{}", encode(step)),
        _ => format!("/runs/{id}"),
    };
    Ok(Redirect::to(&to).into_response())
}
