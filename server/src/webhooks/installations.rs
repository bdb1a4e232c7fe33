//! The GitHub App's own deliveries to `POST /webhooks/github`: `installation` and
//! `installation_repositories`. They name no repository of their own, so they are checked
//! with the App's webhook secret (`--github-app-webhook-secret-file`), judged
//! ([`super::installation_owners`]), then recorded with the judgement
//! (`github_installations`, `github_installation_repos`) and shown by `GET
//! /api/installations`. Also the gate every other delivery through the App passes
//! ([`admit`]), and the judging again of every recorded installation at an engine's start
//! ([`judge_recorded_installations`]).
//!
//! Invariants:
//! - Nothing is read as an event before the App's secret verified the exact bytes; an
//!   engine that is no App (no secret) answers 401 like a wrong signature.
//! - Recording is idempotent (an installation is written whole, a repository listed once),
//!   so a redelivery changes nothing and needs no de-duplication.
//! - Installations are the operator's to accept: one on an account `--installation-owner`
//!   does not name is recorded as refused, with why, registers nothing, and every delivery
//!   that comes through it (it names the installation, or is signed with the App's secret
//!   for a repository of that account) is answered 403 with why before anything is
//!   recorded or run — a repository an admin registered included.
//! - A repository an accepted installation names is registered only when an admin started
//!   the engine with `--register-installed-repos`; never by default. Registered, it is a
//!   GitHub repository without a personal token (so served through the App), whose
//!   webhooks are checked with the App's secret, readable by nobody until an admin grants a
//!   role; the registration is in the audit trail (`repo.create`, actor
//!   `github-app:installation:ID`). It is bound to the repository id the event names
//!   (`forge_repo_id`): a delivery for the same name from another repository (the name
//!   taken over) is refused. A removed repository, a deleted or a refused installation
//!   unregisters nothing (its deliveries start nothing).

use std::sync::Arc;

use axum::Json;

use axum::http::StatusCode;
use plue_forge::auth::Token;
use plue_forge::payload::{self, ForgeEvent, InstallationEvent};
use plue_forge::{signature, Forge};
use plue_store::{Audit, InstallationFacts, NewRepo, Store};
use plue_types::status::InstallationState;

use super::installation_owners::{InstallationOwners, InstallationRefused};
use super::{DeliveryResult, WebhookState};
use crate::http_error::{ApiError, ApiResult};

/// The events handled here.
pub(super) fn is_installation_event(forge: Forge, event: &str) -> bool {
    forge == Forge::GitHub && matches!(event, "installation" | "installation_repositories")
}

/// What the engine knows of its GitHub App's webhooks.
#[derive(Clone)]
pub struct AppHooks {
    /// The App's webhook secret.
    pub secret: Token,
    /// The accounts whose installations are accepted (`--installation-owner`).
    pub owners: InstallationOwners,
    /// Register the repositories accepted installations name (`--register-installed-repos`).
    pub register: Option<Registering>,
}

/// How a repository an installation names is registered.
#[derive(Debug, Clone)]
pub struct Registering {
    /// The App's REST API (`--github-app-api-url`); `None`: api.github.com.
    pub api_url: Option<String>,
}

impl Registering {
    /// The clone URL of `name` on the App's GitHub: `https://github.com/NAME.git`, or a
    /// GitHub Enterprise Server's `https://HOST/NAME.git` for an API at `https://HOST/api/v3`.
    fn clone_url(&self, name: &str) -> String {
        let web = match self.api_url.as_deref().map(|u| u.trim_end_matches('/')) {
            None | Some("https://api.github.com") => "https://github.com",
            Some(api) => api.strip_suffix("/api/v3").unwrap_or(api),
        };
        format!("{web}/{name}.git")
    }
}

impl std::fmt::Debug for AppHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppHooks")
            .field("owners", &self.owners)
            .field("register", &self.register)
            .finish_non_exhaustive()
    }
}

