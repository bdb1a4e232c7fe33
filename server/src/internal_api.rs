//! `/internal/...`: the runner-facing HTTP API (protocol in [`plue_types::protocol`]).
//!
//! Past 600 lines: the runner protocol's handlers (registration, polling, logs, completion,
//! hand-off blobs) share one authentication and ownership check each; splitting the blob
//! handlers into their own module is the next step when this file grows again.
//!
//! Invariants:
//! - Every request is authenticated: registration with a registration token (the shared
//!   one, a scoped one, or a one-time one the pool minted), everything else with the
//!   runner's own session token; a runner may only touch its own attempts (403 otherwise).
//! - A registration stays inside its token's scope ([`crate::runner_scope`]): labels it
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
//! - Log lines and outputs are stored masked with every secret of the run (each spelling
//!   the outbound wall knows, where it stands), the run's wall kept `WALL_FOR`; withheld
//!   when the wall cannot be made, never stored unmasked.
//! - A completion's reason is stored as the run's outbound wall redacts it (every secret of
//!   the run masked, links to other hosts removed): a runner masks only its step's own.
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
use plue_types::protocol::{
    self as wire, Ack, Assignment, LogAck, LogBatch, PollRequest, PollResponse, StepAction,
};

use crate::artifacts::{ArtifactError, Artifacts, Upload};
use crate::dispatch::Dispatch;
use crate::events::Event;
use crate::executor::{Executor, Report, RunnerSaid};
use crate::http_error::{ApiError, ApiResult};
use crate::json_body::JsonBody;
use crate::metrics;
use crate::outbound::Checker;
use crate::runner_scope::{self, Scope};
use crate::store::{
    log_quota, now_ms, Acknowledgement, AttemptOwner, BatchEnd, Claimed, LogAttempt, LogQuotas,
    NewRunner, NextClaim, RedeemedToken, Registration,
};
use crate::tokens;
use refused::AttemptRefused;

mod caches;
mod checkout;
pub(crate) mod debug;
mod egress;
mod refused;

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
    /// The most bytes of log text an attempt and a run may store.
    pub log_quotas: LogQuotas,
    /// Where `prompt_file`s are read from instead of the step's workspace
    /// ([`crate::server::EngineConfig::prompt_root`]).
    pub prompt_root: Option<std::path::PathBuf>,
    /// The `iss` of steps' OpenID Connect tokens ([`crate::oidc`]).
    pub oidc_issuer: std::sync::Arc<str>,
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
    pub id_tokens: Arc<crate::id_tokens::IdTokens>,
}

/// A runner as authenticated by its session token.
#[derive(Debug, Clone)]
pub struct AuthedRunner {
    pub id: i64,
    /// Canonical forms of every subset of its labels (what it may claim).
    pub label_sets: Arc<Vec<String>>,
    /// Whether its registration token lets it receive secrets.
    pub secrets: bool,
}

/// Caches of session tokens and attempt owners, so a log batch costs no extra reads.
#[derive(Debug, Default)]
pub struct RunnerAuth {
    runners: Mutex<HashMap<String, AuthedRunner>>,
    owners: Mutex<HashMap<i64, AttemptOwner>>,
    /// Each active run's outbound wall, for its log lines: made when it was first needed,
    /// made again after [`WALL_FOR`].
    walls: Mutex<HashMap<i64, CachedWall>>,
    /// The checkout tokens handed with attempts, until they complete.
    checkouts: checkout::Handed,
}

impl InternalConfig {
    /// The liveness window for runners heartbeating every `heartbeat_interval`: two
    /// heartbeats' time, so one late heartbeat costs a live runner at most a poll again.
    pub fn liveness_for(heartbeat_interval: Duration) -> Duration {
        heartbeat_interval * 2
    }
}

const CACHE_LIMIT: usize = 10_000;
/// What a log line, an output or a reason becomes when the run's wall cannot be made (a
/// secret of the run the vault cannot open): withheld, never kept unmasked.
const WITHHELD_NO_WALL: &str = "[withheld: the run's secrets could not be read]";
/// How long a run's wall is used for its log lines before it is made again (a secret
/// changed meanwhile is masked from then on).
const WALL_FOR: Duration = Duration::from_secs(30);

