//! `/runs/{id}`: one run — its DAG as an SVG coloured by state, its steps with attempts,
//! durations, exit codes and reasons, the evaluation error of a workflow file that did not
//! evaluate, how many artifacts each step kept (links to the API's paged listing and the
//! step's tar), and cancel / re-run forms. `/runs/{id}/live` is the changing part alone,
//! which `assets/live.js` polls until the run is final.
//!
//! Invariants:
//! - The page's size follows the run's steps, never its files: artifacts are counted a
//!   step at a time from the blob rows (one row per step, whatever it kept), and the files
//!   themselves are listed only by the API, a page at a time.
//! - A run the caller may not read is the 404 of a missing run (the sign-in page for the
//!   anonymous); cancel, re-run and the approval forms are offered only to writers of the
//!   run's repository (admins for a local run), and the API decides again when they post.

use std::collections::HashMap;

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use plue_types::status::{AttemptStatus, RunState, StatementState};
use serde::Serialize;

use super::dag::{self, Layout};
use super::error::{WebError, WebResult};
use super::forward;
use super::session::{readable_run, Chrome, CsrfForm};
use super::{parse_run_id, render, Web};
use crate::access::Role;
use crate::api::run_plan;
use crate::api::views::RunView;

#[derive(Serialize)]
struct RunPage {
    chrome: Chrome,
    run: RunView,
    dag: Layout,
    /// Whether the run is over (the page stops polling).
    done: bool,
    /// The workflow file's evaluation error, for a run that has no plan.
    eval_error: Option<String>,
    can_cancel: bool,
    can_rerun: bool,
    /// The caller may act on the run (writer of its repository).
    can_write: bool,
    /// Each step's attempts (by step id), shown for steps that had more than one.
    attempts: HashMap<String, Vec<AttemptView>>,
    /// What each step kept (`artifacts=`), counted.
    artifacts: Vec<StepArtifactsView>,
    /// Files kept by all steps.
    artifact_files: i64,
    /// What the run's `llm` steps proposed to the forge (`safe_outputs`), each with its
    /// provenance statement's state.
    proposals: Vec<ProposalEntry>,
    /// Why the run failed, its annotations and outputs (`run_failure.html`).
    explained: super::run_failure::Explained,
    /// Who started it, its inputs, its commit message or issue (`run_facts.html`).
    facts: super::run_facts::RunFacts,
    /// Steps finished of all steps (`12/60`, `run_timeline.rs`).
    progress: super::run_timeline::Progress,
    /// The steps waiting for a person's decision (`run_approval.html`).
    approvals: Vec<super::run_approval::GateView>,
    /// Each step's kind (`bash`, `python`, `llm`, `approval`) by id, from the plan.
    kinds: HashMap<String, &'static str>,
}

/// Each step's kind (`bash`, `python`, `llm`, `approval`) by id; empty without a plan.
pub(super) fn step_kinds(plan: Option<&evaluator::plan::Plan>) -> HashMap<String, &'static str> {
    plan.map(|plan| {
        plan.steps
            .iter()
            .map(|s| (s.id.clone(), s.action.kind()))
            .collect()
    })
    .unwrap_or_default()
}

/// A proposal on the run page, with its provenance statement when the engine signed one.
#[derive(Serialize)]
struct ProposalEntry {
    #[serde(flatten)]
    proposal: crate::api::proposals::ProposalView,
    statement: Option<StatementLine>,
}

/// Whether a proposal's signed statement landed: `applied` (served, `url`), `pending` (its
/// write is under way) or `failed` (never served; `reason`, as the run's wall shows it).
#[derive(Serialize)]
struct StatementLine {
    state: StatementState,
    reason: Option<String>,
    /// The statement's API URL, for an applied one.
    url: Option<String>,
}

