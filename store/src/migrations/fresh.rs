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
//!   older engine wrote, or anything else) is left to the migrations as before.
//! - The script is what `dump` prints of a database the migrations made: its line
//!   `-- through migration N` names the last migration it holds, and the bookkeeping rows
//!   written with it are those of migrations 1..=N with the checksums sqlx computes from
//!   today's migration files. So sqlx's own check of applied checksums
//!   still guards it, and a script behind the migrations is brought up by them.
//! - A test lays the script down beside a database the migrations made and compares every
//!   schema object and every row (store/src/migrations/fresh_tests.rs); another fails when
//!   the committed script is not what `dump` prints today.

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnection;
use sqlx::SqlitePool;

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

/// Lays `script` down in the database behind `pool` when it holds no schema object at all,
/// with the bookkeeping rows of `migrator`'s migrations up to the script's; returns whether
/// it did. One `BEGIN IMMEDIATE` transaction: two processes opening the same new file
/// cannot both lay it down, and a failure leaves the database empty.
pub(super) async fn lay_down_if_empty(
    pool: &SqlitePool,
    migrator: &Migrator,
    script: &str,
) -> anyhow::Result<bool> {
    let through = through(script)?;
    let mut conn = pool
        .acquire()
        .await
        .context("a connection to lay down the schema")?;
    // The common case, an existing database, costs one read and takes no write lock.
    if !is_empty(&mut conn).await? {
        return Ok(false);
    }
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .context("locking the new database")?;
    let laid = lay_down(&mut conn, migrator, script, through).await;
    let end = if laid.as_ref().is_ok_and(|laid| *laid) {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    let ended = sqlx::raw_sql(end).execute(&mut *conn).await;
    let laid = laid?;
    ended.with_context(|| format!("{end} of the fresh schema"))?;
    Ok(laid)
}

async fn lay_down(
    conn: &mut SqliteConnection,
    migrator: &Migrator,
    script: &str,
    through: i64,
) -> anyhow::Result<bool> {
    // Another process may have laid it down between the first look and the lock.
    if !is_empty(conn).await? {
        return Ok(false);
    }
    sqlx::raw_sql(script)
        .execute(&mut *conn)
        .await
        .context("laying down the fresh SQLite schema")?;
    // As sqlx's migrator writes them (`execution_time` is the only field not known here),
    // in one statement.
    let applied: Vec<_> = migrator.iter().filter(|m| m.version <= through).collect();
    if !applied.is_empty() {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) ",
        );
        insert.push_values(&applied, |mut row, migration| {
            row.push_bind(migration.version)
                .push_bind(&*migration.description)
                .push_bind(true)
                .push_bind(&*migration.checksum)
                .push_bind(0_i64);
        });
        insert
            .build()
            .execute(&mut *conn)
            .await
            .context("recording the migrations as applied")?;
    }
    Ok(true)
}

async fn is_empty(conn: &mut SqliteConnection) -> anyhow::Result<bool> {
    let objects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master")
        .fetch_one(&mut *conn)
        .await
        .context("reading the database's schema")?;
    Ok(objects == 0)
}

/// The script that makes `conn`'s schema and rows again, for a database the migrations
/// made through `through`: each schema object's SQL as SQLite keeps it (tables, then
/// indexes, views and triggers, each in the order they were made), then every row but
/// the migrations' bookkeeping as `INSERT`s of SQLite's own literals.
#[cfg(test)]
pub(super) async fn dump(conn: &mut SqliteConnection, through: i64) -> anyhow::Result<String> {
    let mut script = format!(
        "-- Generated by store/src/migrations/fresh.rs from the SQLite migrations: the schema\n\
         -- they make, laid down at once in a new database. Do not edit: regenerate it with\n\
         --   PLUE_UPDATE_GOLDEN=1 cargo test -p plue-store fresh\n\
         {THROUGH}{through}\n\n"
    );
    let objects: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL \
         ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 ELSE 3 END, rowid",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (_, _, sql) in &objects {
        script.push_str(sql);
        script.push_str(";\n\n");
    }
    for (kind, table, _) in &objects {
        if kind != "table" || table == "_sqlx_migrations" {
            continue;
        }
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                .bind(table)
                .fetch_all(&mut *conn)
                .await?;
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
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT 'INSERT INTO \"{table}\" ({}) VALUES (' || {values} || ');' FROM \"{table}\"",
            names.replace('\'', "''")
        ))
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            script.push_str(&row);
            script.push('\n');
        }
    }
    Ok(script)
}

#[cfg(test)]
#[path = "fresh_tests.rs"]
mod tests;
