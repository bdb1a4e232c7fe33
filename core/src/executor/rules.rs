//! The executor's decisions as pure functions over a run's stored state: which steps to
//! queue, skip, fail or cancel (`plan_changes`) and what follows an attempt
//! (`step_after`). The rules themselves are in [`crate::schedule`]; this module maps them
//! onto store rows and dispatch documents.
//!
//! Review loops ([`evaluator::loops`]): when a loop's source failed and may still go back,
//! `take_loops` (`review_loops.rs`) sets its region to pending in the next iteration
//! before anything else is decided; a loop that gave up fails the run with a reason that
//! says so.
//!
//! Outputs: an advance reads only the outputs `needed_outputs` names (finished steps a
//! pending step reads), so its cost does not grow with what the run has stored; an attempt
//! whose outputs would take the run past [`MAX_RUN_OUTPUT_BYTES`] fails its step.

use std::collections::{BTreeMap, HashMap};

use evaluator::loops::Loops;
use evaluator::plan::Plan;
use plue_types::protocol::Outcome;
use plue_types::status::{RunStatus, StepStatus};

use plue_store::{CompletedAttempt, RunSnapshot, StepAfter, StepChange, StepRunRow};

use super::environments::{self, Admit, Gate};
use super::outputs::{Outputs, MAX_RUN_OUTPUT_BYTES};
use crate::dispatch::{self, StepResult};
use crate::schedule::{self, AfterAttempt, AttemptOutcome, Decision};
use review_loops::{take_due_loops, Looped};

/// The step runs whose outputs [`plan_changes`] may read, as (step run, iteration): the
/// finished steps read (`reads`, by step index: see [`dispatch::reads`]) by a pending step
/// this advance may dispatch, and the previous iteration of the later steps of a loop that
/// such a step reads as feedback. A step that finishes during the advance itself (skipped,
/// failed or cancelled there) never ran, so it has none.
///
/// A pending step with an active dependency (queued, claimed, running, waiting) cannot be
/// dispatched by this advance — only pending steps end during one —, so its reads are left
/// for a later advance: a join of 10,000 steps costs an advance nothing until its last
/// dependency ends, instead of a look-up of every finished one each time.
pub(crate) fn needed_outputs(
    plan: &Plan,
    deps: &[Vec<usize>],
    reads: &[Vec<usize>],
    loops: &Loops,
    snapshot: &RunSnapshot,
    looped: &Looped,
) -> Vec<(i64, i64)> {
    let rows = &snapshot.steps;
    if rows.len() != reads.len()
        || rows.len() != plan.steps.len()
        || deps.len() != rows.len()
        || looped.statuses.len() != rows.len()
    {
        return Vec::new();
    }
    let mut needed: Vec<Option<i64>> = vec![None; rows.len()];
    for (i, read) in reads.iter().enumerate() {
        if looped.statuses[i] != StepStatus::Pending {
            continue;
        }
        // From the last: in a fan-in the dependencies queued last are the ones still active.
        let blocked = deps[i]
            .iter()
            .rev()
            .any(|&d| !looped.statuses[d].is_final() && looped.statuses[d] != StepStatus::Pending);
        if blocked {
            continue;
        }
        for &j in read {
            if looped.statuses[j].is_final() {
                needed[j] = Some(looped.iterations[j]);
            } else if loops.is_feedback(i, j) && looped.iterations[j] > 1 {
                needed[j] = Some(looped.iterations[j] - 1);
            }
        }
    }
    let mut needed: Vec<(i64, i64)> = rows
        .iter()
        .zip(needed)
        .filter_map(|(row, iteration)| Some((row.id, iteration?)))
        .collect();
    // `{{ steps.<id>.rounds }}`: every earlier round of a step of the reader's own loop.
    for (i, read) in reads.iter().enumerate() {
        if looped.statuses[i] != StepStatus::Pending || looped.iterations[i] < 2 {
            continue;
        }
        let wanted = dispatch::rounds_read(&plan.steps[i]);
        for &j in read {
            if loops.same_loop(i, j) && wanted.contains(&plan.steps[j].id) {
                needed.extend((1..looped.iterations[i]).map(|round| (rows[j].id, round)));
            }
        }
    }
    needed.sort_unstable();
    needed.dedup();
    needed
}

