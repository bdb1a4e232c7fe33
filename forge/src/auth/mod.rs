//! Which credential the engine uses on a repository's forge, and for what: [`ForgeAuth`]
//! is the one entry point every forge write, lookup, mirror fetch and checkout asks.
//!
//! - A repository's personal token (its sealed `api_token`, opened with the vault) is used
//!   whenever it has one — on Gitea always, and on GitHub it takes precedence over the App.
//! - A GitHub repository without one, when the engine is configured as a GitHub App
//!   ([`GitHubApp`]: `plue serve --github-app-id/--github-app-key-file`) and the
//!   repository's API (its `api_url`, else api.github.com) is the App's API
//!   (`--github-app-api-url`, default `https://api.github.com`), gets an installation
//!   access token: the App's JWT finds the repository's installation, then
//!   asks a token for that one repository with the [`Use`]'s permissions only. Tokens are
//!   cached per (API, repository, use) and fetched anew before they expire ([`refresh_in`])
//!   or after the forge refused one: every exchange with the forge runs through
//!   [`ForgeAuth::renewing`] (module `refusal`), which forgets exactly the token refused
//!   and mints one new one.
//! - [`ForgeAuth::is_app`] says which of the two a repository uses (check runs need the
//!   App); [`ForgeAuth::app_login`] is the App's bot login (`<slug>[bot]`, from `GET /app`).
//!
//! Invariants: the App's JWT goes to the App's API only, never to a repository's: a GitHub
//! repository on another API (a GitHub Enterprise Server the App does not live on) is not
//! served through the App and, without a personal token, has no credential. A [`Token`] never prints (nor does anything holding one) and is zeroized
//! when dropped; tokens go into `Authorization` headers or git's `http.extraHeader` only,
//! never a URL, a log line or an error. Every installation token handed out for a
//! repository, and the App's key, stay known ([`ForgeAuth::secrets_of`]) so the outbound
//! wall redacts them from whatever a run of that repository says.

mod app;
mod installation;
mod refusal;
mod uses;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::post_error::{git_refused, http_refused, Refusable, Refused};
pub use crate::token::Token;
pub use app::{Claims, GitHubApp, DEFAULT_APP_API, JWT_BACKDATE, JWT_LIFETIME};
pub use refusal::{renewal_counts, Renewal};
pub use uses::Use;

use super::status::PostError;
use super::Forge;
use plue_store::RepoRow;
use plue_vault::Vault;

/// How early before its expiry an installation token is replaced, at most.
pub const REFRESH_EARLY: Duration = Duration::from_secs(5 * 60);
/// The most installation tokens remembered per repository for the outbound wall.
const MAX_HANDED_OUT: usize = 64;
/// The most entries of each cache; past it the cache starts again empty.
const MAX_CACHED: usize = 10_000;

/// When a token valid for `valid_for` is replaced: [`REFRESH_EARLY`] before it expires,
/// or half-way through a lifetime shorter than twice that.
pub fn refresh_in(valid_for: Duration) -> Duration {
    valid_for - REFRESH_EARLY.min(valid_for / 2)
}

/// The engine's forge credentials; cheap to clone (shared caches).
#[derive(Clone)]
pub struct ForgeAuth {
    inner: Arc<Inner>,
}

/// (App API, repository, use).
type TokenKey = (String, String, Use);

/// A cached installation token: the forge ids of the repositories it was minted for, and
/// when to replace it.
struct Cached {
    token: Token,
    repository_ids: Vec<i64>,
    refresh_at: Instant,
}

struct Inner {
    vault: Vault,
    app: Option<GitHubApp>,
    /// Made on first use: building one reads the system's certificate store (≈ 3 ms of
    /// CPU), which an engine that never calls the App's API (`plue run`, personal tokens
    /// only) should not pay, nor each run's outbound wall that holds a `ForgeAuth`.
    client: std::sync::OnceLock<reqwest::Client>,
    /// (App API, repository, use) → a token, the repository ids it is for, when to
    /// replace it.
    tokens: Mutex<HashMap<TokenKey, Cached>>,
    /// (App API, repository) → its installation.
    installations: Mutex<HashMap<(String, String), u64>>,
    /// Repository → installation tokens handed out for it (newest last).
    handed_out: Mutex<HashMap<String, Vec<Token>>>,
    /// App API → the App's slug.
    slugs: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for ForgeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeAuth")
            .field("vault", &self.inner.vault)
            .field("app", &self.inner.app)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(reqwest::Client::new)
    }
}

impl ForgeAuth {
    /// Personal tokens only, opened with `vault`, and the App `app` when there is one.
    pub fn new(vault: Vault, app: Option<GitHubApp>) -> ForgeAuth {
        ForgeAuth {
            inner: Arc::new(Inner {
                vault,
                app,
                client: std::sync::OnceLock::new(),
                tokens: Mutex::default(),
                installations: Mutex::default(),
                handed_out: Mutex::default(),
                slugs: Mutex::default(),
            }),
        }
    }

