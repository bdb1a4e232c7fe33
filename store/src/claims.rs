//! Attempts: claiming a queued step run for a runner, marking it started, and completing it
//! (from the runner's report, a lost runner or a timeout).
//!
//! Invariants:
//! - A claim is one statement that moves exactly one step run from `queued` to `claimed`;
//!   on PostgreSQL it skips rows other claimers hold (`FOR UPDATE SKIP LOCKED`), so two
//!   engines never hand out the same attempt; SQLite serialises writers. On PostgreSQL the
//!   same statement inserts the attempt and marks a polling runner busy (one trip).
//! - A polling runner's claim takes effect only with its busy mark, which is written only
//!   while the runner is live and holds the runner's row to the commit: a runner retired
//!   or declared lost after the claim read it live gets no attempt
//!   ([`statements::runner_busy!`]). A busy runner's claim (with its completion) holds the
//!   runner's row the same way, shared ([`statements::PG_CLAIM_BUSY`]), so a retirement
//!   waits for it or wins, never slips between.
//! - A suspect runner (`runners.suspect_since`: a claim of it went unacknowledged, or a
//!   runner of its host was lost) claims nothing until it proves alive
//!   ([`statements::runner_may_claim!`]).
//! - A claim counts only once its runner acknowledged it (`attempts.acked_at`): a busy
//!   runner's claim is acknowledged by the completion it answers (the runner just spoke);
//!   a polling runner's by its acceptance or its start. One never acknowledged is returned
//!   to the queue without using a retry ([`unacknowledged`]), which the retry count leaves
//!   out (`step_runs.unacknowledged`, subtracted in [`CompletedAttempt::number_in_iteration`]).
//! - An attempt is completed at most once: the completing `UPDATE` only matches attempts
//!   still `claimed` or `running`, so a repeated report, or a report racing a `runner lost`
//!   verdict, changes nothing the second time.
//! - A step run marked `needs_secrets` — it holds secrets, or takes the workspace or
//!   artifacts of a step that did — is claimed only by a runner allowed secrets.
//! - A step run of a fork's run (`runs.secrets_allowed` false: a pull request from a fork)
//!   is claimed only by a runner that accepts forks (`runners.accept_forks`, fixed at its
//!   registration from its token), so a fork's code never reaches a runner kept for
//!   trusted work (a `zone=prod` token's) whatever labels the fork's plan asks for.
//! - A claim never takes the run's row lock (the executor holds it while it reads steps),
//!   so claims and the executor cannot deadlock; the claim a completion makes in its run's
//!   advance (a run's `transition`) runs while that advance holds its own
//!   run's lock, and waits for no run's lock either.
//! - Of a run, a claim reads its workspace document and its summoned context (an issue's
//!   or a comment's, else none) and moves it from `queued` to `running` only the first
//!   time this process claims one of its steps ([`ClaimedRuns`]): none of them changes
//!   again (a run's event and context are written once, at its creation), so later claims
//!   of the run skip those statements.
//!
//! Why one file past ~600 lines: claiming, starting and completing an attempt are one state
//! machine whose statements must agree on the same row locks on both backends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use plue_types::protocol::Usage;
use plue_types::status::{AttemptStatus, StepStatus};

use super::tx::{Conn, Statement, Tx};
use super::Store;

pub(crate) mod statements;
pub(crate) mod unacknowledged;

use statements::{
    PG_CLAIM_BUSY, PG_CLAIM_IDLE, PG_READY_FOR_OTHERS, PG_READY_IN_SCOPE, RUNNER_BUSY,
    SQLITE_CLAIM, SQLITE_NEW_ATTEMPT, SQLITE_NEW_ATTEMPT_ACKED, SQLITE_READY_FOR_OTHERS,
    SQLITE_READY_IN_SCOPE,
};

/// A step run just claimed by a runner.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub attempt_id: i64,
    pub step_run_id: i64,
    pub run_id: i64,
    pub step_id: String,
    pub number: i64,
    /// The dispatch document the executor stored when it queued the step.
    pub dispatch: String,
    /// The run's workspace document.
    pub workspace: String,
    /// The run's stored context (JSON) when an issue or a comment started it, else `None`:
    /// what its steps get as `PLUE_ISSUE_*` variables (as [`Store::summoned_context`]).
    pub summoned_context: Option<String>,
}

/// An attempt that just ended, as the executor sees it when deciding what follows.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedAttempt {
    pub run_id: i64,
    pub step_run_id: i64,
    pub step_id: String,
    pub number: i64,
    /// The step run's review-loop iteration (1 outside loops).
    pub iteration: i64,
    /// The attempt's number within its iteration, claims returned unacknowledged left out
    /// (retries count these).
    pub number_in_iteration: i64,
    pub cancel_requested: bool,
    /// When the step run's first attempt started (ms), if one did.
    pub started_at: Option<i64>,
    /// When this attempt's step run became ready and when the attempt started, if its start
    /// was recorded by this completion (the runner folded it in, see
    /// `Completion::started_ms_ago`): what a start report would have measured.
    pub folded_start: Option<(Option<i64>, i64)>,
    /// Bytes of outputs (JSON) the run's step runs have stored so far.
    pub run_outputs_bytes: i64,
}

/// What becomes of the step run after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum StepAfter {
    Final {
        status: StepStatus,
        reason: Option<String>,
        exit_code: Option<i64>,
        outputs: String,
    },
    Retry {
        ready_at: i64,
        reason: String,
    },
}

