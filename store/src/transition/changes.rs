//! How each of the executor's decisions ([`StepChange`]) is written inside a run's
//! transition: one function per kind of change, each update naming the states its row may
//! leave, so a decision that arrives late (another transition moved the row) takes no
//! effect and says so.

use plue_types::status::StepStatus;

use crate::change_list::EMPTY_CHANGES;
use crate::groups::promote;
use crate::tx::{Statement, Tx};
use crate::{Advanced, StepChange};

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

/// Applies one of `decide`'s changes; whether it took effect.
pub(super) async fn apply_change(
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
            let (state, description) = status.commit_status(reason.as_deref());
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
