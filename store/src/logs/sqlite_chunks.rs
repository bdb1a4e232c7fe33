//! Log lines on SQLite, stored as chunks: one row holds up to [`CHUNK_LINES`] consecutive
//! lines of one attempt, encoded as [`chunk_encoding`] says.
//!
//! A row per line made each line six bound values passed through sqlx to SQLite's thread
//! and one b-tree insert; a chunk is one value and one insert for hundreds of lines, which
//! is what a step printing a lot of output waits for before it can finish.
//!
//! Invariants:
//! - The chunks of one (step run, attempt) hold increasing, disjoint seq ranges, and the
//!   seqs inside a chunk strictly increase: a batch is normalised (sorted, duplicates
//!   dropped) and only its lines past the attempt's highest stored seq are stored. Lines
//!   at or below it are stored already (a runner sends an attempt's batches one after
//!   another and retries a batch whole), so nothing is stored twice.
//! - `line_count` is the number of lines in `lines`; the key is the chunk's last seq, so a
//!   reader seeks to the first chunk that holds a line past its cursor.
//! - A batch is stored whole or not at all: one statement, or one transaction that first
//!   writes to its step run's row (the store's rule for transactions that read first).
//! - `text_bytes` is the bytes of text of the chunk's lines; inserting a chunk adds them to
//!   its attempt's and run's log figures (a trigger, so the usual batch stays one
//!   statement; see [`super::quota`]).

use anyhow::Context;
use plue_types::protocol::LogLine;

use super::chunk_encoding;
use super::StoredLine;
use crate::tx::{Conn, Statement};
use crate::Store;

/// Lines per chunk at most. A reader whose cursor is inside a chunk parses all of it, so a
/// chunk stays small next to a page.
const CHUNK_LINES: usize = 512;

/// Bytes of line text per chunk at most (a chunk holds at least one line, which is at most
/// `MAX_LINE_BYTES`).
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks a read fetches first, and at most at a time.
const FIRST_FETCH: usize = 8;
const MAX_FETCH: usize = 1024;

/// Stores a chunk only if its first line is past every line of its attempt already stored:
/// a batch that is wholly new, the usual case, is this one statement.
const APPEND_IF_NEW: &str = "\
    INSERT INTO log_chunks (step_run_id, attempt, last_seq, line_count, lines, text_bytes) \
    SELECT $1, $2, $3, $4, $5, $6 \
    WHERE $7 > COALESCE( \
        (SELECT MAX(last_seq) FROM log_chunks WHERE step_run_id = $1 AND attempt = $2), 0)";

const APPEND: &str = "\
    INSERT INTO log_chunks (step_run_id, attempt, last_seq, line_count, lines, text_bytes) \
    VALUES ($1, $2, $3, $4, $5, $6)";

pub(super) const PAGE: &str = "\
    SELECT attempt, lines FROM log_chunks WHERE step_run_id = $1 \
    AND (attempt, last_seq) > ($2, $3) ORDER BY attempt, last_seq LIMIT $4";

pub(super) const LAST_LINES: &str = "\
    SELECT s.id, \
    (SELECT attempt FROM log_chunks WHERE step_run_id = s.id \
     ORDER BY attempt DESC, last_seq DESC LIMIT 1), \
    (SELECT last_seq FROM log_chunks WHERE step_run_id = s.id \
     ORDER BY attempt DESC, last_seq DESC LIMIT 1) \
    FROM step_runs s WHERE s.run_id = $1";

pub(super) const COUNT: &str =
    "SELECT COALESCE(SUM(line_count), 0) FROM log_chunks WHERE step_run_id = $1";

