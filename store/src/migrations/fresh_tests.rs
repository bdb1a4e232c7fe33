//! The fresh schema against the migrations it stands for; the helpers here (an empty
//! database, one the migrations made, a description of a database to compare) serve the
//! migrations' other tests too (`sqlite.rs`).

use rusqlite::Connection;

use super::*;
use crate::migrations::sqlite::run;
use crate::migrations::{apply_sqlite_through, listed, Dialect};

/// An empty in-memory database, with foreign keys enforced as the store enforces them.
pub(in crate::migrations) fn empty() -> Connection {
    let conn = Connection::open_in_memory().expect("an in-memory database");
    conn.pragma_update(None, "foreign_keys", "ON")
        .expect("foreign keys enforced");
    conn
}

/// A database the migrations made, replayed through `through` (all for `None`).
pub(in crate::migrations) fn migrated(through: Option<i64>) -> Connection {
    let mut conn = empty();
    apply_sqlite_through(&mut conn, through).expect("the migrations");
    conn
}

fn all() -> Vec<Migration> {
    listed(Dialect::Sqlite, None).unwrap()
}

fn last_version() -> i64 {
    all().iter().map(|m| m.version).max().unwrap()
}

/// Everything two databases must share to be the same store: each schema object as SQLite
/// keeps it, every row (as `dump` writes it), and what is recorded as applied.
pub(in crate::migrations) fn describe(conn: &Connection) -> Vec<String> {
    let mut described: Vec<String> = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap()
        .query_map([], |row| {
            let (kind, name, table, sql): (String, String, String, Option<String>) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            Ok(format!("{kind} {name} on {table}: {sql:?}"))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut rows: Vec<String> = dump(conn, 0)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("INSERT"))
        .map(str::to_owned)
        .collect();
    rows.sort();
    described.extend(rows);
    let applied: Vec<(i64, String, bool, Vec<u8>)> = conn
        .prepare(
            "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
        )
        .unwrap()
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    described.extend(applied.into_iter().map(|row| format!("applied {row:?}")));
    for pragma in ["user_version", "application_id"] {
        let value: i64 = conn
            .query_row(&format!("PRAGMA {pragma}"), [], |row| row.get(0))
            .unwrap();
        described.push(format!("{pragma} = {value}"));
    }
    described
}

/// Fails naming only what differs (each description is long).
pub(in crate::migrations) fn assert_same(laid: &[String], made: &[String]) {
    let only_laid: Vec<&String> = laid.iter().filter(|l| !made.contains(l)).collect();
    let only_made: Vec<&String> = made.iter().filter(|l| !laid.contains(l)).collect();
    assert!(
        only_laid.is_empty() && only_made.is_empty() && laid.len() == made.len(),
        "only in the laid-down schema: {only_laid:#?}\nonly in the migrated one: {only_made:#?}"
    );
}

fn objects(conn: &Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn the_fresh_schema_is_what_the_migrations_make() {
    let all = all();
    let mut laid = empty();
    assert!(lay_down_if_empty(&mut laid, &all, SCHEMA).unwrap());
    // The record's checksums are checked against today's files, and nothing is applied.
    let before = describe(&laid);
    run(&mut laid, &all).expect("the migrations after the fresh schema");
    assert_same(&describe(&laid), &before);
    let made = describe(&migrated(None));
    assert_same(&before, &made);
    // The comparison saw a real schema: tables, indexes, triggers, a seeded row, every
    // migration recorded.
    for kind in [
        "table ",
        "index ",
        "trigger ",
        "INSERT INTO \"users\"",
        "applied ",
    ] {
        assert!(made.iter().any(|line| line.starts_with(kind)), "no {kind}");
    }
    let applied = made.iter().filter(|l| l.starts_with("applied ")).count();
    assert_eq!(applied, all.len());
}

#[test]
fn the_committed_fresh_schema_is_current() {
    let last = last_version();
    let today = dump(&migrated(None), last).unwrap();
    if std::env::var_os("PLUE_UPDATE_GOLDEN").is_some() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/migrations/fresh_sqlite.sql"
        );
        std::fs::write(path, &today).unwrap();
        return;
    }
    assert_eq!(
        through(SCHEMA).unwrap(),
        last,
        "the fresh schema is behind the migrations"
    );
    assert!(
        SCHEMA == today,
        "store/src/migrations/fresh_sqlite.sql is not what the migrations make today; \
         regenerate it with `PLUE_UPDATE_GOLDEN=1 cargo test -p plue-store fresh`"
    );
}

#[test]
fn a_fresh_schema_behind_the_migrations_is_brought_up_by_them() {
    let last = last_version();
    let older = dump(&migrated(Some(last - 1)), last - 1).unwrap();
    let all = all();
    let mut laid = empty();
    assert!(lay_down_if_empty(&mut laid, &all, &older).unwrap());
    let recorded: i64 = laid
        .query_row("SELECT MAX(version) FROM _sqlx_migrations", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(recorded, last - 1);
    run(&mut laid, &all).expect("the last migration");
    assert_same(&describe(&laid), &describe(&migrated(None)));
}

#[test]
fn a_database_that_holds_anything_is_left_to_the_migrations() {
    let all = all();
    let mut old = migrated(Some(last_version() - 1));
    let before = describe(&old);
    assert!(!lay_down_if_empty(&mut old, &all, SCHEMA).unwrap());
    assert_same(&describe(&old), &before);

    let mut other = empty();
    other.execute("CREATE TABLE notes (text TEXT)", []).unwrap();
    assert!(!lay_down_if_empty(&mut other, &all, SCHEMA).unwrap());
    assert_eq!(objects(&other), 1);
}

#[test]
fn a_script_that_fails_leaves_the_database_empty() {
    let all = all();
    let mut conn = empty();
    let unnamed = lay_down_if_empty(&mut conn, &all, "CREATE TABLE a (x);").unwrap_err();
    assert!(
        unnamed.to_string().contains("names no migration"),
        "{unnamed:#}"
    );
    let broken = "-- through migration 1\nCREATE TABLE a (x);\nCREATE TABLE a (x);\n";
    let failed = lay_down_if_empty(&mut conn, &all, broken).unwrap_err();
    assert!(
        format!("{failed:#}").contains("already exists"),
        "{failed:#}"
    );
    assert_eq!(objects(&conn), 0);
    // The connection is usable afterwards: no transaction was left open on it.
    assert!(conn.is_autocommit());
    assert!(lay_down_if_empty(&mut conn, &all, SCHEMA).unwrap());
}
