//! `/api/.../debug`: debug sessions of failed steps (`plue debug RUN STEP`). A writer of
//! the run's repository (an admin for a local run; a maintainer for a step that ran in an
//! environment) opens one; a runner that may take the step runs it again and then keeps
//! an interactive shell in its workspace, in the step's confinement; the creator's
//! terminal reaches it through [`attach`] (Server-Sent Events out) and [`input`] (POSTs in).
//!
//! Invariants:
//! - Only the credential that opened a session touches it: the same user token (by id),
//!   the admin token, or the embedded engine. Anyone else — another writer, the same user
//!   with another token — gets the same 404 as for an id that does not exist; the id is 128
//!   random bits, and is not a credential on its own.
//! - The opener must still hold the role opening needed (`writer`; `maintainer` for a step
//!   in an environment, whose secrets the shell holds) and its token still be valid at
//!   every request; an attached stream asks again every 2 seconds and, when they do not,
//!   ends the session.
//! - One terminal at a time: a second attach is 409 while the first is attached.
//! - Opening and ending are in the audit trail (`debug.open`, `debug.end`) with the user's
//!   id; the trail keeps only the id's first 8 characters.
//!
//! Why one file past ~600 lines: opening, attaching to, typing into and ending a session
//! share one credential check (the opener's token alone) and the relay's state.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use futures::Stream;
use plue_store::{now_ms, DebugSessionRow, NewDebugSession, Store};
use plue_types::protocol::debug::InputEvent;
use plue_types::status::{DebugSessionStatus, StepStatus};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::body::Object;
use super::views::{DebugSessionView, ErrorView};
use super::{audit, parse_run_id, ApiState};
use crate::access::{Caller, Role};
use crate::debug_relay::{self, relay, Attached, Phase, Session};
use crate::http_error::{ApiError, ApiResult};
use crate::internal_api::debug::valid_id;

/// The idle timeout when the request names none (10 minutes), and its bounds.
const DEFAULT_IDLE_SECS: u64 = 600;
const MIN_IDLE_SECS: u64 = 5;
const MAX_IDLE_SECS: u64 = 4 * 3600;
/// The most keystroke bytes one input request carries.
const MAX_INPUT_BYTES: usize = 64 * 1024;
/// The most base64 characters of one input request: whole groups of four, so what they
/// decode to stays within [`MAX_INPUT_BYTES`] — a rule the document can state.
const MAX_INPUT_CHARS: usize = MAX_INPUT_BYTES / 3 * 4;
/// The most output bytes one SSE event carries.
const OUTPUT_EVENT_BYTES: usize = 32 * 1024;
/// How often an attached stream asks again whether its caller may still attach.
const RECHECK: Duration = Duration::from_secs(2);

/// A run and one of its steps in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers parse the segments themselves
pub(super) struct StepPath {
    /// The run's id.
    #[param(minimum = 1, example = 1)]
    id: i64,
    /// The failed step's id in the run's plan.
    #[param(example = "build")]
    step: String,
}

/// A debug session in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only a schema: handlers parse the segment themselves
pub(super) struct SessionPath {
    /// The session's id, as opening it answered.
    #[param(
        pattern = r"^[0-9a-f]{32}$",
        example = "0f3c9a1b2d4e5f60718293a4b5c6d7e8"
    )]
    session: String,
}

/// How to open a debug session.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OpenDebug {
    /// End the session after this many seconds without a byte either way, or without an
    /// attached terminal (default 600).
    #[schema(minimum = 5, maximum = 14400)]
    idle_timeout_secs: Option<u64>,
    /// The shell's `TERM` (default `xterm-256color`).
    #[schema(pattern = r"^[A-Za-z0-9._+-]{1,64}$", example = "xterm-256color")]
    term: Option<String>,
}

/// What the terminal sends: keystrokes, a new window size, or both.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DebugInput {
    /// Keystrokes, base64 (at most 87380 characters: under 64 KiB once decoded).
    #[schema(schema_with = keystrokes_schema)]
    data: Option<String>,
    /// The window's width in columns (with `rows`).
    #[schema(minimum = 1, maximum = 1000)]
    cols: Option<u16>,
    /// The window's height in rows (with `cols`).
    #[schema(minimum = 1, maximum = 1000)]
    rows: Option<u16>,
}

