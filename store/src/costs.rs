//! The money side of `llm` attempts: holding a share of a run's `Plan(budget_usd=)` when
//! an attempt is claimed, and the costs the API and the dashboard show (per attempt, step,
//! run and repository; migration `0020_llm_cost`).
//!
//! Invariants:
//! - What a run's attempts take of its budget is, for a live (claimed or running) attempt,
//!   what it holds (`reserved_usd_micros`, the most its runner lets it spend), and for a
//!   finished one what it cost — or, when its cost is unknown (ended by the engine, its
//!   model unpriced), everything it held (fail closed: unknown spending counts as spent).
//! - [`Store::reserve_budget`] is one statement, written once for both backends, that reads
//!   what the run's other attempts take and sets this attempt's hold, serialised per run:
//!   SQLite runs one writer at a time, and on PostgreSQL the statement runs in a
//!   transaction holding an advisory lock on the run, so two claims of the same run's
//!   steps never both read the same remainder.
//!   Hence the attempts of a run never hold or spend more than its budget together.
//! - Costs are integer micro-dollars; a sum over attempts none of which is priced is
//!   `None` (unknown), not 0.

use anyhow::Context;

use super::tx::{Conn, Statement};
use super::Store;

/// What [`Store::reserve_budget`] gave the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// What the attempt holds now (0: nothing is left).
    pub held: i64,
    /// What the run's other attempts took when it was set (spent or held).
    pub others: i64,
}

/// What [`Store::budget_claimants`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetClaimants {
    /// What the run's other attempts take of its budget (micro-dollars).
    pub taken_by_others: i64,
    /// The run's other steps that hold nothing yet and have not ended, in plan order.
    pub waiting: Vec<String>,
}

/// What the run's other attempts take of its budget (see the module invariants): of run
/// `$run`, all but attempt `$1`; cast, as PostgreSQL sums BIGINTs as NUMERIC.
macro_rules! taken_by_others {
    ($run:literal) => {
        concat!(
            "CAST((SELECT COALESCE(SUM(CASE WHEN a.status IN ('claimed', 'running') \
                 THEN COALESCE(a.reserved_usd_micros, 0) \
                 ELSE COALESCE(a.cost_usd_micros, a.reserved_usd_micros, 0) END), 0) \
             FROM attempts a JOIN step_runs s ON s.id = a.step_run_id \
             WHERE s.run_id = ",
            $run,
            " AND a.id <> $1) AS BIGINT)"
        )
    };
}

/// Sets attempt `$1`'s hold to at most `$2`, at most what run `$3`'s other attempts leave
/// of budget `$4`, never below 0; the two-argument `greatest` and `least` are SQLite's
/// `MAX` and `MIN`, PostgreSQL's `GREATEST` and `LEAST`: the statement's one difference.
macro_rules! reserve {
    ($greatest:literal, $least:literal) => {
        concat!(
            "UPDATE attempts SET reserved_usd_micros = ",
            $greatest,
            "(0, ",
            $least,
            "($2, $4 - ",
            taken_by_others!("$3"),
            ")) WHERE id = $1 RETURNING reserved_usd_micros, ",
            taken_by_others!("$3"),
            " AS others"
        )
    };
}

/// What [`reserve!`] returns.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct Reserved {
    reserved_usd_micros: Option<i64>,
    others: i64,
}

impl Store {
    /// Sets what attempt `attempt_id` of run `run_id` holds of the run's budget
    /// (`budget`, micro-dollars): at most `wanted`, at most what the run's other attempts
    /// leave, never below 0.
    pub async fn reserve_budget(
        &self,
        attempt_id: i64,
        run_id: i64,
        wanted: i64,
        budget: i64,
    ) -> anyhow::Result<Reservation> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.begin().await?;
        if tx.is_postgres() {
            // Serialised per run (SQLite has one writer at a time already).
            tx.execute(
                Statement::new(
                    "SELECT pg_advisory_xact_lock(hashtextextended('plue:budget:' || $1::text, 0))",
                )
                .bind(run_id),
            )
            .await?;
        }
        let reserved: Reserved = tx
            .row(
                Statement::per_backend(reserve!("MAX", "MIN"), reserve!("GREATEST", "LEAST"))
                    .bind(attempt_id)
                    .bind(wanted)
                    .bind(run_id)
                    .bind(budget),
            )
            .await?
            .with_context(|| {
                format!("attempt {attempt_id} to hold a share of run {run_id}'s budget")
            })?;
        tx.commit().await?;
        Ok(Reservation {
            held: reserved.reserved_usd_micros.unwrap_or(0),
            others: reserved.others,
        })
    }

    /// What the run of attempt `attempt_id` has left to share, read just before its hold
    /// is set: what its other attempts take of the budget now (spent or held, see the
    /// module invariants), and its other steps that will want a share and hold nothing yet —
    /// not started (pending, queued, waiting), or claimed with a hold not set yet. A
    /// reading for choosing what to ask of [`Store::reserve_budget`], which checks the
    /// remainder again.
    pub async fn budget_claimants(
        &self,
        attempt_id: i64,
        run_id: i64,
    ) -> anyhow::Result<BudgetClaimants> {
        let taken = concat!("SELECT ", taken_by_others!("$2"));
        let waiting = "SELECT s.step_id FROM step_runs s WHERE s.run_id = $2 \
             AND s.id <> (SELECT step_run_id FROM attempts WHERE id = $1) \
             AND (s.status IN ('pending', 'queued', 'waiting') \
               OR (s.status IN ('claimed', 'running') AND EXISTS (SELECT 1 FROM attempts a \
                 WHERE a.step_run_id = s.id AND a.status IN ('claimed', 'running') \
                 AND a.reserved_usd_micros IS NULL))) \
             ORDER BY s.position";
        let (taken_by_others, waiting) = {
            let taken: i64 = self
                .one_scalar(Statement::new(taken).bind(attempt_id).bind(run_id))
                .await?;
            let waiting: Vec<String> = self
                .scalars(Statement::new(waiting).bind(attempt_id).bind(run_id))
                .await?;
            (taken, waiting)
        };
        Ok(BudgetClaimants {
            taken_by_others,
            waiting,
        })
    }

    /// What the runs of repository `repo_id` cost together (micro-dollars), and how many
    /// tokens they used; `None` when no attempt of them was priced.
    pub async fn repository_cost(&self, repo_id: i64) -> anyhow::Result<Option<i64>> {
        self.one_scalar(Statement::new("SELECT CAST(SUM(a.cost_usd_micros) AS BIGINT) FROM attempts a JOIN step_runs s ON s.id = a.step_run_id \
             JOIN runs r ON r.id = s.run_id WHERE r.repo_id = $1",)
            .bind(repo_id))
        .await
    }
}
