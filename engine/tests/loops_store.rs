//! Review loops through the store on both backends (PostgreSQL on a throw-away server when
//! one can be started; required with PLUE_REQUIRE_POSTGRES=1): the region goes back to
//! pending as a new iteration, attempts keep their numbers (so earlier iterations' logs stay
//! readable) and record their iteration, retries count within an iteration, the target reads
//! the failed iteration's outputs, and a loop that gave up fails the run saying so.

use evaluator::plan::{Plan, Step};
use plue_core::executor::{Executor, Report};
use plue_store::{now_ms, Claimed, Store};
use plue_types::protocol::{LogLine, Outcome, Stream};
use plue_types::status::{RunState, StepStatus};

use crate::support;

fn plan() -> Plan {
    let build = Step::bash("build", "echo \"{{ steps.review.outputs.feedback }}\"");
    let mut review = Step::bash("review", "false").after(&["build"]);
    review.retries = 1;
    review.loop_to = Some("build".into());
    review.max_loops = Some(1);
    Plan::new("loops", vec![build, review])
}

async fn start(executor: &Executor, plan: &Plan) -> i64 {
    support::start_plan_run(executor, "/w/loops.plue.py", plan, None).await
}

fn report(outcome: Outcome, outputs: &[(&str, &str)]) -> Report {
    Report {
        outcome,
        exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
        reason: (outcome != Outcome::Succeeded).then(|| "exit code 1".to_string()),
        outputs: outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Claims the next ready step (retries' backoff skipped by claiming in the future).
async fn claim(store: &Store, runner_id: i64, step: &str) -> Claimed {
    let claimed = store
        .claim(runner_id, &[String::new()], now_ms() + 60_000)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{step} is claimable"));
    assert_eq!(claimed.step_id, step);
    claimed
}

async fn finish(executor: &Executor, runner_id: i64, claimed: &Claimed, report: &Report) {
    assert!(executor
        .complete(claimed.attempt_id, claimed.run_id, Some(runner_id), report)
        .await
        .unwrap());
}

/// Build attempt `build` logs the line `text` and succeeds with the output `v`.
async fn build_succeeds(executor: &Executor, runner_id: i64, build: &Claimed, text: &str, v: &str) {
    let line = LogLine {
        seq: 1,
        stream: Stream::Stdout,
        text: text.into(),
        ts_ms: 1,
    };
    executor
        .store()
        .append_logs(build.step_run_id, build.number, &[line])
        .await
        .unwrap();
    finish(
        executor,
        runner_id,
        build,
        &report(Outcome::Succeeded, &[("v", v)]),
    )
    .await;
}

#[tokio::test]
async fn a_loop_repeats_its_region_keeping_every_iteration_readable() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 10);
        let plan = plan();
        let run_id = start(&executor, &plan).await;
        let runner_id = support::store_runner(&store, "r").await;

        // Iteration 1: build (no feedback yet), then review fails twice (one retry).
        let build1 = claim(&store, runner_id, "build").await;
        assert_eq!(build1.number, 1);
        let dispatch: serde_json::Value = serde_json::from_str(&build1.dispatch).unwrap();
        assert_eq!(dispatch["env"]["PLUE_OUTPUT_REVIEW_FEEDBACK"], "");
        assert_eq!(dispatch["env"]["PLUE_ITERATION"], "1");
        build_succeeds(&executor, runner_id, &build1, "first build", "1").await;
        for number in [1, 2] {
            let review = claim(&store, runner_id, "review").await;
            assert_eq!(review.number, number);
            let feedback = format!("attempt {number}: too slow");
            finish(
                &executor,
                runner_id,
                &review,
                &report(Outcome::Failed, &[("feedback", &feedback)]),
            )
            .await;
        }

        // The loop went back: both step runs pending/queued in iteration 2.
        let steps = store.step_runs(run_id).await.unwrap();
        assert_eq!(steps[0].iteration, 2);
        assert_eq!(steps[1].iteration, 2);
        assert_eq!(steps[1].status, StepStatus::Pending);
        assert_eq!(
            steps[1].reason.as_deref(),
            Some("loop 1 of 1: 'review' failed, back to 'build'")
        );
        assert_eq!(
            store.run(run_id).await.unwrap().unwrap().status,
            RunState::Running
        );

        // Iteration 2: build gets the failed review's feedback, its attempt number 2.
        let build2 = claim(&store, runner_id, "build").await;
        assert_eq!(build2.number, 2);
        let dispatch: serde_json::Value = serde_json::from_str(&build2.dispatch).unwrap();
        assert_eq!(
            dispatch["env"]["PLUE_OUTPUT_REVIEW_FEEDBACK"],
            "attempt 2: too slow"
        );
        assert_eq!(dispatch["env"]["PLUE_ITERATION"], "2");
        build_succeeds(&executor, runner_id, &build2, "second build", "2").await;
        let build = store.step_run(run_id, "build").await.unwrap().unwrap();
        assert_eq!(
            build.outputs, r#"{"v":"2"}"#,
            "the current iteration's outputs"
        );
        // Both iterations' logs, by attempt.
        let logs = store.read_logs(build.id, (0, 0), 10).await.unwrap();
        let texts: Vec<(i64, &str)> = logs.iter().map(|l| (l.attempt, l.text.as_str())).collect();
        assert_eq!(texts, [(1, "first build"), (2, "second build")]);

        // The review has its retry again in iteration 2, then the loop gives up.
        for number in [3, 4] {
            let review = claim(&store, runner_id, "review").await;
            assert_eq!(review.number, number);
            finish(&executor, runner_id, &review, &report(Outcome::Failed, &[])).await;
        }
        let run = store.run(run_id).await.unwrap().unwrap();
        assert_eq!(run.status, RunState::Failed);
        assert_eq!(run.loops_taken, 1);
        assert_eq!(
            run.reason.as_deref(),
            Some("review failed after 1 loop back to build")
        );
        let attempts: Vec<(i64, i64, i64)> = store
            .dashboard_attempts(run_id)
            .await
            .unwrap()
            .iter()
            .map(|a| (a.step_run_id, a.number, a.iteration))
            .collect();
        let (b, r) = (build.id, build.id + 1);
        assert_eq!(
            attempts,
            [
                (b, 1, 1),
                (b, 2, 2),
                (r, 1, 1),
                (r, 2, 1),
                (r, 3, 2),
                (r, 4, 2)
            ]
        );
    }
}

