//! Who is asking ([`Caller`]) and what they may do: resolved once per request from a
//! bearer token or a dashboard session by the [`Resolver`](super::Resolver) (`resolver.rs`),
//! then asked by handlers.
//!
//! Invariants:
//! - An engine without an admin token (the embedded `plue run`) has no users: every caller
//!   is [`Caller::Embedded`] and every check passes. With one, a request without
//!   credentials is [`Caller::Anonymous`] and one with invalid credentials is refused (401)
//!   before any handler runs.
//! - A token acts with at most its user's rights: its `max_role` and `repos` only narrow
//!   them, and a narrowed token of an admin is not an admin.
//! - A caller who may not read a repository learns nothing of it: the users get the same
//!   404 as for a thing that does not exist, the anonymous the same 401.
//! - Names in approver and reviewer lists are user names or `@group`, compared
//!   case-insensitively against the caller's user — never against a token's name.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use plue_store::{now_ms, RepoRow, RunRow, Store};

use super::role::Role;
use crate::http_error::{ApiError, ApiResult};

/// A user, as a request acts for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    /// An installation admin (and not narrowed by its token).
    pub admin: bool,
    /// `person` or `bot`.
    pub kind: String,
}

/// How a token narrows its user's rights.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The highest role the token acts with.
    pub max_role: Option<Role>,
    /// The repositories it may act on.
    pub repos: Option<BTreeSet<i64>>,
    /// Its user is an installation admin (whose narrowed token is no admin, but still
    /// maintains the repositories it is narrowed to).
    pub admin_user: bool,
}

impl Scope {
    pub(super) fn narrows(&self) -> bool {
        self.max_role.is_some() || self.repos.is_some()
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An engine with no admin token: no users, everything allowed.
    Embedded,
    /// No credentials.
    Anonymous,
    /// A user, through one of its tokens or a session that token opened.
    Signed {
        user: User,
        scope: Scope,
        /// The id of the token (`None`: the admin token).
        token_id: Option<i64>,
    },
}

/// The repositories a caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readable {
    /// Every repository and the local runs (admins, the embedded engine).
    All,
    /// These repositories (public ones included); no local runs.
    Repos(BTreeSet<i64>),
}

impl Readable {
    /// Whether a run or thing of `repo_id` (`None`: a local run) is readable.
    pub fn allows(&self, repo_id: Option<i64>) -> bool {
        match (self, repo_id) {
            (Readable::All, _) => true,
            (Readable::Repos(ids), Some(id)) => ids.contains(&id),
            (Readable::Repos(_), None) => false,
        }
    }
}

fn sign_in_needed() -> ApiError {
    ApiError::unauthorized("this request needs 'Authorization: Bearer <token>'")
}

impl Caller {
    pub fn user(&self) -> Option<&User> {
        match self {
            Caller::Signed { user, .. } => Some(user),
            _ => None,
        }
    }

    pub fn user_id(&self) -> Option<i64> {
        self.user().map(|user| user.id)
    }

    /// The API token the request came with (`None`: the admin token or a session of it, or
    /// no user at all).
    pub fn token_id(&self) -> Option<i64> {
        match self {
            Caller::Signed { token_id, .. } => *token_id,
            _ => None,
        }
    }

    /// [`Caller::token_id`] when that token is narrowed (a `max_role` or `repos`): such a
    /// token reaches only itself and the tokens made with it.
    pub fn narrowed_token_id(&self) -> Option<i64> {
        match self {
            Caller::Signed {
                scope,
                token_id: Some(id),
                ..
            } if scope.narrows() => Some(*id),
            _ => None,
        }
    }

    /// As shown in the audit trail and on decisions.
    pub fn name(&self) -> &str {
        match self {
            Caller::Embedded => "embedded",
            Caller::Anonymous => "anonymous",
            Caller::Signed { user, .. } => &user.name,
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Embedded => true,
            Caller::Anonymous => false,
            Caller::Signed { user, .. } => user.admin,
        }
    }

