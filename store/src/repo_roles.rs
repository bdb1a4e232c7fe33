//! Roles per repository, per-repository public reads, and the audit trail, in the store.
//!
//! Invariants:
//! - A user holds at most one role on a repository (the primary key); roles are stored as
//!   their names (`reader`, `writer`, `maintainer`) and ordered by [`crate::access::Role`].
//! - `public_read` NULL marks a repository from before roles: [`Store::settle_legacy_reads`]
//!   gives each one the engine's read setting once, at start-up, and says which.
//! - Audit rows are only ever inserted.

use serde::Serialize;

use super::filters::{bind_conditions, Conditions};
use super::{now_ms, Store};
use crate::tx::{Conn, Statement};

/// A user's role on a repository.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct MemberRow {
    pub user_id: i64,
    pub user_name: String,
    pub role: String,
    pub granted_at: i64,
}

/// One thing somebody did, to record.
#[derive(Debug, Clone)]
pub struct Audit<'a> {
    /// The user, when a user did it (`None`: anonymous, a forge, the engine itself).
    pub user_id: Option<i64>,
    /// Who, as shown: a user name, `forge:github:octocat`, `schedule`.
    pub actor: &'a str,
    /// What, dotted: `run.cancel`, `token.create`, `approval.approve`, ...
    pub action: &'a str,
    pub repo_id: Option<i64>,
    pub run_id: Option<i64>,
    /// What else is worth keeping (never a secret value or a token).
    pub detail: serde_json::Value,
}

/// A recorded audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, serde::Deserialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub user_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub repo_id: Option<i64>,
    pub run_id: Option<i64>,
    /// JSON object.
    pub detail: String,
}

/// Which audit events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only these repositories' events (`None`: all, also those of no repository).
    pub repos: Option<Vec<i64>>,
    pub run_id: Option<i64>,
    /// Only events with an id below this (paging back).
    pub before: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Gives `user_id` `role` on `repo_id` (replacing the role it held).
    pub async fn grant_role(&self, repo_id: i64, user_id: i64, role: &str) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "INSERT INTO repo_roles (repo_id, user_id, role, granted_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (repo_id, user_id) \
                 DO UPDATE SET role = excluded.role, granted_at = excluded.granted_at",
            )
            .bind(repo_id)
            .bind(user_id)
            .bind(role)
            .bind(now_ms()),
        )
        .await?;
        Ok(())
    }

    /// Gives `user_id` `role` on every repository it holds no role on. (`WHERE TRUE`: SQLite
    /// reads an `ON CONFLICT` after a bare `SELECT ... FROM` as a join's.)
    pub async fn grant_every_repository(&self, user_id: i64, role: &str) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "INSERT INTO repo_roles (repo_id, user_id, role, granted_at) \
             SELECT id, $1, $2, $3 FROM repositories WHERE TRUE ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(role)
            .bind(now_ms()),
        )
        .await?;
        Ok(())
    }

    /// Takes `user_id`'s role on `repo_id` away. False when it held none.
    pub async fn revoke_role(&self, repo_id: i64, user_id: i64) -> anyhow::Result<bool> {
        Ok(self
            .execute(
                Statement::new("DELETE FROM repo_roles WHERE repo_id = $1 AND user_id = $2")
                    .bind(repo_id)
                    .bind(user_id),
            )
            .await?
            > 0)
    }

    /// The role `user_id` holds on `repo_id`, by name.
    pub async fn role_of(&self, repo_id: i64, user_id: i64) -> anyhow::Result<Option<String>> {
        self.scalar(
            Statement::new("SELECT role FROM repo_roles WHERE repo_id = $1 AND user_id = $2")
                .bind(repo_id)
                .bind(user_id),
        )
        .await
    }

    /// Every repository `user_id` holds a role on, with the role's name.
    pub async fn roles_of_user(&self, user_id: i64) -> anyhow::Result<Vec<(i64, String)>> {
        self.rows(
            Statement::new(
                "SELECT repo_id, role FROM repo_roles WHERE user_id = $1 ORDER BY repo_id",
            )
            .bind(user_id),
        )
        .await
    }

    /// The members of a repository, by name.
    pub async fn members_of(&self, repo_id: i64) -> anyhow::Result<Vec<MemberRow>> {
        self.rows::<MemberRow>(
            Statement::new(
                "SELECT r.user_id, u.name AS user_name, r.role, r.granted_at FROM repo_roles r \
             JOIN users u ON u.id = r.user_id WHERE r.repo_id = $1 ORDER BY u.name_key",
            )
            .bind(repo_id),
        )
        .await
    }

    /// Whether anyone may read `repo_id`'s runs (`None`: no such repository). A legacy NULL
    /// reads as private until [`Store::settle_legacy_reads`] ran.
    pub async fn repo_public_read(&self, repo_id: i64) -> anyhow::Result<Option<bool>> {
        let row: Option<Option<bool>> = self
            .scalar(
                Statement::new("SELECT public_read FROM repositories WHERE id = $1").bind(repo_id),
            )
            .await?;
        Ok(row.map(|public| public.unwrap_or(false)))
    }

    /// The ids of the repositories anyone may read.
    pub async fn public_repos(&self) -> anyhow::Result<Vec<i64>> {
        self.scalars(Statement::new(
            "SELECT id FROM repositories WHERE public_read ORDER BY id",
        ))
        .await
    }

    /// Chooses whether anyone may read `repo_id`'s runs. False when there is no such
    /// repository.
    pub async fn set_public_read(&self, repo_id: i64, public: bool) -> anyhow::Result<bool> {
        Ok(self
            .execute(
                Statement::new("UPDATE repositories SET public_read = $1 WHERE id = $2")
                    .bind(public)
                    .bind(repo_id),
            )
            .await?
            > 0)
    }

    /// Gives every repository from before roles (`public_read` NULL) the read setting the
    /// engine ran with (`public`); returns their names, for the start-up warning.
    pub async fn settle_legacy_reads(&self, public: bool) -> anyhow::Result<Vec<String>> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.begin().await?;
        let names: Vec<String> = tx
            .scalars(Statement::new(
                "SELECT name FROM repositories WHERE public_read IS NULL ORDER BY name",
            ))
            .await?;
        tx.execute(
            Statement::new("UPDATE repositories SET public_read = $1 WHERE public_read IS NULL")
                .bind(public),
        )
        .await?;
        tx.commit().await?;
        Ok(names)
    }

    /// Records an audit event.
    pub async fn audit(&self, event: &Audit<'_>) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "INSERT INTO audit_events (at, user_id, actor, action, repo_id, run_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(now_ms())
            .bind(event.user_id)
            .bind(event.actor)
            .bind(event.action)
            .bind(event.repo_id)
            .bind(event.run_id)
            .bind(event.detail.to_string()),
        )
        .await?;
        Ok(())
    }

    /// Audit events, newest first.
    pub async fn audit_events(&self, filter: &AuditFilter) -> anyhow::Result<Vec<AuditRow>> {
        let mut conditions = Conditions::new(self.backend());
        conditions.one_of("repo_id", filter.repos.as_deref());
        conditions.int(filter.run_id, |n| format!("run_id = {n}"));
        conditions.int(filter.before, |n| format!("id < {n}"));
        let sql = format!(
            "SELECT id, at, user_id, actor, action, repo_id, run_id, detail FROM audit_events \
             {} ORDER BY id DESC LIMIT {}",
            conditions.where_clause(),
            conditions.next_placeholder()
        );
        self.rows::<AuditRow>(
            bind_conditions!(Statement::new(&sql), conditions).bind(filter.limit.clamp(1, 1000)),
        )
        .await
    }
}
