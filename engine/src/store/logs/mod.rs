//! Log lines: idempotent batch appends and cursor reads.
//!
//! PostgreSQL stores a row per line (`log_lines`); SQLite stores chunks of consecutive
//! lines, a row each (`log_chunks`, see [`sqlite_chunks`]). Readers cannot tell.
//!
//! Invariants: a line is identified by (step run, attempt, seq); appending a batch again
//! (a runner retrying after a lost response, or across an engine restart) inserts nothing
//! twice. Reads are ordered by (attempt, seq), which is also the SSE event id
//! `"{attempt}:{seq}"`, so a reader resumes exactly where it stopped.

mod chunk_encoding;
mod sqlite_chunks;

use std::collections::BTreeMap;

use runner::protocol::LogLine;

use super::{Db, Store};

/// A stored line as readers get it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredLine {
    pub attempt: i64,
    pub seq: i64,
    pub stream: String,
    pub text: String,
    pub ts: i64,
}

// Runners send an attempt's batches one after another, so a batch is new exactly when its
// lines are past the highest stored seq: filtering on that keeps the insert plain (no
// speculative `ON CONFLICT` insertion, twice as fast). Two copies of one batch racing
// (a retry while the first is still in flight) can still collide; see `append_logs`.
const PG_APPEND: &str = "\
    INSERT INTO log_lines (step_run_id, attempt, seq, stream, text, ts) \
    SELECT $1, $2, l.seq, l.stream, l.text, l.ts \
    FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::bigint[]) AS l(seq, stream, text, ts) \
    WHERE l.seq > COALESCE( \
        (SELECT MAX(seq) FROM log_lines WHERE step_run_id = $1 AND attempt = $2), 0)";

const PG_APPEND_IDEMPOTENT: &str = "\
    INSERT INTO log_lines (step_run_id, attempt, seq, stream, text, ts) \
    SELECT $1, $2, l.seq, l.stream, l.text, l.ts \
    FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::bigint[]) AS l(seq, stream, text, ts) \
    ON CONFLICT DO NOTHING";

/// A page of lines after a cursor, in order. The cursor is a row value, which PostgreSQL
/// seeks to in the primary key (so does SQLite in its chunks' key); the equivalent
/// `attempt > $2 OR (attempt = $2 AND seq > $3)` made SQLite scan a step's lines from its
/// first one on every page, so paging through a log cost the square of its length.
const PG_PAGE: &str = "\
    SELECT attempt, seq, stream, text, ts FROM log_lines WHERE step_run_id = $1 \
    AND (attempt, seq) > ($2, $3) ORDER BY attempt, seq LIMIT $4";

const PG_LAST_LINES: &str = "\
    SELECT s.id, \
    (SELECT attempt FROM log_lines WHERE step_run_id = s.id \
     ORDER BY attempt DESC, seq DESC LIMIT 1), \
    (SELECT seq FROM log_lines WHERE step_run_id = s.id \
     ORDER BY attempt DESC, seq DESC LIMIT 1) \
    FROM step_runs s WHERE s.run_id = $1";

impl Store {
    /// Appends lines of attempt `attempt` of a step run; returns how many were new.
    pub async fn append_logs(
        &self,
        step_run_id: i64,
        attempt: i64,
        lines: &[LogLine],
    ) -> anyhow::Result<u64> {
        if lines.is_empty() {
            return Ok(0);
        }
        let inserted = match &self.db {
            Db::Postgres(pool) => {
                let seqs: Vec<i64> = lines.iter().map(|l| l.seq as i64).collect();
                let streams: Vec<&str> = lines.iter().map(|l| l.stream.as_str()).collect();
                let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
                let ts: Vec<i64> = lines.iter().map(|l| l.ts_ms).collect();
                let fast = sqlx::query(PG_APPEND)
                    .bind(step_run_id)
                    .bind(attempt)
                    .bind(&seqs)
                    .bind(&streams)
                    .bind(&texts)
                    .bind(&ts)
                    .execute(pool)
                    .await;
                match fast {
                    Ok(done) => done.rows_affected(),
                    // A concurrent copy of this batch won the race: store what is missing.
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        sqlx::query(PG_APPEND_IDEMPOTENT)
                            .bind(step_run_id)
                            .bind(attempt)
                            .bind(&seqs)
                            .bind(&streams)
                            .bind(&texts)
                            .bind(&ts)
                            .execute(pool)
                            .await?
                            .rows_affected()
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Db::Sqlite(pool) => sqlite_chunks::append(pool, step_run_id, attempt, lines).await?,
        };
        Ok(inserted)
    }

    /// Up to `limit` lines of a step run after the cursor `(attempt, seq)`, in order.
    pub async fn read_logs(
        &self,
        step_run_id: i64,
        after: (i64, i64),
        limit: i64,
    ) -> anyhow::Result<Vec<StoredLine>> {
        match &self.db {
            Db::Postgres(pool) => Ok(sqlx::query_as(PG_PAGE)
                .bind(step_run_id)
                .bind(after.0)
                .bind(after.1)
                .bind(limit)
                .fetch_all(pool)
                .await?),
            Db::Sqlite(pool) => sqlite_chunks::read(pool, step_run_id, after, limit).await,
        }
    }

    /// The last stored line `(attempt, seq)` of each step run of `run_id` that has lines:
    /// one index seek a step, so a reader can tell which steps it has not printed whole
    /// without reading any of them.
    pub async fn last_lines(&self, run_id: i64) -> anyhow::Result<BTreeMap<i64, (i64, i64)>> {
        let rows: Vec<(i64, Option<i64>, Option<i64>)> = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_as(PG_LAST_LINES)
                    .bind(run_id)
                    .fetch_all(pool)
                    .await?
            }
            Db::Sqlite(pool) => {
                sqlx::query_as(sqlite_chunks::LAST_LINES)
                    .bind(run_id)
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(id, attempt, seq)| Some((id, (attempt?, seq?))))
            .collect())
    }

    /// How many lines a step run has (all attempts).
    pub async fn count_logs(&self, step_run_id: i64) -> anyhow::Result<i64> {
        Ok(match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM log_lines WHERE step_run_id = $1")
                    .bind(step_run_id)
                    .fetch_one(pool)
                    .await?
            }
            Db::Sqlite(pool) => {
                sqlx::query_scalar(sqlite_chunks::COUNT)
                    .bind(step_run_id)
                    .fetch_one(pool)
                    .await?
            }
        })
    }
}
