//! A new SQLite database gets its schema in one step: the schema the migrations make,
//! written down once (`fresh_sqlite.sql`, generated), laid down in one transaction together
//! with the migrations' bookkeeping rows, instead of replaying every migration.
//!
//! Replaying costs a fresh `plue run` about 25 ms of CPU, most of a one-step run's start:
//! SQLite re-reads its schema after each `ALTER TABLE` and checks every table and trigger
//! at a rename, and the migrations do both many times. Laying the final schema down
//! costs about 5 ms.
//!
//! Invariants:
//! - Only a database without a single schema object gets the script; any other (one an
//!   older engine wrote, or anything else) is left to the migrations (`sqlite::run`).
//! - The script is what `dump` prints of a database the migrations made: its line
//!   `-- through migration N` names the last migration it holds, and the bookkeeping rows
//!   written with it are those of migrations 1..=N with the checksums of today's migration
//!   files, as the migrations themselves record them (`_sqlx_migrations`, success = 1,
//!   execution_time 0). So the check of applied checksums that follows still guards it,
//!   and a script behind the migrations is brought up by them.
//! - Laying down is one `BEGIN IMMEDIATE` transaction that looks again for schema objects
//!   once it holds the write lock: two processes opening the same new file cannot both
//!   lay it down, and a failure leaves the database empty.
//! - A test lays the script down beside a database the migrations made and compares every
//!   schema object and every row (store/src/migrations/fresh_tests.rs); another fails when
//!   the committed script is not what `dump` prints today.

use anyhow::Context;
use rusqlite::{params, Connection, TransactionBehavior};
use sqlx::migrate::Migration;

use super::script::run_script;

/// The schema of migrations 1..=N on SQLite, as `dump` wrote it.
pub(super) const SCHEMA: &str = include_str!("fresh_sqlite.sql");

/// The line of a script that names its last migration.
const THROUGH: &str = "-- through migration ";

/// The last migration `script` holds, from its `-- through migration N` line.
pub(super) fn through(script: &str) -> anyhow::Result<i64> {
    script
        .lines()
        .find_map(|line| line.strip_prefix(THROUGH))
        .context("the fresh schema names no migration it goes through")?
        .trim()
        .parse()
        .context("the fresh schema's `through migration` is not a number")
}

/// Lays `script` down in `conn`'s database when it holds no schema object at all, with the
/// bookkeeping rows of `migrations` up to the script's; returns whether it did. One
/// `BEGIN IMMEDIATE` transaction: two processes opening the same new file cannot both lay
/// it down, and a failure leaves the database empty.
pub(super) fn lay_down_if_empty(
    conn: &mut Connection,
    migrations: &[Migration],
    script: &str,
) -> anyhow::Result<bool> {
    let through = through(script)?;
    // The common case, an existing database, costs one read and takes no write lock.
    if !is_empty(conn)? {
        return Ok(false);
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("locking the new database")?;
    // Another process may have laid it down between the first look and the lock.
    if !is_empty(&tx)? {
        tx.rollback()
            .context("ending the look at a database another process laid down")?;
        return Ok(false);
    }
    // On any error below the transaction is dropped, which rolls it back.
    run_script(&tx, script).context("laying down the fresh SQLite schema")?;
    // As the migrations record themselves (`execution_time` is the only field not known
    // here).
    let mut record = tx
        .prepare(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, ?2, TRUE, ?3, 0)",
        )
        .context("recording the migrations as applied")?;
    for migration in migrations.iter().filter(|m| m.version <= through) {
        record
            .execute(params![
                migration.version,
                &*migration.description,
                &*migration.checksum
            ])
            .with_context(|| format!("recording migration {} as applied", migration.version))?;
    }
    drop(record);
    tx.commit().context("committing the fresh schema")?;
    Ok(true)
}

fn is_empty(conn: &Connection) -> anyhow::Result<bool> {
    let objects: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))
        .context("reading the database's schema")?;
    Ok(objects == 0)
}

/// The script that makes `conn`'s schema and rows again, for a database the migrations
/// made through `through`: each schema object's SQL as SQLite keeps it (tables, then
/// indexes, views and triggers, each in the order they were made), then every row but
/// the migrations' bookkeeping as `INSERT`s of SQLite's own literals.
#[cfg(test)]
pub(super) fn dump(conn: &Connection, through: i64) -> anyhow::Result<String> {
    let mut script = format!(
        "-- Generated by store/src/migrations/fresh.rs from the SQLite migrations: the schema\n\
         -- they make, laid down at once in a new database. Do not edit: regenerate it with\n\
         --   PLUE_UPDATE_GOLDEN=1 cargo test -p plue-store fresh\n\
         {THROUGH}{through}\n\n"
    );
    let objects: Vec<(String, String, String)> = conn
        .prepare(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL \
             ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 ELSE 3 END, rowid",
        )?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (_, _, sql) in &objects {
        script.push_str(sql);
        script.push_str(";\n\n");
    }
    for (kind, table, _) in &objects {
        if kind != "table" || table == "_sqlx_migrations" {
            continue;
        }
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
            .query_map([table], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let names = columns
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let values = columns
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || ', ' || ");
        let rows: Vec<String> = conn
            .prepare(&format!(
                "SELECT 'INSERT INTO \"{table}\" ({}) VALUES (' || {values} || ');' FROM \"{table}\"",
                names.replace('\'', "''")
            ))?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for row in rows {
            script.push_str(&row);
            script.push('\n');
        }
    }
    Ok(script)
}

#[cfg(test)]
#[path = "fresh_tests.rs"]
pub(super) mod tests;