/// The attempt's final record.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEnd<'a> {
    /// A final status: `succeeded`, `failed` or `cancelled`.
    pub status: AttemptStatus,
    pub exit_code: Option<i64>,
    pub reason: Option<&'a str>,
    pub at: i64,
    /// Tokens an `llm` attempt used; stored on the attempt and added to its step run's.
    pub usage: Option<Usage>,
    /// The model an `llm` attempt called and what its usage cost (micro-dollars, by the
    /// engine's price table; `None`: unpriced): see `store::costs`.
    pub model: Option<&'a str>,
    pub cost_micros: Option<i64>,
    /// Whether the attempt reported outputs: only then is the run's stored total
    /// ([`CompletedAttempt::run_outputs_bytes`]) summed, a read that grows with the run.
    pub has_outputs: bool,
    /// When the attempt started, by the runner's account (ms); kept only where no start
    /// was recorded yet, and never earlier than the claim.
    pub started_at: Option<i64>,
    /// The reporting runner takes its next attempt in the same request
    /// ([`Store::claim_next`]): it stays `busy` instead of turning `idle` for an instant.
    pub runner_claims_next: bool,
}

/// Who an attempt belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct AttemptOwner {
    pub runner_id: i64,
    pub step_run_id: i64,
    pub number: i64,
    pub run_id: i64,
}

/// Runs this process has claimed a step of: their workspace document and summoned context
/// (which never change) and the knowledge that they are `running` (a run never goes back
/// to `queued`). Bounded: a full map is cleared, which costs each run one more read.
#[derive(Debug, Default)]
pub(crate) struct ClaimedRuns {
    runs: Mutex<HashMap<i64, RunFacts>>,
}

/// What every claim of a run hands over and no claim changes.
#[derive(Debug, Clone)]
pub(crate) struct RunFacts {
    pub(crate) workspace: Arc<str>,
    pub(crate) summoned_context: Option<Arc<str>>,
}

/// At most this many runs are kept in [`ClaimedRuns`].
const CLAIMED_RUNS_LIMIT: usize = 256;

impl ClaimedRuns {
    pub(crate) fn facts(&self, run_id: i64) -> Option<RunFacts> {
        self.lock().get(&run_id).cloned()
    }

    fn remember(&self, run_id: i64, facts: RunFacts) {
        let mut runs = self.lock();
        if runs.len() >= CLAIMED_RUNS_LIMIT {
            runs.clear();
        }
        runs.insert(run_id, facts);
    }

