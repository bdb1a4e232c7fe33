//! `/internal/debug/...`: the runner's side of debug sessions (protocol in
//! [`plue_types::protocol::debug`]): the claim a poll answers with, and the terminal stream.
//!
//! Invariants:
//! - A session is claimed under the step's own rules (labels, secrets, forks: see
//!   `store::debug_sessions`) and its assignment is built like the step's attempts':
//!   the stored dispatch document, the secrets through [`Executor::secret_values`] (so an
//!   environment's gate and review are checked again, and a fork's run gets none), the
//!   run's workspace and summoned context. It carries no hand-off: a debug run uploads
//!   nothing any step or reader sees, and has no attempt (`attempt_id` 0).
//! - Every stream request names its session and is answered only for the runner the
//!   store says claimed it; any other runner (or a guessed id) gets the same 404.
//! - A session that ended answers `end: true`, so its runner kills the shell.
//!
//! [`Executor::secret_values`]: plue_core::executor::Executor::secret_values

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use plue_core::attempts::{AttemptRefused, AuthedRunner};
use plue_core::dispatch::Dispatch;
use plue_store::now_ms;
use plue_types::protocol::debug::{
    DebugAssignment, DebugEnd, InputBatch, InputPoll, OutputAck, MAX_OUTPUT_BYTES,
};
use plue_types::protocol::{Ack, Assignment, Handoff, StepAction};
use serde::Deserialize;

use super::{authenticate, InternalState};
use crate::debug_relay::{self, relay, Phase, Session};
use crate::http_error::{ApiError, ApiResult};

/// Set when a session was queued in this process: the next poll looks for it at once.
static QUEUED_HERE: AtomicBool = AtomicBool::new(false);
/// When a poll of this process last looked for queued sessions (ms): they are looked for
/// at most this often otherwise, so polling costs nothing while nobody debugs.
static LAST_LOOK: AtomicI64 = AtomicI64::new(0);
const LOOK_EVERY_MS: i64 = 2_000;

/// The longest reason a runner may report.
const MAX_REASON_BYTES: usize = 1024;

pub(super) fn routes() -> Router<InternalState> {
    Router::new()
        .route("/internal/debug/{session}/ready", post(ready))
        .route("/internal/debug/{session}/output", post(output))
        .route("/internal/debug/{session}/input", post(input))
        .route("/internal/debug/{session}/end", post(end))
}

/// A session was queued here: wake the polling runners and have them look.
pub(crate) fn queued(state_events: &plue_store::events::Events) {
    QUEUED_HERE.store(true, Ordering::Relaxed);
    state_events.wake_all();
}

/// A debug session `runner` may take, claimed for it, when one is queued. Sessions whose
/// assignment cannot be built end with the reason (their creator reads it).
pub(super) async fn claim(
    state: &InternalState,
    runner: &AuthedRunner,
) -> ApiResult<Option<DebugAssignment>> {
    let now = now_ms();
    let due = now - LAST_LOOK.load(Ordering::Relaxed) >= LOOK_EVERY_MS;
    if !QUEUED_HERE.swap(false, Ordering::Relaxed) && !due {
        return Ok(None);
    }
    LAST_LOOK.store(now, Ordering::Relaxed);
    let store = state.executor.store();
    loop {
        let Some(claim) = store
            .claim_debug_session(runner.id, &runner.label_sets, now_ms())
            .await?
        else {
            return Ok(None);
        };
        // Another may be queued behind this one.
        QUEUED_HERE.store(true, Ordering::Relaxed);
        let id = claim.session.id.clone();
        let idle = Duration::from_millis(u64::try_from(claim.session.idle_timeout_ms).unwrap_or(0));
        let session = open(state, &id, idle);
        session.claimed(runner.id);
        match assignment(state, runner, &claim).await? {
            Ok(assignment) => {
                return Ok(Some(DebugAssignment {
                    session: id,
                    idle_timeout_secs: idle.as_secs(),
                    term: claim.session.term.clone(),
                    assignment,
                }))
            }
            Err(refused) => {
                debug_relay::end(store, &id, &refused.to_string()).await?;
            }
        }
    }
}

/// The step's assignment as its attempts were given it, or why it cannot be built.
async fn assignment(
    state: &InternalState,
    runner: &AuthedRunner,
    claim: &plue_store::DebugClaim,
) -> ApiResult<Result<Assignment, AttemptRefused>> {
    let run_id = claim.session.run_id;
    let dispatch: Dispatch = match serde_json::from_str(&claim.dispatch) {
        Ok(dispatch) => dispatch,
        Err(e) => return Ok(Err(e.into())),
    };
    if matches!(dispatch.action, StepAction::Llm { .. }) {
        return Ok(Err(AttemptRefused::LlmHasNoShell));
    }
    let secrets = match state
        .executor
        .secret_values(run_id, &claim.step_id, &dispatch.secrets)
        .await?
    {
        Ok(secrets) => secrets,
        Err(refused) => return Ok(Err(refused.into())),
    };
    if !runner.secrets && !secrets.values.is_empty() {
        return Ok(Err(AttemptRefused::DebugRunnerWithoutSecrets {
            runner: runner.id,
        }));
    }
    let workspace = serde_json::from_str(&claim.workspace)
        .map_err(|e| anyhow::anyhow!("stored workspace of run {run_id}: {e}"))?;
    let mut env = dispatch.env;
    if let Some(context) = state.executor.store().summoned_context(run_id).await? {
        let ctx: evaluator::EvalContext = serde_json::from_str(&context)
            .map_err(|e| anyhow::anyhow!("stored context of run {run_id}: {e}"))?;
        env.extend(plue_core::dispatch::summoned_env(&ctx));
    }
    env.insert("PLUE_ATTEMPT".into(), claim.attempts.to_string());
    if !secrets.withheld.is_empty() {
        env.insert("PLUE_SECRETS_WITHHELD".into(), secrets.withheld.join(","));
    }
    Ok(Ok(Assignment {
        attempt_id: 0,
        run_id,
        step_id: claim.step_id.clone(),
        attempt: u32::try_from(claim.attempts).unwrap_or(u32::MAX),
        action: dispatch.action,
        env,
        secrets: secrets.values,
        timeout_secs: dispatch.timeout_secs,
        workspace,
        handoff: Handoff::default(),
        budget: None,
        network: dispatch.network,
        // No attempt to hold one: a runner that needs the cluster's egress proxy for an
        // allow-list fails the session's step closed.
        egress_grant: None,
        // A debug session restores and saves no cache.
        caches: Vec::new(),
    }))
}

