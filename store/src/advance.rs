//! Advancing a run: in one transaction holding the run's lock, the step runs that changed
//! since the caller's copy of the run ([`KnownSteps`]) are read, the outputs the executor
//! asks for loaded, and its decisions ([`StepChange`]) applied; [`Store::complete_and_advance`]
//! first ends an attempt of the run in that same transaction, and after the advance claims
//! the completing runner's next attempt in it too.
//!
//! Invariants:
//! - Lock order: the run's concurrency group's row (if its plan names one), then the run's
//!   row (`UPDATE runs SET advances = advances + 1`, which also counts the advance for
//!   [`KnownSteps`]), then its step runs and attempts. A completion applied here takes the
//!   run's row before its attempt's, so it waits where every advance waits and never holds
//!   an attempt another advance of the run wants.
//! - Whatever fails (an error, a repeated report) leaves nothing written: the completion,
//!   the advance and the completing runner's next claim commit together or not at all.
//! - The next claim made here takes no run's row (it skips step runs other claimers hold:
//!   `claims`); it may wait only for the runner's own row (its `idle` mark when there is
//!   nothing to take), which no transaction holds while it waits for a run's row. The run
//!   it claims from is marked `running` after the commit, as every claim's is, and nothing
//!   after the commit fails the call: a committed claim always reaches its caller.
//! - A step run only moves forward, every update naming the states it may leave (see
//!   `runs`); a review loop's step runs go back once per iteration.

use std::collections::BTreeMap;

use sqlx::Row;

use super::claims::{claim_in, complete_in, PG_CLAIM, RUNNER_IDLE, SQLITE_CLAIM};
use super::groups::{promote, relock_group};
use super::runs::{step_states_by_id, STEP_STATE_COLUMNS};
use super::{
    now_ms, on_db, Advanced, AttemptEnd, Claimed, CompletedAttempt, Db, KnownSteps, RunSnapshot,
    StepAfter, StepChange, StepRunRow, Store,
};

/// Commit status state and description for a run's final status.
fn final_status(status: &str, reason: Option<&str>) -> (&'static str, String) {
    match status {
        "succeeded" => ("success", "Plue run succeeded".to_string()),
        "failed" => (
            "failure",
            format!("Plue run failed: {}", reason.unwrap_or("a step failed")),
        ),
        _ => ("error", format!("Plue run {status}")),
    }
}

/// Moves a step run to a final status if it is in one of the two `from` states (a macro
/// rather than a function so it type-checks once per backend). Its dispatch document, read
/// only by claims, is dropped.
macro_rules! finish_step {
    ($tx:expr, $id:expr, $status:expr, $reason:expr, [$from1:expr, $from2:expr], $now:expr) => {
        sqlx::query(
            "UPDATE step_runs SET status = $2, reason = $3, finished_at = $4, action = NULL \
             WHERE id = $1 AND status IN ($5, $6)",
        )
        .bind($id)
        .bind($status)
        .bind($reason)
        .bind($now)
        .bind($from1)
        .bind($from2)
        .execute($tx)
        .await?
    };
}

/// Reads the run's group (a run's group never changes), so that the transaction can lock the
/// group before the run: see `groups`' lock order. A run whose plan names no group has none:
/// no read on that (hot) path.
macro_rules! group_of {
    ($pool:expr, $run_id:expr, $in_group:expr) => {
        if $in_group {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT concurrency_group_id FROM runs WHERE id = $1",
            )
            .bind($run_id)
            .fetch_optional($pool)
            .await?
            .flatten()
        } else {
            None
        }
    };
}

/// The run's lock, and one more advance counted (see [`KnownSteps`]): the run's row as the
/// advance reads it, or `None` when the run is final.
macro_rules! lock_run {
    ($tx:ident, $run_id:expr) => {
        sqlx::query(
            "UPDATE runs SET advances = advances + 1 \
             WHERE id = $1 AND status IN ('pending', 'queued', 'running') \
             RETURNING advances, status, cancel_requested, cancel_reason, max_parallel",
        )
        .bind($run_id)
        .fetch_optional(&mut *$tx)
        .await?
    };
}

