//! Registration tokens other than the shared one: scoped tokens an operator makes (reusable
//! until revoked) and one-time tokens the pool mints for one runner name.
//!
//! Invariants:
//! - Tokens are stored only as SHA-256 hashes; a token is shown once, when it is made.
//! - Each token carries its scope: the labels its runners may announce (so the steps they
//!   may claim), whether they may be handed steps that name secrets, and whether they may
//!   claim steps of runs of pull requests from forks (`accept_forks`). The scope is copied
//!   onto the runner at registration ([`super::runners`]), so a claim never joins tokens.
//! - A one-time token registers one runner, under the name it was minted for, before it
//!   expires; redeeming it and inserting the runner are one transaction, so two
//!   registrations racing with one stolen token cannot both succeed.

use super::Store;
use crate::tx::{Arg, Conn, Statement};

/// What kind of registration token a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerTokenKind {
    /// Made by an operator (`plue runner-token create`); reusable until revoked.
    Scoped,
    /// Minted by the pool for one runner name; redeemable once, until it expires.
    Once,
}

impl RunnerTokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerTokenKind::Scoped => "scoped",
            RunnerTokenKind::Once => "once",
        }
    }
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewRunnerToken<'a> {
    pub kind: RunnerTokenKind,
    /// What it is for; for [`RunnerTokenKind::Once`], the only runner name it registers.
    pub name: &'a str,
    pub token_hash: &'a str,
    /// JSON object of the labels its runners may announce.
    pub labels_json: &'a str,
    /// Whether its runners may receive steps that name secrets.
    pub secrets: bool,
    /// Whether its runners may claim steps of runs of pull requests from forks.
    pub accept_forks: bool,
    /// Redeemable until then (one-time tokens).
    pub expires_at: Option<i64>,
    pub now: i64,
}

/// A stored registration token (never the token itself).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Deserialize)]
pub struct RunnerTokenRow {
    pub id: i64,
    /// `scoped` or `once`.
    pub kind: String,
    pub name: String,
    /// JSON object of the labels its runners may announce.
    pub labels: String,
    pub secrets: bool,
    /// Whether its runners may claim steps of fork runs.
    pub accept_forks: bool,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// Last registration with it (a one-time token's only one).
    pub used_at: Option<i64>,
    /// The runner that redeemed a one-time token.
    pub runner_id: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl RunnerTokenRow {
    pub fn is_once(&self) -> bool {
        self.kind == RunnerTokenKind::Once.as_str()
    }
}

/// The state of a runner the pool started, found through the one-time token it minted.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct MintedRunner {
    pub token_id: i64,
    pub runner_id: i64,
    pub state: String,
    pub state_since: i64,
}

/// The pool's runner holding a live attempt: the one-time token it registered with, and
/// the name that token was minted for (its pod's).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct AttemptPod {
    pub token_id: i64,
    /// The runner's (and its pod's) name.
    pub name: String,
}

const COLUMNS: &str =
    "id, kind, name, labels, secrets, accept_forks, created_at, expires_at, used_at, runner_id, \
     revoked_at";

impl Store {
    pub async fn create_runner_token(&self, new: &NewRunnerToken<'_>) -> anyhow::Result<i64> {
        self.one_scalar(
            Statement::new(
                "INSERT INTO runner_tokens (kind, name, token_hash, labels, secrets, created_at, \
                 expires_at, accept_forks) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(new.kind.as_str())
            .bind(new.name)
            .bind(new.token_hash)
            .bind(new.labels_json)
            .bind(new.secrets)
            .bind(new.now)
            .bind(new.expires_at)
            .bind(new.accept_forks),
        )
        .await
    }

    /// The token with this hash, whatever its state (the caller judges it).
    pub async fn runner_token_by_hash(
        &self,
        token_hash: &str,
    ) -> anyhow::Result<Option<RunnerTokenRow>> {
        let sql = format!("SELECT {COLUMNS} FROM runner_tokens WHERE token_hash = $1");
        self.row(Statement::new(&sql).bind(token_hash)).await
    }

    /// Operators' scoped tokens, newest first (one-time tokens are the pool's business).
    pub async fn list_runner_tokens(&self) -> anyhow::Result<Vec<RunnerTokenRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM runner_tokens WHERE kind = 'scoped' ORDER BY id DESC");
        self.rows(Statement::new(&sql)).await
    }

    /// Revokes scoped token `id`: it registers no runner any more, and its live runners are
    /// marked gone. Returns the ids of those runners (their attempts are the caller's to
    /// fail), or `None` when there is no such scoped token.
    pub async fn revoke_runner_token(&self, id: i64, now: i64) -> anyhow::Result<Option<Vec<i64>>> {
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            let found = tx
                .execute(
                    Statement::new(
                        "UPDATE runner_tokens SET revoked_at = COALESCE(revoked_at, $2) \
                         WHERE id = $1 AND kind = 'scoped'",
                    )
                    .bind(id)
                    .bind(now),
                )
                .await?;
            if found == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let runners: Vec<i64> = tx
                .scalars(
                    Statement::new(
                        "UPDATE runners SET state = 'gone', state_since = $2 WHERE token_id = $1 \
                         AND state IN ('idle', 'busy') RETURNING id",
                    )
                    .bind(id)
                    .bind(now),
                )
                .await?;
            tx.commit().await?;
            Ok(Some(runners))
        }
    }

    /// The runners that redeemed these one-time tokens (tokens not yet redeemed are absent).
    pub async fn minted_runners(&self, token_ids: &[i64]) -> anyhow::Result<Vec<MintedRunner>> {
        if token_ids.is_empty() {
            return Ok(Vec::new());
        }
        const SELECT: &str = "SELECT t.id AS token_id, r.id AS runner_id, r.state, r.state_since \
             FROM runner_tokens t JOIN runners r ON r.id = t.runner_id";
        let sqlite = format!("{SELECT} WHERE t.id IN (SELECT value FROM json_each($1))");
        let postgres = format!("{SELECT} WHERE t.id = ANY($1)");
        self.rows(Statement::per_backend(&sqlite, &postgres).bind(Arg::IntSet(token_ids)))
            .await
    }

    /// The one-time token (and name) of the runner holding attempt `attempt_id` while it is
    /// claimed or running; `None` when it ended, or its runner registered without one (a
    /// runner the pool did not start: it has no pod).
    pub async fn attempt_pod(&self, attempt_id: i64) -> anyhow::Result<Option<AttemptPod>> {
        self.row(
            Statement::new(
                "SELECT t.id AS token_id, t.name FROM attempts a \
                 JOIN runner_tokens t ON t.runner_id = a.runner_id AND t.kind = 'once' \
                 WHERE a.id = $1 AND a.status IN ('claimed', 'running')",
            )
            .bind(attempt_id),
        )
        .await
    }

    /// Deletes one-time token `id` (the pool is done with its runner) and every one-time
    /// token that expired unredeemed before `expired_before`.
    pub async fn drop_once_token(&self, id: i64, expired_before: i64) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "DELETE FROM runner_tokens WHERE kind = 'once' AND (id = $1 OR (runner_id IS NULL \
                 AND expires_at < $2))",
            )
            .bind(id)
            .bind(expired_before),
        )
        .await?;
        Ok(())
    }
}
