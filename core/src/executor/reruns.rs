//! "Re-run failed steps": a new run of a finished run's plan in which the steps that did
//! not fail are carried over (final, with their outputs and files) and the others run
//! again.
//!
//! Invariants:
//! - What runs again is every step that did not end `succeeded` or `skipped` (failed,
//!   cancelled, or never final), every step that reads anything of one of those (its
//!   dependencies, outputs its templates or `when=` name: [`crate::dispatch::reads`]),
//!   transitively, and the whole region of a review loop one of whose steps runs again.
//!   So no carried step ever read a result that changes in the new run.
//! - Only a final run is re-run this way (a live run's statuses are not yet its result),
//!   and only when at least one step runs again.
//! - The choice is a pure function of the plan and the statuses ([`carried`]); the store
//!   stores the carried steps in the transaction that creates the run
//!   ([`plue_store::Store::create_rerun_by`]).

use std::collections::VecDeque;

use evaluator::loops::Loops;
use evaluator::plan::Plan;
use plue_store::Triggerer;
use plue_types::status::{RunState, StepStatus};

use super::Executor;

/// What [`Executor::rerun_failed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RerunFailed {
    /// The new run's id.
    Started(i64),
    /// No such run (or it has no stored documents).
    NoSuchRun,
    /// The run is not final yet (its status).
    NotFinal(RunState),
    /// Every step of the run succeeded or was skipped: nothing would run again.
    NothingFailed,
}

/// The ids of the steps of `plan` a re-run of its failed steps carries over, given each
/// step's final status in the run (`status[i]` for `plan.steps[i]`).
pub fn carried(plan: &Plan, status: &[StepStatus]) -> Vec<String> {
    let n = plan.steps.len();
    let reads = crate::dispatch::reads(plan);
    let mut readers = vec![Vec::new(); n];
    for (reader, read) in reads.iter().enumerate() {
        for &step in read {
            if step < n {
                readers[step].push(reader);
            }
        }
    }
    let loops = Loops::of(plan);
    let mut again = vec![false; n];
    let mut queue: VecDeque<usize> = (0..n)
        .filter(|&i| {
            !matches!(
                status.get(i),
                Some(StepStatus::Succeeded | StepStatus::Skipped)
            )
        })
        .collect();
    while let Some(i) = queue.pop_front() {
        if std::mem::replace(&mut again[i], true) {
            continue;
        }
        queue.extend(readers[i].iter().copied().filter(|&r| !again[r]));
        if let Some(l) = loops.member.get(i).copied().flatten() {
            queue.extend(loops.loops[l].region.iter().copied().filter(|&m| !again[m]));
        }
    }
    plan.steps
        .iter()
        .zip(again)
        .filter(|(_, again)| !again)
        .map(|(step, _)| step.id.clone())
        .collect()
}

impl Executor {
    /// Starts a new run of `run_id`'s plan, context and workspace (a re-run, started by
    /// `triggerer`) in which only its failed and cancelled steps and the steps after them
    /// run again; the others are carried over ([`carried`]).
    pub async fn rerun_failed(
        &self,
        run_id: i64,
        triggerer: Option<&Triggerer>,
    ) -> anyhow::Result<RerunFailed> {
        let Some(run) = self.store.run(run_id).await? else {
            return Ok(RerunFailed::NoSuchRun);
        };
        if !run.status.is_final() {
            return Ok(RerunFailed::NotFinal(run.status));
        }
        let plan = self.plan(run_id).await?;
        let steps = self.store.step_states(run_id).await?;
        let status: Vec<StepStatus> = plan
            .steps
            .iter()
            .map(|p| {
                steps
                    .iter()
                    .find(|s| s.step_id == p.id)
                    .map_or(StepStatus::Pending, |s| s.status)
            })
            .collect();
        let carry = carried(&plan, &status);
        if carry.len() == plan.steps.len() {
            return Ok(RerunFailed::NothingFailed);
        }
        Ok(
            match self.rerun_carrying(run_id, triggerer, &carry).await? {
                Some(id) => RerunFailed::Started(id),
                None => RerunFailed::NoSuchRun,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use evaluator::plan::Step;
    use StepStatus::{Cancelled, Failed, Skipped, Succeeded};

    use super::*;

    fn bash(id: &str, command: &str, after: &[&str]) -> Step {
        Step::bash(id, command).after(after)
    }

    fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            name: "p".into(),
            triggers: vec![],
            env: Default::default(),
            steps,
            concurrency: None,
            budget_usd: None,
            max_parallel: None,
            modules: Vec::new(),
        }
    }

    #[test]
    fn the_failed_step_and_everything_after_it_run_again() {
        // a → b → d, a → c; b failed, so d (skipped after it) runs again, a and c do not.
        let p = plan(vec![
            bash("a", "true", &[]),
            bash("b", "false", &["a"]),
            bash("c", "true", &["a"]),
            bash("d", "true", &["b"]),
        ]);
        let carry = carried(&p, &[Succeeded, Failed, Succeeded, Skipped]);
        assert_eq!(carry, ["a", "c"]);
    }

    #[test]
    fn a_step_reading_a_rerun_steps_output_runs_again() {
        // e names b's output in its command without depending on it directly: it reads
        // b, so it runs again with b's new output.
        let p = plan(vec![
            bash("a", "true", &[]),
            bash("b", "false", &["a"]),
            bash("e", "echo {{ steps.b.outputs.x }}", &["a"]),
        ]);
        assert_eq!(carried(&p, &[Succeeded, Cancelled, Succeeded]), ["a"]);
    }

    #[test]
    fn a_review_loop_runs_again_whole() {
        // write → check (loop_to write): check failed, so write, its loop's target, runs
        // again too, though it succeeded; docs, outside the loop, is carried.
        let mut check = bash("check", "false", &["write"]);
        check.loop_to = Some("write".into());
        check.max_loops = Some(2);
        let p = plan(vec![
            bash("docs", "true", &[]),
            bash("write", "true", &[]),
            check,
        ]);
        assert_eq!(carried(&p, &[Succeeded, Succeeded, Failed]), ["docs"]);
    }

    #[test]
    fn a_run_without_failures_carries_everything() {
        let p = plan(vec![bash("a", "true", &[]), bash("b", "true", &["a"])]);
        assert_eq!(carried(&p, &[Succeeded, Skipped]), ["a", "b"]);
    }
}
