//! A run's transition: one transaction holding the run's lock, driven straight-line by its
//! caller through a handle ([`RunTransition`]) that only [`Store::lock_run`] opens. In
//! order, the executor may end an attempt of the run ([`RunTransition::end_attempt`]) and
//! settle its step run ([`RunTransition::settle`]), read the run's steps
//! ([`RunTransition::steps`]: only those that changed since its copy, [`KnownSteps`]) and
//! the outputs it needs ([`RunTransition::load_outputs`]), apply its decisions
//! ([`RunTransition::apply`], each kind of change written in `changes`), claim the
//! completing runner's next attempt ([`RunTransition::claim_next`]), and commit
//! ([`RunTransition::commit`]). An attempt whose run cannot advance ends in a transition
//! [`Store::end_alone`] opens, the same handle holding no run's row. Its SQL is private to this module and `claims`; no closure
//! of the caller runs inside the transaction.
//!
//! Invariants:
//! - Lock order: the run's concurrency group's row (if its plan names one), then the run's
//!   row (`UPDATE runs SET advances = advances + 1`, which also counts the advance for
//!   [`KnownSteps`]), then its step runs and attempts. Only [`Store::lock_run`] opens a
//!   transition that advances, and it takes the two locks before handing the handle out:
//!   every statement the handle runs comes after them. [`Store::end_alone`]'s transition
//!   takes no run's row and only ends an attempt (its attempt's row, then its step run's,
//!   as every completion's), reading nothing another transition of the run holds first. A completion applied here takes the run's row before
//!   its attempt's, so it waits where every advance waits and never holds an attempt
//!   another advance of the run wants.
//! - One commit: [`RunTransition::commit`] consumes the handle; a handle dropped without
//!   it rolls back. Whatever fails (an error, a repeated report, an attempt of another run,
//!   an ended attempt left unsettled, steps read out of order) leaves nothing written: the
//!   completion, the advance and the completing runner's next claim commit together or not
//!   at all.
//! - The phases run in order: an attempt ends and is settled before the steps are read
//!   (the advance reads the step run it made final), changes are applied to the steps read
//!   in this transition, and the runner claims after the advance (it may take what the
//!   advance queued). A call out of order is an error, and the transition rolls back.
//! - The next claim made here takes no run's row (it skips step runs other claimers hold:
//!   `claims`); it may wait only for the runner's own row (its `idle` mark when there is
//!   nothing to take), which no transaction holds while it waits for a run's row. The run
//!   it claims from is marked `running` after the commit, once the connection is handed
//!   back ([`TransitionConn::release`]), and nothing after the commit fails the call: a
//!   committed claim always reaches its caller.
//! - A step run only moves forward, every update naming the states it may leave (see
//!   `runs`); a review loop's step runs go back once per iteration.
//!
//! Why one file past ~600 lines: the handle's phases are one ordered sequence over one
//! transaction, read top to bottom; what each kind of change writes is `changes`, and the
//! attempt's end is `claims`.

mod changes;

use std::collections::BTreeMap;

use anyhow::Context;
use plue_types::status::RunState;

use crate::change_list::{take_changed_steps, EMPTY_CHANGES};
use crate::claims::{
    claim_in, end_attempt_in, runner_idle_in, settle_in, ClaimFor, EndingAttempt, FinalStepNews,
    RunFacts, RunnerWas, Takes,
};
use crate::groups::relock_group;
use crate::runs::STEP_STATE_COLUMNS;
use crate::tx::{Conn, Statement, Tx};
use crate::{
    now_ms, Advanced, AttemptEnd, Claimed, CompletedAttempt, KnownSteps, RunSnapshot, StepAfter,
    StepChange, StepRunRow, Store,
};

/// A connection of the store's pool, held for one run's transition ([`Store::lock_run`]
/// borrows it). Nothing else may take a connection while it is held: SQLite's pool has one.
#[must_use = "a connection is handed back by release, which finishes what a claim started"]
pub struct TransitionConn {
    conn: Conn,
    /// A claim's run to mark `running` once the connection is handed back (the claim's
    /// transaction takes no run's row).
    claimed_first: Option<(Claimed, RunFacts, i64)>,
}

