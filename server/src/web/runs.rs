//! `/`: the runs, newest first, filtered by repository, workflow, branch, event and status
//! from the query string, 50 a page by keyset (`?before=<id>`); `/runs/rows` is the same
//! table alone, which `assets/live.js` polls on the first page so new runs and state
//! changes appear.
//!
//! Invariant: the caller sees only runs of repositories it may read (local runs: admins),
//! filtered in the query, and the filters offer only those repositories' workflows. A
//! visitor who is not signed in is told that signing in may show more (with the sign-in
//! link back to this page); only an admin, who may register repositories, is told how.
//! On a phone each row is a card (`assets/app.css`) with status, name, time, duration and
//! reason.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use plue_store::RunFilter;
use plue_types::status::RunState;
use serde::{Deserialize, Serialize};

use super::error::{WebError, WebResult};
use super::session::{Chrome, Session};
use super::{encode, render, Web};
use crate::access::Readable;
use crate::api::views::RunView;

const PAGE: i64 = 50;
/// Longest filter value accepted (longer ones match nothing anyway).
const MAX_FILTER: usize = 512;
const EVENTS: &[&str] = &[
    "push",
    "pull_request",
    "schedule",
    "manual",
    "issue",
    "comment",
];

#[derive(Debug, Default, Deserialize, Serialize)]
pub(super) struct RunsQuery {
    #[serde(default)]
    repo: String,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    branch: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    before: String,
}

impl RunsQuery {
    fn filter(&self) -> WebResult<RunFilter> {
        let value = |name: &str, text: &str| -> WebResult<Option<String>> {
            let text = text.trim();
            if text.len() > MAX_FILTER {
                return Err(WebError::bad_request(format!(
                    "The {name} filter is longer than {MAX_FILTER} bytes."
                )));
            }
            Ok((!text.is_empty()).then(|| text.to_string()))
        };
        let before = match self.before.trim() {
            "" => None,
            text => Some(text.parse::<i64>().map_err(|_| {
                WebError::bad_request(format!("'{text}' is not a run id (before=)."))
            })?),
        };
        Ok(RunFilter {
            repository: value("repository", &self.repo)?,
            workflow: value("workflow", &self.workflow)?,
            branch: value("branch", &self.branch)?,
            event: value("event", &self.event)?,
            status: value("status", &self.status)?,
            before,
        })
    }

    /// The query string of these filters (without `before`), `&`-joined, encoded.
    fn filters_query(&self) -> String {
        [
            ("repo", &self.repo),
            ("workflow", &self.workflow),
            ("branch", &self.branch),
            ("event", &self.event),
            ("status", &self.status),
        ]
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v.trim())))
        .collect::<Vec<_>>()
        .join("&")
    }
}

#[derive(Serialize)]
struct RunsPage<'a> {
    chrome: Chrome,
    query: &'a RunsQuery,
    runs: Vec<RunView>,
    /// The next page's URL, when this one is full.
    next: Option<String>,
    /// The polled table's URL on the first page (later pages do not change on their own).
    live: Option<String>,
    /// The newest page's URL with the same filters.
    first: String,
    /// The statuses a run is filtered by: every one a list shows.
    statuses: &'static [RunState],
    events: &'static [&'static str],
    repositories: Vec<String>,
    workflows: Vec<String>,
    /// Whether any run is still queued or running (the live table keeps polling).
    active: bool,
    /// Steps finished of all steps, by run id (`12/60`).
    progress: std::collections::HashMap<i64, super::run_timeline::Progress>,
    /// The caller may register repositories (an installation admin): the empty list says
    /// how.
    may_register: bool,
}

async fn load<'a>(
    web: &Web,
    headers: &HeaderMap,
    uri: &Uri,
    query: &'a RunsQuery,
    // The filters' choices (for the whole page, not the polled table).
    choices: bool,
) -> WebResult<RunsPage<'a>> {
    let session = Session::load(web, headers).await?;
    let filter = query.filter()?;
    let store = web.store();
    let readable = session.caller.readable(store).await?;
    let repos: Option<Vec<i64>> = match &readable {
        Readable::All => None,
        Readable::Repos(ids) => Some(ids.iter().copied().collect()),
    };
    let rows = store.runs_page(&filter, repos.as_deref(), PAGE).await?;
    let filters = query.filters_query();
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|r| r.id))
        .flatten()
        .map(|id| with_query(&format!("before={id}"), &filters));
    let first = with_query("", &filters);
    // Sign-in returns to the page, also from its polled table.
    let path = match uri.path() {
        "/runs/rows" => first.clone(),
        _ => uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
    };
    let live = filter.before.is_none().then(|| {
        format!(
            "/runs/rows{}",
            with_query("", &filters).trim_start_matches('/')
        )
    });
    let workflows = match choices {
        true => readable_workflows(web, &readable).await?,
        false => Vec::new(),
    };
    let mut repositories: Vec<String> = workflows.iter().map(|(s, _)| s.clone()).collect();
    repositories.dedup();
    let mut names: Vec<String> = workflows.into_iter().map(|(_, n)| n).collect();
    names.sort();
    names.dedup();
    let runs: Vec<RunView> = rows.into_iter().map(|r| RunView::new(r, None)).collect();
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let progress = store
        .run_progress(&ids)
        .await?
        .into_iter()
        .map(|p| {
            (
                p.run_id,
                super::run_timeline::Progress::counted(p.finished, p.total),
            )
        })
        .collect();
    Ok(RunsPage {
        chrome: session.chrome(&path),
        may_register: session.caller.is_admin(),
        active: runs.iter().any(|r| !r.status.is_final()),
        query,
        runs,
        next,
        live,
        first,
        statuses: RunState::ALL,
        events: EVENTS,
        repositories,
        workflows: names,
        progress,
    })
}

/// The workflows (source, name) of the repositories the caller may read, and the local
/// ones for those who read local runs.
async fn readable_workflows(web: &Web, readable: &Readable) -> WebResult<Vec<(String, String)>> {
    let store = web.store();
    let workflows = store.dashboard_workflows(1000).await?;
    let Readable::Repos(ids) = readable else {
        return Ok(workflows);
    };
    let names: std::collections::HashSet<String> = store
        .list_repos()
        .await?
        .into_iter()
        .filter(|repo| ids.contains(&repo.id))
        .map(|repo| repo.name)
        .collect();
    Ok(workflows
        .into_iter()
        .filter(|(source, _)| names.contains(source))
        .collect())
}

/// `/?a=b&c=d` from the two parts (either may be empty).
fn with_query(first: &str, rest: &str) -> String {
    let joined: Vec<&str> = [first, rest]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if joined.is_empty() {
        "/".to_string()
    } else {
        format!("/?{}", joined.join("&"))
    }
}

/// `GET /`: the runs page.
pub(super) async fn page(
    State(web): State<Web>,
    headers: HeaderMap,
    uri: Uri,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Html<String>> {
    let Query(query) = query.map_err(|e| WebError::bad_request(e.body_text()))?;
    let page = load(&web, &headers, &uri, &query, true).await?;
    Ok(Html(render::page("runs.html", &page)?))
}

/// `GET /runs/rows`: the runs table alone (for live updates).
pub(super) async fn rows(
    State(web): State<Web>,
    headers: HeaderMap,
    uri: Uri,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Html<String>> {
    let Query(query) = query.map_err(|e| WebError::bad_request(e.body_text()))?;
    let page = load(&web, &headers, &uri, &query, false).await?;
    Ok(Html(render::page("runs_rows.html", &page)?))
}
