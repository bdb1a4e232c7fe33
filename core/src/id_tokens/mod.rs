//! OpenID Connect tokens for steps: a step that declares `id_tokens={"VAR": "audience"}`
//! gets, when it is claimed, one short-lived JWT per entry in `VAR`, signed by the engine,
//! which a cloud or Vault trades for credentials under a trust policy on its claims
//! ([`Claims`], modelled on GitHub Actions'), so no long-lived cloud secret need exist.
//! The engine publishes its discovery document and keys ([`discovery`], [`IdTokens::jwks`]) for
//! relying parties to verify them.
//!
//! Invariants:
//! - A token is signed for a trusted run (not a pull request from a fork, not an event the
//!   engine itself caused: `runs.secrets_allowed`), and for an untrusted run's step only in
//!   an environment that allows it (`untrusted_id_tokens`), after the environment's review
//!   ([`Executor::untrusted_tokens_allowed`]), its `trusted` claim false; any other
//!   untrusted step runs without its tokens, their names in `withheld`.
//! - A token is a secret of its run from the moment it is made: it is held for the run's
//!   outbound wall and log masking before it leaves ([`IdTokens::for_step`]), and its issue is
//!   audited (`id_token.issue`: step, attempt, audience, subject, token id, expiry — never
//!   the token).
//! - It lives [`ttl_secs`] of the step's timeout, between [`MIN_TTL_SECS`] and
//!   [`MAX_TTL_SECS`].
//! - Keys: with a keyed vault, RSA keys stored sealed (`oidc_keys`), shared by every
//!   replica; the oldest key not yet retired signs (a rotation's new key is published
//!   [`PUBLISHED_AHEAD_MS`] before it signs), and a retired one stays published for
//!   [`RETIRED_PUBLISHED_MS`], longer than any token it signed lives. Without a vault key a
//!   key is made per process and never stored (a local engine's tokens verify while it
//!   runs).

mod claims;
mod keys;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde_json::{json, Value};

pub use claims::{subject, Claims, StepFacts};

use keys::SigningKey;
use plue_store::{now_ms, Audit, OidcKeyRow, RunRow, Store, ID_TOKEN_ISSUED};
use plue_vault::Vault;

use crate::executor::Executor;

/// The shortest life of a token, whatever the step's timeout.
pub const MIN_TTL_SECS: i64 = 5 * 60;
/// The longest life of a token.
pub const MAX_TTL_SECS: i64 = 60 * 60;
/// How long a retired key stays published: twice the longest life of a token.
pub const RETIRED_PUBLISHED_MS: i64 = 2 * MAX_TTL_SECS * 1000;
/// How long a rotation's new key is published before it signs: twice the time relying
/// parties may cache the key set (`Cache-Control: max-age=300` on `/.well-known/jwks`).
pub const PUBLISHED_AHEAD_MS: i64 = 10 * 60 * 1000;

/// `rows` with the signer first: the oldest key not yet retired at `now` (a rotation's
/// new key waits [`PUBLISHED_AHEAD_MS`] behind the one it replaces), then the others,
/// newest first.
fn signer_first(mut rows: Vec<OidcKeyRow>, now: i64) -> Vec<OidcKeyRow> {
    let signs = |row: &OidcKeyRow| row.retired_at.is_none_or(|at| at > now);
    let signer = rows
        .iter()
        .enumerate()
        .filter(|(_, row)| signs(row))
        .min_by_key(|(_, row)| (row.created_at, row.kid.clone()))
        .map(|(i, _)| i);
    if let Some(i) = signer {
        let row = rows.remove(i);
        rows.insert(0, row);
    }
    rows
}

/// The life of a token of a step whose timeout is `timeout_secs`.
pub fn ttl_secs(timeout_secs: u64) -> i64 {
    i64::try_from(timeout_secs)
        .unwrap_or(i64::MAX)
        .clamp(MIN_TTL_SECS, MAX_TTL_SECS)
}

/// The engine's signing keys as this process knows them: one per engine, shared by the
/// routes that publish them and the claims that sign with them.
#[derive(Default)]
pub struct IdTokens {
    /// Stored keys already parsed, by key id (a stored key never changes).
    parsed: Mutex<HashMap<String, Arc<SigningKey>>>,
    /// The key of an engine without a vault key: made once, never stored.
    ephemeral: tokio::sync::OnceCell<Arc<SigningKey>>,
    /// Held while this process makes the first stored key.
    making: tokio::sync::Mutex<()>,
}