/// A run's wall as cached: when it was made, how many values its run held then, the wall.
type CachedWall = (std::time::Instant, i64, Arc<Checker>);
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

impl RunnerAuth {
    /// Run `run_id`'s outbound wall, kept [`WALL_FOR`] while the run holds no new value:
    /// a secret or token handed to one of its steps since (by this engine or another
    /// replica) makes it again, so a later step's log never misses it.
    async fn wall_of(&self, executor: &Executor, run_id: i64) -> anyhow::Result<Arc<Checker>> {
        let held = executor.store().held_secrets_count(run_id).await?;
        if let Some((at, count, wall)) = lock(&self.walls).get(&run_id) {
            if at.elapsed() < WALL_FOR && *count == held {
                return Ok(wall.clone());
            }
        }
        let wall = Arc::new(executor.walls(String::new()).of_run(run_id).await?);
        let mut walls = lock(&self.walls);
        if walls.len() >= CACHE_LIMIT {
            walls.clear();
        }
        walls.insert(run_id, (std::time::Instant::now(), held, wall.clone()));
        Ok(wall)
    }

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
            remember_owner(&state, &runner, &claimed);
            match assignment(&state, &runner, claimed).await? {
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
    events: &'a crate::events::Events,
    held: bool,
}

impl Drop for UnusedWake<'_> {
    fn drop(&mut self) {
        if self.held {
            self.events.pass_wake();
        }
    }
}

/// The assignment for a fresh claim, or `None` when the attempt had to fail at once (a
/// missing secret, an unreadable dispatch document); the failure is recorded.
async fn assignment(
    state: &InternalState,
    runner: &AuthedRunner,
    claimed: Claimed,
) -> ApiResult<Option<Assignment>> {
    let (attempt_id, run_id) = (claimed.attempt_id, claimed.run_id);
    match prepare_assignment(state, runner, claimed).await? {
        Ok(assignment) => Ok(Some(assignment)),
        Err(refused) => {
            let reason = refused.to_string();
            let report = Report {
                outcome: wire::Outcome::Failed,
                exit_code: None,
                reason: Some(reason),
                outputs: BTreeMap::new(),
            };
            state
                .executor
                .complete(attempt_id, run_id, None, &report)
                .await?;
            Ok(None)
        }
    }
}