/// Appends the lines of attempt `attempt`; returns how many were new.
pub(super) async fn append(
    store: &Store,
    step_run_id: i64,
    attempt: i64,
    lines: &[LogLine],
) -> anyhow::Result<u64> {
    let lines = in_order(lines);
    if let [chunk] = cut(&lines).as_slice() {
        let first = chunk.first().map_or(0, |l| l.seq);
        let inserted = store
            .execute(
                chunk_insert(APPEND_IF_NEW, step_run_id, attempt, chunk)?
                    .bind(i64::try_from(first).context("line seq out of range")?),
            )
            .await?;
        if inserted == 1 {
            return Ok(chunk.len() as u64);
        }
    }
    // Several chunks, or a batch sent again (all or part of it stored already).
    let mut conn = Conn::acquire(store).await?;
    let mut tx = conn.begin().await?;
    tx.execute(Statement::new("UPDATE step_runs SET id = id WHERE id = $1").bind(step_run_id))
        .await?;
    let stored: Option<i64> = tx
        .scalar(
            Statement::new(
                "SELECT MAX(last_seq) FROM log_chunks WHERE step_run_id = $1 AND attempt = $2",
            )
            .bind(step_run_id)
            .bind(attempt),
        )
        .await?
        .context("no row returned")?;
    let stored = stored.map_or(0, |seq| u64::try_from(seq).unwrap_or(0));
    let new = lines.partition_point(|l| l.seq <= stored);
    let new = &lines[new..];
    for chunk in cut(new) {
        tx.execute(chunk_insert(APPEND, step_run_id, attempt, chunk)?)
            .await?;
    }
    tx.commit().await?;
    Ok(new.len() as u64)
}

/// [`append`], which counts what it stores (the trigger of migration 15 adds each chunk's
/// bytes to its attempt's and run's figures in the statement that inserts it), marking
/// the attempt's log as cut when `truncated` (see [`super::quota`]). Returns how many
/// lines were new.
pub(super) async fn append_counted(
    store: &Store,
    at: super::LogAttempt,
    lines: &[LogLine],
    truncated: bool,
) -> anyhow::Result<u64> {
    let new = append(store, at.step_run_id, at.number, lines).await?;
    if truncated {
        store
            .execute(
                Statement::new("UPDATE attempts SET log_truncated = TRUE WHERE id = $1")
                    .bind(at.attempt_id),
            )
            .await?;
    }
    Ok(new)
}

/// Up to `limit` lines after the cursor `after`, in order. Chunks are fetched a few at a
/// time: at first at most [`FIRST_FETCH`] (and no more than `limit`), then as many as the
/// lines still wanted need at the chunks' average size so far, so a page of a log stored in
/// chunks of one line (a step printing a line now and then) is a few queries, and one of
/// full chunks parses little past its end.
pub(super) async fn read(
    store: &Store,
    step_run_id: i64,
    after: (i64, i64),
    limit: i64,
) -> anyhow::Result<Vec<StoredLine>> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let mut page = Vec::new();
    let mut cursor = after;
    let (mut chunks_read, mut lines_read) = (0, 0);
    let mut fetch = FIRST_FETCH.min(limit);
    while page.len() < limit {
        let chunks: Vec<(i64, String)> = store
            .rows(
                Statement::new(PAGE)
                    .bind(step_run_id)
                    .bind(cursor.0)
                    .bind(cursor.1)
                    .bind(fetch as i64),
            )
            .await?;
        for (attempt, text) in &chunks {
            let lines = chunk_encoding::decode(text)
                .with_context(|| format!("a stored chunk of step run {step_run_id}'s lines"))?;
            lines_read += lines.len();
            for (seq, stream, text, ts) in lines {
                let seq = seq as i64;
                if (*attempt, seq) <= after || page.len() == limit {
                    continue;
                }
                page.push(StoredLine {
                    attempt: *attempt,
                    seq,
                    stream,
                    text,
                    ts,
                });
            }
        }
        chunks_read += chunks.len();
        match (chunks.len() == fetch, page.last()) {
            (true, Some(last)) => cursor = (last.attempt, last.seq),
            _ => break,
        }
        let average = lines_read.div_ceil(chunks_read.max(1)).max(1);
        fetch = (limit - page.len().min(limit))
            .div_ceil(average)
            .clamp(1, MAX_FETCH);
    }
    Ok(page)
}

/// The lines sorted by seq with duplicates dropped (the first copy kept), borrowed. A
/// runner's batch is in order already; one that is not is refused before it gets here, so
/// this is the store keeping its invariant on its own.
fn in_order(lines: &[LogLine]) -> Vec<&LogLine> {
    let mut ordered: Vec<&LogLine> = lines.iter().collect();
    if !lines.windows(2).all(|w| w[0].seq < w[1].seq) {
        ordered.sort_by_key(|l| l.seq);
        ordered.dedup_by_key(|l| l.seq);
    }
    ordered
}

