//! Who may summon: the permission on a repository of the forge login that caused an issue
//! or comment event, compared with a trigger's `authors=` ([`Authors`]).
//!
//! The permission is learnt from, in order, stopping as soon as it is enough:
//! 1. GitHub's `author_association` of that login in the payload: `OWNER` counts as write;
//!    `MEMBER` or `COLLABORATOR` count as write only for a repository whose forge cannot be
//!    asked (no API configured) — a member of the owning organisation may hold no more than
//!    the organisation's base permission, and a collaborator may have been invited to read
//!    or triage only, so where the forge can say, its answer (3.) decides. Never more than
//!    write: the association is not a permission, so `authors="maintain"`/`"admin"` always
//!    look further;
//! 2. the Plue user that login is linked to (`plue user link`), not disabled: an
//!    admin counts as admin, a repository `maintainer` as maintain, a `writer` as write;
//! 3. the forge's collaborator-permission API with the repository's `api_url` and lookup
//!    credential ([`ForgeAuth`]: its `api_token` or the GitHub App's installation token)
//!    (`GET /repos/{o}/{r}/collaborators/{login}/permission`; GitHub answers `permission`
//!    admin/write/read/none with `role_name` `maintain` for maintainers, Gitea answers
//!    `permission` owner/admin/write/read/none), each answer kept [`CACHE_FOR`].
//!
//! Who the engine itself is on a repository's forge is [`Permissions::engine_identity`]
//! ([`EngineIdentity`]): the login the repository's `api_token` writes as (`GET /user`,
//! kept [`CACHE_FOR`]), or for a repository the engine serves as a GitHub App, the App's
//! bot `<slug>[bot]` (`GET /app` with the App's JWT: certain, no `GET /user`) — an event that login caused is the engine's own writing (a label it
//! added for a proposal, the branch it pushed, ...), which summons nothing and gets no
//! secrets, on Gitea too, where no account is marked a bot; no token (the engine writes
//! nothing there); or unknown, when the forge cannot say (a GitHub App's token always gets
//! 403; any 4xx or 5xx, a network error, an unreadable answer, no API to ask), kept only
//! [`FAILURE_CACHE_FOR`] and logged at warn once per asking. Unknown trusts nothing: any
//! event might be the engine's own (the registry's `summon` module says what follows).
//!
//! Invariants: what the forge answers it does not know is no permission (a 404, a login
//! the payload did not give, a repository with no forge API to ask); a failure to learn —
//! the forge refused the lookup's token twice (a refused installation token is renewed once,
//! [`ForgeAuth::renewing`]), a network error, a 5xx, an unreadable answer, the store — is an
//! error, never "no permission": the delivery fails with the reason (and is answered again
//! when the forge redelivers it), so a writer is never refused for a fault of the engine's
//! or the forge's, and no trusted run starts either. An engine that cannot learn its own
//! login never takes an event for someone else's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use evaluator::plan::Authors;
use serde::Deserialize;

use super::auth::ForgeAuth;
use super::lookup::{ApiTarget, Found};
use super::Forge;
use plue_store::{RepoRow, Store};

/// How long a forge's answer about one login is believed.
pub const CACHE_FOR: Duration = Duration::from_secs(60);
/// How long a failure to learn the engine's own login stands before the forge is asked
/// again: shorter than [`CACHE_FOR`], so a passing fault costs seconds of untrusted events,
/// while a token that can never say (a GitHub App's) is asked, and logged, at most this
/// often per repository.
pub const FAILURE_CACHE_FOR: Duration = Duration::from_secs(10);
/// The most answers kept; past it the cache starts again empty.
const MAX_CACHED: usize = 10_000;

/// A permission on a repository, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    None,
    Read,
    Write,
    Maintain,
    Admin,
}

impl Permission {
    /// Whether this permission is at least what `authors` asks.
    pub fn meets(self, authors: Authors) -> bool {
        self >= match authors {
            Authors::Write => Permission::Write,
            Authors::Maintain => Permission::Maintain,
            Authors::Admin => Permission::Admin,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::None => "none",
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Maintain => "maintain",
            Permission::Admin => "admin",
        }
    }