impl IdTokens {
    /// The keys to publish, the signer first.
    async fn published(
        &self,
        store: &Store,
        vault: &Vault,
    ) -> anyhow::Result<Vec<Arc<SigningKey>>> {
        if !vault.is_keyed() {
            return Ok(vec![self.ephemeral().await?]);
        }
        let mut rows = store.oidc_keys(now_ms() - RETIRED_PUBLISHED_MS).await?;
        if !rows.iter().any(|row| row.retired_at.is_none()) {
            let _making = self.making.lock().await;
            rows = store.oidc_keys(now_ms() - RETIRED_PUBLISHED_MS).await?;
            if !rows.iter().any(|row| row.retired_at.is_none()) {
                let (key, pem) = generate().await?;
                let sealed = vault.seal(&pem)?;
                store
                    .add_first_oidc_key(key.kid(), &sealed, now_ms())
                    .await?;
                rows = store.oidc_keys(now_ms() - RETIRED_PUBLISHED_MS).await?;
            }
        }
        signer_first(rows, now_ms())
            .iter()
            .map(|row| self.parse(row, vault))
            .collect()
    }

    async fn ephemeral(&self) -> anyhow::Result<Arc<SigningKey>> {
        self.ephemeral
            .get_or_try_init(|| async { generate().await.map(|(key, _)| Arc::new(key)) })
            .await
            .cloned()
    }

    fn parse(&self, row: &OidcKeyRow, vault: &Vault) -> anyhow::Result<Arc<SigningKey>> {
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = parsed.get(&row.kid) {
            return Ok(key.clone());
        }
        let pem = vault
            .open(&row.sealed_key)
            .with_context(|| format!("opening token key {}", row.kid))?;
        let key = Arc::new(SigningKey::from_pem(&pem)?);
        parsed.insert(row.kid.clone(), key.clone());
        Ok(key)
    }
}

/// A new key, made off the async threads (an RSA key takes a moment).
async fn generate() -> anyhow::Result<(SigningKey, String)> {
    tokio::task::spawn_blocking(SigningKey::generate)
        .await
        .context("making a token key")?
}

impl IdTokens {
    /// The engine's published keys, as a JSON Web Key Set.
    pub async fn jwks(&self, executor: &Executor) -> anyhow::Result<Value> {
        let keys = self.published(executor.store(), executor.vault()).await?;
        let keys: Vec<&Value> = keys.iter().map(|key| key.jwk()).collect();
        Ok(json!({ "keys": keys }))
    }

    /// The tokens of `request`: signed, held for the run's wall and audited when the run
    /// is entitled to them ([`entitled`]), else withheld.
    pub async fn for_step(
        &self,
        executor: &Executor,
        request: Request<'_>,
    ) -> anyhow::Result<Issued> {
        for_step(self, executor, request).await
    }
}

/// The OpenID Connect discovery document of the engine at `issuer`.
pub fn discovery(issuer: &str) -> Value {
    let issuer = issuer.trim_end_matches('/');
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks"),
        "subject_types_supported": ["public"],
        "response_types_supported": ["id_token"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid"],
        "claims_supported": [
            "iss", "aud", "sub", "iat", "nbf", "exp", "jti", "repository",
            "repository_owner", "repository_id", "ref", "ref_type", "sha", "event_name",
            "workflow", "run_id", "run_attempt", "step", "environment", "actor", "trusted",
            "runner_environment",
        ],
    })
}

/// Adds a new signing key, published at once and signing [`PUBLISHED_AHEAD_MS`] later,
/// when the keys it replaces retire (then still published for [`RETIRED_PUBLISHED_MS`]);
/// its key id. Refused without a vault key: such an engine's key lives in its memory only
/// and is new at every start.
pub async fn rotate(executor: &Executor) -> anyhow::Result<String> {
    let vault = executor.vault();
    if !vault.is_keyed() {
        anyhow::bail!(
            "this engine has no PLUE_SECRET_KEY: its token key is never stored, and a new one \
             is made at every start"
        );
    }
    let (key, pem) = generate().await?;
    let sealed = vault.seal(&pem)?;
    executor
        .store()
        .rotate_oidc_key(key.kid(), &sealed, now_ms(), now_ms() + PUBLISHED_AHEAD_MS)
        .await?;
    Ok(key.kid().to_owned())
}

/// A claimed attempt that asks for tokens.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The engine's URL as relying parties reach it.
    pub issuer: &'a str,
    pub run_id: i64,
    pub step_id: &'a str,
    /// The attempt's number.
    pub attempt: i64,
    /// Variable → audience, as the step declares them.
    pub tokens: &'a BTreeMap<String, String>,
    pub timeout_secs: u64,
    /// Whether the step runs the author's processes (`bash`, `python`): only those may
    /// hold a token (validation refuses it elsewhere; a stored plan is not trusted to be
    /// validated).
    pub runs_processes: bool,
}

