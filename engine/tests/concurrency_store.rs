//! Concurrency groups through the store and the executor, on both backends: a newer run
//! waits (`pending`, nothing claimable), a newer waiting run supersedes an older one,
//! `cancel_in_progress` cancels the active run and starts when it is final, and two engine
//! replicas starting runs of one group at once leave exactly one active. PostgreSQL runs on
//! a throw-away server (testkit); without one only SQLite is covered, unless
//! PLUE_REQUIRE_POSTGRES=1.

use std::collections::BTreeMap;

use crate::support;

use evaluator::plan::{Concurrency, Plan, Step};
use evaluator::{EvalContext, Event};
use plue_core::executor::{Executor, Report};
use plue_store::{now_ms, NewRun, Store};
use plue_types::protocol::Outcome;
use plue_types::status::StepStatus;

/// Two handles per available backend on one fresh database each: two engine replicas.
async fn replicas() -> Vec<(Store, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("plue.db").display());
    let first = Store::open_data_dir(dir.path()).await.unwrap();
    let second = Store::connect(&url).await.unwrap();
    let mut stores = vec![(first, second, Some(dir))];
    if let Some(server) =
        testkit::shared_postgres().expect("PostgreSQL is required (PLUE_REQUIRE_POSTGRES=1)")
    {
        let url = server.new_database().unwrap();
        let first = Store::connect(&url).await.unwrap();
        let second = Store::connect(&url).await.unwrap();
        stores.push((first, second, None));
    }
    stores
}

fn plan(group: &str, cancel_in_progress: bool) -> Plan {
    Plan {
        concurrency: Some(Concurrency {
            group: group.into(),
            cancel_in_progress,
        }),
        ..Plan::new(
            "deploy",
            vec![
                Step::bash("a", "echo a"),
                Step::bash("b", "echo b").after(&["a"]),
            ],
        )
    }
}

async fn start(executor: &Executor, plan: &Plan, branch: &str) -> i64 {
    let json = serde_json::to_string(plan).unwrap();
    let ctx = serde_json::to_string(&EvalContext::local(Event::Push, branch)).unwrap();
    executor
        .start_run(&NewRun {
            workflow_path: "/w/deploy.plue.py",
            event: "push",
            git_ref: &format!("refs/heads/{branch}"),
            sha: "0000000",
            context_json: &ctx,
            ..plue_store::testing::local_run(plan, &json)
        })
        .await
        .unwrap()
}

async fn status(store: &Store, run_id: i64) -> (String, Option<String>) {
    let run = store.run(run_id).await.unwrap().unwrap();
    (run.status.to_string(), run.reason)
}

async fn runner(store: &Store) -> i64 {
    support::store_runner(store, &format!("r{}", now_ms())).await
}

fn report(outcome: Outcome) -> Report {
    Report {
        outcome,
        exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
        reason: None,
        outputs: BTreeMap::new(),
    }
}

/// Claims and completes every claimable step until none is left; the runs they were of.
async fn drain(executor: &Executor, runner_id: i64, outcome: Outcome) -> Vec<i64> {
    let store = executor.store();
    let mut runs = Vec::new();
    while let Some(claimed) = store
        .claim(runner_id, &[String::new()], now_ms())
        .await
        .unwrap()
    {
        runs.push(claimed.run_id);
        executor
            .complete(
                claimed.attempt_id,
                claimed.run_id,
                Some(runner_id),
                &report(outcome),
            )
            .await
            .unwrap();
    }
    runs
}

#[tokio::test]
async fn a_newer_run_waits_until_the_active_one_ends_then_starts() {
    for (store, _other, _dir) in replicas().await {
        let executor = support::executor(&store, 100);
        let first = start(&executor, &plan("deploy-{branch}", false), "main").await;
        let second = start(&executor, &plan("deploy-{branch}", false), "main").await;
        let elsewhere = start(&executor, &plan("deploy-{branch}", false), "dev").await;
        assert_eq!(status(&store, first).await, ("queued".into(), None));
        assert_eq!(
            status(&store, second).await,
            (
                "pending".into(),
                Some(format!(
                    "waiting for run {first} in concurrency group 'deploy-main'"
                ))
            ),
            "on {}",
            store.backend()
        );
        assert_eq!(
            store
                .run(second)
                .await
                .unwrap()
                .unwrap()
                .concurrency_group
                .as_deref(),
            Some("deploy-main")
        );
        assert_eq!(status(&store, elsewhere).await.0, "queued", "another group");
        assert!(
            store
                .step_runs(second)
                .await
                .unwrap()
                .iter()
                .all(|s| s.status == StepStatus::Pending),
            "nothing of a waiting run is queued"
        );
        // The sweeper's periodic advance leaves a waiting run waiting.
        executor.advance(second).await.unwrap();
        assert_eq!(status(&store, second).await.0, "pending");

        let runner_id = runner(&store).await;
        let ran = drain(&executor, runner_id, Outcome::Succeeded).await;
        assert_eq!(status(&store, first).await.0, "succeeded");
        assert_eq!(status(&store, elsewhere).await.0, "succeeded");
        assert_eq!(status(&store, second).await, ("succeeded".into(), None));
        let last_of_first = ran.iter().rposition(|&r| r == first).unwrap();
        let first_of_second = ran.iter().position(|&r| r == second).unwrap();
        assert!(
            last_of_first < first_of_second,
            "the second run started only after the first ended: {ran:?}"
        );
    }
}

