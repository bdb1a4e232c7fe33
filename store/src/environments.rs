//! Environments of a repository (`prod`, `staging`): the rules a maintainer sets for the
//! steps that name `environment="..."` — the branches allowed to use it, its reviewers,
//! its wait timer — and its sealed secrets; plus the facts of a run that the executor's
//! gate ([`crate::executor::environments`]) judges against them.
//!
//! Invariants: nothing here is read from a plan. An environment is found by the run's
//! repository and the name's lower-case key, so a step can only *name* one its repository
//! defines; its secrets are sealed with the vault exactly like repository secrets and are
//! only returned by [`Store::sealed_environment_secrets`], which the executor calls after
//! the gate passed (and re-checks it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{now_ms, Store};
use crate::tx::Statement;

/// What a maintainer sets on an environment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EnvironmentSettings {
    /// Globs over branch names (`main`, `release/*`) whose runs may use the environment;
    /// empty: no branch may.
    pub allowed_refs: Vec<String>,
    /// User names and `@group`s, one of whom must approve each step that uses it; empty:
    /// no review.
    pub reviewers: Vec<String>,
    /// Seconds between the review (or the step becoming ready) and its dispatch.
    pub wait_timer_s: i64,
    /// The run's triggerer may not review it.
    pub prevent_self_review: bool,
    /// Steps of untrusted runs (a fork's pull request, an event the engine caused) may use
    /// it once reviewed, for OpenID Connect tokens marked untrusted — never its secrets.
    #[serde(default)]
    pub untrusted_id_tokens: bool,
}

/// A stored environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRow {
    pub id: i64,
    pub repo_id: i64,
    pub name: String,
    pub settings: EnvironmentSettings,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What the gate of a run's environment steps looks at: where the run comes from (all
/// written by the engine when it created the run, never by the plan) and the environments
/// its plan names, as its repository defines them now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnvironments {
    /// `None` for a local run (no repository: no environments, no gate).
    pub repo: Option<RunOrigin>,
    /// The environments found, by the name the plan gives (those not defined are absent).
    pub defined: BTreeMap<String, EnvironmentRow>,
}

/// A repository run's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOrigin {
    /// `owner/name`.
    pub repo_name: String,
    /// A pull request from a fork (its secrets are withheld).
    pub from_fork: bool,
    /// The branch the run is on: a push's or dispatch's branch, a pull request's head
    /// branch; `None` for a tag or a commit.
    pub branch: Option<String>,
    /// The run's full ref, for messages (`refs/tags/v1`).
    pub git_ref: String,
}

const COLUMNS: &str = "id, repo_id, name, allowed_refs, reviewers, wait_timer_s, \
     prevent_self_review, untrusted_id_tokens, created_at, updated_at";

/// An `environments` row as stored (its lists as JSON text).
#[derive(sqlx::FromRow, serde::Deserialize)]
struct Stored {
    id: i64,
    repo_id: i64,
    name: String,
    allowed_refs: String,
    reviewers: String,
    wait_timer_s: i64,
    prevent_self_review: bool,
    untrusted_id_tokens: bool,
    created_at: i64,
    updated_at: i64,
}

