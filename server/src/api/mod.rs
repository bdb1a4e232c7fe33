//! `/api/...`: the public HTTP API (JSON) over runs, steps, logs, runners, the pool,
//! repositories, schedules, tokens and runner registration tokens. (`/healthz`, `/readyz`
//! and `/metrics` are [`crate::ops`]'s.)
//!
//! Invariants: every `/api/...` route is registered from its handler's `#[utoipa::path]`
//! and so described by `GET /api/openapi.json` ([`openapi()`]); every route but that one
//! runs behind [`crate::access::resolve`] (invalid credentials: 401 before any handler) and
//! its handler takes the [`Caller`] and asks it exactly its rule — a run's or repository's
//! role ([`Caller::visible_run`], [`Caller::visible_repo`]: 404 for what the caller may not
//! read), the installation admin, or any signed-in user; lists are filtered in their
//! queries by [`Caller::readable`]. Every dispatch, re-run, cancel and other change is in
//! the audit trail with the caller's user id (`audit`). Every error is an [`ApiError`]
//! with a JSON body.
//!
//! Why one file past ~600 lines: it holds the router with every route and its OpenAPI
//! registration in one list (the OpenAPI and access-matrix tests read that list), and the
//! run routes' shared helpers; route families live in their own modules.

pub(crate) mod annotations;
pub(crate) mod approvals;
mod artifacts;
mod audit_trail;
mod body;
mod caches;
mod debug;
mod environments;
pub mod followers;
mod forges;
pub(crate) mod id_tokens;
mod installations;
pub(crate) mod logs;
mod openapi;
mod people;
pub mod proposals;
mod provenance;
pub mod record;
mod repos;
mod reruns;
mod rules;
mod runner_tokens;
mod runs_list;
mod transcripts;
mod user_tokens;
pub mod views;
pub mod workflows;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Json, Router};
use evaluator::{EvalContext, EvaluatorPool, Event};
use plue_core::artifacts::Artifacts;
use plue_core::executor::Executor;
use plue_core::launch::{launch, LaunchError};
use plue_core::registry::Registry;
use plue_pool::kubernetes::ClassStatus;
use plue_pool::PoolStatus;
use plue_store::{Audit, RunRow, Store, Triggerer};
use plue_types::protocol::WorkspaceSource;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{Caller, Resolver, Role};
use crate::http_error::{ApiError, ApiResult};
use body::Object;
use views::{Created, ErrorView, PoolView, RunView, RunnerView};

#[derive(Clone)]
pub struct ApiState {
    pub executor: Arc<Executor>,
    pub evaluator: Option<Arc<EvaluatorPool>>,
    pub pool: Option<watch::Receiver<PoolStatus>>,
    /// The Kubernetes pool's classes, when it runs.
    pub pool_classes: Option<watch::Receiver<Vec<ClassStatus>>>,
    pub registry: Option<Arc<Registry>>,
    /// Resolves each request's [`Caller`] (the admin token, users' tokens, sessions).
    pub resolver: Resolver,
    pub shutdown: CancellationToken,
    /// Where `POST /api/runs` may read workflow files and workspaces (canonical).
    pub local_workflows: Arc<Vec<PathBuf>>,
    /// Live SSE log followers, with their caps.
    pub followers: Arc<followers::Followers>,
    /// Where artifacts are read from.
    pub artifacts: Arc<Artifacts>,
}