#[tokio::test]
async fn a_newer_waiting_run_supersedes_an_older_one() {
    for (store, _other, _dir) in replicas().await {
        let executor = support::executor(&store, 100);
        let active = start(&executor, &plan("g", false), "main").await;
        let older = start(&executor, &plan("g", false), "main").await;
        let newer = start(&executor, &plan("g", false), "main").await;
        assert_eq!(
            status(&store, older).await,
            (
                "cancelled".into(),
                Some(format!(
                    "superseded by run {newer} in concurrency group 'g'"
                ))
            ),
            "on {}",
            store.backend()
        );
        assert!(store
            .step_runs(older)
            .await
            .unwrap()
            .iter()
            .all(|s| s.status == StepStatus::Cancelled));
        assert_eq!(status(&store, newer).await.0, "pending");
        assert_eq!(status(&store, active).await.0, "queued");

        // A person cancelling the waiting run ends it without touching the active one.
        assert!(executor.cancel(newer).await.unwrap());
        assert_eq!(
            status(&store, newer).await,
            ("cancelled".into(), Some("cancelled".into()))
        );
        let runner_id = runner(&store).await;
        drain(&executor, runner_id, Outcome::Succeeded).await;
        assert_eq!(status(&store, active).await.0, "succeeded");
        let next = start(&executor, &plan("g", false), "main").await;
        assert_eq!(status(&store, next).await.0, "queued", "the group is free");
    }
}

#[tokio::test]
async fn cancel_in_progress_cancels_the_active_run_and_starts_once_it_is_final() {
    for (store, _other, _dir) in replicas().await {
        let executor = support::executor(&store, 100);
        let old = start(&executor, &plan("deploy-{branch}", true), "main").await;
        let runner_id = runner(&store).await;
        let claimed = store
            .claim(runner_id, &[String::new()], now_ms())
            .await
            .unwrap()
            .unwrap();
        store
            .start_attempt(claimed.attempt_id, runner_id, now_ms())
            .await
            .unwrap();
        assert_eq!(status(&store, old).await.0, "running");

        let new = start(&executor, &plan("deploy-{branch}", true), "main").await;
        // The old run is asked to stop; the new one waits until it has.
        assert!(store.attempt_should_stop(claimed.attempt_id).await.unwrap());
        assert_eq!(
            status(&store, new).await.0,
            "pending",
            "on {}",
            store.backend()
        );
        assert!(store
            .claim(runner_id, &[String::new()], now_ms())
            .await
            .unwrap()
            .is_none());

        executor
            .complete(
                claimed.attempt_id,
                claimed.run_id,
                Some(runner_id),
                &report(Outcome::Cancelled),
            )
            .await
            .unwrap();
        assert_eq!(
            status(&store, old).await,
            (
                "cancelled".into(),
                Some(format!(
                    "superseded by run {new} in concurrency group 'deploy-main'"
                ))
            )
        );
        assert_eq!(status(&store, new).await.0, "queued");
        drain(&executor, runner_id, Outcome::Succeeded).await;
        assert_eq!(status(&store, new).await.0, "succeeded");
    }
}

#[tokio::test]
async fn a_run_that_fails_or_is_cancelled_by_a_person_frees_its_group() {
    for (store, _other, _dir) in replicas().await {
        let executor = support::executor(&store, 100);
        let first = start(&executor, &plan("g", false), "main").await;
        let second = start(&executor, &plan("g", false), "main").await;
        assert!(executor.cancel(first).await.unwrap());
        assert_eq!(status(&store, first).await.0, "cancelled");
        assert_eq!(status(&store, second).await.0, "queued");
        let third = start(&executor, &plan("g", false), "main").await;
        let runner_id = runner(&store).await;
        drain(&executor, runner_id, Outcome::Failed).await;
        assert_eq!(status(&store, second).await.0, "failed");
        assert_eq!(status(&store, third).await.0, "failed", "it ran after");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_starting_runs_of_one_group_leave_exactly_one_active() {
    for (first, second, _dir) in replicas().await {
        let replicas = [
            support::executor(&first, 100),
            support::executor(&second, 100),
        ];
        for round in 0..3 {
            let group = format!("race-{round}");
            let plan = plan(&group, false);
            let started =
                futures::future::join_all((0..8).map(|i| start(&replicas[i % 2], &plan, "main")))
                    .await;
            let mut active = Vec::new();
            let mut pending = Vec::new();
            for &run_id in &started {
                match status(&first, run_id).await.0.as_str() {
                    "queued" | "running" => active.push(run_id),
                    "pending" => pending.push(run_id),
                    "cancelled" => {}
                    other => panic!("run {run_id} is {other}"),
                }
            }
            assert_eq!(
                active.len(),
                1,
                "exactly one active run on {}: {active:?}",
                first.backend()
            );
            assert_eq!(pending.len(), 1, "the newest waits: {pending:?}");
            assert_eq!(
                pending[0],
                *started.iter().filter(|&&r| r != active[0]).max().unwrap(),
                "the waiting run is the newest one"
            );
            // The active run ends; the waiting one starts on whichever replica finishes it.
            let runner_id = runner(&first).await;
            drain(&replicas[round % 2], runner_id, Outcome::Succeeded).await;
            assert_eq!(status(&first, active[0]).await.0, "succeeded");
            assert_eq!(status(&second, pending[0]).await.0, "succeeded");
        }
    }
}
