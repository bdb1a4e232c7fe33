//! Approval steps in the store, against both backends: a ready approval waits without
//! taking a `max_parallel` slot, two racing decisions leave exactly one outcome and one
//! record, cancelling a run cancels its waiting approval, and an approval past its deadline
//! fails. PostgreSQL runs on a throw-away server (testkit); without one these tests cover
//! SQLite only, unless PLUE_REQUIRE_POSTGRES=1.

use evaluator::plan::{Action, ApprovalAction, Plan, Step};
use plue_core::executor::Executor;
use plue_store::{now_ms, Decided, Store, Verdict};
use plue_types::status::{RunState, StepStatus};

use crate::support;

fn approval(id: &str, timeout: u64) -> Step {
    let mut step = Step::new(
        id,
        Action::Approval(ApprovalAction {
            message: Some("ship?".into()),
            approvers: vec![],
            exclude_triggerer: false,
        }),
    );
    step.timeout = timeout;
    step
}

fn bash(id: &str, deps: &[&str]) -> Step {
    Step::bash(id, format!("echo {id}")).after(deps)
}

fn plan(steps: Vec<Step>) -> Plan {
    Plan::new("approvals", steps)
}

async fn start(executor: &Executor, plan: &Plan) -> i64 {
    support::start_plan_run(executor, "/w/approvals.plue.py", plan, None).await
}

async fn statuses(store: &Store, run_id: i64) -> Vec<(String, String)> {
    store
        .step_runs(run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.step_id, s.status.to_string()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn a_waiting_approval_takes_no_parallel_slot_and_racing_decisions_leave_one_outcome() {
    for (store, _dir) in support::stores().await {
        // max_parallel 1: the approval waits beside the bash step, which is still queued.
        let executor = support::executor(&store, 1);
        let plan = plan(vec![
            approval("ship", 3600),
            bash("build", &[]),
            bash("deploy", &["ship"]),
        ]);
        let run_id = start(&executor, &plan).await;
        executor.advance(run_id).await.unwrap();
        assert_eq!(
            statuses(&store, run_id).await,
            pairs(&[
                ("ship", "waiting"),
                ("build", "queued"),
                ("deploy", "pending")
            ])
        );
        let now = now_ms();
        let (a, b) = tokio::join!(
            store.decide_approval(run_id, "ship", Verdict::Approve, "alice", "ok", now),
            store.decide_approval(run_id, "ship", Verdict::Reject, "bob", "no", now),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let done = [&a, &b].iter().filter(|d| ***d == Decided::Done).count();
        assert_eq!(done, 1, "{a:?} {b:?}");
        let decisions = store.approvals_of_run(run_id).await.unwrap();
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        let final_status = if decisions[0].decided_by == "alice" {
            "succeeded"
        } else {
            "failed"
        };
        assert_eq!(statuses(&store, run_id).await[0].1, final_status);
        assert_eq!(
            store
                .decide_approval(run_id, "nope", Verdict::Approve, "alice", "", now)
                .await
                .unwrap(),
            Decided::NoStep
        );
        assert_eq!(
            store
                .decide_approval(run_id, "build", Verdict::Approve, "alice", "", now)
                .await
                .unwrap(),
            Decided::NotWaiting(StepStatus::Queued)
        );
    }
}

#[tokio::test]
async fn cancelling_a_run_cancels_its_waiting_approval_and_deadlines_fail_the_rest() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 4);
        let plan = plan(vec![approval("ship", 1)]);
        let cancelled = start(&executor, &plan).await;
        executor.advance(cancelled).await.unwrap();
        assert_eq!(
            statuses(&store, cancelled).await,
            pairs(&[("ship", "waiting")])
        );
        assert!(executor.cancel(cancelled).await.unwrap());
        executor.advance(cancelled).await.unwrap();
        assert_eq!(
            statuses(&store, cancelled).await,
            pairs(&[("ship", "cancelled")])
        );
        assert_eq!(
            store.run(cancelled).await.unwrap().unwrap().status,
            RunState::Cancelled
        );

        let expiring = start(&executor, &plan).await;
        executor.advance(expiring).await.unwrap();
        // Before the deadline nothing expires; after it, the run is handed back to advance.
        assert!(store.expire_approvals(now_ms()).await.unwrap().is_empty());
        let expired = store.expire_approvals(now_ms() + 2_000).await.unwrap();
        assert_eq!(expired, [expiring]);
        executor.advance(expiring).await.unwrap();
        let run = store.run(expiring).await.unwrap().unwrap();
        assert_eq!(run.status, RunState::Failed);
        let steps = store.step_runs(expiring).await.unwrap();
        assert_eq!(
            steps[0].reason.as_deref(),
            Some("no decision before the approval timed out")
        );
    }
}

// regression: a decision taken after the deadline, before the sweeper's next pass, won.
#[tokio::test]
async fn a_decision_past_the_deadline_times_the_step_out_instead() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 4);
        let plan = plan(vec![approval("ship", 1), bash("deploy", &["ship"])]);
        let run_id = start(&executor, &plan).await;
        executor.advance(run_id).await.unwrap();
        let deadline = store.step_run(run_id, "ship").await.unwrap().unwrap();
        let deadline = deadline
            .ready_at
            .expect("a waiting approval has a deadline");
        // The sweeper has not run: the step still waits, past its deadline.
        let late = deadline + 1;
        let decided = store
            .decide_approval(run_id, "ship", Verdict::Approve, "mallory", "late", late)
            .await
            .unwrap();
        assert_eq!(decided, Decided::TimedOut { deadline });
        assert!(store.approvals_of_run(run_id).await.unwrap().is_empty());
        executor.advance(run_id).await.unwrap();
        assert_eq!(
            statuses(&store, run_id).await,
            pairs(&[("ship", "failed"), ("deploy", "skipped")])
        );
        let steps = store.step_runs(run_id).await.unwrap();
        assert_eq!(
            steps[0].reason.as_deref(),
            Some("no decision before the approval timed out")
        );
        // A decision just before the deadline is still taken.
        let other = start(&executor, &plan).await;
        executor.advance(other).await.unwrap();
        let step = store.step_run(other, "ship").await.unwrap().unwrap();
        let in_time = step.ready_at.unwrap() - 1;
        assert_eq!(
            store
                .decide_approval(other, "ship", Verdict::Approve, "alice", "", in_time)
                .await
                .unwrap(),
            Decided::Done
        );
    }
}
