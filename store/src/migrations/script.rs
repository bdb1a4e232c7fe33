//! Running a migration's SQL text on SQLite: statement by statement, each to its end, an
//! error naming the statement that failed; and recording a migration as applied, in sqlx's
//! record. Both the migrations (`sqlite.rs`) and the fresh schema (`fresh.rs`) run their
//! scripts and write their record through it.

use anyhow::Context;
use rusqlite::{params, Batch, Connection};
use sqlx::migrate::Migration;

/// Runs every statement of `script` in turn, each stepped to its end (a statement that
/// returns rows, or a `RETURNING`, runs whole), each prepared only once the one before it
/// has run (it may use what that one made).
pub(super) fn run_script(conn: &Connection, script: &str) -> anyhow::Result<()> {
    let mut batch = Batch::new(conn, script);
    for n in 1.. {
        let Some(mut statement) = batch
            .next()
            .with_context(|| format!("preparing statement {n} of the script"))?
        else {
            break;
        };
        let stepped = {
            let mut rows = statement.raw_query();
            loop {
                match rows.next() {
                    Ok(Some(_)) => {}
                    Ok(None) => break Ok(()),
                    Err(error) => break Err(error),
                }
            }
        };
        stepped.with_context(|| format!("statement {n} of the script: {}", head(&statement)))?;
    }
    Ok(())
}

/// The first line of `statement`'s own text (after any comment lines), shortened.
fn head(statement: &rusqlite::Statement<'_>) -> String {
    let text = statement.expanded_sql().unwrap_or_default();
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("--"))
        .unwrap_or_default();
    let mut head: String = line.chars().take(80).collect();
    if head.len() < line.len() {
        head.push_str(" ...");
    }
    head
}

/// `migration`'s row in sqlx's record (`_sqlx_migrations`), as sqlx inserts it, with
/// `execution_time` (ns).
pub(super) fn record(
    conn: &Connection,
    migration: &Migration,
    execution_time: i64,
) -> anyhow::Result<()> {
    conn.prepare_cached(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (?1, ?2, TRUE, ?3, ?4)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            migration.version,
            &*migration.description,
            &*migration.checksum,
            execution_time
        ])
    })
    .with_context(|| format!("recording migration {} as applied", migration.version))?;
    Ok(())
}
