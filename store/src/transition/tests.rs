use plue_types::status::{AttemptStatus, StepStatus};

use crate::testing::{bash_run, claim_first_step, stores};
use crate::tx::Statement;
use crate::{
    Advanced, AttemptEnd, ClaimNext, Claimed, CompletedAttempt, KnownSteps, NextClaim, RunSnapshot,
    RunToAdvance, StepAfter, StepChange, Store,
};

/// The attempt a test's transition ends, and who reports its end.
#[derive(Clone, Copy)]
struct Completion<'a> {
    attempt_id: i64,
    runner_id: Option<i64>,
    end: &'a AttemptEnd<'a>,
    claim_next: Option<ClaimNext<'a>>,
}

/// What a test's transition did.
#[derive(Debug, Default)]
struct CompletedAndAdvanced {
    completed: Option<CompletedAttempt>,
    advanced: Advanced,
    next: NextClaim,
}

/// Drives one transition as the executor does, straight-line: the completion's attempt
/// ended and settled as `after` says, the run's steps read, the outputs `wanted` names
/// loaded, `decide`'s changes applied, the runner's next claim, the commit.
async fn complete_and_advance(
    store: &Store,
    run: RunToAdvance,
    completion: Completion<'_>,
    after: impl FnOnce(&CompletedAttempt) -> StepAfter,
    wanted: impl FnOnce(&RunSnapshot) -> Vec<(i64, i64)>,
    decide: impl FnOnce(&RunSnapshot) -> Vec<StepChange>,
) -> anyhow::Result<CompletedAndAdvanced> {
    let mut conn = store.transition_conn().await?;
    let mut transition = store.lock_run(&mut conn, run).await?;
    let ending = transition
        .end_attempt(completion.attempt_id, completion.runner_id, completion.end)
        .await?;
    let Some(ending) = ending else {
        let known = transition.into_known();
        conn.release(store).await;
        return Ok(CompletedAndAdvanced {
            advanced: Advanced {
                known,
                ..Advanced::default()
            },
            ..CompletedAndAdvanced::default()
        });
    };
    let after = after(ending.attempt());
    let completed = transition.settle(ending, after).await?;
    if let Some(mut snapshot) = transition.steps().await? {
        let wanted = wanted(&snapshot);
        transition.load_outputs(&mut snapshot, &wanted).await?;
        let changes = decide(&snapshot);
        transition.apply(snapshot, changes).await?;
    }
    if let Some(next) = completion.claim_next {
        transition.claim_next(next).await?;
    }
    let committed = transition.commit().await?;
    conn.release(store).await;
    Ok(CompletedAndAdvanced {
        completed: Some(completed),
        advanced: committed.advanced,
        next: committed.next,
    })
}

/// The chain's run, with the copy of its steps the caller holds.
fn ungrouped(run_id: i64, known: Option<KnownSteps>) -> RunToAdvance {
    RunToAdvance {
        known,
        ..RunToAdvance::ungrouped(run_id)
    }
}

/// The end of `attempt_id` as runner `runner` reports it, asking for no next claim.
fn reported<'a>(attempt_id: i64, runner: i64, end: &'a AttemptEnd<'a>) -> Completion<'a> {
    Completion {
        attempt_id,
        runner_id: Some(runner),
        end,
        claim_next: None,
    }
}

/// The end of a succeeded attempt with no outputs, at `at`.
fn succeeded(at: i64) -> AttemptEnd<'static> {
    AttemptEnd {
        status: AttemptStatus::Succeeded,
        exit_code: Some(0),
        reason: None,
        at,
        usage: None,
        model: None,
        cost_micros: None,
        has_outputs: false,
        started_at: None,
        runner_claims_next: false,
    }
}

fn done() -> StepAfter {
    StepAfter::Final {
        status: StepStatus::Succeeded,
        reason: None,
        exit_code: Some(0),
        outputs: "{}".into(),
    }
}

/// A run of steps `a` then `b` with `a` queued and claimed by a new runner `name`:
/// the run's id, the claim and the runner, with the known copy of the run its advance left.
async fn claimed_chain(
    store: &Store,
    name: &str,
) -> (i64, Claimed, i64, Option<crate::KnownSteps>) {
    let run_id = bash_run(store, "chain", &["a", "b"]).await;
    let (claimed, runner, known) = claim_first_step(store, run_id, name).await;
    (run_id, claimed, runner, known)
}

async fn scalar(store: &Store, sql: &str, id: i64) -> String {
    store
        .one_scalar::<String>(Statement::new(sql).bind(id))
        .await
        .unwrap()
}

async fn status_of_attempt(store: &Store, id: i64) -> String {
    scalar(store, "SELECT status FROM attempts WHERE id = $1", id).await
}

async fn advances_of(store: &Store, run_id: i64) -> String {
    scalar(
        store,
        "SELECT CAST(advances AS TEXT) FROM runs WHERE id = $1",
        run_id,
    )
    .await
}