/// `lines` cut into chunks of at most [`CHUNK_LINES`] lines and [`CHUNK_BYTES`] bytes of
/// text (but at least one line each).
fn cut<'l, 'a>(lines: &'l [&'a LogLine]) -> Vec<&'l [&'a LogLine]> {
    let mut chunks = Vec::new();
    let mut rest = lines;
    while !rest.is_empty() {
        let mut bytes = 0;
        let mut end = 0;
        while end < rest.len().min(CHUNK_LINES) {
            bytes += rest[end].text.len();
            if end > 0 && bytes > CHUNK_BYTES {
                break;
            }
            end += 1;
        }
        let (chunk, after) = rest.split_at(end);
        chunks.push(chunk);
        rest = after;
    }
    chunks
}

/// A chunk insert `sql` with `$1`..`$6` bound: step run, attempt, last seq, line count,
/// lines, bytes of text.
fn chunk_insert<'q>(
    sql: &'q str,
    step_run_id: i64,
    attempt: i64,
    chunk: &[&LogLine],
) -> anyhow::Result<Statement<'q>> {
    let last = chunk.last().map_or(0, |l| l.seq);
    Ok(Statement::new(sql)
        .bind(step_run_id)
        .bind(attempt)
        .bind(i64::try_from(last).context("line seq out of range")?)
        .bind(chunk.len() as i64)
        .bind(chunk_encoding::encode(chunk).context("encoding a chunk of lines")?)
        .bind(chunk.iter().map(|l| l.text.len() as i64).sum::<i64>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plue_types::protocol::Stream;

    fn line(seq: u64, text: &str) -> LogLine {
        LogLine {
            seq,
            stream: Stream::Stdout,
            text: text.to_string(),
            ts_ms: 0,
        }
    }

    #[test]
    fn chunks_are_bounded_in_lines_and_bytes_and_keep_every_line_in_order() {
        let short: Vec<LogLine> = (1..=1200).map(|seq| line(seq, "x")).collect();
        let refs: Vec<&LogLine> = short.iter().collect();
        let sizes: Vec<usize> = cut(&refs).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [512, 512, 176]);

        let long_text = "y".repeat(16 * 1024);
        let long: Vec<LogLine> = (1..=9).map(|seq| line(seq, &long_text)).collect();
        let refs: Vec<&LogLine> = long.iter().collect();
        let sizes: Vec<usize> = cut(&refs).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [4, 4, 1], "64 KiB of text a chunk");

        let huge = [line(1, &"z".repeat(CHUNK_BYTES + 1)), line(2, "after")];
        let refs: Vec<&LogLine> = huge.iter().collect();
        let sizes: Vec<usize> = cut(&refs).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [1, 1], "a line past the bound is a chunk of its own");

        assert!(cut(&[]).is_empty());
        let joined: Vec<u64> = cut(&short.iter().collect::<Vec<_>>())
            .iter()
            .flat_map(|c| c.iter().map(|l| l.seq))
            .collect();
        assert_eq!(joined, (1..=1200).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_out_of_order_is_sorted_and_its_duplicates_dropped() {
        let batch = [line(3, "c"), line(1, "a"), line(3, "c again"), line(2, "b")];
        let ordered: Vec<(u64, &str)> = in_order(&batch)
            .iter()
            .map(|l| (l.seq, l.text.as_str()))
            .collect();
        assert_eq!(ordered, [(1, "a"), (2, "b"), (3, "c")]);
    }

    /// A page is a seek to the first chunk past its cursor in the key, not a scan of the
    /// step's chunks from its first one (which would make paging through a long log
    /// quadratic).
    #[tokio::test]
    async fn a_page_seeks_to_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open_data_dir(dir.path()).await.unwrap();
        let plan: Vec<(i64, i64, i64, String)> = store
            .rows(
                Statement::new(&format!("EXPLAIN QUERY PLAN {PAGE}"))
                    .bind(1_i64)
                    .bind(1_i64)
                    .bind(5000_i64)
                    .bind(8_i64),
            )
            .await
            .unwrap();
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert_eq!(
            details,
            ["SEARCH log_chunks USING INDEX sqlite_autoindex_log_chunks_1 (step_run_id=? AND (attempt,last_seq)>(?,?))"],
            "the page query's plan"
        );
    }
}
