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

use anyhow::Context;
use plue_types::status::{RunState, RunStatus, StepStatus};

use super::change_list::{take_changed_steps, EMPTY_CHANGES};
use super::claims::{
    claim_in, complete_in, runner_idle_in, ClaimFor, FinalStepNews, RunnerWas, Takes,
};
use super::groups::{promote, relock_group};
use super::runs::STEP_STATE_COLUMNS;
use super::tx::{Conn, Statement, Tx};
use super::{
    now_ms, Advanced, AttemptEnd, Claimed, CompletedAttempt, KnownSteps, RunSnapshot, StepAfter,
    StepChange, StepRunRow, Store,
};

/// Commit status state and description for a run's final status.
fn final_status(status: RunStatus, reason: Option<&str>) -> (&'static str, String) {
    match status {
        RunStatus::Succeeded => ("success", "Plue run succeeded".to_string()),
        RunStatus::Failed => (
            "failure",
            format!("Plue run failed: {}", reason.unwrap_or("a step failed")),
        ),
        RunStatus::Cancelled => ("error", format!("Plue run {status}")),
    }
}

/// Moves a step run to a final status if it is in one of the `from` states. Its dispatch
/// document, read only by claims, is dropped. How many rows moved (0 or 1).
async fn finish_step(
    tx: &mut Tx<'_>,
    step_run_id: i64,
    status: StepStatus,
    reason: &str,
    from: [StepStatus; 2],
    now: i64,
) -> anyhow::Result<u64> {
    tx.execute(
        Statement::new(
            "UPDATE step_runs SET status = $2, reason = $3, finished_at = $4, action = NULL \
             WHERE id = $1 AND status IN ($5, $6)",
        )
        .bind(step_run_id)
        .bind(status)
        .bind(reason)
        .bind(now)
        .bind(from[0])
        .bind(from[1]),
    )
    .await
}

/// Whether a run's plan names a concurrency group: only a grouped run's transition locks
/// its group's row, first (see `groups`' lock order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// The plan names no group: the hot path, with no read of the run's group.
    Ungrouped,
    Grouped,
}

impl Grouping {
    pub fn of(plan: &evaluator::plan::Plan) -> Self {
        if plan.concurrency.is_some() {
            Grouping::Grouped
        } else {
            Grouping::Ungrouped
        }
    }
}

/// The run's group (a run's group never changes), read before its transaction so that the
/// transaction can lock the group before the run: see `groups`' lock order. A run whose
/// plan names no group has none: no read on that (hot) path.
async fn group_of(conn: &mut Conn, run_id: i64, grouping: Grouping) -> anyhow::Result<Option<i64>> {
    if grouping == Grouping::Ungrouped {
        return Ok(None);
    }
    Ok(conn
        .autocommit()
        .await?
        .scalar::<Option<i64>>(
            Statement::new("SELECT concurrency_group_id FROM runs WHERE id = $1").bind(run_id),
        )
        .await?
        .flatten())
}

/// The run's row as its lock reads it.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct LockedRun {
    advances: i64,
    #[sqlx(try_from = "String")]
    status: RunState,
    cancel_requested: bool,
    cancel_reason: Option<String>,
    max_parallel: i64,
}

impl LockedRun {
    /// Whether an advance holding this lock reads the run's step runs (and so the one a
    /// completion in its transaction made final): not while the run waits for its group.
    fn reads_steps(&self) -> bool {
        self.status != RunState::Pending || self.cancel_requested
    }
}

/// Opens the transition's transaction: the group's lock (if any), then the run's lock and
/// one more advance counted (see [`KnownSteps`]). The run's row as the advance reads it, or
/// `None` when the run is final.
async fn lock_run(
    conn: &mut Conn,
    run_id: i64,
    grouping: Grouping,
) -> anyhow::Result<(Tx<'_>, Option<i64>, Option<LockedRun>)> {
    let group_id = group_of(conn, run_id, grouping).await?;
    let mut tx = conn.begin().await?;
    if let Some(group_id) = group_id {
        relock_group(&mut tx, group_id).await?;
    }
    let run = tx
        .row(
            Statement::new(
                "UPDATE runs SET advances = advances + 1 \
                 WHERE id = $1 AND status IN ('pending', 'queued', 'running') \
                 RETURNING advances, status, cancel_requested, cancel_reason, max_parallel",
            )
            .bind(run_id),
        )
        .await?;
    Ok((tx, group_id, run))
}

