//! Re-running a run's failed steps: the new run is stored with the steps it carries over
//! from the run it repeats already final, in the transaction that creates it, so no
//! advance ever sees them pending (`Store::create_rerun_by`, in `runs/create.rs`, creates
//! it; [`carry_steps`] carries them).
//!
//! Invariants:
//! - Only steps final as `succeeded` or `skipped` in the earlier run are carried (which
//!   ones is the engine's choice, `plue_core::executor::reruns`); a carried step keeps its
//!   status, exit code, times and outputs, starts no attempt and has no log of its own in
//!   the new run (its reason names the run it comes from).
//! - Its hand-off blobs (workspace, artifacts, transcript) are listed again under the new
//!   run, pointing at the same objects and keeping their creation time, so retention ends
//!   both listings together; the files of an artifacts tar are listed with it.

use anyhow::Context;
use plue_types::status::StepStatus;

use super::tx::{Statement, Tx};

/// A step run as a re-run carries it over.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct CarriedStep {
    id: i64,
    #[sqlx(try_from = "String")]
    status: StepStatus,
    exit_code: Option<i64>,
    reason: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    iteration: i64,
}

/// Carries `steps` (step ids) of run `from` into run `run_id`, inside transaction `tx`,
/// right after the new run's step runs were inserted.
pub(crate) async fn carry_steps(
    tx: &mut Tx<'_>,
    run_id: i64,
    from: i64,
    steps: &[String],
) -> anyhow::Result<()> {
    let carried_reason = format!("carried over from run #{from}");
    for step_id in steps {
        let old: Option<CarriedStep> = tx
            .row(
                Statement::new(
                    "SELECT id, status, exit_code, reason, started_at, finished_at, iteration \
                     FROM step_runs WHERE run_id = $1 AND step_id = $2 \
                     AND status IN ('succeeded', 'skipped')",
                )
                .bind(from)
                .bind(step_id),
            )
            .await?;
        let Some(old) = old else {
            anyhow::bail!(
                "step '{step_id}' of run {from} is not final as succeeded or skipped: \
                 it cannot be carried over"
            );
        };
        let reason = if old.status == StepStatus::Skipped {
            old.reason.as_deref()
        } else {
            Some(carried_reason.as_str())
        };
        let new_id: i64 = tx
            .scalar(
                Statement::new(
                    "UPDATE step_runs SET status = $3, exit_code = $4, reason = $5, \
                     started_at = $6, finished_at = $7 \
                     WHERE run_id = $1 AND step_id = $2 AND status = 'pending' RETURNING id",
                )
                .bind(run_id)
                .bind(step_id)
                .bind(old.status)
                .bind(old.exit_code)
                .bind(reason)
                .bind(old.started_at)
                .bind(old.finished_at),
            )
            .await?
            .with_context(|| format!("step '{step_id}' of the re-run is not pending"))?;
        tx.execute(
            Statement::new(
                "INSERT INTO step_outputs (step_run_id, iteration, run_id, outputs) \
                 SELECT $1, 1, $2, outputs FROM step_outputs WHERE step_run_id = $3 \
                 AND iteration = $4",
            )
            .bind(new_id)
            .bind(run_id)
            .bind(old.id)
            .bind(old.iteration),
        )
        .await?;
        let blobs: Vec<i64> = tx
            .scalars(
                Statement::new("SELECT id FROM blobs WHERE run_id = $1 AND step_id = $2")
                    .bind(from)
                    .bind(step_id),
            )
            .await?;
        for old_blob in blobs {
            let new_blob: i64 = tx
                .scalar(
                    Statement::new(
                        "INSERT INTO blobs (run_id, step_id, attempt, kind, key, size, digest, \
                         created_at, files) SELECT $1, step_id, attempt, kind, key, size, digest, \
                         created_at, files FROM blobs WHERE id = $2 RETURNING id",
                    )
                    .bind(run_id)
                    .bind(old_blob),
                )
                .await?
                .context("the carried blob's id")?;
            tx.execute(
                Statement::new(
                    "INSERT INTO artifacts (blob_id, name, size, digest) \
                     SELECT $1, name, size, digest FROM artifacts WHERE blob_id = $2",
                )
                .bind(new_blob)
                .bind(old_blob),
            )
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use plue_types::status::StepStatus;

    use crate::tx::Statement;

    use crate::annotations::tests::{run_of_two, stores};

    #[tokio::test]
    async fn a_carried_step_keeps_its_status_outputs_and_files() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let first = run_of_two(&store, None, &[]).await.unwrap();
            // a succeeded with an output and an artifact; b failed.
            {
                store
                    .execute(
                        Statement::new(
                            "UPDATE step_runs SET status = CASE WHEN step_id = 'a' \
                             THEN 'succeeded' ELSE 'failed' END, exit_code = 0, \
                             started_at = 10, finished_at = 20 WHERE run_id = $1",
                        )
                        .bind(first),
                    )
                    .await
                    .unwrap();
                store
                    .execute(
                        Statement::new(
                            "INSERT INTO step_outputs (step_run_id, iteration, run_id, outputs) \
                             SELECT id, 1, run_id, '{\"x\":\"1\"}' FROM step_runs \
                             WHERE run_id = $1 AND step_id = 'a'",
                        )
                        .bind(first),
                    )
                    .await
                    .unwrap();
                let blob: i64 = store
                    .one_scalar(
                        Statement::new(
                            "INSERT INTO blobs (run_id, step_id, attempt, kind, key, size, \
                             digest, created_at, files) \
                             VALUES ($1, 'a', 1, 'artifacts', 'k/a.tar', 9, 'sha256:0', 5, 1) \
                             RETURNING id",
                        )
                        .bind(first),
                    )
                    .await
                    .unwrap();
                store
                    .execute(
                        Statement::new(
                            "INSERT INTO artifacts (blob_id, name, size, digest) \
                             VALUES ($1, 'out.txt', 3, 'sha256:1')",
                        )
                        .bind(blob),
                    )
                    .await
                    .unwrap();
            };
            // b failed: it cannot be carried, and nothing is stored.
            let refused = run_of_two(&store, Some(first), &["b".into()]).await;
            assert!(refused.is_err(), "{backend}");
            assert_eq!(store.list_runs(10).await.unwrap().len(), 1, "{backend}");

            let second = run_of_two(&store, Some(first), &["a".into()])
                .await
                .unwrap();
            let steps = store.step_runs(second).await.unwrap();
            let a = &steps[0];
            assert_eq!(
                (
                    a.status,
                    a.attempts,
                    a.exit_code,
                    a.started_at,
                    a.finished_at
                ),
                (StepStatus::Succeeded, 0, Some(0), Some(10), Some(20)),
                "{backend}"
            );
            assert_eq!(a.outputs, "{\"x\":\"1\"}", "{backend}");
            assert_eq!(
                a.reason.as_deref(),
                Some(format!("carried over from run #{first}").as_str())
            );
            assert_eq!(steps[1].status, StepStatus::Pending, "{backend}");
            let blob = store
                .latest_blob(second, "a", "artifacts")
                .await
                .unwrap()
                .expect("a blob");
            assert_eq!(
                (blob.key.as_str(), blob.attempt),
                ("k/a.tar", 1),
                "{backend}"
            );
            let created: i64 = store
                .one_scalar(
                    Statement::new("SELECT created_at FROM blobs WHERE id = $1").bind(blob.id),
                )
                .await
                .unwrap();
            assert_eq!(
                created, 5,
                "{backend}: retention ends both listings together"
            );
            let files = store.artifacts_of_run(second).await.unwrap();
            assert_eq!(files.len(), 1, "{backend}");
        }
    }
}