    /// GitHub's `author_association`: write for the repository's owner, its
    /// organisation's members and its collaborators (the last two only where the forge
    /// cannot be asked: see [`Permissions::of`]); nothing for the rest.
    pub fn of_association(association: &str) -> Permission {
        match association {
            "OWNER" | "MEMBER" | "COLLABORATOR" => Permission::Write,
            _ => Permission::None,
        }
    }

    /// A collaborator-permission answer of `forge`.
    fn of_answer(forge: Forge, answer: &PermissionAnswer) -> Permission {
        match (
            forge,
            answer.permission.as_str(),
            answer.role_name.as_deref(),
        ) {
            (Forge::GitHub, "admin", _) => Permission::Admin,
            (Forge::GitHub, "write", Some("maintain")) => Permission::Maintain,
            (Forge::GitHub, "write", _) => Permission::Write,
            (Forge::Gitea, "owner" | "admin", _) => Permission::Admin,
            (Forge::Gitea, "write", _) => Permission::Write,
            (_, "read", _) => Permission::Read,
            _ => Permission::None,
        }
    }

    /// A Plue role (and admin flag) on the repository.
    fn of_plue(admin: bool, role: Option<&str>) -> Permission {
        if admin {
            return Permission::Admin;
        }
        match role {
            Some("maintainer") => Permission::Maintain,
            Some("writer") => Permission::Write,
            Some("reader") => Permission::Read,
            _ => Permission::None,
        }
    }
}

/// Who the engine is on a repository's forge: the account its `api_token` writes as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineIdentity {
    /// The forge named the login (`GET /user`).
    Known(String),
    /// The repository has no `api_token`: the engine writes nothing to its forge, so no
    /// event there is its own.
    NoToken,
    /// The forge could not say, and why: any push, pull request, issue or comment event
    /// might be the engine's own.
    Unknown(String),
}

impl EngineIdentity {
    /// Whether an event `login` caused might be the engine's own writing: that login's
    /// when known (in any case), none without a token, any at all when unknown (a
    /// payload that names nobody included).
    pub fn might_be(&self, login: Option<&str>) -> bool {
        match self {
            EngineIdentity::Known(engine) => {
                login.is_some_and(|login| engine.eq_ignore_ascii_case(login))
            }
            EngineIdentity::NoToken => false,
            EngineIdentity::Unknown(_) => true,
        }
    }

    /// `known`, `no_token` or `unknown`.
    pub fn state(&self) -> &'static str {
        match self {
            EngineIdentity::Known(_) => "known",
            EngineIdentity::NoToken => "no_token",
            EngineIdentity::Unknown(_) => "unknown",
        }
    }

    /// The login, when known.
    pub fn login(&self) -> Option<&str> {
        match self {
            EngineIdentity::Known(login) => Some(login),
            _ => None,
        }
    }

    /// Why the forge could not say, when unknown.
    pub fn reason(&self) -> Option<&str> {
        match self {
            EngineIdentity::Unknown(why) => Some(why),
            _ => None,
        }
    }
}

/// An identity learnt for one repository, with what it was learnt with: another token or
/// API (the repository was changed) asks again.
struct Learnt {
    identity: EngineIdentity,
    at: Instant,
    /// The sealed token, or `app:<id>` for the App.
    sealed_token: String,
    api_url: Option<String>,
}

/// The body of a collaborator-permission answer (both forges).
#[derive(Debug, Deserialize)]
struct PermissionAnswer {
    permission: String,
    #[serde(default)]
    role_name: Option<String>,
}

/// What was found and where: the `source` names it for the log and the delivery's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub permission: Permission,
    pub source: String,
}

impl Standing {
    /// Keeps `permission` (and where it was learnt) when it is higher.
    fn raise(&mut self, permission: Permission, source: String) {
        if permission > self.permission {
            *self = Standing { permission, source };
        }
    }
}

/// Learns permissions, remembering the forge's answers for [`CACHE_FOR`].
pub struct Permissions {
    client: std::sync::OnceLock<reqwest::Client>,
    cache: Mutex<HashMap<(i64, String), (Permission, Instant)>>,
    /// Repository id → who the engine is there.
    identities: Mutex<HashMap<i64, Learnt>>,
    /// How long a known identity and an unknown one are kept ([`CACHE_FOR`],
    /// [`FAILURE_CACHE_FOR`]).
    identity_for: (Duration, Duration),
    /// How long a forge's answer about one login is kept ([`CACHE_FOR`]).
    answer_for: Duration,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            client: Default::default(),
            cache: Default::default(),
            identities: Default::default(),
            identity_for: (CACHE_FOR, FAILURE_CACHE_FOR),
            answer_for: CACHE_FOR,
        }
    }
}

