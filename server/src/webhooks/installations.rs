//! The GitHub App's own deliveries to `POST /webhooks/github`: `installation` and
//! `installation_repositories`. They name no repository of their own, so they are checked
//! with the App's webhook secret (`--github-app-webhook-secret-file`), then recorded
//! (`github_installations`, `github_installation_repos`) and shown by `GET
//! /api/installations`.
//!
//! Invariants:
//! - Nothing is read as an event before the App's secret verified the exact bytes; an
//!   engine that is no App (no secret) answers 401 like a wrong signature.
//! - Recording is idempotent (an installation is written whole, a repository listed once),
//!   so a redelivery changes nothing and needs no de-duplication.
//! - A repository an installation names is registered only when an admin started the
//!   engine with `--register-installed-repos`; never by default. Registered, it is a GitHub
//!   repository without a personal token (so served through the App), whose webhooks are
//!   checked with the App's secret, readable by nobody until an admin grants a role; the
//!   registration is in the audit trail (`repo.create`, actor `github-app:installation:ID`).
//!   It is bound to the repository id the event names (`forge_repo_id`): a delivery for
//!   the same name from another repository (the name taken over) is refused.
//!   A removed repository or a deleted installation unregisters nothing.

use std::sync::Arc;

use axum::Json;

use super::{DeliveryResult, WebhookState};
use crate::forge::auth::Token;
use crate::forge::payload::{self, ForgeEvent, InstallationEvent};
use crate::forge::{signature, Forge};
use crate::http_error::{ApiError, ApiResult};
use crate::store::{Audit, InstallationFacts, NewRepo};

/// The events handled here.
pub(super) fn is_installation_event(forge: Forge, event: &str) -> bool {
    forge == Forge::GitHub && matches!(event, "installation" | "installation_repositories")
}

/// What the engine knows of its GitHub App's webhooks.
#[derive(Clone)]
pub struct AppHooks {
    /// The App's webhook secret.
    pub secret: Token,
    /// Register the repositories installations name (`--register-installed-repos`).
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
    record(state, &installed).await?;
    let registered = match &app.register {
        Some(registering) => register(state, app, registering, &installed).await?,
        None => Vec::new(),
    };
    Ok(Json(DeliveryResult {
        delivery: delivery.to_string(),
        event: event.to_string(),
        repository: String::new(),
        runs: Vec::new(),
        duplicate: false,
        refused: Vec::new(),
        registered,
    }))
}

async fn record(state: &WebhookState, installed: &InstallationEvent) -> anyhow::Result<()> {
    let i = &installed.installation;
    let permissions = serde_json::to_string(&i.permissions)?;
    let events = serde_json::to_string(&i.events)?;
    state
        .store
        .record_installation(&InstallationFacts {
            id: i.id,
            account: &i.account,
            account_type: &i.account_type,
            state: i.state,
            permissions: &permissions,
            events: &events,
        })
        .await?;
    if i.state != "deleted" {
        state
            .store
            .installation_repos_changed(i.id, &installed.added, &installed.removed)
            .await?;
    }
    Ok(())
}

/// Registers the repositories `installed` adds that are not registered yet; their names.
async fn register(
    state: &WebhookState,
    app: &AppHooks,
    registering: &Registering,
    installed: &InstallationEvent,
) -> ApiResult<Vec<String>> {
    if installed.installation.state != "active" {
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
