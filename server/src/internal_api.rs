//! `/internal/...`: the runner-facing HTTP API (protocol in [`plue_types::protocol`]):
//! authentication, limits and parsing. What the engine does with an attempt — assigning
//! it, its lines, its end — is `plue_core::attempts`, which every transport shares.
//!
//! Past 600 lines: the runner protocol's handlers (registration, polling, logs, completion,
//! hand-off blobs) share one authentication and ownership check each; splitting the blob
//! handlers into their own module is the next step when this file grows again.
//!
//! Invariants:
//! - Every request is authenticated: registration with a registration token (the shared
//!   one, a scoped one, or a one-time one the pool minted), everything else with the
//!   runner's own session token; a runner may only touch its own attempts (403 otherwise).
//! - A registration stays inside its token's scope ([`plue_pool::scope`]): labels it
//!   does not grant, or a `pool-` name it was not minted for, are 403; a live runner's name
//!   is 409; a one-time token registers one runner only (401 afterwards).
//! - A runner whose token does not allow secrets is never handed a secret: the claim skips
//!   steps that need one, and an assignment that would carry one fails instead.
//! - A runner accepts steps of fork runs only if its token allows it (asking for them
//!   otherwise is 403); the claim hands a fork run's step to no other runner.
//! - Every body is validated (unknown fields, sizes, characters) and a bad one is a 4xx
//!   with a message; handlers never panic on input.
//! - Logs and completions are idempotent, so runners may resend them freely.
//! - A claim counts once its runner acknowledged it (`accepted`, a start, or the
//!   completion whose answer carries it); the sweeper returns one nobody acknowledged
//!   (`store::claims::unacknowledged`). Only the runner's own requests prove it alive: a
//!   poll's arrival counts as a heartbeat, the poll held afterwards does not, and a held
//!   poll whose runner has given no proof of life within [`InternalConfig::liveness_window`]
//!   (or is suspect) is answered empty before anything is handed to it (`poll`).
//! - Log lines, outputs and a completion's reason reach the store only through
//!   `plue_core::attempts` (masked with every secret of the run, the reason redacted as
//!   the run's outbound wall redacts it; withheld when the wall cannot be made).
//! - Hand-off blobs: a runner uploads only for the attempt it holds, and downloads only
//!   what that attempt's dispatch names (`workspace_from`, `needs_artifacts`), from the
//!   attempt's own run; the run is never taken from the request. A blob of a step that
//!   held secrets goes only to runners allowed secrets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use plue_core::artifacts::{ArtifactError, Artifacts, Upload};
use plue_core::attempts::{Attempts, AuthedRunner};
use plue_core::dispatch::Dispatch;
use plue_core::executor::Executor;
use plue_core::registry::checkout_packs::CheckoutPacks;
use plue_pool::scope::{self, Scope};
use plue_store::events::Event;
use plue_store::{now_ms, Acknowledgement, AttemptOwner, NewRunner, RedeemedToken, Registration};
use plue_types::protocol::{self as wire, Ack, LogAck, LogBatch, PollRequest, PollResponse};
use plue_vault::tokens;

use crate::http_error::{ApiError, ApiResult};
use crate::json_body::JsonBody;

mod caches;
mod checkout;
pub(crate) mod debug;
mod egress;
mod session;

pub use egress::EgressAuth;

/// How the internal API behaves.
#[derive(Debug, Clone)]
pub struct InternalConfig {
    /// The shared token hand-started runners register with (scope: [`Scope::shared`]).
    pub registration_token: String,
    pub heartbeat_interval: Duration,
    /// How recent a runner's last proof of life (a heartbeat, or a poll as it arrived)
    /// must be for a poll the engine holds to be handed work: twice the heartbeat
    /// interval ([`InternalConfig::liveness_for`]).
    pub liveness_window: Duration,
    /// The longest a poll or watch request is held.
    pub max_wait: Duration,
    /// How often a waiting poll looks for work again unwoken
    /// ([`crate::server::EngineConfig::poll_recheck`]).
    pub poll_recheck: Duration,
    /// The cluster's egress proxy, when one is configured (`--egress-proxy-token-file`):
    /// allow-list assignments carry a grant for it, and it may ask about them.
    pub egress: Option<EgressAuth>,
}

