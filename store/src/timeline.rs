//! What the dashboard shows of a run's time: how far each run of a list got (steps
//! finished of all steps, `12/60`), and every attempt of a run with the four moments of
//! its life — claimable (`ready_at`, migration 0027), claimed, started, ended — for the
//! timeline (Gantt) view.
//!
//! Invariants: read-only; one statement per call whatever the number of runs or steps
//! (the run ids are one bound JSON parameter, never SQL spliced from values).

use plue_types::status::AttemptStatus;

use crate::filters::{bind_conditions, Conditions};
use crate::tx::Statement;
use crate::Store;

/// The statuses a step run ends in.
const FINAL: &str = "('succeeded', 'failed', 'skipped', 'cancelled')";

/// How far a run got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct RunProgress {
    pub run_id: i64,
    /// Its steps (every step of the plan has a step run from the start).
    pub total: i64,
    /// Those that ended (succeeded, failed, skipped or cancelled).
    pub finished: i64,
}

/// One attempt of a step, as the timeline draws it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct TimelineAttempt {
    pub step_id: String,
    pub number: i64,
    /// The review-loop iteration it ran in (1 outside loops).
    pub iteration: i64,
    #[sqlx(try_from = "String")]
    pub status: AttemptStatus,
    /// When it became claimable (queued, or a retry's backoff over); `None` for attempts
    /// from before migration 0027.
    pub ready_at: Option<i64>,
    pub claimed_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The name of the runner that took it.
    pub runner: Option<String>,
}

impl Store {
    /// How far each of `run_ids` got; a run with no step runs is left out.
    pub async fn run_progress(&self, run_ids: &[i64]) -> anyhow::Result<Vec<RunProgress>> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conditions = Conditions::new(self.backend());
        conditions.one_of("run_id", Some(run_ids));
        let sql = format!(
            "SELECT run_id, COUNT(*) AS total, \
             CAST(SUM(CASE WHEN status IN {FINAL} THEN 1 ELSE 0 END) AS BIGINT) AS finished \
             FROM step_runs {} GROUP BY run_id",
            conditions.where_clause()
        );
        self.rows(bind_conditions!(Statement::new(&sql), conditions))
            .await
    }

    /// Every attempt of run `run_id`, in the order of the run's steps, then by number.
    pub async fn timeline_attempts(&self, run_id: i64) -> anyhow::Result<Vec<TimelineAttempt>> {
        self.rows(
            Statement::new(
                "SELECT s.step_id, a.number, a.iteration, a.status, a.ready_at, a.claimed_at, \
                 a.started_at, a.finished_at, r.name AS runner FROM attempts a \
                 JOIN step_runs s ON s.id = a.step_run_id \
                 LEFT JOIN runners r ON r.id = a.runner_id \
                 WHERE s.run_id = $1 ORDER BY s.position, a.number",
            )
            .bind(run_id),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use evaluator::plan::{Plan, Step};

    use super::*;
    use crate::testing::{local_run, stores};
    use crate::{NewRun, StepChange};

    async fn two_step_run(store: &Store) -> i64 {
        let bash = |id: &str| Step::bash(id, "true");
        let plan = Plan::new("t", vec![bash("a"), bash("b")]);
        let json = serde_json::to_string(&plan).unwrap();
        let new = NewRun {
            workflow_path: "/w/t.plue.py",
            ..local_run(&plan, &json)
        };
        store.create_run(&new, 4).await.unwrap().id
    }

    #[tokio::test]
    async fn an_attempt_keeps_when_its_step_became_claimable() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let run_id = two_step_run(&store).await;
            let empty = store.run_progress(&[run_id]).await.unwrap();
            assert_eq!(
                empty,
                vec![RunProgress {
                    run_id,
                    total: 2,
                    finished: 0
                }],
                "{backend}"
            );
            crate::testing::advance_with(
                &store,
                crate::RunToAdvance::ungrouped(run_id),
                |snapshot| {
                    vec![
                        StepChange::Queue {
                            step_run_id: snapshot.steps[0].id,
                            dispatch: "{}".into(),
                            ready_at: 1_000,
                            timeout_ms: 60_000,
                        },
                        StepChange::Skip {
                            step_run_id: snapshot.steps[1].id,
                            reason: "not needed".into(),
                        },
                    ]
                },
            )
            .await
            .unwrap();
            let runner = store
                .register_runner("r1", "{}", "hash", 2_000)
                .await
                .unwrap();
            let claimed = store.claim(runner, &[String::new()], 5_000).await.unwrap();
            assert!(claimed.is_some(), "{backend}: the queued step is claimed");
            let attempts = store.timeline_attempts(run_id).await.unwrap();
            assert_eq!(attempts.len(), 1, "{backend}");
            let attempt = &attempts[0];
            assert_eq!(
                (attempt.step_id.as_str(), attempt.number, attempt.ready_at),
                ("a", 1, Some(1_000)),
                "{backend}: claimable from when it was queued"
            );
            assert_eq!(attempt.claimed_at, 5_000, "{backend}");
            assert_eq!(attempt.runner.as_deref(), Some("r1"), "{backend}");
            let progress = store.run_progress(&[run_id, run_id + 1000]).await.unwrap();
            assert_eq!(progress.len(), 1, "{backend}: unknown runs are left out");
            assert_eq!(
                (progress[0].total, progress[0].finished),
                (2, 1),
                "{backend}"
            );
        }
    }
}