    /// Forgets a run that ended: nothing claims its steps any more.
    pub(crate) fn forget(&self, run_id: i64) {
        self.lock().remove(&run_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, RunFacts>> {
        // Each update is one insert or a clear: a panic cannot leave the map inconsistent.
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Ends a live attempt (of runner `$6`, when given): the one statement of what an ended
/// attempt records, for both backends; only how the attempt's step run and run are read
/// back differs (`$from`, `$join`, `$returning`).
macro_rules! end_attempt {
    ($from:literal, $join:literal, $returning:literal) => {
        concat!(
            "UPDATE attempts SET status = $2, exit_code = $3, reason = $4, finished_at = $5, \
             usage = $7, started_at = COALESCE(attempts.started_at, \
                 CASE WHEN $8 < attempts.claimed_at THEN attempts.claimed_at ELSE $8 END), \
             model = $9, cost_usd_micros = $10 ",
            $from,
            " WHERE attempts.id = $1 AND attempts.status IN ('claimed', 'running') \
               AND ($6 IS NULL OR attempts.runner_id = $6) ",
            $join,
            " ",
            $returning
        )
    };
}

/// SQLite: a `RETURNING` may name only the updated table, so the step run and run are
/// read by subqueries, one a column.
const SQLITE_END_ATTEMPT: &str = end_attempt!(
    "",
    "",
    "RETURNING step_run_id, number, runner_id, started_at, \
     (SELECT s.run_id FROM step_runs s WHERE s.id = step_run_id) AS run_id, \
     (SELECT s.step_id FROM step_runs s WHERE s.id = step_run_id) AS step_id, \
     (SELECT s.started_at FROM step_runs s WHERE s.id = step_run_id) AS step_started_at, \
     (SELECT s.iteration FROM step_runs s WHERE s.id = step_run_id) AS iteration, \
     (SELECT s.iteration_base FROM step_runs s WHERE s.id = step_run_id) AS iteration_base, \
     (SELECT s.unacknowledged FROM step_runs s WHERE s.id = step_run_id) AS unacknowledged, \
     (SELECT s.status FROM step_runs s WHERE s.id = step_run_id) AS step_status, \
     (SELECT s.ready_at FROM step_runs s WHERE s.id = step_run_id) AS ready_at, \
     (SELECT r.cancel_requested FROM step_runs s JOIN runs r ON r.id = s.run_id \
      WHERE s.id = step_run_id) AS cancel_requested"
);

/// PostgreSQL: the step run and run joined once (`UPDATE … FROM`), where SQLite's form
/// costs nine lookups of the step run. With `$11` ([`FinalStepNews::ReadHere`]) it also
/// says, for the rest of its transaction only, that this transaction reads the attempt's
/// step run itself (`plue.read_here`, which the change list's trigger reads: migration
/// 0037).
const PG_END_ATTEMPT: &str = end_attempt!(
    "FROM step_runs s JOIN runs r ON r.id = s.run_id",
    "AND s.id = attempts.step_run_id",
    "RETURNING attempts.step_run_id, attempts.number, attempts.runner_id, \
     attempts.started_at, s.run_id, s.step_id, s.started_at AS step_started_at, \
     s.iteration, s.iteration_base, s.unacknowledged, s.status AS step_status, s.ready_at, \
     r.cancel_requested, set_config('plue.read_here', \
         CASE WHEN $11 THEN CAST(attempts.step_run_id AS TEXT) ELSE '' END, true) AS read_here"
);

/// What a completing `UPDATE attempts … RETURNING` reads of the attempt, its step run and
/// its run.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct EndedAttempt {
    step_run_id: i64,
    number: i64,
    runner_id: i64,
    started_at: Option<i64>,
    run_id: i64,
    step_id: String,
    step_started_at: Option<i64>,
    iteration: i64,
    iteration_base: i64,
    /// Claims of this iteration returned unacknowledged: no retry was used on them.
    unacknowledged: i64,
    #[sqlx(try_from = "String")]
    step_status: StepStatus,
    ready_at: Option<i64>,
    cancel_requested: bool,
}

/// Who learns that a completion made its step run final: the run's advances read the step
/// runs that became final from the change list (`change_list`), or by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FinalStepNews {
    /// The change list has it, for the run's next advance (whichever transaction makes it).
    Listed,
    /// The advance in this same transaction reads the step run by its id, so PostgreSQL
    /// leaves it off the change list (the attempt's end sets `plue.read_here` for the
    /// transaction, which migration 0037's trigger reads); SQLite's trigger lists it all
    /// the same.
    ReadHere,
}

/// An attempt ended inside a transaction whose step run has not yet moved: what
/// `end_attempt_in` read, which only `settle_in` consumes. The caller decides the step
/// run's fate ([`StepAfter`]) from [`EndingAttempt::attempt`] between the two.
#[must_use = "an ended attempt's step run moves only when it is settled"]
#[derive(Debug)]
pub struct EndingAttempt {
    attempt: CompletedAttempt,
    /// When the attempt itself started (as stored), for the step run's own start.
    attempt_started_at: Option<i64>,
    runner_id: i64,
    /// When it ended (`AttemptEnd::at`).
    ended_at: i64,
    /// Its runner claims its next attempt in the same transaction (stays `busy`).
    runner_claims_next: bool,
}

impl EndingAttempt {
    /// The attempt, as the caller decides its step run's fate from it.
    pub fn attempt(&self) -> &CompletedAttempt {
        &self.attempt
    }
}

/// Ends attempt `attempt_id` (of runner `runner_id`, if `Some`) with `end` inside the open
/// transaction `tx`, its usage added to its step run's: the first half of how every
/// attempt ends ([`settle_in`] moves the step run). `news`: who learns of a step run made
/// final ([`FinalStepNews::ReadHere`] only when an advance in `tx` reads it by id). The
/// attempt that ended, or `None` when it was already final (a repeat: the caller must not
/// commit what it wrote before in `tx` as if the attempt had ended).
pub(crate) async fn end_attempt_in(
    tx: &mut Tx<'_>,
    attempt_id: i64,
    runner_id: Option<i64>,
    end: &AttemptEnd<'_>,
    news: FinalStepNews,
) -> anyhow::Result<Option<EndingAttempt>> {
    let usage_json = end.usage.map(|u| serde_json::to_string(&u)).transpose()?;
    let mut end_attempt = Statement::per_backend(SQLITE_END_ATTEMPT, PG_END_ATTEMPT)
        .bind(attempt_id)
        .bind(end.status)
        .bind(end.exit_code)
        .bind(end.reason)
        .bind(end.at)
        .bind(runner_id)
        .bind(&usage_json)
        .bind(end.started_at)
        .bind(end.model)
        .bind(end.cost_micros);
    if tx.is_postgres() {
        end_attempt = end_attempt.bind(news == FinalStepNews::ReadHere);
    }
    let ended: Option<EndedAttempt> = tx.row(end_attempt).await?;
    let Some(ended) = ended else {
        return Ok(None);
    };
    let step_run_id = ended.step_run_id;
    if let Some(usage) = end.usage {
        let before: Option<String> = tx
            .scalar(Statement::new("SELECT usage FROM step_runs WHERE id = $1").bind(step_run_id))
            .await?
            .flatten();
        let total = serde_json::to_string(&add_usage(before.as_deref(), usage))?;
        tx.execute(
            Statement::new("UPDATE step_runs SET usage = $2 WHERE id = $1")
                .bind(step_run_id)
                .bind(&total),
        )
        .await?;
    }
    let run_outputs_bytes = if end.has_outputs {
        // `octet_length` reads the stored length, not the text.
        tx.scalar(
            Statement::new(
                "SELECT CAST(COALESCE(SUM(octet_length(outputs)), 0) AS BIGINT) \
                 FROM step_outputs WHERE run_id = $1",
            )
            .bind(ended.run_id),
        )
        .await?
        .unwrap_or(0)
    } else {
        0
    };
    Ok(Some(EndingAttempt {
        attempt: CompletedAttempt {
            run_id: ended.run_id,
            step_run_id,
            step_id: ended.step_id,
            number: ended.number,
            iteration: ended.iteration,
            number_in_iteration: ended.number - ended.iteration_base - ended.unacknowledged,
            cancel_requested: ended.cancel_requested,
            started_at: ended.step_started_at.or(ended.started_at),
            // A step run still `claimed` never had its start reported.
            folded_start: match ended.started_at {
                Some(at) if ended.step_status == StepStatus::Claimed => Some((ended.ready_at, at)),
                _ => None,
            },
            run_outputs_bytes,
        },
        attempt_started_at: ended.started_at,
        runner_id: ended.runner_id,
        ended_at: end.at,
        runner_claims_next: end.runner_claims_next,
    }))
}

/// Moves the step run of an attempt [`end_attempt_in`] ended as `after` says, and marks
/// its runner idle unless it claims its next attempt in the same transaction: the second
/// half of how every attempt ends. The attempt that ended.
pub(crate) async fn settle_in(
    tx: &mut Tx<'_>,
    ending: EndingAttempt,
    after: StepAfter,
) -> anyhow::Result<CompletedAttempt> {
    let EndingAttempt {
        attempt,
        attempt_started_at,
        runner_id,
        ended_at,
        runner_claims_next,
    } = ending;
    let step_run_id = attempt.step_run_id;
    match after {
        StepAfter::Final {
            status,
            reason,
            exit_code,
            outputs,
        } => {
            let finished = tx
                .execute(
                    // The dispatch document (which may carry a MiB of output variables) is
                    // read only by claims: a final step run drops it — but a failed one,
                    // whose debug sessions (`plue debug`) run it again as it ran.
                    Statement::new(
                        "UPDATE step_runs SET status = $2, reason = $3, exit_code = $4, \
                         finished_at = $5, action = CASE WHEN $2 = 'failed' THEN action END, \
                         started_at = COALESCE(started_at, $6) \
                         WHERE id = $1 AND status IN ('claimed', 'running')",
                    )
                    .bind(step_run_id)
                    .bind(status)
                    .bind(&reason)
                    .bind(exit_code)
                    .bind(ended_at)
                    .bind(attempt_started_at),
                )
                .await?;
            if finished == 1 && outputs != "{}" {
                tx.execute(
                    Statement::new(
                        "INSERT INTO step_outputs (step_run_id, run_id, outputs, iteration) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(step_run_id)
                    .bind(attempt.run_id)
                    .bind(&outputs)
                    .bind(attempt.iteration),
                )
                .await?;
            }
        }
        StepAfter::Retry { ready_at, reason } => {
            tx.execute(
                Statement::new(
                    "UPDATE step_runs SET status = 'queued', ready_at = $2, reason = $3, \
                     started_at = COALESCE(started_at, $4) \
                     WHERE id = $1 AND status IN ('claimed', 'running')",
                )
                .bind(step_run_id)
                .bind(ready_at)
                .bind(&reason)
                .bind(attempt_started_at),
            )
            .await?;
        }
    }
    if !runner_claims_next {
        runner_idle_in(tx, runner_id, ended_at).await?;
    }
    Ok(attempt)
}

/// A busy runner becomes idle at `now`: it has nothing (more) to run.
pub(crate) async fn runner_idle_in(
    tx: &mut Tx<'_>,
    runner_id: i64,
    now: i64,
) -> anyhow::Result<()> {
    tx.execute(
        Statement::new(
            "UPDATE runners SET state = 'idle', state_since = $2 WHERE id = $1 AND state = 'busy'",
        )
        .bind(runner_id)
        .bind(now),
    )
    .await
    .map(drop)
}

/// Who claims, and what.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimFor<'a> {
    pub(crate) runner_id: i64,
    /// The canonical forms of every subset of the runner's labels.
    pub(crate) label_sets: &'a [String],
    pub(crate) now: i64,
    pub(crate) runner_was: RunnerWas,
    pub(crate) takes: Takes,
}

impl<'a> ClaimFor<'a> {
    /// A polling runner (idle until its claim marks it busy) that takes any step.
    pub(crate) fn polling(runner_id: i64, label_sets: &'a [String], now: i64) -> Self {
        ClaimFor {
            runner_id,
            label_sets,
            now,
            runner_was: RunnerWas::Idle,
            takes: Takes::AnyStep,
        }
    }
}

/// The runner's state when it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunnerWas {
    /// Polling: its claim takes effect only with its busy mark ([`statements::runner_busy!`]), and
    /// counts once the runner acknowledges it.
    Idle,
    /// It completed an attempt and claims its next in the same request, still `busy`
    /// ([`AttemptEnd::runner_claims_next`]): its row held ([`statements::PG_CLAIM_BUSY`]),
    /// the claim acknowledged by the answer it is handed in.
    Busy,
}

/// Which step runs a claim may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Takes {
    AnyStep,
    /// Only steps of a fork's run ([`Store::claim_fork_step`]).
    ForkStepsOnly,
}