    /// Whether the credentials the caller was resolved from still hold: its token is
    /// neither revoked nor expired, its user neither disabled nor, for an admin, demoted
    /// (the admin token, the anonymous and the embedded caller: always). A caller is
    /// resolved once per request: answers that last — live log streams — ask again as
    /// they go.
    pub async fn still_valid(&self, store: &Store) -> anyhow::Result<bool> {
        let Caller::Signed {
            user,
            scope,
            token_id: Some(id),
        } = self
        else {
            return Ok(true);
        };
        let Some(token) = store.token_by_id(*id).await? else {
            return Ok(false);
        };
        if token.revoked_at.is_some() || token.expires_at.is_some_and(|at| at <= now_ms()) {
            return Ok(false);
        }
        Ok(store.user_by_id(user.id).await?.is_some_and(|row| {
            row.disabled_at.is_none() && (row.admin || !(user.admin || scope.admin_user))
        }))
    }

    /// Passes for an installation admin (and the embedded engine); 401 without
    /// credentials, 403 otherwise.
    pub fn require_admin(&self) -> ApiResult<()> {
        match self {
            _ if self.is_admin() => Ok(()),
            Caller::Anonymous => Err(sign_in_needed()),
            _ => Err(ApiError::forbidden("this needs an installation admin")),
        }
    }

    /// The signed-in user; 401 when anonymous, 400 on an engine without users.
    pub fn require_user(&self) -> ApiResult<&User> {
        match self {
            Caller::Signed { user, .. } => Ok(user),
            Caller::Anonymous => Err(sign_in_needed()),
            Caller::Embedded => Err(ApiError::bad_request(
                "this engine has no users: start it with an admin token (PLUE_ADMIN_TOKEN)",
            )),
        }
    }

    /// Passes for any signed-in user (and the embedded engine): installation-wide reads
    /// such as the runners and the pool.
    pub fn require_signed_in(&self) -> ApiResult<()> {
        match self {
            Caller::Anonymous => Err(sign_in_needed()),
            _ => Ok(()),
        }
    }

    /// The role the caller acts with on `repo_id`: the user's role narrowed by its token;
    /// [`Role::Maintainer`] for admins. `None`: no role (public reads aside).
    pub async fn role_on(&self, store: &Store, repo_id: i64) -> anyhow::Result<Option<Role>> {
        let Caller::Signed { user, scope, .. } = self else {
            return Ok(match self {
                Caller::Embedded => Some(Role::Maintainer),
                _ => None,
            });
        };
        if scope
            .repos
            .as_ref()
            .is_some_and(|ids| !ids.contains(&repo_id))
        {
            return Ok(None);
        }
        let held = if user.admin || scope.admin_user {
            Some(Role::Maintainer)
        } else {
            // Plue's own grant, else the role the forge gives (`forge_roles`).
            store
                .effective_role_of(repo_id, user.id)
                .await?
                .as_deref()
                .and_then(Role::parse)
        };
        Ok(match (held, scope.max_role) {
            (Some(held), Some(max)) => Some(held.min(max)),
            (held, _) => held,
        })
    }

    /// Whether the caller may read `repo_id`: a role on it, or its reads are public.
    pub async fn may_read(&self, store: &Store, repo_id: i64) -> anyhow::Result<bool> {
        if self.role_on(store, repo_id).await?.is_some() {
            return Ok(true);
        }
        Ok(store.repo_public_read(repo_id).await?.unwrap_or(false))
    }

