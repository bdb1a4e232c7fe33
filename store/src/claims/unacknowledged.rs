//! Claims that stick: a claim counts only once its runner acknowledged it, and one that was
//! never acknowledged goes back to the queue without using a retry.
//!
//! A polling runner's claim is written with `attempts.acked_at` unset; its runner
//! acknowledges it by accepting the assignment ([`Store::acknowledge_claim`], before it
//! runs anything) or by starting it (`Store::start_attempt`). A busy runner's claim, made
//! with its completion, is acknowledged as it is made (the runner just spoke). The sweeper
//! returns what stays unacknowledged past the engine's window ([`Store::return_unacknowledged`]):
//! a long-poll the engine held for a runner that hung meanwhile was not proof of life, and
//! the step it was handed was handed into a socket nobody reads.
//!
//! Invariants:
//! - A claim is acknowledged or returned, never both: both statements name the state they
//!   leave (`status = 'claimed' AND acked_at IS NULL` to return; `status IN ('claimed',
//!   'running')` to acknowledge) and lock the attempt's row, so whichever commits first
//!   wins and the other changes nothing. A runner whose acknowledgement lost runs nothing.
//! - A returned claim uses no retry: its attempt ends `unacknowledged` (never `failed`), its
//!   step run goes back to `queued` as ready as it was, and `step_runs.unacknowledged`
//!   counts it, which the retry count subtracts (`claims::CompletedAttempt`). It holds no
//!   share of the run's budget: its runner ran nothing of it.
//! - The runner of a returned claim becomes suspect (`runners.suspect_since`) and claims
//!   nothing until a heartbeat or a new poll of its own clears the mark
//!   (`claims::statements::runner_may_claim!`).
//! - Lock order as every transition's: the attempt, its step run, then the runner.

use plue_types::status::AttemptStatus;

use super::super::tx::{Conn, Statement, Tx};
use super::super::Store;

/// What became of a runner's acknowledgement of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledgement {
    /// The claim stands: acknowledged now, or before (an acknowledgement sent again).
    Counted,
    /// The attempt is not the runner's to run any more: it was returned unacknowledged (or
    /// ended otherwise) first. The runner must run nothing of it.
    Refused,
}

/// Why a claim goes back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered<'a> {
    /// Its runner did not acknowledge it within `window_ms` of the claim.
    Within { window_ms: i64 },
    /// Its runner ended before it acknowledged the claim: declared lost (`runner lost`), or
    /// seen dying by its pool (`runner exited: signal 9`).
    RunnerEnded(&'a str),
}

impl Unanswered<'_> {
    /// The attempt's (and the step run's) reason, naming the runner.
    fn reason(self, runner: &str) -> String {
        match self {
            Unanswered::Within { window_ms } => format!(
                "runner {runner} did not acknowledge the claim within {}: the step went back \
                 to the queue (no retry used)",
                seconds(window_ms)
            ),
            Unanswered::RunnerEnded(how) => format!(
                "runner {runner} ended before it acknowledged the claim ({how}): the step went \
                 back to the queue (no retry used)"
            ),
        }
    }
}

/// `1.5 s`, `5 s`: a window for people.
fn seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// A claim [`Store::return_unacknowledged`] returned to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedClaim {
    pub attempt_id: i64,
    pub run_id: i64,
    pub step_run_id: i64,
    /// The runner that never acknowledged it (now suspect).
    pub runner_id: i64,
}

/// A claim returned unacknowledged, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct UnacknowledgedRow {
    pub attempt_id: i64,
    pub run_id: i64,
    /// The run's repository (`None`: a local run), for who may read it.
    pub repo_id: Option<i64>,
    pub step_id: String,
    /// The attempt's number.
    pub number: i64,
    pub runner_id: i64,
    pub runner_name: String,
    pub claimed_at: i64,
    /// When it went back to the queue.
    pub returned_at: i64,
}

/// A claim still waiting for its runner's acknowledgement past the window.
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
struct Overdue {
    id: i64,
    runner_id: i64,
    runner_name: String,
}

/// What returning one claim found.
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
struct Ended {
    step_run_id: i64,
    run_id: i64,
}