impl TransitionConn {
    /// Hands the connection back to the pool, then marks the run a committed claim started
    /// as `running` (`Store::claimed_first`). Never fails: the claim committed and is the
    /// runner's whatever this says, and a run not marked now is marked by its next claim.
    pub async fn release(self, store: &Store) {
        let TransitionConn {
            conn,
            claimed_first,
        } = self;
        drop(conn);
        if let Some((claimed, facts, now)) = claimed_first {
            if let Err(error) = store.claimed_first(&claimed, Some(facts), now).await {
                tracing::warn!(run = claimed.run_id, "marking the run running: {error:#}");
            }
        }
    }
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

/// Whether a transition advances its run ([`Store::lock_run`]) or only ends an attempt of
/// it ([`Store::end_alone`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThenAdvance {
    /// The run's advance follows in the same transaction and reads the attempt's step run.
    Yes,
    /// The attempt ends alone (the change list keeps its step run for the run's next
    /// advance); the transition locks no run and reads no steps.
    No,
}

/// Where a transition is: its phases run in order (module invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Locked,
    /// An attempt ended; its step run is not settled yet.
    Ending,
    Settled,
    /// The steps were read ([`RunTransition::steps`]).
    Reading,
    Applied,
    Claimed,
}

/// One run's transition, open: its transaction holds the run's lock (and its group's).
/// Only [`Store::lock_run`] makes one; [`RunTransition::commit`] is its one commit.
#[must_use = "a transition dropped without commit writes nothing"]
pub struct RunTransition<'c> {
    store: &'c Store,
    tx: Tx<'c>,
    claimed_first: &'c mut Option<(Claimed, RunFacts, i64)>,
    run_id: i64,
    group_id: Option<i64>,
    /// The run's row as locked; `None` when the run is final.
    run: Option<LockedRun>,
    /// The caller's copy of the run's steps.
    known: Option<KnownSteps>,
    now: i64,
    phase: Phase,
    /// Opened by [`Store::end_alone`]: no run's row is held, no steps are read.
    ends_alone: bool,
    /// The step run an attempt ended here made final: the advance reads it by id.
    read_here: Option<i64>,
    /// The run as [`RunTransition::steps`] read it, until applied.
    steps_read: usize,
    advanced: Advanced,
    next: NextClaim,
    /// The claimed run's facts when the claim was this process's first of it: handed to
    /// the connection at the commit, to mark the run `running` once it is released.
    first_of_run: Option<(Claimed, RunFacts)>,
}

impl Store {
    /// A connection for one run's transition ([`Store::lock_run`]).
    pub async fn transition_conn(&self) -> anyhow::Result<TransitionConn> {
        Ok(TransitionConn {
            conn: Conn::acquire(self).await?,
            claimed_first: None,
        })
    }

    /// Opens run `run.run_id`'s transition on `conn`: its group's lock (if its plan names
    /// one), then the run's lock, with one more advance counted (see [`KnownSteps`]).
    pub async fn lock_run<'c>(
        &'c self,
        conn: &'c mut TransitionConn,
        run: RunToAdvance,
    ) -> anyhow::Result<RunTransition<'c>> {
        let RunToAdvance {
            run_id,
            grouping,
            known,
        } = run;
        let TransitionConn {
            conn,
            claimed_first,
        } = conn;
        let group_id = group_of(conn, run_id, grouping).await?;
        let mut tx = conn.begin().await?;
        if let Some(group_id) = group_id {
            relock_group(&mut tx, group_id).await?;
        }
        let locked = tx
            .row(
                Statement::new(
                    "UPDATE runs SET advances = advances + 1 \
                     WHERE id = $1 AND status IN ('pending', 'queued', 'running') \
                     RETURNING advances, status, cancel_requested, cancel_reason, max_parallel",
                )
                .bind(run_id),
            )
            .await
            .with_context(|| format!("locking run {run_id}"))?;
        Ok(RunTransition {
            store: self,
            tx,
            claimed_first,
            run_id,
            group_id,
            run: locked,
            known,
            now: now_ms(),
            phase: Phase::Locked,
            ends_alone: false,
            read_here: None,
            steps_read: 0,
            advanced: Advanced::default(),
            next: NextClaim::NotAsked,
            first_of_run: None,
        })
    }

    /// Opens a transition of run `run_id` on `conn` that only ends an attempt of it
    /// ([`ThenAdvance::No`]): it takes neither the group's nor the run's row — whatever
    /// keeps the run from advancing must not keep its attempts from ending — and so it
    /// reads no steps and applies no changes; the change list keeps the step run it makes
    /// final for the run's next advance. The caller's copy of the steps (`run.known`) comes
    /// back with the commit, still current.
    pub async fn end_alone<'c>(
        &'c self,
        conn: &'c mut TransitionConn,
        run: RunToAdvance,
    ) -> anyhow::Result<RunTransition<'c>> {
        let RunToAdvance { run_id, known, .. } = run;
        let TransitionConn {
            conn,
            claimed_first,
        } = conn;
        let tx = conn.begin().await?;
        Ok(RunTransition {
            store: self,
            tx,
            claimed_first,
            run_id,
            group_id: None,
            run: None,
            known,
            now: now_ms(),
            phase: Phase::Locked,
            ends_alone: true,
            read_here: None,
            steps_read: 0,
            advanced: Advanced::default(),
            next: NextClaim::NotAsked,
            first_of_run: None,
        })
    }
}

