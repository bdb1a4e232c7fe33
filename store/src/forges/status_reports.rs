//! The commit statuses owed to the forges: the outbox the status reporter claims from,
//! and what became of each report.
//!
//! Invariant: status reports of a run are delivered in id order: only a run's oldest open
//! report is ever due.

use plue_types::status::CommitState;

use crate::tx::Statement;
use crate::{now_ms, Store};

/// A commit status to post, with what posting needs.
#[derive(Clone, PartialEq, sqlx::FromRow, serde::Deserialize)]
pub struct StatusReportRow {
    pub id: i64,
    pub run_id: i64,
    #[sqlx(try_from = "String")]
    pub state: CommitState,
    pub description: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub sha: String,
    pub workflow_name: String,
    pub workflow_path: String,
    pub repo_name: String,
    pub forge: String,
    pub clone_url: String,
    pub api_url: Option<String>,
    pub api_token: Option<String>,
    pub forge_repo_id: Option<i64>,
}

impl std::fmt::Debug for StatusReportRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusReportRow")
            .field("id", &self.id)
            .field("run_id", &self.run_id)
            .field("state", &self.state)
            .field("repo_name", &self.repo_name)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The oldest open report of each run that is due, claimed for `lease_ms` (another
    /// engine will not take it meanwhile).
    pub async fn claim_status_reports(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<StatusReportRow>> {
        let candidates: Vec<(i64, i64)> = self
            .rows(
                Statement::new(
                    "SELECT s.id, s.next_attempt_at FROM status_reports s \
             WHERE s.delivered_at IS NULL AND s.abandoned IS NULL AND s.next_attempt_at <= $1 \
             AND NOT EXISTS (SELECT 1 FROM status_reports o WHERE o.run_id = s.run_id \
                 AND o.id < s.id AND o.delivered_at IS NULL AND o.abandoned IS NULL) \
             ORDER BY s.id LIMIT $2",
                )
                .bind(now)
                .bind(limit),
            )
            .await?;
        let mut claimed = Vec::new();
        for (id, seen) in candidates {
            let taken = self
                .execute(
                    Statement::new(
                        "UPDATE status_reports SET next_attempt_at = $3, attempts = attempts + 1 \
                 WHERE id = $1 AND next_attempt_at = $2 AND delivered_at IS NULL",
                    )
                    .bind(id)
                    .bind(seen)
                    .bind(now + lease_ms),
                )
                .await?;
            if taken == 1 {
                let row = self.row::<StatusReportRow>(Statement::new("SELECT s.id, s.run_id, s.state, s.description, s.attempts, s.next_attempt_at, \
                     r.sha, w.name AS workflow_name, w.path AS workflow_path, p.name AS repo_name, \
                     p.forge, p.clone_url, p.api_url, p.api_token, p.forge_repo_id \
                     FROM status_reports s JOIN runs r ON r.id = s.run_id \
                     JOIN workflows w ON w.id = r.workflow_id \
                     JOIN repositories p ON p.id = r.repo_id WHERE s.id = $1",)
            .bind(id))
        .await?;
                claimed.extend(row);
            }
        }
        Ok(claimed)
    }

    pub async fn status_delivered(&self, id: i64) -> anyhow::Result<()> {
        self.execute(
            Statement::new("UPDATE status_reports SET delivered_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now_ms()),
        )
        .await?;
        Ok(())
    }

    /// Report `id` failed with `error`: another attempt at `at`.
    pub async fn status_retry_at(&self, id: i64, error: &str, at: i64) -> anyhow::Result<()> {
        self.status_failed(id, error, at, None).await
    }

    /// Report `id` failed with `error` for the last time: it is given up (`abandoned`).
    pub async fn status_abandoned(&self, id: i64, error: &str) -> anyhow::Result<()> {
        self.status_failed(id, error, now_ms(), Some(error)).await
    }

    async fn status_failed(
        &self,
        id: i64,
        error: &str,
        at: i64,
        abandoned: Option<&str>,
    ) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "UPDATE status_reports SET last_error = $2, next_attempt_at = $3, abandoned = $4 \
             WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(at)
            .bind(abandoned),
        )
        .await?;
        Ok(())
    }

    /// Reports of a run as (state, delivered, attempts, last error), oldest first.
    pub async fn status_reports_of_run(
        &self,
        run_id: i64,
    ) -> anyhow::Result<Vec<(CommitState, bool, i64, Option<String>)>> {
        let rows: Vec<(String, bool, i64, Option<String>)> = self
            .rows(
                Statement::new(
                    "SELECT state, delivered_at IS NOT NULL AS delivered, attempts, last_error \
             FROM status_reports WHERE run_id = $1 ORDER BY id",
                )
                .bind(run_id),
            )
            .await?;
        rows.into_iter()
            .map(|(state, delivered, attempts, last_error)| {
                Ok((state.parse()?, delivered, attempts, last_error))
            })
            .collect()
    }
}
