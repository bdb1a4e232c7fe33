//! Log lines: idempotent batch appends and cursor reads.
//!
//! Invariants: a line is identified by (step run, attempt, seq); appending a batch again
//! (a runner retrying after a lost response, or across an engine restart) inserts nothing
//! twice. Reads are ordered by (attempt, seq), which is also the SSE event id
//! `"{attempt}:{seq}"`, so a reader resumes exactly where it stopped.

use std::collections::BTreeMap;

use anyhow::Context;
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

/// Lines per SQLite insert statement. A batch goes in as statements of 1,024 lines, and
/// its rest as one statement of the smallest size that holds it, padded with copies of its
/// last line (which `ON CONFLICT DO NOTHING` skips): a batch of up to 1,024 lines is one
/// statement, and only these few statement texts exist (each prepared once and cached).
/// Each statement is a trip to sqlx's SQLite thread: 128-line statements made that trip
/// a fifth of a line's cost.
const SQLITE_CHUNKS: [usize; 7] = [1, 4, 16, 64, 128, 256, 1024];

/// The SQLite insert of `rows` lines, six anonymous parameters a line (step run, attempt,
/// seq, stream, text, ts). Bound values cost SQLite no JSON parsing; anonymous ones cost
/// sqlx no look-up of each parameter's name (linear in the statement's named parameters).
fn sqlite_append(rows: usize) -> String {
    let mut sql =
        String::from("INSERT INTO log_lines (step_run_id, attempt, seq, stream, text, ts) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    sql
}

/// The statement texts of [`SQLITE_CHUNKS`], built once.
fn sqlite_append_statements() -> &'static [String; SQLITE_CHUNKS.len()] {
    static STATEMENTS: std::sync::OnceLock<[String; SQLITE_CHUNKS.len()]> =
        std::sync::OnceLock::new();
    STATEMENTS.get_or_init(|| SQLITE_CHUNKS.map(sqlite_append))
}

/// `lines` cut into the statements [`SQLITE_CHUNKS`] allows: each an index into it and
/// its lines. The largest statement that fits goes first, down to 16 lines; fewer than
/// that go in the smallest statement that holds them, the only one with fewer lines than
/// its size (padded when bound, by at most 11 copies).
fn sqlite_chunks(lines: &[LogLine]) -> Vec<(usize, &[LogLine])> {
    let mut chunks = Vec::new();
    let mut rest = lines;
    while rest.len() >= 16 {
        let which = SQLITE_CHUNKS
            .iter()
            .rposition(|&size| size <= rest.len())
            .unwrap_or(0);
        let (chunk, after) = rest.split_at(SQLITE_CHUNKS[which]);
        chunks.push((which, chunk));
        rest = after;
    }
    if !rest.is_empty() {
        let fits = SQLITE_CHUNKS
            .iter()
            .position(|&size| size >= rest.len())
            .unwrap_or(0);
        chunks.push((fits, rest));
    }
    chunks
}

/// A page of lines after a cursor, in order: the one query of both backends. The cursor is
/// a row value, which both backends seek to in the primary key; the equivalent
/// `attempt > $2 OR (attempt = $2 AND seq > $3)` made SQLite scan the step's lines from its
/// first one on every page, so paging through a log cost the square of its length.
macro_rules! page {
    () => {
        "SELECT attempt, seq, stream, text, ts FROM log_lines WHERE step_run_id = $1 \
         AND (attempt, seq) > ($2, $3) ORDER BY attempt, seq LIMIT $4"
    };
}

// The page as one row on SQLite (one JSON array of `[attempt, seq, stream, text, ts]`):
// sqlx hands each result row from its SQLite worker thread to the caller on its own, which
// costs more than SQLite building and serde parsing the array.
const SQLITE_READ: &str = concat!(
    "SELECT json_group_array(json_array(attempt, seq, stream, text, ts) ORDER BY attempt, seq) \
     FROM (",
    page!(),
    ")"
);