impl<'c> RunTransition<'c> {
    /// The transition's clock (ms): what it writes as "now".
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Whether the run was final when locked (an attempt may still end in it; nothing is
    /// advanced).
    pub fn run_is_final(&self) -> bool {
        self.run.is_none()
    }

    fn enter(&mut self, phase: Phase, allowed: &[Phase], what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            allowed.contains(&self.phase),
            "run {}'s transition: {what} out of order (after {:?})",
            self.run_id,
            self.phase
        );
        self.phase = phase;
        Ok(())
    }

    /// Ends attempt `attempt_id` (reported by `runner_id`; `None` when the engine ends it)
    /// with `end`. `None` when the attempt was already final (a repeat): nothing may be
    /// committed then ([`RunTransition::into_known`] gives the caller's copy back). An
    /// attempt of another run is an error. The ended attempt must be settled
    /// ([`RunTransition::settle`]) before anything else.
    pub async fn end_attempt(
        &mut self,
        attempt_id: i64,
        runner_id: Option<i64>,
        end: &AttemptEnd<'_>,
    ) -> anyhow::Result<Option<EndingAttempt>> {
        self.enter(Phase::Ending, &[Phase::Locked], "ending an attempt")?;
        // The advance reads the step run this completion makes final, unless it will not
        // read at all: then the change list keeps it for the run's next advance.
        let reads_here = !self.ends_alone && self.reads_steps();
        let news = if reads_here {
            FinalStepNews::ReadHere
        } else {
            FinalStepNews::Listed
        };
        let Some(ending) = end_attempt_in(&mut self.tx, attempt_id, runner_id, end, news).await?
        else {
            return Ok(None);
        };
        let attempt = ending.attempt();
        anyhow::ensure!(
            attempt.run_id == self.run_id,
            "attempt {attempt_id} is of run {}, not of run {}",
            attempt.run_id,
            self.run_id
        );
        if reads_here {
            self.read_here = Some(attempt.step_run_id);
        }
        Ok(Some(ending))
    }

    /// Moves the ended attempt's step run as `after` says (decided from
    /// [`EndingAttempt::attempt`]): the attempt that ended.
    pub async fn settle(
        &mut self,
        ending: EndingAttempt,
        after: StepAfter,
    ) -> anyhow::Result<CompletedAttempt> {
        self.enter(Phase::Settled, &[Phase::Ending], "settling an attempt")?;
        settle_in(&mut self.tx, ending, after).await
    }

    /// The caller's copy of the run's steps, given back with the transition rolled back (a
    /// repeated report: the copy is still current).
    pub fn into_known(self) -> Option<KnownSteps> {
        self.known
    }

    fn reads_steps(&self) -> bool {
        self.run.as_ref().is_some_and(LockedRun::reads_steps)
    }

    /// The run as the advance decides on it, without outputs: `None` when it is not
    /// advanced (final, waiting for its group, or an attempt ended alone here).
    pub async fn steps(&mut self) -> anyhow::Result<Option<RunSnapshot>> {
        self.enter(
            Phase::Reading,
            &[Phase::Locked, Phase::Settled],
            "reading the steps",
        )?;
        if self.ends_alone || !self.reads_steps() {
            // Waiting for its group: nothing of it may start.
            return Ok(None);
        }
        let run = self.run.as_ref().expect("a run that reads its steps");
        let (steps, known, steps_read) = steps_to_decide(
            &mut self.tx,
            self.run_id,
            run,
            self.known.take(),
            self.read_here,
        )
        .await?;
        self.known = known;
        self.steps_read = steps_read;
        Ok(Some(RunSnapshot {
            run_id: self.run_id,
            cancel_requested: run.cancel_requested,
            cancel_reason: run.cancel_reason.clone(),
            max_parallel: run.max_parallel,
            steps,
            outputs: BTreeMap::new(),
        }))
    }