#[derive(Clone)]
pub struct InternalState {
    pub executor: Arc<Executor>,
    pub config: Arc<InternalConfig>,
    pub auth: Arc<RunnerAuth>,
    /// Cancelled when the engine starts draining (and when it stops): held polls and
    /// watches return at once, and no poll claims a step any more.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Where hand-off blobs and artifacts go.
    pub artifacts: Arc<Artifacts>,
    /// The keys steps' OpenID Connect tokens are signed with (shared with [`crate::oidc`]).
    pub id_tokens: Arc<plue_core::id_tokens::IdTokens>,
    /// The engine's side of every attempt: what these routes carry to and from runners.
    pub attempts: Arc<Attempts>,
    /// The mirrors' commits as packs for runners' checkouts (`None`: an engine without
    /// mirrors; runners fetch from the forge).
    pub checkouts: Option<Arc<CheckoutPacks>>,
}

#[derive(Debug, Default)]
pub struct RunnerAuth {
    /// Runners by the hash of their session token.
    runners: Mutex<HashMap<String, AuthedRunner>>,
}

impl InternalConfig {
    /// The liveness window for runners heartbeating every `heartbeat_interval`: two
    /// heartbeats' time, so one late heartbeat costs a live runner at most a poll again.
    pub fn liveness_for(heartbeat_interval: Duration) -> Duration {
        heartbeat_interval * 2
    }
}

const CACHE_LIMIT: usize = 10_000;
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

