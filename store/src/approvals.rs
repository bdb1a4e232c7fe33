//! Approval steps in the store: a step run in status `waiting` (no runner, no attempt)
//! that a person approves or rejects through the API, or that fails when its deadline
//! (`ready_at`) passes.
//!
//! Invariants: a decision moves the step run out of `waiting` and records who took it in
//! one transaction, guarded by `status = 'waiting'`, so two concurrent decisions (or a
//! decision racing the deadline) leave exactly one outcome and at most one `approvals` row.
//! The deadline holds whether or not the sweeper has run: the deciding `UPDATE` also
//! requires `ready_at > now`, and a decision that finds the step waiting past its deadline
//! times the step out in the same transaction instead ([`Decided::TimedOut`]).

use plue_types::status::StepStatus;

use super::tx::{Conn, Statement};
use super::Store;

/// A person's decision on a waiting approval step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approved",
            Verdict::Reject => "rejected",
        }
    }
}

/// A stored decision (shown by the API as `api::views::ApprovalView`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct ApprovalRow {
    pub step_id: String,
    pub decision: String,
    pub decided_by: String,
    pub comment: String,
    pub decided_at: i64,
    /// For the review of a step's environment, the environment; `None` for an approval
    /// step.
    pub environment: Option<String>,
}

/// Who decides an environment review, as recorded with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reviewer<'a> {
    pub name: &'a str,
    pub user_id: Option<i64>,
}

/// What [`Store::decide_approval`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// The step run moved to its final status.
    Done,
    /// The run has no step with that id.
    NoStep,
    /// The step is not waiting for a decision (its status is given).
    NotWaiting(StepStatus),
    /// The step's deadline (ms since the epoch) passed before this decision: the step
    /// failed as timed out instead, exactly as the sweeper would have failed it.
    TimedOut { deadline: i64 },
}

/// The reason of an approval step that nobody decided before its deadline.
const TIMED_OUT: &str = "no decision before the approval timed out";

/// How a decision moves a waiting step on (`$1` the run, `$4` the step's id, `$2` the
/// reason, `$3` now), only while it waits and its deadline is ahead, returning the step
/// run and its iteration: it succeeds (an approval approved)...
const SUCCEED: &str = "UPDATE step_runs SET status = 'succeeded', reason = $2, finished_at = $3, \
     started_at = COALESCE(started_at, $3) \
     WHERE run_id = $1 AND step_id = $4 AND status = 'waiting' AND ready_at > $3 \
     RETURNING id, iteration";
/// ... fails (rejected) ...
const FAIL: &str = "UPDATE step_runs SET status = 'failed', reason = $2, finished_at = $3, \
     started_at = COALESCE(started_at, $3) \
     WHERE run_id = $1 AND step_id = $4 AND status = 'waiting' AND ready_at > $3 \
     RETURNING id, iteration";
/// ... or goes back to `pending` to run (its environment's review approved).
const BACK_TO_PENDING: &str =
    "UPDATE step_runs SET status = 'pending', review_passed_at = $3, reason = $2, \
     ready_at = NULL \
     WHERE run_id = $1 AND step_id = $4 AND status = 'waiting' AND ready_at > $3 \
     RETURNING id, iteration";
/// The one way a waiting step times out (`$1` now, `$2` [`TIMED_OUT`]): every waiting step
/// past its deadline, narrowed by `$only`. Returns their runs.
macro_rules! time_out {
    ($only:literal) => {
        concat!(
            "UPDATE step_runs SET status = 'failed', reason = $2, finished_at = $1 \
             WHERE status = 'waiting' AND ready_at <= $1",
            $only,
            " RETURNING run_id"
        )
    };
}
/// [`time_out!`] of every waiting step past its deadline (the sweeper's).
const TIME_OUT_ALL: &str = time_out!("");
/// [`time_out!`] of step run `$3` alone (a decision that came too late). A text of its own,
/// not `($3 IS NULL OR id = $3)`: the store's statements use generic plans
/// (`postgres_pool::PLANNING`), which could not use the primary key for that.
const TIME_OUT_ONE: &str = time_out!(" AND id = $3");