impl Store {
    /// Runner `runner_id` acknowledges its claim of attempt `attempt_id` (it accepted the
    /// assignment a poll handed it) at `now`: [`Acknowledgement::Counted`] when the claim
    /// stands, [`Acknowledgement::Refused`] when it was returned (or ended) first.
    pub async fn acknowledge_claim(
        &self,
        attempt_id: i64,
        runner_id: i64,
        now: i64,
    ) -> anyhow::Result<Acknowledgement> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.autocommit().await?;
        // One statement: the attempt's row is locked by it as by a return, and an
        // acknowledgement sent again still finds the attempt its runner's and live.
        let live: Option<i64> = tx
            .scalar(
                Statement::new(
                    "UPDATE attempts SET acked_at = COALESCE(acked_at, $3) \
                     WHERE id = $1 AND runner_id = $2 AND status IN ('claimed', 'running') \
                     RETURNING id",
                )
                .bind(attempt_id)
                .bind(runner_id)
                .bind(now),
            )
            .await?;
        Ok(match live {
            Some(_) => Acknowledgement::Counted,
            None => Acknowledgement::Refused,
        })
    }

    /// Returns to the queue every claim still unacknowledged that was made before
    /// `claimed_before` (of runner `runner`, when given), each in its own transaction: the
    /// attempt ends `unacknowledged` with `why` as its reason, its step run is `queued`
    /// again without using a retry, its runner becomes suspect. What it returned; a claim
    /// acknowledged meanwhile is left as it is.
    pub async fn return_unacknowledged(
        &self,
        claimed_before: i64,
        runner: Option<i64>,
        why: Unanswered<'_>,
        now: i64,
    ) -> anyhow::Result<Vec<ReturnedClaim>> {
        let mut conn = Conn::acquire(self).await?;
        let overdue: Vec<Overdue> = {
            let mut tx = conn.autocommit().await?;
            // Read through the live attempts' index (`attempts_active`): `claimed` is one
            // of its states.
            tx.rows(
                Statement::new(
                    "SELECT a.id, a.runner_id, r.name AS runner_name FROM attempts a \
                     JOIN runners r ON r.id = a.runner_id \
                     WHERE a.status = 'claimed' AND a.acked_at IS NULL AND a.claimed_at < $1 \
                     AND ($2 IS NULL OR a.runner_id = $2) ORDER BY a.id",
                )
                .bind(claimed_before)
                .bind(runner),
            )
            .await?
        };
        let mut returned = Vec::new();
        for claim in overdue {
            let mut tx = conn.begin().await?;
            let reason = why.reason(&claim.runner_name);
            if let Some(ended) = return_one(&mut tx, &claim, &reason, now).await? {
                tx.commit().await?;
                returned.push(ReturnedClaim {
                    attempt_id: claim.id,
                    run_id: ended.run_id,
                    step_run_id: ended.step_run_id,
                    runner_id: claim.runner_id,
                });
            }
        }
        Ok(returned)
    }

    /// The claims most recently returned unacknowledged, newest first, at most `limit`.
    pub async fn unacknowledged_claims(
        &self,
        limit: i64,
    ) -> anyhow::Result<Vec<UnacknowledgedRow>> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.autocommit().await?;
        // `attempts_unacknowledged` (migration 0044) orders them.
        tx.rows(
            Statement::new(
                "SELECT a.id AS attempt_id, s.run_id, runs.repo_id, s.step_id, a.number, \
                 a.runner_id, r.name AS runner_name, a.claimed_at, a.finished_at AS returned_at \
                 FROM attempts a JOIN step_runs s ON s.id = a.step_run_id \
                 JOIN runs ON runs.id = s.run_id JOIN runners r ON r.id = a.runner_id \
                 WHERE a.status = 'unacknowledged' ORDER BY a.finished_at DESC, a.id DESC \
                 LIMIT $1",
            )
            .bind(limit),
        )
        .await
    }
}

/// Returns `claim` inside `tx` (see [`Store::return_unacknowledged`]); `None` when it was
/// acknowledged or ended meanwhile, and nothing was written.
async fn return_one(
    tx: &mut Tx<'_>,
    claim: &Overdue,
    reason: &str,
    now: i64,
) -> anyhow::Result<Option<Ended>> {
    let ended: Option<Ended> = tx
        .row(
            Statement::new(
                "UPDATE attempts SET status = $2, finished_at = $3, reason = $4, \
                 reserved_usd_micros = NULL \
                 WHERE id = $1 AND status = 'claimed' AND acked_at IS NULL \
                 RETURNING step_run_id, \
                 (SELECT s.run_id FROM step_runs s WHERE s.id = step_run_id) AS run_id",
            )
            .bind(claim.id)
            .bind(AttemptStatus::Unacknowledged)
            .bind(now)
            .bind(reason),
        )
        .await?;
    let Some(ended) = ended else {
        return Ok(None);
    };
    // As ready as it was: it keeps its place at the head of the queue.
    tx.execute(
        Statement::new(
            "UPDATE step_runs SET status = 'queued', reason = $2, \
             unacknowledged = unacknowledged + 1 WHERE id = $1 AND status = 'claimed'",
        )
        .bind(ended.step_run_id)
        .bind(reason),
    )
    .await?;
    tx.execute(
        Statement::new(
            "UPDATE runners SET suspect_since = COALESCE(suspect_since, $2) \
             WHERE id = $1 AND state IN ('idle', 'busy')",
        )
        .bind(claim.runner_id)
        .bind(now),
    )
    .await?;
    Ok(Some(ended))
}

#[cfg(test)]
mod tests;