/// The step runs the advance decides on: only those that became final since the caller's
/// copy (`known`, when still current) — the change list's, and `read_here`, the step run
/// a completion in this transaction made final ([`FinalStepNews::ReadHere`]) — else every
/// one. With the copy it refreshed, and how many rows it read.
async fn steps_to_decide(
    tx: &mut Tx<'_>,
    run_id: i64,
    run: &LockedRun,
    known: Option<KnownSteps>,
    read_here: Option<i64>,
) -> anyhow::Result<(Vec<StepRunRow>, Option<KnownSteps>, usize)> {
    // A run being cancelled is read whole: cancelling treats a queued step (ended here) and
    // a claimed or running one (ended by its runner) differently, and the copy does not
    // tell them apart.
    let mut known = known.filter(|k| k.follows(run.advances) && !run.cancel_requested);
    let mut steps_read = 0;
    match known.as_mut() {
        Some(k) => {
            let rows = take_changed_steps(tx, run_id, read_here).await?;
            steps_read += rows.len();
            if !k.refresh(rows) {
                known = None;
            }
        }
        // Every step is read below: the list is only emptied.
        None => {
            tx.execute(Statement::new(EMPTY_CHANGES).bind(run_id))
                .await?;
        }
    }
    Ok(match known {
        Some(mut k) => (k.take_steps(), Some(k), steps_read),
        None => {
            let sql = format!(
                "SELECT {STEP_STATE_COLUMNS} FROM step_runs WHERE run_id = $1 ORDER BY position"
            );
            let steps: Vec<StepRunRow> = tx.rows(Statement::new(&sql).bind(run_id)).await?;
            steps_read += steps.len();
            (steps, None, steps_read)
        }
    })
}

/// Applies one of `decide`'s changes; whether it took effect.
async fn apply_change(
    tx: &mut Tx<'_>,
    run_id: i64,
    group_id: Option<i64>,
    change: &StepChange,
    advanced: &mut Advanced,
    now: i64,
) -> anyhow::Result<bool> {
    Ok(match change {
        StepChange::Queue {
            step_run_id,
            dispatch,
            ready_at,
            timeout_ms,
        } => {
            let queued = tx
                .execute(
                    Statement::new(
                        "UPDATE step_runs SET status = 'queued', action = $2, ready_at = $3, \
                         timeout_ms = $4 WHERE id = $1 AND status = 'pending'",
                    )
                    .bind(*step_run_id)
                    .bind(dispatch)
                    .bind(*ready_at)
                    .bind(*timeout_ms),
                )
                .await? as usize;
            advanced.queued += queued;
            queued == 1
        }
        StepChange::Skip {
            step_run_id,
            reason,
        } => {
            let from = [StepStatus::Pending, StepStatus::Pending];
            finish_step(tx, *step_run_id, StepStatus::Skipped, reason, from, now).await? == 1
        }
        StepChange::Fail {
            step_run_id,
            reason,
        } => {
            let from = [StepStatus::Pending, StepStatus::Pending];
            finish_step(tx, *step_run_id, StepStatus::Failed, reason, from, now).await? == 1
        }
        StepChange::Cancel { step_run_id } => {
            let not_started = [StepStatus::Pending, StepStatus::Queued];
            let waiting = [StepStatus::Waiting, StepStatus::Waiting];
            let cancelled = finish_step(
                tx,
                *step_run_id,
                StepStatus::Cancelled,
                "cancelled",
                not_started,
                now,
            )
            .await?
                + finish_step(
                    tx,
                    *step_run_id,
                    StepStatus::Cancelled,
                    "cancelled",
                    waiting,
                    now,
                )
                .await?;
            cancelled == 1
        }
        StepChange::Wait {
            step_run_id,
            deadline,
        } => {
            tx.execute(
                Statement::new(
                    "UPDATE step_runs SET status = 'waiting', ready_at = $2, started_at = $3 \
                     WHERE id = $1 AND status = 'pending'",
                )
                .bind(*step_run_id)
                .bind(*deadline)
                .bind(now),
            )
            .await?
                == 1
        }
        StepChange::Loop {
            step_run_ids,
            iteration,
            reason,
        } => {
            let mut went_back = 0;
            for step_run_id in step_run_ids {
                // Attempts keep counting (their logs stay apart); retries count from
                // `iteration_base`, and claims returned unacknowledged count anew.
                went_back += tx
                    .execute(
                        Statement::new(
                            "UPDATE step_runs SET status = 'pending', iteration = $2, \
                             iteration_base = attempts, unacknowledged = 0, reason = $3, \
                             exit_code = NULL, \
                             action = NULL, ready_at = NULL, timeout_ms = NULL, \
                             started_at = NULL, finished_at = NULL, review_passed_at = NULL \
                             WHERE id = $1 AND iteration = $2 - 1 \
                             AND status IN ('succeeded', 'failed', 'skipped')",
                        )
                        .bind(*step_run_id)
                        .bind(*iteration)
                        .bind(reason),
                    )
                    .await?;
            }
            if went_back > 0 {
                tx.execute(
                    Statement::new("UPDATE runs SET loops_taken = loops_taken + 1 WHERE id = $1")
                        .bind(run_id),
                )
                .await?;
                advanced.looped = true;
            }
            went_back == step_run_ids.len() as u64
        }
        StepChange::FinishRun { status, reason } => {
            let (state, description) = final_status(*status, reason.as_deref());
            tx.execute(
                Statement::new(
                    "UPDATE runs SET status = $2, reason = $3, finished_at = $4, \
                     started_at = COALESCE(started_at, $4) WHERE id = $1",
                )
                .bind(run_id)
                .bind(*status)
                .bind(reason)
                .bind(now),
            )
            .await?;
            tx.execute(
                Statement::new(
                    "INSERT INTO status_reports \
                     (run_id, state, description, next_attempt_at, created_at) \
                     SELECT id, $2, $3, $4, $4 FROM runs WHERE id = $1 AND repo_id IS NOT NULL",
                )
                .bind(run_id)
                .bind(state)
                .bind(&description)
                .bind(now),
            )
            .await?;
            // Nothing reads a finished run's changes.
            tx.execute(Statement::new(EMPTY_CHANGES).bind(run_id))
                .await?;
            advanced.finished = true;
            if let Some(group_id) = group_id {
                advanced.promoted = promote(tx, group_id).await?;
            }
            true
        }
    })
}