/// The advance of run `$run_id` inside `$tx`, which holds the run's lock (`$row`, from
/// [`lock_run!`]); evaluates to what it did. The caller commits.
macro_rules! advance_locked {
    ($tx:ident, $run_id:expr, $group_id:expr, $row:expr, $known:expr, $wanted:expr, $decide:expr, $now:expr) => {{
        let run_id: i64 = $run_id;
        let group_id: Option<i64> = $group_id;
        let row = $row;
        let known: Option<KnownSteps> = $known;
        let (wanted, decide) = ($wanted, $decide);
        let now: i64 = $now;
        let step_sql =
            format!("SELECT {STEP_STATE_COLUMNS} FROM step_runs WHERE run_id = $1 ORDER BY position");
        'advanced: {
                let advances: i64 = row.try_get("advances")?;
                let cancel_requested: bool = row.try_get("cancel_requested")?;
                if row.try_get::<String, _>("status")? == "pending" && !cancel_requested {
                    // Waiting for its group: nothing of it may start.
                    break 'advanced Advanced::default();
                }
                // The step runs that became final since they were last read: taken from the
                // list (exactly the entries seen; any committed later stay for the next
                // advance), then read again below.
                let changed: Vec<i64> = sqlx::query_scalar(
                    "DELETE FROM step_changes WHERE run_id = $1 RETURNING step_run_id",
                )
                .bind(run_id)
                .fetch_all(&mut *$tx)
                .await?;
                // A run being cancelled is read whole: cancelling treats a queued step (ended
                // here) and a claimed or running one (ended by its runner) differently, and the
                // copy does not tell them apart.
                let mut known = known.filter(|k| k.follows(advances) && !cancel_requested);
                let mut steps_read = 0;
                if let Some(k) = known.as_mut() {
                    let rows = step_states_by_id!(&mut *$tx, run_id, &changed);
                    steps_read += rows.len();
                    if rows.len() != changed.iter().collect::<std::collections::BTreeSet<_>>().len()
                        || !k.refresh(rows)
                    {
                        known = None;
                    }
                }
                let (steps, known) = match known {
                    Some(mut k) => (k.take_steps(), Some(k)),
                    None => {
                        let steps: Vec<StepRunRow> =
                            sqlx::query_as(&step_sql).bind(run_id).fetch_all(&mut *$tx).await?;
                        steps_read += steps.len();
                        (steps, None)
                    }
                };
                let mut snapshot = RunSnapshot {
                    run_id,
                    cancel_requested,
                    cancel_reason: row.try_get("cancel_reason")?,
                    max_parallel: row.try_get("max_parallel")?,
                    steps,
                    outputs: BTreeMap::new(),
                };
                for (step_run_id, iteration) in wanted(&snapshot) {
                    let outputs: Option<String> = sqlx::query_scalar(
                        "SELECT outputs FROM step_outputs \
                         WHERE step_run_id = $1 AND run_id = $2 AND iteration = $3",
                    )
                    .bind(step_run_id)
                    .bind(run_id)
                    .bind(iteration)
                    .fetch_optional(&mut *$tx)
                    .await?;
                    snapshot
                        .outputs
                        .insert((step_run_id, iteration), outputs.unwrap_or_else(|| "{}".into()));
                }
                let mut advanced = Advanced {
                    steps_read,
                    ..Advanced::default()
                };
                let changes = decide(&snapshot);
                let mut applied = Vec::with_capacity(changes.len());
                for change in changes {
                    let took_effect = match &change {
                        StepChange::Queue { step_run_id, dispatch, ready_at, timeout_ms } => {
                            let queued = sqlx::query(
                                "UPDATE step_runs SET status = 'queued', action = $2, ready_at = $3, \
                                 timeout_ms = $4 WHERE id = $1 AND status = 'pending'",
                            )
                            .bind(step_run_id)
                            .bind(dispatch)
                            .bind(ready_at)
                            .bind(timeout_ms)
                            .execute(&mut *$tx)
                            .await?
                            .rows_affected() as usize;
                            advanced.queued += queued;
                            queued == 1
                        }
                        StepChange::Skip { step_run_id, reason } => {
                            finish_step!(&mut *$tx, step_run_id, "skipped", reason, ["pending", "pending"], now)
                                .rows_affected() == 1
                        }
                        StepChange::Fail { step_run_id, reason } => {
                            finish_step!(&mut *$tx, step_run_id, "failed", reason, ["pending", "pending"], now)
                                .rows_affected() == 1
                        }
                        StepChange::Cancel { step_run_id } => {
                            let cancelled = finish_step!(&mut *$tx, step_run_id, "cancelled", "cancelled", ["pending", "queued"], now)
                                .rows_affected()
                                + finish_step!(&mut *$tx, step_run_id, "cancelled", "cancelled", ["waiting", "waiting"], now)
                                    .rows_affected();
                            cancelled == 1
                        }
                        StepChange::Wait { step_run_id, deadline } => {
                            sqlx::query(
                                "UPDATE step_runs SET status = 'waiting', ready_at = $2, started_at = $3 \
                                 WHERE id = $1 AND status = 'pending'",
                            )
                            .bind(step_run_id)
                            .bind(deadline)
                            .bind(now)
                            .execute(&mut *$tx)
                            .await?
                            .rows_affected() == 1
                        }
                        StepChange::Loop { step_run_ids, iteration, reason } => {
                            let mut went_back = 0;
                            for step_run_id in step_run_ids {
                                // Attempts keep counting (their logs stay apart); retries count
                                // from `iteration_base`.
                                went_back += sqlx::query(
                                    "UPDATE step_runs SET status = 'pending', iteration = $2, \
                                     iteration_base = attempts, reason = $3, exit_code = NULL, \
                                     action = NULL, ready_at = NULL, timeout_ms = NULL, \
                                     started_at = NULL, finished_at = NULL, review_passed_at = NULL \
                                     WHERE id = $1 AND iteration = $2 - 1 \
                                     AND status IN ('succeeded', 'failed', 'skipped')",
                                )
                                .bind(step_run_id)
                                .bind(iteration)
                                .bind(reason)
                                .execute(&mut *$tx)
                                .await?
                                .rows_affected();
                            }
                            if went_back > 0 {
                                sqlx::query("UPDATE runs SET loops_taken = loops_taken + 1 WHERE id = $1")
                                    .bind(run_id)
                                    .execute(&mut *$tx)
                                    .await?;
                                advanced.looped = true;
                            }
                            went_back == step_run_ids.len() as u64
                        }
                        StepChange::FinishRun { status, reason } => {
                            let (state, description) = final_status(status, reason.as_deref());
                            sqlx::query(
                                "UPDATE runs SET status = $2, reason = $3, finished_at = $4, \
                                 started_at = COALESCE(started_at, $4) WHERE id = $1",
                            )
                            .bind(run_id)
                            .bind(status)
                            .bind(reason)
                            .bind(now)
                            .execute(&mut *$tx)
                            .await?;
                            sqlx::query(
                                "INSERT INTO status_reports (run_id, state, description, next_attempt_at, created_at) \
                                 SELECT id, $2, $3, $4, $4 FROM runs WHERE id = $1 AND repo_id IS NOT NULL",
                            )
                            .bind(run_id)
                            .bind(state)
                            .bind(description)
                            .bind(now)
                            .execute(&mut *$tx)
                            .await?;
                            // Nothing reads a finished run's changes.
                            sqlx::query("DELETE FROM step_changes WHERE run_id = $1")
                                .bind(run_id)
                                .execute(&mut *$tx)
                                .await?;
                            advanced.finished = true;
                            if let Some(group_id) = group_id {
                                advanced.promoted = promote!(&mut *$tx, group_id);
                            }
                            true
                        }
                    };
                    // A loop that went back only in part did not take effect, yet the rows
                    // it sent back moved: readers of the states are told of every change tried
                    // that may have moved a row (reading one again costs nothing more).
                    if took_effect || matches!(change, StepChange::Loop { .. }) {
                        match &change {
                            StepChange::Queue { step_run_id, .. }
                            | StepChange::Skip { step_run_id, .. }
                            | StepChange::Fail { step_run_id, .. }
                            | StepChange::Cancel { step_run_id }
                            | StepChange::Wait { step_run_id, .. } => advanced.moved.push(*step_run_id),
                            StepChange::Loop { step_run_ids, .. } => {
                                advanced.moved.extend_from_slice(step_run_ids)
                            }
                            StepChange::FinishRun { .. } => {}
                        }
                    }
                    applied.push((change, took_effect));
                }
                advanced.known = KnownSteps::after(known, advances, snapshot.steps, &applied);
            advanced
        }
    }};
}