/// The step run a claim statement moved to `claimed`.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct ClaimedStep {
    id: i64,
    run_id: i64,
    step_id: String,
    attempts: i64,
    action: Option<String>,
}

/// What PostgreSQL's one claim statement returns: the step run and its new attempt.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct ClaimedWithAttempt {
    #[sqlx(flatten)]
    #[serde(flatten)]
    step: ClaimedStep,
    attempt_id: i64,
}

/// What [`claim_in`] took.
pub(crate) struct ClaimedIn {
    pub(crate) claimed: Claimed,
    /// The run's facts when this is `claimed_runs`' first claim of the run (the caller
    /// marks the run started once the transaction committed: [`Store::claimed_first`]).
    pub(crate) first_of_run: Option<RunFacts>,
}

/// Claims, inside `tx`, the oldest ready step run `claim`'s runner may take, and creates its
/// attempt. `None` when there is nothing to take (the runner's state is left as it was).
pub(crate) async fn claim_in(
    tx: &mut Tx<'_>,
    claimed_runs: &ClaimedRuns,
    claim: &ClaimFor<'_>,
) -> anyhow::Result<Option<ClaimedIn>> {
    let (step, attempt_id) = if tx.is_postgres() {
        let statement = match claim.runner_was {
            RunnerWas::Idle => &PG_CLAIM_IDLE,
            RunnerWas::Busy => &PG_CLAIM_BUSY,
        };
        let claimed: Option<ClaimedWithAttempt> =
            tx.row(claim.values(Statement::named(statement))).await?;
        let Some(claimed) = claimed else {
            return Ok(None);
        };
        (claimed.step, claimed.attempt_id)
    } else {
        let claimed: Option<ClaimedStep> = tx
            .row(claim.values(Statement::named(&SQLITE_CLAIM)))
            .await?;
        let Some(step) = claimed else {
            return Ok(None);
        };
        let new_attempt = match claim.runner_was {
            RunnerWas::Idle => &SQLITE_NEW_ATTEMPT,
            RunnerWas::Busy => &SQLITE_NEW_ATTEMPT_ACKED,
        };
        let attempt_id: i64 = tx
            .scalar(
                claim
                    .values(Statement::named(new_attempt))
                    .set("step_run", step.id),
            )
            .await?
            .context("the new attempt's id")?;
        // SQLite's one connection: the claim statement just read the runner live, and
        // nothing wrote since, so the mark lands.
        if claim.runner_was == RunnerWas::Idle {
            let marked = tx
                .execute(claim.values(Statement::named(&RUNNER_BUSY)))
                .await?;
            anyhow::ensure!(
                marked == 1,
                "runner {} left while claiming",
                claim.runner_id
            );
        }
        (step, attempt_id)
    };
    let (claimed, first_of_run) = claimed_with(tx, claimed_runs, attempt_id, step).await?;
    Ok(Some(ClaimedIn {
        claimed,
        first_of_run,
    }))
}