/// The assignment for a fresh claim, or why its attempt fails at once (the reason
/// [`assignment`] records); the outer error is the engine's own.
async fn prepare_assignment(
    state: &InternalState,
    runner: &AuthedRunner,
    claimed: Claimed,
) -> ApiResult<Result<Assignment, AttemptRefused>> {
    let dispatch: Dispatch = match serde_json::from_str(&claimed.dispatch) {
        Ok(dispatch) => dispatch,
        Err(e) => return Ok(Err(e.into())),
    };
    let secrets = match state
        .executor
        .secret_values(claimed.run_id, &claimed.step_id, &dispatch.secrets)
        .await?
    {
        Ok(secrets) => secrets,
        Err(refused) => return Ok(Err(refused.into())),
    };
    if !runner.secrets && !secrets.values.is_empty() {
        // The claim skips such steps; this holds even for rows queued before it did.
        return Ok(Err(AttemptRefused::RunnerWithoutSecrets {
            names: secrets.values.keys().cloned().collect(),
            runner: runner.id,
        }));
    }
    // An llm step's limits, and its hold on the run's budget (crate::pricing::budget).
    let budget = match crate::pricing::budget::assign(
        state.executor.store(),
        state.executor.prices(),
        crate::pricing::budget::Claimed {
            attempt_id: claimed.attempt_id,
            run_id: claimed.run_id,
            step_id: &claimed.step_id,
        },
        dispatch.budget.as_ref(),
        state.executor.plan(claimed.run_id),
    )
    .await?
    {
        Ok(budget) => budget,
        Err(refused) => return Ok(Err(refused.into())),
    };
    // The step's caches in its run's partition, decided when the run was created
    // (`plue_core::caches`); a run from before partitions gets its least trusted one.
    let caches = if dispatch.caches.is_empty() {
        Vec::new()
    } else {
        let (label, repo) = state
            .executor
            .store()
            .run_cache_partition(claimed.run_id)
            .await?
            .unwrap_or((None, None));
        let partition = plue_core::caches::Partition::stored(label.as_deref(), repo.is_some());
        dispatch.cache_specs(&partition.label(), state.artifacts.cache_entry_limit())
    };
    let mut action = dispatch.action;
    if let Err(refused) = read_prompt_file(state.config.prompt_root.as_deref(), &mut action) {
        return Ok(Err(refused));
    }
    let workspace = serde_json::from_str(&claimed.workspace)
        .map_err(|e| anyhow::anyhow!("stored workspace of run {}: {e}", claimed.run_id))?;
    // A GitHub App's repository: a short-lived read-only token for the checkout.
    let workspace = match checkout::with_credential(
        &state.executor,
        &state.auth.checkouts,
        claimed.run_id,
        claimed.attempt_id,
        workspace,
    )
    .await?
    {
        Ok(workspace) => workspace,
        Err(refused) => return Ok(Err(refused)),
    };
    let mut env = dispatch.env;
    // Read with the claim, once per run (the store's `ClaimedRuns`).
    if let Some(context) = &claimed.summoned_context {
        let ctx: evaluator::EvalContext = serde_json::from_str(context)
            .map_err(|e| anyhow::anyhow!("stored context of run {}: {e}", claimed.run_id))?;
        env.extend(crate::dispatch::summoned_env(&ctx));
    }
    env.insert("PLUE_ATTEMPT".into(), claimed.number.to_string());
    if !secrets.withheld.is_empty() {
        env.insert("PLUE_SECRETS_WITHHELD".into(), secrets.withheld.join(","));
    }
    let egress_grant = egress::grant_for(
        state.config.egress.as_ref(),
        claimed.attempt_id,
        &dispatch.network,
    )?;
    // Its OpenID Connect tokens, made last (nothing after this refuses the attempt): each a
    // secret of the run from the moment it is made (`crate::id_tokens`).
    let mut secrets = secrets.values;
    if !dispatch.id_tokens.is_empty() {
        let request = crate::id_tokens::Request {
            issuer: &state.config.oidc_issuer,
            run_id: claimed.run_id,
            step_id: &claimed.step_id,
            attempt: claimed.number,
            tokens: &dispatch.id_tokens,
            timeout_secs: dispatch.timeout_secs,
            runs_processes: matches!(action, StepAction::Bash { .. } | StepAction::Python { .. }),
        };
        // A runner kept from secrets (one for forks) runs a step whose tokens would be
        // withheld anyway; one that would get them is another runner's.
        if !runner.secrets && crate::id_tokens::entitled(&state.executor, request).await? {
            return Ok(Err(AttemptRefused::RunnerWithoutSecrets {
                names: dispatch.id_tokens.keys().cloned().collect(),
                runner: runner.id,
            }));
        }
        let issued = state.id_tokens.for_step(&state.executor, request).await?;
        secrets.extend(issued.values);
        if !issued.withheld.is_empty() {
            env.insert("PLUE_ID_TOKENS_WITHHELD".into(), issued.withheld.join(","));
        }
    }
    Ok(Ok(Assignment {
        attempt_id: claimed.attempt_id,
        run_id: claimed.run_id,
        step_id: claimed.step_id,
        attempt: u32::try_from(claimed.number).unwrap_or(u32::MAX),
        action,
        env,
        secrets,
        timeout_secs: dispatch.timeout_secs,
        workspace,
        handoff: wire::Handoff {
            max_bytes: state.artifacts.max_bytes(),
            ..dispatch.handoff
        },
        network: dispatch.network,
        egress_grant,
        caches,
        budget,
    }))
}

