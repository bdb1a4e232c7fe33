//! Repositories and what hangs off them: sealed secrets, API tokens, webhook deliveries
//! (de-duplication); cron schedules ([`schedules`]) and the commit statuses owed to the
//! forge ([`status_reports`]).
//!
//! Invariants:
//! - Secret values, webhook secrets and forge tokens are stored sealed (see
//!   `plue_vault`); this module never sees them in clear and row types do not print them.
//! - A delivery id is recorded at most once per forge (primary key), so of two concurrent
//!   deliveries with one id exactly one proceeds — on every engine sharing the database.

use super::{is_unique_violation, now_ms, Store};
use crate::tx::Statement;

pub(crate) mod schedules;
pub(crate) mod status_reports;

/// A registered repository (sealed fields stay sealed).
#[derive(Clone, PartialEq, sqlx::FromRow, serde::Deserialize)]
pub struct RepoRow {
    pub id: i64,
    pub name: String,
    pub clone_url: String,
    pub forge: String,
    pub webhook_secret: String,
    pub api_url: Option<String>,
    pub api_token: Option<String>,
    pub default_branch: Option<String>,
    pub created_at: i64,
    /// Anyone may read its runs (`None`: from before roles, until start-up settles it).
    pub public_read: Option<bool>,
    /// Its numeric id on the forge (`repository.id`), once bound: deliveries naming another
    /// id are refused, and the GitHub App's tokens must be for this one (`None`: not bound
    /// yet; migration 0031).
    pub forge_repo_id: Option<i64>,
}

impl std::fmt::Debug for RepoRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("clone_url", &self.clone_url)
            .field("forge", &self.forge)
            .finish_non_exhaustive()
    }
}

/// A repository to register.
#[derive(Debug, Clone)]
pub struct NewRepo<'a> {
    pub name: &'a str,
    pub clone_url: &'a str,
    pub forge: &'a str,
    pub webhook_secret_sealed: &'a str,
    pub api_url: Option<&'a str>,
    pub api_token_sealed: Option<&'a str>,
    pub default_branch: Option<&'a str>,
    /// Its numeric id on the forge, when known at registration (an installation event's).
    pub forge_repo_id: Option<i64>,
}

const REPO_COLUMNS: &str = "id, name, clone_url, forge, webhook_secret, api_url, api_token, \
     default_branch, created_at, public_read, forge_repo_id";