/// The changes that move a run forward: cancellation, queueing within `max_parallel`,
/// skips (repeated until nothing more is decidable) and the run's end, after the review
/// loops that are due went back ([`take_loops`](review_loops::take_loops)). `outputs`
/// holds the outputs of the step runs [`needed_outputs`] named, by (step run, iteration).
#[cfg(test)]
pub(crate) fn plan_changes(
    plan: &Plan,
    reads: &[Vec<usize>],
    loops: &Loops,
    snapshot: &RunSnapshot,
    outputs: &HashMap<(i64, i64), Outputs>,
    now: i64,
) -> Vec<StepChange> {
    let deps = schedule::dependency_indices(plan);
    let looped = review_loops::take_loops(plan, loops, snapshot);
    plan_changes_with(
        plan,
        &deps,
        reads,
        loops,
        snapshot,
        looped,
        outputs,
        &[],
        now,
    )
}

/// [`plan_changes`] with the plan's dependencies by index
/// ([`schedule::dependency_indices`]) computed beforehand, as the executor keeps them, the
/// run after its due loops ([`take_loops`](review_loops::take_loops) of the same
/// snapshot), and the environment gate of each step ([`environments::gates`]; empty:
/// none): a step the schedule would queue fails, waits for its environment's review or is
/// queued after the environment's wait timer as [`environments::admit`] says.
#[allow(clippy::too_many_arguments)] // each is a different view of the one run
pub(crate) fn plan_changes_with(
    plan: &Plan,
    deps: &[Vec<usize>],
    reads: &[Vec<usize>],
    loops: &Loops,
    snapshot: &RunSnapshot,
    looped: Looped,
    outputs: &HashMap<(i64, i64), Outputs>,
    gates: &[Option<Gate>],
    now: i64,
) -> Vec<StepChange> {
    let rows = &snapshot.steps;
    if rows.len() != plan.steps.len()
        || reads.len() != plan.steps.len()
        || deps.len() != plan.steps.len()
        || looped.statuses.len() != plan.steps.len()
    {
        return vec![StepChange::FinishRun {
            status: RunStatus::Failed,
            reason: Some("the stored steps do not match the run's plan".into()),
        }];
    }
    let mut looped = looped;
    let mut changes = std::mem::take(&mut looped.changes);
    if snapshot.cancel_requested {
        let statuses = &mut looped.statuses;
        for (i, status) in statuses.iter_mut().enumerate() {
            if matches!(
                status,
                StepStatus::Pending | StepStatus::Queued | StepStatus::Waiting
            ) {
                changes.push(StepChange::Cancel {
                    step_run_id: rows[i].id,
                });
                *status = StepStatus::Cancelled;
            }
        }
    } else {
        let statuses = &mut looped.statuses;
        let iterations = &mut looped.iterations;
        let mut active = statuses
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    StepStatus::Queued | StepStatus::Claimed | StepStatus::Running
                )
            })
            .count() as i64;
        loop {
            let before = changes.len();
            for decision in schedule::decide_with(plan, deps, statuses) {
                let decision = match decision {
                    Decision::Queue { step } => when::decide(
                        step,
                        plan,
                        &reads[step],
                        rows,
                        statuses,
                        iterations,
                        loops,
                        outputs,
                    ),
                    skip => skip,
                };
                match decision {
                    // An approval holds no runner, so it does not count against max_parallel.
                    Decision::Queue { step } if super::approvals::is_approval(plan, step) => {
                        statuses[step] = StepStatus::Waiting;
                        changes.push(super::approvals::wait(plan, step, rows[step].id, now));
                    }
                    // The environment's gate comes first: a refused step fails, one
                    // waiting for its review holds no runner either.
                    Decision::Queue { step } if !admits(gates, rows, iterations, step, now) => {
                        let gate = gates.get(step).and_then(Option::as_ref);
                        match environments::admit(gate, &rows[step], iterations[step], now) {
                            Admit::Fail(reason) => {
                                statuses[step] = StepStatus::Failed;
                                changes.push(StepChange::Fail {
                                    step_run_id: rows[step].id,
                                    reason,
                                });
                            }
                            Admit::Review { deadline } => {
                                statuses[step] = StepStatus::Waiting;
                                changes.push(StepChange::Wait {
                                    step_run_id: rows[step].id,
                                    deadline,
                                });
                            }
                            Admit::Queue { .. } => unreachable!("admits() said it does not queue"),
                        }
                    }
                    Decision::Queue { step } if active < snapshot.max_parallel => {
                        let gate = gates.get(step).and_then(Option::as_ref);
                        let ready_at =
                            match environments::admit(gate, &rows[step], iterations[step], now) {
                                Admit::Queue { ready_at } => ready_at,
                                _ => now,
                            };
                        let results = results(
                            step,
                            &reads[step],
                            rows,
                            statuses,
                            iterations,
                            loops,
                            outputs,
                        );
                        let change = match dispatch::build(
                            plan,
                            &plan.steps[step],
                            snapshot.run_id,
                            &results,
                        ) {
                            Ok(mut dispatch) => {
                                if loops.loop_of(step).is_some() {
                                    dispatch.env.insert(
                                        "PLUE_ITERATION".into(),
                                        iterations[step].to_string(),
                                    );
                                }
                                // `loop_workspace="previous"`: keep this round's workspace,
                                // and start a later round from the previous one's.
                                if loops.resumes_own_workspace(plan, step) {
                                    dispatch.handoff.keep_workspace = true;
                                    if iterations[step] > 1 {
                                        dispatch.handoff.workspace_from =
                                            Some(plan.steps[step].id.clone());
                                    }
                                }
                                active += 1;
                                statuses[step] = StepStatus::Queued;
                                StepChange::Queue {
                                    step_run_id: rows[step].id,
                                    timeout_ms: (dispatch.timeout_secs as i64).saturating_mul(1000),
                                    dispatch: serde_json::to_string(&dispatch).unwrap_or_default(),
                                    ready_at,
                                }
                            }
                            Err(reason) => {
                                statuses[step] = StepStatus::Failed;
                                StepChange::Fail {
                                    step_run_id: rows[step].id,
                                    reason: reason.to_string(),
                                }
                            }
                        };
                        changes.push(change);
                    }
                    Decision::Queue { .. } => {}
                    Decision::Skip { step, reason } => {
                        statuses[step] = StepStatus::Skipped;
                        changes.push(StepChange::Skip {
                            step_run_id: rows[step].id,
                            reason,
                        });
                    }
                }
            }
            // Only a step that became final makes another decidable (its dependents): a
            // pass that queued or held steps and ended none is the last, without one more
            // walk of the plan to find nothing.
            let finalized = changes[before..]
                .iter()
                .any(|c| matches!(c, StepChange::Skip { .. } | StepChange::Fail { .. }));
            if !finalized {
                // A source that failed in this advance (its dispatch failed) loops now;
                // the target is dispatched by the next advance, which loads the outputs it
                // reads (the executor advances again after a loop).
                take_due_loops(plan, loops, rows, statuses, iterations, &mut changes);
                break;
            }
        }
    }
    let Looped {
        statuses,
        iterations,
        ..
    } = looped;
    if let Some(status) = schedule::run_status_of(plan, &statuses) {
        let reason = match status {
            RunStatus::Succeeded => None,
            RunStatus::Cancelled => Some(
                snapshot
                    .cancel_reason
                    .clone()
                    .unwrap_or_else(|| "cancelled".to_string()),
            ),
            RunStatus::Failed => Some(failed_reason(plan, loops, &statuses, &iterations)),
        };
        changes.push(StepChange::FinishRun { status, reason });
    }
    changes
}