    /// Personal tokens only.
    pub fn personal(vault: Vault) -> ForgeAuth {
        ForgeAuth::new(vault, None)
    }

    /// The vault the repositories' tokens are opened with.
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    pub fn app(&self) -> Option<&GitHubApp> {
        self.inner.app.as_ref()
    }

    /// Whether the engine acts on `repo` as the GitHub App (a GitHub repository without
    /// a personal token, whose API is the configured App's): check runs instead of commit
    /// statuses, the App's bot as the engine's login. A repository on another API never
    /// is: the App's JWT (which mints tokens for every installation) goes nowhere else.
    pub fn is_app(&self, repo: &RepoRow) -> bool {
        let Some(app) = self.inner.app.as_ref() else {
            return false;
        };
        Forge::parse(&repo.forge) == Some(Forge::GitHub)
            && repo.api_token.is_none()
            && ForgeAuth::api_url(repo).is_some_and(|api| app.serves_api(&api))
    }

    /// Whether the engine has any credential for `repo`'s forge.
    pub fn has_credential(&self, repo: &RepoRow) -> bool {
        repo.api_token.is_some() || self.is_app(repo)
    }

    /// `repo`'s REST API: its `api_url`, or its forge's default (`None` for a local clone
    /// URL of a Gitea repository).
    pub fn api_url(repo: &RepoRow) -> Option<String> {
        let forge = Forge::parse(&repo.forge)?;
        repo.api_url
            .clone()
            .or_else(|| forge.default_api_url(&repo.clone_url))
    }

    /// The App's API, for `repo` served through it ([`ForgeAuth::is_app`]): refused for any
    /// other, so nothing of the App is sent to a repository's own API.
    fn app_api(&self, repo: &RepoRow) -> Result<String, PostError> {
        match self.inner.app.as_ref() {
            Some(app) if self.is_app(repo) => Ok(app.api_url().to_string()),
            Some(app) => Err(PostError::Permanent(format!(
                "repository {} is not served through the GitHub App: its API is not the App's ({}); give it a personal api_token",
                repo.name,
                app.api_url()
            ))),
            None => Err(PostError::Permanent("no GitHub App is configured".into())),
        }
    }

    /// The credential to use on `repo`'s forge for `use_`: its personal token, an
    /// installation token of the App, or `None` (the engine has none there).
    pub async fn token(&self, repo: &RepoRow, use_: Use) -> Result<Option<Token>, PostError> {
        if let Some(sealed) = repo.api_token.as_deref() {
            let opened = self.inner.vault.open(sealed).map_err(|e| {
                PostError::Permanent(format!("the forge token of {}: {e}", repo.name))
            })?;
            return Ok(Some(Token::new(opened)));
        }
        if !self.is_app(repo) {
            return Ok(None);
        }
        self.installation_token(repo, use_).await.map(Some)
    }

    async fn installation_token(&self, repo: &RepoRow, use_: Use) -> Result<Token, PostError> {
        let app = self.inner.app.as_ref().expect("is_app checked the App");
        let api = self.app_api(repo)?;
        let key = (api.clone(), repo.name.clone(), use_);
        {
            let mut tokens = lock(&self.inner.tokens);
            if let Some(cached) = tokens.get(&key) {
                // A token is the repository id's it was minted for: when the name is bound
                // to another id now (re-registered, or bound after the mint), it is not used.
                if let Some(bound) = repo.forge_repo_id {
                    if cached.repository_ids != [bound] {
                        let moved = moved(&repo.name, bound, &cached.repository_ids);
                        tokens.remove(&key);
                        return Err(moved);
                    }
                }
                if Instant::now() < cached.refresh_at {
                    return Ok(cached.token.clone());
                }
            }
        }
        let place = (api.clone(), repo.name.clone());
        let known = lock(&self.inner.installations).get(&place).copied();
        let installation = match known {
            Some(id) => id,
            None => {
                let id = installation::installation_of(self.inner.client(), app, &api, &repo.name)
                    .await?;
                let mut installations = lock(&self.inner.installations);
                if installations.len() >= MAX_CACHED {
                    installations.clear();
                }
                installations.insert(place.clone(), id);
                id
            }
        };
        let minted = match installation::access_token(
            self.inner.client(),
            app,
            &api,
            installation,
            &repo.name,
            repo.forge_repo_id,
            use_,
        )
        .await
        {
            Ok(minted) => minted,
            Err(e) => {
                // The App may have been reinstalled (a new installation id): look again next time.
                lock(&self.inner.installations).remove(&place);
                return Err(e);
            }
        };
        self.remember(&repo.name, &minted.token);
        let refresh_at = Instant::now() + refresh_in(minted.valid_for);
        let mut tokens = lock(&self.inner.tokens);
        if tokens.len() >= MAX_CACHED {
            tokens.clear();
        }
        tokens.insert(
            key,
            Cached {
                token: minted.token.clone(),
                repository_ids: minted.repository_ids,
                refresh_at,
            },
        );
        Ok(minted.token)
    }

