//! What the run record ([`crate::api::record`]) reads that no other view needs: the
//! outputs of every round of a run's steps (`step_outputs` keeps one row per step run and
//! review-loop iteration; the executor reads only the rounds a prompt names).

use super::Store;
use crate::tx::Statement;

/// The outputs one step run stored in one round.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct RoundRow {
    pub step_run_id: i64,
    pub iteration: i64,
    /// A JSON object, key → value.
    pub outputs: String,
}

impl Store {
    /// Every round's outputs of run `run_id`'s step runs, by step run and iteration.
    pub async fn rounds_of_run(&self, run_id: i64) -> anyhow::Result<Vec<RoundRow>> {
        self.rows(
            Statement::new(
                "SELECT step_run_id, iteration, outputs FROM step_outputs \
             WHERE run_id = $1 ORDER BY step_run_id, iteration",
            )
            .bind(run_id),
        )
        .await
    }
}