/// Whether the environment gate lets step `step` be queued now (steps without one: yes).
fn admits(
    gates: &[Option<Gate>],
    rows: &[StepRunRow],
    iterations: &[i64],
    step: usize,
    now: i64,
) -> bool {
    let gate = gates.get(step).and_then(Option::as_ref);
    gate.is_none()
        || matches!(
            environments::admit(gate, &rows[step], iterations[step], now),
            Admit::Queue { .. }
        )
}

/// Why a run failed: its failed steps, and for a loop that gave up, how often it went back
/// ("review failed after 2 loops back to build").
fn failed_reason(
    plan: &Plan,
    loops: &Loops,
    statuses: &[StepStatus],
    iterations: &[i64],
) -> String {
    let mut exhausted = Vec::new();
    let mut failed = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        if statuses[i] != StepStatus::Failed {
            continue;
        }
        match loops.loop_of(i).filter(|l| l.source == i) {
            Some(l) => exhausted.push(format!(
                "{} failed after {} {} back to {}",
                step.id,
                iterations[i] - 1,
                if iterations[i] == 2 { "loop" } else { "loops" },
                plan.steps[l.target].id
            )),
            None => failed.push(step.id.as_str()),
        }
    }
    if !failed.is_empty() {
        exhausted.push(format!("failed steps: {}", failed.join(", ")));
    }
    exhausted.join("; ")
}

