//! `POST /webhooks/github` and `POST /webhooks/gitea`: authenticate a forge's delivery,
//! de-duplicate it, and hand the event to the registry.
//!
//! The order of checks, each with its answer: body over 5 MiB → 413; no event or delivery
//! header → 400; body not a JSON object naming `repository.full_name` → 400; signature
//! missing or wrong, or the repository not registered → 401 (checked in constant time over
//! the exact bytes received; an unknown repository is checked against a secret nobody
//! holds, so it answers exactly like a wrong signature); `repository.id` not the one the
//! repository is bound to (its name taken over by another repository) → 409, before
//! anything is recorded or run; the delivery comes through an installation of the GitHub
//! App the operator does not accept (`--installation-owner`) → 403 saying why, before
//! anything is recorded or run (`installations`); payload lacking what its event needs →
//! 400; delivery id seen before → 200 with the runs it started (on Gitea also a body seen
//! before: its replay comes with a new delivery id, `replay_key`); `ping` → 200; the
//! registry failing to fetch the commit → 422 (the delivery is forgotten, so a redelivery
//! tries again). Issue and comment
//! events go through the same checks and de-duplication; their answer also says, in
//! `refused`, why a matching workflow started nothing (its author may not summon it).
//!
//! A GitHub App's `installation` and `installation_repositories` deliveries name no
//! repository: they are checked with the App's webhook secret instead, and judged
//! (`installations`, `installation_owners`).
//!
//! Invariant: a sender without a repository's webhook secret learns nothing about which
//! repositories are registered: every answer it can get (400, 401, 413) is the same for a
//! registered and an unknown one.
//!
//! Invariant: nothing a request contains can make the handler panic or answer 5xx except
//! a failure reaching the repository or the database.

mod installation_owners;
mod installations;

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use crate::http_error::{ApiError, ApiResult};
pub use installation_owners::{InstallationOwners, InstallationRefused};
pub use installations::{judge_recorded_installations, AppHooks, Registering};
use plue_core::metrics;
use plue_core::registry::Registry;
use plue_forge::payload::{self, ForgeEvent};
use plue_forge::signature::SignatureError;
use plue_forge::{signature, Forge};
use plue_store::Store;
use plue_vault::Vault;

/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
const MAX_DELIVERY_ID_CHARS: usize = 200;

#[derive(Clone)]
pub struct WebhookState {
    pub store: Store,
    pub vault: Vault,
    pub registry: Option<Arc<Registry>>,
    /// The engine's GitHub App's webhooks, when it is one (`installations`).
    pub app: Option<AppHooks>,
}

/// The answer to an accepted delivery.
#[derive(Debug, Serialize)]
pub struct DeliveryResult {
    pub delivery: String,
    pub event: String,
    pub repository: String,
    /// Runs started by this delivery (or by its first copy, for a duplicate).
    pub runs: Vec<i64>,
    pub duplicate: bool,
    /// Why an issue or comment started nothing for a workflow (or at all): the author may
    /// not start it, a bot or Plue's own comment, ...; for an installation event, why the
    /// installation was refused. Absent when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Repositories an accepted installation's event registered
    /// (`--register-installed-repos`). Absent when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registered: Vec<String>,
}

pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhooks/github", post(github))
        .route("/webhooks/gitea", post(gitea))
        .with_state(state)
}

async fn github(
    State(state): State<WebhookState>,
    request: Request,
) -> ApiResult<Json<DeliveryResult>> {
    counted(Forge::GitHub, receive(&state, Forge::GitHub, request).await)
}

async fn gitea(
    State(state): State<WebhookState>,
    request: Request,
) -> ApiResult<Json<DeliveryResult>> {
    counted(Forge::Gitea, receive(&state, Forge::Gitea, request).await)
}

/// Records a delivery's result (`accepted`, `duplicate` for one already seen,
/// `unauthorized` for a bad signature, `failed` when its event could not be processed,
/// `rejected` for another 4xx, `error` for a 5xx) and hands the answer back unchanged.
fn counted(
    forge: Forge,
    answer: ApiResult<Json<DeliveryResult>>,
) -> ApiResult<Json<DeliveryResult>> {
    let result = match &answer {
        Ok(Json(delivery)) if delivery.duplicate => "duplicate",
        Ok(_) => "accepted",
        Err(ApiError::Client(status, _)) => match *status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_IMPLEMENTED => "failed",
            _ => "rejected",
        },
        Err(ApiError::Internal(_)) => "error",
    };
    metrics::record(metrics::Event::Webhook {
        forge: forge.as_str(),
        result,
    });
    answer
}

