//! Annotations in the store: what the engine read from a step's `::error …` style log
//! lines (`annotations`), and per attempt how many it did not keep.
//!
//! Invariants: an annotation is stored under the attempt whose batch held it (the caller
//! passes the attempt the runner holds, never one a line names), keyed by its log line, so
//! storing a batch again inserts nothing; at most `cap` are kept per attempt and the rest
//! are counted once (`attempts.annotations_seen_seq` is the last line already looked at).
//! Reads are bounded by a limit.

use anyhow::Context;

use super::{LogAttempt, Store};
use crate::tx::{Conn, Statement};

/// An annotation about to be stored (its text already cleaned and cut by the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAnnotation {
    /// The log line it came from.
    pub seq: i64,
    /// `error`, `warning` or `notice`.
    pub level: &'static str,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub end_line: Option<i64>,
    pub col: Option<i64>,
    pub end_col: Option<i64>,
    pub title: Option<String>,
    pub message: String,
}

/// A stored annotation with the step it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct AnnotationRow {
    pub step_id: String,
    pub attempt: i64,
    pub seq: i64,
    pub level: String,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub end_line: Option<i64>,
    pub col: Option<i64>,
    pub end_col: Option<i64>,
    pub title: Option<String>,
    pub message: String,
}

/// Annotations an attempt printed past the cap.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct DroppedAnnotations {
    pub step_id: String,
    pub attempt: i64,
    pub count: i64,
}

const COLUMNS: &str = "s.step_id, a.attempt, a.seq, a.level, a.file, a.line, a.end_line, \
     a.col, a.end_col, a.title, a.message";

impl Store {
    /// Stores `found`, the annotations of a batch of attempt `at` whose last line is
    /// `last_seq`: those past what the attempt already looked at, up to `cap` for the
    /// attempt; the others past it are counted as dropped. Returns how many were stored.
    pub async fn add_annotations(
        &self,
        at: LogAttempt,
        found: &[NewAnnotation],
        last_seq: i64,
        cap: i64,
    ) -> anyhow::Result<u64> {
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            // Locks the attempt's row first (see the store's invariants).
            let seen: Option<i64> = tx
                .scalar(
                    Statement::new(
                        "UPDATE attempts SET annotations_seen_seq = annotations_seen_seq \
                         WHERE id = $1 RETURNING annotations_seen_seq",
                    )
                    .bind(at.attempt_id),
                )
                .await?;
            let Some(seen) = seen else {
                return Ok(0);
            };
            let kept: i64 = tx
                .scalar(
                    Statement::new(
                        "SELECT COUNT(*) FROM annotations WHERE step_run_id = $1 AND attempt = $2",
                    )
                    .bind(at.step_run_id)
                    .bind(at.number),
                )
                .await?
                .context("no row returned")?;
            let new: Vec<&NewAnnotation> = found.iter().filter(|a| a.seq > seen).collect();
            let room = usize::try_from((cap - kept).max(0)).unwrap_or(0);
            let mut stored = 0u64;
            for a in new.iter().take(room) {
                stored += tx
                    .execute(
                        Statement::new(
                            "INSERT INTO annotations (step_run_id, attempt, seq, run_id, level, \
                             file, line, end_line, col, end_col, title, message) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(at.step_run_id)
                        .bind(at.number)
                        .bind(a.seq)
                        .bind(at.run_id)
                        .bind(a.level)
                        .bind(&a.file)
                        .bind(a.line)
                        .bind(a.end_line)
                        .bind(a.col)
                        .bind(a.end_col)
                        .bind(&a.title)
                        .bind(&a.message),
                    )
                    .await?;
            }
            let dropped = new.len().saturating_sub(room) as i64;
            tx.execute(
                Statement::new(
                    "UPDATE attempts SET annotations_dropped = annotations_dropped + $2, \
                     annotations_seen_seq = CASE \
                     WHEN annotations_seen_seq > $3 THEN annotations_seen_seq ELSE $3 END \
                     WHERE id = $1",
                )
                .bind(at.attempt_id)
                .bind(dropped)
                .bind(last_seq),
            )
            .await?;
            tx.commit().await?;
            Ok(stored)
        }
    }