impl Stored {
    fn decode(self) -> anyhow::Result<EnvironmentRow> {
        let list = |column: &str, text: &str| -> anyhow::Result<Vec<String>> {
            serde_json::from_str(text).map_err(|e| {
                anyhow::anyhow!(
                    "stored {column} of environment {} is not a JSON list: {e}",
                    self.id
                )
            })
        };
        Ok(EnvironmentRow {
            id: self.id,
            repo_id: self.repo_id,
            settings: EnvironmentSettings {
                allowed_refs: list("allowed_refs", &self.allowed_refs)?,
                reviewers: list("reviewers", &self.reviewers)?,
                wait_timer_s: self.wait_timer_s,
                prevent_self_review: self.prevent_self_review,
                untrusted_id_tokens: self.untrusted_id_tokens,
            },
            name: self.name,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// What [`Store::run_environments`] reads of a run: its repository (`None`: a local run),
/// whether its secrets are allowed, its ref and its stored context.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct RunFacts {
    repo_id: Option<i64>,
    secrets_allowed: bool,
    git_ref: String,
    context: String,
    repo_name: Option<String>,
}

impl Store {
    /// Creates or replaces the environment `name` of the repository (the name's case as
    /// given last); the same environment (id, secrets) when it existed.
    pub async fn put_environment(
        &self,
        repo_id: i64,
        name: &str,
        settings: &EnvironmentSettings,
    ) -> anyhow::Result<EnvironmentRow> {
        let now = now_ms();
        let allowed = serde_json::to_string(&settings.allowed_refs)?;
        let reviewers = serde_json::to_string(&settings.reviewers)?;
        let sql = format!(
            "INSERT INTO environments (repo_id, name, name_key, allowed_refs, reviewers, \
             wait_timer_s, prevent_self_review, untrusted_id_tokens, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (repo_id, name_key) DO UPDATE SET name = excluded.name, \
             allowed_refs = excluded.allowed_refs, reviewers = excluded.reviewers, \
             wait_timer_s = excluded.wait_timer_s, \
             prevent_self_review = excluded.prevent_self_review, \
             untrusted_id_tokens = excluded.untrusted_id_tokens, updated_at = excluded.updated_at \
             RETURNING {COLUMNS}"
        );
        {
            let row: Stored = self
                .one_row(
                    Statement::new(&sql)
                        .bind(repo_id)
                        .bind(name)
                        .bind(name.to_lowercase())
                        .bind(allowed)
                        .bind(reviewers)
                        .bind(settings.wait_timer_s)
                        .bind(settings.prevent_self_review)
                        .bind(settings.untrusted_id_tokens)
                        .bind(now),
                )
                .await?;
            row.decode()
        }
    }

    /// The repository's environment `name` (case-insensitively).
    pub async fn environment(
        &self,
        repo_id: i64,
        name: &str,
    ) -> anyhow::Result<Option<EnvironmentRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM environments WHERE repo_id = $1 AND name_key = $2");
        {
            let row: Option<Stored> = self
                .row(Statement::new(&sql).bind(repo_id).bind(name.to_lowercase()))
                .await?;
            row.map(Stored::decode).transpose()
        }
    }

    /// The repository's environments by name.
    pub async fn environments(&self, repo_id: i64) -> anyhow::Result<Vec<EnvironmentRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM environments WHERE repo_id = $1 ORDER BY name_key");
        {
            let rows: Vec<Stored> = self.rows(Statement::new(&sql).bind(repo_id)).await?;
            rows.into_iter().map(Stored::decode).collect()
        }
    }

    /// Deletes the environment and its secrets; false when it did not exist.
    pub async fn delete_environment(&self, repo_id: i64, name: &str) -> anyhow::Result<bool> {
        let deleted = self
            .execute(
                Statement::new("DELETE FROM environments WHERE repo_id = $1 AND name_key = $2")
                    .bind(repo_id)
                    .bind(name.to_lowercase()),
            )
            .await?;
        Ok(deleted == 1)
    }

    /// Stores (or replaces) a sealed secret of the environment.
    pub async fn put_environment_secret(
        &self,
        environment_id: i64,
        name: &str,
        sealed: &str,
    ) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "INSERT INTO environment_secrets (environment_id, name, sealed, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (environment_id, name) \
                 DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
            )
            .bind(environment_id)
            .bind(name)
            .bind(sealed)
            .bind(now_ms()),
        )
        .await?;
        Ok(())
    }

    pub async fn delete_environment_secret(
        &self,
        environment_id: i64,
        name: &str,
    ) -> anyhow::Result<bool> {
        let deleted = self
            .execute(
                Statement::new(
                    "DELETE FROM environment_secrets WHERE environment_id = $1 AND name = $2",
                )
                .bind(environment_id)
                .bind(name),
            )
            .await?;
        Ok(deleted == 1)
    }

    /// Names and update times of the environment's secrets (never their values).
    pub async fn environment_secret_names(
        &self,
        environment_id: i64,
    ) -> anyhow::Result<Vec<(String, i64)>> {
        self.rows(
            Statement::new(
                "SELECT name, updated_at FROM environment_secrets WHERE environment_id = $1 \
                 ORDER BY name",
            )
            .bind(environment_id),
        )
        .await
    }

    /// The sealed values of the environment's secrets among `names`. Only the executor
    /// calls this, for a step whose gate it has just checked.
    pub async fn sealed_environment_secrets(
        &self,
        environment_id: i64,
        names: &[String],
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let mut found = BTreeMap::new();
        for name in names {
            let sealed: Option<String> = self
                .scalar(
                    Statement::new(
                        "SELECT sealed FROM environment_secrets WHERE environment_id = $1 \
                         AND name = $2",
                    )
                    .bind(environment_id)
                    .bind(name),
                )
                .await?;
            if let Some(sealed) = sealed {
                found.insert(name.clone(), sealed);
            }
        }
        Ok(found)
    }

    /// The run's origin and the environments among `names` that its repository defines.
    /// `None` when the run does not exist.
    pub async fn run_environments(
        &self,
        run_id: i64,
        names: &[&str],
    ) -> anyhow::Result<Option<RunEnvironments>> {
        let row: Option<RunFacts> = self
            .row(
                Statement::new(
                    "SELECT r.repo_id, r.secrets_allowed, r.ref AS git_ref, d.context, \
                     p.name AS repo_name FROM runs r JOIN run_documents d ON d.run_id = r.id \
                     LEFT JOIN repositories p ON p.id = r.repo_id WHERE r.id = $1",
                )
                .bind(run_id),
            )
            .await?;
        let Some(RunFacts {
            repo_id,
            secrets_allowed,
            git_ref,
            context,
            repo_name,
        }) = row
        else {
            return Ok(None);
        };
        let (Some(repo_id), Some(repo_name)) = (repo_id, repo_name) else {
            return Ok(Some(RunEnvironments {
                repo: None,
                defined: BTreeMap::new(),
            }));
        };
        let mut defined = BTreeMap::new();
        for &name in names {
            if let Some(environment) = self.environment(repo_id, name).await? {
                defined.insert(name.to_owned(), environment);
            }
        }
        Ok(Some(RunEnvironments {
            repo: Some(RunOrigin {
                repo_name,
                from_fork: !secrets_allowed,
                branch: run_branch(&context),
                git_ref,
            }),
            defined,
        }))
    }
}