/// The advance of run `run_id` inside `tx`, which holds the run's lock (`run`, from
/// [`lock_run`]): what it did. The caller commits.
#[allow(clippy::too_many_arguments)]
async fn advance_locked(
    tx: &mut Tx<'_>,
    run_id: i64,
    group_id: Option<i64>,
    run: LockedRun,
    known: Option<KnownSteps>,
    read_here: Option<i64>,
    wanted: impl FnOnce(&RunSnapshot) -> Vec<(i64, i64)>,
    decide: impl FnOnce(&RunSnapshot) -> Vec<StepChange>,
    now: i64,
) -> anyhow::Result<Advanced> {
    if !run.reads_steps() {
        // Waiting for its group: nothing of it may start.
        return Ok(Advanced::default());
    }
    let (steps, known, steps_read) = steps_to_decide(tx, run_id, &run, known, read_here).await?;
    let mut snapshot = RunSnapshot {
        run_id,
        cancel_requested: run.cancel_requested,
        cancel_reason: run.cancel_reason,
        max_parallel: run.max_parallel,
        steps,
        outputs: BTreeMap::new(),
    };
    for (step_run_id, iteration) in wanted(&snapshot) {
        let outputs: Option<String> = tx
            .scalar(
                Statement::new(
                    "SELECT outputs FROM step_outputs \
                     WHERE step_run_id = $1 AND run_id = $2 AND iteration = $3",
                )
                .bind(step_run_id)
                .bind(run_id)
                .bind(iteration),
            )
            .await?;
        snapshot.outputs.insert(
            (step_run_id, iteration),
            outputs.unwrap_or_else(|| "{}".into()),
        );
    }
    let mut advanced = Advanced {
        steps_read,
        ..Advanced::default()
    };
    let changes = decide(&snapshot);
    let mut applied = Vec::with_capacity(changes.len());
    for change in changes {
        let took_effect = apply_change(tx, run_id, group_id, &change, &mut advanced, now).await?;
        // A loop that went back only in part did not take effect, yet the rows it sent back
        // moved: readers of the states are told of every change tried that may have moved
        // a row (reading one again costs nothing more).
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
    advanced.known = KnownSteps::after(known, run.advances, snapshot.steps, &applied);
    Ok(advanced)
}

/// The attempt a completing runner claims next in its completion's transaction.
#[derive(Debug, Default, Clone, PartialEq)]
pub enum NextClaim {
    /// No claim was asked for: the caller claims, if it wants one.
    #[default]
    NotAsked,
    Claimed(Claimed),
    /// There was nothing to take: the runner is `idle` again.
    NothingToTake,
}

/// The run an advance moves.
#[derive(Debug)]
pub struct RunToAdvance {
    pub run_id: i64,
    /// Whether the run's plan names a concurrency group (only then is the group's row
    /// locked first).
    pub grouping: Grouping,
    /// The run's steps as the caller's last advance of it left them (its
    /// [`Advanced::known`]): when still current, only the step runs that became final since
    /// are read again, else every step is.
    pub known: Option<KnownSteps>,
}

impl RunToAdvance {
    /// A run whose plan names no group, all its steps read.
    pub fn ungrouped(run_id: i64) -> Self {
        RunToAdvance {
            run_id,
            grouping: Grouping::Ungrouped,
            known: None,
        }
    }
}

/// The attempt [`Store::complete_and_advance`] ends, and who reports its end.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    pub attempt_id: i64,
    /// The reporting runner; `None` when the engine ends the attempt itself.
    pub runner_id: Option<i64>,
    pub end: &'a AttemptEnd<'a>,
    /// The reporting runner's next claim, in the same transaction.
    pub claim_next: Option<ClaimNext<'a>>,
}