impl RunnerAuth {
    /// Drops a runner from the cache (it was declared lost or left).
    pub fn forget_runner(&self, runner_id: i64) {
        lock(&self.runners).retain(|_, r| r.id != runner_id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The caches hold plain values; a panic elsewhere cannot leave them half-written.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn router(state: InternalState) -> Router {
    let routes = calls(state.clone());
    // The held connection's calls reach the same routes (`session`).
    let held = routes.clone().fallback(not_found);
    Router::new()
        .route(
            wire::session::SESSION_PATH,
            get(move |request: axum::extract::Request| {
                session::open(state.clone(), held.clone(), request)
            }),
        )
        .merge(routes)
}

/// Every route of the runner protocol but the held connection's own.
fn calls(state: InternalState) -> Router {
    Router::new()
        .route(wire::REGISTER, post(register))
        .route(wire::HEARTBEAT, post(heartbeat))
        .route(wire::POLL, post(poll))
        .route(wire::DEREGISTER, post(deregister))
        .route("/internal/attempts/{id}/accepted", post(accepted))
        .route("/internal/attempts/{id}/started", post(started))
        .route("/internal/attempts/{id}/logs", post(logs))
        .route("/internal/attempts/{id}/watch", post(watch))
        .route("/internal/attempts/{id}/complete", post(complete))
        .route("/internal/attempts/{id}/blobs/{kind}", put(put_blob))
        .route("/internal/attempts/{id}/blobs/{kind}/{step}", get(get_blob))
        .merge(caches::routes())
        .merge(checkout::routes())
        .merge(debug::routes())
        .merge(egress::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// 405 with a JSON body (axum's default has none).
pub async fn method_not_allowed() -> ApiError {
    ApiError::Client(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
}

/// 404 with a JSON body for paths no route matches.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn register(
    State(state): State<InternalState>,
    headers: HeaderMap,
    body: Result<Json<wire::RegisterRequest>, JsonRejection>,
) -> ApiResult<Json<wire::RegisterResponse>> {
    let (token, scope) = registration_grant(&state, bearer(&headers)?).await?;
    let Json(request) = body?;
    validate_name(&request.name)?;
    validate_labels(&request.labels)?;
    validate_host(request.host.as_deref())?;
    if let Some(refusal) = scope.refusal(&request.name, &request.labels) {
        return Err(ApiError::forbidden(refusal));
    }
    let accept_forks = scope
        .accepts_forks(request.accept_forks)
        .map_err(|e| ApiError::forbidden(e.to_string()))?;
    let session_token = tokens::new_token()?;
    let labels_json = serde_json::to_string(&request.labels).map_err(anyhow::Error::from)?;
    let registration = state
        .executor
        .store()
        .register(&NewRunner {
            name: &request.name,
            labels_json: &labels_json,
            session_hash: &tokens::hash_token(&session_token),
            ephemeral: request.ephemeral,
            token,
            secrets: scope.secrets,
            accept_forks,
            host: request.host.as_deref(),
            now: now_ms(),
        })
        .await?;
    let runner_id = match registration {
        Registration::Registered(id) => id,
        Registration::NameTaken => {
            return Err(ApiError::Client(
                StatusCode::CONFLICT,
                format!(
                    "a live runner is already named '{}'; choose another name",
                    request.name
                ),
            ))
        }
        Registration::TokenSpent => return Err(spent()),
    };
    tracing::debug!(runner_id, name = %request.name, "runner registered");
    Ok(Json(wire::RegisterResponse {
        runner_id,
        session_token,
        heartbeat_interval_ms: state.config.heartbeat_interval.as_millis() as u64,
    }))
}

/// The stored token a registration presents (`None`: the shared one) and what it grants;
/// 401 for a token that is unknown, revoked, used (one-time) or expired.
async fn registration_grant(
    state: &InternalState,
    given: &str,
) -> ApiResult<(Option<RedeemedToken>, Scope)> {
    if tokens::tokens_match(given, &state.config.registration_token) {
        return Ok((None, Scope::shared()));
    }
    let Some(row) = state
        .executor
        .store()
        .runner_token_by_hash(&tokens::hash_token(given))
        .await?
    else {
        return Err(ApiError::unauthorized("invalid registration token"));
    };
    let once = row.is_once();
    let expired = row.expires_at.is_some_and(|at| at < now_ms());
    if row.revoked_at.is_some() || (once && (row.used_at.is_some() || expired)) {
        return Err(spent());
    }
    let labels: BTreeMap<String, String> = serde_json::from_str(&row.labels)
        .map_err(|e| anyhow::anyhow!("stored labels of runner token {}: {e}", row.id))?;
    let scope = Scope {
        labels,
        secrets: row.secrets,
        only_name: once.then(|| row.name.clone()),
        forks: row.accept_forks,
    };
    Ok((Some(RedeemedToken { id: row.id, once }), scope))
}

fn spent() -> ApiError {
    ApiError::unauthorized(
        "this registration token was revoked, or is a one-time token already used or expired",
    )
}

async fn heartbeat(State(state): State<InternalState>, headers: HeaderMap) -> ApiResult<Json<Ack>> {
    let runner = authenticate(&state, &headers).await?;
    still_live(&state, &runner).await?;
    Ok(Json(Ack {}))
}

async fn deregister(
    State(state): State<InternalState>,
    headers: HeaderMap,
) -> ApiResult<Json<Ack>> {
    let runner = authenticate(&state, &headers).await?;
    state
        .executor
        .store()
        .runner_gone(runner.id, now_ms())
        .await?;
    state.auth.forget_runner(runner.id);
    Ok(Json(Ack {}))
}

async fn poll(
    State(state): State<InternalState>,
    headers: HeaderMap,
    body: Result<Json<PollRequest>, JsonRejection>,
) -> ApiResult<Json<PollResponse>> {
    let runner = authenticate(&state, &headers).await?;
    let Json(request) = body?;
    let store = state.executor.store();
    // A polling runner holds no attempt: one left `busy` by a completion whose next claim
    // never ran (an error on the way) is idle again.
    store.runner_idle(runner.id, now_ms()).await?;
    // The poll as it arrives is the runner's proof of life (a heartbeat, which clears a
    // suspect mark); the poll held afterwards is none (the runner may hang meanwhile).
    still_live(&state, &runner).await?;
    let mut alive = Alive {
        proven_at: now_ms(),
        suspect: false,
    };
    let window = i64::try_from(state.config.liveness_window.as_millis()).unwrap_or(i64::MAX);
    let wait = Duration::from_millis(request.wait_ms).min(state.config.max_wait);
    let deadline = tokio::time::Instant::now() + wait;
    let events = state.executor.events().clone();
    let mut first = true;
    // A wake the last wait ended with (not the timer) that no claim has used yet: handed
    // to another poll if this request ends first (`events`).
    let mut wake = UnusedWake {
        events: &events,
        held: false,
    };
    loop {
        // Read, never written: a lost runner gets no work and its poll ends with 410.
        if !std::mem::take(&mut first) {
            alive = alive.read_again(&state, &runner).await?;
        }
        if state.shutdown.is_cancelled() {
            return Ok(Json(PollResponse::default())); // draining: no new claims
        }
        let waiting = events.poll_wait();
        let notified = waiting.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let proof = if alive.suspect || now_ms() - alive.proven_at > window {
            Proof::None
        } else {
            Proof::Recent
        };
        // No proof of life: handed nothing. Answered empty when there is work it could
        // take, so a live runner polls again at once (that poll is the proof); kept
        // waiting otherwise (nothing to hand over, nothing to prove).
        if proof == Proof::None {
            if store
                .ready_in_scope(runner.id, &runner.label_sets, now_ms())
                .await?
            {
                tracing::debug!(
                    runner = runner.id,
                    "a held poll without proof of life answered empty before a claim"
                );
                return Ok(Json(PollResponse::default()));
            }
        } else if let Some(debug) = debug::claim(&state, &runner).await? {
            return Ok(Json(PollResponse {
                assignment: None,
                debug: Some(Box::new(debug)),
            }));
        }
        let claimed = match proof {
            Proof::Recent => store.claim(runner.id, &runner.label_sets, now_ms()).await?,
            Proof::None => None,
        };
        let woken = std::mem::take(&mut wake.held);
        if let Some(claimed) = claimed {
            match state.attempts.assign(&runner, claimed).await? {
                Some(assignment) => {
                    return Ok(Json(PollResponse {
                        assignment: Some(assignment),
                        debug: None,
                    }))
                }
                None => continue,
            }
        }
        // Woken for work this runner may not take (labels, forks, secrets): every waiting
        // poll looks, once per queueing, so a runner that may take it does at once. Not for
        // work it may take that another claim in flight got first: that would wake every
        // poll into a claim that finds nothing (one in nine found work when it did so).
        if woken
            && waiting.sweep_armed()
            && state
                .executor
                .store()
                .ready_for_others(runner.id, &runner.label_sets, now_ms())
                .await?
            && waiting.sweep()
        {
            tracing::trace!(
                runner = runner.id,
                "woke every poll: ready work it may not take"
            );
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Json(PollResponse::default()));
        }
        // Re-check on a slow timer too, under every wake (`due_wake` for work that became due,
        // the sweeper's periodic wake of every poll): a safety net, never the way work is
        // found.
        let tick = (deadline - now).min(state.config.poll_recheck);
        wake.held = tokio::select! {
            _ = state.shutdown.cancelled() => return Ok(Json(PollResponse::default())),
            waited = tokio::time::timeout(tick, notified) => waited.is_ok(),
        };
    }
}

/// What a held poll knows of its runner's life ([`poll`]).
#[derive(Debug, Clone, Copy)]
struct Alive {
    /// The runner's latest proof of life: this poll's arrival, or a heartbeat since.
    proven_at: i64,
    /// The runner is suspect: it claims nothing until it proves alive.
    suspect: bool,
}

impl Alive {
    /// The runner's liveness read again (a heartbeat may have come meanwhile); 410 once it
    /// is lost or gone.
    async fn read_again(self, state: &InternalState, runner: &AuthedRunner) -> ApiResult<Alive> {
        match state.executor.store().runner_liveness(runner.id).await? {
            Some(live) => Ok(Alive {
                proven_at: self.proven_at.max(live.last_heartbeat),
                suspect: live.suspect,
            }),
            None => {
                state.auth.forget_runner(runner.id);
                Err(gone())
            }
        }
    }
}

/// Whether a held poll may be handed work: its runner proved alive within the liveness
/// window and is not suspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    Recent,
    None,
}

/// A poll's wake not yet used by a claim: dropped while held (the request ended, or went
/// to a debug session or an error, before it claimed), it wakes another poll instead, so
/// the step it was for never waits for the timer.
struct UnusedWake<'a> {
    events: &'a plue_store::events::Events,
    held: bool,
}

impl Drop for UnusedWake<'_> {
    fn drop(&mut self) {
        if self.held {
            self.events.pass_wake();
        }
    }
}

/// `PUT /internal/attempts/{id}/blobs/{kind}`: the attempt's final workspace or artifacts,
/// a tar streamed into the blob store and recorded once whole.
async fn put_blob(
    State(state): State<InternalState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> ApiResult<Json<Ack>> {
    let runner = authenticate(&state, &headers).await?;
    let Path((raw_id, kind)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (attempt_id, owner) = owned_attempt_id(&state, &runner, &raw_id).await?;
    let kind = blob_kind(&kind)?;
    let store = state.executor.store();
    // A runner keeps files only while its attempt runs: once it ended (reported, timed
    // out, lost), what later steps and downloads read can no longer be replaced.
    let ended = || {
        ApiError::Client(
            axum::http::StatusCode::CONFLICT,
            format!("attempt {attempt_id} has ended; its files can no longer change"),
        )
    };
    if !store.attempt_is_live(attempt_id).await? {
        return Err(ended());
    }
    let step_id = store
        .step_id_of(owner.step_run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no attempt {attempt_id}")))?;
    let upload = Upload {
        run_id: owner.run_id,
        step_id,
        attempt: owner.number,
        kind,
    };
    let mut body = body.into_data_stream();
    let stored = match state.artifacts.upload(store, &upload, &mut body).await {
        Ok(stored) => stored,
        Err(e) => {
            if matches!(
                e,
                ArtifactError::TooLarge { .. }
                    | ArtifactError::OverQuota { .. }
                    | ArtifactError::Refused(_)
            ) {
                drain_refused(body).await;
            }
            return Err(blob_error(e, &upload.step_id));
        }
    };
    let step_id = upload.step_id.clone();
    state
        .artifacts
        .record(store, upload, stored, attempt_id)
        .await
        .map_err(|e| match e {
            ArtifactError::Ended => ended(),
            e => blob_error(e, &step_id),
        })?;
    Ok(Json(Ack {}))
}

/// How much of an upload refused while it streams is read and dropped before the refusal
/// is answered, and for how long at most: a connection closed with the uploader's bytes
/// still unread is reset, and the reset can take the answer with it — the runner then
/// knows only that sending failed, not the quota its step passed.
const DRAIN_REFUSED_BYTES: usize = 128 << 20;
const DRAIN_REFUSED_FOR: Duration = Duration::from_secs(3);

/// Reads what is left of a refused upload's `body`, within [`DRAIN_REFUSED_BYTES`] and
/// [`DRAIN_REFUSED_FOR`].
async fn drain_refused(mut body: axum::body::BodyDataStream) {
    use futures::StreamExt;
    let _ = tokio::time::timeout(DRAIN_REFUSED_FOR, async {
        let mut read = 0;
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len();
            if read > DRAIN_REFUSED_BYTES {
                break;
            }
        }
    })
    .await;
}

/// `GET /internal/attempts/{id}/blobs/{kind}/{step}`: the tar a dependency left, when the
/// attempt's dispatch names it.
async fn get_blob(
    State(state): State<InternalState>,
    headers: HeaderMap,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let runner = authenticate(&state, &headers).await?;
    let Path((raw_id, kind, step)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (attempt_id, owner) = owned_attempt_id(&state, &runner, &raw_id).await?;
    let kind = blob_kind(&kind)?;
    let store = state.executor.store();
    let handoff = match store.dispatch_of(owner.step_run_id).await? {
        Some(text) => {
            serde_json::from_str::<Dispatch>(&text)
                .map_err(|e| anyhow::anyhow!("dispatch of attempt {attempt_id}: {e}"))?
                .handoff
        }
        None => wire::Handoff::default(),
    };
    let named = match kind {
        wire::BlobKind::Workspace => handoff.workspace_from.as_deref() == Some(step.as_str()),
        wire::BlobKind::Artifacts => handoff.needs_artifacts.contains(&step),
        // A transcript goes to the run's readers, never to another step.
        wire::BlobKind::Transcript => false,
    };
    if !named {
        let option = match kind {
            wire::BlobKind::Workspace => "workspace_from",
            wire::BlobKind::Artifacts => "needs_artifacts",
            wire::BlobKind::Transcript => "a hand-off (transcripts are not handed on)",
        };
        return Err(ApiError::forbidden(format!(
            "attempt {attempt_id}'s step does not name '{}' in {option}",
            step.escape_debug()
        )));
    }
    // The second line behind the claim's rule: what a step that held secrets left (or a
    // step that took such files) goes to no runner whose token forbids secrets.
    if !runner.secrets && store.step_needs_secrets(owner.run_id, &step).await? {
        return Err(ApiError::forbidden(format!(
            "step '{}' held secrets: its {} goes only to runners allowed secrets",
            step.escape_debug(),
            kind.as_str()
        )));
    }
    let blob = store
        .handed_blob(owner.run_id, &step, kind.as_str(), owner.step_run_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "step '{step}' of this run left no {}",
                kind.as_str()
            ))
        })?;
    let stream = state
        .artifacts
        .get(&blob.key)
        .await
        .map_err(|e| blob_error(e, &step))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn blob_kind(text: &str) -> ApiResult<wire::BlobKind> {
    wire::BlobKind::parse(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "'{}' is not a blob kind (workspace, artifacts, transcript)",
            text.escape_debug()
        ))
    })
}

