//! `/repos` and `/repos/{owner}/{name}`: the registered repositories; for one of them, each
//! workflow's last run per branch, the evaluation error of its default branch, its cron
//! schedules with their next fire time, and a manual-dispatch form built from the manual
//! trigger's declared inputs (options as a select, required ones marked).
//! `POST /repos/{owner}/{name}/dispatch` hands the form to the API's dispatch.
//!
//! Workflows are known from their runs (the newest [`RECENT`] of the repository): a file
//! that never ran is not listed, its schedules are.
//!
//! Invariant: the list shows only repositories the caller may read; a repository it may
//! not read is the 404 of a missing one (the sign-in page for the anonymous); the dispatch
//! form is offered to its writers only, and the API decides again when it posts.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{Html, IntoResponse, Redirect, Response};
use evaluator::plan::{Plan, Trigger};
use serde::Serialize;

use super::error::{WebError, WebResult};
use super::forward::{self, ApiCall};
use super::session::{denied, Chrome, Session};
use super::{encode, render, Web};
use crate::access::Role;
use crate::api::views::{RepoView, RunView, ScheduleView};
use crate::store::{RepoRow, RunRow};

/// How many of a repository's newest runs the page looks at.
const RECENT: i64 = 500;
/// Form fields of dispatch inputs are `input.<name>`.
const INPUT_PREFIX: &str = "input.";

#[derive(Serialize)]
struct ReposPage {
    chrome: Chrome,
    repos: Vec<RepoEntry>,
}

#[derive(Serialize)]
struct RepoEntry {
    repo: RepoView,
    /// Its page.
    href: String,
}

/// `/repos/{owner}/{name}` of a repository, each part encoded.
fn href(name: &str) -> String {
    let (owner, repo) = name.split_once('/').unwrap_or((name, ""));
    format!("/repos/{}/{}", encode(owner), encode(repo))
}

/// `GET /repos`.
pub(super) async fn list(State(web): State<Web>, headers: HeaderMap) -> WebResult<Html<String>> {
    let session = Session::load(&web, &headers).await?;
    let readable = session.caller.readable(web.store()).await?;
    let repos: Vec<RepoRow> = web
        .store()
        .list_repos()
        .await?
        .into_iter()
        .filter(|repo| readable.allows(Some(repo.id)))
        .collect();
    let page = ReposPage {
        chrome: session.chrome("/repos"),
        repos: repos
            .iter()
            .map(|repo| RepoEntry {
                repo: RepoView::new(repo),
                href: href(&repo.name),
            })
            .collect(),
    };
    Ok(Html(render::page("repos.html", &page)?))
}

#[derive(Serialize)]
struct RepoPage {
    chrome: Chrome,
    repo: RepoView,
    /// `/repos/{owner}/{name}` (encoded).
    base: String,
    workflows: Vec<WorkflowEntry>,
    schedules: Vec<ScheduleView>,
    /// The caller may dispatch (writer).
    can_write: bool,
}

#[derive(Serialize)]
struct WorkflowEntry {
    path: String,
    name: String,
    /// The newest run of each branch (ref), newest first.
    latest: Vec<RunView>,
    /// The newest run of the default branch when its file did not evaluate: (run, error).
    eval_error: Option<(i64, String)>,
    /// The manual trigger's inputs, when the newest evaluated plan has one.
    dispatch: Option<Vec<InputField>>,
}

#[derive(Serialize)]
struct InputField {
    name: String,
    /// The form field's name.
    field: String,
    required: bool,
    default: Option<String>,
    description: Option<String>,
    options: Vec<String>,
}

