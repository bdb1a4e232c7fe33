//! Review loops as an advance takes them: the run's statuses and iterations once every
//! loop that is due has gone back ([`Looped`], [`take_loops`]), before the rules decide
//! anything else.
//!
//! Invariant: a loop goes back only when its source failed (after its retries), it went
//! back fewer than `max_loops` times and its whole region is final; its region is then
//! pending in the next iteration, so the source's `when="failure"`/`"always"` dependents
//! never see a failure a loop answers. A run being cancelled takes no loop.

use evaluator::loops::Loops;
use evaluator::plan::Plan;
use plue_store::{RunSnapshot, StepChange, StepRunRow};
use plue_types::status::StepStatus;

/// The run as the schedule sees it once the review loops due now have gone back
/// ([`take_loops`]): worked out once per advance, for [`super::needed_outputs`] and
/// then [`super::plan_changes_with`].
pub(crate) struct Looped {
    pub(super) statuses: Vec<StepStatus>,
    /// Each step run's iteration (1 outside loops).
    pub(super) iterations: Vec<i64>,
    /// The [`StepChange::Loop`]s that get it there.
    pub(super) changes: Vec<StepChange>,
}

/// The run's statuses and iterations with the review loops that are due taken
/// ([`take_due_loops`]).
pub(crate) fn take_loops(plan: &Plan, loops: &Loops, snapshot: &RunSnapshot) -> Looped {
    let rows = &snapshot.steps;
    let mut looped = Looped {
        statuses: rows.iter().map(|r| r.status).collect(),
        iterations: rows.iter().map(|r| r.iteration.max(1)).collect(),
        changes: Vec::new(),
    };
    // Stored steps that do not match the plan take no loop (the loops index by plan
    // position): the rules then end the run for the mismatch.
    if !snapshot.cancel_requested && rows.len() == plan.steps.len() {
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
pub(super) fn take_due_loops(
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