/// A blob failure as the runner sees it: its own problems are 4xx with the reason.
fn blob_error(e: ArtifactError, step: &str) -> ApiError {
    match e {
        ArtifactError::TooLarge { .. } | ArtifactError::OverQuota { .. } => {
            ApiError::Client(StatusCode::PAYLOAD_TOO_LARGE, format!("step '{step}': {e}"))
        }
        ArtifactError::Refused(_) | ArtifactError::Body(_) => {
            ApiError::bad_request(format!("step '{step}': {e}"))
        }
        ArtifactError::Store(object_store::Error::NotFound { .. }) => {
            ApiError::not_found(format!("the blob of step '{step}' is gone (retention)"))
        }
        ArtifactError::Store(e) => ApiError::Internal(anyhow::anyhow!("blob store: {e}")),
        ArtifactError::Record(e) => ApiError::Internal(e.context("recording a blob")),
        ArtifactError::Ended => ApiError::Client(
            StatusCode::CONFLICT,
            format!("the attempt of step '{step}' has ended; its files can no longer change"),
        ),
    }
}

/// `POST /internal/attempts/{id}/accepted`: the runner acknowledges the assignment a poll
/// handed it, before it runs any of it. 409 when the claim was returned (it came too late)
/// or the attempt ended otherwise: the runner must not run it.
async fn accepted(
    State(state): State<InternalState>,
    headers: HeaderMap,
    attempt_id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Ack>> {
    let runner = authenticate(&state, &headers).await?;
    let (attempt_id, _) = owned_attempt(&state, &runner, attempt_id).await?;
    match state.attempts.accept(&runner, attempt_id).await? {
        Acknowledgement::Counted => Ok(Json(Ack {})),
        Acknowledgement::Refused => Err(ApiError::Client(
            StatusCode::CONFLICT,
            format!(
                "attempt {attempt_id} is no longer this runner's (its claim was not \
                 acknowledged in time and went back to the queue, or it ended): do not run it"
            ),
        )),
    }
}

async fn started(
    State(state): State<InternalState>,
    headers: HeaderMap,
    attempt_id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Ack>> {
    let runner = authenticate(&state, &headers).await?;
    let (attempt_id, owner) = owned_attempt(&state, &runner, attempt_id).await?;
    state.attempts.started(&runner, attempt_id, &owner).await?;
    Ok(Json(Ack {}))
}

async fn logs(
    State(state): State<InternalState>,
    headers: HeaderMap,
    attempt_id: Result<Path<String>, PathRejection>,
    body: Result<JsonBody<LogBatch>, JsonRejection>,
) -> ApiResult<Json<LogAck>> {
    let runner = authenticate(&state, &headers).await?;
    let (attempt_id, owner) = owned_attempt(&state, &runner, attempt_id).await?;
    let JsonBody(batch) = body?;
    validate_batch(&batch)?;
    let cancel = state
        .attempts
        .store_batch(attempt_id, &owner, batch)
        .await?;
    Ok(Json(LogAck { cancel }))
}

async fn watch(
    State(state): State<InternalState>,
    headers: HeaderMap,
    attempt_id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<wire::WatchResponse>> {
    let runner = authenticate(&state, &headers).await?;
    let (attempt_id, owner) = owned_attempt(&state, &runner, attempt_id).await?;
    let mut events = state.executor.events().subscribe();
    let deadline = tokio::time::Instant::now() + state.config.max_wait;
    loop {
        if state
            .executor
            .store()
            .attempt_should_stop(attempt_id)
            .await?
        {
            return Ok(Json(wire::WatchResponse { cancel: true }));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Json(wire::WatchResponse { cancel: false }));
        }
        // Woken by a cancel of this run (another replica's too, `store::wake`); re-checked
        // every second, for one whose hint was lost.
        let wait = (deadline - now).min(Duration::from_secs(1));
        if state.shutdown.is_cancelled() {
            return Ok(Json(wire::WatchResponse { cancel: false }));
        }
        let _ = tokio::time::timeout(wait, async {
            loop {
                match events.recv().await {
                    Ok(Event::Cancel { run_id }) if run_id == owner.run_id => return,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await
                    }
                }
            }
        })
        .await;
    }
}

async fn complete(
    State(state): State<InternalState>,
    headers: HeaderMap,
    attempt_id: Result<Path<String>, PathRejection>,
    body: Result<JsonBody<wire::Completion>, JsonRejection>,
) -> ApiResult<Json<wire::CompleteResponse>> {
    let runner = authenticate(&state, &headers).await?;
    let (attempt_id, owner) = owned_attempt(&state, &runner, attempt_id).await?;
    let JsonBody(completion) = body?;
    validate_outputs(&completion.outputs)?;
    if completion.reason.as_ref().is_some_and(|r| r.len() > 4096) {
        return Err(ApiError::bad_request("reason is longer than 4096 bytes"));
    }
    if completion.model.as_ref().is_some_and(|m| m.len() > 200) {
        return Err(ApiError::bad_request("model is longer than 200 bytes"));
    }
    // A report refused here stores none of its lines.
    if let Some(batch) = &completion.logs {
        validate_batch(batch)?;
    }
    let next = state
        .attempts
        .complete(&runner, attempt_id, &owner, completion)
        .await?;
    Ok(Json(wire::CompleteResponse { next }))
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    tokens::bearer(header)
        .ok_or_else(|| ApiError::unauthorized("missing 'Authorization: Bearer <token>'"))
}

async fn authenticate(state: &InternalState, headers: &HeaderMap) -> ApiResult<AuthedRunner> {
    let hash = tokens::hash_token(bearer(headers)?);
    if let Some(runner) = lock(&state.auth.runners).get(&hash) {
        return Ok(runner.clone());
    }
    let Some(row) = state.executor.store().runner_by_token(&hash).await? else {
        return Err(ApiError::unauthorized("unknown runner token"));
    };
    if !row.state.is_live() {
        // regression: a runner declared lost got 401 and never learnt to stop its step.
        return Err(gone());
    }
    let labels: BTreeMap<String, String> = serde_json::from_str(&row.labels)
        .map_err(|e| anyhow::anyhow!("stored labels of runner {}: {e}", row.id))?;
    let runner = AuthedRunner {
        id: row.id,
        label_sets: Arc::new(label_subsets(&labels)),
        secrets: row.secrets,
    };
    let mut runners = lock(&state.auth.runners);
    if runners.len() >= CACHE_LIMIT {
        runners.clear();
    }
    runners.insert(hash, runner.clone());
    Ok(runner)
}

async fn still_live(state: &InternalState, runner: &AuthedRunner) -> ApiResult<()> {
    if state
        .executor
        .store()
        .heartbeat(runner.id, now_ms())
        .await?
    {
        Ok(())
    } else {
        state.auth.forget_runner(runner.id);
        Err(gone())
    }
}

/// The answer to a runner the engine has declared lost or stopped: it must stop its step.
fn gone() -> ApiError {
    ApiError::Client(
        StatusCode::GONE,
        "this runner is no longer registered (declared lost or stopped); stop and register again"
            .into(),
    )
}

/// The attempt a request's path names, if it belongs to `runner` (owners are cached, so a
/// log batch costs no extra read).
async fn owned_attempt(
    state: &InternalState,
    runner: &AuthedRunner,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<(i64, AttemptOwner)> {
    let Path(raw_id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    owned_attempt_id(state, runner, &raw_id).await
}

/// [`owned_attempt`] for an id already taken from the path.
async fn owned_attempt_id(
    state: &InternalState,
    runner: &AuthedRunner,
    raw_id: &str,
) -> ApiResult<(i64, AttemptOwner)> {
    let attempt_id = parse_id(raw_id)?;
    let owner = state
        .attempts
        .owner_of(attempt_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no attempt {attempt_id}")))?;
    if owner.runner_id != runner.id {
        return Err(ApiError::forbidden(format!(
            "attempt {attempt_id} belongs to another runner"
        )));
    }
    Ok((attempt_id, owner))
}

fn parse_id(raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("'{raw}' is not an attempt id")))
}

fn validate_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "runner name '{}' must be 1-128 characters of A-Z a-z 0-9 . _ -",
            name.chars().take(140).collect::<String>()
        )))
    }
}

