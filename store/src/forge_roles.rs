//! `forge_roles`: the role a user holds on a repository because of their permission on its
//! forge (learnt by `plue_core::forge_roles` for the user's linked forge logins), and the
//! *effective* role access decisions read: Plue's own grant (`repo_roles`) when there is
//! one — an explicit override, upwards or downwards — else the forge's.
//!
//! Invariants: a forge role is only ever a repository role name (`reader`, `writer`,
//! `maintainer`); "no permission" is no row; a row carries when the forge last confirmed it
//! (`checked_at`), and [`Store::drop_stale_forge_roles`] removes those not confirmed since
//! a moment, so a forge that stops answering never keeps access alive for ever.

use crate::tx::Statement;
use crate::Store;

/// A role learnt from a forge.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct ForgeRoleRow {
    pub repo_id: i64,
    pub user_id: i64,
    pub role: String,
    pub permission: String,
    pub checked_at: i64,
}

/// A linked forge login of an enabled user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct LinkedLogin {
    pub user_id: i64,
    pub forge: String,
    pub login: String,
}

impl Store {
    /// Records what the forge said of `user_id` on `repo_id` at `at_ms`: `Some((role,
    /// permission))` sets the row, `None` (no permission) removes it.
    pub async fn set_forge_role(
        &self,
        repo_id: i64,
        user_id: i64,
        learnt: Option<(&str, &str)>,
        at_ms: i64,
    ) -> anyhow::Result<()> {
        match learnt {
            Some((role, permission)) => self
                .execute(
                    Statement::new(
                        "INSERT INTO forge_roles (repo_id, user_id, role, permission, checked_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (repo_id, user_id) DO UPDATE SET \
                 role = excluded.role, permission = excluded.permission, \
                 checked_at = excluded.checked_at",
                    )
                    .bind(repo_id)
                    .bind(user_id)
                    .bind(role)
                    .bind(permission)
                    .bind(at_ms),
                )
                .await
                .map(|_| ())?,
            None => self
                .execute(
                    Statement::new("DELETE FROM forge_roles WHERE repo_id = $1 AND user_id = $2")
                        .bind(repo_id)
                        .bind(user_id),
                )
                .await
                .map(|_| ())?,
        }
        Ok(())
    }

    /// Removes the forge roles not confirmed since `before_ms`; how many.
    pub async fn drop_stale_forge_roles(&self, before_ms: i64) -> anyhow::Result<u64> {
        self.execute(
            Statement::new("DELETE FROM forge_roles WHERE checked_at < $1").bind(before_ms),
        )
        .await
    }

    /// The forge roles of `user_id`, by repository.
    pub async fn forge_roles_of_user(&self, user_id: i64) -> anyhow::Result<Vec<ForgeRoleRow>> {
        self.rows(
            Statement::new(
                "SELECT repo_id, user_id, role, permission, checked_at FROM forge_roles \
             WHERE user_id = $1 ORDER BY repo_id",
            )
            .bind(user_id),
        )
        .await
    }

    /// Every forge login linked to an enabled user (`user_id` given: that user's only).
    pub async fn linked_logins(&self, user_id: Option<i64>) -> anyhow::Result<Vec<LinkedLogin>> {
        self.rows(
            Statement::new(
                "SELECT f.user_id, f.forge, f.login FROM user_forge_logins f \
             JOIN users u ON u.id = f.user_id \
             WHERE u.disabled_at IS NULL AND ($1 IS NULL OR f.user_id = $1) \
             ORDER BY f.user_id, f.forge, f.login_key",
            )
            .bind(user_id),
        )
        .await
    }

    /// The role `user_id` acts with on `repo_id`: Plue's own grant, else the forge's.
    pub async fn effective_role_of(
        &self,
        repo_id: i64,
        user_id: i64,
    ) -> anyhow::Result<Option<String>> {
        self.one_scalar(
            Statement::new(
                "SELECT COALESCE( \
                 (SELECT role FROM repo_roles WHERE repo_id = $1 AND user_id = $2), \
                 (SELECT role FROM forge_roles WHERE repo_id = $1 AND user_id = $2))",
            )
            .bind(repo_id)
            .bind(user_id),
        )
        .await
    }

    /// Every repository `user_id` acts on with a role, with that role (as
    /// [`Store::effective_role_of`]).
    pub async fn effective_roles_of_user(
        &self,
        user_id: i64,
    ) -> anyhow::Result<Vec<(i64, String)>> {
        self.rows(
            Statement::new(
                "SELECT repo_id, role FROM repo_roles WHERE user_id = $1 \
             UNION ALL \
             SELECT f.repo_id, f.role FROM forge_roles f WHERE f.user_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM repo_roles r \
                             WHERE r.repo_id = f.repo_id AND r.user_id = f.user_id) \
             ORDER BY 1",
            )
            .bind(user_id),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{create_repo, stores};
    use crate::NewUser;

    #[tokio::test]
    async fn plue_s_own_grant_overrides_the_forge_s_and_a_stale_forge_role_goes() {
        for (store, _dir) in stores().await {
            let repo = create_repo(&store, "acme/app").await;
            let other = create_repo(&store, "acme/other").await;
            let bob = store.create_user(&NewUser::person("bob")).await.unwrap();
            assert_eq!(store.effective_role_of(repo, bob).await.unwrap(), None);

            store
                .set_forge_role(repo, bob, Some(("maintainer", "admin")), 100)
                .await
                .unwrap();
            store
                .set_forge_role(other, bob, Some(("reader", "read")), 100)
                .await
                .unwrap();
            assert_eq!(
                store.effective_role_of(repo, bob).await.unwrap().as_deref(),
                Some("maintainer")
            );
            // An explicit grant wins, downwards too.
            store.grant_role(repo, bob, "reader").await.unwrap();
            assert_eq!(
                store.effective_role_of(repo, bob).await.unwrap().as_deref(),
                Some("reader")
            );
            let all = store.effective_roles_of_user(bob).await.unwrap();
            assert_eq!(all, [(repo, "reader".into()), (other, "reader".into())]);

            // The forge says nothing any more: the row goes.
            store.set_forge_role(other, bob, None, 200).await.unwrap();
            assert_eq!(store.effective_role_of(other, bob).await.unwrap(), None);
            // Not confirmed since 150: dropped.
            store.revoke_role(repo, bob).await.unwrap();
            assert_eq!(store.drop_stale_forge_roles(150).await.unwrap(), 1);
            assert_eq!(store.effective_role_of(repo, bob).await.unwrap(), None);
            assert!(store.effective_roles_of_user(bob).await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn only_enabled_users_logins_are_listed() {
        for (store, _dir) in stores().await {
            let bob = store.create_user(&NewUser::person("bob")).await.unwrap();
            let eve = store.create_user(&NewUser::person("eve")).await.unwrap();
            store
                .link_forge_login(bob, "github", "Bob-GH")
                .await
                .unwrap();
            store.link_forge_login(eve, "gitea", "eve").await.unwrap();
            store.disable_user(eve).await.unwrap();
            let all = store.linked_logins(None).await.unwrap();
            assert_eq!(all.len(), 1, "{all:?}");
            assert_eq!((all[0].user_id, all[0].login.as_str()), (bob, "Bob-GH"));
            assert!(store.linked_logins(Some(eve)).await.unwrap().is_empty());
        }
    }
}
