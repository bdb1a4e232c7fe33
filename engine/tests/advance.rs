//! Incremental advances (`store::KnownSteps`, migration 0011) on both backends: after a
//! completion an advance reads only the step runs that changed, however large the run;
//! and an executor whose copy of a run went stale — another replica advanced it — reads
//! every step again instead of deciding from the old states.

use std::collections::BTreeMap;

use crate::support;

use evaluator::plan::{Plan, Step};
use plue_core::executor::{Executor, Report};
use plue_store::{now_ms, Store};
use plue_types::protocol::Outcome;
use plue_types::status::{RunState, StepStatus};

fn bash(id: &str) -> Step {
    Step::bash(id, "true")
}

fn plan(steps: Vec<Step>) -> Plan {
    Plan::new("advance", steps)
}

async fn start(executor: &Executor, plan: &Plan) -> i64 {
    support::start_plan_run(executor, "/w/advance.plue.py", plan, None).await
}

fn succeeded() -> Report {
    Report {
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        reason: None,
        outputs: BTreeMap::new(),
    }
}

/// Claims one queued step and reports it succeeded through `executor`; its step id.
async fn run_one(store: &Store, executor: &Executor, runner_id: i64) -> String {
    let claimed = store
        .claim(runner_id, &[String::new()], now_ms())
        .await
        .unwrap()
        .expect("a queued step");
    assert!(executor
        .complete(
            claimed.attempt_id,
            claimed.run_id,
            Some(runner_id),
            &succeeded()
        )
        .await
        .unwrap());
    claimed.step_id
}

#[tokio::test]
async fn an_advance_after_a_completion_reads_only_what_changed() {
    const FAN: usize = 2_000;
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 100_000);
        let mut steps = vec![bash("root")];
        steps.extend((0..FAN).map(|i| bash(&format!("f{i}")).after(&["root"])));
        let fan: Vec<String> = (0..FAN).map(|i| format!("f{i}")).collect();
        let fan: Vec<&str> = fan.iter().map(String::as_str).collect();
        steps.push(bash("join").after(&fan));
        let run_id = start(&executor, &plan(steps)).await;
        let runner_id = support::store_runner(&store, "r").await;
        // The run's first advance read every step.
        assert_eq!(executor.steps_read(), FAN as u64 + 2);
        assert_eq!(run_one(&store, &executor, runner_id).await, "root");
        for _ in 0..FAN {
            let before = executor.steps_read();
            run_one(&store, &executor, runner_id).await;
            let read = executor.steps_read() - before;
            // The step that finished, not the 2,002 of the run.
            assert!(read <= 2, "one completion read {read} step rows");
        }
        assert_eq!(run_one(&store, &executor, runner_id).await, "join");
        let run = store.run(run_id).await.unwrap().unwrap();
        assert_eq!(run.status, RunState::Succeeded);
        // Every step ran once.
        let steps = store.step_states(run_id).await.unwrap();
        assert!(steps
            .iter()
            .all(|s| s.status == StepStatus::Succeeded && s.attempts == 1));
    }
}

#[tokio::test]
async fn a_replica_with_a_stale_copy_reads_every_step_again() {
    for (store, _dir) in support::stores().await {
        // Two engines on one database.
        let first = support::executor(&store, 100_000);
        let second = support::executor(&store, 100_000);
        let run_id = start(
            &first,
            &plan(vec![
                bash("root"),
                bash("b").after(&["root"]),
                bash("c").after(&["root"]),
                bash("join").after(&["b", "c"]),
            ]),
        )
        .await;
        let runner_id = support::store_runner(&store, "r").await;
        // `first` advances after root and keeps a copy in which b and c are queued.
        run_one(&store, &first, runner_id).await;
        let b = store
            .claim(runner_id, &[String::new()], now_ms())
            .await
            .unwrap()
            .unwrap();
        let c = store
            .claim(runner_id, &[String::new()], now_ms())
            .await
            .unwrap()
            .unwrap();
        let join_status = || async {
            let join = store.step_run(run_id, "join").await.unwrap();
            join.expect("step join").status
        };
        // `second` sees one of them end: join still waits for the other.
        second
            .complete(b.attempt_id, run_id, Some(runner_id), &succeeded())
            .await
            .unwrap();
        assert_eq!(join_status().await, StepStatus::Pending);
        // `first` sees the other end. Deciding from its copy, where the first is still
        // running, it would leave join pending forever: it must read every step.
        let before = first.steps_read();
        first
            .complete(c.attempt_id, run_id, Some(runner_id), &succeeded())
            .await
            .unwrap();
        assert_eq!(first.steps_read() - before, 4, "a full read of the run");
        assert_eq!(join_status().await, StepStatus::Queued);
        run_one(&store, &second, runner_id).await;
        assert_eq!(
            store.run(run_id).await.unwrap().unwrap().status,
            RunState::Succeeded
        );
    }
}

#[tokio::test]
async fn an_attempt_ends_even_when_its_run_cannot_advance_with_it() {
    for (store, _dir) in support::stores().await {
        let backend = store.backend();
        let executor = support::executor(&store, 100);
        let run_id = start(&executor, &plan(vec![bash("a"), bash("b").after(&["a"])])).await;
        let runner_id = support::store_runner(&store, "r").await;
        let a = store
            .claim(runner_id, &[String::new()], now_ms())
            .await
            .unwrap()
            .expect("a is queued");
        // Every advance of the run now fails: the one the completion commits with too.
        plue_store::testing::execute(
            &store,
            "CREATE TRIGGER refuse_advances BEFORE UPDATE OF advances ON runs \
             BEGIN SELECT RAISE(ABORT, 'advances refused'); END",
            "CREATE FUNCTION refuse_advances() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'advances refused'; END $$; \
             CREATE TRIGGER refuse_advances BEFORE UPDATE OF advances ON runs \
             FOR EACH ROW EXECUTE FUNCTION refuse_advances()",
        )
        .await;
        let failed = executor
            .complete(a.attempt_id, run_id, Some(runner_id), &succeeded())
            .await;
        let error = failed.expect_err("the run could not advance");
        assert!(
            format!("{error:#}").contains("advances refused"),
            "{backend}: {error:#}"
        );
        // The attempt ended all the same: its runner's report is not lost.
        let attempts = store.dashboard_attempts(run_id).await.unwrap();
        let statuses: Vec<&str> = attempts.iter().map(|a| a.status.as_str()).collect();
        assert_eq!(statuses, ["succeeded"], "{backend}");
        let step = |id: &'static str| {
            let store = store.clone();
            async move { store.step_run(run_id, id).await.unwrap().unwrap().status }
        };
        assert_eq!(step("a").await, StepStatus::Succeeded, "{backend}");
        assert_eq!(step("b").await, StepStatus::Pending, "{backend}");
        // Once the run can advance again, the next advance takes it on.
        plue_store::testing::execute(
            &store,
            "DROP TRIGGER refuse_advances",
            "DROP TRIGGER refuse_advances ON runs",
        )
        .await;
        executor.advance(run_id).await.unwrap();
        assert_eq!(step("b").await, StepStatus::Queued, "{backend}");
        // A repeat of the report changes nothing.
        assert!(!executor
            .complete(a.attempt_id, run_id, Some(runner_id), &succeeded())
            .await
            .unwrap());
    }
}