/// Outputs and statuses of the steps among `read` that `step`'s dispatch sees: the final
/// ones, and the later steps of its review loop (feedback: the previous iteration's
/// outputs, none in the first).
fn results<'a>(
    step: usize,
    read: &[usize],
    rows: &'a [StepRunRow],
    statuses: &[StepStatus],
    iterations: &[i64],
    loops: &Loops,
    outputs: &HashMap<(i64, i64), Outputs>,
) -> BTreeMap<&'a str, StepResult<'static>> {
    read.iter()
        .filter_map(|&j| {
            let row = &rows[j];
            // Only its rounds: a step's own outputs are refused by validation.
            let (iteration, feedback) = if j == step {
                (iterations[j] - 1, true)
            } else if statuses[j].is_final() {
                (iterations[j], false)
            } else if loops.is_feedback(step, j) {
                (iterations[j] - 1, true)
            } else {
                return None;
            };
            Some((
                row.step_id.as_str(),
                StepResult {
                    status: statuses[j].as_str(),
                    outputs: outputs
                        .get(&(row.id, iteration))
                        .cloned()
                        .unwrap_or_default(),
                    feedback,
                    rounds: rounds(row.id, iterations[step], loops.same_loop(step, j), outputs),
                },
            ))
        })
        .collect()
}

/// `{{ steps.<id>.rounds }}` of step run `step_run_id` for a reader in round `reader_round`:
/// the outputs of rounds 1 to `reader_round - 1` that were loaded, as JSON; `[]` outside the
/// reader's loop.
fn rounds(
    step_run_id: i64,
    reader_round: i64,
    same_loop: bool,
    outputs: &HashMap<(i64, i64), Outputs>,
) -> std::sync::Arc<str> {
    let rounds: Vec<serde_json::Value> = if same_loop {
        (1..reader_round)
            .filter_map(|round| {
                let outputs = outputs.get(&(step_run_id, round))?;
                Some(serde_json::json!({"round": round, "outputs": **outputs}))
            })
            .collect()
    } else {
        Vec::new()
    };
    serde_json::Value::Array(rounds).to_string().into()
}

/// What a runner reported about an attempt (or what the engine concluded for it).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub outputs: BTreeMap<String, String>,
}

/// What follows an attempt of `step` (the plan's step the attempt is of; `None` when the
/// plan has none of that id): final, or a retry after the step's doubling backoff. A run
/// being cancelled never retries.
pub(crate) fn step_after(
    step: Option<&evaluator::plan::Step>,
    attempt: &CompletedAttempt,
    report: &Report,
    now: i64,
) -> StepAfter {
    let exit_code = report.exit_code.map(i64::from);
    let mut outputs = serde_json::to_string(&report.outputs).unwrap_or_else(|_| "{}".into());
    let stored = usize::try_from(attempt.run_outputs_bytes).unwrap_or(0);
    let over = !report.outputs.is_empty() && stored + outputs.len() > MAX_RUN_OUTPUT_BYTES;
    let too_many = over.then(|| {
        format!(
            "the step's outputs ({} bytes) would take the run's stored outputs past the limit of {} MiB ({stored} bytes stored already); pass large data in files",
            outputs.len(),
            MAX_RUN_OUTPUT_BYTES / (1024 * 1024)
        )
    });
    if over {
        outputs = "{}".into();
    }
    if attempt.cancel_requested || report.outcome == Outcome::Cancelled {
        return StepAfter::Final {
            status: StepStatus::Cancelled,
            reason: Some("cancelled".into()),
            exit_code,
            outputs,
        };
    }
    if let Some(reason) = too_many {
        // Final: another attempt would store as much again.
        return StepAfter::Final {
            status: StepStatus::Failed,
            reason: Some(reason),
            exit_code,
            outputs,
        };
    }
    let Some(step) = step else {
        return StepAfter::Final {
            status: StepStatus::Failed,
            reason: Some(format!(
                "step '{}' is not in the run's plan",
                attempt.step_id
            )),
            exit_code,
            outputs,
        };
    };
    let outcome = match report.outcome {
        Outcome::Succeeded => AttemptOutcome::Succeeded,
        _ => AttemptOutcome::Failed {
            reason: report.reason.clone().unwrap_or_else(|| "failed".into()),
        },
    };
    // Retries count within the review-loop iteration: each iteration has them all.
    let number = u32::try_from(attempt.number_in_iteration).unwrap_or(u32::MAX);
    match schedule::after_attempt(step.retries, step.backoff, number, &outcome) {
        AfterAttempt::Final(status) => StepAfter::Final {
            status,
            reason: report.reason.clone(),
            exit_code,
            outputs,
        },
        AfterAttempt::Retry { delay, .. } => StepAfter::Retry {
            ready_at: now.saturating_add(delay.as_millis() as i64),
            reason: format!(
                "attempt {number} failed ({}); retrying in {}s",
                report.reason.as_deref().unwrap_or("failed"),
                delay.as_secs()
            ),
        },
    }
}

pub(super) mod review_loops;
mod when;

#[cfg(test)]
mod tests;