/// The headers a forge names its event and delivery with.
fn event_headers(forge: Forge) -> (&'static str, &'static str) {
    match forge {
        Forge::GitHub => ("x-github-event", "x-github-delivery"),
        Forge::Gitea => ("x-gitea-event", "x-gitea-delivery"),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

async fn receive(
    state: &WebhookState,
    forge: Forge,
    request: Request,
) -> ApiResult<Json<DeliveryResult>> {
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body).await?;
    let (event_header, delivery_header) = event_headers(forge);
    let event = header(&parts.headers, event_header)
        .ok_or_else(|| ApiError::bad_request(format!("missing header {event_header}")))?
        .to_string();
    let delivery = header(&parts.headers, delivery_header)
        .ok_or_else(|| ApiError::bad_request(format!("missing header {delivery_header}")))?
        .to_string();
    if delivery.chars().count() > MAX_DELIVERY_ID_CHARS || delivery.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid delivery id"));
    }
    if installations::is_installation_event(forge, &event) {
        return installations::receive(state, &parts.headers, &event, &delivery, &body).await;
    }
    let Named {
        full_name: repo_name,
        forge_repo_id,
        installation,
    } = repository_name(&body)?;
    let signature_header = header(&parts.headers, signature::header_name(forge));
    let Some(repo) = state.store.repo_by_name(&repo_name).await? else {
        // regression: an unknown repository answered 404 before the signature was looked
        // at, so anyone could list the registered ones. Now it is checked like a known one
        // against a secret nobody holds: the same 401 and message a wrong signature gets.
        let verified = signature::verify(forge, signature_header, &body, unknown_secret());
        return Err(ApiError::unauthorized(
            verified
                .err()
                .unwrap_or(SignatureError::Mismatch)
                .to_string(),
        ));
    };
    let secret = state
        .vault
        .open(&repo.webhook_secret)
        .map_err(|e| anyhow::anyhow!("webhook secret of {}: {e}", repo.name))?;
    signature::verify(forge, signature_header, &body, &secret)
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let shares_apps_secret = state
        .app
        .as_ref()
        .is_some_and(|app| app.secret.expose() == secret.as_str());
    same_repository(state, &repo, forge_repo_id, shares_apps_secret).await?;
    installations::admit(state, &repo.name, installation, shares_apps_secret).await?;

    let parsed =
        payload::parse(forge, &event, &body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut result = DeliveryResult {
        delivery: delivery.clone(),
        event: event.clone(),
        repository: repo.name.clone(),
        runs: Vec::new(),
        duplicate: false,
        refused: Vec::new(),
        registered: Vec::new(),
    };
    if !state
        .store
        .record_delivery(forge.as_str(), &delivery, repo.id, &event)
        .await?
    {
        result.duplicate = true;
        result.runs = state.store.delivery_runs(forge.as_str(), &delivery).await?;
        return Ok(Json(result));
    }
    // Gitea's redelivery (its "Replay") sends the stored body again under a new delivery
    // id: the body, recorded beside the id, recognises it.
    let replay = replay_key(forge, &body);
    if let Some(key) = &replay {
        if !state
            .store
            .record_delivery(forge.as_str(), key, repo.id, &event)
            .await?
        {
            result.duplicate = true;
            result.runs = state.store.delivery_runs(forge.as_str(), key).await?;
            state
                .store
                .set_delivery_runs(forge.as_str(), &delivery, &result.runs)
                .await?;
            return Ok(Json(result));
        }
    }
    let recorded: Vec<&str> = std::iter::once(delivery.as_str())
        .chain(replay.as_deref())
        .collect();
    let started = match (&parsed, &state.registry) {
        (
            ForgeEvent::Push(_)
            | ForgeEvent::PullRequest(_)
            | ForgeEvent::Issue(_)
            | ForgeEvent::Comment(_),
            None,
        ) => {
            forget(state, forge, &recorded).await?;
            return Err(ApiError::Client(
                StatusCode::NOT_IMPLEMENTED,
                "this engine has no evaluator".into(),
            ));
        }
        (ForgeEvent::Push(push), Some(registry)) => registry.on_push(&repo, push).await,
        (ForgeEvent::PullRequest(pr), Some(registry)) => registry.on_pull_request(&repo, pr).await,
        (ForgeEvent::Issue(issue), Some(registry)) => {
            registry.on_issue(&repo, issue).await.map(|summoned| {
                result.refused = summoned.refused;
                summoned.runs
            })
        }
        (ForgeEvent::Comment(comment), Some(registry)) => {
            registry.on_comment(&repo, comment).await.map(|summoned| {
                result.refused = summoned.refused;
                summoned.runs
            })
        }
        (
            ForgeEvent::Ping { .. }
            | ForgeEvent::Delete { .. }
            | ForgeEvent::Ignored { .. }
            | ForgeEvent::Installation(_),
            _,
        ) => Ok(Vec::new()),
    };
    match started {
        Ok(runs) => {
            for id in &recorded {
                state
                    .store
                    .set_delivery_runs(forge.as_str(), id, &runs)
                    .await?;
            }
            result.runs = runs;
            Ok(Json(result))
        }
        Err(e) => {
            forget(state, forge, &recorded).await?;
            tracing::warn!(repository = %repo.name, %delivery, "delivery failed: {e:#}");
            Err(ApiError::Client(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot process the {event} event: {e:#}"),
            ))
        }
    }
}

/// The second name a delivery of `forge` is recorded under besides its id, for a forge
/// whose redelivery does not keep the id: Gitea's replay (the only redelivery it has, the
/// "Replay" button of a webhook's page) sends the body it stored byte for byte under a new
/// `X-Gitea-Delivery`, so the body's SHA-256 names the delivery too. Events do not share
/// bodies (each names its commits or comment, action, sender and times); a push repeated
/// exactly (the same branch moved from the same commit to the same one by the same pusher
/// again, after a force-push undid it) does, and starts nothing new either. GitHub's
/// redelivery keeps its `X-GitHub-Delivery`.
fn replay_key(forge: Forge, body: &[u8]) -> Option<String> {
    use sha2::Digest as _;
    (forge == Forge::Gitea)
        .then(|| format!("body-sha256:{}", hex::encode(sha2::Sha256::digest(body))))
}

/// Forgets the names a delivery was recorded under, so that the forge's redelivery is tried.
async fn forget(state: &WebhookState, forge: Forge, recorded: &[&str]) -> ApiResult<()> {
    for id in recorded {
        state.store.forget_delivery(forge.as_str(), id).await?;
    }
    Ok(())
}

/// Refuses a delivery for `repo`'s name from another forge repository than the one `repo`
/// is bound to (`forge_repo_id`): its name was taken over (an org renamed, a repository
/// deleted and re-created), and a repository checked with the GitHub App's one webhook
/// secret gets deliveries signed for every installation. An unbound repository checked
/// with the App's secret (`shares_apps_secret`) is bound to the delivery's id here (a
/// compare-and-set: the first verified delivery wins); one with its own secret, which only
/// its own webhook holds, stays unbound until an installation names it.
async fn same_repository(
    state: &WebhookState,
    repo: &plue_store::RepoRow,
    forge_repo_id: Option<i64>,
    shares_apps_secret: bool,
) -> ApiResult<()> {
    let bound = match (repo.forge_repo_id, forge_repo_id) {
        (Some(bound), _) => Some(bound),
        (None, Some(id)) if shares_apps_secret => {
            state.store.bind_forge_repo_id(repo.id, id).await?
        }
        (None, _) => None,
    };
    match (bound, forge_repo_id) {
        (Some(bound), Some(id)) if bound == id => Ok(()),
        (None, _) => Ok(()),
        (Some(bound), named) => {
            tracing::warn!(repository = %repo.name, bound, named = ?named,
                "refused a delivery from another repository of the same name");
            Err(ApiError::Client(
                StatusCode::CONFLICT,
                format!(
                    "this delivery is for repository id {} on the forge, but {} is registered \
                     for repository id {bound}: the name now belongs to another repository \
                     (renamed, or deleted and re-created); nothing was run. If the move is \
                     yours, delete and re-register the repository",
                    named.map_or_else(|| "(none)".to_string(), |id| id.to_string()),
                    repo.name
                ),
            ))
        }
    }
}

/// The key an unknown repository's deliveries are checked against: random per process,
/// never stored or shown, so no delivery verifies under it.
fn unknown_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        plue_vault::tokens::new_token()
            .unwrap_or_else(|_| format!("{:?}", std::time::Instant::now()))
    })
}