    fn remember(&self, repo: &str, token: &Token) {
        let mut handed_out = lock(&self.inner.handed_out);
        if handed_out.len() >= MAX_CACHED {
            handed_out.clear();
        }
        let tokens = handed_out.entry(repo.to_string()).or_default();
        tokens.push(token.clone());
        if tokens.len() > MAX_HANDED_OUT {
            tokens.remove(0);
        }
    }

    /// Forgets the installation token `token` cached for `repo`, whatever its use (the
    /// forge refused it): the next [`ForgeAuth::token`] of that use mints a new one. Its
    /// use; `None` when no cached token of `repo` is `token` (another exchange forgot it
    /// already, or it is no installation token).
    pub fn forget_token(&self, repo: &RepoRow, token: &Token) -> Option<Use> {
        let mut tokens = lock(&self.inner.tokens);
        let key = tokens
            .iter()
            .find(|((_, name, _), cached)| *name == repo.name && cached.token == *token)
            .map(|(key, _)| key.clone())?;
        tokens.remove(&key);
        Some(key.2)
    }

    /// Forgets every token cached for `repo`'s name, whatever its use: the forge showed
    /// that name to be another repository's now.
    pub fn forget_repository(&self, repo: &RepoRow) {
        lock(&self.inner.tokens).retain(|(_, name, _), _| name != &repo.name);
        if let Ok(api) = self.app_api(repo) {
            lock(&self.inner.installations).remove(&(api, repo.name.clone()));
        }
    }

    /// The credential git reads `repo`'s code with: for a repository served as the App, a
    /// read-only installation token ([`Use::ReadCode`]) for the engine's mirror fetches
    /// and a runner's checkout; `None` for the others, whose clone URL says all (as it
    /// always did).
    pub async fn git_credential(
        &self,
        repo: &RepoRow,
    ) -> Result<Option<plue_types::protocol::GitCredential>, PostError> {
        if !self.is_app(repo) {
            return Ok(None);
        }
        let token = self.installation_token(repo, Use::ReadCode).await?;
        Ok(Some(plue_types::protocol::GitCredential::new(
            token.expose().to_string(),
        )))
    }

    /// The App's bot login on `repo`'s forge (`<slug>[bot]`, the author of everything an
    /// installation token writes), from `GET /app`, asked once per API.
    pub async fn app_login(&self, repo: &RepoRow) -> Result<String, PostError> {
        let Some(app) = self.inner.app.as_ref() else {
            return Err(PostError::Permanent("no GitHub App is configured".into()));
        };
        let api = self.app_api(repo)?;
        if let Some(slug) = lock(&self.inner.slugs).get(&api) {
            return Ok(format!("{slug}[bot]"));
        }
        let slug = installation::app_slug(self.inner.client(), app, &api).await?;
        lock(&self.inner.slugs).insert(api, slug.clone());
        Ok(format!("{slug}[bot]"))
    }

    /// Every credential of `repo` that a run of it must never say: its personal token,
    /// every installation token handed out for it, and the App's private key.
    pub fn secrets_of(&self, repo: &RepoRow) -> anyhow::Result<Vec<Token>> {
        let mut secrets = Vec::new();
        if let Some(sealed) = repo.api_token.as_deref() {
            let opened = self
                .inner
                .vault
                .open(sealed)
                .map_err(|e| anyhow::anyhow!("the forge token of {}: {e}", repo.name))?;
            secrets.push(Token::new(opened));
        }
        if self.is_app(repo) {
            if let Some(tokens) = lock(&self.inner.handed_out).get(&repo.name) {
                secrets.extend(tokens.iter().cloned());
            }
            if let Some(app) = &self.inner.app {
                // The whole PEM, and each line of its body: a key said in pieces is still said.
                secrets.push(Token::new(app.key_pem().trim().to_string()));
                secrets.extend(
                    app.key_pem()
                        .lines()
                        .map(str::trim)
                        .filter(|line| line.len() >= 32 && !line.starts_with("-----"))
                        .map(|line| Token::new(line.to_string())),
                );
            }
        }
        Ok(secrets)
    }
}

/// The refusal of a token for `repo`, registered as forge id `bound`, that is for
/// `repository_ids` instead.
fn moved(repo: &str, bound: i64, repository_ids: &[i64]) -> PostError {
    PostError::Moved(format!(
        "the GitHub App's installation token for {repo} is for repository id(s) \
         {repository_ids:?}, not {bound}, the repository registered under that name: the name \
         now belongs to another repository (renamed, or deleted and re-created); the token is \
         not used. Re-register the repository if the move is yours"
    ))
}
