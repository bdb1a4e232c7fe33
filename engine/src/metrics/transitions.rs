//! The executor's final transitions as metric events: steps skipped, failed or cancelled
//! by a run's advance, steps ended by their last attempt, runs that finished.
//!
//! Invariant: an event is recorded only after the store committed the change it counts
//! ([`Decided::record`] and the caller of [`attempt_ended`] run after the transaction), and
//! each change commits once (the store's updates name the states they leave), so every
//! transition is counted once across all replicas.

use evaluator::plan::Plan;

use super::{record, seconds_between, Event};
use crate::store::{CompletedAttempt, RunSnapshot, StepAfter, StepChange};

/// Final transitions an advance decided, recorded once it committed.
#[derive(Debug, Default)]
pub struct Decided {
    /// `(status, kind)` of steps that ended without (another) attempt.
    steps: Vec<(&'static str, &'static str)>,
    run: Option<&'static str>,
}

impl Decided {
    /// Notes the final transitions among `changes` and hands them back unchanged.
    pub fn note(
        &mut self,
        plan: &Plan,
        snapshot: &RunSnapshot,
        changes: Vec<StepChange>,
    ) -> Vec<StepChange> {
        for change in &changes {
            let (step_run_id, status) = match change {
                StepChange::Skip { step_run_id, .. } => (*step_run_id, "skipped"),
                StepChange::Fail { step_run_id, .. } => (*step_run_id, "failed"),
                StepChange::Cancel { step_run_id } => (*step_run_id, "cancelled"),
                StepChange::FinishRun { status, .. } => {
                    self.run = Some(status);
                    continue;
                }
                StepChange::Queue { .. } => continue,
            };
            let step_id = snapshot
                .steps
                .iter()
                .find(|step| step.id == step_run_id)
                .map(|step| step.step_id.as_str());
            self.steps.push((status, kind_of(plan, step_id)));
        }
        changes
    }

    /// Records what was noted (call after the advance succeeded).
    pub fn record(self) {
        for (status, kind) in self.steps {
            record(Event::StepFinished {
                status,
                kind,
                seconds: None,
            });
        }
        if let Some(status) = self.run {
            record(Event::RunFinished { status });
        }
    }
}

/// The event for a step whose attempt ended it for good (`None` when it retries).
pub fn attempt_ended(
    plan: &Plan,
    attempt: &CompletedAttempt,
    after: &StepAfter,
    now: i64,
) -> Option<Event<'static>> {
    let StepAfter::Final { status, .. } = after else {
        return None;
    };
    Some(Event::StepFinished {
        status,
        kind: kind_of(plan, Some(&attempt.step_id)),
        seconds: attempt.started_at.map(|at| seconds_between(at, now)),
    })
}

fn kind_of(plan: &Plan, step_id: Option<&str>) -> &'static str {
    step_id
        .and_then(|id| plan.steps.iter().find(|step| step.id == id))
        .map_or("unknown", |step| step.action.kind())
}