/// The claim of `step` as attempt `attempt_id`, with the run's facts when `claimed_runs`
/// does not know them yet (read in `tx`).
async fn claimed_with(
    tx: &mut Tx<'_>,
    claimed_runs: &ClaimedRuns,
    attempt_id: i64,
    step: ClaimedStep,
) -> anyhow::Result<(Claimed, Option<RunFacts>)> {
    let known = claimed_runs.facts(step.run_id);
    let facts = match &known {
        Some(facts) => facts.clone(),
        None => {
            let (workspace, summoned_context): (String, Option<String>) = tx
                .row(
                    Statement::new(
                        "SELECT d.workspace, CASE WHEN r.event IN ('issue', 'comment') \
                         THEN d.context END FROM runs r \
                         JOIN run_documents d ON d.run_id = r.id WHERE r.id = $1",
                    )
                    .bind(step.run_id),
                )
                .await?
                .with_context(|| format!("run {}'s documents", step.run_id))?;
            RunFacts {
                workspace: workspace.into(),
                summoned_context: summoned_context.map(Into::into),
            }
        }
    };
    let claimed = Claimed {
        attempt_id,
        step_run_id: step.id,
        run_id: step.run_id,
        step_id: step.step_id,
        number: step.attempts,
        dispatch: step.action.unwrap_or_default(),
        workspace: facts.workspace.to_string(),
        summoned_context: facts.summoned_context.as_deref().map(str::to_string),
    };
    Ok((claimed, known.is_none().then_some(facts)))
}

impl Store {
    /// Whether step `step_id` of run `run_id` goes only to runners allowed secrets (it
    /// held secrets, or took the files of a step that did: see
    /// [`crate::needs_secrets_runner`]); what it leaves goes to no other
    /// runner. A step the run does not have is treated as one that did.
    pub async fn step_needs_secrets(&self, run_id: i64, step_id: &str) -> anyhow::Result<bool> {
        let needs: Option<bool> = self
            .scalar(
                Statement::new(
                    "SELECT needs_secrets FROM step_runs WHERE run_id = $1 AND step_id = $2",
                )
                .bind(run_id)
                .bind(step_id),
            )
            .await?;
        Ok(needs.unwrap_or(true))
    }

    /// Claims the oldest ready step run whose labels are one of `label_sets` (the canonical
    /// forms of every subset of the runner's labels) for `runner_id`; a step that needs
    /// secrets only if the runner may receive them (its registration token's scope).
    pub async fn claim(
        &self,
        runner_id: i64,
        label_sets: &[String],
        now: i64,
    ) -> anyhow::Result<Option<Claimed>> {
        self.claim_as(ClaimFor::polling(runner_id, label_sets, now))
            .await
    }

    /// [`Store::claim`] of a step of a fork's run only (never another run's): how the
    /// engine takes, to fail it, a fork step no runner accepting forks can serve
    /// (`plue_pool::forks`).
    pub async fn claim_fork_step(
        &self,
        runner_id: i64,
        label_sets: &[String],
        now: i64,
    ) -> anyhow::Result<Option<Claimed>> {
        self.claim_as(ClaimFor {
            runner_id,
            label_sets,
            now,
            runner_was: RunnerWas::Idle,
            takes: Takes::ForkStepsOnly,
        })
        .await
    }