impl Permissions {
    /// The permission of `login` on `repo`, looked for until it meets `needed` (see the
    /// module docs); `association` is the payload's `author_association` for that login.
    /// An error: a source that had to be asked could not say (never read as "none").
    pub async fn of(
        &self,
        store: &Store,
        auth: &ForgeAuth,
        repo: &RepoRow,
        login: &str,
        association: Option<&str>,
        needed: Authors,
    ) -> anyhow::Result<Standing> {
        let mut best = Standing {
            permission: Permission::None,
            source: "nothing says so".into(),
        };
        // MEMBER and COLLABORATOR hold anything from none/read up: the forge says which.
        let vouches = |association: &str| association == "OWNER" || !asks_forge(auth, repo);
        if let Some(association) = association.filter(|a| vouches(a)) {
            best.raise(
                Permission::of_association(association),
                format!("author_association {association}"),
            );
        }
        if best.permission.meets(needed) {
            return Ok(best);
        }
        let linked = self
            .of_plue_user(store, repo, login)
            .await
            .with_context(|| format!("reading the Plue user linked to the forge login {login}"))?;
        if let Some((permission, user)) = linked {
            best.raise(permission, format!("linked Plue user '{user}'"));
        }
        if best.permission.meets(needed) {
            return Ok(best);
        }
        let asked = self.of_forge(auth, repo, login).await.with_context(|| {
            format!(
                "the forge could not say which permission {login} holds on {}",
                repo.name
            )
        })?;
        if let Some(permission) = asked {
            best.raise(permission, "the forge's permission API".into());
        }
        Ok(best)
    }

    async fn of_plue_user(
        &self,
        store: &Store,
        repo: &RepoRow,
        login: &str,
    ) -> anyhow::Result<Option<(Permission, String)>> {
        let Some(user_id) = store.user_of_forge_login(&repo.forge, login).await? else {
            return Ok(None);
        };
        let Some(user) = store.user_by_id(user_id).await? else {
            return Ok(None);
        };
        let role = store.role_of(repo.id, user_id).await?;
        Ok(Some((
            Permission::of_plue(user.admin, role.as_deref()),
            user.name,
        )))
    }

    /// Who the engine is on `repo`'s forge: the login its token writes as, asked of the
    /// forge at most once per [`CACHE_FOR`] when it answers and once per
    /// [`FAILURE_CACHE_FOR`] when it does not (each failure logged at warn once).
    pub async fn engine_identity(&self, auth: &ForgeAuth, repo: &RepoRow) -> EngineIdentity {
        // Without a credential the engine writes nothing to this forge.
        let credential = match (repo.api_token.as_deref(), auth.app()) {
            (Some(sealed), _) => sealed.to_string(),
            (None, Some(app)) if auth.is_app(repo) => format!("app:{}", app.id()),
            (None, _) => return EngineIdentity::NoToken,
        };
        let sealed = credential.as_str();
        let before = {
            let learnt = self.identities.lock().unwrap_or_else(|p| p.into_inner());
            match learnt.get(&repo.id) {
                Some(l) if l.sealed_token == sealed && l.api_url == repo.api_url => {
                    let kept_for = match l.identity {
                        EngineIdentity::Known(_) => self.identity_for.0,
                        _ => self.identity_for.1,
                    };
                    if l.at.elapsed() < kept_for {
                        return l.identity.clone();
                    }
                    Some(l.identity.clone())
                }
                _ => None,
            }
        };
        let identity = match self.ask_identity(auth, repo).await {
            Ok(login) => {
                if before.as_ref().and_then(EngineIdentity::login) != Some(login.as_str()) {
                    tracing::info!(repository = %repo.name, "the forge says Plue writes to it as {login}: what that account pushes, opens, comments or labels is Plue's own writing");
                }
                EngineIdentity::Known(login)
            }
            Err(why) => {
                tracing::warn!(repository = %repo.name, "Plue cannot tell which forge account its token writes as ({why}): until the forge says (asked again in {}s), every push and pull request of this repository runs like a fork's, without secrets, and no issue or comment summons a run", self.identity_for.1.as_secs());
                EngineIdentity::Unknown(why)
            }
        };
        let mut learnt = self.identities.lock().unwrap_or_else(|p| p.into_inner());
        if learnt.len() >= MAX_CACHED {
            learnt.clear();
        }
        learnt.insert(
            repo.id,
            Learnt {
                identity: identity.clone(),
                at: Instant::now(),
                sealed_token: sealed.to_string(),
                api_url: repo.api_url.clone(),
            },
        );
        identity
    }