/// What a decision records besides the step's new status, by the gate it decides.
enum Record<'a> {
    /// An approval step's: an `approvals` row.
    Approval {
        verdict: Verdict,
        by: &'a str,
        comment: &'a str,
    },
    /// An environment review's: an `environment_reviews` row (and, approved, the step
    /// listed as changed).
    Review {
        environment: &'a str,
        verdict: Verdict,
        by: Reviewer<'a>,
        comment: &'a str,
    },
}

/// [`time_out!`] at `now`, of step run `only` or of every waiting step past its deadline.
fn time_out(now: i64, only: Option<i64>) -> Statement<'static> {
    match only {
        Some(id) => Statement::new(TIME_OUT_ONE)
            .bind(now)
            .bind(TIMED_OUT)
            .bind(id),
        None => Statement::new(TIME_OUT_ALL).bind(now).bind(TIMED_OUT),
    }
}

impl Store {
    /// Records `verdict` on the waiting step `step_id` of run `run_id`: approved steps
    /// succeed, rejected ones fail with a reason naming who rejected and why.
    pub async fn decide_approval(
        &self,
        run_id: i64,
        step_id: &str,
        verdict: Verdict,
        by: &str,
        comment: &str,
        now: i64,
    ) -> anyhow::Result<Decided> {
        let (update, reason) = match verdict {
            Verdict::Approve => (SUCCEED, format!("approved by {by}")),
            Verdict::Reject if comment.is_empty() => (FAIL, format!("rejected by {by}")),
            Verdict::Reject => (FAIL, format!("rejected by {by}: {comment}")),
        };
        let record = Record::Approval {
            verdict,
            by,
            comment,
        };
        self.decide_waiting(run_id, step_id, update, &reason, now, record)
            .await
    }

    /// Records `verdict` on the environment review of step `step_id` of run `run_id`
    /// (a step naming `environment` whose gate made it wait): approved, the step goes back
    /// to `pending` with `review_passed_at` set, for the next advance to queue it after the
    /// environment's wait timer; rejected, it fails with a reason naming who and why. Same
    /// guards as [`Store::decide_approval`]: one outcome, the deadline held in the
    /// decision's own transaction. The caller checked that the step is such a review.
    #[allow(clippy::too_many_arguments)] // a decision's facts, each different
    pub async fn decide_review(
        &self,
        run_id: i64,
        step_id: &str,
        environment: &str,
        verdict: Verdict,
        by: Reviewer<'_>,
        comment: &str,
        now: i64,
    ) -> anyhow::Result<Decided> {
        let who = by.name;
        let (update, reason) = match verdict {
            Verdict::Approve => (
                BACK_TO_PENDING,
                format!("environment '{environment}' approved by {who}"),
            ),
            Verdict::Reject if comment.is_empty() => (
                FAIL,
                format!("environment '{environment}' rejected by {who}"),
            ),
            Verdict::Reject => (
                FAIL,
                format!("environment '{environment}' rejected by {who}: {comment}"),
            ),
        };
        let record = Record::Review {
            environment,
            verdict,
            by,
            comment,
        };
        self.decide_waiting(run_id, step_id, update, &reason, now, record)
            .await
    }