/// The branch a run is on, from its stored context (written by the engine): a pull
/// request's head branch, else the context's branch (a push's or dispatch's; none for a
/// tag or a commit). A context without one (or unreadable) is on no branch, which no
/// environment allows.
fn run_branch(context: &str) -> Option<String> {
    let ctx: serde_json::Value = serde_json::from_str(context).ok()?;
    let branch = match ctx.get("pr").filter(|pr| !pr.is_null()) {
        Some(pr) => pr.get("head"),
        None => ctx.get("branch"),
    };
    branch?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_requests_branch_is_its_head() {
        let ctx = |branch: Option<&str>, pr: Option<&str>| {
            serde_json::json!({
                "event": if pr.is_some() { "pull_request" } else { "push" },
                "repo": "octo/hello", "ref": "refs/pull/1/head", "branch": branch, "sha": "0",
                "pr": pr.map(|head| serde_json::json!({"number": 1, "base": "main", "head": head, "action": "opened"})),
                "changed_files": [], "inputs": {}
            })
            .to_string()
        };
        assert_eq!(
            run_branch(&ctx(Some("main"), None)).as_deref(),
            Some("main")
        );
        assert_eq!(run_branch(&ctx(None, None)), None);
        // A pull request is judged by its head, never by its base.
        assert_eq!(
            run_branch(&ctx(Some("main"), Some("feature"))).as_deref(),
            Some("feature")
        );
        assert_eq!(run_branch("{}"), None);
        assert_eq!(run_branch("not json"), None);
    }
}
