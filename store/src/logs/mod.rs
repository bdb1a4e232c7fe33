//! Log lines: idempotent batch appends and cursor reads.
//!
//! PostgreSQL stores a row per line (`log_lines`); SQLite stores chunks of consecutive
//! lines, a row each (`log_chunks`, see [`sqlite_chunks`]). Readers cannot tell.
//!
//! Invariants: a line is identified by (step run, attempt, seq); appending a batch again
//! (a runner retrying after a lost response, or across an engine restart) inserts nothing
//! twice. Reads are ordered by (attempt, seq), which is also the SSE event id
//! `"{attempt}:{seq}"`, so a reader resumes exactly where it stopped.
//!
//! A runner's lines are stored through [`Store::append_logs_counted`], which keeps each
//! attempt's and run's bytes for their log quotas ([`quota`]).

/// Whether a batch of an attempt's lines cuts its log at a quota
/// ([`Store::append_logs_counted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEnd {
    /// More lines may follow.
    Open,
    /// The log ends here, at its quota: the batch's last line is the marker.
    Cut,
}

mod chunk_encoding;
pub mod quota;
mod sqlite_chunks;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use plue_types::protocol::LogLine;

use super::{is_unique_violation, Store};
use crate::tx::Statement;
use quota::LogBudget;

/// A stored line as readers get it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
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
/// [`PG_APPEND`] (or, with `ON CONFLICT DO NOTHING`, [`PG_APPEND_IDEMPOTENT`]) adding
/// what it inserted to its attempt's figures in the same statement.
static PG_APPEND_COUNTED: LazyLock<[String; 2]> = LazyLock::new(|| {
    [
        pg_append_counted(""),
        pg_append_counted("ON CONFLICT DO NOTHING"),
    ]
});

fn pg_append_counted(on_conflict: &str) -> String {
    format!(
        "WITH ins AS ( \
            INSERT INTO log_lines (step_run_id, attempt, seq, stream, text, ts) \
            SELECT $1, $2, l.seq, l.stream, l.text, l.ts \
            FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::bigint[]) AS l(seq, stream, text, ts) \
            WHERE l.seq > COALESCE( \
                (SELECT MAX(seq) FROM log_lines WHERE step_run_id = $1 AND attempt = $2), 0) \
            {on_conflict} RETURNING seq, octet_length(text) AS n), \
         sums AS (SELECT COUNT(*) AS lines, COALESCE(SUM(n), 0)::bigint AS bytes, \
            COALESCE(MAX(seq), 0) AS last FROM ins), \
         counted AS (UPDATE attempts SET log_bytes = log_bytes + sums.bytes, \
            log_last_seq = GREATEST(log_last_seq, sums.last), \
            log_truncated = log_truncated OR $8 FROM sums WHERE id = $7 RETURNING 1) \
         SELECT lines, bytes FROM sums"
    )
}

const BUDGET: &str = "\
    SELECT (r.cancel_requested OR a.status NOT IN ('claimed', 'running')) AS stop, \
    a.log_bytes AS attempt_bytes, a.log_last_seq AS last_seq, a.log_truncated AS truncated, \
    r.log_bytes AS run_bytes, r.secrets_allowed \
    FROM attempts a JOIN step_runs s ON s.id = a.step_run_id JOIN runs r ON r.id = s.run_id \
    WHERE a.id = $1";

/// The attempt a counted append stores lines of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogAttempt {
    pub attempt_id: i64,
    pub run_id: i64,
    pub step_run_id: i64,
    /// The attempt's number in its step run.
    pub number: i64,
}

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

/// A batch of lines as PostgreSQL's statements take them: one array per column, zipped by
/// `unnest` (`$3`..`$6` of [`PG_APPEND`] and [`PG_APPEND_COUNTED`]).
struct LineColumns<'l> {
    seqs: Vec<i64>,
    streams: Vec<&'l str>,
    texts: Vec<&'l str>,
    ts: Vec<i64>,
}

impl<'l> LineColumns<'l> {
    fn of(lines: &'l [LogLine]) -> Self {
        LineColumns {
            seqs: lines.iter().map(|l| l.seq as i64).collect(),
            streams: lines.iter().map(|l| l.stream.as_str()).collect(),
            texts: lines.iter().map(|l| l.text.as_str()).collect(),
            ts: lines.iter().map(|l| l.ts_ms).collect(),
        }
    }

    /// `sql` with the step run and attempt as `$1`, `$2` and the columns as `$3`..`$6`.
    fn statement<'s>(&'s self, sql: &'s str, step_run_id: i64, attempt: i64) -> Statement<'s> {
        Statement::new(sql)
            .bind(step_run_id)
            .bind(attempt)
            .bind(&self.seqs)
            .bind(&self.streams)
            .bind(&self.texts)
            .bind(&self.ts)
    }
}

