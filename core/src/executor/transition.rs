//! One run's transition, driven straight-line: the executor opens the run's transition
//! ([`plue_store::Store::lock_run`]), ends a runner's attempt and settles its step run as
//! the rules say, reads the steps that changed, loads the outputs the rules need, applies
//! the rules' decisions, claims the completing runner's next attempt, and commits — every
//! decision made here between the store's calls, none inside a callback of the store.
//!
//! Invariants:
//! - One commit per transition: a runner's report, the run's advance and the runner's next
//!   claim commit together or not at all ([`Executor::complete_holding`]). When they cannot
//!   (any error), the attempt ends alone through the same code ([`ThenAdvance::No`]) and the
//!   run is advanced after: a report is never lost to an advance's trouble.
//! - Outputs parsed from what the store loaded enter the cache only after the commit (the
//!   completion in the same transaction may have stored them).
//! - The executor's advances of a run take its turn ([`Executor::turn`]) for the whole
//!   transition, so the copy of the run's steps they hand each other stays current.

use std::collections::HashMap;

use anyhow::Context;
use plue_store::events::Event;
use plue_store::{
    now_ms, AttemptEnd, ClaimNext, CompletedAttempt, NextClaim, RunToAdvance, StepAfter,
};
use plue_store::{Committed, ThenAdvance};
use plue_types::status::AttemptStatus;

use super::outputs::{self, Outputs};
use super::{keep_workspaces, rules, Completed, Executor, Report, RunnerSaid};
use crate::metrics;

/// An attempt's end that [`Executor::advance_one`] applies first, in the run's transition.
#[derive(Clone, Copy)]
pub(super) struct Completing<'a> {
    pub(super) attempt_id: i64,
    /// The reporting runner; `None` when the engine ends the attempt itself.
    pub(super) runner_id: Option<i64>,
    pub(super) end: &'a AttemptEnd<'a>,
    pub(super) report: &'a Report,
    /// The reporting runner's next claim, in the same transaction.
    pub(super) claim_next: Option<ClaimNext<'a>>,
}

/// What the rules made of an ended attempt, kept for after the commit.
struct Fate {
    /// A retry due now: claimable at once.
    retry_now: bool,
    /// The step run ended without outputs, as (step run, iteration): the advance takes
    /// its outputs as empty (none are stored to read), and so does the cache after.
    ended_empty: Option<(i64, i64)>,
    metric: Option<metrics::Ended>,
}

/// What one transition of a run did.
#[derive(Default)]
pub(super) struct OneAdvance {
    /// The attempt it ended first ([`Completing`]); `None` when it was given none, or the
    /// attempt was already final (then nothing changed).
    completed: Option<CompletedAttempt>,
    fate: Option<Fate>,
    /// The run of its concurrency group it let start, if any.
    pub(super) promoted: Option<i64>,
    /// A review loop went back: the run is advanced again.
    pub(super) looped: bool,
    pub(super) queued: usize,
    /// The next attempt claimed for the completing runner ([`Completed::next`]).
    next: NextClaim,
}