/// Whether `request`'s step would get its tokens now (see the module docs): a trusted
/// run's process step, or an untrusted run's in an environment that allows it and
/// reviewed it. Reads only; signs nothing.
pub async fn entitled(executor: &Executor, request: Request<'_>) -> anyhow::Result<bool> {
    let run = run_of(executor, request.run_id).await?;
    entitled_in(executor, &run, request).await
}

/// Run `run_id`'s row.
async fn run_of(executor: &Executor, run_id: i64) -> anyhow::Result<RunRow> {
    executor
        .store()
        .run(run_id)
        .await?
        .with_context(|| format!("no run {run_id}"))
}

/// [`entitled`], of `run` (the request's run, read already).
async fn entitled_in(
    executor: &Executor,
    run: &RunRow,
    request: Request<'_>,
) -> anyhow::Result<bool> {
    if request.tokens.is_empty() || !request.runs_processes {
        return Ok(false);
    }
    let run_id = request.run_id;
    if run.secrets_allowed {
        return Ok(true);
    }
    match executor.step_environment(run_id, request.step_id).await? {
        Some(name) => {
            executor
                .untrusted_tokens_allowed(run_id, request.step_id, &name)
                .await
        }
        None => Ok(false),
    }
}

/// What a claimed step gets.
#[derive(Debug, Default)]
pub struct Issued {
    /// Variable → token.
    pub values: BTreeMap<String, String>,
    /// The variables left unset: the run is not trusted.
    pub withheld: Vec<String>,
}

/// [`IdTokens::for_step`], signing with `keys`.
async fn for_step(
    keys: &IdTokens,
    executor: &Executor,
    request: Request<'_>,
) -> anyhow::Result<Issued> {
    if request.tokens.is_empty() {
        return Ok(Issued::default());
    }
    let run = run_of(executor, request.run_id).await?;
    if !entitled_in(executor, &run, request).await? {
        return Ok(Issued {
            values: BTreeMap::new(),
            withheld: request.tokens.keys().cloned().collect(),
        });
    }
    let store = executor.store();
    let run_id = request.run_id;
    // The environment as its repository names it (names are case-insensitive); a local
    // run has no environments, so its tokens name none.
    let environment = match (
        executor.step_environment(run_id, request.step_id).await?,
        run.repo_id,
    ) {
        (Some(name), Some(repo_id)) => store.environment(repo_id, &name).await?.map(|e| e.name),
        _ => None,
    };
    let repository = match run.repo_id {
        Some(id) => {
            let repo = store
                .repo_by_id(id)
                .await?
                .with_context(|| format!("the repository of run {run_id} is gone"))?;
            Some((repo.name, id))
        }
        None => None,
    };
    let actor = store.triggerer_of(run_id).await?;
    let facts = StepFacts {
        issuer: request.issuer.trim_end_matches('/'),
        repository: repository.as_ref().map(|(name, id)| (name.as_str(), *id)),
        git_ref: &run.git_ref,
        sha: &run.sha,
        event: &run.event,
        workflow: &run.workflow_name,
        run_id,
        attempt: request.attempt,
        step: request.step_id,
        environment: environment.as_deref(),
        actor: actor.as_deref(),
        trusted: run.secrets_allowed,
    };
    let signer = keys
        .published(store, executor.vault())
        .await?
        .into_iter()
        .next()
        .context("no token key")?;
    let now = now_ms();
    let ttl = ttl_secs(request.timeout_secs);
    let mut issued = Issued::default();
    for (variable, audience) in request.tokens {
        let claims = Claims::new(&facts, audience, now / 1000, ttl, token_id()?);
        let token = signer.sign(&claims)?;
        // Held before it leaves: the run's wall and masking know it from now on.
        let sealed = executor.vault().seal_or_keep(&token)?;
        store
            .hold_secrets(run_id, &[(variable.clone(), sealed)], now)
            .await?;
        store
            .audit(&Audit {
                user_id: None,
                actor: "engine",
                action: ID_TOKEN_ISSUED,
                repo_id: run.repo_id,
                run_id: Some(run_id),
                detail: json!({
                    "step": request.step_id,
                    "attempt": request.attempt,
                    "variable": variable,
                    "aud": claims.aud,
                    "sub": claims.sub,
                    "jti": claims.jti,
                    "exp": claims.exp,
                    "kid": signer.kid(),
                    "trusted": claims.trusted,
                }),
            })
            .await?;
        issued.values.insert(variable.clone(), token);
    }
    Ok(issued)
}

/// A random token id.
fn token_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(hex::encode(bytes))
}