/// Handles an `installation` or `installation_repositories` delivery.
pub(super) async fn receive(
    state: &WebhookState,
    headers: &axum::http::HeaderMap,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> ApiResult<Json<DeliveryResult>> {
    let signature_header = super::header(headers, signature::header_name(Forge::GitHub));
    let Some(app) = &state.app else {
        let verified = signature::verify(
            Forge::GitHub,
            signature_header,
            body,
            super::unknown_secret(),
        );
        return Err(ApiError::unauthorized(
            verified
                .err()
                .unwrap_or(signature::SignatureError::Mismatch)
                .to_string(),
        ));
    };
    signature::verify(Forge::GitHub, signature_header, body, app.secret.expose())
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let ForgeEvent::Installation(installed) = payload::parse(Forge::GitHub, event, body)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
    else {
        return Err(ApiError::bad_request(format!(
            "{event}: not an installation event"
        )));
    };
    let judged = app.owners.judge(&installed.installation.account);
    record(state, &installed, judged.as_ref().err()).await?;
    let (registered, refused) = match (judged, &app.register) {
        (Err(refused), _) => {
            tracing::warn!(installation = installed.installation.id,
                account = %installed.installation.account,
                "refused an installation of the GitHub App: {refused}");
            (Vec::new(), vec![refused.to_string()])
        }
        (Ok(()), Some(registering)) => (
            register(state, app, registering, &installed).await?,
            Vec::new(),
        ),
        (Ok(()), None) => (Vec::new(), Vec::new()),
    };
    Ok(Json(DeliveryResult {
        delivery: delivery.to_string(),
        event: event.to_string(),
        repository: String::new(),
        runs: Vec::new(),
        duplicate: false,
        refused,
        registered,
    }))
}

/// Refuses a delivery (not an installation event) for `repo_name` that comes through an
/// installation of the App the operator does not accept: one naming an installation
/// (`installation.id`), or signed with the App's secret (`shares_apps_secret`), is judged
/// by the recorded installation's account, else by the repository's owner (the account any
/// installation reaching it is on). A delivery checked with a repository's own secret and
/// naming no installation comes from a webhook an admin set up, and passes. An engine that
/// is no App judges nothing.
pub(super) async fn admit(
    state: &WebhookState,
    repo_name: &str,
    installation: Option<i64>,
    shares_apps_secret: bool,
) -> ApiResult<()> {
    let Some(app) = &state.app else {
        return Ok(());
    };
    if installation.is_none() && !shares_apps_secret {
        return Ok(());
    }
    let recorded = match installation {
        Some(id) => state.store.installation(id).await?,
        None => None,
    };
    let owner = repo_name.split('/').next().unwrap_or(repo_name);
    let account = recorded.as_ref().map_or(owner, |row| row.account.as_str());
    let Err(refused) = app.owners.judge(account) else {
        return Ok(());
    };
    let through = match (installation, &recorded) {
        (Some(id), Some(_)) => format!("installation {id} of the GitHub App"),
        (Some(id), None) => format!(
            "installation {id} of the GitHub App (never recorded here: judged by the \
             repository's owner)"
        ),
        (None, _) => "the GitHub App (signed with its webhook secret)".to_string(),
    };
    tracing::warn!(repository = %repo_name, ?installation,
        "refused a delivery through a refused installation: {refused}");
    Err(ApiError::Client(
        StatusCode::FORBIDDEN,
        format!(
            "this delivery for {repo_name} comes through {through}, which this engine \
             refused: {refused}; nothing was run"
        ),
    ))
}

/// Judges every recorded installation again by `owners` (the accounts accepted may have
/// changed since it was recorded), recording each judgement that changed.
pub async fn judge_recorded_installations(
    store: &Store,
    owners: &InstallationOwners,
) -> anyhow::Result<()> {
    for row in store.installations().await? {
        let refused = owners.judge(&row.account).err().map(|r| r.to_string());
        if store.judge_installation(row.id, refused.as_deref()).await? {
            tracing::info!(installation = row.id, account = %row.account,
                accepted = refused.is_none(), "judged a recorded installation of the GitHub App again");
        }
    }
    Ok(())
}

async fn record(
    state: &WebhookState,
    installed: &InstallationEvent,
    refused: Option<&InstallationRefused>,
) -> anyhow::Result<()> {
    let i = &installed.installation;
    let permissions = serde_json::to_string(&i.permissions)?;
    let events = serde_json::to_string(&i.events)?;
    let refused = refused.map(ToString::to_string);
    state
        .store
        .record_installation(&InstallationFacts {
            id: i.id,
            account: &i.account,
            account_type: &i.account_type,
            state: i.state,
            permissions: &permissions,
            events: &events,
            refused: refused.as_deref(),
        })
        .await?;
    if i.state != InstallationState::Deleted {
        state
            .store
            .installation_repos_changed(i.id, &installed.added, &installed.removed)
            .await?;
    }
    Ok(())
}

/// Registers the repositories `installed` (an accepted installation) adds that are not
/// registered yet; their names.
async fn register(
    state: &WebhookState,
    app: &AppHooks,
    registering: &Registering,
    installed: &InstallationEvent,
) -> ApiResult<Vec<String>> {
    if installed.installation.state != InstallationState::Active {
        return Ok(Vec::new());
    }
    let secret = state.vault.seal_or_keep(app.secret.expose())?;
    let actor = format!("github-app:installation:{}", installed.installation.id);
    let mut registered = Vec::new();
    for name in &installed.added {
        let clone_url = registering.clone_url(name);
        let created = state
            .store
            .create_repo(&NewRepo {
                name,
                clone_url: &clone_url,
                forge: Forge::GitHub.as_str(),
                webhook_secret_sealed: &secret,
                api_url: registering.api_url.as_deref(),
                api_token_sealed: None,
                default_branch: None,
                forge_repo_id: installed.added_ids.get(name).copied(),
            })
            .await?;
        let Some(created) = created else {
            // Already registered: left as the admin set it (its forge id too: an installation
            // on a repository that took the name must not bind the registered one to it).
            continue;
        };
        state
            .store
            .audit(&Audit {
                user_id: None,
                actor: &actor,
                action: "repo.create",
                repo_id: Some(created.id),
                run_id: None,
                detail: serde_json::json!({"name": created.name, "installation": installed.installation.id}),
            })
            .await?;
        if let Some(registry) = &state.registry {
            registry.forget_mirror(created.id).await?;
            let registry = Arc::clone(registry);
            let repo = created.clone();
            tokio::spawn(async move {
                if let Err(e) = registry.sync_schedules(&repo).await {
                    tracing::warn!(repository = %repo.name, "reading schedules: {e:#}");
                }
            });
        }
        tracing::info!(repository = %created.name, installation = installed.installation.id,
            "registered a repository the GitHub App was installed on");
        registered.push(created.name);
    }
    Ok(registered)
}

#[cfg(test)]
#[path = "installations_tests.rs"]
mod tests;