impl Executor {
    /// One transition of run `run_id`: `completing`'s attempt ended first when given, then
    /// (unless `then` is [`ThenAdvance::No`]) the run's advance, then the completing
    /// runner's next claim. Reads from the store only the outputs that pending steps read
    /// and the cache does not hold ([`outputs`]).
    pub(super) async fn advance_one(
        &self,
        run_id: i64,
        completing: Option<Completing<'_>>,
        then: ThenAdvance,
    ) -> anyhow::Result<OneAdvance> {
        let plan = self.plan(run_id).await?;
        let (reads, deps, facts) = {
            let mut cache = self.lock_outputs();
            (
                cache.reads(run_id, &plan),
                cache.deps(run_id, &plan),
                cache.facts(run_id, &plan),
            )
        };
        let loops = &facts.loops;
        let gates = if facts.names_environment && then == ThenAdvance::Yes {
            self.gates(run_id, &plan).await?
        } else {
            Vec::new()
        };
        let turn = self.turn(run_id);
        let mut known = turn.lock().await;
        let mut conn = self.store.transition_conn().await?;
        let run = RunToAdvance {
            run_id,
            grouping: plue_store::Grouping::of(&plan),
            known: known.take(),
        };
        let opened = match then {
            ThenAdvance::Yes => self.store.lock_run(&mut conn, run).await,
            // Whatever keeps the run from advancing must not keep the attempt from ending:
            // the run's row is not taken.
            ThenAdvance::No => self.store.end_alone(&mut conn, run).await,
        };
        let mut transition = opened.with_context(|| format!("advancing run {run_id}"))?;
        let now = transition.now();

        // 1. The attempt ends, and its step run moves as the rules say.
        let mut completed = None;
        let mut fate = None;
        if let Some(c) = completing {
            let ending = transition
                .end_attempt(c.attempt_id, c.runner_id, c.end)
                .await
                .with_context(|| format!("ending attempt {}", c.attempt_id))?;
            let Some(ending) = ending else {
                // A repeated report: nothing is written, and the copy of the run stays
                // current.
                *known = transition.into_known();
                return Ok(OneAdvance::default());
            };
            let attempt = ending.attempt();
            let step = facts.step(&plan, &attempt.step_id);
            let after = rules::step_after(step, attempt, c.report, now);
            fate = Some(Fate {
                retry_now: matches!(after, StepAfter::Retry { ready_at, .. } if ready_at <= now),
                ended_empty: matches!(&after, StepAfter::Final { outputs, .. } if outputs == "{}")
                    .then_some((attempt.step_run_id, attempt.iteration.max(1))),
                metric: metrics::attempt_ended(step, attempt, &after, now),
            });
            completed = Some(transition.settle(ending, after).await?);
        }
        let ended_empty = fate.as_ref().and_then(|f| f.ended_empty);

        // 2. The run's advance: the steps that changed, the outputs the rules read, the
        //    rules' decisions.
        let mut decided = metrics::Decided::default();
        // The outputs the store loaded for this advance, parsed: they enter the cache only
        // once the transition committed.
        let mut loaded: Vec<((i64, i64), Outputs)> = Vec::new();
        if let Some(mut snapshot) = transition.steps().await? {
            let taken = rules::review_loops::take_loops(&plan, loops, &snapshot);
            let needed = rules::needed_outputs(&plan, &deps, &reads, loops, &snapshot, &taken);
            // Taken from the cache when the store shows which are needed (so a later
            // eviction cannot take them away), the rest loaded.
            let mut held: HashMap<(i64, i64), Outputs> = HashMap::new();
            let mut missing = Vec::new();
            {
                let mut cache = self.lock_outputs();
                for id in needed {
                    // The step run the completion just ended without outputs: neither in
                    // the cache before the commit nor in the store.
                    if Some(id) == ended_empty {
                        held.insert(id, Outputs::default());
                        continue;
                    }
                    match cache.get(run_id, id) {
                        Some(outputs) => {
                            held.insert(id, outputs);
                        }
                        None => missing.push(id),
                    }
                }
            }
            transition.load_outputs(&mut snapshot, &missing).await?;
            for (&id, json) in &snapshot.outputs {
                let parsed = outputs::parse(json);
                loaded.push((id, parsed.clone()));
                held.insert(id, parsed);
            }
            let mut changes = rules::plan_changes_with(
                &plan, &deps, &reads, loops, &snapshot, taken, &held, &gates, now,
            );
            keep_workspaces(&mut changes, &snapshot.steps, &self.kept_workspaces);
            let changes = decided.note(&plan, &snapshot, changes);
            transition.apply(snapshot, changes).await?;
        }

        // 3. The completing runner's next attempt, then the one commit.
        if let Some(next) = completing.and_then(|c| c.claim_next) {
            transition.claim_next(next).await?;
        }
        let Committed { mut advanced, next } = transition.commit().await?;
        conn.release(&self.store).await;

        {
            let mut cache = self.lock_outputs();
            for (id, outputs) in loaded {
                cache.keep(run_id, id, outputs);
            }
            if let Some(step_run) = ended_empty {
                cache.keep(run_id, step_run, Outputs::default());
            }
        }
        if let Some(attempt) = &completed {
            self.events.steps_moved(run_id, &[attempt.step_run_id]);
        }
        decided.record();
        self.count_steps_read(advanced.steps_read);
        *known = advanced.known.take();
        drop(known);
        self.events.steps_moved(run_id, &advanced.moved);
        self.events.send(Event::Step { run_id });
        if advanced.finished {
            self.forget(run_id);
            self.events.send(Event::RunFinished { run_id });
        }
        Ok(OneAdvance {
            completed,
            fate,
            next,
            promoted: advanced.promoted,
            looped: advanced.looped && !advanced.finished,
            queued: advanced.queued,
        })
    }

    /// Records how an attempt ended and moves its run on. `run_id` is the attempt's run, as
    /// the caller read it with the attempt (its claim or owner row); `runner_id` is the
    /// reporting runner (`None` when the engine ends the attempt itself). Returns false when
    /// the attempt was already final.
    pub async fn complete(
        &self,
        attempt_id: i64,
        run_id: i64,
        runner_id: Option<i64>,
        report: &Report,
    ) -> anyhow::Result<bool> {
        let done = self
            .complete_holding(attempt_id, run_id, runner_id, report, RunnerSaid::default())
            .await?;
        self.events.queued(done.queued);
        Ok(done.completed)
    }