fn keystrokes_schema() -> utoipa::openapi::schema::Schema {
    super::rules::base64(
        MAX_INPUT_CHARS,
        "Keystrokes, standard base64 with its padding (`null`: none): at most 87380 \
         characters, under 64 KiB once decoded.",
    )
}

fn view(row: &DebugSessionRow, step_id: &str) -> DebugSessionView {
    DebugSessionView {
        id: row.id.clone(),
        run_id: row.run_id,
        step_id: step_id.to_owned(),
        status: row.status,
        end_reason: row.end_reason.clone(),
        idle_timeout_secs: u64::try_from(row.idle_timeout_ms / 1000).unwrap_or(0),
        created_at: row.created_at,
    }
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::Client(StatusCode::CONFLICT, message.into())
}

/// Who may attach to what `caller` opens (see the module invariants).
fn creator_of(caller: &Caller) -> Option<String> {
    match caller {
        Caller::Embedded => Some("embedded".into()),
        Caller::Anonymous => None,
        Caller::Signed {
            token_id: Some(id), ..
        } => Some(format!("token:{id}")),
        Caller::Signed { token_id: None, .. } => Some("admin".into()),
    }
}

#[utoipa::path(
    post,
    path = "/api/runs/{id}/steps/{step}/debug",
    tag = "debug",
    operation_id = "open_debug_session",
    summary = "Run a failed step again on a runner that keeps it, with a shell in its workspace",
    description = "Queues a debug run of the step with the inputs its attempts had (plan \
                   step, env, secrets through the same gates, network policy, workspace \
                   source). A runner that may take the step runs it, keeps its workspace \
                   and sandbox whatever the outcome, and starts `bash` there as the step's \
                   user in the same confinement; attach with \
                   `GET /api/debug/{session}/attach`. Needs `writer` on the run's repository \
                   (`maintainer` for a step that runs in an environment; an admin for a \
                   local run). Audited as `debug.open`.",
    params(StepPath),
    request_body(content = Option<OpenDebug>, description = "Optional: the defaults without a body"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The session, queued", body = DebugSessionView),
        (status = 400, description = "Not a run id, malformed JSON, an idle timeout out of bounds or a bad `TERM`", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The caller reads the run but lacks `writer` on its repository (`maintainer` for a step in an environment)", body = ErrorView),
        (status = 404, description = "No such run or step, or a run the caller may not read", body = ErrorView),
        (status = 409, description = "The step did not fail, failed before it ran, is an `llm` step, starts from another step's workspace or artifacts, or has a debug session already; the repository's name now names another repository on its forge", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "A body that is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn open(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, step)): Path<(String, String)>,
    body: Result<Option<Object<OpenDebug>>, ApiError>,
) -> ApiResult<(StatusCode, Json<DebugSessionView>)> {
    let body = body?;
    let run_id = parse_run_id(&id)?;
    let options = body.map(|Object(o)| o).unwrap_or_default();
    let idle = options.idle_timeout_secs.unwrap_or(DEFAULT_IDLE_SECS);
    if !(MIN_IDLE_SECS..=MAX_IDLE_SECS).contains(&idle) {
        return Err(ApiError::bad_request(format!(
            "idle_timeout_secs must be between {MIN_IDLE_SECS} and {MAX_IDLE_SECS}, not {idle}"
        )));
    }
    let term = options.term.unwrap_or_else(|| "xterm-256color".into());
    if term.is_empty()
        || term.len() > 64
        || !term
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
    {
        return Err(ApiError::bad_request(format!(
            "TERM {term:?} is not a terminal name ([A-Za-z0-9._+-], at most 64)"
        )));
    }
    let store = state.executor.store();
    // Writers only: a reader learns it may not (403), others that there is no such run.
    let run = caller.visible_run(store, run_id, Role::Writer).await?;
    // A re-run with the repository's secrets, like any: not for whoever holds its name now.
    super::reruns::confirm_repository(&state, &run).await?;
    let creator = creator_of(&caller).ok_or_else(|| ApiError::unauthorized("sign in"))?;
    let missing = || ApiError::not_found(format!("run {run_id} has no step '{step}'"));
    let step_run = store.step_run(run_id, &step).await?.ok_or_else(missing)?;
    let plan = state.executor.plan(run_id).await?;
    let planned = plan
        .steps
        .iter()
        .find(|s| s.id == step)
        .ok_or_else(missing)?;
    if let (Some(environment), Some(repo_id)) = (&planned.environment, run.repo_id) {
        // The environment's secrets are its maintainers' to hand out: a writer who could
        // not deploy by pushing must not get them through a shell.
        let role = caller.role_on(store, repo_id).await?;
        if role.is_none_or(|role| role < Role::Maintainer) {
            return Err(ApiError::forbidden(format!(
                "step '{step}' runs in environment '{environment}': debugging it needs the \
                 maintainer role on the repository"
            )));
        }
    }
    if step_run.status != StepStatus::Failed {
        return Err(conflict(format!(
            "step '{step}' of run {run_id} is {}: only a failed step can be debugged",
            step_run.status
        )));
    }
    if matches!(planned.action, evaluator::plan::Action::Llm(_)) {
        return Err(conflict(format!(
            "step '{step}' is an llm step: it has no shell to debug (see its transcript, or \
             `plue rerun --replay`)"
        )));
    }
    if planned.workspace_from.is_some() || !planned.needs_artifacts.is_empty() {
        return Err(conflict(format!(
            "step '{step}' starts from another step's workspace or artifacts, which a debug \
             session cannot fetch yet"
        )));
    }
    if step_run.attempts == 0 || !store.step_run_dispatched(step_run.id).await? {
        return Err(conflict(format!(
            "step '{step}' failed before it ran ({}): there is no run of it to repeat",
            step_run.reason.as_deref().unwrap_or("no reason recorded")
        )));
    }
    if let Some(other) = store.live_debug_session_of(step_run.id).await? {
        return Err(conflict(format!(
            "step '{step}' has a debug session already ({}…); it ends when its shell exits \
             or after its idle timeout",
            debug_relay::short_id(&other)
        )));
    }
    let session_id = new_session_id()?;
    let now = now_ms();
    let idle_ms = i64::try_from(idle.saturating_mul(1000)).unwrap_or(i64::MAX);
    store
        .create_debug_session(&NewDebugSession {
            id: &session_id,
            run_id,
            step_run_id: step_run.id,
            creator: &creator,
            creator_user_id: caller.user_id(),
            term: &term,
            idle_timeout_ms: idle_ms,
            now,
        })
        .await?;
    audit(
        store,
        &caller,
        "debug.open",
        run.repo_id,
        Some(run_id),
        serde_json::json!({
            "session": debug_relay::short_id(&session_id),
            "step": step,
            "idle_timeout_secs": idle,
        }),
    )
    .await?;
    relayed(store, &session_id, Duration::from_secs(idle));
    crate::internal_api::debug::queued(state.executor.events());
    let row = store
        .debug_session(&session_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("debug session {session_id} vanished"))?;
    Ok((StatusCode::CREATED, Json(view(&row, &step))))
}

/// 128 random bits, as 32 lowercase hex characters.
fn new_session_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Session `id`'s relay in this process, with its watchdog.
fn relayed(store: &Store, id: &str, idle: Duration) -> Arc<Session> {
    if let Some(session) = relay().get(id) {
        return session;
    }
    let session = relay().open(id, idle);
    tokio::spawn(debug_relay::watch(
        store.clone(),
        id.to_owned(),
        session.clone(),
    ));
    session
}

/// The role a session of `step` of run `run_id` needs, to open and to keep:
/// `maintainer` for a step in an environment (its secrets are the maintainers' to hand
/// out), else `writer`.
async fn needed_role(state: &ApiState, run_id: i64, step: &str) -> anyhow::Result<Role> {
    let plan = state.executor.plan(run_id).await?;
    let in_environment = plan
        .steps
        .iter()
        .any(|s| s.id == step && s.environment.is_some());
    Ok(if in_environment {
        Role::Maintainer
    } else {
        Role::Writer
    })
}

/// Session `id`, its step id and the role keeping it needs, when `caller` opened it and
/// may still; 404 alike for a session that does not exist and one somebody else opened.
async fn mine(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> ApiResult<(DebugSessionRow, String, Role)> {
    let missing = || ApiError::not_found(format!("no debug session {id}"));
    let Some(creator) = creator_of(caller) else {
        return Err(ApiError::unauthorized(
            "this request needs 'Authorization: Bearer <token>'",
        ));
    };
    if !valid_id(id) {
        return Err(missing());
    }
    let store = state.executor.store();
    let row = store.debug_session(id).await?.ok_or_else(missing)?;
    if row.creator != creator {
        return Err(missing());
    }
    if !caller.still_valid(store).await? {
        return Err(ApiError::unauthorized("the token is no longer valid"));
    }
    let step = store
        .step_runs(row.run_id)
        .await?
        .into_iter()
        .find(|s| s.id == row.step_run_id)
        .map(|s| s.step_id)
        .unwrap_or_default();
    let role = needed_role(state, row.run_id, &step).await?;
    caller
        .visible_run(store, row.run_id, role)
        .await
        .map_err(|e| match e {
            ApiError::Client(StatusCode::NOT_FOUND, _) => missing(),
            other => other,
        })?;
    Ok((row, step, role))
}

#[utoipa::path(
    get,
    path = "/api/debug/{session}",
    tag = "debug",
    operation_id = "get_debug_session",
    summary = "A debug session, for its creator",
    params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session", body = DebugSessionView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The creator no longer holds `writer` on the run's repository", body = ErrorView),
        (status = 404, description = "No such session, or one another credential opened", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DebugSessionView>> {
    let (row, step, _) = mine(&state, &caller, &id).await?;
    Ok(Json(view(&row, &step)))
}

#[utoipa::path(
    delete,
    path = "/api/debug/{session}",
    tag = "debug",
    operation_id = "end_debug_session",
    summary = "End a debug session: the runner kills the shell and removes the sandbox",
    params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session, ended", body = DebugSessionView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The creator no longer holds `writer` on the run's repository", body = ErrorView),
        (status = 404, description = "No such session, or one another credential opened", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn end(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DebugSessionView>> {
    let (_, step, _) = mine(&state, &caller, &id).await?;
    let store = state.executor.store();
    debug_relay::end(store, &id, &format!("ended by {}", caller.name())).await?;
    let row = store
        .debug_session(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no debug session {id}")))?;
    Ok(Json(view(&row, &step)))
}

#[utoipa::path(
    get,
    path = "/api/debug/{session}/attach",
    tag = "debug",
    operation_id = "attach_debug_session",
    summary = "The session's terminal output, as Server-Sent Events",
    description = "Events: `status` (data `{\"status\": ..., \"reason\": ...}`: `queued`, \
                   `claimed`, `ready`, `ended`), `output` (data: the terminal's bytes, \
                   base64; the step's own output first, then the shell's), and `end` (data \
                   `{\"reason\": ...}`) as the last. One terminal at a time; a session \
                   without one for its idle timeout ends. Type with \
                   `POST /api/debug/{session}/input` while attached.",
    params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stream", content_type = "text/event-stream", body = String),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The creator no longer holds `writer` on the run's repository", body = ErrorView),
        (status = 404, description = "No such session, or one another credential opened", body = ErrorView),
        (status = 409, description = "The session has ended, or a terminal is attached already", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn attach(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let (row, _, role) = mine(&state, &caller, &id).await?;
    if row.status == DebugSessionStatus::Ended {
        return Err(conflict(format!(
            "debug session {id} has ended: {}",
            row.end_reason.as_deref().unwrap_or("ended")
        )));
    }
    let store = state.executor.store().clone();
    let idle = Duration::from_millis(u64::try_from(row.idle_timeout_ms).unwrap_or(0));
    let session = relayed(&store, &id, idle);
    let attached = session.attach().ok_or_else(|| {
        conflict(format!(
            "a terminal is attached to debug session {id} already"
        ))
    })?;
    let stream = terminal_stream(Watching {
        session,
        _attached: attached,
        caller,
        store,
        id: id.clone(),
        run_id: row.run_id,
        role,
        position: 0,
        told: None,
        checked: tokio::time::Instant::now(),
        done: false,
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// An attached terminal's stream state; dropping it detaches.
struct Watching {
    session: Arc<Session>,
    _attached: Attached,
    caller: Caller,
    store: Store,
    /// The session's id and run, on whose repository the caller must still hold `role`.
    id: String,
    run_id: i64,
    role: Role,
    /// The output offset sent up to.
    position: u64,
    /// The phase last told.
    told: Option<Phase>,
    checked: tokio::time::Instant,
    done: bool,
}

fn terminal_stream(state: Watching) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
    futures::stream::unfold(state, |mut w| async move {
        loop {
            if w.done {
                return None;
            }
            let (bytes, next) = w.session.read_output(w.position, OUTPUT_EVENT_BYTES);
            if !bytes.is_empty() {
                w.position = next;
                let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
                return Some((Ok(SseEvent::default().event("output").data(data)), w));
            }
            let phase = w.session.phase();
            if w.told.as_ref() != Some(&phase) {
                w.told = Some(phase.clone());
                let reason = match &phase {
                    Phase::Ended(reason) => Some(reason.clone()),
                    _ => None,
                };
                let data = serde_json::json!({"status": phase.name(), "reason": reason});
                return Some((
                    Ok(SseEvent::default().event("status").data(data.to_string())),
                    w,
                ));
            }
            if let Phase::Ended(reason) = phase {
                w.done = true;
                return Some((Ok(end_event(&reason)), w));
            }
            if w.checked.elapsed() >= RECHECK {
                w.checked = tokio::time::Instant::now();
                let valid = w.caller.still_valid(&w.store).await.unwrap_or(false);
                let holds = valid
                    && w.caller
                        .visible_run(&w.store, w.run_id, w.role)
                        .await
                        .is_ok();
                if !holds {
                    w.done = true;
                    let reason = if valid {
                        format!(
                            "its creator no longer holds the {} role on the run's repository",
                            w.role
                        )
                    } else {
                        "its creator's token is no longer valid".to_owned()
                    };
                    // The session goes with the right to it, not only this stream.
                    if let Err(err) = debug_relay::end(&w.store, &w.id, &reason).await {
                        tracing::warn!("could not end a debug session: {err:#}");
                    }
                    return Some((Ok(end_event(&reason)), w));
                }
            }
            w.session.changed(Duration::from_millis(500)).await;
        }
    })
}

/// The stream's last event, `end`, saying why it ends: `{"reason": "..."}`.
fn end_event(reason: &str) -> SseEvent {
    let data = serde_json::json!({ "reason": reason });
    SseEvent::default().event("end").data(data.to_string())
}

#[utoipa::path(
    post,
    path = "/api/debug/{session}/input",
    tag = "debug",
    operation_id = "debug_session_input",
    summary = "Keystrokes and window sizes for an attached debug session",
    params(SessionPath),
    request_body(content = DebugInput),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Queued for the shell"),
        (status = 400, description = "Malformed JSON, data that is not base64 or too long, or a window size out of bounds", body = ErrorView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, description = "The creator no longer holds `writer` on the run's repository", body = ErrorView),
        (status = 404, description = "No such session, or one another credential opened", body = ErrorView),
        (status = 409, description = "No terminal is attached, the session has ended, or the shell is not reading its input", body = ErrorView),
        (status = 413, description = "The body is too large", body = ErrorView),
        (status = 415, description = "A body that is not `application/json`", body = ErrorView),
        (status = 422, description = "The body does not fit the schema", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn input(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Object<DebugInput>, ApiError>,
) -> ApiResult<StatusCode> {
    let Object(input) = body?;
    // The length first: nothing long is decoded.
    if input
        .data
        .as_ref()
        .is_some_and(|d| d.len() > MAX_INPUT_CHARS)
    {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_INPUT_CHARS} base64 characters ({MAX_INPUT_BYTES} bytes) of input \
             per request"
        )));
    }
    let data = match &input.data {
        Some(text) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| ApiError::bad_request(format!("data is not base64: {e}")))?,
        ),
        None => None,
    };
    let size = match (input.cols, input.rows) {
        (Some(cols), Some(rows)) if (1..=1000).contains(&cols) && (1..=1000).contains(&rows) => {
            Some((cols, rows))
        }
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "a window size needs both cols and rows, each from 1 to 1000",
            ))
        }
    };
    mine(&state, &caller, &id).await?;
    let session = relay()
        .get(&id)
        .filter(|s| s.is_attached())
        .ok_or_else(|| conflict("attach to the session first (GET /api/debug/{session}/attach)"))?;
    if let Phase::Ended(reason) = session.phase() {
        return Err(conflict(format!("debug session {id} has ended: {reason}")));
    }
    if let Some((cols, rows)) = size {
        session.push_input(|seq| InputEvent::Resize { seq, cols, rows }, 0);
    }
    if let Some(data) = data.filter(|d| !d.is_empty()) {
        let len = data.len();
        let hex = hex::encode(data);
        if !session.push_input(|seq| InputEvent::Data { seq, hex }, len) {
            return Err(conflict(
                "the shell is not reading its input; wait and send it again",
            ));
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
