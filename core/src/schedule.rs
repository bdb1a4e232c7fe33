//! The run/step state machine, as plain data and functions.
//!
//! No IO, no clock, no async: the executor feeds in what happened (an attempt finished, the
//! run was cancelled) and reads back what to do (queue a step, skip it with a reason, retry
//! after a delay, the run's result). The store persists every transition; this module only
//! decides them, so the rules are the same for every store and every engine replica.
//!
//! Rules:
//! - a step is decided once all its dependencies are final;
//! - `when = success`: queued if every dependency succeeded, else skipped;
//! - `when = failure`: queued if a dependency failed, or was skipped because something
//!   upstream failed; else skipped;
//! - `when = always`: queued once the dependencies are final, whatever they did;
//! - a failed attempt is retried while `retries` remain, after `backoff · 2^(n-1)` seconds;
//! - the run fails if any step failed, is cancelled if any step was cancelled, else succeeds.
//!   Skipped steps do not fail a run.

use std::time::Duration;

use evaluator::plan::{Plan, When};
use plue_types::status::{RunStatus, StepStatus};

/// What a step decision says to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Queue `plan.steps[step]` for its first attempt.
    Queue { step: usize },
    /// Mark `plan.steps[step]` skipped, with the reason users see.
    Skip { step: usize, reason: String },
}

/// Each step's dependencies as indices into `plan.steps` (names that match no step are
/// left out: validation refuses them). Computed once per plan; [`decide_with`] takes it.
pub fn dependency_indices(plan: &Plan) -> Vec<Vec<usize>> {
    let positions: std::collections::HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    plan.steps
        .iter()
        .map(|step| {
            step.depends_on
                .iter()
                .filter_map(|d| positions.get(d.as_str()).copied())
                .collect()
        })
        .collect()
}

/// Decisions for every pending step whose dependencies are all final, given the
/// statuses of `plan.steps` (same order). Decisions are returned in step order; steps they
/// unblock are decided on the next call, after the caller applied these.
pub fn decide(plan: &Plan, statuses: &[StepStatus]) -> Vec<Decision> {
    decide_with(plan, &dependency_indices(plan), statuses)
}

/// [`decide`] with the plan's [`dependency_indices`] computed beforehand: linear in the
/// steps and their edges, with no allocation per step.
pub fn decide_with(plan: &Plan, deps: &[Vec<usize>], statuses: &[StepStatus]) -> Vec<Decision> {
    // Filled in only for a `when="failure"` step: an advance of any other run allocates
    // nothing the size of its plan.
    let mut failed_upstream: Vec<Option<bool>> = Vec::new();
    let mut decisions = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        if statuses[i] != StepStatus::Pending {
            continue;
        }
        let deps_of = &deps[i];
        // From the last: in a fan-in the dependencies queued last are the ones that end
        // last, so a join that is not ready is told after a look or two.
        if !deps_of.iter().rev().all(|&d| statuses[d].is_final()) {
            continue;
        }
        let decision = match step.when {
            When::Always => Decision::Queue { step: i },
            When::Success => match deps_of.iter().find(|&&d| !succeeded(plan, statuses, d)) {
                None => Decision::Queue { step: i },
                Some(&d) => Decision::Skip {
                    step: i,
                    reason: format!("dependency '{}' {}", plan.steps[d].id, statuses[d].as_str()),
                },
            },
            When::Failure => {
                if failed_upstream.is_empty() {
                    failed_upstream = vec![None; plan.steps.len()];
                }
                if deps_of
                    .iter()
                    .any(|&d| has_failure(plan, deps, statuses, d, &mut failed_upstream))
                {
                    Decision::Queue { step: i }
                } else {
                    Decision::Skip {
                        step: i,
                        reason: "no dependency failed".into(),
                    }
                }
            }
        };
        decisions.push(decision);
    }
    decisions
}

/// Whether step `i` succeeded, or failed with `continue_on_error` (a tolerated failure
/// counts as a success for its dependents and the run).
fn succeeded(plan: &Plan, statuses: &[StepStatus], i: usize) -> bool {
    match statuses[i] {
        StepStatus::Succeeded => true,
        StepStatus::Failed => plan.steps.get(i).is_some_and(|s| s.continue_on_error),
        _ => false,
    }
}