    /// A decision on the waiting step `step_id` of run `run_id`, in one transaction that
    /// opens with its write: the step moves out of `waiting` by `update` (with `reason`)
    /// only while it waits and its deadline is ahead; a step found waiting past its
    /// deadline times out instead ([`time_out!`]); the decision is recorded as `record`
    /// says.
    async fn decide_waiting(
        &self,
        run_id: i64,
        step_id: &str,
        update: &'static str,
        reason: &str,
        now: i64,
        record: Record<'_>,
    ) -> anyhow::Result<Decided> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.begin().await?;
        // regression: the deadline was the sweeper's alone, so a decision taken after it
        // and before the sweeper's next pass still won.
        let moved: Option<(i64, i64)> = tx
            .row(
                Statement::new(update)
                    .bind(run_id)
                    .bind(reason)
                    .bind(now)
                    .bind(step_id),
            )
            .await?;
        let Some((id, iteration)) = moved else {
            let found: Option<(i64, String, Option<i64>)> = tx
                .row(
                    Statement::new(
                        "SELECT id, status, ready_at FROM step_runs \
                         WHERE run_id = $1 AND step_id = $2",
                    )
                    .bind(run_id)
                    .bind(step_id),
                )
                .await?;
            let Some((id, status, ready_at)) = found else {
                return Ok(Decided::NoStep);
            };
            let status: StepStatus = status.parse()?;
            if status != StepStatus::Waiting {
                return Ok(Decided::NotWaiting(status));
            }
            // Still waiting, so past its deadline: it times out now, as the sweeper would
            // have timed it out. (A waiting step always has a deadline; one without would
            // still be waiting, and is said to be.)
            if tx.execute(time_out(now, Some(id))).await? != 1 {
                return Ok(Decided::NotWaiting(status));
            }
            tx.commit().await?;
            return Ok(Decided::TimedOut {
                deadline: ready_at.unwrap_or(now),
            });
        };
        match record {
            Record::Approval {
                verdict,
                by,
                comment,
            } => {
                tx.execute(
                    Statement::new(
                        "INSERT INTO approvals (step_run_id, run_id, decision, decided_by, \
                         comment, decided_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(id)
                    .bind(run_id)
                    .bind(verdict.as_str())
                    .bind(by)
                    .bind(comment)
                    .bind(now),
                )
                .await?;
            }
            Record::Review {
                environment,
                verdict,
                by,
                comment,
            } => {
                if verdict == Verdict::Approve {
                    // Back to pending is not a final status, so the trigger that lists
                    // changed step runs does not fire: list it here, or an executor's copy
                    // of the run would still see it waiting.
                    tx.execute(
                        Statement::new(
                            "INSERT INTO step_changes (run_id, step_run_id) VALUES ($1, $2)",
                        )
                        .bind(run_id)
                        .bind(id),
                    )
                    .await?;
                }
                tx.execute(
                    Statement::new(
                        "INSERT INTO environment_reviews (step_run_id, run_id, iteration, \
                         environment, decision, decided_by, user_id, comment, decided_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(id)
                    .bind(run_id)
                    .bind(iteration)
                    .bind(environment)
                    .bind(verdict.as_str())
                    .bind(by.name)
                    .bind(by.user_id)
                    .bind(comment)
                    .bind(now),
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Decided::Done)
    }

    /// Fails every waiting approval step whose deadline has passed; returns the runs they
    /// belong to (to advance).
    pub async fn expire_approvals(&self, now: i64) -> anyhow::Result<Vec<i64>> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.autocommit().await?;
        let mut runs: Vec<i64> = tx.scalars(time_out(now, None)).await?;
        runs.sort_unstable();
        runs.dedup();
        Ok(runs)
    }

    /// Records who started run `run_id` through the API.
    pub async fn record_triggerer(&self, run_id: i64, who: &str) -> anyhow::Result<()> {
        {
            self.execute(
                Statement::new("INSERT INTO run_triggerers (run_id, triggered_by) VALUES ($1, $2)")
                    .bind(run_id)
                    .bind(who),
            )
            .await?;
            Ok(())
        }
    }

    /// Who started run `run_id` through the API, if it was started that way.
    pub async fn triggerer_of(&self, run_id: i64) -> anyhow::Result<Option<String>> {
        self.scalar(
            Statement::new("SELECT triggered_by FROM run_triggerers WHERE run_id = $1")
                .bind(run_id),
        )
        .await
    }

    /// The decisions taken on a run's approval steps, in the order they were taken.
    pub async fn approvals_of_run(&self, run_id: i64) -> anyhow::Result<Vec<ApprovalRow>> {
        // `position` orders the rows only; the row type ignores it.
        self.rows(
            Statement::new(
                "SELECT s.step_id, a.decision, a.decided_by, a.comment, a.decided_at, \
                 CAST(NULL AS TEXT) AS environment, s.position \
                 FROM approvals a JOIN step_runs s ON s.id = a.step_run_id WHERE a.run_id = $1 \
                 UNION ALL \
                 SELECT s.step_id, e.decision, e.decided_by, e.comment, e.decided_at, \
                 e.environment, s.position \
                 FROM environment_reviews e JOIN step_runs s ON s.id = e.step_run_id \
                 WHERE e.run_id = $1 ORDER BY decided_at, position",
            )
            .bind(run_id),
        )
        .await
    }
}
