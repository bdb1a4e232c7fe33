//! The executor's decisions as pure functions over a run's stored state: which steps to
//! queue, skip, fail or cancel ([`plan_changes`]) and what follows an attempt
//! ([`step_after`]). The rules themselves are in [`crate::schedule`]; this module maps them
//! onto store rows and dispatch documents.
//!
//! Outputs: an advance reads only the outputs [`needed_outputs`] names (finished steps a
//! pending step reads), so its cost does not grow with what the run has stored; an attempt
//! whose outputs would take the run past [`MAX_RUN_OUTPUT_BYTES`] fails its step.

use std::collections::{BTreeMap, HashMap};

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

/// The step runs whose outputs [`plan_changes`] may read: the finished steps some pending
/// step reads (`reads`, by step index: see [`dispatch::reads`]). A step that finishes during
/// the advance itself (skipped, failed or cancelled there) never ran, so it has none.
pub(crate) fn needed_outputs(reads: &[Vec<usize>], snapshot: &RunSnapshot) -> Vec<i64> {
    let rows = &snapshot.steps;
    if rows.len() != reads.len() {
        return Vec::new();
    }
    let mut needed = vec![false; rows.len()];
    for (row, read) in rows.iter().zip(reads) {
        if row.status == "pending" {
            for &j in read {
                needed[j] = parse_status(&rows[j].status).is_final();
            }
        }
    }
    rows.iter()
        .zip(needed)
        .filter(|(_, needed)| *needed)
        .map(|(row, _)| row.id)
        .collect()
}

/// The changes that move a run forward: cancellation, queueing within `max_parallel`,
/// skips (repeated until nothing more is decidable) and the run's end. `outputs` holds the
/// outputs of the step runs [`needed_outputs`] named, by step run id.
pub(crate) fn plan_changes(
    plan: &Plan,
    reads: &[Vec<usize>],
    snapshot: &RunSnapshot,
    outputs: &HashMap<i64, Outputs>,
    now: i64,
) -> Vec<StepChange> {
    let rows = &snapshot.steps;
    if rows.len() != plan.steps.len() || reads.len() != plan.steps.len() {
        return vec![StepChange::FinishRun {
            status: "failed",
            reason: Some("the stored steps do not match the run's plan".into()),
        }];
    }
    let mut statuses: Vec<StepStatus> = rows.iter().map(|r| parse_status(&r.status)).collect();
    let mut changes = Vec::new();
    if snapshot.cancel_requested {
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
            for decision in schedule::decide(plan, &statuses) {
                match decision {
                    // An approval holds no runner, so it does not count against max_parallel.
                    Decision::Queue { step } if super::approvals::is_approval(plan, step) => {
                        statuses[step] = StepStatus::Waiting;
                        changes.push(super::approvals::wait(plan, step, rows[step].id, now));
                        progressed = true;
                    }
                    Decision::Queue { step } if active < snapshot.max_parallel => {
                        let results = results(&reads[step], rows, &statuses, outputs);
                        let change = match dispatch::build(
                            plan,
                            &plan.steps[step],
                            snapshot.run_id,
                            &results,
                        ) {
                            Ok(dispatch) => {
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
                break;
            }
        }
    }
    if let Some(status) = schedule::run_status(&statuses) {
        let reason = match status {
            schedule::RunStatus::Succeeded => None,
            schedule::RunStatus::Cancelled => Some(
                snapshot
                    .cancel_reason
                    .clone()
                    .unwrap_or_else(|| "cancelled".to_string()),
            ),
            schedule::RunStatus::Failed => {
                let failed: Vec<&str> = plan
                    .steps
                    .iter()
                    .zip(&statuses)
                    .filter(|(_, s)| **s == StepStatus::Failed)
                    .map(|(step, _)| step.id.as_str())
                    .collect();
                Some(format!("failed steps: {}", failed.join(", ")))
            }
        };
        changes.push(StepChange::FinishRun {
            status: status.as_str(),
            reason,
        });
    }
    changes
}

/// Outputs and statuses of the final steps among `read`, as templates see them.
fn results<'a>(
    read: &[usize],
    rows: &'a [StepRunRow],
    statuses: &[StepStatus],
    outputs: &HashMap<i64, Outputs>,
) -> BTreeMap<&'a str, StepResult<'static>> {
    read.iter()
        .filter(|&&j| statuses[j].is_final())
        .map(|&j| {
            let row = &rows[j];
            (
                row.step_id.as_str(),
                StepResult {
                    status: statuses[j].as_str(),
                    outputs: outputs.get(&row.id).cloned().unwrap_or_default(),
                },
            )
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
    let number = u32::try_from(attempt.number).unwrap_or(u32::MAX);
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
        assert_eq!(needed_outputs(&reads, &snap), [100, 103]);
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
        assert!(needed_outputs(&reads, &snap).is_empty());
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
            (100, Arc::new(BTreeMap::from([("x".into(), "1.0".into())]))),
            (103, Arc::new(BTreeMap::new())),
        ]);
        let changes = plan_changes(&plan, &reads, &snap, &outputs, 5);
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
}
