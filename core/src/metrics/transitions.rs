//! The executor's final transitions as metric events and `info` log lines (with `run_id` and
//! `step` fields): steps skipped, failed or cancelled by a run's advance, steps ended by
//! their last attempt, runs that finished.
//!
//! Invariant: an event is recorded only after the store committed the change it counts
//! ([`Decided::record`] and the caller of [`attempt_ended`] run after the transaction), and
//! each change commits once (the store's updates name the states they leave), so every
//! transition is counted once across all replicas.

use evaluator::plan::{Plan, Step};
use plue_store::{CompletedAttempt, RunSnapshot, StepAfter, StepChange};
use plue_types::status::{RunStatus, StepStatus};

use super::{record, seconds_between, Event};

/// Final transitions an advance decided, recorded once it committed.
#[derive(Debug, Default)]
pub struct Decided {
    run_id: i64,
    /// `(step, status, kind)` of steps that ended without (another) attempt.
    steps: Vec<(String, StepStatus, &'static str)>,
    run: Option<RunStatus>,
}

impl Decided {
    /// Notes the final transitions among `changes` and hands them back unchanged.
    pub fn note(
        &mut self,
        plan: &Plan,
        snapshot: &RunSnapshot,
        changes: Vec<StepChange>,
    ) -> Vec<StepChange> {
        self.run_id = snapshot.run_id;
        for change in &changes {
            let (step_run_id, status) = match change {
                StepChange::Skip { step_run_id, .. } => (*step_run_id, StepStatus::Skipped),
                StepChange::Fail { step_run_id, .. } => (*step_run_id, StepStatus::Failed),
                StepChange::Cancel { step_run_id } => (*step_run_id, StepStatus::Cancelled),
                StepChange::FinishRun { status, .. } => {
                    self.run = Some(*status);
                    continue;
                }
                StepChange::Queue { .. } | StepChange::Wait { .. } | StepChange::Loop { .. } => {
                    continue
                }
            };
            let step_id = snapshot
                .steps
                .iter()
                .find(|step| step.id == step_run_id)
                .map(|step| step.step_id.as_str());
            let kind = kind_of(plan, step_id);
            self.steps
                .push((step_id.unwrap_or_default().to_owned(), status, kind));
        }
        changes
    }

    /// Records what was noted (call after the advance succeeded).
    pub fn record(self) {
        let run_id = self.run_id;
        for (step, status, kind) in self.steps {
            tracing::info!(run_id, step = %step, status = status.as_str(), kind, "step finished");
            record(Event::StepFinished {
                status,
                kind,
                seconds: None,
            });
        }
        if let Some(status) = self.run {
            tracing::info!(run_id, status = status.as_str(), "run finished");
            record(Event::RunFinished { status });
        }
    }
}

/// A step that its attempt ended for good, recorded once the store committed it.
#[derive(Debug)]
pub struct Ended {
    run_id: i64,
    step: String,
    attempt: i64,
    status: StepStatus,
    kind: &'static str,
    seconds: Option<f64>,
}

impl Ended {
    /// Logs and counts the step's end (call after the completion committed).
    pub fn record(self) {
        let Ended {
            run_id,
            step,
            attempt,
            status,
            kind,
            seconds,
        } = self;
        tracing::info!(
            run_id,
            step = %step,
            attempt,
            status = status.as_str(),
            kind,
            "step finished"
        );
        record(Event::StepFinished {
            status,
            kind,
            seconds,
        });
    }
}

/// What to record for a step whose attempt ended it for good (`None` when it retries).
pub fn attempt_ended(
    step: Option<&Step>,
    attempt: &CompletedAttempt,
    after: &StepAfter,
    now: i64,
) -> Option<Ended> {
    let StepAfter::Final { status, .. } = after else {
        return None;
    };
    Some(Ended {
        run_id: attempt.run_id,
        step: attempt.step_id.clone(),
        attempt: attempt.number,
        status: *status,
        kind: step.map_or("unknown", |step| step.action.kind()),
        seconds: attempt.started_at.map(|at| seconds_between(at, now)),
    })
}

fn kind_of(plan: &Plan, step_id: Option<&str>) -> &'static str {
    step_id
        .and_then(|id| plan.steps.iter().find(|step| step.id == id))
        .map_or("unknown", |step| step.action.kind())
}
