//! SQLite's migrations, run on a rusqlite connection: what sqlx's migrator did on SQLite,
//! writing the same record, so a database any earlier engine wrote is read as it wrote it.
//!
//! Invariants:
//! - The record is sqlx's table `_sqlx_migrations`, created as sqlx-sqlite 0.8 creates it
//!   (the same text, which SQLite keeps in `sqlite_master`): one row per applied
//!   migration with its version, description, `success` 1, sqlx's SHA-384 checksum of its
//!   text, and its execution time in nanoseconds (-1 until the migration's transaction has
//!   committed).
//! - Before anything is applied, the record is checked against this build's migrations, as
//!   sqlx checked it: a row with `success` false (dirty), a recorded version this build
//!   does not have (missing), or a recorded checksum that differs from today's file
//!   (changed) is an error naming the version, and nothing is applied.
//! - Each pending migration, in version order, runs with its row in one `BEGIN IMMEDIATE`
//!   transaction (or none when the file starts `-- no-transaction`) that first looks again
//!   for its row: a failure leaves neither its changes nor its row, and two processes
//!   opening the same database apply each migration once.
//! - [`apply_sqlite`] first lays the fresh schema down on a database without any schema
//!   object (`fresh`); [`apply_sqlite_through`], for tests that build an older engine's
//!   database, only replays.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sqlx::migrate::Migration;

use super::script::{record, run_script};
use super::{fresh, listed, Dialect};

/// `_sqlx_migrations` exactly as sqlx-sqlite 0.8 (`Migrate::ensure_migrations_table`)
/// creates it: SQLite keeps this text, and the fresh schema holds it.
const CREATE_RECORD: &str = r#"
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);
"#;

/// Brings the SQLite database behind `conn` up to date: a database without any schema
/// object gets the fresh schema at once (`fresh`), then what is recorded as applied is
/// checked against this build's migrations and the rest are applied. The caller opens the
/// connection and sets its pragmas (a busy timeout, so that a second process opening the
/// same new file waits for the first).
pub fn apply_sqlite(conn: &mut Connection) -> anyhow::Result<()> {
    let migrations = listed(Dialect::Sqlite, None)?;
    fresh::lay_down_if_empty(conn, &migrations, fresh::SCHEMA)?;
    run(conn, &migrations).context("applying the SQLite migrations")
}

/// Replays the SQLite migrations up to version `through` (all of them for `None`) one by
/// one, never laying down the fresh schema: how tests build the database an older engine
/// wrote. Checks the record as [`apply_sqlite`] does (a database holding a later migration
/// than `through` is refused, naming it).
pub fn apply_sqlite_through(conn: &mut Connection, through: Option<i64>) -> anyhow::Result<()> {
    let migrations = listed(Dialect::Sqlite, through)?;
    run(conn, &migrations).with_context(|| match through {
        Some(through) => format!("replaying the SQLite migrations through {through}"),
        None => "replaying the SQLite migrations".to_owned(),
    })
}