#[tokio::test]
async fn the_advance_sees_the_completion_it_commits_with() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        let (run_id, claimed, runner, known) = claimed_chain(&store, "r").await;
        let CompletedAndAdvanced {
            completed,
            advanced,
            ..
        } = complete_and_advance(
            &store,
            ungrouped(run_id, known),
            reported(claimed.attempt_id, runner, &succeeded(5)),
            |attempt| {
                assert_eq!(attempt.step_id, "a");
                done()
            },
            |_| Vec::new(),
            |snapshot| {
                assert_eq!(
                    snapshot.steps[0].status,
                    StepStatus::Succeeded,
                    "the completion is seen"
                );
                vec![StepChange::Queue {
                    step_run_id: snapshot.steps[1].id,
                    dispatch: "{}".into(),
                    ready_at: 5,
                    timeout_ms: 60_000,
                }]
            },
        )
        .await
        .unwrap();
        let completed = completed.expect("the attempt ended");
        assert_eq!(completed.step_run_id, claimed.step_run_id, "{backend}");
        assert_eq!(
            (advanced.queued, advanced.known.is_some()),
            (1, true),
            "{backend}"
        );
        assert_eq!(
            status_of_attempt(&store, claimed.attempt_id).await,
            "succeeded"
        );
        let steps = store.step_runs(run_id).await.unwrap();
        let states: Vec<&str> = steps.iter().map(|s| s.status.as_str()).collect();
        assert_eq!(states, ["succeeded", "queued"], "{backend}");
    }
}

#[tokio::test]
async fn a_repeated_report_writes_nothing_and_keeps_the_copy_current() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        let (run_id, claimed, runner, known) = claimed_chain(&store, "r").await;
        let end = succeeded(5);
        let complete = |known| {
            complete_and_advance(
                &store,
                ungrouped(run_id, known),
                reported(claimed.attempt_id, runner, &end),
                |_| done(),
                |_| Vec::new(),
                |_| Vec::new(),
            )
        };
        let first = complete(known).await.unwrap();
        assert!(first.completed.is_some(), "{backend}");
        let counted = advances_of(&store, run_id).await;
        let again = complete(first.advanced.known).await.unwrap();
        assert_eq!(again.completed, None, "{backend}: a repeat ends nothing");
        assert_eq!(
            again.next,
            NextClaim::NotAsked,
            "{backend}: and claims nothing"
        );
        assert!(
            again.advanced.known.is_some(),
            "{backend}: the copy comes back"
        );
        assert_eq!(
            advances_of(&store, run_id).await,
            counted,
            "{backend}: not counted"
        );
    }
}

#[tokio::test]
async fn an_attempt_of_another_run_is_refused_with_nothing_written() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        let (run_id, claimed, runner, _) = claimed_chain(&store, "r").await;
        let (other_run, _, _, _) = claimed_chain(&store, "s").await;
        let before = advances_of(&store, other_run).await;
        let refused = complete_and_advance(
            &store,
            RunToAdvance::ungrouped(other_run),
            reported(claimed.attempt_id, runner, &succeeded(5)),
            |_| done(),
            |_| Vec::new(),
            |_| panic!("nothing is decided for a refused attempt"),
        )
        .await;
        let error = refused.expect_err("another run's attempt");
        assert!(
            error.to_string().contains(&format!("is of run {run_id}")),
            "{backend}: {error}"
        );
        assert_eq!(
            status_of_attempt(&store, claimed.attempt_id).await,
            "claimed",
            "{backend}"
        );
        assert_eq!(advances_of(&store, other_run).await, before, "{backend}");
    }
}

#[tokio::test]
async fn an_attempt_of_a_final_run_ends_without_an_advance() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        let (run_id, claimed, runner, known) = claimed_chain(&store, "r").await;
        {
            store
                .execute(
                    Statement::new("UPDATE runs SET status = 'cancelled' WHERE id = $1")
                        .bind(run_id),
                )
                .await
                .unwrap();
        };
        let CompletedAndAdvanced {
            completed,
            advanced,
            ..
        } = complete_and_advance(
            &store,
            ungrouped(run_id, known),
            reported(claimed.attempt_id, runner, &succeeded(5)),
            |_| done(),
            |_| panic!("a final run's outputs are not read"),
            |_| panic!("a final run is not advanced"),
        )
        .await
        .unwrap();
        assert!(completed.is_some(), "{backend}");
        assert_eq!(advanced.queued, 0, "{backend}");
        assert_eq!(
            status_of_attempt(&store, claimed.attempt_id).await,
            "succeeded"
        );
    }
}

