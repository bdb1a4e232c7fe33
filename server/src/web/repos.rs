//! `/repos` and `/repos/{owner}/{name}`: the registered repositories; for one of them,
//! every workflow file of its default branch's head ([`plue_core::registry::workflows`]) with
//! its triggers, its evaluation error, each branch's last run, and — for a workflow with a
//! manual trigger — a dispatch form of typed inputs (a checkbox for a boolean, a select for
//! options, a number field for a number, text otherwise; defaults filled, required ones
//! marked); then the files that ran but are no longer on that head, the cron schedules,
//! and the repository's newest step cache entries ([`super::repo_caches`]: each with its
//! partition, the trust it was written under, who caused the run that saved it, and the
//! run).
//! `POST /repos/{owner}/{name}/dispatch` hands a form to the API's dispatch; when the API
//! refuses, the page comes back with the refusal on that form and the inputs as they were
//! typed.
//!
//! An engine without an evaluator (no registry) lists the workflows known from their runs
//! (the newest [`RECENT`]) with the inputs of their newest plan.
//!
//! Invariants: the list shows only repositories the caller may read (a visitor who is not
//! signed in is told that signing in may show more; only an admin is told how to register
//! one); a repository it may not read is the 404 of a missing one (the sign-in page for the
//! anonymous); the dispatch form is offered to its writers only, and the API decides again
//! when it posts. A refusal shown on a form is the API's sentence (never git's output: the
//! registry logs that).

use std::collections::BTreeMap;

use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use plue_core::registry::workflows::{Listed, Listing};
use plue_store::{RepoRow, RunRow};
use serde::Serialize;

use super::error::{WebError, WebResult};
use super::forward::{self, ApiCall};
use super::session::{denied, Chrome, Session};
use super::{encode, render, Web};
use crate::access::Role;
use crate::api::views::{RepoView, RunView, ScheduleView};
use crate::api::workflows::{manual_inputs, TriggerView};

/// How many of a repository's newest runs the page looks at.
const RECENT: i64 = 500;
/// Form fields of dispatch inputs are `input.<name>`.
const INPUT_PREFIX: &str = "input.";

#[derive(Serialize)]
struct ReposPage {
    chrome: Chrome,
    repos: Vec<RepoEntry>,
    /// The caller may register repositories (an installation admin).
    may_register: bool,
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
        may_register: session.caller.is_admin(),
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
    /// The head the workflows were read at (`None`: no evaluator, or never read).
    head: Option<String>,
    /// Why the default branch could not be read just now.
    problem: Option<String>,
    /// The default branch's workflows.
    workflows: Vec<WorkflowEntry>,
    /// Files that ran but are not on the default branch's head.
    elsewhere: Vec<WorkflowEntry>,
    schedules: Vec<ScheduleView>,
    /// The newest cache entries.
    caches: Vec<super::repo_caches::CacheRow>,
    /// The caller may dispatch (writer).
    can_write: bool,
}

#[derive(Serialize)]
struct WorkflowEntry {
    path: String,
    name: String,
    /// What starts it.
    triggers: Vec<TriggerView>,
    /// The newest run of each branch (ref), newest first.
    latest: Vec<RunView>,
    /// The file's evaluation error at the default branch's head, and the run that shows
    /// it (when the engine has no evaluator, the error comes from that run).
    eval_error: Option<String>,
    eval_run: Option<i64>,
    /// The dispatch form, when the workflow has a manual trigger.
    dispatch: Option<DispatchForm>,
}

#[derive(Serialize)]
struct DispatchForm {
    /// The element id (`dispatch-N`), for labels and the refusal's link.
    id: String,
    /// The ref field's value.
    git_ref: String,
    inputs: Vec<InputField>,
    /// Why the API refused this form's last post.
    error: Option<String>,
}

#[derive(Serialize)]
struct InputField {
    name: String,
    /// The form field's name.
    field: String,
    /// `checkbox`, `select`, `number` or `text`.
    control: &'static str,
    required: bool,
    /// The value shown: what was posted, else the default.
    value: String,
    /// A checkbox's state.
    checked: bool,
    /// Whether the select offers an empty choice (it has no default).
    blank: bool,
    default: Option<String>,
    description: Option<String>,
    options: Vec<String>,
}

/// A dispatch form as it was posted, shown again with the API's refusal.
struct Posted {
    workflow: String,
    git_ref: String,
    inputs: BTreeMap<String, String>,
    error: String,
}