impl Store {
    /// Appends lines of attempt `attempt` of a step run; returns how many were new.
    pub async fn append_logs<'a>(
        &self,
        step_run_id: i64,
        attempt: i64,
        lines: &'a [LogLine],
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
            Db::Sqlite(pool) => {
                let statements = sqlite_append_statements();
                let bound = |(which, chunk): (usize, &'a [LogLine])| {
                    let mut query = sqlx::query(&statements[which]);
                    let padding = std::iter::repeat(chunk.last())
                        .flatten()
                        .take(SQLITE_CHUNKS[which] - chunk.len());
                    for line in chunk.iter().chain(padding) {
                        query = query
                            .bind(step_run_id)
                            .bind(attempt)
                            .bind(i64::try_from(line.seq).context("line seq out of range")?)
                            .bind(line.stream.as_str())
                            .bind(line.text.as_str())
                            .bind(line.ts_ms);
                    }
                    anyhow::Ok(query)
                };
                let mut chunks = sqlite_chunks(lines).into_iter();
                let first = chunks.next().map(bound).transpose()?;
                let Some(mut query) = first else {
                    return Ok(0);
                };
                if chunks.len() == 0 {
                    return Ok(query.execute(pool).await?.rows_affected());
                }
                // A batch of several statements is stored whole or not at all. Each
                // statement's values are bound while SQLite's thread runs the one before.
                let mut tx = pool.begin().await?;
                let mut inserted = 0;
                loop {
                    let mut executing = std::pin::pin!(query.execute(&mut *tx));
                    // The first poll hands the statement to SQLite's thread.
                    let polled = futures::poll!(executing.as_mut());
                    let next = chunks.next().map(bound).transpose();
                    let done = match polled {
                        std::task::Poll::Ready(done) => done,
                        std::task::Poll::Pending => executing.await,
                    };
                    inserted += done?.rows_affected();
                    match next? {
                        Some(following) => query = following,
                        None => break,
                    }
                }
                tx.commit().await?;
                inserted
            }
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
            Db::Postgres(pool) => Ok(sqlx::query_as(page!())
                .bind(step_run_id)
                .bind(after.0)
                .bind(after.1)
                .bind(limit)
                .fetch_all(pool)
                .await?),
            Db::Sqlite(pool) => {
                let page: String = sqlx::query_scalar(SQLITE_READ)
                    .bind(step_run_id)
                    .bind(after.0)
                    .bind(after.1)
                    .bind(limit)
                    .fetch_one(pool)
                    .await?;
                let rows: Vec<(i64, i64, String, String, i64)> =
                    serde_json::from_str(&page).context("a page of stored lines")?;
                Ok(rows
                    .into_iter()
                    .map(|(attempt, seq, stream, text, ts)| StoredLine {
                        attempt,
                        seq,
                        stream,
                        text,
                        ts,
                    })
                    .collect())
            }
        }
    }

    /// The last stored line `(attempt, seq)` of each step run of `run_id` that has lines:
    /// one index seek a step, so a reader can tell which steps it has not printed whole
    /// without reading any of them.
    pub async fn last_lines(&self, run_id: i64) -> anyhow::Result<BTreeMap<i64, (i64, i64)>> {
        let rows: Vec<(i64, Option<i64>, Option<i64>)> = super::on_db!(self, pool => sqlx::query_as(
            "SELECT s.id, \
             (SELECT attempt FROM log_lines WHERE step_run_id = s.id \
              ORDER BY attempt DESC, seq DESC LIMIT 1), \
             (SELECT seq FROM log_lines WHERE step_run_id = s.id \
              ORDER BY attempt DESC, seq DESC LIMIT 1) \
             FROM step_runs s WHERE s.run_id = $1",
        )
        .bind(run_id)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .filter_map(|(id, attempt, seq)| Some((id, (attempt?, seq?))))
            .collect())
    }

    /// How many lines a step run has (all attempts).
    pub async fn count_logs(&self, step_run_id: i64) -> anyhow::Result<i64> {
        Ok(super::on_db!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM log_lines WHERE step_run_id = $1",
        )
        .bind(step_run_id)
        .fetch_one(pool)
        .await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_cut_into_few_statements_with_little_padding() {
        let lines: Vec<LogLine> = (1..=2500)
            .map(|seq| LogLine {
                seq,
                stream: runner::protocol::Stream::Stdout,
                text: seq.to_string(),
                ts_ms: 0,
            })
            .collect();
        let cut = |n: usize| -> Vec<(usize, usize)> {
            sqlite_chunks(&lines[..n])
                .into_iter()
                .map(|(which, chunk)| (SQLITE_CHUNKS[which], chunk.len()))
                .collect()
        };
        assert_eq!(cut(0), []);
        assert_eq!(cut(1), [(1, 1)]);
        assert_eq!(cut(5), [(16, 5)]);
        assert_eq!(cut(16), [(16, 16)]);
        assert_eq!(cut(1024), [(1024, 1024)]);
        assert_eq!(
            cut(2500),
            [
                (1024, 1024),
                (1024, 1024),
                (256, 256),
                (128, 128),
                (64, 64),
                (4, 4)
            ]
        );
        for n in 0..=2500 {
            let chunks = sqlite_chunks(&lines[..n]);
            let joined: Vec<u64> = chunks
                .iter()
                .flat_map(|(_, chunk)| chunk.iter().map(|l| l.seq))
                .collect();
            assert_eq!(
                joined,
                (1..=n as u64).collect::<Vec<_>>(),
                "{n} lines in order"
            );
            let padding: usize = chunks
                .iter()
                .map(|&(which, chunk)| SQLITE_CHUNKS[which] - chunk.len())
                .sum();
            assert!(padding <= 11, "{n} lines padded by {padding}");
        }
    }

    /// A page is a seek to its cursor in the primary key, not a scan of the step's lines
    /// from its first one (which made paging through a long log quadratic).
    #[tokio::test]
    async fn a_page_seeks_to_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let Db::Sqlite(pool) = &store.db else {
            unreachable!("open_data_dir opens SQLite")
        };
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(concat!("EXPLAIN QUERY PLAN ", page!()))
                .bind(1_i64)
                .bind(1_i64)
                .bind(5000_i64)
                .bind(100_i64)
                .fetch_all(pool)
                .await
                .unwrap();
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert_eq!(
            details,
            ["SEARCH log_lines USING PRIMARY KEY (step_run_id=? AND (attempt,seq)>(?,?))"],
            "the page query's plan"
        );
    }
}