/// A runner's host: its Kubernetes node or host name, a DNS name's characters and length.
fn validate_host(host: Option<&str>) -> ApiResult<()> {
    let Some(host) = host else {
        return Ok(());
    };
    let ok = !host.is_empty()
        && host.len() <= wire::MAX_HOST_BYTES
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "host '{}' must be 1-{} characters of A-Z a-z 0-9 . _ -",
            host.chars().take(260).collect::<String>().escape_debug(),
            wire::MAX_HOST_BYTES
        )))
    }
}

fn validate_labels(labels: &BTreeMap<String, String>) -> ApiResult<()> {
    scope::check_announced(labels).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn validate_batch(batch: &LogBatch) -> ApiResult<()> {
    if batch.lines.len() > wire::MAX_BATCH_LINES {
        return Err(ApiError::bad_request(format!(
            "a batch holds at most {} lines, got {}",
            wire::MAX_BATCH_LINES,
            batch.lines.len()
        )));
    }
    if let Some(pair) = batch.lines.windows(2).find(|w| w[1].seq <= w[0].seq) {
        return Err(ApiError::bad_request(format!(
            "the seqs of a batch increase: line {} follows line {}",
            pair[1].seq, pair[0].seq
        )));
    }
    for line in &batch.lines {
        if line.seq == 0 || line.seq > i64::MAX as u64 {
            return Err(ApiError::bad_request(format!("invalid seq {}", line.seq)));
        }
        if line.text.len() > wire::MAX_LINE_BYTES {
            return Err(ApiError::bad_request(format!(
                "line {} is longer than {} bytes",
                line.seq,
                wire::MAX_LINE_BYTES
            )));
        }
        if line.text.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "line {} contains a NUL character",
                line.seq
            )));
        }
    }
    Ok(())
}