/// Every `/api` route, each registered from its handler's `#[utoipa::path]` (so what the
/// router serves and what `/api/openapi.json` lists are one list): those behind the caller
/// middleware, then those anyone may read.
fn routes() -> (OpenApiRouter<ApiState>, OpenApiRouter<ApiState>) {
    let guarded = OpenApiRouter::new()
        .routes(routes!(runs_list::list_runs, create_run))
        .routes(routes!(get_run))
        .routes(routes!(record::get_record))
        .routes(routes!(cancel_run))
        .routes(routes!(rerun))
        .routes(routes!(annotations::list))
        .routes(routes!(id_tokens::list))
        .routes(routes!(id_tokens::rotate))
        .routes(routes!(logs::step_logs))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::reject))
        .routes(routes!(approvals::list))
        .routes(routes!(proposals::list))
        .routes(routes!(proposals::decide))
        .routes(routes!(provenance::list))
        .routes(routes!(provenance::get))
        .routes(routes!(artifacts::list))
        .routes(routes!(artifacts::tar))
        .routes(routes!(artifacts::file))
        .routes(routes!(transcripts::get))
        .routes(routes!(debug::open))
        .routes(routes!(debug::get, debug::end))
        .routes(routes!(debug::attach))
        .routes(routes!(debug::input))
        .routes(routes!(list_runners))
        .routes(routes!(pool))
        .routes(routes!(repos::list_repos, repos::create_repo))
        .routes(routes!(forges::list_forges))
        .routes(routes!(installations::list_installations))
        .routes(routes!(
            repos::get_repo,
            repos::delete_repo,
            repos::update_repo
        ))
        .routes(routes!(repos::list_members))
        .routes(routes!(repos::put_member, repos::delete_member))
        .routes(routes!(repos::list_secrets))
        .routes(routes!(environments::list))
        .routes(routes!(
            environments::get,
            environments::put,
            environments::delete
        ))
        .routes(routes!(environments::list_secrets))
        .routes(routes!(
            environments::put_secret,
            environments::delete_secret
        ))
        .routes(routes!(repos::put_secret, repos::delete_secret))
        .routes(routes!(repos::repo_schedules))
        .routes(routes!(caches::list_caches))
        .routes(routes!(repos::dispatch))
        .routes(routes!(workflows::list))
        .routes(routes!(repos::all_schedules))
        .routes(routes!(user_tokens::list_tokens, user_tokens::create_token))
        .routes(routes!(user_tokens::revoke_token))
        .routes(routes!(user_tokens::create_user_token))
        .routes(routes!(people::current_user))
        .routes(routes!(people::list_users, people::create_user))
        .routes(routes!(people::get_user, people::disable_user))
        .routes(routes!(people::link_forge_login))
        .routes(routes!(people::unlink_forge_login))
        .routes(routes!(people::list_groups, people::create_group))
        .routes(routes!(people::get_group, people::delete_group))
        .routes(routes!(
            people::add_group_member,
            people::remove_group_member
        ))
        .routes(routes!(audit_trail::list_audit))
        .routes(routes!(runner_tokens::list, runner_tokens::create))
        .routes(routes!(runner_tokens::revoke));
    let open = OpenApiRouter::new()
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(provenance::keys));
    (guarded, open)
}

pub fn router(state: ApiState) -> Router {
    let (guarded, open) = routes();
    let guarded = Router::from(guarded).route_layer(axum::middleware::from_fn_with_state(
        state.resolver.clone(),
        crate::access::resolve,
    ));
    Router::new()
        .merge(guarded)
        .merge(Router::from(open))
        .method_not_allowed_fallback(crate::internal_api::method_not_allowed)
        .with_state(state)
}

/// The OpenAPI document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (guarded, open) = routes();
    let mut doc = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(guarded)
        .merge(open)
        .into_openapi();
    openapi::optional_bodies(&mut doc);
    openapi::handler_rules(&mut doc);
    openapi::plain_wildcards(&mut doc);
    doc
}

/// Records in the audit trail that `caller` did `action` on the installation itself (its
/// users, groups and tokens): an event of no repository and no run.
pub(crate) async fn audit_installation(
    store: &Store,
    caller: &Caller,
    action: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    audit(store, caller, action, None, None, detail).await
}

/// Records in the audit trail that `caller` did `action` on the repository `repo_id` (its
/// settings, members, secrets and environments), outside any run.
pub(crate) async fn audit_repo(
    store: &Store,
    caller: &Caller,
    action: &str,
    repo_id: i64,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    audit(store, caller, action, Some(repo_id), None, detail).await
}

/// The plan run `run_id` was started with, if it has one that reads (a run whose file did
/// not evaluate has none).
pub(crate) async fn run_plan(
    store: &Store,
    run_id: i64,
) -> anyhow::Result<Option<evaluator::plan::Plan>> {
    let documents = store.run_documents(run_id).await?;
    Ok(documents.and_then(|docs| serde_json::from_str(&docs.plan).ok()))
}

pub(crate) fn parse_run_id(raw: &str) -> ApiResult<i64> {
    parse_positive_id(raw, "run id")
}

/// The run whose id the path segment `raw` holds, and that id, when `caller` acts with
/// `role` on it: 400 for a segment that is not a run id, else as
/// [`Caller::visible_run`] answers (404 for a run the caller may not read).
pub(crate) async fn visible_run_in_path(
    store: &Store,
    caller: &Caller,
    raw: &str,
    role: Role,
) -> ApiResult<(i64, RunRow)> {
    let id = parse_run_id(raw)?;
    let run = caller.visible_run(store, id, role).await?;
    Ok((id, run))
}