impl Store {
    /// Applies `decide`'s changes to a run in one transaction holding the run's lock.
    /// `decide` sees the run as it is inside that transaction, with the outputs of the step
    /// runs `wanted` names, as `(step run, iteration)` (given the same snapshot without
    /// outputs), loaded.
    /// `in_group`: whether the run's plan names a concurrency group (only then is the
    /// group's row locked first). `known`: the run's steps as the caller's last advance of
    /// it left them (its [`Advanced::known`]); when still current, only the step runs that
    /// became final since are read again, else every step is.
    pub async fn advance(
        &self,
        run_id: i64,
        in_group: bool,
        known: Option<KnownSteps>,
        wanted: impl FnOnce(&RunSnapshot) -> Vec<(i64, i64)>,
        decide: impl FnOnce(&RunSnapshot) -> Vec<StepChange>,
    ) -> anyhow::Result<Advanced> {
        let now = now_ms();
        on_db!(self, pool => {
            let group_id: Option<i64> = group_of!(pool, run_id, in_group);
            let mut tx = pool.begin().await?;
            if let Some(group_id) = group_id {
                relock_group!(&mut *tx, group_id);
            }
            let Some(row) = lock_run!(tx, run_id) else {
                return Ok(Advanced::default());
            };
            let advanced = advance_locked!(tx, run_id, group_id, row, known, wanted, decide, now);
            tx.commit().await?;
            if advanced.finished {
                self.claimed_runs.forget(run_id);
            }
            Ok(advanced)
        })
    }