/// The completing runner's next claim, asked for in [`Store::complete_and_advance`].
#[derive(Debug, Clone, Copy)]
pub struct ClaimNext<'a> {
    pub runner_id: i64,
    /// The runner's label sets (as [`Store::claim`] takes them).
    pub label_sets: &'a [String],
}

impl Store {
    /// Applies `decide`'s changes to a run in one transaction holding the run's lock.
    /// `decide` sees the run as it is inside that transaction, with the outputs of the step
    /// runs `wanted` names, as `(step run, iteration)` (given the same snapshot without
    /// outputs), loaded.
    pub async fn advance(
        &self,
        run: RunToAdvance,
        wanted: impl FnOnce(&RunSnapshot) -> Vec<(i64, i64)>,
        decide: impl FnOnce(&RunSnapshot) -> Vec<StepChange>,
    ) -> anyhow::Result<Advanced> {
        let RunToAdvance {
            run_id,
            grouping,
            known,
        } = run;
        let now = now_ms();
        let mut conn = Conn::acquire(self).await?;
        let (mut tx, group_id, run) = lock_run(&mut conn, run_id, grouping).await?;
        let Some(run) = run else {
            return Ok(Advanced::default());
        };
        let advanced = advance_locked(
            &mut tx, run_id, group_id, run, known, None, wanted, decide, now,
        )
        .await?;
        tx.commit().await?;
        if advanced.finished {
            self.claimed_runs.forget(run_id);
        }
        Ok(advanced)
    }