    /// `GET /user` with `repo`'s token (`GET /app` for the App's): the login, or why
    /// there is none.
    async fn ask_identity(&self, auth: &ForgeAuth, repo: &RepoRow) -> Result<String, String> {
        if auth.is_app(repo) {
            return auth.app_login(repo).await.map_err(|e| e.to_string());
        }
        let target = match ApiTarget::of_repo(auth, repo).await {
            Ok(Some(target)) => target,
            Ok(None) => return Err(
                "the repository has a token but no forge API to ask whose it is (set its api_url)"
                    .into(),
            ),
            Err(e) => return Err(format!("{e:#}")),
        };
        let client = self.client.get_or_init(reqwest::Client::new);
        match target.token_login(client).await {
            Ok(Found::Yes(account)) if !account.login.trim().is_empty() => Ok(account.login),
            Ok(Found::Yes(_)) => Err(format!(
                "GET {}/user: the answer names no login",
                super::without_credentials(target.api_url.trim_end_matches('/'))
            )),
            Ok(Found::NotFound) => Err(format!(
                "GET {}/user: HTTP 404 Not Found",
                super::without_credentials(target.api_url.trim_end_matches('/'))
            )),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// The forge's answer (`None`: the repository has no API to ask).
    /// Learns permissions without keeping the forge's answers: each question is asked of
    /// the forge (the periodic refresh of forge roles, which must see a change at once).
    pub fn unremembered() -> Permissions {
        Permissions {
            answer_for: Duration::ZERO,
            ..Permissions::default()
        }
    }

    /// What the forge itself says `login` holds on `repo`, through its collaborator-
    /// permission API (see the module docs; an answer kept [`CACHE_FOR`] unless
    /// [`Permissions::unremembered`]): `None` when the repository has no forge API to ask.
    /// A 404 is [`Permission::None`]; a failure to learn is an error, never "none".
    pub async fn of_forge(
        &self,
        auth: &ForgeAuth,
        repo: &RepoRow,
        login: &str,
    ) -> anyhow::Result<Option<Permission>> {
        let key = (repo.id, login.to_lowercase());
        if let Some(permission) = self.cached(&key) {
            return Ok(Some(permission));
        }
        let client = self.client.get_or_init(reqwest::Client::new);
        let asked = auth
            .renewing(repo, || async {
                let Some(target) = ApiTarget::of_repo(auth, repo).await? else {
                    return Ok(None);
                };
                let found = target
                    .get::<PermissionAnswer>(client, &["collaborators", login, "permission"])
                    .await?;
                anyhow::Ok(Some((target.forge, found)))
            })
            .await?;
        let Some((forge, found)) = asked else {
            return Ok(None);
        };
        let permission = match found {
            Found::Yes(answer) => Permission::of_answer(forge, &answer),
            Found::NotFound => Permission::None,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (permission, Instant::now()));
        Ok(Some(permission))
    }

    fn cached(&self, key: &(i64, String)) -> Option<Permission> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.answer_for)
            .map(|(permission, _)| *permission)
    }
}

/// Whether `repo` has a forge API to ask (the same test as [`ApiTarget::of_repo`]'s,
/// without the token).
fn asks_forge(auth: &ForgeAuth, repo: &RepoRow) -> bool {
    Forge::parse(&repo.forge).is_some_and(|forge| {
        repo.api_url.is_some()
            || (auth.has_credential(repo) && forge.default_api_url(&repo.clone_url).is_some())
    })
}

#[cfg(test)]
mod tests;
