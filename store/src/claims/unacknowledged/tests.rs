//! Claims that stick, on both backends: what a claim nobody acknowledged becomes, who may
//! claim after it, and the busy claim racing a retirement (PostgreSQL).

use evaluator::plan::{Plan, Step};
use plue_types::status::{AttemptStatus, StepStatus};

use super::{Acknowledgement, Unanswered};
use crate::testing::{local_run, queue_run_ready_at, stores};
use crate::tx::Statement;
use crate::{AttemptEnd, NewRunner, Registration, StepAfter, Store};

const ANY: &[String] = &[String::new()];
const WINDOW: Unanswered = Unanswered::Within { window_ms: 5_000 };
const LOST: Unanswered = Unanswered::RunnerEnded("runner lost");

/// A run of independent `bash` steps named `steps`, all queued and ready at 1 000.
async fn queued(store: &Store, steps: &[&str]) -> i64 {
    let plan = Plan::new("p", steps.iter().map(|s| Step::bash(*s, "true")).collect());
    let json = serde_json::to_string(&plan).unwrap();
    queue_run_ready_at(store, &local_run(&plan, &json), 1_000).await
}

/// A runner of the shared token on `host`, last heard from at `now`.
async fn runner_on(store: &Store, name: &str, host: Option<&str>, now: i64) -> i64 {
    let registered = store
        .register(&NewRunner {
            name,
            labels_json: "{}",
            session_hash: name,
            ephemeral: false,
            token: None,
            secrets: true,
            accept_forks: true,
            host,
            now,
        })
        .await
        .unwrap();
    let Registration::Registered(id) = registered else {
        panic!("{name} did not register: {registered:?}");
    };
    id
}

/// `(status, acked_at, reason)` of attempt `id`.
async fn attempt(store: &Store, id: i64) -> (String, Option<i64>, Option<String>) {
    store
        .one_row(
            Statement::new("SELECT status, acked_at, reason FROM attempts WHERE id = $1").bind(id),
        )
        .await
        .unwrap()
}

/// `(status, attempts, unacknowledged)` of step run `id`.
async fn step_run(store: &Store, id: i64) -> (String, i64, i64) {
    store
        .one_row(
            Statement::new("SELECT status, attempts, unacknowledged FROM step_runs WHERE id = $1")
                .bind(id),
        )
        .await
        .unwrap()
}

fn failed_at(at: i64) -> AttemptEnd<'static> {
    AttemptEnd {
        status: AttemptStatus::Failed,
        exit_code: Some(1),
        reason: Some("exit 1"),
        at,
        usage: None,
        model: None,
        cost_micros: None,
        has_outputs: false,
        started_at: None,
        runner_claims_next: false,
    }
}

#[tokio::test]
async fn a_claim_never_acknowledged_goes_back_to_the_queue_without_using_a_retry() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        queued(&store, &["a"]).await;
        let hung = runner_on(&store, "hung", Some("node-a"), 1_000).await;
        let claimed = store.claim(hung, ANY, 1_500).await.unwrap().unwrap();
        // Inside the window nothing is returned.
        let early = store
            .return_unacknowledged(1_500, None, WINDOW, 2_000)
            .await
            .unwrap();
        assert!(early.is_empty(), "{backend}: {early:?}");

        let returned = store
            .return_unacknowledged(6_500, None, WINDOW, 6_600)
            .await
            .unwrap();
        assert_eq!(returned.len(), 1, "{backend}");
        assert_eq!(
            (returned[0].attempt_id, returned[0].runner_id),
            (claimed.attempt_id, hung)
        );
        let (status, acked, reason) = attempt(&store, claimed.attempt_id).await;
        assert_eq!(
            (status.as_str(), acked),
            ("unacknowledged", None),
            "{backend}"
        );
        assert_eq!(
            reason.as_deref(),
            Some(
                "runner hung did not acknowledge the claim within 5 s: the step went back to \
                 the queue (no retry used)"
            )
        );
        assert_eq!(
            step_run(&store, claimed.step_run_id).await,
            ("queued".into(), 1, 1),
            "{backend}"
        );
        // Returned once: a second sweep finds nothing.
        let again = store.return_unacknowledged(9_000, None, WINDOW, 9_000);
        assert!(again.await.unwrap().is_empty(), "{backend}");

        // The suspect runner claims nothing; another one takes the step, as attempt 2,
        // which a retry counts as the step's first.
        assert_eq!(
            store.claim(hung, ANY, 7_000).await.unwrap(),
            None,
            "{backend}"
        );
        let healthy = runner_on(&store, "healthy", Some("node-b"), 7_000).await;
        let taken = store.claim(healthy, ANY, 7_000).await.unwrap().unwrap();
        assert_eq!((taken.step_run_id, taken.number), (claimed.step_run_id, 2));
        let mut counted = None;
        store
            .complete_attempt(taken.attempt_id, Some(healthy), &failed_at(8_000), |c| {
                counted = Some(c.number_in_iteration);
                StepAfter::Final {
                    status: StepStatus::Failed,
                    reason: None,
                    exit_code: Some(1),
                    outputs: "{}".into(),
                }
            })
            .await
            .unwrap()
            .expect("the attempt ended");
        assert_eq!(
            counted,
            Some(1),
            "{backend}: the returned claim used no retry"
        );
    }
}