#[tokio::test]
async fn a_run_cancelled_during_a_loop_stops_there() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 10);
        let mut plan = plan();
        plan.steps[1].retries = 0;
        let run_id = start(&executor, &plan).await;
        let runner_id = support::store_runner(&store, "r").await;
        let build = claim(&store, runner_id, "build").await;
        finish(
            &executor,
            runner_id,
            &build,
            &report(Outcome::Succeeded, &[]),
        )
        .await;
        let review = claim(&store, runner_id, "review").await;
        finish(&executor, runner_id, &review, &report(Outcome::Failed, &[])).await;
        // The loop went back; the second build is running when the cancel arrives.
        let build = claim(&store, runner_id, "build").await;
        store
            .start_attempt(build.attempt_id, runner_id, now_ms())
            .await
            .unwrap();
        assert!(executor.cancel(run_id).await.unwrap());
        assert!(store.attempt_should_stop(build.attempt_id).await.unwrap());
        let steps = store.step_runs(run_id).await.unwrap();
        assert_eq!(
            steps[1].status,
            StepStatus::Cancelled,
            "the pending review ends now"
        );
        finish(
            &executor,
            runner_id,
            &build,
            &report(Outcome::Cancelled, &[]),
        )
        .await;
        let run = store.run(run_id).await.unwrap().unwrap();
        assert_eq!(run.status, RunState::Cancelled);
        assert_eq!(run.loops_taken, 1);
        assert_eq!(
            store
                .step_run(run_id, "build")
                .await
                .unwrap()
                .unwrap()
                .status,
            StepStatus::Cancelled
        );
    }
}