/// Whether step `i` failed (not tolerated), or was skipped because something upstream of
/// it failed.
fn has_failure(
    plan: &Plan,
    deps: &[Vec<usize>],
    statuses: &[StepStatus],
    i: usize,
    memo: &mut [Option<bool>],
) -> bool {
    if let Some(known) = memo[i] {
        return known;
    }
    let result = match statuses[i] {
        StepStatus::Failed => !succeeded(plan, statuses, i),
        StepStatus::Skipped => deps[i]
            .iter()
            .any(|&d| has_failure(plan, deps, statuses, d, memo)),
        _ => false,
    };
    memo[i] = Some(result);
    result
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    /// Exit code, timeout or lost runner; the reason is shown to users.
    Failed {
        reason: String,
    },
}

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterAttempt {
    /// The step is final with this status.
    Final(StepStatus),
    /// Queue attempt number `attempt` after `delay`.
    Retry { attempt: u32, delay: Duration },
}

/// Decides what follows attempt number `attempt` (1-based) of a step with `retries` and
/// `backoff` seconds.
pub fn after_attempt(
    retries: u32,
    backoff_secs: u64,
    attempt: u32,
    outcome: &AttemptOutcome,
) -> AfterAttempt {
    match outcome {
        AttemptOutcome::Succeeded => AfterAttempt::Final(StepStatus::Succeeded),
        AttemptOutcome::Failed { .. } if attempt <= retries => {
            let doubling = 2u64.saturating_pow(attempt.saturating_sub(1));
            AfterAttempt::Retry {
                attempt: attempt + 1,
                delay: Duration::from_secs(backoff_secs.saturating_mul(doubling)),
            }
        }
        AttemptOutcome::Failed { .. } => AfterAttempt::Final(StepStatus::Failed),
    }
}

/// The run's result once every step is final; `None` while any step is not.
pub fn run_status(statuses: &[StepStatus]) -> Option<RunStatus> {
    if !statuses.iter().all(|s| s.is_final()) {
        return None;
    }
    Some(if statuses.contains(&StepStatus::Cancelled) {
        RunStatus::Cancelled
    } else if statuses.contains(&StepStatus::Failed) {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    })
}

/// [`run_status`] of `plan`'s steps: a failure of a step with `continue_on_error` does not
/// fail the run.
pub fn run_status_of(plan: &Plan, statuses: &[StepStatus]) -> Option<RunStatus> {
    if !plan.steps.iter().any(|s| s.continue_on_error) {
        return run_status(statuses);
    }
    let tolerated: Vec<StepStatus> = (0..statuses.len())
        .map(|i| match statuses[i] {
            StepStatus::Failed if succeeded(plan, statuses, i) => StepStatus::Succeeded,
            status => status,
        })
        .collect();
    run_status(&tolerated)
}

/// Cancels a run: every step not yet final becomes cancelled. Returns the steps that were
/// claimed or running, whose processes the caller must kill.
pub fn cancel(statuses: &mut [StepStatus]) -> Vec<usize> {
    let mut to_kill = Vec::new();
    for (i, status) in statuses.iter_mut().enumerate() {
        if matches!(status, StepStatus::Claimed | StepStatus::Running) {
            to_kill.push(i);
        }
        if !status.is_final() {
            *status = StepStatus::Cancelled;
        }
    }
    to_kill
}

#[cfg(test)]
mod tests {

    use evaluator::plan::Step;

    use super::*;
    use StepStatus::*;

    fn plan(steps: Vec<Step>) -> Plan {
        Plan::new("p", steps)
    }

    fn step(id: &str, deps: &[&str], when: When) -> Step {
        Step::bash(id, "true").after(deps).on(when)
    }

    /// Applies decisions and reports them compactly.
    fn apply(plan: &Plan, statuses: &mut [StepStatus]) -> Vec<String> {
        decide(plan, statuses)
            .into_iter()
            .map(|d| match d {
                Decision::Queue { step } => {
                    statuses[step] = Queued;
                    format!("queue {}", plan.steps[step].id)
                }
                Decision::Skip { step, reason } => {
                    statuses[step] = Skipped;
                    format!("skip {} ({reason})", plan.steps[step].id)
                }
            })
            .collect()
    }

    #[test]
    fn independent_steps_are_queued_together_and_dependents_wait() {
        let p = plan(vec![
            step("test", &[], When::Success),
            step("lint", &[], When::Success),
            step("build", &["test", "lint"], When::Success),
        ]);
        let mut s = vec![Pending; 3];
        assert_eq!(apply(&p, &mut s), ["queue test", "queue lint"]);
        s[0] = Succeeded;
        assert!(apply(&p, &mut s).is_empty(), "build waits for lint");
        s[1] = Succeeded;
        assert_eq!(apply(&p, &mut s), ["queue build"]);
        s[2] = Succeeded;
        assert_eq!(run_status(&s), Some(RunStatus::Succeeded));
    }

