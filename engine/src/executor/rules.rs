//! The executor's decisions as pure functions over a run's stored state: which steps to
//! queue, skip, fail or cancel ([`plan_changes`]) and what follows an attempt
//! ([`step_after`]). The rules themselves are in [`crate::schedule`]; this module maps them
//! onto store rows and dispatch documents.
//!
//! Review loops ([`evaluator::loops`]): when a loop's source failed and may still go back,
//! [`take_loops`] sets its region to pending in the next iteration before anything else is
//! decided; a loop that gave up fails the run with a reason that says so.
//!
//! Outputs: an advance reads only the outputs [`needed_outputs`] names (finished steps a
//! pending step reads), so its cost does not grow with what the run has stored; an attempt
//! whose outputs would take the run past [`MAX_RUN_OUTPUT_BYTES`] fails its step.

use std::collections::{BTreeMap, HashMap};

use evaluator::loops::Loops;
use evaluator::plan::Plan;
use runner::protocol::Outcome;

use super::outputs::{Outputs, MAX_RUN_OUTPUT_BYTES};

use crate::dispatch::{self, StepResult};
use crate::schedule::{self, AfterAttempt, AttemptOutcome, Decision, StepStatus};
use crate::store::RunSnapshot;
use crate::store::{CompletedAttempt, StepAfter, StepChange, StepRunRow};

pub fn parse_status(text: &str) -> StepStatus {
    match text {
        "pending" => StepStatus::Pending,
        "queued" => StepStatus::Queued,
        "claimed" => StepStatus::Claimed,
        "waiting" => StepStatus::Waiting,
        "running" => StepStatus::Running,
        "succeeded" => StepStatus::Succeeded,
        "failed" => StepStatus::Failed,
        "skipped" => StepStatus::Skipped,
        _ => StepStatus::Cancelled,
    }
}

/// The run as the schedule sees it once the review loops due now have gone back.
struct Looped {
    statuses: Vec<StepStatus>,
    /// Each step run's iteration (1 outside loops).
    iterations: Vec<i64>,
    /// The [`StepChange::Loop`]s that get it there.
    changes: Vec<StepChange>,
}

/// The run's statuses and iterations with the review loops that are due taken
/// ([`take_due_loops`]).
fn take_loops(plan: &Plan, loops: &Loops, snapshot: &RunSnapshot) -> Looped {
    let rows = &snapshot.steps;
    let mut looped = Looped {
        statuses: rows.iter().map(|r| parse_status(&r.status)).collect(),
        iterations: rows.iter().map(|r| r.iteration.max(1)).collect(),
        changes: Vec::new(),
    };
    if !snapshot.cancel_requested {
        take_due_loops(
            plan,
            loops,
            rows,
            &mut looped.statuses,
            &mut looped.iterations,
            &mut looped.changes,
        );
    }
    looped
}

/// Takes every review loop that is due: its source failed (after its retries), it went
/// back fewer than `max_loops` times and its region is final. The region becomes pending
/// in the next iteration *before* anything else is decided, so the source's
/// `when="failure"`/`"always"` dependents never see a failure that a loop answers, and the
/// run does not end. Returns whether a loop was taken. Never called for a run being
/// cancelled.
fn take_due_loops(
    plan: &Plan,
    loops: &Loops,
    rows: &[StepRunRow],
    statuses: &mut [StepStatus],
    iterations: &mut [i64],
    changes: &mut Vec<StepChange>,
) -> bool {
    let mut taken = false;
    for l in &loops.loops {
        let iteration = iterations[l.source];
        let due = statuses[l.source] == StepStatus::Failed
            && iteration <= i64::from(l.max_loops)
            && l.region.iter().all(|&m| statuses[m].is_final());
        if !due {
            continue;
        }
        let next = iteration + 1;
        for &m in &l.region {
            statuses[m] = StepStatus::Pending;
            iterations[m] = next;
        }
        changes.push(StepChange::Loop {
            step_run_ids: l.region.iter().map(|&m| rows[m].id).collect(),
            iteration: next,
            reason: format!(
                "loop {iteration} of {}: '{}' failed, back to '{}'",
                l.max_loops, plan.steps[l.source].id, plan.steps[l.target].id
            ),
        });
        taken = true;
    }
    taken
}

