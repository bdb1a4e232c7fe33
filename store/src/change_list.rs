//! The list of step runs that became final and were not yet read by an advance
//! (`step_changes`): written by a trigger (migration 0011) wherever a step run ends, taken
//! by the run's next advance ([`take_changed_steps`]), kept small on PostgreSQL
//! ([`Store::tidy_change_list`]).
//!
//! Invariants:
//! - an advance takes exactly the entries it reads; entries listed meanwhile stay for the
//!   next one;
//! - on PostgreSQL the list is a queue whose rows live for one transaction or a few: every
//!   step adds a row and deletes one, and deleted rows keep their space until a `VACUUM`.
//!   Without one the table can grow by a page every couple of hundred steps (a deleted
//!   row's space is found again only by the page pruning of later reads, or once a
//!   `VACUUM` has recorded it), and a take planned while the table was small (a sequential
//!   scan) reads every page: measured, 0.03 ms with the index against 0.45 ms over the 23
//!   pages 4,000 steps left. The sweeper vacuums it every tick, far sooner than
//!   autovacuum (a minute apart) would.
//!   The `VACUUM` never waits: not for another replica's (`SKIP_LOCKED`), and not for the
//!   exclusive lock that giving pages back to the file system would take (`TRUNCATE
//!   false`), which every step's transaction holds against it.

use anyhow::Context;

use super::runs::{StepRunRow, STEP_STATE_COLUMNS};
use super::tx::{Statement, Tx};
use super::Store;

/// Empties run `$1`'s list of step runs that became final.
pub(crate) const EMPTY_CHANGES: &str = "DELETE FROM step_changes WHERE run_id = $1";

/// The step runs of run `run_id` that became final since they were last read, taken from
/// `step_changes` (exactly the entries seen; any listed later stay for the next advance)
/// and read again, with `read_here`: the step run a completion in this transaction made
/// final, which PostgreSQL does not list (`claims::FinalStepNews`). A listed id is read
/// whatever run it names: the caller's copy refuses a stranger (and then reads every step).
pub(crate) async fn take_changed_steps(
    tx: &mut Tx<'_>,
    run_id: i64,
    read_here: Option<i64>,
) -> anyhow::Result<Vec<StepRunRow>> {
    if tx.is_postgres() {
        // Other transactions may list changes of the run meanwhile (the sweeper ends
        // attempts without the run's lock): one statement takes exactly what it reads.
        // The ids as one array: the step runs are found by their key, where a join with
        // the `WITH`'s rows (of unknown number to the planner) may scan the whole table.
        // `read_here` joins the array (a NULL element matches nothing).
        let sql = format!(
            "WITH changed AS ({EMPTY_CHANGES} RETURNING step_run_id) \
             SELECT {STEP_STATE_COLUMNS} FROM step_runs \
             WHERE id = ANY(ARRAY(SELECT step_run_id FROM changed) || $2::BIGINT)"
        );
        return tx
            .rows(Statement::new(&sql).bind(run_id).bind(read_here))
            .await;
    }
    // SQLite has no data-modifying `WITH`, and needs none: this transaction already wrote
    // (the run's row), so it holds the database's one write lock and nothing can list a
    // change between the read and the delete.
    let sql = format!(
        "SELECT {STEP_STATE_COLUMNS} FROM step_runs \
         WHERE id IN (SELECT step_run_id FROM step_changes WHERE run_id = $1) OR id = $2"
    );
    let rows = tx
        .rows(Statement::new(&sql).bind(run_id).bind(read_here))
        .await?;
    tx.execute(Statement::new(EMPTY_CHANGES).bind(run_id))
        .await?;
    Ok(rows)
}

impl Store {
    /// Records the space of the change list's taken rows as free for new ones (PostgreSQL;
    /// nothing on SQLite, which reuses a deleted row's space at once). It never waits for a
    /// lock (see the module's invariants).
    pub async fn tidy_change_list(&self) -> anyhow::Result<()> {
        if self.backend() == "postgres" {
            // Outside any transaction, which a `VACUUM` cannot run in.
            self.execute(Statement::new(
                "VACUUM (SKIP_LOCKED, TRUNCATE false) step_changes",
            ))
            .await
            .context("VACUUM step_changes")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{bash_run, stores};
    use crate::tx::{Conn, Statement};

    /// PostgreSQL's trigger lists a step run made final unless the transaction that made it
    /// final said it reads that very step run itself (`plue.read_here`, as a completion
    /// that advances sets it); the word lasts for its transaction only. (`advance`'s tests
    /// check that the advance then reads it, on both backends.)
    #[tokio::test]
    async fn a_step_run_made_final_is_listed_unless_its_own_transaction_reads_it() {
        for (store, _dir) in stores().await {
            if store.backend() != "postgres" {
                continue;
            }
            let run_id = bash_run(&store, "three", &["a", "b", "c"]).await;
            let ids: Vec<i64> = store
                .scalars(
                    Statement::new("SELECT id FROM step_runs WHERE run_id = $1 ORDER BY position")
                        .bind(run_id),
                )
                .await
                .unwrap();
            let finish = |id: i64| {
                Statement::new("UPDATE step_runs SET status = 'succeeded' WHERE id = $1").bind(id)
            };
            // One transaction reads `a` itself, and ends `a` and `b`.
            {
                let mut conn = Conn::acquire(&store).await.unwrap();
                let mut tx = conn.begin().await.unwrap();
                tx.execute(
                    Statement::new("SELECT set_config('plue.read_here', $1, true)")
                        .bind(ids[0].to_string()),
                )
                .await
                .unwrap();
                tx.execute(finish(ids[0])).await.unwrap();
                tx.execute(finish(ids[1])).await.unwrap();
                tx.commit().await.unwrap();
            }
            // The next one said nothing: `c` is listed.
            store.execute(finish(ids[2])).await.unwrap();
            let listed: Vec<i64> = store
                .scalars(
                    Statement::new(
                        "SELECT step_run_id FROM step_changes WHERE run_id = $1 \
                         ORDER BY step_run_id",
                    )
                    .bind(run_id),
                )
                .await
                .unwrap();
            assert_eq!(
                listed,
                ids[1..],
                "only the step runs no transaction read itself"
            );
        }
    }

    /// Tidying vacuums the change list on PostgreSQL (whose own statistics count it), and
    /// is harmless on SQLite. What a `VACUUM` then saves depends on when pages are pruned,
    /// which no test can fix; the benchmark measures it (bench/README.md, replicas).
    #[tokio::test]
    async fn tidying_vacuums_the_change_list() {
        for (store, _dir) in stores().await {
            if store.backend() != "postgres" {
                store.tidy_change_list().await.unwrap();
                continue;
            }
            // Only this test's VACUUM runs on it.
            store
                .execute(Statement::new(
                    "ALTER TABLE step_changes SET (autovacuum_enabled = false)",
                ))
                .await
                .unwrap();
            let vacuums = "SELECT vacuum_count FROM pg_stat_user_tables \
                           WHERE relname = 'step_changes'";
            let before: i64 = store.one_scalar(Statement::new(vacuums)).await.unwrap();
            store.tidy_change_list().await.unwrap();
            let after: i64 = store.one_scalar(Statement::new(vacuums)).await.unwrap();
            assert_eq!(after, before + 1, "one VACUUM of step_changes");
        }
    }
}