    /// Loads the stored outputs of the step runs `wanted` names, as `(step run, iteration)`,
    /// into `snapshot` (`{}` for one that stored none).
    pub async fn load_outputs(
        &mut self,
        snapshot: &mut RunSnapshot,
        wanted: &[(i64, i64)],
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.phase == Phase::Reading,
            "run {}'s transition: outputs are loaded after the steps are read",
            self.run_id
        );
        for &(step_run_id, iteration) in wanted {
            let outputs: Option<String> = self
                .tx
                .scalar(
                    Statement::new(
                        "SELECT outputs FROM step_outputs \
                         WHERE step_run_id = $1 AND run_id = $2 AND iteration = $3",
                    )
                    .bind(step_run_id)
                    .bind(self.run_id)
                    .bind(iteration),
                )
                .await?;
            snapshot.outputs.insert(
                (step_run_id, iteration),
                outputs.unwrap_or_else(|| "{}".into()),
            );
        }
        Ok(())
    }

    /// Applies the executor's decisions on `snapshot` (the run [`RunTransition::steps`]
    /// read in this transition).
    pub async fn apply(
        &mut self,
        snapshot: RunSnapshot,
        changes: Vec<StepChange>,
    ) -> anyhow::Result<()> {
        self.enter(Phase::Applied, &[Phase::Reading], "applying changes")?;
        anyhow::ensure!(
            snapshot.run_id == self.run_id,
            "run {}'s transition: changes decided on run {}",
            self.run_id,
            snapshot.run_id
        );
        let advances = self.run.as_ref().map_or(0, |run| run.advances);
        let mut advanced = Advanced {
            steps_read: self.steps_read,
            ..Advanced::default()
        };
        let mut applied = Vec::with_capacity(changes.len());
        for change in changes {
            let took_effect = changes::apply_change(
                &mut self.tx,
                self.run_id,
                self.group_id,
                &change,
                &mut advanced,
                self.now,
            )
            .await?;
            // A loop that went back only in part did not take effect, yet the rows it sent
            // back moved: readers of the states are told of every change tried that may have
            // moved a row (reading one again costs nothing more).
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
        advanced.known = KnownSteps::after(self.known.take(), advances, snapshot.steps, &applied);
        self.advanced = advanced;
        Ok(())
    }

    /// Claims the completing runner's next attempt ([`ClaimNext`]), after the advance (it
    /// may take what the advance queued); with nothing to take, the runner is `idle` again.
    pub async fn claim_next(&mut self, next: ClaimNext<'_>) -> anyhow::Result<()> {
        self.enter(
            Phase::Claimed,
            &[Phase::Settled, Phase::Reading, Phase::Applied],
            "claiming the runner's next attempt",
        )?;
        let claim = ClaimFor {
            runner_id: next.runner_id,
            label_sets: next.label_sets,
            now: self.now,
            runner_was: RunnerWas::Busy,
            takes: Takes::AnyStep,
        };
        self.next = match claim_in(&mut self.tx, &self.store.claimed_runs, &claim).await? {
            Some(took) => {
                self.first_of_run = took.first_of_run.map(|facts| (took.claimed.clone(), facts));
                NextClaim::Claimed(took.claimed)
            }
            None => {
                runner_idle_in(&mut self.tx, next.runner_id, self.now).await?;
                NextClaim::NothingToTake
            }
        };
        Ok(())
    }

    /// Commits the transition: what its advance did and the runner's next claim. The
    /// caller then releases the connection ([`TransitionConn::release`]).
    pub async fn commit(self) -> anyhow::Result<Committed> {
        anyhow::ensure!(
            self.phase != Phase::Ending,
            "run {}'s transition: an ended attempt was not settled",
            self.run_id
        );
        let RunTransition {
            store,
            tx,
            claimed_first,
            run_id,
            mut advanced,
            known,
            next,
            phase,
            first_of_run,
            now,
            ..
        } = self;
        if phase < Phase::Applied {
            // Nothing was applied: the copy of the steps is still the caller's.
            advanced.known = known;
        }
        tx.commit().await.context("committing the transition")?;
        *claimed_first = first_of_run.map(|(claimed, facts)| (claimed, facts, now));
        if advanced.finished {
            store.claimed_runs.forget(run_id);
        }
        Ok(Committed { advanced, next })
    }
}

/// What a committed transition did.
#[derive(Debug, Default)]
pub struct Committed {
    pub advanced: Advanced,
    /// The attempt the runner claimed next, when it asked.
    pub next: NextClaim,
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

/// The run a transition moves ([`Store::lock_run`]).
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

/// The completing runner's next claim, asked for in its completion's transition ([`RunTransition::claim_next`]).
#[derive(Debug, Clone, Copy)]
pub struct ClaimNext<'a> {
    pub runner_id: i64,
    /// The runner's label sets (as [`Store::claim`] takes them).
    pub label_sets: &'a [String],
}

#[cfg(test)]
mod tests;
