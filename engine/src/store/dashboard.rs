//! Read queries for the dashboard: one page of runs, newest first, filtered and paginated by
//! keyset (`id < before`), so a store with 100,000 runs answers as fast as one with ten.
//!
//! Invariants: every filter is bound as a parameter (an absent filter binds NULL and
//! matches everything); the page walks the primary key downwards, never an `OFFSET`.

use super::{on_db, RunRow, Store};

/// Which runs a dashboard page shows; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// `local` or a repository's `owner/name` (the workflow's source).
    pub repository: Option<String>,
    /// The workflow's name as its plan declares it.
    pub workflow: Option<String>,
    /// A branch name (`main` also matches `refs/heads/main`) or a full ref.
    pub branch: Option<String>,
    pub event: Option<String>,
    pub status: Option<String>,
    /// Only runs with a smaller id (the keyset cursor of the next page).
    pub before: Option<i64>,
}

/// One attempt of a step, for the run page.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptRow {
    pub step_run_id: i64,
    pub number: i64,
    pub status: String,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The name of the runner that took it.
    pub runner: Option<String>,
}

/// The runs' columns in [`RunRow`] order (as `runs.rs` reads them).
const COLUMNS: &str = "r.id, r.workflow_id, w.name AS workflow_name, w.path AS workflow_path, \
     w.source AS workflow_source, r.event, r.ref AS git_ref, r.sha, r.plan_hash, r.status, \
     r.reason, r.cancel_requested, r.max_parallel, r.rerun_of, r.repo_id, r.secrets_allowed, \
     r.created_at, r.started_at, r.finished_at";

impl Store {
    /// Up to `limit` runs matching `filter`, newest first.
    pub async fn dashboard_runs(
        &self,
        filter: &RunFilter,
        limit: i64,
    ) -> anyhow::Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM runs r JOIN workflows w ON w.id = r.workflow_id \
             WHERE ($1 IS NULL OR w.source = $1) \
               AND ($2 IS NULL OR w.name = $2) \
               AND ($3 IS NULL OR r.ref = $3 OR r.ref = 'refs/heads/' || $3) \
               AND ($4 IS NULL OR r.event = $4) \
               AND ($5 IS NULL OR r.status = $5) \
               AND ($6 IS NULL OR r.id < $6) \
             ORDER BY r.id DESC LIMIT $7"
        );
        Ok(on_db!(self, pool => sqlx::query_as(&sql)
            .bind(filter.repository.as_deref())
            .bind(filter.workflow.as_deref())
            .bind(filter.branch.as_deref())
            .bind(filter.event.as_deref())
            .bind(filter.status.as_deref())
            .bind(filter.before)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// The distinct workflow sources and names that have runs (the filters' choices),
    /// sorted, at most `limit` of each.
    pub async fn dashboard_workflows(&self, limit: i64) -> anyhow::Result<Vec<(String, String)>> {
        Ok(on_db!(self, pool => sqlx::query_as(
            "SELECT source, name FROM workflows ORDER BY source, name LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// What every runner is doing now: `(runner id, run id, step id)` of each attempt still
    /// claimed or running.
    pub async fn dashboard_busy_runners(&self) -> anyhow::Result<Vec<(i64, i64, String)>> {
        Ok(on_db!(self, pool => sqlx::query_as(
            "SELECT a.runner_id, s.run_id, s.step_id FROM attempts a \
             JOIN step_runs s ON s.id = a.step_run_id \
             WHERE a.status IN ('claimed', 'running') ORDER BY a.id",
        )
        .fetch_all(pool)
        .await?))
    }

    /// Every attempt of the run's steps, by step and number.
    pub async fn dashboard_attempts(&self, run_id: i64) -> anyhow::Result<Vec<AttemptRow>> {
        Ok(on_db!(self, pool => sqlx::query_as(
            "SELECT a.step_run_id, a.number, a.status, a.exit_code, a.reason, a.started_at, \
             a.finished_at, r.name AS runner FROM attempts a \
             JOIN step_runs s ON s.id = a.step_run_id LEFT JOIN runners r ON r.id = a.runner_id \
             WHERE s.run_id = $1 ORDER BY a.step_run_id, a.number",
        )
        .bind(run_id)
        .fetch_all(pool)
        .await?))
    }
}