/// `GET /repos/{owner}/{name}`.
pub(super) async fn page(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> WebResult<Html<String>> {
    let base = format!("/repos/{}/{}", encode(&owner), encode(&name));
    let session = Session::load(&web, &headers).await?;
    let store = web.store();
    let repo = session
        .caller
        .visible_repo(store, &format!("{owner}/{name}"), Role::Reader)
        .await
        .map_err(|e| denied(e, &base))?;
    let can_write = session.may(store, Some(repo.id), Role::Writer).await?;
    let runs = store.list_runs_of_repo(&repo.name, RECENT).await?;
    let default_ref = repo
        .default_branch
        .as_ref()
        .map(|b| format!("refs/heads/{b}"));
    let mut workflows = Vec::new();
    for (path, runs) in by_workflow(runs) {
        let eval_error = runs
            .iter()
            .find(|r| Some(&r.git_ref) == default_ref.as_ref())
            .filter(|r| r.plan_hash.is_empty())
            .map(|r| (r.id, r.reason.clone().unwrap_or_default()));
        let dispatch = match runs.iter().find(|r| !r.plan_hash.is_empty()) {
            Some(run) => manual_inputs(&web, run.id).await?,
            None => None,
        };
        let mut seen = Vec::new();
        let mut latest = Vec::new();
        for run in runs {
            if !seen.contains(&run.git_ref) {
                seen.push(run.git_ref.clone());
                latest.push(RunView::new(run, None));
            }
        }
        workflows.push(WorkflowEntry {
            name: latest
                .first()
                .map(|r| r.workflow.clone())
                .unwrap_or_default(),
            path,
            latest,
            eval_error,
            dispatch,
        });
    }
    let schedules = store
        .schedules_of_repo(repo.id)
        .await?
        .into_iter()
        .map(|row| ScheduleView::new(&repo.name, row))
        .collect();
    let page = RepoPage {
        chrome: session.chrome(&base),
        can_write,
        repo: RepoView::new(&repo),
        base,
        workflows,
        schedules,
    };
    Ok(Html(render::page("repo.html", &page)?))
}

/// Runs grouped by workflow file, in order of each file's newest run.
fn by_workflow(runs: Vec<RunRow>) -> Vec<(String, Vec<RunRow>)> {
    let mut groups: Vec<(String, Vec<RunRow>)> = Vec::new();
    for run in runs {
        match groups
            .iter_mut()
            .find(|(path, _)| *path == run.workflow_path)
        {
            Some((_, list)) => list.push(run),
            None => groups.push((run.workflow_path.clone(), vec![run])),
        }
    }
    groups
}

/// The manual trigger's inputs of the run's plan, if it has one.
async fn manual_inputs(web: &Web, run_id: i64) -> WebResult<Option<Vec<InputField>>> {
    let Some(documents) = web.store().run_documents(run_id).await? else {
        return Ok(None);
    };
    let Ok(plan) = serde_json::from_str::<Plan>(&documents.plan) else {
        return Ok(None);
    };
    Ok(plan.triggers.into_iter().find_map(|trigger| match trigger {
        Trigger::Manual { inputs } => Some(
            inputs
                .into_iter()
                .map(|(name, input)| InputField {
                    field: format!("{INPUT_PREFIX}{name}"),
                    name,
                    required: input.required && input.default.is_none(),
                    default: input.default,
                    description: input.description,
                    options: input.options,
                })
                .collect(),
        ),
        _ => None,
    }))
}

/// `POST /repos/{owner}/{name}/dispatch`: `csrf`, `workflow`, `ref`, `input.<name>`...
pub(super) async fn dispatch(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> WebResult<Response> {
    let session = Session::load(&web, &headers).await?;
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    session.check_write(&headers, field("csrf"))?;
    let inputs: BTreeMap<&str, &str> = fields
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(INPUT_PREFIX)?, v.as_str())))
        // An empty optional field leaves the input to its default.
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let mut body = serde_json::json!({"workflow": field("workflow"), "inputs": inputs});
    if !field("ref").trim().is_empty() {
        body["ref"] = field("ref").trim().into();
    }
    let uri = format!("/api/repos/{}/{}/dispatch", encode(&owner), encode(&name));
    let call = ApiCall {
        method: Method::POST,
        uri: &uri,
        pass: &[],
        json: Some(body),
    };
    let response = forward::call(&web, &session, call, &headers, None).await?;
    if !response.status().is_success() {
        return Err(forward::api_error(response).await);
    }
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map_err(|e| WebError::Internal(anyhow::anyhow!("reading the dispatch's answer: {e}")))?;
    let created: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| WebError::Internal(anyhow::anyhow!("the dispatch's answer: {e}")))?;
    match created["run_id"].as_i64() {
        Some(run_id) => Ok(Redirect::to(&format!("/runs/{run_id}")).into_response()),
        None => Err(WebError::Internal(anyhow::anyhow!(
            "the dispatch's answer has no run_id: {created}"
        ))),
    }
}