/// `GET /repos/{owner}/{name}`.
pub(super) async fn page(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> WebResult<Html<String>> {
    let session = Session::load(&web, &headers).await?;
    let page = load(&web, &session, &owner, &name, None).await?;
    Ok(Html(render::page("repo.html", &page)?))
}

async fn load(
    web: &Web,
    session: &Session,
    owner: &str,
    name: &str,
    posted: Option<&Posted>,
) -> WebResult<RepoPage> {
    let base = format!("/repos/{}/{}", encode(owner), encode(name));
    let store = web.store();
    let repo = session
        .caller
        .visible_repo(store, &format!("{owner}/{name}"), Role::Reader)
        .await
        .map_err(|e| denied(e, &base))?;
    let can_write = session.may(store, Some(repo.id), Role::Writer).await?;
    let runs = by_workflow(store.list_runs_of_repo(&repo.name, RECENT).await?);
    let listing = match &web.state.registry {
        Some(registry) => registry.default_workflows(&repo).await,
        None => Arc::new(listing_from_runs(web, &repo, &runs).await?),
    };
    let default_ref = listing
        .branch
        .as_ref()
        .or(repo.default_branch.as_ref())
        .cloned()
        .unwrap_or_default();
    let mut workflows = Vec::new();
    for (index, listed) in listing.workflows.iter().enumerate() {
        let ran = runs
            .iter()
            .find(|(path, _)| *path == listed.path)
            .map_or(&[][..], |(_, runs)| runs.as_slice());
        workflows.push(entry(listed, ran, index, &default_ref, posted));
    }
    let elsewhere = runs
        .iter()
        .filter(|(path, _)| !listing.workflows.iter().any(|l| l.path == *path))
        .map(|(path, ran)| WorkflowEntry {
            path: path.clone(),
            name: ran
                .first()
                .map(|r| r.workflow_name.clone())
                .unwrap_or_default(),
            triggers: Vec::new(),
            latest: latest(ran),
            eval_error: None,
            eval_run: None,
            dispatch: None,
        })
        .collect();
    let schedules = store
        .schedules_of_repo(repo.id)
        .await?
        .into_iter()
        .map(|row| ScheduleView::new(&repo.name, row))
        .collect();
    let caches = super::repo_caches::newest(store, repo.id).await?;
    Ok(RepoPage {
        chrome: session.chrome(&base),
        can_write,
        repo: RepoView::new(&repo),
        base,
        head: listing.sha.clone(),
        problem: listing.problem.clone(),
        workflows,
        elsewhere,
        schedules,
        caches,
    })
}

/// The page's entry of one workflow file of the default branch.
fn entry(
    listed: &Listed,
    ran: &[RunRow],
    index: usize,
    default_ref: &str,
    posted: Option<&Posted>,
) -> WorkflowEntry {
    let posted = posted.filter(|p| p.workflow == listed.path);
    let (name, triggers, eval_error, inputs) = match &listed.evaluated {
        Ok(plan) => (
            plan.name.clone(),
            plan.triggers.iter().map(TriggerView::new).collect(),
            None,
            manual_inputs(plan),
        ),
        Err(message) => (
            file_name(&listed.path).to_string(),
            Vec::new(),
            Some(message.clone()),
            None,
        ),
    };
    // The run that shows the error: the newest on the default branch that did not evaluate.
    let eval_run = eval_error.as_ref().and_then(|_| {
        ran.iter()
            .find(|r| r.git_ref == format!("refs/heads/{default_ref}") && r.plan_hash.is_empty())
            .map(|r| r.id)
    });
    let dispatch = inputs.map(|inputs| DispatchForm {
        id: format!("dispatch-{index}"),
        git_ref: posted.map_or_else(|| default_ref.to_string(), |p| p.git_ref.clone()),
        error: posted.map(|p| p.error.clone()),
        inputs: inputs
            .into_iter()
            .map(|input| {
                let value = match posted {
                    Some(p) => p.inputs.get(&input.name).cloned().unwrap_or_default(),
                    None => input.default.clone().unwrap_or_default(),
                };
                let control = if input.is_boolean() {
                    "checkbox"
                } else if !input.options.is_empty() {
                    "select"
                } else if input.kind == "number" {
                    "number"
                } else {
                    "text"
                };
                InputField {
                    field: format!("{INPUT_PREFIX}{}", input.name),
                    checked: value == "true",
                    blank: input.default.is_none(),
                    control,
                    value,
                    name: input.name,
                    required: input.required,
                    default: input.default,
                    description: input.description,
                    options: input.options,
                }
            })
            .collect(),
    });
    WorkflowEntry {
        path: listed.path.clone(),
        name,
        triggers,
        latest: latest(ran),
        eval_error,
        eval_run,
        dispatch,
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The newest run of each branch (ref), newest first.
fn latest(runs: &[RunRow]) -> Vec<RunView> {
    let mut seen = Vec::new();
    let mut latest = Vec::new();
    for run in runs {
        if !seen.contains(&run.git_ref) {
            seen.push(run.git_ref.clone());
            latest.push(RunView::new(run.clone(), None));
        }
    }
    latest
}

/// Without an evaluator: the workflows known from runs — the default branch's newest
/// run's evaluation error, else the newest evaluated plan.
async fn listing_from_runs(
    web: &Web,
    repo: &RepoRow,
    runs: &[(String, Vec<RunRow>)],
) -> WebResult<Listing> {
    let default_ref = repo
        .default_branch
        .as_ref()
        .map(|b| format!("refs/heads/{b}"));
    let mut workflows = Vec::new();
    for (path, runs) in runs {
        let failed = runs
            .iter()
            .find(|r| Some(&r.git_ref) == default_ref.as_ref())
            .filter(|r| r.plan_hash.is_empty());
        let evaluated = match failed {
            Some(run) => Err(run.reason.clone().unwrap_or_default()),
            None => match runs.iter().find(|r| !r.plan_hash.is_empty()) {
                Some(run) => match crate::api::run_plan(web.store(), run.id).await? {
                    Some(plan) => Ok(Arc::new(plan)),
                    None => continue,
                },
                None => continue,
            },
        };
        workflows.push(Listed {
            path: path.clone(),
            evaluated,
        });
    }
    Ok(Listing {
        branch: repo.default_branch.clone(),
        workflows,
        ..Listing::default()
    })
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

/// `POST /repos/{owner}/{name}/dispatch`: `csrf`, `workflow`, `ref`, `input.<name>`...
/// A boolean's checkbox follows a hidden `false` of the same name: the last value wins.
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
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    session.check_write(&headers, field("csrf"))?;
    // In order, so a checkbox's `true` replaces its hidden `false`.
    let typed: BTreeMap<String, String> = fields
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(INPUT_PREFIX)?.to_string(), v.clone())))
        .collect();
    let inputs: BTreeMap<&str, &str> = typed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        // An empty optional field leaves the input to its default.
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let git_ref = field("ref").trim();
    let mut body = serde_json::json!({"workflow": field("workflow"), "inputs": inputs});
    if !git_ref.is_empty() {
        body["ref"] = git_ref.into();
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
        let (status, error) = match forward::api_error(response).await {
            WebError::Client(status, message) if status.is_server_error() => (
                status,
                match status {
                    StatusCode::NOT_IMPLEMENTED => sentence(&message),
                    _ => "The engine failed to start the run (its log says why).".to_string(),
                },
            ),
            // Not allowed (or signed out): no form of the caller's shows it, the error page does.
            WebError::Client(
                status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                message,
            ) => return Err(WebError::Client(status, message)),
            // The page is the answer, as a form shown again with its errors is (200): the
            // browser logs a 4xx page as an error.
            WebError::Client(_, message) => (StatusCode::OK, sentence(&message)),
            other => return Err(other),
        };
        let posted = Posted {
            workflow: field("workflow").to_string(),
            git_ref: git_ref.to_string(),
            inputs: typed,
            error,
        };
        let page = load(&web, &session, &owner, &name, Some(&posted)).await?;
        let html = Html(render::page("repo.html", &page)?);
        return Ok((status, html).into_response());
    }
    forward::show_created_run(response, "the dispatch").await
}

/// The API's message as a sentence (ending with a full stop; its first word kept as it
/// is: it may be a name, `acme/app`).
fn sentence(message: &str) -> String {
    let mut text = message.trim().to_string();
    if text.is_empty() {
        return "the API refused it.".to_string();
    }
    if !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_sentences() {
        assert_eq!(
            sentence("input 'count' must be a number, not 'x' "),
            "input 'count' must be a number, not 'x'."
        );
        assert_eq!(sentence("acme/app is gone."), "acme/app is gone.");
        assert_eq!(sentence(""), "the API refused it.");
    }
}
