//! The executor's side of approval steps: a ready approval step becomes `waiting` (no
//! dispatch document, no runner) with a deadline of its `timeout` from now; the store's
//! [`plue_store::Store::decide_approval`] and the sweeper's expiry make it final. The
//! deadline holds without the sweeper: a decision that comes after it times the step out
//! instead ([`plue_store::Decided::TimedOut`]).

use evaluator::plan::{Action, Plan};

use plue_store::StepChange;

/// Whether `plan.steps[step]` is decided by a person.
pub(crate) fn is_approval(plan: &Plan, step: usize) -> bool {
    matches!(plan.steps[step].action, Action::Approval(_))
}

/// The change that puts approval step `step` (step run `step_run_id`) in `waiting` at `now`.
pub(crate) fn wait(plan: &Plan, step: usize, step_run_id: i64, now: i64) -> StepChange {
    let timeout_ms = (plan.steps[step].timeout as i64).saturating_mul(1000);
    StepChange::Wait {
        step_run_id,
        deadline: now.saturating_add(timeout_ms),
    }
}

#[cfg(test)]
mod tests {
    use evaluator::plan::{ApprovalAction, Step};

    use super::*;

    #[test]
    fn the_deadline_is_the_timeout_from_now() {
        let mut step = Step::new(
            "ship",
            Action::Approval(ApprovalAction {
                message: None,
                approvers: vec![],
                exclude_triggerer: false,
            }),
        );
        step.timeout = 90;
        let plan = Plan::new("p", vec![step]);
        assert!(is_approval(&plan, 0));
        assert_eq!(
            wait(&plan, 0, 7, 1_000),
            StepChange::Wait {
                step_run_id: 7,
                deadline: 91_000
            }
        );
    }
}
