//! The step states an executor keeps of a run from one advance to the next, so that an
//! advance reads only the step runs that became final since (listed in `step_changes` by a
//! trigger, migration 0011) instead of every step of the run: its cost follows what
//! changed, not the run's size.
//!
//! Invariants:
//! - a [`KnownSteps`] is used only by the advance right after the one that made it
//!   (`runs.advances`, which every advance raises by one under the run's row lock, is one
//!   more than the copy's); after any other advance — another replica's, a concurrent one
//!   of this engine's — or any change that did not apply as decided, the next advance reads
//!   every step again;
//! - it keeps current what decisions depend on: id, step id, position, status and
//!   iteration. A step's moves between `queued`, `claimed` and `running` (claims, starts,
//!   retries) are not seen, and need not be: to the rules all three are "active" — except
//!   when a run is cancelled (a queued step is ended at once, a running one by its
//!   runner), so a run with a cancel requested is always read whole. Every other field is
//!   as last read.

use std::collections::HashMap;

use plue_types::status::StepStatus;

use super::runs::{StepChange, StepRunRow};

/// A run's step runs in plan order, as an advance left them.
#[derive(Debug, Clone)]
pub struct KnownSteps {
    /// `runs.advances` as the advance that made this copy left it.
    advances: i64,
    steps: Vec<StepRunRow>,
    /// Step run id → index in `steps`.
    index: HashMap<i64, usize>,
}

impl KnownSteps {
    pub(crate) fn new(advances: i64, steps: Vec<StepRunRow>) -> KnownSteps {
        let index = steps.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        KnownSteps {
            advances,
            steps,
            index,
        }
    }

    /// Whether this copy was made by the advance right before the one that raised the
    /// run's count to `advances`.
    pub(crate) fn follows(&self, advances: i64) -> bool {
        self.advances.checked_add(1) == Some(advances)
    }

    /// Puts `rows`, read again, in place of the copies; false (and the copy is unusable)
    /// when one is not a step run of it.
    pub(crate) fn refresh(&mut self, rows: Vec<StepRunRow>) -> bool {
        for row in rows {
            match self.index.get(&row.id) {
                Some(&i) => self.steps[i] = row,
                None => return false,
            }
        }
        true
    }

    /// Takes the rows out, for the snapshot the rules read.
    pub(crate) fn take_steps(&mut self) -> Vec<StepRunRow> {
        std::mem::take(&mut self.steps)
    }

    /// The copy as the advance that counted `advances` leaves it: `steps` (the snapshot's,
    /// given back) with `applied` (each change and whether it took effect) applied; `None`
    /// when a change did not take effect as decided (the next advance reads everything).
    /// `previous` is the copy the advance started from, `None` when it read every step.
    pub(crate) fn after(
        previous: Option<KnownSteps>,
        advances: i64,
        steps: Vec<StepRunRow>,
        applied: &[(StepChange, bool)],
    ) -> Option<KnownSteps> {
        let mut known = match previous {
            Some(mut known) => {
                known.steps = steps;
                known
            }
            None => KnownSteps::new(advances, steps),
        };
        known.advances = advances;
        for (change, took_effect) in applied {
            if !took_effect {
                return None;
            }
            match change {
                StepChange::Queue { step_run_id, .. } => {
                    known.set(*step_run_id, StepStatus::Queued, None)?
                }
                StepChange::Skip {
                    step_run_id,
                    reason,
                } => known.set(*step_run_id, StepStatus::Skipped, Some(reason))?,
                StepChange::Fail {
                    step_run_id,
                    reason,
                } => known.set(*step_run_id, StepStatus::Failed, Some(reason))?,
                StepChange::Cancel { step_run_id } => {
                    known.set(*step_run_id, StepStatus::Cancelled, Some("cancelled"))?
                }
                StepChange::Wait { step_run_id, .. } => {
                    known.set(*step_run_id, StepStatus::Waiting, None)?
                }
                StepChange::Loop {
                    step_run_ids,
                    iteration,
                    reason,
                } => {
                    for id in step_run_ids {
                        known.set(*id, StepStatus::Pending, Some(reason))?;
                        let i = *known.index.get(id)?;
                        known.steps[i].iteration = *iteration;
                        // A new iteration needs a new environment review.
                        known.steps[i].review_passed_at = None;
                    }
                }
                // The run is over: nothing more to know.
                StepChange::FinishRun { .. } => return None,
            }
        }
        Some(known)
    }

    fn set(&mut self, step_run_id: i64, status: StepStatus, reason: Option<&str>) -> Option<()> {
        let i = *self.index.get(&step_run_id)?;
        let step = &mut self.steps[i];
        step.status = status;
        if let Some(reason) = reason {
            step.reason = Some(reason.to_owned());
        }
        Some(())
    }
}