impl Store {
    /// Registers a repository; `None` when the name is taken. Its id was never any other
    /// repository's: on SQLite (whose `INTEGER PRIMARY KEY` hands the largest id out again
    /// once its row is deleted) it is past every id in the audit trail too, where every
    /// registration and deletion is recorded — so a new repository never inherits a
    /// deleted one's audit trail or git mirror (both kept by id). PostgreSQL's identity
    /// never reuses ids.
    pub async fn create_repo(&self, repo: &NewRepo<'_>) -> anyhow::Result<Option<RepoRow>> {
        let (id_column, id_value) = match self.backend() {
            "sqlite" => (
                "id, ",
                "(SELECT MAX(n) + 1 FROM (SELECT COALESCE(MAX(id), 0) AS n FROM repositories \
                 UNION ALL SELECT COALESCE(MAX(repo_id), 0) FROM audit_events)), ",
            ),
            _ => ("", ""),
        };
        let sql = format!(
            "INSERT INTO repositories ({id_column}name, clone_url, forge, webhook_secret, \
             api_url, api_token, default_branch, created_at, public_read, forge_repo_id) \
             VALUES ({id_value}$1, $2, $3, $4, $5, $6, $7, $8, FALSE, $9) RETURNING {REPO_COLUMNS}"
        );
        let inserted = self
            .one_row::<RepoRow>(
                Statement::new(&sql)
                    .bind(repo.name)
                    .bind(repo.clone_url)
                    .bind(repo.forge)
                    .bind(repo.webhook_secret_sealed)
                    .bind(repo.api_url)
                    .bind(repo.api_token_sealed)
                    .bind(repo.default_branch)
                    .bind(now_ms())
                    .bind(repo.forge_repo_id),
            )
            .await;
        match inserted {
            Ok(row) => Ok(Some(row)),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Binds repository `id` to the forge's repository `forge_repo_id` unless it is bound
    /// already (a compare-and-set: of two first deliveries, one binds); the id it is bound
    /// to afterwards.
    pub async fn bind_forge_repo_id(
        &self,
        id: i64,
        forge_repo_id: i64,
    ) -> anyhow::Result<Option<i64>> {
        self.execute(
            Statement::new(
                "UPDATE repositories SET forge_repo_id = $2 WHERE id = $1 \
                 AND forge_repo_id IS NULL",
            )
            .bind(id)
            .bind(forge_repo_id),
        )
        .await?;
        let bound: Option<Option<i64>> = self
            .scalar(Statement::new("SELECT forge_repo_id FROM repositories WHERE id = $1").bind(id))
            .await?;
        Ok(bound.flatten())
    }

    pub async fn repo_by_name(&self, name: &str) -> anyhow::Result<Option<RepoRow>> {
        let sql = format!("SELECT {REPO_COLUMNS} FROM repositories WHERE name = $1");
        self.row(Statement::new(&sql).bind(name)).await
    }

    pub async fn repo_by_id(&self, id: i64) -> anyhow::Result<Option<RepoRow>> {
        let sql = format!("SELECT {REPO_COLUMNS} FROM repositories WHERE id = $1");
        self.row(Statement::new(&sql).bind(id)).await
    }

    pub async fn list_repos(&self) -> anyhow::Result<Vec<RepoRow>> {
        self.list_repos_in(None).await
    }

    /// The repositories among `ids` (`None`: all), by name: one query, whatever the
    /// number of ids (a JSON array parameter, read back the same way on both backends).
    pub async fn list_repos_in(&self, ids: Option<&[i64]>) -> anyhow::Result<Vec<RepoRow>> {
        let mut conditions = super::filters::Conditions::new(self.backend());
        conditions.one_of("id", ids);
        let sql = format!(
            "SELECT {REPO_COLUMNS} FROM repositories {} ORDER BY name",
            conditions.where_clause()
        );
        self.rows(super::filters::bind_conditions!(
            Statement::new(&sql),
            conditions
        ))
        .await
    }

    /// Deletes a repository with its workflows, runs, secrets and schedules.
    pub async fn delete_repo(&self, id: i64) -> anyhow::Result<bool> {
        let deleted = self
            .execute(Statement::new("DELETE FROM repositories WHERE id = $1").bind(id))
            .await?;
        Ok(deleted == 1)
    }

    /// Runs of the repository that are not final.
    pub async fn active_runs_of_repo(&self, repo_id: i64) -> anyhow::Result<Vec<i64>> {
        self.scalars(
            Statement::new(
                "SELECT id FROM runs WHERE repo_id = $1 \
                 AND status IN ('pending', 'queued', 'running') ORDER BY id",
            )
            .bind(repo_id),
        )
        .await
    }

    pub async fn set_default_branch(&self, repo_id: i64, branch: &str) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "UPDATE repositories SET default_branch = $2 WHERE id = $1 \
                 AND (default_branch IS NULL OR default_branch <> $2)",
            )
            .bind(repo_id)
            .bind(branch),
        )
        .await?;
        Ok(())
    }

    /// Stores (or replaces) a sealed secret of the repository.
    pub async fn put_secret(&self, repo_id: i64, name: &str, sealed: &str) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "INSERT INTO repo_secrets (repo_id, name, sealed, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (repo_id, name) \
                 DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
            )
            .bind(repo_id)
            .bind(name)
            .bind(sealed)
            .bind(now_ms()),
        )
        .await?;
        Ok(())
    }

    pub async fn delete_secret(&self, repo_id: i64, name: &str) -> anyhow::Result<bool> {
        let deleted = self
            .execute(
                Statement::new("DELETE FROM repo_secrets WHERE repo_id = $1 AND name = $2")
                    .bind(repo_id)
                    .bind(name),
            )
            .await?;
        Ok(deleted == 1)
    }

    /// Names and update times of the repository's secrets (never their values).
    pub async fn secret_names(&self, repo_id: i64) -> anyhow::Result<Vec<(String, i64)>> {
        self.rows(
            Statement::new(
                "SELECT name, updated_at FROM repo_secrets WHERE repo_id = $1 ORDER BY name",
            )
            .bind(repo_id),
        )
        .await
    }

    /// The sealed secrets a step of `run_id` may receive: none for local runs and runs
    /// whose secrets are withheld (pull requests from forks).
    pub async fn sealed_secrets_for_run(
        &self,
        run_id: i64,
        names: &[String],
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut found = Vec::new();
        for name in names {
            let sealed: Option<String> = self
                .scalar(
                    Statement::new(
                        "SELECT s.sealed FROM runs r JOIN repo_secrets s ON s.repo_id = r.repo_id \
                         WHERE r.id = $1 AND r.secrets_allowed AND s.name = $2",
                    )
                    .bind(run_id)
                    .bind(name),
                )
                .await?;
            if let Some(sealed) = sealed {
                found.push((name.clone(), sealed));
            }
        }
        Ok(found)
    }

    /// Whether the run belongs to a repository and withholds its secrets.
    pub async fn run_withholds_secrets(&self, run_id: i64) -> anyhow::Result<bool> {
        let row: Option<bool> = self
            .scalar(
                Statement::new("SELECT NOT secrets_allowed FROM runs WHERE id = $1").bind(run_id),
            )
            .await?;
        Ok(row.unwrap_or(false))
    }

    /// Stores an API token row as engines before users (migration 0017) wrote them: no
    /// user, `owner_hash` the hash of the token that minted it (`None`: it owns itself).
    /// [`Store::adopt_legacy_tokens`] gives such rows their users; the adoption's tests
    /// write them with this.
    pub async fn create_api_token(
        &self,
        name: &str,
        token_hash: &str,
        owner_hash: Option<&str>,
    ) -> anyhow::Result<i64> {
        self.one_scalar(
            Statement::new(
                "INSERT INTO api_tokens (name, token_hash, owner_hash, created_at) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(name)
            .bind(token_hash)
            .bind(owner_hash)
            .bind(now_ms()),
        )
        .await
    }

    /// Records a delivery; false when this forge already delivered this id.
    pub async fn record_delivery(
        &self,
        forge: &str,
        delivery_id: &str,
        repo_id: i64,
        event: &str,
    ) -> anyhow::Result<bool> {
        let inserted = self
            .execute(
                Statement::new(
                    "INSERT INTO webhook_deliveries (forge, delivery_id, repo_id, event, \
                     received_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (forge, delivery_id) DO NOTHING",
                )
                .bind(forge)
                .bind(delivery_id)
                .bind(repo_id)
                .bind(event)
                .bind(now_ms()),
            )
            .await?;
        Ok(inserted == 1)
    }

    /// Records the runs a delivery started (JSON array of ids).
    pub async fn set_delivery_runs(
        &self,
        forge: &str,
        delivery_id: &str,
        runs: &[i64],
    ) -> anyhow::Result<()> {
        let runs = serde_json::to_string(runs)?;
        self.execute(
            Statement::new(
                "UPDATE webhook_deliveries SET runs = $3 WHERE forge = $1 AND delivery_id = $2",
            )
            .bind(forge)
            .bind(delivery_id)
            .bind(runs),
        )
        .await?;
        Ok(())
    }

    /// The runs an earlier delivery started.
    pub async fn delivery_runs(&self, forge: &str, delivery_id: &str) -> anyhow::Result<Vec<i64>> {
        let runs: Option<String> = self
            .scalar(
                Statement::new(
                    "SELECT runs FROM webhook_deliveries WHERE forge = $1 AND delivery_id = $2",
                )
                .bind(forge)
                .bind(delivery_id),
            )
            .await?;
        Ok(runs
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or_default())
    }

    /// Forgets a delivery that could not be processed, so the forge's redelivery is tried.
    pub async fn forget_delivery(&self, forge: &str, delivery_id: &str) -> anyhow::Result<()> {
        self.execute(
            Statement::new("DELETE FROM webhook_deliveries WHERE forge = $1 AND delivery_id = $2")
                .bind(forge)
                .bind(delivery_id),
        )
        .await?;
        Ok(())
    }
}