    /// Checks that the caller acts with at least `role` on `repo_id` (`None`: a local run,
    /// the admins' only). A caller who may not even read it gets `hidden` (the handler's
    /// own "no such ..." 404) — or 401 when anonymous — so nothing says it exists; one who
    /// reads it but lacks the role gets 403 naming the role.
    pub async fn require_repo_or(
        &self,
        store: &Store,
        repo_id: Option<i64>,
        role: Role,
        hidden: impl FnOnce() -> ApiError,
    ) -> ApiResult<()> {
        let Some(repo_id) = repo_id else {
            return match self {
                _ if self.is_admin() => Ok(()),
                Caller::Anonymous => Err(sign_in_needed()),
                _ => Err(hidden()),
            };
        };
        let held = self.role_on(store, repo_id).await?;
        if held.is_some_and(|held| held >= role) {
            return Ok(());
        }
        let reads = held.is_some() || store.repo_public_read(repo_id).await?.unwrap_or(false);
        if reads && role == Role::Reader {
            return Ok(());
        }
        match self {
            Caller::Anonymous => Err(sign_in_needed()),
            _ if !reads => Err(hidden()),
            _ => Err(ApiError::forbidden(format!(
                "this needs the {role} role on the repository{}",
                match held {
                    Some(held) => format!(" (this token acts as {held})"),
                    None => String::new(),
                }
            ))),
        }
    }

    /// [`Caller::require_repo_or`] with a plain 404.
    pub async fn require_repo(
        &self,
        store: &Store,
        repo_id: Option<i64>,
        role: Role,
    ) -> ApiResult<()> {
        self.require_repo_or(store, repo_id, role, || ApiError::not_found("not found"))
            .await
    }

    /// Run `id` when the caller acts with at least `role` on its repository; `no run {id}`
    /// (404) alike when it does not exist and when the caller may not read it.
    pub async fn visible_run(&self, store: &Store, id: i64, role: Role) -> ApiResult<RunRow> {
        let hidden = || ApiError::not_found(format!("no run {id}"));
        let Some(run) = store.run(id).await? else {
            return Err(match self {
                Caller::Anonymous => sign_in_needed(),
                _ => hidden(),
            });
        };
        self.require_repo_or(store, run.repo_id, role, hidden)
            .await?;
        Ok(run)
    }

    /// Repository `name` (`owner/name`) when the caller acts with at least `role` on it;
    /// `no repository {name}` (404) alike when it does not exist and when the caller may not
    /// read it.
    pub async fn visible_repo(&self, store: &Store, name: &str, role: Role) -> ApiResult<RepoRow> {
        let hidden = || ApiError::not_found(format!("no repository {name}"));
        let Some(repo) = store.repo_by_name(name).await? else {
            return Err(match self {
                Caller::Anonymous => sign_in_needed(),
                _ => hidden(),
            });
        };
        self.require_repo_or(store, Some(repo.id), role, hidden)
            .await?;
        Ok(repo)
    }

    /// The repositories the caller may read.
    pub async fn readable(&self, store: &Store) -> anyhow::Result<Readable> {
        if self.is_admin() {
            if let Caller::Signed { scope, .. } = self {
                if let Some(ids) = &scope.repos {
                    let mut ids = ids.clone();
                    ids.extend(store.public_repos().await?);
                    return Ok(Readable::Repos(ids));
                }
            }
            return Ok(Readable::All);
        }
        let mut ids: BTreeSet<i64> = store.public_repos().await?.into_iter().collect();
        if let Caller::Signed { user, scope, .. } = self {
            ids.extend(
                store
                    .effective_roles_of_user(user.id)
                    .await?
                    .into_iter()
                    .filter(|(_, role)| Role::parse(role).is_some())
                    .map(|(id, _)| id)
                    .filter(|id| scope.repos.as_ref().is_none_or(|only| only.contains(id))),
            );
        }
        Ok(Readable::Repos(ids))
    }

    /// Whether the caller is among `names` (user names and `@group`s, any case). An empty
    /// list names nobody in particular: true. The embedded engine is everyone.
    pub async fn is_named(&self, store: &Store, names: &[String]) -> anyhow::Result<bool> {
        if names.is_empty() || matches!(self, Caller::Embedded) {
            return Ok(true);
        }
        let Some(user) = self.user() else {
            return Ok(false);
        };
        if names.iter().any(|n| n.eq_ignore_ascii_case(&user.name)) {
            return Ok(true);
        }
        if !names.iter().any(|n| n.starts_with('@')) {
            return Ok(false);
        }
        let groups = store.group_keys_of(user.id).await?;
        Ok(names.iter().any(|n| {
            n.strip_prefix('@')
                .is_some_and(|g| groups.iter().any(|mine| mine.eq_ignore_ascii_case(g)))
        }))
    }