/// The step runs whose outputs [`plan_changes`] may read, as (step run, iteration): the
/// finished steps some pending step reads (`reads`, by step index: see
/// [`dispatch::reads`]), and the previous iteration of the later steps of a loop that a
/// pending step of it reads as feedback. A step that finishes during the advance itself
/// (skipped, failed or cancelled there) never ran, so it has none.
pub(crate) fn needed_outputs(
    plan: &Plan,
    reads: &[Vec<usize>],
    loops: &Loops,
    snapshot: &RunSnapshot,
) -> Vec<(i64, i64)> {
    let rows = &snapshot.steps;
    if rows.len() != reads.len() || rows.len() != plan.steps.len() {
        return Vec::new();
    }
    let looped = take_loops(plan, loops, snapshot);
    let mut needed: Vec<Option<i64>> = vec![None; rows.len()];
    for (i, read) in reads.iter().enumerate() {
        if looped.statuses[i] != StepStatus::Pending {
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
    rows.iter()
        .zip(needed)
        .filter_map(|(row, iteration)| Some((row.id, iteration?)))
        .collect()
}

/// The changes that move a run forward: cancellation, queueing within `max_parallel`,
/// skips (repeated until nothing more is decidable) and the run's end, after the review
/// loops that are due went back ([`take_loops`]). `outputs` holds the outputs of the step
/// runs [`needed_outputs`] named, by (step run, iteration).
pub(crate) fn plan_changes(
    plan: &Plan,
    reads: &[Vec<usize>],
    loops: &Loops,
    snapshot: &RunSnapshot,
    outputs: &HashMap<(i64, i64), Outputs>,
    now: i64,
) -> Vec<StepChange> {
    let rows = &snapshot.steps;
    if rows.len() != plan.steps.len() || reads.len() != plan.steps.len() {
        return vec![StepChange::FinishRun {
            status: "failed",
            reason: Some("the stored steps do not match the run's plan".into()),
        }];
    }
    let mut looped = take_loops(plan, loops, snapshot);
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
            let mut progressed = false;
            for decision in schedule::decide(plan, statuses) {
                match decision {
                    // An approval holds no runner, so it does not count against max_parallel.
                    Decision::Queue { step } if super::approvals::is_approval(plan, step) => {
                        statuses[step] = StepStatus::Waiting;
                        changes.push(super::approvals::wait(plan, step, rows[step].id, now));
                        progressed = true;
                    }
                    Decision::Queue { step } if active < snapshot.max_parallel => {
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
                                active += 1;
                                statuses[step] = StepStatus::Queued;
                                StepChange::Queue {
                                    step_run_id: rows[step].id,
                                    timeout_ms: (dispatch.timeout_secs as i64).saturating_mul(1000),
                                    dispatch: serde_json::to_string(&dispatch).unwrap_or_default(),
                                    ready_at: now,
                                }
                            }
                            Err(reason) => {
                                statuses[step] = StepStatus::Failed;
                                StepChange::Fail {
                                    step_run_id: rows[step].id,
                                    reason,
                                }
                            }
                        };
                        changes.push(change);
                        progressed = true;
                    }
                    Decision::Queue { .. } => {}
                    Decision::Skip { step, reason } => {
                        statuses[step] = StepStatus::Skipped;
                        changes.push(StepChange::Skip {
                            step_run_id: rows[step].id,
                            reason,
                        });
                        progressed = true;
                    }
                }
            }
            if !progressed {
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
    if let Some(status) = schedule::run_status(&statuses) {
        let reason = match status {
            schedule::RunStatus::Succeeded => None,
            schedule::RunStatus::Cancelled => Some(
                snapshot
                    .cancel_reason
                    .clone()
                    .unwrap_or_else(|| "cancelled".to_string()),
            ),
            schedule::RunStatus::Failed => Some(failed_reason(plan, loops, &statuses, &iterations)),
        };
        changes.push(StepChange::FinishRun {
            status: status.as_str(),
            reason,
        });
    }
    changes
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
            let (iteration, feedback) = if statuses[j].is_final() {
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
                },
            ))
        })
        .collect()
}

/// What a runner reported about an attempt (or what the engine concluded for it).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub outputs: BTreeMap<String, String>,
}