#[tokio::test]
async fn a_suspect_runner_claims_nothing_until_it_proves_alive() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        queued(&store, &["a", "b"]).await;
        let runner = runner_on(&store, "r", None, 1_000).await;
        store.claim(runner, ANY, 1_500).await.unwrap().unwrap();
        store
            .return_unacknowledged(6_500, None, WINDOW, 6_600)
            .await
            .unwrap();
        let suspect = store.suspect_runners(10).await.unwrap();
        assert_eq!(
            suspect
                .iter()
                .map(|r| (r.id, r.suspect_since))
                .collect::<Vec<_>>(),
            [(runner, Some(6_600))],
            "{backend}"
        );
        let liveness = store.runner_liveness(runner).await.unwrap().unwrap();
        assert!(liveness.suspect, "{backend}");
        // Two ready steps, none for the suspect runner, even as a busy runner's next claim.
        assert_eq!(store.claim(runner, ANY, 7_000).await.unwrap(), None);
        assert_eq!(store.claim_next(runner, ANY, 7_000).await.unwrap(), None);
        // It may take them, once it proves alive.
        assert!(store.ready_in_scope(runner, ANY, 7_000).await.unwrap());
        assert!(store.heartbeat(runner, 7_100).await.unwrap());
        assert!(store.suspect_runners(10).await.unwrap().is_empty());
        assert!(
            store.claim(runner, ANY, 7_200).await.unwrap().is_some(),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn an_acknowledged_claim_stays_and_a_returned_one_refuses_its_acknowledgement() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        queued(&store, &["a", "b"]).await;
        let runner = runner_on(&store, "r", None, 1_000).await;
        let other = runner_on(&store, "s", None, 1_000).await;

        let kept = store.claim(runner, ANY, 1_500).await.unwrap().unwrap();
        let counted = store.acknowledge_claim(kept.attempt_id, runner, 1_600);
        assert_eq!(counted.await.unwrap(), Acknowledgement::Counted);
        // Sent again (its answer was lost): still counted, at the first time.
        let again = store.acknowledge_claim(kept.attempt_id, runner, 1_700);
        assert_eq!(again.await.unwrap(), Acknowledgement::Counted);
        // Another runner's acknowledgement of it counts for nothing.
        let stolen = store.acknowledge_claim(kept.attempt_id, other, 1_700);
        assert_eq!(stolen.await.unwrap(), Acknowledgement::Refused);

        let late = store.claim(other, ANY, 1_500).await.unwrap().unwrap();
        let returned = store
            .return_unacknowledged(9_000, None, WINDOW, 9_000)
            .await
            .unwrap();
        assert_eq!(
            returned.iter().map(|r| r.attempt_id).collect::<Vec<_>>(),
            [late.attempt_id],
            "{backend}: only the claim nobody acknowledged"
        );
        assert_eq!(
            attempt(&store, kept.attempt_id).await,
            ("claimed".into(), Some(1_600), None)
        );
        let refused = store.acknowledge_claim(late.attempt_id, other, 9_100);
        assert_eq!(
            refused.await.unwrap(),
            Acknowledgement::Refused,
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_start_or_a_completions_claim_acknowledges_and_a_lost_runners_claim_goes_back() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        queued(&store, &["a", "b", "c"]).await;
        let runner = runner_on(&store, "r", None, 1_000).await;
        let first = store.claim(runner, ANY, 1_500).await.unwrap().unwrap();
        store
            .start_attempt(first.attempt_id, runner, 1_600)
            .await
            .unwrap();
        assert_eq!(attempt(&store, first.attempt_id).await.1, Some(1_600));
        // The completion's claim (the runner stays busy) is acknowledged as it is made.
        let mut end = failed_at(2_000);
        end.runner_claims_next = true;
        store
            .complete_attempt(first.attempt_id, Some(runner), &end, |_| StepAfter::Final {
                status: StepStatus::Failed,
                reason: None,
                exit_code: Some(1),
                outputs: "{}".into(),
            })
            .await
            .unwrap();
        let next = store.claim_next(runner, ANY, 2_000).await.unwrap().unwrap();
        assert_eq!(
            attempt(&store, next.attempt_id).await.1,
            Some(2_000),
            "{backend}"
        );
        let none = store.return_unacknowledged(99_000, None, WINDOW, 99_000);
        assert!(none.await.unwrap().is_empty(), "{backend}");

        // A lost runner's claim it never acknowledged goes back whatever its age.
        let other = runner_on(&store, "s", None, 1_000).await;
        let unanswered = store.claim(other, ANY, 2_500).await.unwrap().unwrap();
        let back = store
            .return_unacknowledged(i64::MAX, Some(other), LOST, 2_600)
            .await
            .unwrap();
        assert_eq!(back.len(), 1, "{backend}");
        let (status, _, reason) = attempt(&store, unanswered.attempt_id).await;
        assert_eq!(status, "unacknowledged");
        assert_eq!(
            reason.as_deref(),
            Some(
                "runner s ended before it acknowledged the claim (runner lost): the step went \
                 back to the queue (no retry used)"
            )
        );
        let listed = store.unacknowledged_claims(10).await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|c| (c.attempt_id, c.runner_name.as_str(), c.returned_at))
                .collect::<Vec<_>>(),
            [(unanswered.attempt_id, "s", 2_600)],
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_lost_runner_makes_the_live_runners_of_its_host_suspect() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        queued(&store, &["a"]).await;
        let lost = runner_on(&store, "lost", Some("node-a"), 1_000).await;
        let mate = runner_on(&store, "mate", Some("node-a"), 9_000).await;
        let elsewhere = runner_on(&store, "elsewhere", Some("node-b"), 9_000).await;
        let nowhere = runner_on(&store, "nowhere", None, 9_000).await;
        assert_eq!(store.mark_lost(5_000, 10_000).await.unwrap(), [lost]);
        let suspect: Vec<i64> = store
            .suspect_runners(10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(suspect, [mate], "{backend}");
        let row = |id| {
            let store = store.clone();
            async move {
                let all = store.list_runners(10).await.unwrap();
                all.into_iter().find(|r| r.id == id).unwrap()
            }
        };
        assert_eq!(row(mate).await.host.as_deref(), Some("node-a"));
        // Its host-mate may not take the lost runner's work before it proves alive; the
        // others may.
        assert_eq!(store.claim(mate, ANY, 10_000).await.unwrap(), None);
        assert!(store.heartbeat(mate, 10_100).await.unwrap());
        assert_eq!(row(mate).await.suspect_since, None, "{backend}");
        let _ = (elsewhere, nowhere);
        assert!(store.claim(mate, ANY, 10_200).await.unwrap().is_some());
    }
}

