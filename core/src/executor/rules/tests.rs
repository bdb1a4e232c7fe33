//! Tests of `rules`.

use std::sync::Arc;

use evaluator::plan::Step;

use super::review_loops::take_loops;
use super::*;

fn bash(id: &str, command: &str, deps: &[&str]) -> Step {
    Step::bash(id, command).after(deps)
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
            status: status.parse().expect("a step status"),
            attempts: 0,
            exit_code: None,
            reason: None,
            outputs: String::new(),
            ready_at: None,
            started_at: None,
            finished_at: None,
            usage: None,
            iteration: 1,
            review_passed_at: None,
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

/// [`needed_outputs`] with the plan's dependencies computed here, as `plan_changes` does.
fn needed(plan: &Plan, reads: &[Vec<usize>], loops: &Loops, snap: &RunSnapshot) -> Vec<(i64, i64)> {
    needed_outputs(
        plan,
        &crate::schedule::dependency_indices(plan),
        reads,
        loops,
        snap,
        &take_loops(plan, loops, snap),
    )
}

fn plan() -> Plan {
    Plan::new(
        "p",
        vec![
            bash("a", "true", &[]),
            bash("big", "true", &[]),
            bash("b", "echo {{ steps.a.outputs.x }}", &["mid"]),
            bash("mid", "true", &["a"]),
            bash("c", "true", &["big", "mid"]),
        ],
    )
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
    assert_eq!(needed(&plan, &reads, &loops, &snap), [(100, 1), (103, 1)]);
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
    assert!(needed(&plan, &reads, &loops, &snap).is_empty());
}

#[test]
fn a_join_with_a_dependency_still_active_needs_no_outputs_yet() {
    // regression (scale): every advance of a 10,000-step fan-out looked up the outputs of
    // every finished branch for the join, which could not be dispatched yet.
    let plan = Plan::new(
        "fan",
        vec![
            bash("a", "true", &[]),
            bash("b", "true", &[]),
            bash("c", "true", &[]),
            bash("join", "true", &["a", "b", "c"]),
        ],
    );
    let reads = dispatch::reads(&plan);
    let loops = Loops::of(&plan);
    for active in ["queued", "claimed", "running", "waiting"] {
        let snap = snapshot(&plan, &["succeeded", "succeeded", active, "pending"]);
        assert!(needed(&plan, &reads, &loops, &snap).is_empty(), "{active}");
    }
    // A pending dependency may end in this very advance (skipped): the join may then be
    // dispatched, so what it reads is loaded.
    let snap = snapshot(&plan, &["succeeded", "failed", "pending", "pending"]);
    assert_eq!(needed(&plan, &reads, &loops, &snap), [(100, 1), (101, 1)]);
    let snap = snapshot(&plan, &["succeeded", "succeeded", "succeeded", "pending"]);
    assert_eq!(
        needed(&plan, &reads, &loops, &snap),
        [(100, 1), (101, 1), (102, 1)]
    );
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
        folded_start: None,
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
        plan.steps.first(),
        &attempt(MAX_RUN_OUTPUT_BYTES - 2000),
        &succeeded(&value),
        0,
    );
    let StepAfter::Final {
        status: StepStatus::Succeeded,
        outputs,
        ..
    } = after
    else {
        panic!("{after:?}");
    };
    assert!(outputs.contains(&value));
    let after = step_after(
        plan.steps.first(),
        &attempt(MAX_RUN_OUTPUT_BYTES - 500),
        &succeeded(&value),
        0,
    );
    let StepAfter::Final {
        status: StepStatus::Failed,
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
    let after = step_after(
        plan.steps.first(),
        &attempt(MAX_RUN_OUTPUT_BYTES + 1),
        &none,
        0,
    );
    assert!(
        matches!(
            after,
            StepAfter::Final {
                status: StepStatus::Succeeded,
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
    Plan::new(
        "p",
        vec![
            bash("build", "echo \"{{ steps.review.outputs.feedback }}\"", &[]),
            bash("test", "true", &["build"]),
            review,
            bash("deploy", "true", &["review"]),
            bash("notify", "true", &["review"]).on(evaluator::plan::When::Failure),
            bash("cleanup", "true", &["review"]).on(evaluator::plan::When::Always),
        ],
    )
}

/// [`loop_plan`]'s steps when its review failed: build and test succeeded, the
/// review failed, and what follows it waits.
const REVIEW_FAILED: [&str; 6] = [
    "succeeded",
    "succeeded",
    "failed",
    "pending",
    "pending",
    "pending",
];

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
    let snap = looped_snapshot(&plan, &REVIEW_FAILED, 1);
    // The target reads the failed iteration's outputs of the review.
    assert_eq!(needed(&plan, &reads, &loops, &snap), [(102, 1)]);
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
    assert!(needed(&plan, &reads, &loops, &snap).is_empty());
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
    let snap = looped_snapshot(&plan, &REVIEW_FAILED, 3);
    assert!(needed(&plan, &reads, &loops, &snap)
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
            status: RunStatus::Failed,
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
            status: RunStatus::Cancelled,
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
        step_after(Some(&plan.steps[2]), &attempt, &failed, 0),
        StepAfter::Retry { .. }
    ));
    attempt.number = 4;
    attempt.number_in_iteration = 2;
    assert!(matches!(
        step_after(Some(&plan.steps[2]), &attempt, &failed, 0),
        StepAfter::Final {
            status: StepStatus::Failed,
            ..
        }
    ));
}

/// The environment gate as the rules apply it: refused steps fail, reviewed ones wait,
/// and only a step whose review passed is queued, after the wait timer.
#[test]
fn environment_gates_decide_before_the_queue() {
    use super::environments::{Gate, REVIEW_TIMEOUT_MS};
    let mut deploy = bash("deploy", "./deploy.sh", &[]);
    deploy.environment = Some("prod".into());
    let plan = Plan::new("p", vec![deploy, bash("after", "true", &["deploy"])]);
    let reads = dispatch::reads(&plan);
    let deps = crate::schedule::dependency_indices(&plan);
    let loops = Loops::default();
    let decide = |snap: &RunSnapshot, gate: Gate| {
        plan_changes_with(
            &plan,
            &deps,
            &reads,
            &loops,
            snap,
            take_loops(&plan, &loops, snap),
            &HashMap::new(),
            &[Some(gate), None],
            1_000,
        )
    };
    let pending = snapshot(&plan, &["pending", "pending"]);
    let refused = decide(
        &pending,
        Gate::Refused("environment 'prod' allows refs main; this run is on feature".into()),
    );
    assert_eq!(
        refused[0],
        StepChange::Fail {
            step_run_id: 100,
            reason: "environment 'prod' allows refs main; this run is on feature".into()
        }
    );
    let review = Gate::Open {
        review: true,
        wait_ms: 5_000,
    };
    assert_eq!(
        decide(&pending, review.clone()),
        [StepChange::Wait {
            step_run_id: 100,
            deadline: 1_000 + REVIEW_TIMEOUT_MS
        }]
    );
    let mut reviewed = pending.clone();
    reviewed.steps[0].review_passed_at = Some(900);
    let changes = decide(&reviewed, review);
    let [StepChange::Queue {
        step_run_id: 100,
        ready_at: 5_900,
        ..
    }] = changes.as_slice()
    else {
        panic!("{changes:?}")
    };
    // Without any gate the same step is queued at once (a local run).
    let changes = plan_changes(&plan, &reads, &loops, &pending, &HashMap::new(), 1_000);
    assert!(
        matches!(
            changes.as_slice(),
            [StepChange::Queue {
                ready_at: 1_000,
                ..
            }]
        ),
        "{changes:?}"
    );
}

#[test]
fn stored_steps_that_do_not_match_a_looping_plan_end_the_run_without_a_panic() {
    let plan = loop_plan();
    let reads = dispatch::reads(&plan);
    let loops = Loops::of(&plan);
    // The rows of the loop's source and of the steps after it are missing.
    let snap = snapshot(&plan, &["succeeded", "failed"]);
    assert!(needed(&plan, &reads, &loops, &snap).is_empty());
    let changes = plan_changes(&plan, &reads, &loops, &snap, &HashMap::new(), 5);
    assert!(
        matches!(
            changes.as_slice(),
            [StepChange::FinishRun {
                status: RunStatus::Failed,
                ..
            }]
        ),
        "{changes:?}"
    );
}