    /// Whether the caller started run `run_id`: the same user, a forge login linked to it
    /// (any of the run's: `forge_login` lists them separated by spaces), or (runs recorded
    /// before users) the same name. A re-run was started by whoever started the run it
    /// re-runs too (its code is theirs), all the way up.
    pub async fn is_triggerer_of(&self, store: &Store, run_id: i64) -> anyhow::Result<bool> {
        let Some(user) = self.user() else {
            // Anonymous and embedded callers are no one in particular; an anonymous caller
            // decides nothing anyway.
            return Ok(false);
        };
        // regression: a re-run by another writer was only theirs, so whoever pushed the
        // code approved its re-run with exclude_triggerer.
        let mut next = Some(run_id);
        let mut seen = BTreeSet::new();
        while let Some(run_id) = next.filter(|id| seen.insert(*id)) {
            if let Some(trigger) = store.trigger_of(run_id).await? {
                if started(store, &trigger, user).await? {
                    return Ok(true);
                }
            }
            next = store.run(run_id).await?.and_then(|run| run.rerun_of);
        }
        Ok(false)
    }

    /// Whether the caller may decide a gate of run `run_id` that names `names` (empty: any
    /// writer), refusing the run's triggerer when `self_review` is
    /// [`SelfReview::Excluded`]. Holding `writer` on the run's repository is checked apart
    /// ([`Caller::visible_run`]).
    pub async fn may_decide(
        &self,
        store: &Store,
        run_id: i64,
        names: &[String],
        self_review: SelfReview,
    ) -> anyhow::Result<Result<(), DecideRefused>> {
        if !self.is_named(store, names).await? {
            return Ok(Err(DecideRefused::NotADecider {
                caller: self.name().to_string(),
                deciders: names.to_vec(),
            }));
        }
        if self_review == SelfReview::Excluded && self.is_triggerer_of(store, run_id).await? {
            return Ok(Err(DecideRefused::Triggerer {
                caller: self.name().to_string(),
            }));
        }
        Ok(Ok(()))
    }
}

/// Whether whoever started a run may decide its gate ([`Caller::may_decide`]): an
/// approval's `exclude_triggerer`, an environment's `prevent_self_review`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfReview {
    Allowed,
    Excluded,
}

/// Why [`Caller::may_decide`] refuses a caller a gate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideRefused {
    /// The gate names its deciders and the caller is none of them.
    #[error("'{caller}' may not decide this step: its deciders are {}", deciders.join(", "))]
    NotADecider {
        caller: String,
        deciders: Vec<String>,
    },
    /// The gate excludes the run's triggerer, and the caller started the run.
    #[error("'{caller}' started this run and may not decide it")]
    Triggerer { caller: String },
}

/// Whether `trigger` (one run's) names `user`: its id, a forge login linked to it, or (rows
/// from before users) its name.
async fn started(
    store: &Store,
    trigger: &plue_store::Triggerer,
    user: &User,
) -> anyhow::Result<bool> {
    if trigger.user_id == Some(user.id) {
        return Ok(true);
    }
    if trigger.user_id.is_none() && trigger.name.eq_ignore_ascii_case(&user.name) {
        return Ok(true);
    }
    // Every login that started it: the author and, say, who pushed onto its branch.
    let logins = trigger.forge_login.as_deref().unwrap_or_default();
    for (forge, login) in logins.split_whitespace().filter_map(|f| f.split_once(':')) {
        if store.user_of_forge_login(forge, login).await? == Some(user.id) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A 403 naming what is missing, for handlers that refuse on their own terms.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::Client(StatusCode::FORBIDDEN, message.into())
}