    /// [`Executor::complete`] for a runner's report, with what else its completion said
    /// ([`RunnerSaid`]). The runner takes its next step in the answer: the steps the
    /// completion queued ([`Completed::queued`], retries due now included) are not announced
    /// to the other runners' polls, so the caller claims one first and wakes them only for
    /// the rest. In a chain this spares every idle runner a wake-up and a claim that finds
    /// nothing.
    pub async fn complete_holding(
        &self,
        attempt_id: i64,
        run_id: i64,
        runner_id: Option<i64>,
        report: &Report,
        said: RunnerSaid,
    ) -> anyhow::Result<Completed> {
        let RunnerSaid {
            usage,
            model,
            started_ms_ago,
            claims_next,
            next_labels,
        } = said;
        let cost_micros = crate::pricing::attempt_cost(&self.prices, model.as_deref(), usage);
        let now = now_ms();
        let status = match report.outcome {
            plue_types::protocol::Outcome::Succeeded => AttemptStatus::Succeeded,
            plue_types::protocol::Outcome::Failed => AttemptStatus::Failed,
            plue_types::protocol::Outcome::Cancelled => AttemptStatus::Cancelled,
        };
        let end = AttemptEnd {
            status,
            exit_code: report.exit_code.map(i64::from),
            reason: report.reason.as_deref(),
            at: now,
            usage,
            model: model.as_deref(),
            cost_micros: cost_micros.and_then(|c| i64::try_from(c).ok()),
            has_outputs: !report.outputs.is_empty(),
            started_at: started_ms_ago
                .map(|ago| now.saturating_sub(i64::try_from(ago).unwrap_or(i64::MAX))),
            runner_claims_next: claims_next && runner_id.is_some(),
        };
        let completing = Completing {
            attempt_id,
            runner_id,
            end: &end,
            report,
            claim_next: runner_id
                .zip(next_labels.as_deref())
                .filter(|_| end.runner_claims_next)
                .map(|(runner_id, label_sets)| ClaimNext {
                    runner_id,
                    label_sets,
                }),
        };
        // The attempt ends in the transition of the run's advance: one commit for both.
        let (one, then) = match self
            .advance_one(run_id, Some(completing), ThenAdvance::Yes)
            .await
        {
            Ok(one) => {
                let then = if one.looped {
                    Some(run_id)
                } else {
                    one.promoted
                };
                (one, then)
            }
            // Whatever kept the two from committing together (the advance's own trouble
            // included) must not keep the attempt from ending: it ends alone, through the
            // same transition without the advance or a claim, then the run is advanced as
            // after any other change.
            Err(error) => {
                tracing::warn!(
                    run = run_id,
                    attempt = attempt_id,
                    "ending the attempt with its run's advance failed, ending it alone: {error:#}"
                );
                let alone = Completing {
                    claim_next: None,
                    ..completing
                };
                let one = self
                    .advance_one(run_id, Some(alone), ThenAdvance::No)
                    .await
                    .with_context(|| format!("completing attempt {attempt_id}"))?;
                (one, Some(run_id))
            }
        };
        let OneAdvance {
            completed: Some(attempt),
            fate,
            queued,
            next: claimed,
            ..
        } = one
        else {
            return Ok(Completed::default());
        };
        if let Some((ready_at, started_at)) = attempt.folded_start {
            metrics::step_started(ready_at, started_at);
        }
        let retry_now = fate.as_ref().is_some_and(|f| f.retry_now);
        if let Some(ended) = fate.and_then(|f| f.metric) {
            ended.record();
        }
        if let Some(usage) = usage {
            let label = self.prices.label(model.as_deref().unwrap_or_default());
            metrics::record(metrics::Event::LlmUsage {
                model: &label,
                usage,
                cost_micros,
            });
        }
        let queued = match self.advance_chain(then, queued).await {
            Ok(queued) => queued,
            // The report and the claim committed: the claim must reach the runner. The
            // run left behind is advanced again by the sweeper's pass over active runs.
            Err(error) if matches!(claimed, NextClaim::Claimed(_)) => {
                tracing::warn!(
                    run = run_id,
                    "advancing after attempt {attempt_id}: {error:#}"
                );
                queued
            }
            Err(error) => return Err(error),
        };
        Ok(Completed {
            completed: true,
            // A retry without backoff is claimable now; later ones are found by the
            // pollers' own timer.
            queued: queued + usize::from(retry_now),
            next: claimed,
        })
    }
}
