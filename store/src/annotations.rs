//! Annotations in the store: what the engine read from a step's `::error …` style log
//! lines (`annotations`), and per attempt how many it did not keep.
//!
//! Invariants: an annotation is stored under the attempt whose batch held it (the caller
//! passes the attempt the runner holds, never one a line names), keyed by its log line, so
//! storing a batch again inserts nothing; at most `cap` are kept per attempt and the rest
//! are counted once (`attempts.annotations_seen_seq` is the last line already looked at).
//! Reads are bounded by a limit.

use super::{on_db, LogAttempt, Store};

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
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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
        on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            // Locks the attempt's row first (see the store's invariants).
            let seen: Option<i64> = sqlx::query_scalar(
                "UPDATE attempts SET annotations_seen_seq = annotations_seen_seq \
                 WHERE id = $1 RETURNING annotations_seen_seq",
            )
            .bind(at.attempt_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(seen) = seen else {
                return Ok(0);
            };
            let kept: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM annotations WHERE step_run_id = $1 AND attempt = $2",
            )
            .bind(at.step_run_id)
            .bind(at.number)
            .fetch_one(&mut *tx)
            .await?;
            let new: Vec<&NewAnnotation> = found.iter().filter(|a| a.seq > seen).collect();
            let room = usize::try_from((cap - kept).max(0)).unwrap_or(0);
            let mut stored = 0u64;
            for a in new.iter().take(room) {
                stored += sqlx::query(
                    "INSERT INTO annotations (step_run_id, attempt, seq, run_id, level, file, \
                     line, end_line, col, end_col, title, message) \
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
                .bind(&a.message)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            let dropped = new.len().saturating_sub(room) as i64;
            sqlx::query(
                "UPDATE attempts SET annotations_dropped = annotations_dropped + $2, \
                 annotations_seen_seq = CASE WHEN annotations_seen_seq > $3 \
                 THEN annotations_seen_seq ELSE $3 END WHERE id = $1",
            )
            .bind(at.attempt_id)
            .bind(dropped)
            .bind(last_seq)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(stored)
        })
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
        Ok(on_db!(self, pool => sqlx::query_as(&sql)
            .bind(run_id)
            .bind(step)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// The attempts of run `run_id` that printed more annotations than were kept, with how
    /// many were not (one row per such attempt, which there are at most as many of as the
    /// run's attempts).
    pub async fn dropped_annotations(
        &self,
        run_id: i64,
    ) -> anyhow::Result<Vec<DroppedAnnotations>> {
        Ok(on_db!(self, pool => sqlx::query_as(
            "SELECT s.step_id, a.number AS attempt, a.annotations_dropped AS count \
             FROM attempts a JOIN step_runs s ON s.id = a.step_run_id \
             WHERE s.run_id = $1 AND a.annotations_dropped > 0 ORDER BY s.position, a.number",
        )
        .bind(run_id)
        .fetch_all(pool)
        .await?))
    }
}