impl StatementLine {
    fn new(run_id: i64, row: &plue_store::StatementRow) -> StatementLine {
        use plue_store::Landing;
        let (reason, url) = match row.landing() {
            Landing::Applied => (
                None,
                Some(format!(
                    "/api/runs/{run_id}/proposals/{}/provenance",
                    row.proposal_id
                )),
            ),
            Landing::Failed(reason) => (Some(reason.to_owned()), None),
            Landing::Pending => (None, None),
        };
        StatementLine {
            state: row.state,
            reason,
            url,
        }
    }
}

#[derive(Serialize)]
struct StepArtifactsView {
    step: String,
    attempt: i64,
    files: i64,
    /// The tar's bytes.
    size: i64,
    /// The API's listing of the step's files (a page at a time).
    list_url: String,
    /// The step's files as one tar.
    tar_url: String,
}

#[derive(Serialize)]
struct AttemptView {
    number: i64,
    /// The review-loop iteration it ran in.
    iteration: i64,
    status: AttemptStatus,
    exit_code: Option<i64>,
    reason: Option<String>,
    duration_ms: Option<i64>,
    runner: Option<String>,
}

async fn load(web: &Web, headers: &HeaderMap, raw_id: &str) -> WebResult<RunPage> {
    let id = parse_run_id(raw_id)?;
    let path = format!("/runs/{id}");
    let (session, run) = readable_run(web, headers, id, &path).await?;
    let store = web.store();
    let can_write = session.may(store, run.repo_id, Role::Writer).await?;
    // The anonymous are offered to sign in; a signed-in reader is offered nothing.
    let offered = can_write || !session.signed_in();
    let steps = store.step_runs(id).await?;
    let plan = run_plan(store, id).await?;
    let dag = dag::of_run(&steps, plan.as_ref());
    let step_ids: HashMap<i64, &str> = steps.iter().map(|s| (s.id, s.step_id.as_str())).collect();
    let mut attempts: HashMap<String, Vec<AttemptView>> = HashMap::new();
    let attempt_rows = store.dashboard_attempts(id).await?;
    let step_run_ids: Vec<i64> = steps.iter().map(|s| s.id).collect();
    for attempt in attempt_rows.iter().cloned() {
        let Some(step) = step_ids.get(&attempt.step_run_id) else {
            continue;
        };
        attempts
            .entry(step.to_string())
            .or_default()
            .push(AttemptView {
                duration_ms: attempt
                    .finished_at
                    .zip(attempt.started_at)
                    .map(|(f, s)| f - s),
                number: attempt.number,
                iteration: attempt.iteration,
                status: attempt.status,
                exit_code: attempt.exit_code,
                reason: attempt.reason,
                runner: attempt.runner,
            });
    }
    let artifacts: Vec<StepArtifactsView> = store
        .artifact_steps(id)
        .await?
        .into_iter()
        .map(|row| StepArtifactsView {
            list_url: format!(
                "/api/runs/{id}/artifacts?step={}",
                super::encode(&row.step_id)
            ),
            tar_url: format!(
                "/api/runs/{id}/steps/{}/artifacts",
                super::encode(&row.step_id)
            ),
            step: row.step_id,
            attempt: row.attempt,
            files: row.files,
            size: row.size,
        })
        .collect();
    let artifact_files = artifacts.iter().map(|a| a.files).sum();
    let mut statements: HashMap<i64, StatementLine> = store
        .statements_of_run(id)
        .await?
        .iter()
        .map(|row| (row.proposal_id, StatementLine::new(id, row)))
        .collect();
    let proposals = crate::api::proposals::views(store, store.list_for_run(id).await?)
        .await?
        .into_iter()
        .map(|proposal| ProposalEntry {
            statement: statements.remove(&proposal.id),
            proposal,
        })
        .collect();
    let explained =
        super::run_failure::explain(store, &run, &steps, plan.as_ref(), offered).await?;
    let facts = super::run_facts::load(web, &run).await?;
    let approvals =
        super::run_approval::waiting(web, &session, &run, &steps, plan.as_ref()).await?;
    let progress = super::run_timeline::Progress::of(&steps);
    let kinds = step_kinds(plan.as_ref());
    let evaluated = !run.plan_hash.is_empty();
    let eval_error = (!evaluated).then(|| run.reason.clone().unwrap_or_default());
    let done = !matches!(
        run.status,
        RunState::Pending | RunState::Queued | RunState::Running
    );
    Ok(RunPage {
        chrome: session.chrome(&path),
        can_cancel: offered && !done && !run.cancel_requested,
        can_rerun: offered && done && evaluated,
        can_write,
        run: RunView::new(run, Some(steps))
            .with_loops(plan.as_ref())
            .with_costs(&step_run_ids, &attempt_rows),
        attempts,
        artifacts,
        artifact_files,
        proposals,
        explained,
        facts,
        progress,
        approvals,
        kinds,
        dag,
        done,
        eval_error,
    })
}