/// What follows an attempt: final, or a retry after the step's doubling backoff. A run
/// being cancelled never retries.
pub(crate) fn step_after(
    plan: &Plan,
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
            status: "cancelled",
            reason: Some("cancelled".into()),
            exit_code,
            outputs,
        };
    }
    if let Some(reason) = too_many {
        // Final: another attempt would store as much again.
        return StepAfter::Final {
            status: "failed",
            reason: Some(reason),
            exit_code,
            outputs,
        };
    }
    let Some(step) = plan.steps.iter().find(|s| s.id == attempt.step_id) else {
        return StepAfter::Final {
            status: "failed",
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
            status: status.as_str(),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use evaluator::plan::{Action, Step};

    use super::*;

    fn bash(id: &str, command: &str, deps: &[&str]) -> Step {
        Step::new(
            id,
            Action::Bash {
                command: command.into(),
            },
        )
        .after(deps)
    }

    fn snapshot(plan: &Plan, statuses: &[&str]) -> RunSnapshot {
        let steps = plan
            .steps
            .iter()
            .zip(statuses)
            .enumerate()
            .map(|(i, (step, status))| StepRunRow {
                id: 100 + i as i64,
                run_id: 1,
                step_id: step.id.clone(),
                position: i as i64,
                status: status.to_string(),
                attempts: 0,
                exit_code: None,
                reason: None,
                outputs: String::new(),
                ready_at: None,
                started_at: None,
                finished_at: None,
                usage: None,
                iteration: 1,
            })
            .collect();
        RunSnapshot {
            run_id: 1,
            cancel_requested: false,
            cancel_reason: None,
            max_parallel: 10,
            steps,
            outputs: BTreeMap::new(),
        }
    }

    fn plan() -> Plan {
        Plan {
            name: "p".into(),
            triggers: vec![],
            env: BTreeMap::new(),
            steps: vec![
                bash("a", "true", &[]),
                bash("big", "true", &[]),
                bash("b", "echo {{ steps.a.outputs.x }}", &["mid"]),
                bash("mid", "true", &["a"]),
                bash("c", "true", &["big", "mid"]),
            ],
            concurrency: None,
        }
    }

    #[test]
    fn an_advance_needs_only_finished_steps_that_pending_steps_read() {
        let plan = plan();
        let reads = dispatch::reads(&plan);
        // `b` reads `a` (a reference) and `mid` (a dependency); `c` reads `big` and `mid`.
        assert_eq!(reads, [vec![], vec![], vec![0, 3], vec![0], vec![1, 3]]);
        let snap = snapshot(
            &plan,
            &["succeeded", "succeeded", "pending", "succeeded", "running"],
        );
        // `c` is not pending: `big`'s outputs are not needed.
        let loops = Loops::of(&plan);
        assert_eq!(
            needed_outputs(&plan, &reads, &loops, &snap),
            [(100, 1), (103, 1)]
        );
        let snap = snapshot(
            &plan,
            &[
                "succeeded",
                "succeeded",
                "succeeded",
                "succeeded",
                "succeeded",
            ],
        );
        assert!(needed_outputs(&plan, &reads, &loops, &snap).is_empty());
    }

    #[test]
    fn a_dispatch_reads_the_outputs_it_was_given() {
        let plan = plan();
        let reads = dispatch::reads(&plan);
        let snap = snapshot(
            &plan,
            &["succeeded", "running", "pending", "succeeded", "pending"],
        );
        let outputs = HashMap::from([
            (
                (100, 1),
                Arc::new(BTreeMap::from([("x".into(), "1.0".into())])),
            ),
            ((103, 1), Arc::new(BTreeMap::new())),
        ]);
        let changes = plan_changes(&plan, &reads, &Loops::default(), &snap, &outputs, 5);
        let [StepChange::Queue {
            step_run_id: 102,
            dispatch,
            ..
        }] = changes.as_slice()
        else {
            panic!("{changes:?}");
        };
        let dispatch: dispatch::Dispatch = serde_json::from_str(dispatch).unwrap();
        assert_eq!(dispatch.env["PLUE_OUTPUT_A_X"], "1.0");
    }

    fn attempt(stored: usize) -> CompletedAttempt {
        CompletedAttempt {
            run_id: 1,
            step_run_id: 100,
            step_id: "a".into(),
            number: 1,
            iteration: 1,
            number_in_iteration: 1,
            cancel_requested: false,
            started_at: None,
            run_outputs_bytes: stored as i64,
        }
    }

    fn succeeded(value: &str) -> Report {
        Report {
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            reason: None,
            outputs: BTreeMap::from([("k".into(), value.into())]),
        }
    }

    #[test]
    fn a_step_whose_outputs_pass_the_run_bound_fails_and_stores_none() {
        let plan = plan();
        let value = "v".repeat(1000);
        let after = step_after(
            &plan,
            &attempt(MAX_RUN_OUTPUT_BYTES - 2000),
            &succeeded(&value),
            0,
        );
        let StepAfter::Final {
            status: "succeeded",
            outputs,
            ..
        } = after
        else {
            panic!("{after:?}");
        };
        assert!(outputs.contains(&value));
        let after = step_after(
            &plan,
            &attempt(MAX_RUN_OUTPUT_BYTES - 500),
            &succeeded(&value),
            0,
        );
        let StepAfter::Final {
            status: "failed",
            outputs,
            reason: Some(reason),
            ..
        } = after
        else {
            panic!("{after:?}");
        };
        assert_eq!(outputs, "{}");
        assert!(
            reason.contains("past the limit of 64 MiB") && !reason.contains(&value),
            "{reason}"
        );
        // A step without outputs is never refused.
        let mut none = succeeded("");
        none.outputs.clear();
        let after = step_after(&plan, &attempt(MAX_RUN_OUTPUT_BYTES + 1), &none, 0);
        assert!(
            matches!(
                after,
                StepAfter::Final {
                    status: "succeeded",
                    ..
                }
            ),
            "{after:?}"
        );
    }

    /// build → test → review (loop_to build, max_loops 2) → deploy, plus a failure handler
    /// and a cleanup on review.
    fn loop_plan() -> Plan {
        let mut review = bash("review", "false", &["test"]);
        review.loop_to = Some("build".into());
        review.max_loops = Some(2);
        Plan {
            name: "p".into(),
            triggers: vec![],
            env: BTreeMap::new(),
            steps: vec![
                bash("build", "echo \"{{ steps.review.outputs.feedback }}\"", &[]),
                bash("test", "true", &["build"]),
                review,
                bash("deploy", "true", &["review"]),
                bash("notify", "true", &["review"]).on(evaluator::plan::When::Failure),
                bash("cleanup", "true", &["review"]).on(evaluator::plan::When::Always),
            ],
            concurrency: None,
        }
    }

    fn looped_snapshot(plan: &Plan, statuses: &[&str], iteration: i64) -> RunSnapshot {
        let mut snap = snapshot(plan, statuses);
        for row in &mut snap.steps[..3] {
            row.iteration = iteration;
        }
        snap
    }

    #[test]
    fn a_failed_review_sends_its_loop_back_before_anything_is_decided() {
        let plan = loop_plan();
        let loops = Loops::of(&plan);
        let reads = dispatch::reads(&plan);
        let statuses = [
            "succeeded",
            "succeeded",
            "failed",
            "pending",
            "pending",
            "pending",
        ];
        let snap = looped_snapshot(&plan, &statuses, 1);
        // The target reads the failed iteration's outputs of the review.
        assert_eq!(needed_outputs(&plan, &reads, &loops, &snap), [(102, 1)]);
        let outputs = HashMap::from([(
            (102, 1),
            Arc::new(BTreeMap::from([("feedback".into(), "too slow".into())])),
        )]);
        let changes = plan_changes(&plan, &reads, &loops, &snap, &outputs, 5);
        let [StepChange::Loop {
            step_run_ids,
            iteration: 2,
            reason,
        }, StepChange::Queue {
            step_run_id: 100,
            dispatch,
            ..
        }] = changes.as_slice()
        else {
            panic!("notify and cleanup are not decided, the run does not end: {changes:?}");
        };
        assert_eq!(step_run_ids, &[100, 101, 102]);
        assert_eq!(reason, "loop 1 of 2: 'review' failed, back to 'build'");
        let dispatch: dispatch::Dispatch = serde_json::from_str(dispatch).unwrap();
        assert_eq!(dispatch.env["PLUE_OUTPUT_REVIEW_FEEDBACK"], "too slow");
        assert_eq!(dispatch.env["PLUE_ITERATION"], "2");
    }

    #[test]
    fn in_the_first_iteration_feedback_reads_as_empty() {
        let plan = loop_plan();
        let loops = Loops::of(&plan);
        let reads = dispatch::reads(&plan);
        let snap = looped_snapshot(&plan, &["pending"; 6], 1);
        assert!(needed_outputs(&plan, &reads, &loops, &snap).is_empty());
        let changes = plan_changes(&plan, &reads, &loops, &snap, &HashMap::new(), 5);
        let [StepChange::Queue { dispatch, .. }] = changes.as_slice() else {
            panic!("{changes:?}");
        };
        let dispatch: dispatch::Dispatch = serde_json::from_str(dispatch).unwrap();
        assert_eq!(dispatch.env["PLUE_OUTPUT_REVIEW_FEEDBACK"], "");
        assert_eq!(dispatch.env["PLUE_ITERATION"], "1");
        // A review that failed without setting the output: empty too, not a failed step.
        let snap = looped_snapshot(
            &plan,
            &[
                "pending", "pending", "pending", "pending", "pending", "pending",
            ],
            3,
        );
        let outputs = HashMap::from([((102, 2), Arc::new(BTreeMap::new()))]);
        let changes = plan_changes(&plan, &reads, &loops, &snap, &outputs, 5);
        assert!(
            matches!(
                changes.as_slice(),
                [StepChange::Queue {
                    step_run_id: 100,
                    ..
                }]
            ),
            "{changes:?}"
        );
    }

    #[test]
    fn a_loop_that_went_back_max_loops_times_fails_the_run_and_says_so() {
        let plan = loop_plan();
        let loops = Loops::of(&plan);
        let reads = dispatch::reads(&plan);
        let statuses = [
            "succeeded",
            "succeeded",
            "failed",
            "pending",
            "pending",
            "pending",
        ];
        let snap = looped_snapshot(&plan, &statuses, 3);
        assert!(needed_outputs(&plan, &reads, &loops, &snap)
            .iter()
            .all(|&(id, _)| id != 100));
        let changes = plan_changes(&plan, &reads, &loops, &snap, &HashMap::new(), 5);
        let names: Vec<String> = changes
            .iter()
            .map(|c| match c {
                StepChange::Skip { step_run_id, .. } => format!("skip {step_run_id}"),
                StepChange::Queue { step_run_id, .. } => format!("queue {step_run_id}"),
                StepChange::FinishRun { status, reason } => {
                    format!("{status}: {}", reason.as_deref().unwrap_or(""))
                }
                other => format!("{other:?}"),
            })
            .collect();
        // Now the failure handlers run, and the run fails once they are done.
        assert_eq!(names, ["skip 103", "queue 104", "queue 105"]);
        let done = looped_snapshot(
            &plan,
            &[
                "succeeded",
                "succeeded",
                "failed",
                "skipped",
                "succeeded",
                "succeeded",
            ],
            3,
        );
        let changes = plan_changes(&plan, &reads, &loops, &done, &HashMap::new(), 5);
        assert_eq!(
            changes,
            [StepChange::FinishRun {
                status: "failed",
                reason: Some("review failed after 2 loops back to build".into()),
            }]
        );
    }

    #[test]
    fn a_run_being_cancelled_never_loops() {
        let plan = loop_plan();
        let loops = Loops::of(&plan);
        let reads = dispatch::reads(&plan);
        let mut snap = looped_snapshot(
            &plan,
            &[
                "succeeded",
                "succeeded",
                "failed",
                "pending",
                "pending",
                "pending",
            ],
            1,
        );
        snap.cancel_requested = true;
        let changes = plan_changes(&plan, &reads, &loops, &snap, &HashMap::new(), 5);
        assert!(
            changes
                .iter()
                .all(|c| !matches!(c, StepChange::Loop { .. })),
            "{changes:?}"
        );
        assert!(matches!(
            changes.last(),
            Some(StepChange::FinishRun {
                status: "cancelled",
                ..
            })
        ));
    }

    #[test]
    fn retries_count_within_an_iteration() {
        let mut plan = loop_plan();
        plan.steps[2].retries = 1;
        let failed = Report {
            outcome: Outcome::Failed,
            exit_code: Some(1),
            reason: Some("exit code 1".into()),
            outputs: BTreeMap::new(),
        };
        let mut attempt = attempt(0);
        attempt.step_id = "review".into();
        // The fourth attempt overall is the first of iteration 2: it has its retry.
        attempt.number = 3;
        attempt.iteration = 2;
        attempt.number_in_iteration = 1;
        assert!(matches!(
            step_after(&plan, &attempt, &failed, 0),
            StepAfter::Retry { .. }
        ));
        attempt.number = 4;
        attempt.number_in_iteration = 2;
        assert!(matches!(
            step_after(&plan, &attempt, &failed, 0),
            StepAfter::Final {
                status: "failed",
                ..
            }
        ));
    }
}