/// Puts the text of an llm step's `prompt_file`, read inside `root` (confined to it as the
/// runner confines it to its workspace), into `action`, when there is a root.
fn read_prompt_file(
    root: Option<&std::path::Path>,
    action: &mut StepAction,
) -> Result<(), AttemptRefused> {
    let (
        Some(root),
        StepAction::Llm {
            prompt_file: Some(reference),
            prompt_file_content,
            ..
        },
    ) = (root, action)
    else {
        return Ok(());
    };
    *prompt_file_content = prompts::resolve_text(reference, root)
        .map(|text| text.map(Box::new))
        .map_err(|error| AttemptRefused::PromptFile {
            reference: reference.clone(),
            root: root.to_owned(),
            error: Box::new(error),
        })?;
    Ok(())
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
    match state
        .executor
        .store()
        .acknowledge_claim(attempt_id, runner.id, now_ms())
        .await?
    {
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
    let now = now_ms();
    let ready_at = state
        .executor
        .store()
        .start_attempt(attempt_id, runner.id, now)
        .await?;
    metrics::step_started(ready_at, now);
    state
        .executor
        .events()
        .steps_moved(owner.run_id, &[owner.step_run_id]);
    state.executor.events().send(Event::Step {
        run_id: owner.run_id,
    });
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
    let cancel = store_batch(&state, attempt_id, &owner, batch).await?;
    Ok(Json(LogAck { cancel }))
}

/// Stores a batch of attempt `attempt_id`'s lines (`POST .../logs`, or the one a completion
/// carries): checked, counted against the log quotas, masked with the run's wall, told to
/// readers. Answers whether the runner should stop the attempt.
async fn store_batch(
    state: &InternalState,
    attempt_id: i64,
    owner: &AttemptOwner,
    batch: LogBatch,
) -> ApiResult<bool> {
    validate_batch(&batch)?;
    let store = state.executor.store();
    // Counted against the log quotas (store::logs::quota): past one, the batch is cut and
    // ends with a marker line, and the attempt is failed here with the marker as reason.
    let Some(budget) = store.log_budget(attempt_id).await? else {
        return Ok(true);
    };
    let mut planned = log_quota::plan(&state.config.log_quotas, &budget, &batch.lines, now_ms());
    // The runner masked the lines with the step's own secrets; readers see them masked
    // with every secret of the run (a token another step left in the workspace, printed by
    // a tool here).
    match state.auth.wall_of(&state.executor, owner.run_id).await {
        Ok(wall) if wall.has_secrets() => {
            for line in &mut planned.lines {
                if let Some(masked) = wall.mask_spellings(&line.text) {
                    line.text = masked;
                }
            }
        }
        Ok(_) => {}
        // Never kept unmasked, never refused (the runner would send it again and again).
        Err(e) => {
            tracing::warn!(run = owner.run_id, "the run's outbound wall: {e:#}");
            for line in &mut planned.lines {
                line.text = WITHHELD_NO_WALL.into();
            }
        }
    }
    let at = LogAttempt {
        attempt_id,
        run_id: owner.run_id,
        step_run_id: owner.step_run_id,
        number: owner.number,
    };
    let stored = store
        .append_logs_counted(
            at,
            &planned.lines,
            match planned.over {
                Some(_) => BatchEnd::Cut,
                None => BatchEnd::Open,
            },
        )
        .await?;
    metrics::record(metrics::Event::LogLines(stored));
    if stored > 0 {
        // Under the attempt the runner holds: a line cannot name another step.
        crate::annotations::ingest(store, at, &planned.lines).await?;
    }
    let events = state.executor.events();
    // A tapped run's reader gets the lines as stored, when all of them were new (a batch
    // sent again stores nothing, or only what its first copy did not) and in order; it is
    // told of any other batch that stored lines, so it reads those from the store.
    let in_order = planned.lines.windows(2).all(|w| w[1].seq == w[0].seq + 1);
    if stored > 0 && events.tapped(owner.run_id) {
        if stored == planned.lines.len() as u64 && in_order {
            events.offer_lines(owner.run_id, owner.step_run_id, owner.number, planned.lines);
        } else {
            events.left_out(owner.run_id, owner.step_run_id);
        }
    }
    events.send(Event::Logs {
        run_id: owner.run_id,
        step_run_id: owner.step_run_id,
    });
    if let Some(over) = planned.over {
        let report = Report {
            outcome: plue_types::protocol::Outcome::Failed,
            exit_code: None,
            reason: Some(over.to_string()),
            outputs: BTreeMap::new(),
        };
        state
            .executor
            .complete(attempt_id, owner.run_id, None, &report)
            .await?;
        return Ok(true);
    }
    Ok(budget.stop || budget.truncated)
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
    let JsonBody(mut completion) = body?;
    validate_outputs(&completion.outputs)?;
    if completion.reason.as_ref().is_some_and(|r| r.len() > 4096) {
        return Err(ApiError::bad_request("reason is longer than 4096 bytes"));
    }
    if completion.model.as_ref().is_some_and(|m| m.len() > 200) {
        return Err(ApiError::bad_request("model is longer than 200 bytes"));
    }
    // Its last lines, as their own batch would have been: stored and told to readers
    // before the end is recorded (a report refused above stores none of them). A batch
    // past a quota fails the attempt there, and this report is then a repeat.
    if let Some(batch) = completion.logs.take() {
        store_batch(&state, attempt_id, &owner, batch).await?;
    }
    let network_refused = completion.network_refused;
    let (mut outcome, mut reason) = (completion.outcome, completion.reason);
    // A checkout the forge refused the token of: that token is forgotten.
    let handed = &state.auth.checkouts;
    if let Err(e) = checkout::after_attempt(
        &state.executor,
        handed,
        attempt_id,
        outcome,
        reason.as_deref(),
    )
    .await
    {
        tracing::warn!(attempt = attempt_id, "the attempt's checkout token: {e:#}");
    }
    // Safe outputs: judged before the attempt ends (a refusal fails it), stored after.
    let judged = crate::safe_outputs::judge(
        &state.executor,
        owner.run_id,
        owner.step_run_id,
        &mut outcome,
        &mut reason,
        &completion.proposals,
    )
    .await?;
    // The runner masked its reason and outputs with the step's own secrets; readers see
    // them only as the run's wall leaves them (another step's token a tool printed, or an
    // agent put in its result, is masked too).
    let mut outputs = completion.outputs;
    let wall = state.auth.wall_of(&state.executor, owner.run_id).await;
    match &wall {
        Ok(wall) if wall.has_secrets() => {
            for value in outputs.values_mut() {
                if let Some(masked) = wall.mask_spellings(value) {
                    *value = masked;
                }
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(run = owner.run_id, "the run's outbound wall: {e:#}");
            for value in outputs.values_mut() {
                *value = WITHHELD_NO_WALL.into();
            }
        }
    }
    if let Some(text) = reason.take() {
        reason = Some(match &wall {
            Ok(wall) => wall.redact(&text).into_string(),
            Err(_) => WITHHELD_NO_WALL.into(),
        });
    }
    let report = Report {
        outcome,
        exit_code: completion.exit_code,
        reason,
        outputs,
    };
    // The next attempt is claimed in the completion's transaction, unless the engine is
    // shutting down (then it claims nothing, below) or proposals are still to be recorded
    // after it: a claim made there must reach the runner, so nothing that may fail comes
    // between (with proposals, the claim comes after their record, as a claim of its own).
    let next_labels =
        (completion.claim_next && !state.shutdown.is_cancelled() && judged.is_empty())
            .then(|| runner.label_sets.clone());
    let done = state
        .executor
        .complete_holding(
            attempt_id,
            owner.run_id,
            Some(runner.id),
            &report,
            RunnerSaid {
                usage: completion.usage,
                model: completion.model,
                started_ms_ago: completion.started_ms_ago,
                claims_next: completion.claim_next,
                next_labels,
            },
        )
        .await?;
    let (completed, queued) = (done.completed, done.queued);
    // Recorded by the report that completed the attempt (a repeated one records nothing).
    if completed {
        judged.record(&state.executor, attempt_id).await?;
    }
    // Counted once, by the report that completed the attempt.
    if completed && network_refused > 0 {
        crate::metrics::record(crate::metrics::Event::NetworkRefused(network_refused));
    }
    // A repeated report (its first answer was lost) claims nothing: the first may have.
    let next = if completed && completion.claim_next {
        claim_now(&state, &runner, done.next).await
    } else {
        Ok(None)
    };
    // The other runners hear of what this runner did not take (everything, if the claim
    // failed or took another run's step): a step the completion queued is never left
    // unannounced.
    let taken = usize::from(matches!(&next, Ok(Some(a)) if a.run_id == owner.run_id));
    state.executor.events().queued(queued.saturating_sub(taken));
    let next = next?;
    Ok(Json(wire::CompleteResponse { next }))
}

/// One claim for `runner` without waiting, as a poll's first look makes it: the runner's
/// next attempt handed over with its completion. `made`: the first look's claim when the
/// completion already made it ([`Completed::next`](crate::executor::Completed::next)).
async fn claim_now(
    state: &InternalState,
    runner: &AuthedRunner,
    mut made: NextClaim,
) -> ApiResult<Option<Assignment>> {
    let store = state.executor.store();
    // The runner is still `busy` from the attempt it just completed (`claims_next`): the
    // first look keeps it so, or turns it idle when there is nothing to take. An attempt
    // that fails at once (a missing secret) is ended by the engine, which turns the runner
    // idle: the looks after it (a few) mark it busy again, as a poll's claim does.
    for look in 0..4 {
        // A claim the completion made is handed over whatever comes: it is the runner's.
        let made_now = std::mem::take(&mut made);
        if made_now == NextClaim::NotAsked && state.shutdown.is_cancelled() {
            if look == 0 {
                store.runner_idle(runner.id, now_ms()).await?;
            }
            return Ok(None);
        }
        let claimed = match made_now {
            NextClaim::Claimed(claimed) => Some(claimed),
            NextClaim::NothingToTake => None,
            NextClaim::NotAsked if look == 0 => {
                store
                    .claim_next(runner.id, &runner.label_sets, now_ms())
                    .await?
            }
            NextClaim::NotAsked => {
                // A polling runner's claim, but handed in this answer to a runner that
                // just spoke: acknowledged here, as a busy runner's claim is as it is made.
                let claimed = store.claim(runner.id, &runner.label_sets, now_ms()).await?;
                if let Some(claimed) = &claimed {
                    store
                        .acknowledge_claim(claimed.attempt_id, runner.id, now_ms())
                        .await?;
                }
                claimed
            }
        };
        let Some(claimed) = claimed else {
            return Ok(None);
        };
        remember_owner(state, runner, &claimed);
        if let Some(assignment) = assignment(state, runner, claimed).await? {
            return Ok(Some(assignment));
        }
    }
    Ok(None)
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

fn remember_owner(state: &InternalState, runner: &AuthedRunner, claimed: &Claimed) {
    let mut owners = lock(&state.auth.owners);
    if owners.len() >= CACHE_LIMIT {
        owners.clear();
    }
    owners.insert(
        claimed.attempt_id,
        AttemptOwner {
            runner_id: runner.id,
            step_run_id: claimed.step_run_id,
            number: claimed.number,
            run_id: claimed.run_id,
        },
    );
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
    let cached = lock(&state.auth.owners).get(&attempt_id).copied();
    let owner = match cached {
        Some(owner) => owner,
        None => {
            let owner = state
                .executor
                .store()
                .attempt_owner(attempt_id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no attempt {attempt_id}")))?;
            let mut owners = lock(&state.auth.owners);
            if owners.len() >= CACHE_LIMIT {
                owners.clear();
            }
            owners.insert(attempt_id, owner);
            owner
        }
    };
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
    runner_scope::check_announced(labels).map_err(|e| ApiError::bad_request(e.to_string()))
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
/// [`runner_scope::MAX_ANNOUNCED`] in all, as registration checks).
pub fn label_subsets(labels: &BTreeMap<String, String>) -> Vec<String> {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let n = pairs.len().min(runner_scope::MAX_ANNOUNCED);
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
        let canonical = crate::store::canonical_labels(step.iter());
        assert!(sets.contains(&canonical));
    }
}