    /// Ends attempt `attempt_id` of run `run_id` as [`Store::complete_attempt`] does
    /// (`after` deciding what becomes of its step run), then advances the run as
    /// [`Store::advance`] does, and with `claim_next` (the reporting runner's label sets)
    /// claims the runner's next attempt as [`Store::claim_next`] does — all in one
    /// transaction: one commit where there were three, and the advance reads the step run
    /// the completion just moved. When the attempt was already final nothing is written,
    /// nothing claimed, and `known` comes back (still current). An attempt of another run
    /// is refused, with nothing written. A run already final (or waiting for its group) is
    /// not advanced; the attempt still ends.
    #[allow(clippy::too_many_arguments)]
    pub async fn complete_and_advance(
        &self,
        run_id: i64,
        in_group: bool,
        known: Option<KnownSteps>,
        attempt_id: i64,
        runner_id: Option<i64>,
        end: &AttemptEnd<'_>,
        claim_next: Option<&[String]>,
        after: impl FnOnce(&CompletedAttempt) -> StepAfter,
        wanted: impl FnOnce(&RunSnapshot) -> Vec<(i64, i64)>,
        decide: impl FnOnce(&RunSnapshot) -> Vec<StepChange>,
    ) -> anyhow::Result<CompletedAndAdvanced> {
        let now = now_ms();
        let claimer = match (claim_next, runner_id) {
            (Some(label_sets), Some(runner)) if end.runner_claims_next => Some((runner, label_sets)),
            (None, _) => None,
            _ => anyhow::bail!(
                "attempt {attempt_id}: only the reporting runner, still busy, claims its next attempt"
            ),
        };
        // Per backend: the claim statement and how it takes the label sets differ.
        macro_rules! in_one_transaction {
            ($pool:ident, $claim_sql:expr, $labels:expr) => {{
                let group_id: Option<i64> = group_of!($pool, run_id, in_group);
                let mut tx = $pool.begin().await?;
                if let Some(group_id) = group_id {
                    relock_group!(&mut *tx, group_id);
                }
                let row = lock_run!(tx, run_id);
                let Some(completed) = complete_in!(tx, attempt_id, runner_id, end, after) else {
                    // A repeat: dropping the transaction rolls back the advance counted above.
                    return Ok(CompletedAndAdvanced {
                        advanced: Advanced {
                            known,
                            ..Advanced::default()
                        },
                        ..CompletedAndAdvanced::default()
                    });
                };
                anyhow::ensure!(
                    completed.run_id == run_id,
                    "attempt {attempt_id} is of run {}, not of run {run_id}",
                    completed.run_id
                );
                let advanced = match row {
                    Some(row) => {
                        advance_locked!(tx, run_id, group_id, row, known, wanted, decide, now)
                    }
                    None => Advanced::default(),
                };
                let next = match claimer {
                    None => None,
                    Some((runner, label_sets)) => {
                        let row = sqlx::query($claim_sql)
                            .bind(now)
                            .bind($labels(label_sets)?)
                            .bind(runner)
                            .bind(false)
                            .fetch_optional(&mut *tx)
                            .await?;
                        match row {
                            Some(row) => Some(Some(claim_in!(self, tx, row, runner, now, false))),
                            None => {
                                // Nothing to take: the runner stops being busy.
                                sqlx::query(RUNNER_IDLE)
                                    .bind(runner)
                                    .bind(now)
                                    .execute(&mut *tx)
                                    .await?;
                                Some(None)
                            }
                        }
                    }
                };
                tx.commit().await?;
                if advanced.finished {
                    self.claimed_runs.forget(run_id);
                }
                let next = match next {
                    Some(Some((claimed, first_of_run))) => {
                        // Committed: the claim is the runner's whatever this says. A run
                        // not marked running now is marked by its next claim.
                        if let Err(error) = self.claimed_first(&claimed, first_of_run, now).await {
                            tracing::warn!(
                                run = claimed.run_id,
                                "marking the run running: {error:#}"
                            );
                        }
                        Some(Some(claimed))
                    }
                    Some(None) => Some(None),
                    None => None,
                };
                Ok(CompletedAndAdvanced {
                    completed: Some(completed),
                    advanced,
                    next,
                })
            }};
        }
        match &self.db {
            Db::Postgres(pool) => in_one_transaction!(pool, PG_CLAIM, |sets: &[String]| {
                anyhow::Ok(sets.to_vec())
            }),
            Db::Sqlite(pool) => in_one_transaction!(pool, SQLITE_CLAIM, |sets: &[String]| {
                serde_json::to_string(sets)
            }),
        }
    }
}