/// Checks `conn`'s record against `migrations` (in version order) and applies those it
/// does not hold.
pub(super) fn run(conn: &mut Connection, migrations: &[Migration]) -> anyhow::Result<()> {
    conn.execute_batch(CREATE_RECORD)
        .context("creating the record of applied migrations (_sqlx_migrations)")?;
    let dirty: Option<i64> = conn
        .query_row(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .context("reading the record of applied migrations")?;
    if let Some(version) = dirty {
        anyhow::bail!(
            "migration {version} is recorded as partially applied (success false in \
             _sqlx_migrations): repair the database by hand and delete that row"
        );
    }
    let applied = recorded(conn)?;
    check(&applied, migrations)?;
    for migration in migrations {
        if migration.migration_type.is_down_migration() || applied.contains_key(&migration.version)
        {
            continue;
        }
        apply(conn, migration).with_context(|| {
            format!(
                "applying migration {} ({})",
                migration.version, migration.description
            )
        })?;
    }
    Ok(())
}

/// Every applied migration's version and checksum.
fn recorded(conn: &Connection) -> anyhow::Result<HashMap<i64, Vec<u8>>> {
    let read = || -> rusqlite::Result<HashMap<i64, Vec<u8>>> {
        conn.prepare("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect()
    };
    read().context("reading the record of applied migrations")
}

/// sqlx's checks of the record: every recorded version is one of `migrations`
/// (`VersionMissing`), applied from today's text (`VersionMismatch`).
fn check(applied: &HashMap<i64, Vec<u8>>, migrations: &[Migration]) -> anyhow::Result<()> {
    let known: HashSet<i64> = migrations.iter().map(|m| m.version).collect();
    let mut versions: Vec<i64> = applied.keys().copied().collect();
    versions.sort_unstable();
    if let Some(version) = versions.iter().find(|v| !known.contains(v)) {
        anyhow::bail!(
            "migration {version} is recorded as applied but is not one of this build's \
             migrations (was the database written by a newer engine?)"
        );
    }
    for migration in migrations {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        if let Some(checksum) = applied.get(&migration.version) {
            if **checksum != *migration.checksum {
                return Err(changed(migration));
            }
        }
    }
    Ok(())
}

fn changed(migration: &Migration) -> anyhow::Error {
    anyhow::anyhow!(
        "migration {} ({}) was applied from another text than this build's: its recorded \
         checksum differs (an applied migration is never edited, a change is a new one)",
        migration.version,
        migration.description
    )
}

/// A migration's `execution_time` until it is known, as sqlx records it.
const TIME_NOT_KNOWN: i64 = -1;

/// Runs `migration` and records it, in one `BEGIN IMMEDIATE` transaction unless it says
/// `-- no-transaction`; then records how long it took, as sqlx does.
fn apply(conn: &mut Connection, migration: &Migration) -> anyhow::Result<()> {
    let started = if migration.no_tx {
        let started = Instant::now();
        run_script(conn, &migration.sql)?;
        record(conn, migration, TIME_NOT_KNOWN)?;
        started
    } else {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("locking the database")?;
        // Another process may have applied it since the record was read.
        let now: Option<Vec<u8>> = tx
            .query_row(
                "SELECT checksum FROM _sqlx_migrations WHERE version = ?1",
                [migration.version],
                |row| row.get(0),
            )
            .optional()
            .context("reading the record of applied migrations")?;
        if let Some(checksum) = now {
            tx.rollback().context("ending the look at the record")?;
            if *checksum != *migration.checksum {
                return Err(changed(migration));
            }
            return Ok(());
        }
        let started = Instant::now();
        // On an error the transaction is dropped, which rolls it back.
        run_script(&tx, &migration.sql)?;
        record(&tx, migration, TIME_NOT_KNOWN)?;
        tx.commit().context("committing the migration")?;
        started
    };
    // Only for whoever reads the record: lost if the process dies here, as with sqlx.
    let nanos = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
    conn.execute(
        "UPDATE _sqlx_migrations SET execution_time = ?1 WHERE version = ?2",
        params![nanos, migration.version],
    )
    .context("recording the migration's execution time")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use sqlx::migrate::MigrationType;

    use super::*;
    use crate::migrations::fresh::tests::{assert_same, describe, empty, migrated};

    fn all() -> Vec<Migration> {
        listed(Dialect::Sqlite, None).unwrap()
    }

    fn last_version() -> i64 {
        all().last().unwrap().version
    }

    fn versions(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT version FROM _sqlx_migrations ORDER BY version")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn tables(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn migration(version: i64, sql: &'static str, no_tx: bool) -> Migration {
        Migration::new(
            version,
            Cow::Owned(format!("m{version}")),
            MigrationType::Simple,
            Cow::Borrowed(sql),
            no_tx,
        )
    }

    /// The error's whole chain, which must name `version`.
    fn assert_names(error: &anyhow::Error, version: i64) {
        let chain = format!("{error:#}");
        assert!(chain.contains(&format!("migration {version} ")), "{chain}");
    }

    /// A connection to `path` as the store opens it, as far as matters here: waiting for
    /// the write lock, foreign keys enforced.
    fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(conn)
    }

    #[test]
    fn each_migration_is_recorded_as_sqlx_records_it() {
        let all = all();
        for conn in [migrated(None), {
            let mut laid = empty();
            apply_sqlite(&mut laid).unwrap();
            laid
        }] {
            // Each row's version, description, checksum, execution time, then the type
            // SQLite stored each field as.
            let rows: Vec<(i64, String, Vec<u8>, i64, String)> = conn
                .prepare(
                    "SELECT version, description, checksum, execution_time, \
                     typeof(success) || ' ' || typeof(checksum) || ' ' || \
                     typeof(execution_time) || ' ' || typeof(installed_on) \
                     FROM _sqlx_migrations ORDER BY version",
                )
                .unwrap()
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rows.len(), all.len());
            for ((version, description, checksum, time, types), migration) in rows.iter().zip(&all)
            {
                assert_eq!(*version, migration.version);
                assert_eq!(*description, migration.description);
                assert_eq!(**checksum, *migration.checksum);
                assert!(*time >= 0, "migration {version} took {time} ns");
                assert_eq!(types, "integer blob integer text");
            }
            let success: i64 = conn
                .query_row("SELECT MIN(success) FROM _sqlx_migrations", [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(success, 1);
        }
    }

    #[test]
    fn an_up_to_date_database_is_left_as_it_is() {
        let mut conn = empty();
        apply_sqlite(&mut conn).unwrap();
        let before = describe(&conn);
        apply_sqlite(&mut conn).unwrap();
        apply_sqlite_through(&mut conn, None).unwrap();
        assert_same(&describe(&conn), &before);
    }

    #[test]
    fn an_existing_database_is_brought_up_to_date() {
        let all = all();
        // Ten migrations behind.
        let through = all[all.len() - 11].version;
        let mut conn = migrated(Some(through));
        assert_eq!(versions(&conn).last(), Some(&through));
        conn.execute(
            "INSERT INTO repositories (name, clone_url, forge, created_at) \
             VALUES ('r', 'https://example.com/r.git', 'github', 1)",
            [],
        )
        .unwrap();
        apply_sqlite(&mut conn).unwrap();
        let all: Vec<i64> = all.iter().map(|m| m.version).collect();
        assert_eq!(versions(&conn), all);
        let kept: String = conn
            .query_row(
                "SELECT clone_url FROM repositories WHERE name = 'r'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, "https://example.com/r.git");
        conn.execute("DELETE FROM repositories", []).unwrap();
        assert_same(&describe(&conn), &describe(&migrated(None)));
    }

    #[test]
    fn two_openers_of_one_new_file_both_succeed_and_lay_it_down_once() {
        let made = describe(&migrated(None));
        // A new file, and an older engine's (the two apply the last migrations); in WAL
        // mode, as the store sets it, and in SQLite's default rollback journal. The journal
        // mode is set before the two open it: SQLite refuses to switch it while another
        // connection opens the file ("database is locked", without waiting).
        for through in [None, Some(last_version() - 3)] {
            for wal in [true, false] {
                for _ in 0..5 {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("plue.db");
                    let mut first = open(&path).unwrap();
                    if wal {
                        first
                            .pragma_update_and_check(None, "journal_mode", "WAL", |row| {
                                row.get::<_, String>(0)
                            })
                            .unwrap();
                    }
                    if let Some(through) = through {
                        apply_sqlite_through(&mut first, Some(through)).unwrap();
                    }
                    drop(first);
                    let start = Arc::new(Barrier::new(2));
                    let openers: Vec<_> = (0..2)
                        .map(|_| {
                            let (path, start) = (path.clone(), start.clone());
                            std::thread::spawn(move || {
                                start.wait();
                                let mut conn = open(&path)?;
                                apply_sqlite(&mut conn)
                            })
                        })
                        .collect();
                    for opener in openers {
                        let applied = opener.join().expect("an opener panicked");
                        if let Err(error) = applied {
                            panic!("through {through:?}, WAL {wal}: {error:#}");
                        }
                    }
                    assert_same(&describe(&open(&path).unwrap()), &made);
                }
            }
        }
    }

    #[test]
    fn a_dirty_record_is_refused() {
        let mut conn = migrated(None);
        conn.execute(
            "UPDATE _sqlx_migrations SET success = FALSE WHERE version IN (7, 9)",
            [],
        )
        .unwrap();
        let refused = apply_sqlite(&mut conn).unwrap_err();
        assert_names(&refused, 7);
        assert!(
            format!("{refused:#}").contains("partially applied"),
            "{refused:#}"
        );
        assert_names(&apply_sqlite_through(&mut conn, None).unwrap_err(), 7);
    }

    #[test]
    fn a_changed_checksum_is_refused_before_anything_is_applied() {
        let through = 20;
        let mut conn = migrated(Some(through));
        conn.execute(
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 12",
            [],
        )
        .unwrap();
        let before = describe(&conn);
        let refused = apply_sqlite(&mut conn).unwrap_err();
        assert_names(&refused, 12);
        assert!(format!("{refused:#}").contains("checksum"), "{refused:#}");
        assert_same(&describe(&conn), &before);
        // Also when the one applying finds it recorded under its lock (another process
        // applied it since the record was read): skipped if the same, refused if not.
        let mut conn = empty();
        let first = migration(1, "CREATE TABLE b (x)", false);
        run(&mut conn, std::slice::from_ref(&first)).unwrap();
        apply(&mut conn, &first).unwrap();
        let refused = apply(&mut conn, &migration(1, "CREATE TABLE a (x)", false)).unwrap_err();
        assert_names(&refused, 1);
        assert_eq!(tables(&conn), ["_sqlx_migrations", "b"]);
        assert_eq!(versions(&conn), [1]);
        assert!(conn.is_autocommit(), "a transaction was left open");
    }

    #[test]
    fn a_recorded_version_this_build_lacks_is_refused() {
        let mut conn = migrated(None);
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from a newer engine', TRUE, x'00', 0)",
            [],
        )
        .unwrap();
        let refused = apply_sqlite(&mut conn).unwrap_err();
        assert_names(&refused, 9999);
        assert!(format!("{refused:#}").contains("not one of"), "{refused:#}");
        // An older set than the database holds: the first version it lacks.
        let mut newer = migrated(Some(5));
        assert_names(&apply_sqlite_through(&mut newer, Some(3)).unwrap_err(), 4);
    }

    #[test]
    fn a_failing_migration_leaves_neither_its_changes_nor_its_row() {
        let mut conn = empty();
        let first = migration(
            1,
            "CREATE TABLE a (x);\n-- rows, read back: every statement runs whole\n\
             INSERT INTO a VALUES (1), (2);\nSELECT x FROM a;\n\
             UPDATE a SET x = x + 10 RETURNING x;",
            false,
        );
        let failing = migration(2, "CREATE TABLE b (x);\nCREATE TABLE a (x);", false);
        let failed = run(&mut conn, &[first.clone(), failing]).unwrap_err();
        assert_names(&failed, 2);
        let chain = format!("{failed:#}");
        assert!(chain.contains("already exists"), "{chain}");
        assert!(chain.contains("statement 2 of the script"), "{chain}");
        assert_eq!(tables(&conn), ["_sqlx_migrations", "a"]);
        assert_eq!(versions(&conn), [1]);
        assert!(conn.is_autocommit(), "a transaction was left open");
        let sum: i64 = conn
            .query_row("SELECT SUM(x) FROM a", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sum, 23);
        // Fixed, it applies.
        run(
            &mut conn,
            &[first, migration(2, "CREATE TABLE b (x);", false)],
        )
        .unwrap();
        assert_eq!(versions(&conn), [1, 2]);
    }

    #[test]
    fn a_migration_without_a_transaction_runs_outside_one() {
        let mut conn = empty();
        let refused = run(&mut conn, &[migration(1, "VACUUM;", false)]).unwrap_err();
        assert!(format!("{refused:#}").contains("VACUUM"), "{refused:#}");
        assert!(versions(&conn).is_empty());
        run(&mut conn, &[migration(1, "VACUUM;", true)]).unwrap();
        assert_eq!(versions(&conn), [1]);
        let time: i64 = conn
            .query_row("SELECT execution_time FROM _sqlx_migrations", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(time >= 0);
    }
}