    /// [`Store::claim`] for a runner that completed an attempt and asked for its next one
    /// in the same request: it is still `busy` (its completion left it so, see
    /// [`AttemptEnd::runner_claims_next`]), and it is marked `idle` only when there is
    /// nothing to take. Two statements fewer for every step that follows another.
    pub async fn claim_next(
        &self,
        runner_id: i64,
        label_sets: &[String],
        now: i64,
    ) -> anyhow::Result<Option<Claimed>> {
        let claimed = self
            .claim_as(ClaimFor {
                runner_id,
                label_sets,
                now,
                runner_was: RunnerWas::Busy,
                takes: Takes::AnyStep,
            })
            .await;
        match claimed {
            Ok(None) => {
                self.runner_idle(runner_id, now).await?;
                Ok(None)
            }
            Err(e) => {
                // Best effort: a runner left `busy` would look taken to the pool.
                let _ = self.runner_idle(runner_id, now).await;
                Err(e)
            }
            claimed => claimed,
        }
    }

    /// Whether ready work waits that runner `runner_id` (of `label_sets`, as its claims
    /// pass them) may not take: a queued step run past its `ready_at` that its claim would
    /// never pick (labels, secrets, forks), or a queued debug session. What a poll that was
    /// woken, and found nothing to claim, asks before it wakes every waiting poll: ready work
    /// it may take but did not get went to a claim in flight, and waking every poll for
    /// that only has each of them find nothing too.
    pub async fn ready_for_others(
        &self,
        runner_id: i64,
        label_sets: &[String],
        now: i64,
    ) -> anyhow::Result<bool> {
        let claim = ClaimFor::polling(runner_id, label_sets, now);
        let statement = claim.values(Statement::named_per_backend(
            &SQLITE_READY_FOR_OTHERS,
            &PG_READY_FOR_OTHERS,
        ));
        let waiting: Option<i64> = self.scalar(statement).await?;
        Ok(waiting.unwrap_or(0) > 0)
    }

    /// Whether ready work waits that runner `runner_id` would claim were it not suspect or
    /// silent: a queued step run past its `ready_at` in its scope (labels, secrets, forks),
    /// or a queued debug session. What a poll that proves nothing of its runner's life asks
    /// before it answers empty, so the runner polls again at once (that poll is the proof).
    pub async fn ready_in_scope(
        &self,
        runner_id: i64,
        label_sets: &[String],
        now: i64,
    ) -> anyhow::Result<bool> {
        let claim = ClaimFor::polling(runner_id, label_sets, now);
        let statement = claim.values(Statement::named_per_backend(
            &SQLITE_READY_IN_SCOPE,
            &PG_READY_IN_SCOPE,
        ));
        let waiting: Option<i64> = self.scalar(statement).await?;
        Ok(waiting.unwrap_or(0) > 0)
    }