    #[test]
    fn failure_skips_success_dependents_and_runs_failure_and_always_handlers() {
        let p = plan(vec![
            step("test", &[], When::Success),
            step("build", &["test"], When::Success),
            step("deploy", &["build"], When::Success),
            step("notify", &["deploy"], When::Failure),
            step("cleanup", &["test"], When::Always),
        ]);
        let mut s = vec![Pending; 5];
        assert_eq!(apply(&p, &mut s), ["queue test"]);
        s[0] = Failed;
        assert_eq!(
            apply(&p, &mut s),
            ["skip build (dependency 'test' failed)", "queue cleanup"]
        );
        assert_eq!(
            apply(&p, &mut s),
            ["skip deploy (dependency 'build' skipped)"]
        );
        assert_eq!(
            apply(&p, &mut s),
            ["queue notify"],
            "a failure upstream of a skipped dependency counts"
        );
        s[3] = Succeeded;
        s[4] = Succeeded;
        assert_eq!(
            run_status(&s),
            Some(RunStatus::Failed),
            "a handled failure still fails the run"
        );
    }

    #[test]
    fn a_tolerated_failure_lets_dependents_run_and_the_run_succeed() {
        let mut lint = step("lint", &[], When::Success);
        lint.continue_on_error = true;
        let p = plan(vec![
            lint,
            step("build", &["lint"], When::Success),
            step("alarm", &["lint"], When::Failure),
            step("test", &[], When::Success),
        ]);
        let mut s = vec![Pending; 4];
        apply(&p, &mut s);
        s[0] = Failed;
        s[3] = Failed;
        apply(&p, &mut s);
        assert_eq!(s[1], Queued, "build runs after a tolerated failure");
        assert_eq!(s[2], Skipped, "no failure handler for a tolerated failure");
        s[1] = Succeeded;
        // `test` failed without continue_on_error: the run fails; without it, it succeeds.
        assert_eq!(run_status_of(&p, &s), Some(RunStatus::Failed));
        s[3] = Succeeded;
        assert_eq!(run_status_of(&p, &s), Some(RunStatus::Succeeded));
        assert_eq!(run_status(&s), Some(RunStatus::Failed), "plan-blind");
    }

    #[test]
    fn failure_handlers_are_skipped_when_nothing_failed() {
        let p = plan(vec![
            step("test", &[], When::Success),
            step("notify", &["test"], When::Failure),
            step("orphan", &[], When::Failure),
        ]);
        let mut s = vec![Pending; 3];
        assert_eq!(
            apply(&p, &mut s),
            ["queue test", "skip orphan (no dependency failed)"]
        );
        s[0] = Succeeded;
        assert_eq!(apply(&p, &mut s), ["skip notify (no dependency failed)"]);
        assert_eq!(
            run_status(&s),
            Some(RunStatus::Succeeded),
            "skipped steps do not fail a run"
        );
    }

    #[test]
    fn retries_back_off_doubling_then_fail() {
        let failed = AttemptOutcome::Failed {
            reason: "exit code 3".into(),
        };
        assert_eq!(
            after_attempt(2, 5, 1, &failed),
            AfterAttempt::Retry {
                attempt: 2,
                delay: Duration::from_secs(5)
            }
        );
        assert_eq!(
            after_attempt(2, 5, 2, &failed),
            AfterAttempt::Retry {
                attempt: 3,
                delay: Duration::from_secs(10)
            }
        );
        assert_eq!(after_attempt(2, 5, 3, &failed), AfterAttempt::Final(Failed));
        assert_eq!(
            after_attempt(2, 5, 2, &AttemptOutcome::Succeeded),
            AfterAttempt::Final(Succeeded)
        );
        assert_eq!(after_attempt(0, 5, 1, &failed), AfterAttempt::Final(Failed));
        assert_eq!(
            after_attempt(20, u64::MAX, 20, &failed),
            AfterAttempt::Retry {
                attempt: 21,
                delay: Duration::from_secs(u64::MAX)
            }
        );
    }

    #[test]
    fn cancelling_kills_active_steps_and_cancels_the_rest() {
        let mut s = vec![Succeeded, Running, Claimed, Queued, Pending, Skipped];
        assert_eq!(cancel(&mut s), [1, 2]);
        assert_eq!(
            s,
            [Succeeded, Cancelled, Cancelled, Cancelled, Cancelled, Skipped]
        );
        assert_eq!(run_status(&s), Some(RunStatus::Cancelled));
        assert_eq!(run_status(&[Succeeded, Running]), None);
    }
}