impl Store {
    /// Appends lines of attempt `attempt` of a step run; returns how many were new. A
    /// runner's lines go through [`Store::append_logs_counted`] instead, which keeps the log
    /// quotas' figures on both backends.
    pub async fn append_logs(
        &self,
        step_run_id: i64,
        attempt: i64,
        lines: &[LogLine],
    ) -> anyhow::Result<u64> {
        if lines.is_empty() {
            return Ok(0);
        }
        if !self.is_postgres() {
            return sqlite_chunks::append(self, step_run_id, attempt, lines).await;
        }
        let columns = LineColumns::of(lines);
        match self
            .execute(columns.statement(PG_APPEND, step_run_id, attempt))
            .await
        {
            Ok(inserted) => Ok(inserted),
            // A concurrent copy of this batch won the race: store what is missing.
            Err(e) if is_unique_violation(&e) => {
                self.execute(columns.statement(PG_APPEND_IDEMPOTENT, step_run_id, attempt))
                    .await
            }
            Err(e) => Err(e),
        }
    }

    /// Where attempt `attempt_id`'s log stands against its quotas (`None`: no such
    /// attempt). One read, which also says whether the runner should stop the attempt.
    pub async fn log_budget(&self, attempt_id: i64) -> anyhow::Result<Option<LogBudget>> {
        self.row(Statement::new(BUDGET).bind(attempt_id)).await
    }

    /// [`Store::append_logs`] adding the bytes of the lines it stores to the attempt's and
    /// the run's log figures, and, when the batch is [`BatchEnd::Cut`], marking the
    /// attempt's log as cut (`lines` then end with its marker line). Returns how many
    /// lines were new.
    pub async fn append_logs_counted(
        &self,
        at: LogAttempt,
        lines: &[LogLine],
        end: BatchEnd,
    ) -> anyhow::Result<u64> {
        let truncated = end == BatchEnd::Cut;
        if lines.is_empty() && !truncated {
            return Ok(0);
        }
        if !self.is_postgres() {
            return sqlite_chunks::append_counted(self, at, lines, truncated).await;
        }
        let columns = LineColumns::of(lines);
        let append = |sql: &'static str| {
            self.one_row::<(i64, i64)>(
                columns
                    .statement(sql, at.step_run_id, at.number)
                    .bind(at.attempt_id)
                    .bind(truncated),
            )
        };
        let (inserted, bytes) = match append(&PG_APPEND_COUNTED[0]).await {
            Ok(done) => done,
            // A concurrent copy of this batch won the race: store what is missing.
            Err(e) if is_unique_violation(&e) => append(&PG_APPEND_COUNTED[1]).await?,
            Err(e) => return Err(e),
        };
        if bytes > 0 {
            self.execute(
                Statement::new("UPDATE runs SET log_bytes = log_bytes + $2 WHERE id = $1")
                    .bind(at.run_id)
                    .bind(bytes),
            )
            .await?;
        }
        Ok(inserted as u64)
    }

    /// Up to `limit` lines of a step run after the cursor `(attempt, seq)`, in order.
    pub async fn read_logs(
        &self,
        step_run_id: i64,
        after: (i64, i64),
        limit: i64,
    ) -> anyhow::Result<Vec<StoredLine>> {
        if !self.is_postgres() {
            return sqlite_chunks::read(self, step_run_id, after, limit).await;
        }
        self.rows(
            Statement::new(PG_PAGE)
                .bind(step_run_id)
                .bind(after.0)
                .bind(after.1)
                .bind(limit),
        )
        .await
    }

    /// The last stored line `(attempt, seq)` of each step run of `run_id` that has lines:
    /// one index seek a step, so a reader can tell which steps it has not printed whole
    /// without reading any of them.
    pub async fn last_lines(&self, run_id: i64) -> anyhow::Result<BTreeMap<i64, (i64, i64)>> {
        let rows: Vec<(i64, Option<i64>, Option<i64>)> = self
            .rows(Statement::per_backend(sqlite_chunks::LAST_LINES, PG_LAST_LINES).bind(run_id))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, attempt, seq)| Some((id, (attempt?, seq?))))
            .collect())
    }

    /// How many lines a step run has (all attempts).
    pub async fn count_logs(&self, step_run_id: i64) -> anyhow::Result<i64> {
        self.one_scalar(
            Statement::per_backend(
                sqlite_chunks::COUNT,
                "SELECT COUNT(*) FROM log_lines WHERE step_run_id = $1",
            )
            .bind(step_run_id),
        )
        .await
    }
}