/// A path segment `raw` naming a row by its id (a positive integer), or 400 saying
/// `'{raw}' is not a {what}` (`run id`, `token id`, …).
pub(crate) fn parse_positive_id(raw: &str, what: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("'{raw}' is not a {what}")))
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}",
    tag = "runs",
    summary = "One run with its steps",
    params(RunId),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The run, its steps and, for a repository's run, the commit statuses owed to the forge", body = RunView),
        (status = 400, description = "The id is not a run id", body = ErrorView),
        (status = 401, response = openapi::RunNotPublic),
        (status = 404, description = "No such run, or one the caller may not read", body = ErrorView),
        (status = 500, response = openapi::EngineFailed),
    )
)]
async fn get_run(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let store = state.executor.store();
    let (id, run) = visible_run_in_path(store, &caller, &id, Role::Reader).await?;
    let steps = store.step_runs(id).await?;
    let plan = run_plan(store, id).await?;
    let step_run_ids: Vec<i64> = steps.iter().map(|s| s.id).collect();
    let attempt_rows = store.dashboard_attempts(id).await?;
    let attempts: Vec<_> = attempt_rows
        .iter()
        .map(|a| (a.step_run_id, a.number, a.started_at, a.finished_at))
        .collect();
    let mut view = RunView::new(run, Some(steps))
        .with_loops(plan.as_ref())
        .with_attempts(&step_run_ids, &attempts)
        .with_costs(&step_run_ids, &attempt_rows);
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

#[utoipa::path(
    post,
    path = "/api/runs/{id}/cancel",
    tag = "runs",
    summary = "Cancel an active run",
    params(RunId),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The run, cancelling or cancelled", body = RunView),
        (status = 400, description = "The id is not a run id", body = ErrorView),
        (status = 401, response = openapi::Unauthorized),
        (status = 403, description = "The caller reads the run but lacks `writer` on its repository", body = ErrorView),
        (status = 404, description = "No such run, or one the caller may not read", body = ErrorView),
        (status = 409, description = "The run is already final", body = ErrorView),
        (status = 500, response = openapi::EngineFailed),
    )
)]
async fn cancel_run(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let store = state.executor.store();
    let (id, run) = visible_run_in_path(store, &caller, &id, Role::Writer).await?;
    if !state.executor.cancel(id).await? {
        return Err(ApiError::Client(
            axum::http::StatusCode::CONFLICT,
            format!("run {id} is already {}", run.status),
        ));
    }
    audit(
        store,
        &caller,
        "run.cancel",
        run.repo_id,
        Some(id),
        serde_json::json!({}),
    )
    .await?;
    let run = store
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    Ok(Json(RunView::new(run, Some(store.step_runs(id).await?))))
}

#[utoipa::path(
    post,
    path = "/api/runs/{id}/rerun",
    tag = "runs",
    summary = "Run a run's plan again, as a new run",
    description = "With `failed=true`, only the failed and cancelled steps and the steps after \
                   them run again; the others are carried over with their outputs and files.",
    params(RunId, reruns::RerunQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new run", body = Created),
        (status = 400, description = "The id is not a run id, or an unknown or malformed query parameter", body = ErrorView),
        (status = 401, response = openapi::Unauthorized),
        (status = 403, description = "The caller reads the run but lacks `writer` on its repository", body = ErrorView),
        (status = 404, description = "No such run, or one the caller may not read", body = ErrorView),
        (status = 409, description = "The run has no plan (its workflow file did not evaluate); with `failed=true`, the run has not ended or no step failed; the repository's name now names another repository on its forge, or the forge could not confirm it", body = ErrorView),
        (status = 500, response = openapi::EngineFailed),
    )
)]
async fn rerun(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<reruns::RerunQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Created>> {
    let id = parse_run_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let store = state.executor.store();
    let run = caller.visible_run(store, id, Role::Writer).await?;
    if run.plan_hash.is_empty() {
        return Err(ApiError::Client(
            axum::http::StatusCode::CONFLICT,
            format!("run {id} has no plan to run again: its workflow file did not evaluate"),
        ));
    }
    reruns::confirm_repository(&state, &run).await?;
    if query.failed {
        return reruns::failed(&state, &caller, &run).await;
    }
    // The re-runner is the new run's triggerer, recorded before its first advance.
    match state.executor.rerun(id, Some(&triggerer(&caller))).await? {
        Some(run_id) => {
            let detail = serde_json::json!({ "rerun_of": id });
            reruns::started(&state, &caller, &run, run_id, detail).await
        }
        None => Err(ApiError::not_found(format!("no run {id}"))),
    }
}

/// `caller` as the triggerer of a run it starts (its user id, so `exclude_triggerer`
/// compares users).
pub(crate) fn triggerer(caller: &Caller) -> Triggerer {
    Triggerer {
        name: caller.name().to_string(),
        user_id: caller.user_id(),
        forge_login: None,
    }
}

/// Records that `caller` started `run_id`.
pub(crate) async fn record_trigger(
    store: &Store,
    caller: &Caller,
    run_id: i64,
) -> anyhow::Result<()> {
    store.record_trigger(run_id, &triggerer(caller)).await
}

/// Records in the audit trail that `caller` did `action`.
pub(crate) async fn audit(
    store: &Store,
    caller: &Caller,
    action: &str,
    repo_id: Option<i64>,
    run_id: Option<i64>,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    store
        .audit(&Audit {
            user_id: caller.user_id(),
            actor: caller.name(),
            action,
            repo_id,
            run_id,
            detail,
        })
        .await
}

/// `POST /api/runs`: run a workflow file the server can read.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRun {
    /// Absolute path of the workflow file on the server, below a directory given to
    /// `--local-workflows`.
    #[schema(value_type = String)]
    workflow: PathBuf,
    /// Directory copied into each step's workspace (default: the repository root above
    /// the file, else its directory), below a directory given to `--local-workflows`.
    #[schema(value_type = Option<String>)]
    workspace: Option<PathBuf>,
    /// The event the file is evaluated for (default `manual`).
    #[schema(value_type = Option<EventName>)]
    event: Option<Event>,
    /// `ctx.branch` (default `main`).
    branch: Option<String>,
    /// `ctx.inputs`.
    #[serde(default)]
    inputs: std::collections::BTreeMap<String, String>,
}

