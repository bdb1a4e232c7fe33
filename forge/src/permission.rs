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
//! 2. the Plue user that login is linked to (`plue users link-forge`), not disabled: an
//!    admin counts as admin, a repository `maintainer` as maintain, a `writer` as write;
//! 3. the forge's collaborator-permission API with the repository's `api_url`/`api_token`
//!    (`GET /repos/{o}/{r}/collaborators/{login}/permission`; GitHub answers `permission`
//!    admin/write/read/none with `role_name` `maintain` for maintainers, Gitea answers
//!    `permission` owner/admin/write/read/none), each answer kept [`CACHE_FOR`].
//!
//! The login the repository's `api_token` writes as (`GET /user`, kept [`CACHE_FOR`]) is
//! [`Permissions::engine_login`]: an event that login caused is the engine's own writing
//! (a label it added for a proposal, ...) and summons nothing, on Gitea too, where no
//! account is marked a bot.
//!
//! Invariants: anything unknown is no permission (a 404, an unreadable answer, a login
//! the payload did not give, a forge that cannot be asked); a failure to ask the forge is
//! logged and counts as no permission — it never starts a trusted run.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use evaluator::plan::Authors;
use serde::Deserialize;

use super::lookup::{ApiTarget, Found};
use super::Forge;
use plue_store::{RepoRow, Store};
use plue_vault::Vault;

/// How long a forge's answer about one login is believed.
pub const CACHE_FOR: Duration = Duration::from_secs(60);
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
#[derive(Default)]
pub struct Permissions {
    client: std::sync::OnceLock<reqwest::Client>,
    cache: Mutex<HashMap<(i64, String), (Permission, Instant)>>,
    /// Repository id → the login its token writes as (`None`: the forge named none).
    engine_logins: Mutex<HashMap<i64, (Option<String>, Instant)>>,
}

impl Permissions {
    /// The permission of `login` on `repo`, looked for until it meets `needed` (see the
    /// module docs); `association` is the payload's `author_association` for that login.
    pub async fn of(
        &self,
        store: &Store,
        vault: &Vault,
        repo: &RepoRow,
        login: &str,
        association: Option<&str>,
        needed: Authors,
    ) -> Standing {
        let mut best = Standing {
            permission: Permission::None,
            source: "nothing says so".into(),
        };
        // MEMBER and COLLABORATOR hold anything from none/read up: the forge says which.
        let vouches = |association: &str| association == "OWNER" || !asks_forge(repo);
        if let Some(association) = association.filter(|a| vouches(a)) {
            best.raise(
                Permission::of_association(association),
                format!("author_association {association}"),
            );
        }
        if best.permission.meets(needed) {
            return best;
        }
        match self.of_plue_user(store, repo, login).await {
            Ok(Some((permission, user))) => {
                best.raise(permission, format!("linked Plue user '{user}'"));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(repository = %repo.name, %login, "reading the Plue user linked to a forge login: {e:#}")
            }
        }
        if best.permission.meets(needed) {
            return best;
        }
        match self.of_forge(vault, repo, login).await {
            Ok(Some(permission)) => best.raise(permission, "the forge's permission API".into()),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(repository = %repo.name, %login, "asking the forge who may summon: {e:#}")
            }
        }
        best
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

    /// The login `repo`'s forge token writes as, asked of the forge once per [`CACHE_FOR`]
    /// (`None`: no token, no API, or the forge does not say; a failure is logged).
    pub async fn engine_login(&self, vault: &Vault, repo: &RepoRow) -> Option<String> {
        // Without a token the engine writes nothing to this forge.
        repo.api_token.as_ref()?;
        {
            let cached = self.engine_logins.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((login, at)) = cached.get(&repo.id) {
                if at.elapsed() < CACHE_FOR {
                    return login.clone();
                }
            }
        }
        let asked = async {
            let Some(target) = ApiTarget::of_repo(vault, repo)? else {
                return Ok(None);
            };
            let client = self.client.get_or_init(reqwest::Client::new);
            anyhow::Ok(match target.token_login(client).await? {
                Found::Yes(account) => Some(account.login),
                Found::NotFound => None,
            })
        };
        match asked.await {
            Ok(login) => {
                let mut cached = self.engine_logins.lock().unwrap_or_else(|p| p.into_inner());
                if cached.len() >= MAX_CACHED {
                    cached.clear();
                }
                cached.insert(repo.id, (login.clone(), Instant::now()));
                login
            }
            Err(e) => {
                // Remembered too (a GitHub App's token may not read /user): asked again,
                // and logged, once a minute, not on every event.
                tracing::warn!(repository = %repo.name, "asking the forge which login Plue writes as: {e:#}");
                let mut cached = self.engine_logins.lock().unwrap_or_else(|p| p.into_inner());
                cached.insert(repo.id, (None, Instant::now()));
                None
            }
        }
    }

