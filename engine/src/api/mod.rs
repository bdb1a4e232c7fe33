//! `/api/...`: the public HTTP API (JSON) over runs, steps, logs, runners, the pool,
//! repositories, schedules, tokens and runner registration tokens. (`/healthz`, `/readyz`
//! and `/metrics` are [`crate::metrics`]'s.)
//!
//! Invariants: every `/api/...` route passes [`crate::auth::require_token`] (writes need a
//! bearer token, reads too when they are private); every error is an [`ApiError`] with a
//! JSON body.

mod approvals;
pub mod followers;
mod logs;
mod repos;
mod runner_tokens;
pub mod views;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use evaluator::{EvalContext, EvaluatorPool, Event};
use runner::protocol::WorkspaceSource;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Auth};
use crate::executor::Executor;
use crate::http_error::{ApiError, ApiResult};
use crate::launch::{launch, LaunchError};
use crate::pool::kubernetes::ClassStatus;
use crate::pool::PoolStatus;
use crate::registry::Registry;
use views::{ClassView, Created, PoolView, RunView, RunnerView};

#[derive(Clone)]
pub struct ApiState {
    pub executor: Arc<Executor>,
    pub evaluator: Option<Arc<EvaluatorPool>>,
    pub pool: Option<watch::Receiver<PoolStatus>>,
    /// The Kubernetes pool's classes, when it runs.
    pub pool_classes: Option<watch::Receiver<Vec<ClassStatus>>>,
    pub registry: Option<Arc<Registry>>,
    pub auth: Auth,
    pub shutdown: CancellationToken,
    /// Where `POST /api/runs` may read workflow files and workspaces (canonical).
    pub local_workflows: Arc<Vec<PathBuf>>,
    /// Live SSE log followers, with their caps.
    pub followers: Arc<followers::Followers>,
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/runs", get(list_runs).post(create_run))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/runs/{id}/cancel", post(cancel_run))
        .route("/api/runs/{id}/rerun", post(rerun))
        .route("/api/runs/{id}/steps/{step}/logs", get(logs::step_logs))
        .route(
            "/api/runs/{id}/steps/{step}/approve",
            post(approvals::approve),
        )
        .route(
            "/api/runs/{id}/steps/{step}/reject",
            post(approvals::reject),
        )
        .route("/api/runs/{id}/approvals", get(approvals::list))
        .route("/api/runners", get(list_runners))
        .route("/api/pool", get(pool))
        .route(
            "/api/repos",
            get(repos::list_repos).post(repos::create_repo),
        )
        .route(
            "/api/repos/{owner}/{name}",
            get(repos::get_repo).delete(repos::delete_repo),
        )
        .route(
            "/api/repos/{owner}/{name}/secrets",
            get(repos::list_secrets),
        )
        .route(
            "/api/repos/{owner}/{name}/secrets/{secret}",
            put(repos::put_secret).delete(repos::delete_secret),
        )
        .route(
            "/api/repos/{owner}/{name}/schedules",
            get(repos::repo_schedules),
        )
        .route("/api/repos/{owner}/{name}/dispatch", post(repos::dispatch))
        .route("/api/schedules", get(repos::all_schedules))
        .route("/api/tokens", post(repos::create_token))
        .route(
            "/api/runner-tokens",
            get(runner_tokens::list).post(runner_tokens::create),
        )
        .route(
            "/api/runner-tokens/{id}",
            axum::routing::delete(runner_tokens::revoke),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(api)
        .method_not_allowed_fallback(crate::internal_api::method_not_allowed)
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    limit: Option<i64>,
    /// Only runs of this repository (`owner/name`).
    repo: Option<String>,
}

async fn list_runs(
    State(state): State<ApiState>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<RunView>>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let store = state.executor.store();
    let runs = match &query.repo {
        Some(repo) => {
            repos::check_repo_name(repo)?;
            store.list_runs_of_repo(repo, limit).await?
        }
        None => store.list_runs(limit).await?,
    };
    Ok(Json(
        runs.into_iter().map(|r| RunView::new(r, None)).collect(),
    ))
}

pub(crate) fn parse_run_id(raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("'{raw}' is not a run id")))
}

async fn get_run(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let id = parse_run_id(&id)?;
    let store = state.executor.store();
    let run = store
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    let steps = store.step_runs(id).await?;
    let plan = store
        .run_documents(id)
        .await?
        .and_then(|docs| serde_json::from_str::<evaluator::plan::Plan>(&docs.plan).ok());
    let mut view = RunView::new(run, Some(steps)).with_loops(plan.as_ref());
    if view.repository.is_some() {
        let reports = store.status_reports_of_run(id).await?;
        view.commit_statuses = Some(
            reports
                .into_iter()
                .map(
                    |(state, delivered, attempts, last_error)| views::CommitStatusView {
                        state,
                        delivered,
                        attempts,
                        last_error,
                    },
                )
                .collect(),
        );
    }
    Ok(Json(view))
}

async fn cancel_run(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let id = parse_run_id(&id)?;
    let store = state.executor.store();
    let run = store
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    if !state.executor.cancel(id).await? {
        return Err(ApiError::Client(
            axum::http::StatusCode::CONFLICT,
            format!("run {id} is already {}", run.status),
        ));
    }
    let run = store
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    Ok(Json(RunView::new(run, Some(store.step_runs(id).await?))))
}

