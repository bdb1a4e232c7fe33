//! Cron schedules read from workflow files on a repository's default branch, and their
//! ticks.
//!
//! Invariant: a schedule tick is taken by moving `next_fire_at` with a compare-and-set:
//! of several engines seeing the same due schedule, exactly one wins the tick.

use crate::tx::Conn;
use crate::tx::Statement;
use crate::Store;

/// A cron schedule read from a workflow file on the default branch.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct ScheduleRow {
    pub id: i64,
    pub repo_id: i64,
    pub workflow_path: String,
    pub cron: String,
    pub sha: String,
    pub branch: String,
    pub next_fire_at: i64,
    pub last_fired_at: Option<i64>,
}

/// A schedule as the registry found it (`next_fire_at` for a new entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleEntry {
    pub workflow_path: String,
    pub cron: String,
    pub next_fire_at: i64,
}

const SCHEDULE_COLUMNS: &str =
    "id, repo_id, workflow_path, cron, sha, branch, next_fire_at, last_fired_at";

impl Store {
    /// Replaces the repository's schedules with `entries` read at `sha` of `branch`.
    /// Schedules that stay keep their next fire time.
    pub async fn replace_schedules(
        &self,
        repo_id: i64,
        branch: &str,
        sha: &str,
        entries: &[ScheduleEntry],
    ) -> anyhow::Result<()> {
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            // Write first (see the store's invariants): locks the repository against a
            // concurrent replacement, and SQLite never has to upgrade a read snapshot.
            tx.execute(
                Statement::new("UPDATE repositories SET id = id WHERE id = $1").bind(repo_id),
            )
            .await?;
            let existing: Vec<(String, String)> = tx
                .rows(
                    Statement::new("SELECT workflow_path, cron FROM schedules WHERE repo_id = $1")
                        .bind(repo_id),
                )
                .await?;
            for (path, cron) in &existing {
                if !entries
                    .iter()
                    .any(|e| &e.workflow_path == path && &e.cron == cron)
                {
                    tx.execute(
                        Statement::new(
                            "DELETE FROM schedules \
                             WHERE repo_id = $1 AND workflow_path = $2 AND cron = $3",
                        )
                        .bind(repo_id)
                        .bind(path)
                        .bind(cron),
                    )
                    .await?;
                }
            }
            for entry in entries {
                tx.execute(
                    Statement::new(
                        "INSERT INTO schedules \
                         (repo_id, workflow_path, cron, sha, branch, next_fire_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (repo_id, workflow_path, cron) \
                         DO UPDATE SET sha = excluded.sha, branch = excluded.branch",
                    )
                    .bind(repo_id)
                    .bind(&entry.workflow_path)
                    .bind(&entry.cron)
                    .bind(sha)
                    .bind(branch)
                    .bind(entry.next_fire_at),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }
    }

    pub async fn schedules_of_repo(&self, repo_id: i64) -> anyhow::Result<Vec<ScheduleRow>> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules \
             WHERE repo_id = $1 ORDER BY workflow_path, cron"
        );
        self.rows(Statement::new(&sql).bind(repo_id)).await
    }

    /// Schedules whose next fire time has come.
    pub async fn due_schedules(&self, now: i64) -> anyhow::Result<Vec<ScheduleRow>> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules \
             WHERE next_fire_at <= $1 ORDER BY next_fire_at LIMIT 100"
        );
        self.rows(Statement::new(&sql).bind(now)).await
    }

    /// Takes the tick `seen_next` of a schedule, moving it to `next`; false when another
    /// engine took it first.
    pub async fn take_schedule_tick(
        &self,
        id: i64,
        seen_next: i64,
        next: i64,
        now: i64,
    ) -> anyhow::Result<bool> {
        let taken = self
            .execute(
                Statement::new(
                    "UPDATE schedules SET next_fire_at = $3, last_fired_at = $4 \
             WHERE id = $1 AND next_fire_at = $2",
                )
                .bind(id)
                .bind(seen_next)
                .bind(next)
                .bind(now),
            )
            .await?;
        Ok(taken == 1)
    }
}