/// Session `id`'s relay, with its watchdog when this process had none.
fn open(state: &InternalState, id: &str, idle: Duration) -> Arc<Session> {
    if let Some(session) = relay().get(id) {
        return session;
    }
    let session = relay().open(id, idle);
    tokio::spawn(debug_relay::watch(
        state.executor.store().clone(),
        id.to_owned(),
        session.clone(),
    ));
    session
}

/// Whether `id` has the form of a session id (32 lowercase hex characters).
pub(crate) fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Session `id` when `runner` claimed it; 404 alike for a session that does not exist and
/// for one another runner holds.
async fn held(state: &InternalState, runner: &AuthedRunner, id: &str) -> ApiResult<Arc<Session>> {
    let missing = || ApiError::not_found(format!("no debug session {id} held by this runner"));
    if !valid_id(id) {
        return Err(missing());
    }
    let row = state
        .executor
        .store()
        .debug_session(id)
        .await?
        .ok_or_else(missing)?;
    if row.runner_id != Some(runner.id) {
        return Err(missing());
    }
    let idle = Duration::from_millis(u64::try_from(row.idle_timeout_ms).unwrap_or(0));
    let session = open(state, id, idle);
    if session.runner_id() != Some(runner.id) {
        session.claimed(runner.id);
    }
    if row.status == plue_types::status::DebugSessionStatus::Ended {
        let reason = row.end_reason.unwrap_or_else(|| "ended".into());
        debug_relay::end(state.executor.store(), id, &reason).await?;
    }
    Ok(session)
}

fn ended(session: &Session) -> bool {
    matches!(session.phase(), Phase::Ended(_))
}

async fn ready(
    State(state): State<InternalState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Ack>> {
    let runner = authenticate(&state, &headers).await?;
    let session = held(&state, &runner, &id).await?;
    if !state
        .executor
        .store()
        .debug_session_ready(&id, runner.id)
        .await?
        && ended(&session)
    {
        return Err(ApiError::Client(
            StatusCode::CONFLICT,
            format!("debug session {id} has ended"),
        ));
    }
    session.ready();
    Ok(Json(Ack {}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputQuery {
    seq: u64,
}

async fn output(
    State(state): State<InternalState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<OutputQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> ApiResult<Json<OutputAck>> {
    let runner = authenticate(&state, &headers).await?;
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(format!("output needs ?seq=N: {e}")))?;
    if body.len() > MAX_OUTPUT_BYTES {
        return Err(ApiError::Client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_OUTPUT_BYTES} bytes of output per request"),
        ));
    }
    let session = held(&state, &runner, &id).await?;
    if ended(&session) {
        return Ok(Json(OutputAck { end: true }));
    }
    session.push_output(query.seq, &body);
    Ok(Json(OutputAck { end: false }))
}

async fn input(
    State(state): State<InternalState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<InputPoll>, JsonRejection>,
) -> ApiResult<Json<InputBatch>> {
    let runner = authenticate(&state, &headers).await?;
    let Json(poll) = body?;
    let session = held(&state, &runner, &id).await?;
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(poll.wait_ms).min(state.config.max_wait);
    loop {
        let events = session.input_after(poll.after);
        let end = ended(&session);
        if !events.is_empty() || end || tokio::time::Instant::now() >= deadline {
            return Ok(Json(InputBatch { events, end }));
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return Ok(Json(InputBatch { events, end })),
            _ = session.changed(deadline - tokio::time::Instant::now()) => {}
        }
    }
}

async fn end(
    State(state): State<InternalState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DebugEnd>, JsonRejection>,
) -> ApiResult<Json<Ack>> {
    let runner = authenticate(&state, &headers).await?;
    let Json(report) = body?;
    held(&state, &runner, &id).await?;
    let mut reason = report.reason;
    if reason.len() > MAX_REASON_BYTES || reason.chars().any(char::is_control) {
        reason = crate::debug_relay::clean_reason(&reason, MAX_REASON_BYTES);
    }
    debug_relay::end(state.executor.store(), &id, &reason).await?;
    Ok(Json(Ack {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_32_lowercase_hex_characters_are_session_ids() {
        assert!(valid_id("0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "../../internal/runners/register0",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