async fn rerun(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<Created>> {
    let id = parse_run_id(&id)?;
    let who = state.auth.identity(&headers).await?;
    let store = state.executor.store();
    if let Some(run) = store.run(id).await? {
        if run.plan_hash.is_empty() {
            return Err(ApiError::Client(
                axum::http::StatusCode::CONFLICT,
                format!("run {id} has no plan to run again: its workflow file did not evaluate"),
            ));
        }
    }
    match state.executor.rerun(id).await? {
        Some(run_id) => {
            store.record_triggerer(run_id, &who).await?;
            Ok(Json(Created { run_id }))
        }
        None => Err(ApiError::not_found(format!("no run {id}"))),
    }
}

/// `POST /api/runs`: run a workflow file the server can read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRun {
    /// Path of the workflow file on the server.
    workflow: PathBuf,
    /// Directory copied into each step's workspace (default: the repository root above
    /// the file, else its directory).
    workspace: Option<PathBuf>,
    event: Option<Event>,
    branch: Option<String>,
    #[serde(default)]
    inputs: std::collections::BTreeMap<String, String>,
}

async fn create_run(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<Json<CreateRun>, JsonRejection>,
) -> ApiResult<Json<Created>> {
    // The server's file system is the operator's: the admin token, and only below the
    // directories the operator allowed — checked before anything reveals what exists.
    state.auth.check_admin(&headers)?;
    let Json(request) = body?;
    let Some(evaluator) = &state.evaluator else {
        return Err(ApiError::Client(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "this engine has no evaluator".into(),
        ));
    };
    let roots = state.local_workflows.as_slice();
    let workflow = allowed_path(roots, &request.workflow, "workflow file")?;
    if !workflow.is_file() {
        return Err(ApiError::bad_request(format!(
            "no workflow file {}",
            workflow.display()
        )));
    }
    let workspace_dir = match request.workspace {
        Some(dir) => {
            let dir = allowed_path(roots, &dir, "workspace")?;
            if !dir.is_dir() {
                return Err(ApiError::bad_request(format!(
                    "no directory {}",
                    dir.display()
                )));
            }
            dir
        }
        None => {
            let default = default_workspace(&workflow);
            match roots.iter().find(|root| default.starts_with(root)) {
                Some(_) => default,
                // The repository root is above every allowed directory: the allowed
                // directory holding the file is as far up as a workspace may reach.
                None => roots
                    .iter()
                    .find(|root| workflow.starts_with(root))
                    .cloned()
                    .unwrap_or(default),
            }
        }
    };

    let mut ctx = EvalContext::local(
        request.event.unwrap_or(Event::Manual),
        request.branch.as_deref().unwrap_or("main"),
    );
    ctx.inputs = request.inputs;
    let workspace = WorkspaceSource::Copy {
        path: workspace_dir.display().to_string(),
    };
    match launch(&state.executor, evaluator, &workflow, &ctx, &workspace).await {
        Ok(run_id) => {
            let who = state.auth.identity(&headers).await?;
            state
                .executor
                .store()
                .record_triggerer(run_id, &who)
                .await?;
            Ok(Json(Created { run_id }))
        }
        Err(LaunchError::Internal(e)) => Err(ApiError::Internal(e)),
        Err(e) => Err(ApiError::Client(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            e.to_string(),
        )),
    }
}

/// `path` made canonical (symlinks and `..` resolved) when it lies below one of `roots`;
/// 403 otherwise, without saying whether it exists.
fn allowed_path(roots: &[PathBuf], path: &std::path::Path, what: &str) -> ApiResult<PathBuf> {
    let forbidden = || {
        let hint = if roots.is_empty() {
            "this engine runs no workflow files of its own file system (start it with \
             --local-workflows DIR)"
        } else {
            "it is not below a directory given to --local-workflows"
        };
        ApiError::Client(
            axum::http::StatusCode::FORBIDDEN,
            format!("{what} {}: {hint}", path.display()),
        )
    };
    if roots.is_empty() || !path.is_absolute() {
        return Err(forbidden());
    }
    let real = std::fs::canonicalize(path).map_err(|_| forbidden())?;
    if roots.iter().any(|root| real.starts_with(root)) {
        Ok(real)
    } else {
        Err(forbidden())
    }
}

/// The nearest ancestor of `file` holding `.git`, else the file's directory.
pub fn default_workspace(file: &std::path::Path) -> PathBuf {
    let absolute = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let dir = absolute
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(PathBuf::from)
        .unwrap_or(dir)
}

async fn list_runners(State(state): State<ApiState>) -> ApiResult<Json<Vec<RunnerView>>> {
    let runners = state.executor.store().list_runners(false, 200).await?;
    Ok(Json(runners.into_iter().map(RunnerView::new).collect()))
}

async fn pool(State(state): State<ApiState>) -> ApiResult<Json<PoolView>> {
    let classes: Vec<ClassView> = state
        .pool_classes
        .as_ref()
        .map(|c| c.borrow().iter().map(ClassView::from).collect())
        .unwrap_or_default();
    match &state.pool {
        Some(pool) => Ok(Json(PoolView {
            classes,
            ..PoolView::from(*pool.borrow())
        })),
        None if state.pool_classes.is_some() => Ok(Json(PoolView {
            classes,
            ..PoolView::default()
        })),
        None => Err(ApiError::not_found(
            "this engine runs no local pool (remote runners only)",
        )),
    }
}