async fn read_body(headers: &HeaderMap, body: Body) -> ApiResult<Vec<u8>> {
    let too_large = || {
        ApiError::Client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => {
            let limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if limit {
                Err(too_large())
            } else {
                Err(ApiError::bad_request(format!("cannot read the body: {e}")))
            }
        }
    }
}

/// What a delivery's body names of where it comes from.
struct Named {
    /// `repository.full_name`, which picks the secret to check it with.
    full_name: String,
    /// `repository.id`, the forge's id of the repository (both forges send it).
    forge_repo_id: Option<i64>,
    /// `installation.id`: the GitHub App installation it comes through, if any.
    installation: Option<i64>,
}

/// What a JSON body names ([`Named`]); 400 when it names no repository.
fn repository_name(body: &[u8]) -> ApiResult<Named> {
    #[derive(serde::Deserialize)]
    struct Repository {
        full_name: String,
        #[serde(default)]
        id: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Installation {
        #[serde(default)]
        id: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        repository: Option<Repository>,
        #[serde(default)]
        installation: Option<Installation>,
    }
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not a JSON object: {e}")))?;
    let installation = envelope
        .installation
        .and_then(|i| i.id)
        .as_ref()
        .and_then(serde_json::Value::as_i64);
    envelope
        .repository
        .filter(|r| !r.full_name.is_empty())
        .map(|r| Named {
            forge_repo_id: r.id.as_ref().and_then(serde_json::Value::as_i64),
            full_name: r.full_name,
            installation,
        })
        .ok_or_else(|| ApiError::bad_request("body has no repository.full_name"))
}

#[cfg(test)]
mod tests {
    use axum::http::Request as HttpRequest;
    use plue_store::NewRepo;
    use tower::ServiceExt;

    use super::*;

    pub(super) const SECRET: &str = "the-webhook-secret";

    /// A router over a store holding `acme/known` (webhook secret [`SECRET`]), no registry.
    pub(super) async fn app() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let vault = Vault::unkeyed();
        store
            .create_repo(&NewRepo {
                name: "acme/known",
                clone_url: "/nowhere",
                forge: "github",
                webhook_secret_sealed: &vault.seal_or_keep(SECRET).unwrap(),
                api_url: None,
                api_token_sealed: None,
                default_branch: None,
                forge_repo_id: None,
            })
            .await
            .unwrap();
        let state = WebhookState {
            store,
            vault,
            registry: None,
            app: None,
        };
        (router(state), dir)
    }

    /// The body of a push to `main` of `repo`.
    pub(super) fn push_body(repo: &str) -> String {
        serde_json::json!({
            "ref": "refs/heads/main",
            "before": "0".repeat(40),
            "after": "1".repeat(40),
            "repository": {"full_name": repo},
        })
        .to_string()
    }

    /// A push for `repo` signed with `signature` (`None`: no signature header).
    async fn deliver(app: &Router, repo: &str, signature: Option<String>) -> (u16, String) {
        let body = push_body(repo);
        let mut request = HttpRequest::post("/webhooks/github")
            .header("x-github-event", "push")
            .header("x-github-delivery", "d-1");
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn signed(repo: &str, secret: &str) -> Option<String> {
        // The signature covers the exact body `deliver` sends.
        let body = push_body(repo);
        Some(format!(
            "sha256={}",
            signature::sign(body.as_bytes(), secret)
        ))
    }

    // The attacker holds no webhook secret and wants to learn which repositories this
    // engine knows: every answer must be the same for a registered and an unknown one.
    #[tokio::test]
    async fn a_sender_without_the_secret_cannot_tell_registered_repositories() {
        let (app, _dir) = app().await;
        let attempts = [
            None,
            Some("sha256=".to_owned() + &"ab".repeat(32)),
            Some("garbage".to_owned()),
            signed("acme/known", "a guess"),
        ];
        for signature in attempts {
            let known = deliver(&app, "acme/known", signature.clone()).await;
            let unknown = deliver(&app, "acme/unknown", signature.clone()).await;
            assert_eq!(known.0, 401, "{signature:?}: {known:?}");
            assert_eq!(known, unknown, "{signature:?}");
        }
        // Signed with the secret the attacker would need for an unknown repository: none
        // exists, so still 401, never a 404.
        let (status, body) = deliver(&app, "acme/unknown", signed("acme/unknown", "")).await;
        assert_eq!(status, 401, "{body}");
        assert!(!body.contains("registered"), "{body}");
    }

    #[tokio::test]
    async fn the_right_secret_gets_past_the_signature() {
        let (app, _dir) = app().await;
        let (status, body) = deliver(&app, "acme/known", signed("acme/known", SECRET)).await;
        // Past the signature, this engine has no evaluator for a push.
        assert_eq!(status, 501, "{body}");
    }
}

#[cfg(test)]
mod replay_tests;