    /// The forge's answer (`None`: the repository has no API to ask).
    async fn of_forge(
        &self,
        vault: &Vault,
        repo: &RepoRow,
        login: &str,
    ) -> anyhow::Result<Option<Permission>> {
        let key = (repo.id, login.to_lowercase());
        if let Some(permission) = self.cached(&key) {
            return Ok(Some(permission));
        }
        let Some(target) = ApiTarget::of_repo(vault, repo)? else {
            return Ok(None);
        };
        let client = self.client.get_or_init(reqwest::Client::new);
        let permission = match target
            .get::<PermissionAnswer>(client, &["collaborators", login, "permission"])
            .await?
        {
            Found::Yes(answer) => Permission::of_answer(target.forge, &answer),
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
            .filter(|(_, at)| at.elapsed() < CACHE_FOR)
            .map(|(permission, _)| *permission)
    }
}

/// Whether `repo` has a forge API to ask (the same test as [`ApiTarget::of_repo`]'s,
/// without the token).
fn asks_forge(repo: &RepoRow) -> bool {
    Forge::parse(&repo.forge).is_some_and(|forge| {
        repo.api_url.is_some()
            || (repo.api_token.is_some() && forge.default_api_url(&repo.clone_url).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(permission: &str, role_name: Option<&str>) -> PermissionAnswer {
        PermissionAnswer {
            permission: permission.into(),
            role_name: role_name.map(str::to_string),
        }
    }

    #[test]
    fn each_forge_answer_maps_to_one_level() {
        let github = |p, r| Permission::of_answer(Forge::GitHub, &answer(p, r));
        assert_eq!(github("admin", Some("admin")), Permission::Admin);
        assert_eq!(github("write", Some("maintain")), Permission::Maintain);
        assert_eq!(github("write", Some("write")), Permission::Write);
        assert_eq!(github("read", Some("triage")), Permission::Read);
        assert_eq!(github("none", None), Permission::None);
        assert_eq!(github("owner", None), Permission::None, "not GitHub's word");
        let gitea = |p| Permission::of_answer(Forge::Gitea, &answer(p, None));
        assert_eq!(gitea("owner"), Permission::Admin);
        assert_eq!(gitea("admin"), Permission::Admin);
        assert_eq!(gitea("write"), Permission::Write);
        assert_eq!(gitea("read"), Permission::Read);
        assert_eq!(gitea("none"), Permission::None);
        assert_eq!(gitea("WRITE"), Permission::None, "unknown is nothing");
    }

    #[test]
    fn who_meets_which_authors() {
        for (association, write) in [
            ("OWNER", true),
            ("MEMBER", true),
            ("COLLABORATOR", true),
            ("CONTRIBUTOR", false),
            ("FIRST_TIME_CONTRIBUTOR", false),
            ("FIRST_TIMER", false),
            ("MANNEQUIN", false),
            ("NONE", false),
            ("owner", false),
        ] {
            let p = Permission::of_association(association);
            assert_eq!(p.meets(Authors::Write), write, "{association}");
            assert!(
                !p.meets(Authors::Maintain),
                "{association}: never more than write"
            );
        }
        assert!(Permission::of_plue(true, None).meets(Authors::Admin));
        assert!(Permission::of_plue(false, Some("maintainer")).meets(Authors::Maintain));
        assert!(!Permission::of_plue(false, Some("maintainer")).meets(Authors::Admin));
        assert!(Permission::of_plue(false, Some("writer")).meets(Authors::Write));
        assert!(!Permission::of_plue(false, Some("reader")).meets(Authors::Write));
        assert!(!Permission::of_plue(false, None).meets(Authors::Write));
    }
}