    /// Up to `limit` annotations of run `run_id` (of step `step` only, when given), in
    /// plan order of their steps, then attempt and line.
    pub async fn annotations_of_run(
        &self,
        run_id: i64,
        step: Option<&str>,
        limit: i64,
    ) -> anyhow::Result<Vec<AnnotationRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM annotations a JOIN step_runs s ON s.id = a.step_run_id \
             WHERE a.run_id = $1 AND ($2 IS NULL OR s.step_id = $2) \
             ORDER BY s.position, a.attempt, a.seq LIMIT $3"
        );
        self.rows(Statement::new(&sql).bind(run_id).bind(step).bind(limit))
            .await
    }

    /// The attempts of run `run_id` that printed more annotations than were kept, with how
    /// many were not (one row per such attempt, which there are at most as many of as the
    /// run's attempts).
    pub async fn dropped_annotations(
        &self,
        run_id: i64,
    ) -> anyhow::Result<Vec<DroppedAnnotations>> {
        self.rows(
            Statement::new(
                "SELECT s.step_id, a.number AS attempt, a.annotations_dropped AS count \
                 FROM attempts a JOIN step_runs s ON s.id = a.step_run_id WHERE s.run_id = $1 \
                 AND a.annotations_dropped > 0 ORDER BY s.position, a.number",
            )
            .bind(run_id),
        )
        .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use evaluator::plan::{Plan, Step};

    use super::*;
    use crate::testing::local_run;
    pub(crate) use crate::testing::stores;
    use crate::NewRun;

    /// A run of steps `a` and `b` (b after a) in `store`, `rerun_of` when given, with
    /// `carry` carried over.
    pub(crate) async fn run_of_two(
        store: &Store,
        rerun_of: Option<i64>,
        carry: &[String],
    ) -> anyhow::Result<i64> {
        let bash = |id: &str| Step::bash(id, "true");
        let plan = Plan::new("t", vec![bash("a"), bash("b").after(&["a"])]);
        let json = serde_json::to_string(&plan).unwrap();
        let new = NewRun {
            workflow_path: "/w/t.plue.py",
            rerun_of,
            ..local_run(&plan, &json)
        };
        Ok(store.create_rerun_by(&new, 4, None, carry).await?.id)
    }

    /// Queues and claims step `a` of `run_id`: its attempt.
    async fn claim_a(store: &Store, run_id: i64) -> LogAttempt {
        let (claimed, _, _) = crate::testing::claim_first_step(store, run_id, "r").await;
        LogAttempt {
            attempt_id: claimed.attempt_id,
            run_id,
            step_run_id: claimed.step_run_id,
            number: claimed.number,
        }
    }

    fn note(seq: i64) -> NewAnnotation {
        NewAnnotation {
            seq,
            level: "error",
            file: Some("src/lib.rs".into()),
            line: Some(seq),
            end_line: None,
            col: None,
            end_col: None,
            title: None,
            message: format!("m{seq}"),
        }
    }

    #[tokio::test]
    async fn annotations_are_capped_per_attempt_and_a_batch_sent_again_adds_nothing() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let run_id = run_of_two(&store, None, &[]).await.unwrap();
            let at = claim_a(&store, run_id).await;
            // Cap 2: of the first batch's three, two are kept and one counted.
            let first = [note(1), note(3), note(4)];
            assert_eq!(
                store.add_annotations(at, &first, 5, 2).await.unwrap(),
                2,
                "{backend}"
            );
            // The same batch again (a runner's retry): nothing kept, nothing counted.
            assert_eq!(
                store.add_annotations(at, &first, 5, 2).await.unwrap(),
                0,
                "{backend}"
            );
            // A later batch: counted.
            assert_eq!(
                store.add_annotations(at, &[note(7)], 9, 2).await.unwrap(),
                0,
                "{backend}"
            );
            let rows = store.annotations_of_run(run_id, None, 10).await.unwrap();
            let seqs: Vec<(String, i64, i64)> = rows
                .iter()
                .map(|r| (r.step_id.clone(), r.attempt, r.seq))
                .collect();
            assert_eq!(seqs, [("a".into(), 1, 1), ("a".into(), 1, 3)], "{backend}");
            assert_eq!(rows[0].message, "m1", "{backend}");
            assert_eq!(
                store.dropped_annotations(run_id).await.unwrap(),
                [DroppedAnnotations {
                    step_id: "a".into(),
                    attempt: 1,
                    count: 2
                }],
                "{backend}"
            );
            assert!(store
                .annotations_of_run(run_id, Some("b"), 10)
                .await
                .unwrap()
                .is_empty());
            assert_eq!(
                store
                    .annotations_of_run(run_id, None, 1)
                    .await
                    .unwrap()
                    .len(),
                1
            );
        }
    }
}
