//! Roles that follow the forge: a person's role on a repository comes from their
//! permission on its forge — admin or maintain → `maintainer`, write → `writer`, triage or
//! read → `reader`, none → no role — learnt for every forge login linked to a Plue user
//! (`plue user link`, or a sign-in through the forge) from the forge's collaborator-
//! permission API, and refreshed every [`REFRESH`] (`plue serve --forge-roles-every`).
//! Plue's own grants (`plue member set`) are explicit overrides: the store's effective role
//! is the grant when there is one, else the forge's (`Store::effective_role_of`).
//!
//! Invariants:
//! - A forge's answer is read fresh at every refresh (never a cached one), so a permission
//!   lost on the forge is lost here within one refresh.
//! - A failure to learn (the forge refused, a network error, a 5xx) changes nothing for
//!   that login and repository until [`STALE_AFTER_REFRESHES`] refreshes have passed
//!   without a confirmation; then the role is dropped (fail closed, never kept for ever).
//! - Only repositories on the login's forge kind are asked about; a repository without a
//!   forge API to ask gives no forge role.

use std::collections::BTreeMap;
use std::time::Duration;

use plue_forge::permission::{Permission, Permissions};
use plue_store::now_ms;

use crate::executor::Executor;

/// How often forge roles are refreshed by default.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// How many refresh intervals a role the forge no longer confirms is kept.
pub const STALE_AFTER_REFRESHES: u32 = 2;

/// The repository role a forge permission gives, if any.
pub fn role_of(permission: Permission) -> Option<&'static str> {
    match permission {
        Permission::Admin | Permission::Maintain => Some("maintainer"),
        Permission::Write => Some("writer"),
        Permission::Read => Some("reader"),
        Permission::None => None,
    }
}

/// What a refresh did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refreshed {
    /// Roles set or confirmed.
    pub set: usize,
    /// (user, repository) pairs the forge gives no role.
    pub none: usize,
    /// Logins and repositories the forge could not answer for, with why.
    pub failed: Vec<String>,
    /// Roles dropped for want of a confirmation.
    pub dropped: u64,
}

/// Asks the forges about every linked login of `user` (all enabled users for `None`) on
/// every repository of its forge, and records the roles; a full refresh (`None`) then drops
/// the roles not confirmed for [`STALE_AFTER_REFRESHES`] times `every`.
pub async fn refresh(
    executor: &Executor,
    permissions: &Permissions,
    user: Option<i64>,
    every: Duration,
) -> anyhow::Result<Refreshed> {
    let store = executor.store();
    let started = now_ms();
    let logins = store.linked_logins(user).await?;
    let repos = if logins.is_empty() {
        Vec::new()
    } else {
        store.list_repos().await?
    };
    // The best permission per (repository, user): a user may link two logins of a forge.
    let mut best: BTreeMap<(i64, i64), Permission> = BTreeMap::new();
    let mut failed_pairs = std::collections::BTreeSet::new();
    let mut refreshed = Refreshed::default();
    for login in &logins {
        for repo in repos.iter().filter(|repo| repo.forge == login.forge) {
            let key = (repo.id, login.user_id);
            match permissions
                .of_forge(executor.forge_auth(), repo, &login.login)
                .await
            {
                Ok(found) => {
                    let permission = found.unwrap_or(Permission::None);
                    let held = best.entry(key).or_insert(Permission::None);
                    *held = (*held).max(permission);
                }
                Err(error) => {
                    failed_pairs.insert(key);
                    refreshed.failed.push(format!(
                        "{}:{} on {}: {error:#}",
                        login.forge, login.login, repo.name
                    ));
                }
            }
        }
    }
    for ((repo_id, user_id), permission) in best {
        // A login that failed keeps what it had, unless another login said more.
        if failed_pairs.contains(&(repo_id, user_id)) && role_of(permission).is_none() {
            continue;
        }
        let learnt = role_of(permission).map(|role| (role, permission.as_str()));
        match learnt {
            Some(_) => refreshed.set += 1,
            None => refreshed.none += 1,
        }
        store
            .set_forge_role(repo_id, user_id, learnt, started)
            .await?;
    }
    if user.is_none() {
        let kept = every.saturating_mul(STALE_AFTER_REFRESHES);
        let before = started.saturating_sub(i64::try_from(kept.as_millis()).unwrap_or(i64::MAX));
        refreshed.dropped = store.drop_stale_forge_roles(before).await?;
    }
    for failure in &refreshed.failed {
        tracing::warn!("forge roles: the forge could not say: {failure}");
    }
    Ok(refreshed)
}

/// Refreshes every linked login's roles every `every` until `shutdown`.
pub async fn refresh_every(
    executor: std::sync::Arc<Executor>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let permissions = Permissions::unremembered();
    loop {
        if let Err(error) = refresh(&executor, &permissions, None, every).await {
            tracing::warn!("forge roles: the refresh failed: {error:#}");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forge_permissions_become_repository_roles() {
        assert_eq!(role_of(Permission::Admin), Some("maintainer"));
        assert_eq!(role_of(Permission::Maintain), Some("maintainer"));
        assert_eq!(role_of(Permission::Write), Some("writer"));
        assert_eq!(role_of(Permission::Read), Some("reader"));
        assert_eq!(role_of(Permission::None), None);
    }
}