#[tokio::test]
async fn the_runner_claims_what_the_advance_queued_in_the_same_transaction() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        let (run_id, claimed, runner, known) = claimed_chain(&store, "r").await;
        let end = AttemptEnd {
            runner_claims_next: true,
            ..succeeded(5)
        };
        let labels = [String::new()];
        let complete = |attempt_id, known| {
            complete_and_advance(
                &store,
                ungrouped(run_id, known),
                Completion {
                    attempt_id,
                    runner_id: Some(runner),
                    end: &end,
                    claim_next: Some(ClaimNext {
                        runner_id: runner,
                        label_sets: &labels[..],
                    }),
                },
                |_| done(),
                |_| Vec::new(),
                |snapshot| {
                    snapshot.steps[1..]
                        .iter()
                        .filter(|s| s.status == StepStatus::Pending)
                        .map(|s| StepChange::Queue {
                            step_run_id: s.id,
                            dispatch: "{}".into(),
                            ready_at: 5,
                            timeout_ms: 60_000,
                        })
                        .collect()
                },
            )
        };
        let first = complete(claimed.attempt_id, known).await.unwrap();
        let NextClaim::Claimed(next) = first.next else {
            panic!("{backend}: b was not taken: {:?}", first.next);
        };
        assert_eq!(
            (next.run_id, next.step_id.as_str()),
            (run_id, "b"),
            "{backend}"
        );
        assert_eq!(
            status_of_attempt(&store, next.attempt_id).await,
            "claimed",
            "{backend}"
        );
        let state = "SELECT state FROM runners WHERE id = $1";
        assert_eq!(scalar(&store, state, runner).await, "busy", "{backend}");
        // b's completion finds nothing left to take: the runner is idle again.
        let last = complete(next.attempt_id, first.advanced.known)
            .await
            .unwrap();
        assert_eq!(last.next, NextClaim::NothingToTake, "{backend}");
        assert_eq!(scalar(&store, state, runner).await, "idle", "{backend}");
    }
}

#[tokio::test]
async fn out_of_order_calls_are_refused_and_write_nothing() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        let (run_id, claimed, runner, known) = claimed_chain(&store, "r").await;
        let before = advances_of(&store, run_id).await;
        let end = succeeded(5);
        // An ended attempt left unsettled: reading the steps is refused, so is the commit.
        let mut conn = store.transition_conn().await.unwrap();
        let mut transition = store
            .lock_run(&mut conn, ungrouped(run_id, known))
            .await
            .unwrap();
        let ending = transition
            .end_attempt(claimed.attempt_id, Some(runner), &end)
            .await
            .unwrap()
            .expect("the attempt ends");
        let error = transition.steps().await.expect_err("steps before settling");
        assert!(
            error.to_string().contains("out of order"),
            "{backend}: {error}"
        );
        drop(ending);
        let error = transition.commit().await.expect_err("an unsettled attempt");
        assert!(
            error.to_string().contains("not settled"),
            "{backend}: {error}"
        );
        conn.release(&store).await;
        assert_eq!(
            status_of_attempt(&store, claimed.attempt_id).await,
            "claimed",
            "{backend}: rolled back"
        );
        assert_eq!(advances_of(&store, run_id).await, before, "{backend}");
        // Changes applied before the steps were read are refused too.
        let mut conn = store.transition_conn().await.unwrap();
        let mut transition = store
            .lock_run(&mut conn, RunToAdvance::ungrouped(run_id))
            .await
            .unwrap();
        let snapshot = RunSnapshot {
            run_id,
            cancel_requested: false,
            cancel_reason: None,
            max_parallel: 0,
            steps: Vec::new(),
            outputs: Default::default(),
        };
        let error = transition
            .apply(snapshot, Vec::new())
            .await
            .expect_err("changes without a read");
        assert!(
            error.to_string().contains("out of order"),
            "{backend}: {error}"
        );
        drop(transition);
        conn.release(&store).await;
    }
}

#[tokio::test]
async fn an_attempt_ended_alone_is_read_by_the_runs_next_advance() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        let (run_id, claimed, runner, known) = claimed_chain(&store, "r").await;
        let end = succeeded(5);
        let counted = advances_of(&store, run_id).await;
        let mut conn = store.transition_conn().await.unwrap();
        let mut transition = store
            .end_alone(&mut conn, ungrouped(run_id, known))
            .await
            .unwrap();
        let ending = transition
            .end_attempt(claimed.attempt_id, Some(runner), &end)
            .await
            .unwrap()
            .expect("the attempt ends");
        transition.settle(ending, done()).await.unwrap();
        assert!(
            transition.steps().await.unwrap().is_none(),
            "{backend}: an attempt ended alone reads no steps"
        );
        let committed = transition.commit().await.unwrap();
        conn.release(&store).await;
        assert_eq!(
            advances_of(&store, run_id).await,
            counted,
            "{backend}: the run's row was not taken"
        );
        let known = committed.advanced.known;
        assert!(known.is_some(), "{backend}: the caller's copy comes back");
        // The next advance, with that copy, learns of `a`'s end from the change list.
        let mut seen = None;
        crate::testing::advance_with(&store, ungrouped(run_id, known), |snapshot| {
            seen = Some(snapshot.steps[0].status);
            Vec::new()
        })
        .await
        .unwrap();
        assert_eq!(
            seen,
            Some(plue_types::status::StepStatus::Succeeded),
            "{backend}"
        );
    }
}