/// The claim–retire race of a busy runner (its claim with its completion): the claim reads
/// the runner live, a retirement (`runner_gone`: the pool stops it, it deregisters, it is
/// declared lost) commits before the claim does. The claim must wait for the runner's row
/// and then take nothing — else a step is claimed by a runner that is gone, which nobody
/// fails but the attempt's timeout. PostgreSQL only: SQLite's one writer serializes them.
#[tokio::test]
async fn a_busy_claim_racing_the_runners_retirement_writes_nothing() {
    for (store, _dir) in stores().await {
        let crate::Db::Postgres(pool) = &store.db else {
            continue;
        };
        let run_id = queued(&store, &["a", "b"]).await;
        let runner = runner_on(&store, "r", None, 1_000).await;
        store.claim(runner, ANY, 1_500).await.unwrap().unwrap();
        // The retirement, written and holding the runner's row, not committed.
        let mut retirement = pool.begin().await.unwrap();
        sqlx::query(
            "UPDATE runners SET state = 'gone', state_since = 2 \
             WHERE id = $1 AND state IN ('idle', 'busy')",
        )
        .bind(runner)
        .execute(&mut *retirement)
        .await
        .unwrap();
        let claiming = tokio::spawn({
            let store = store.clone();
            async move { store.claim_next(runner, ANY, 1_600).await }
        });
        // Either the claim waits for the runner's row, or (without the row held) it has
        // already taken the step from under the retirement.
        let mut waited = false;
        for _ in 0..500 {
            let waiting: i64 = store
                .one_scalar(Statement::new(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                ))
                .await
                .unwrap();
            if waiting > 0 {
                waited = true;
                break;
            }
            if claiming.is_finished() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        retirement.commit().await.unwrap();
        let claimed = claiming.await.unwrap().unwrap();
        assert_eq!(
            claimed.map(|c| c.step_id),
            None,
            "a claim took a step for a runner retired meanwhile (it waited for its row: \
             {waited})"
        );
        let (queued_left, attempts): (i64, i64) = store
            .one_row(
                Statement::new(
                    "SELECT COUNT(*) FILTER (WHERE status = 'queued'), \
             (SELECT COUNT(*) FROM attempts) FROM step_runs WHERE run_id = $1",
                )
                .bind(run_id),
            )
            .await
            .unwrap();
        assert_eq!((queued_left, attempts), (1, 1), "nothing written");
    }
}