    /// Ends the completion's attempt (of the run) as [`Store::complete_attempt`] does
    /// (`after` deciding what becomes of its step run), then advances the run as
    /// [`Store::advance`] does, and with the completion's `claim_next` (the reporting
    /// runner and its label sets) claims the runner's next attempt as [`Store::claim_next`]
    /// does — all in one transaction: one commit where there were three, and the advance
    /// reads the step run the completion just moved. When the attempt was already final
    /// nothing is written, nothing claimed, and `known` comes back (still current). An
    /// attempt of another run is refused, with nothing written. A run already final (or
    /// waiting for its group) is not advanced; the attempt still ends.
    pub async fn complete_and_advance(
        &self,
        run: RunToAdvance,
        completion: Completion<'_>,
        after: impl FnOnce(&CompletedAttempt) -> StepAfter,
        wanted: impl FnOnce(&RunSnapshot) -> Vec<(i64, i64)>,
        decide: impl FnOnce(&RunSnapshot) -> Vec<StepChange>,
    ) -> anyhow::Result<CompletedAndAdvanced> {
        let RunToAdvance {
            run_id,
            grouping,
            known,
        } = run;
        let Completion {
            attempt_id,
            runner_id,
            end,
            claim_next,
        } = completion;
        let now = now_ms();
        if let Some(next) = claim_next {
            anyhow::ensure!(
                end.runner_claims_next && runner_id == Some(next.runner_id),
                "attempt {attempt_id}: only the reporting runner, still busy, claims its next \
                 attempt"
            );
        }
        let mut conn = Conn::acquire(self).await?;
        let (mut tx, group_id, run) = lock_run(&mut conn, run_id, grouping).await?;
        // The advance below reads the step run this completion makes final, unless it
        // will not read at all: then the change list keeps it for the run's next advance.
        let news = match &run {
            Some(run) if run.reads_steps() => FinalStepNews::ReadHere,
            _ => FinalStepNews::Listed,
        };
        let completed = complete_in(&mut tx, attempt_id, runner_id, end, news, after).await?;
        let Some(completed) = completed else {
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
        let advanced = match run {
            Some(run) => {
                let read_here = Some(completed.step_run_id);
                advance_locked(
                    &mut tx, run_id, group_id, run, known, read_here, wanted, decide, now,
                )
                .await?
            }
            None => Advanced::default(),
        };
        // The facts of the run the next claim starts, when it is the run's first.
        let mut first_of_run = None;
        let next = match claim_next {
            None => NextClaim::NotAsked,
            Some(next) => {
                let claim = ClaimFor {
                    runner_id: next.runner_id,
                    label_sets: next.label_sets,
                    now,
                    runner_was: RunnerWas::Busy,
                    takes: Takes::AnyStep,
                };
                match claim_in(&mut tx, &self.claimed_runs, &claim).await? {
                    Some(took) => {
                        first_of_run = took.first_of_run;
                        NextClaim::Claimed(took.claimed)
                    }
                    None => {
                        runner_idle_in(&mut tx, next.runner_id, now).await?;
                        NextClaim::NothingToTake
                    }
                }
            }
        };
        tx.commit().await.context("committing the completion")?;
        // Handed back before anything else reaches the database (SQLite's pool has one).
        drop(conn);
        if advanced.finished {
            self.claimed_runs.forget(run_id);
        }
        if let NextClaim::Claimed(claimed) = &next {
            // Committed: the claim is the runner's whatever this says. A run not marked
            // running now is marked by its next claim.
            if let Err(error) = self.claimed_first(claimed, first_of_run, now).await {
                tracing::warn!(run = claimed.run_id, "marking the run running: {error:#}");
            }
        }
        Ok(CompletedAndAdvanced {
            completed: Some(completed),
            advanced,
            next,
        })
    }
}

/// What [`Store::complete_and_advance`] did.
#[derive(Debug, Default)]
pub struct CompletedAndAdvanced {
    /// The attempt that ended; `None` (and nothing written) when it was already final.
    pub completed: Option<CompletedAttempt>,
    pub advanced: Advanced,
    /// The attempt the runner claimed next, when it asked.
    pub next: NextClaim,
}

#[cfg(test)]
mod tests {
    use plue_types::status::{AttemptStatus, StepStatus};

    use crate::testing::{bash_run, claim_first_step, stores};
    use crate::{
        AttemptEnd, ClaimNext, Claimed, CompletedAndAdvanced, Completion, KnownSteps, NextClaim,
        RunToAdvance, StepAfter, StepChange, Store,
    };

    /// The chain's run, with the copy of its steps the caller holds.
    fn ungrouped(run_id: i64, known: Option<KnownSteps>) -> RunToAdvance {
        RunToAdvance {
            known,
            ..RunToAdvance::ungrouped(run_id)
        }
    }

    /// The end of `attempt_id` as runner `runner` reports it, asking for no next claim.
    fn reported<'a>(attempt_id: i64, runner: i64, end: &'a AttemptEnd<'a>) -> Completion<'a> {
        Completion {
            attempt_id,
            runner_id: Some(runner),
            end,
            claim_next: None,
        }
    }

    /// The end of a succeeded attempt with no outputs, at `at`.
    fn succeeded(at: i64) -> AttemptEnd<'static> {
        AttemptEnd {
            status: AttemptStatus::Succeeded,
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
            status: StepStatus::Succeeded,
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
        let run_id = bash_run(store, "chain", &["a", "b"]).await;
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
                    ungrouped(run_id, known),
                    reported(claimed.attempt_id, runner, &succeeded(5)),
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
                    ungrouped(run_id, known),
                    reported(claimed.attempt_id, runner, &end),
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
            assert_eq!(
                again.next,
                NextClaim::NotAsked,
                "{backend}: and claims nothing"
            );
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
                    RunToAdvance::ungrouped(other_run),
                    reported(claimed.attempt_id, runner, &succeeded(5)),
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
                    ungrouped(run_id, known),
                    reported(claimed.attempt_id, runner, &succeeded(5)),
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
                    ungrouped(run_id, known),
                    Completion {
                        attempt_id,
                        runner_id: Some(runner),
                        end: &end,
                        claim_next: Some(ClaimNext {
                            runner_id: runner,
                            label_sets: &labels[..],
                        }),
                    },
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
            let NextClaim::Claimed(next) = first.next else {
                panic!("{backend}: b was not taken: {:?}", first.next);
            };
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
            assert_eq!(last.next, NextClaim::NothingToTake, "{backend}");
            assert_eq!(scalar(&store, state, runner).await, "idle", "{backend}");
        }
    }
}