/// `GET /runs/{id}`.
pub(super) async fn page(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> WebResult<Html<String>> {
    let page = load(&web, &headers, &id).await?;
    Ok(Html(render::page("run.html", &page)?))
}

/// `GET /runs/{id}/live`: the DAG and the steps alone.
pub(super) async fn live(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> WebResult<Html<String>> {
    let page = load(&web, &headers, &id).await?;
    Ok(Html(render::page("run_live.html", &page)?))
}

/// `POST /runs/{id}/cancel` (a form with the session's CSRF token).
pub(super) async fn cancel(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> WebResult<Response> {
    let id = parse_run_id(&id)?;
    let api_path = format!("/api/runs/{id}/cancel");
    write_then_show(&web, &headers, &form, &api_path, None, id).await
}

/// `POST /runs/{id}/rerun`: starts a new run of the same plan and shows it.
pub(super) async fn rerun(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> WebResult<Response> {
    let id = parse_run_id(&id)?;
    let api_path = format!("/api/runs/{id}/rerun");
    start_rerun(&web, &headers, &form, &api_path).await
}

/// `POST /runs/{id}/rerun-failed`: the API's re-run with `failed=true`, then the new run.
pub(super) async fn rerun_failed(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> WebResult<Response> {
    let id = parse_run_id(&id)?;
    let api_path = format!("/api/runs/{id}/rerun?failed=true");
    start_rerun(&web, &headers, &form, &api_path).await
}

/// Posts the re-run `api_path` (a re-run route of the API) and shows the new run.
pub(super) async fn start_rerun(
    web: &Web,
    headers: &HeaderMap,
    form: &CsrfForm,
    api_path: &str,
) -> WebResult<Response> {
    let response = forward::post(web, headers, &form.csrf, api_path, None).await?;
    forward::show_created_run(response, "the re-run").await
}

/// `POST /runs/{id}/proposals/{pid}/approve|reject`: decides a waiting proposal of the
/// run's safe outputs through the API (which checks who may decide), then the run again.
pub(super) async fn decide_proposal(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((id, pid, verb)): Path<(String, String, String)>,
    Form(form): Form<CsrfForm>,
) -> WebResult<Response> {
    let id = parse_run_id(id.as_str())?;
    let approve = match verb.as_str() {
        "approve" => true,
        "reject" => false,
        other => return Err(WebError::not_found(format!("no such decision '{other}'"))),
    };
    let api_path = format!("/api/runs/{id}/proposals/{}/decision", super::encode(&pid));
    let body = serde_json::json!({ "approve": approve });
    write_then_show(&web, &headers, &form, &api_path, Some(body), id).await
}

/// [`forward::post`], then the run's page again; an API error is shown as the API said it.
async fn write_then_show(
    web: &Web,
    headers: &HeaderMap,
    form: &CsrfForm,
    api_path: &str,
    json: Option<serde_json::Value>,
    id: i64,
) -> WebResult<Response> {
    forward::post(web, headers, &form.csrf, api_path, json).await?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}