fn validate_outputs(outputs: &BTreeMap<String, String>) -> ApiResult<()> {
    if outputs.len() > wire::MAX_OUTPUTS {
        return Err(ApiError::bad_request(format!(
            "at most {} outputs",
            wire::MAX_OUTPUTS
        )));
    }
    for (key, value) in outputs {
        let key_ok = key.len() <= 128
            && key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !key_ok {
            return Err(ApiError::bad_request(format!(
                "invalid output name '{key}'"
            )));
        }
        if value.len() > wire::MAX_OUTPUT_VALUE_BYTES || value.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "output '{key}' is too long or contains NUL"
            )));
        }
    }
    Ok(())
}

/// Canonical `k=v,...` forms of every subset of `labels` (the empty set included): the
/// operator's labels and the reserved network labels (at most
/// [`scope::MAX_ANNOUNCED`] in all, as registration checks).
pub fn label_subsets(labels: &BTreeMap<String, String>) -> Vec<String> {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let n = pairs.len().min(scope::MAX_ANNOUNCED);
    (0u32..(1 << n))
        .map(|mask| {
            pairs[..n]
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, p)| p.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_subsets_cover_every_combination_in_canonical_order() {
        let labels = BTreeMap::from([
            ("os".to_string(), "linux".to_string()),
            ("gpu".to_string(), "a100".to_string()),
        ]);
        let mut sets = label_subsets(&labels);
        sets.sort();
        assert_eq!(sets, ["", "gpu=a100", "gpu=a100,os=linux", "os=linux"]);
        let step: BTreeMap<String, String> =
            BTreeMap::from([("os".into(), "linux".into()), ("gpu".into(), "a100".into())]);
        let canonical = plue_store::canonical_labels(step.iter());
        assert!(sets.contains(&canonical));
    }
}