    /// Marks the runner idle after a [`Store::claim_next`] that found nothing.
    pub async fn runner_idle(&self, runner_id: i64, now: i64) -> anyhow::Result<()> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.autocommit().await?;
        runner_idle_in(&mut tx, runner_id, now).await
    }

    async fn claim_as(&self, claim: ClaimFor<'_>) -> anyhow::Result<Option<Claimed>> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.begin().await?;
        let Some(took) = claim_in(&mut tx, &self.claimed_runs, &claim).await? else {
            return Ok(None);
        };
        tx.commit().await?;
        drop(conn);
        self.claimed_first(&took.claimed, took.first_of_run, claim.now)
            .await?;
        Ok(Some(took.claimed))
    }

    /// After a claim committed that was this process's first of its run (`first_of_run`,
    /// from [`claim_in`]): the run marked `running`, outside the claim's transaction (see
    /// the module invariant about the run's lock), and its facts kept.
    pub(crate) async fn claimed_first(
        &self,
        claimed: &Claimed,
        first_of_run: Option<RunFacts>,
        now: i64,
    ) -> anyhow::Result<()> {
        if let Some(facts) = first_of_run {
            self.execute(
                Statement::new(
                    "UPDATE runs SET status = 'running', started_at = $2 \
                     WHERE id = $1 AND status = 'queued'",
                )
                .bind(claimed.run_id)
                .bind(now),
            )
            .await?;
            // Only once the run is known to be running: a claim that failed before this
            // leaves the next one to do it.
            self.claimed_runs.remember(claimed.run_id, facts);
        }
        Ok(())
    }

    /// Who holds `attempt_id`, or `None` if there is no such attempt.
    pub async fn attempt_owner(&self, attempt_id: i64) -> anyhow::Result<Option<AttemptOwner>> {
        self.row(
            Statement::new(
                "SELECT a.runner_id, a.step_run_id, a.number, s.run_id FROM attempts a \
             JOIN step_runs s ON s.id = a.step_run_id WHERE a.id = $1",
            )
            .bind(attempt_id),
        )
        .await
    }

    /// Claimed → running, when the runner starts the process (which acknowledges the claim,
    /// if nothing did before). Returns when the step run had become ready (ms) if this call
    /// started it, `None` for a repeated report.
    pub async fn start_attempt(
        &self,
        attempt_id: i64,
        runner_id: i64,
        now: i64,
    ) -> anyhow::Result<Option<i64>> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.begin().await?;
        let step_run_id: Option<i64> = tx
            .scalar(
                Statement::new(
                    "UPDATE attempts SET status = 'running', started_at = $3, \
                     acked_at = COALESCE(acked_at, $3) \
                     WHERE id = $1 AND runner_id = $2 AND status = 'claimed' \
                     RETURNING step_run_id",
                )
                .bind(attempt_id)
                .bind(runner_id)
                .bind(now),
            )
            .await?;
        let mut ready_at = None;
        if let Some(step_run_id) = step_run_id {
            ready_at = tx
                .scalar::<Option<i64>>(
                    Statement::new(
                        "UPDATE step_runs SET status = 'running', \
                         started_at = COALESCE(started_at, $2) \
                         WHERE id = $1 AND status = 'claimed' RETURNING ready_at",
                    )
                    .bind(step_run_id)
                    .bind(now),
                )
                .await?
                .flatten();
        }
        tx.commit().await?;
        Ok(ready_at)
    }

    /// Whether `attempt_id` is still live (claimed or running): what a runner may still
    /// change of it, such as the files it keeps.
    pub async fn attempt_is_live(&self, attempt_id: i64) -> anyhow::Result<bool> {
        let live: Option<bool> = self
            .scalar(
                Statement::new(
                    "SELECT status IN ('claimed', 'running') FROM attempts WHERE id = $1",
                )
                .bind(attempt_id),
            )
            .await?;
        Ok(live.unwrap_or(false))
    }

    /// Whether the runner holding `attempt_id` should stop it: the run is being cancelled,
    /// or the engine already ended the attempt (timed out, runner declared lost).
    pub async fn attempt_should_stop(&self, attempt_id: i64) -> anyhow::Result<bool> {
        let stop: Option<bool> = self
            .scalar(
                Statement::new(
                    "SELECT (r.cancel_requested OR a.status NOT IN ('claimed', 'running')) \
                     FROM attempts a JOIN step_runs s ON s.id = a.step_run_id \
                     JOIN runs r ON r.id = s.run_id WHERE a.id = $1",
                )
                .bind(attempt_id),
            )
            .await?;
        Ok(stop.unwrap_or(true))
    }

    /// Ends an attempt and moves its step run as `decide` says. `runner_id` restricts the
    /// update to that runner's attempt (`None`: the engine itself ends it). Returns what
    /// ended, or `None` when the attempt was already final (a repeat). The attempt's usage,
    /// if any, is stored with it and added to the step run's total.
    pub async fn complete_attempt(
        &self,
        attempt_id: i64,
        runner_id: Option<i64>,
        end: &AttemptEnd<'_>,
        decide: impl FnOnce(&CompletedAttempt) -> StepAfter,
    ) -> anyhow::Result<Option<CompletedAttempt>> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.begin().await?;
        let ending =
            end_attempt_in(&mut tx, attempt_id, runner_id, end, FinalStepNews::Listed).await?;
        let Some(ending) = ending else {
            return Ok(None);
        };
        let after = decide(&ending.attempt);
        let completed = settle_in(&mut tx, ending, after).await?;
        tx.commit().await?;
        Ok(Some(completed))
    }

    /// Attempts still claimed or running past their timeout plus `grace_ms`, as
    /// `(attempt, run, timeout_ms)`.
    pub async fn overdue_attempts(
        &self,
        now: i64,
        grace_ms: i64,
    ) -> anyhow::Result<Vec<(i64, i64, i64)>> {
        self.rows(
            Statement::new(
                "SELECT a.id, s.run_id, a.timeout_ms FROM attempts a \
             JOIN step_runs s ON s.id = a.step_run_id \
             WHERE a.status IN ('claimed', 'running') AND a.claimed_at + a.timeout_ms + $2 < $1",
            )
            .bind(now)
            .bind(grace_ms),
        )
        .await
    }

    /// Attempts still claimed or running on `runner_id`, as `(attempt, run)`.
    pub async fn active_attempts_of(&self, runner_id: i64) -> anyhow::Result<Vec<(i64, i64)>> {
        self.rows(
            Statement::new(
                "SELECT a.id, s.run_id FROM attempts a JOIN step_runs s ON s.id = a.step_run_id \
             WHERE a.runner_id = $1 AND a.status IN ('claimed', 'running')",
            )
            .bind(runner_id),
        )
        .await
    }
}