/// The event kinds a workflow is evaluated for (`evaluator::Event` on the wire).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // only a schema: requests deserialize `evaluator::Event`
enum EventName {
    Push,
    PullRequest,
    Schedule,
    Manual,
}

/// The `{id}` of a run in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers parse the id themselves (400 when it is none)
pub(super) struct RunId {
    /// The run's id.
    #[param(minimum = 1, example = 1)]
    id: i64,
}

/// Evaluate a workflow file of the server's file system and run it.
#[utoipa::path(
    post,
    path = "/api/runs",
    tag = "runs",
    summary = "Run a workflow file of the server's file system",
    description = "Needs an installation admin, and the file below a directory the engine \
                   was started with `--local-workflows` for. The run's steps copy the \
                   workspace from the engine's file system: only runners on the engine's \
                   machine (the local pool) can run them, not runner pods.",
    request_body = CreateRun,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new run", body = Created),
        (status = 400, description = "A malformed body, or no such workflow file or workspace directory", body = ErrorView),
        (status = 401, response = openapi::Unauthorized),
        (status = 403, description = "Not an installation admin, or a path outside `--local-workflows`", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "The body is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema, or the workflow file failed to evaluate", body = ErrorView),
        (status = 500, response = openapi::EngineFailed),
        (status = 501, description = "This engine has no evaluator", body = ErrorView),
    )
)]
async fn create_run(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Object<CreateRun>, ApiError>,
) -> ApiResult<Json<Created>> {
    // The server's file system is the operator's: an admin, and only below the
    // directories the operator allowed — checked before anything reveals what exists.
    caller.require_admin()?;
    let Object(request) = body?;
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
            let store = state.executor.store();
            record_trigger(store, &caller, run_id).await?;
            let detail = serde_json::json!({ "workflow": workflow.display().to_string() });
            audit(store, &caller, "run.create", None, Some(run_id), detail).await?;
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

#[utoipa::path(
    get,
    path = "/api/runners",
    tag = "runners",
    summary = "Runners, newest first, lost and gone ones too",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Up to 200 runners, newest first; `state` says which are live (`idle`, `busy`) and which `lost` or `gone`", body = Vec<RunnerView>),
        (status = 401, response = openapi::SignedInRead),
        (status = 500, response = openapi::EngineFailed),
    )
)]
async fn list_runners(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<Vec<RunnerView>>> {
    caller.require_signed_in()?;
    let runners = state.executor.store().list_runners(200).await?;
    Ok(Json(runners.into_iter().map(RunnerView::new).collect()))
}

#[utoipa::path(
    get,
    path = "/api/pool",
    tag = "runners",
    summary = "The warm pool: counts, bounds and Kubernetes runner classes",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The pool's state, with the runners marked suspect and the claims returned unacknowledged", body = PoolView),
        (status = 401, response = openapi::SignedInRead),
        (status = 404, description = "This engine runs no pool (remote runners only)", body = ErrorView),
    )
)]
async fn pool(State(state): State<ApiState>, caller: Caller) -> ApiResult<Json<PoolView>> {
    caller.require_signed_in()?;
    let local = state.pool.as_ref().map(|pool| *pool.borrow());
    let view = match &state.pool_classes {
        Some(classes) => PoolView::of(local, &classes.borrow()),
        None if local.is_some() => PoolView::of(local, &[]),
        None => {
            return Err(ApiError::not_found(
                "this engine runs no local pool (remote runners only)",
            ))
        }
    };
    let store = state.executor.store();
    let readable = caller.readable(store).await?;
    Ok(Json(view.with_claims(store, &readable).await?))
}