/// What [`Store::complete_and_advance`] did.
#[derive(Debug, Default)]
pub struct CompletedAndAdvanced {
    /// The attempt that ended; `None` (and nothing written) when it was already final.
    pub completed: Option<CompletedAttempt>,
    pub advanced: Advanced,
    /// The attempt the runner claimed next, when it asked: `Some(None)` when there was
    /// nothing to take (the runner is `idle` again).
    pub next: Option<Option<Claimed>>,
}

#[cfg(test)]
mod tests {
    use evaluator::plan::{Plan, Step};

    use crate::testing::{claim_first_step, local_run, stores};
    use crate::{AttemptEnd, Claimed, CompletedAndAdvanced, StepAfter, StepChange, Store};

    /// The end of a succeeded attempt with no outputs, at `at`.
    fn succeeded(at: i64) -> AttemptEnd<'static> {
        AttemptEnd {
            status: "succeeded",
            exit_code: Some(0),
            reason: None,
            at,
            usage: None,
            model: None,
            cost_micros: None,
            has_outputs: false,
            started_at: None,
            runner_claims_next: false,
        }
    }

    fn done() -> StepAfter {
        StepAfter::Final {
            status: "succeeded",
            reason: None,
            exit_code: Some(0),
            outputs: "{}".into(),
        }
    }

    /// A run of steps `a` then `b` with `a` queued and claimed by a new runner `name`:
    /// the run's id, the claim and the runner, with the known copy of the run its advance left.
    async fn claimed_chain(
        store: &Store,
        name: &str,
    ) -> (i64, Claimed, i64, Option<crate::KnownSteps>) {
        let plan = Plan::new(
            "chain",
            vec![Step::bash("a", "true"), Step::bash("b", "true")],
        );
        let json = serde_json::to_string(&plan).unwrap();
        let run_id = store
            .create_run(&local_run(&plan, &json), 4)
            .await
            .unwrap()
            .id;
        let (claimed, runner, known) = claim_first_step(store, run_id, name).await;
        (run_id, claimed, runner, known)
    }

    async fn scalar(store: &Store, sql: &str, id: i64) -> String {
        crate::on_db!(store, pool => sqlx::query_scalar::<_, String>(sql)
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap())
    }

    async fn status_of_attempt(store: &Store, id: i64) -> String {
        scalar(store, "SELECT status FROM attempts WHERE id = $1", id).await
    }

    async fn advances_of(store: &Store, run_id: i64) -> String {
        scalar(
            store,
            "SELECT CAST(advances AS TEXT) FROM runs WHERE id = $1",
            run_id,
        )
        .await
    }

    #[tokio::test]
    async fn the_advance_sees_the_completion_it_commits_with() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let (run_id, claimed, runner, known) = claimed_chain(&store, "r").await;
            let CompletedAndAdvanced {
                completed,
                advanced,
                ..
            } = store
                .complete_and_advance(
                    run_id,
                    false,
                    known,
                    claimed.attempt_id,
                    Some(runner),
                    &succeeded(5),
                    None,
                    |attempt| {
                        assert_eq!(attempt.step_id, "a");
                        done()
                    },
                    |_| Vec::new(),
                    |snapshot| {
                        assert_eq!(
                            snapshot.steps[0].status, "succeeded",
                            "the completion is seen"
                        );
                        vec![StepChange::Queue {
                            step_run_id: snapshot.steps[1].id,
                            dispatch: "{}".into(),
                            ready_at: 5,
                            timeout_ms: 60_000,
                        }]
                    },
                )
                .await
                .unwrap();
            let completed = completed.expect("the attempt ended");
            assert_eq!(completed.step_run_id, claimed.step_run_id, "{backend}");
            assert_eq!(
                (advanced.queued, advanced.known.is_some()),
                (1, true),
                "{backend}"
            );
            assert_eq!(
                status_of_attempt(&store, claimed.attempt_id).await,
                "succeeded"
            );
            let steps = store.step_runs(run_id).await.unwrap();
            let states: Vec<&str> = steps.iter().map(|s| s.status.as_str()).collect();
            assert_eq!(states, ["succeeded", "queued"], "{backend}");
        }
    }

    #[tokio::test]
    async fn a_repeated_report_writes_nothing_and_keeps_the_copy_current() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let (run_id, claimed, runner, known) = claimed_chain(&store, "r").await;
            let end = succeeded(5);
            let complete = |known| {
                store.complete_and_advance(
                    run_id,
                    false,
                    known,
                    claimed.attempt_id,
                    Some(runner),
                    &end,
                    None,
                    |_| done(),
                    |_| Vec::new(),
                    |_| Vec::new(),
                )
            };
            let first = complete(known).await.unwrap();
            assert!(first.completed.is_some(), "{backend}");
            let counted = advances_of(&store, run_id).await;
            let again = complete(first.advanced.known).await.unwrap();
            assert_eq!(again.completed, None, "{backend}: a repeat ends nothing");
            assert_eq!(again.next, None, "{backend}: and claims nothing");
            assert!(
                again.advanced.known.is_some(),
                "{backend}: the copy comes back"
            );
            assert_eq!(
                advances_of(&store, run_id).await,
                counted,
                "{backend}: not counted"
            );
        }
    }

    #[tokio::test]
    async fn an_attempt_of_another_run_is_refused_with_nothing_written() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let (run_id, claimed, runner, _) = claimed_chain(&store, "r").await;
            let (other_run, _, _, _) = claimed_chain(&store, "s").await;
            let before = advances_of(&store, other_run).await;
            let refused = store
                .complete_and_advance(
                    other_run,
                    false,
                    None,
                    claimed.attempt_id,
                    Some(runner),
                    &succeeded(5),
                    None,
                    |_| done(),
                    |_| Vec::new(),
                    |_| panic!("nothing is decided for a refused attempt"),
                )
                .await;
            let error = refused.expect_err("another run's attempt");
            assert!(
                error.to_string().contains(&format!("is of run {run_id}")),
                "{backend}: {error}"
            );
            assert_eq!(
                status_of_attempt(&store, claimed.attempt_id).await,
                "claimed",
                "{backend}"
            );
            assert_eq!(advances_of(&store, other_run).await, before, "{backend}");
        }
    }

    #[tokio::test]
    async fn an_attempt_of_a_final_run_ends_without_an_advance() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let (run_id, claimed, runner, known) = claimed_chain(&store, "r").await;
            crate::on_db!(store, pool => {
                sqlx::query("UPDATE runs SET status = 'cancelled' WHERE id = $1")
                    .bind(run_id)
                    .execute(pool)
                    .await
                    .unwrap();
            });
            let CompletedAndAdvanced {
                completed,
                advanced,
                ..
            } = store
                .complete_and_advance(
                    run_id,
                    false,
                    known,
                    claimed.attempt_id,
                    Some(runner),
                    &succeeded(5),
                    None,
                    |_| done(),
                    |_| panic!("a final run's outputs are not read"),
                    |_| panic!("a final run is not advanced"),
                )
                .await
                .unwrap();
            assert!(completed.is_some(), "{backend}");
            assert_eq!(advanced.queued, 0, "{backend}");
            assert_eq!(
                status_of_attempt(&store, claimed.attempt_id).await,
                "succeeded"
            );
        }
    }

    #[tokio::test]
    async fn the_runner_claims_what_the_advance_queued_in_the_same_transaction() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let (run_id, claimed, runner, known) = claimed_chain(&store, "r").await;
            let end = AttemptEnd {
                runner_claims_next: true,
                ..succeeded(5)
            };
            let labels = [String::new()];
            let complete = |attempt_id, known| {
                store.complete_and_advance(
                    run_id,
                    false,
                    known,
                    attempt_id,
                    Some(runner),
                    &end,
                    Some(&labels[..]),
                    |_| done(),
                    |_| Vec::new(),
                    |snapshot| {
                        snapshot.steps[1..]
                            .iter()
                            .filter(|s| s.status == "pending")
                            .map(|s| StepChange::Queue {
                                step_run_id: s.id,
                                dispatch: "{}".into(),
                                ready_at: 5,
                                timeout_ms: 60_000,
                            })
                            .collect()
                    },
                )
            };
            let first = complete(claimed.attempt_id, known).await.unwrap();
            let next = first
                .next
                .expect("a claim was asked for")
                .expect("b was taken");
            assert_eq!(
                (next.run_id, next.step_id.as_str()),
                (run_id, "b"),
                "{backend}"
            );
            assert_eq!(
                status_of_attempt(&store, next.attempt_id).await,
                "claimed",
                "{backend}"
            );
            let state = "SELECT state FROM runners WHERE id = $1";
            assert_eq!(scalar(&store, state, runner).await, "busy", "{backend}");
            // b's completion finds nothing left to take: the runner is idle again.
            let last = complete(next.attempt_id, first.advanced.known)
                .await
                .unwrap();
            assert_eq!(last.next, Some(None), "{backend}");
            assert_eq!(scalar(&store, state, runner).await, "idle", "{backend}");
        }
    }
}
