//! The executor's decisions as pure functions over a run's stored state: which steps to
//! queue, skip, fail or cancel ([`plan_changes`]) and what follows an attempt
//! ([`step_after`]). The rules themselves are in [`crate::schedule`]; this module maps them
//! onto store rows and dispatch documents.

use std::collections::BTreeMap;

use evaluator::plan::Plan;
use runner::protocol::Outcome;

use crate::dispatch::{self, StepResult};
use crate::schedule::{self, AfterAttempt, AttemptOutcome, Decision, StepStatus};
use crate::store::RunSnapshot;
use crate::store::{CompletedAttempt, StepAfter, StepChange, StepRunRow};

pub fn parse_status(text: &str) -> StepStatus {
    match text {
        "pending" => StepStatus::Pending,
        "queued" => StepStatus::Queued,
        "claimed" => StepStatus::Claimed,
        "running" => StepStatus::Running,
        "succeeded" => StepStatus::Succeeded,
        "failed" => StepStatus::Failed,
        "skipped" => StepStatus::Skipped,
        _ => StepStatus::Cancelled,
    }
}

/// The changes that move a run forward: cancellation, queueing within `max_parallel`,
/// skips (repeated until nothing more is decidable) and the run's end.
pub(crate) fn plan_changes(plan: &Plan, snapshot: &RunSnapshot, now: i64) -> Vec<StepChange> {
    let rows = &snapshot.steps;
    if rows.len() != plan.steps.len() {
        return vec![StepChange::FinishRun {
            status: "failed",
            reason: Some("the stored steps do not match the run's plan".into()),
        }];
    }
    let mut statuses: Vec<StepStatus> = rows.iter().map(|r| parse_status(&r.status)).collect();
    let mut changes = Vec::new();
    if snapshot.cancel_requested {
        for (i, status) in statuses.iter_mut().enumerate() {
            if matches!(status, StepStatus::Pending | StepStatus::Queued) {
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
                    Decision::Queue { step } if active < snapshot.max_parallel => {
                        let results = results(rows, &statuses);
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
            schedule::RunStatus::Cancelled => Some("cancelled".to_string()),
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

/// Outputs and statuses of the run's final steps, as templates see them.
fn results<'a>(
    rows: &'a [StepRunRow],
    statuses: &[StepStatus],
) -> BTreeMap<&'a str, StepResult<'static>> {
    rows.iter()
        .zip(statuses)
        .filter(|(_, s)| s.is_final())
        .map(|(row, status)| {
            let outputs = serde_json::from_str(&row.outputs).unwrap_or_default();
            (
                row.step_id.as_str(),
                StepResult {
                    status: status.as_str(),
                    outputs,
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
    let outputs = serde_json::to_string(&report.outputs).unwrap_or_else(|_| "{}".into());
    if attempt.cancel_requested || report.outcome == Outcome::Cancelled {
        return StepAfter::Final {
            status: "cancelled",
            reason: Some("cancelled".into()),
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