/// A step run's stored usage total plus one attempt's (an unreadable total counts as none).
pub(crate) fn add_usage(stored: Option<&str>, attempt: Usage) -> Usage {
    stored
        .and_then(|text| serde_json::from_str::<Usage>(text).ok())
        .unwrap_or_default()
        + attempt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_ready_work_a_runner_may_not_take_is_for_others() {
        use crate::testing::{local_run, queue_run_ready_at, stores};
        use evaluator::plan::{Plan, Step};
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let plain = store.register_runner("plain", "{}", "plain", 0);
            let plain = plain.await.unwrap();
            let (plain_sets, big_sets) = (["".to_string()], ["".into(), "size=big".into()]);
            assert!(!store
                .ready_for_others(plain, &plain_sets, 5_000)
                .await
                .unwrap());

            // Work any runner may take is nobody else's, ready or not.
            let plan = Plan::new("p", vec![Step::bash("a", "true")]);
            let json = serde_json::to_string(&plan).unwrap();
            queue_run_ready_at(&store, &local_run(&plan, &json), 1_000).await;
            for now in [999, 1_000] {
                let others = store
                    .ready_for_others(plain, &plain_sets, now)
                    .await
                    .unwrap();
                assert!(!others, "{backend}: at {now}");
            }

            // Work of labels the runner lacks is, once ready; a runner with them may take it.
            let mut big = Step::bash("b", "true");
            big.runner = std::collections::BTreeMap::from([("size".into(), "big".into())]);
            let plan = Plan::new("q", vec![big]);
            let json = serde_json::to_string(&plan).unwrap();
            queue_run_ready_at(&store, &local_run(&plan, &json), 2_000).await;
            assert!(!store
                .ready_for_others(plain, &plain_sets, 1_999)
                .await
                .unwrap());
            assert!(
                store
                    .ready_for_others(plain, &plain_sets, 2_000)
                    .await
                    .unwrap(),
                "{backend}"
            );
            let sized = store.register_runner("big", "{}", "big", 0);
            let sized = sized.await.unwrap();
            assert!(!store
                .ready_for_others(sized, &big_sets, 2_000)
                .await
                .unwrap());

            // Once claimed, it waits for nobody.
            let claimed = store.claim(sized, &big_sets, 2_000).await.unwrap();
            let second = store.claim(sized, &big_sets, 2_000).await.unwrap();
            assert!(claimed.is_some() && second.is_some(), "{backend}");
            assert!(!store
                .ready_for_others(plain, &plain_sets, 2_000)
                .await
                .unwrap());

            // A runner no longer live may take nothing: whatever is ready is another's.
            queue_run_ready_at(&store, &local_run(&plan, &json), 3_000).await;
            store.runner_gone(sized, 3_000).await.unwrap();
            assert!(store
                .ready_for_others(sized, &big_sets, 3_000)
                .await
                .unwrap());
            let again = store.register_runner("big-2", "{}", "big-2", 0);
            let again = again.await.unwrap();
            assert!(store
                .claim(again, &big_sets, 3_000)
                .await
                .unwrap()
                .is_some());

            // A step holding a secret is another's for a runner its token denies secrets.
            let mut keyed = Step::bash("k", "true");
            keyed.secrets = vec!["KEY".into()];
            let plan = Plan::new("s", vec![keyed]);
            let json = serde_json::to_string(&plan).unwrap();
            queue_run_ready_at(&store, &local_run(&plan, &json), 4_000).await;
            let denied = crate::NewRunner {
                name: "denied",
                labels_json: "{}",
                session_hash: "denied",
                ephemeral: false,
                token: None,
                secrets: false,
                accept_forks: true,
                host: None,
                now: 0,
            };
            let crate::Registration::Registered(denied) = store.register(&denied).await.unwrap()
            else {
                panic!("{backend}: the runner denied secrets did not register");
            };
            assert!(store
                .ready_for_others(denied, &plain_sets, 4_000)
                .await
                .unwrap());
            assert!(!store
                .ready_for_others(plain, &plain_sets, 4_000)
                .await
                .unwrap());
        }
    }

    #[test]
    fn usage_totals_add_up_across_attempts() {
        let one = Usage {
            input_tokens: 10,
            output_tokens: 2,
            ..Usage::default()
        };
        assert_eq!(add_usage(None, one), one);
        let stored = serde_json::to_string(&one).unwrap();
        assert_eq!(add_usage(Some(&stored), one).input_tokens, 20);
        assert_eq!(add_usage(Some("garbage"), one), one);
    }

    /// An idle runner's claim reads the runner as live in its statement's snapshot; a
    /// retirement committed after that snapshot, before the claim's busy mark, must leave
    /// the claim unwritten (it would otherwise put an attempt on a runner that is gone).
    /// PostgreSQL only: SQLite's one connection serializes the two.
    #[tokio::test]
    async fn an_idle_claim_racing_the_runners_retirement_writes_nothing() {
        use crate::testing::{local_run, queue_run_ready_at, stores};
        use evaluator::plan::{Plan, Step};
        for (store, _dir) in stores().await {
            let crate::Db::Postgres(pool) = &store.db else {
                continue;
            };
            let plan = Plan::new("p", vec![Step::bash("a", "true")]);
            let json = serde_json::to_string(&plan).unwrap();
            let run_id = queue_run_ready_at(&store, &local_run(&plan, &json), 1_000).await;
            let runner = store.register_runner("r", "{}", "r", 0).await.unwrap();
            let retirement = crate::testing::retirement_held(pool, runner).await;
            let claiming = tokio::spawn({
                let store = store.clone();
                async move { store.claim(runner, &[String::new()], 1_500).await }
            });
            // The claim saw the runner idle and now waits to mark it busy.
            crate::testing::a_backend_waits_for_a_lock(pool).await;
            retirement.commit().await.unwrap();
            let claimed = claiming.await.unwrap().unwrap();
            assert_eq!(claimed, None, "a gone runner's claim takes nothing");
            let (status, attempts): (String, i64) = store
                .one_row(
                    Statement::new(
                        "SELECT status, (SELECT COUNT(*) FROM attempts) FROM step_runs \
                         WHERE run_id = $1",
                    )
                    .bind(run_id),
                )
                .await
                .unwrap();
            assert_eq!(
                (status.as_str(), attempts),
                ("queued", 0),
                "nothing written"
            );
            // A live runner takes the step.
            let other = store.register_runner("s", "{}", "s", 0).await.unwrap();
            let taken = store.claim(other, &[String::new()], 1_600).await.unwrap();
            assert_eq!(taken.map(|c| c.run_id), Some(run_id));
        }
    }
}
