use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::SqlitePool;

use super::*;
use crate::migrations::{migrator, Dialect};

/// An empty in-memory database on one connection kept for the pool's life, with foreign
/// keys enforced as the store enforces them.
async fn empty() -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .in_memory(true)
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
        .expect("an in-memory database")
}

/// A database the migrations made, through `through` (all for `None`).
async fn migrated(through: Option<i64>) -> SqlitePool {
    let pool = empty().await;
    migrator(Dialect::Sqlite, through)
        .await
        .unwrap()
        .run(&pool)
        .await
        .expect("the migrations");
    pool
}

async fn last_version() -> i64 {
    let all = migrator(Dialect::Sqlite, None).await.unwrap();
    all.iter().map(|m| m.version).max().unwrap()
}

async fn dumped(pool: &SqlitePool, through: i64) -> String {
    dump(&mut pool.acquire().await.unwrap(), through)
        .await
        .unwrap()
}

/// Everything two databases must share to be the same store: each schema object as SQLite
/// keeps it, every row (as `dump` writes it), and what sqlx recorded as applied.
async fn describe(pool: &SqlitePool) -> Vec<String> {
    let mut described: Vec<String> = sqlx::query_as::<_, (String, String, String, Option<String>)>(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(kind, name, table, sql)| format!("{kind} {name} on {table}: {sql:?}"))
    .collect();
    let mut rows: Vec<String> = dumped(pool, 0)
        .await
        .lines()
        .filter(|line| line.starts_with("INSERT"))
        .map(str::to_owned)
        .collect();
    rows.sort();
    described.extend(rows);
    let applied: Vec<(i64, String, bool, Vec<u8>)> = sqlx::query_as(
        "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    described.extend(applied.into_iter().map(|row| format!("applied {row:?}")));
    for pragma in ["user_version", "application_id"] {
        let value: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}"))
            .fetch_one(pool)
            .await
            .unwrap();
        described.push(format!("{pragma} = {value}"));
    }
    described
}

/// Fails naming only what differs (each description is long).
fn assert_same(laid: &[String], made: &[String]) {
    let only_laid: Vec<&String> = laid.iter().filter(|l| !made.contains(l)).collect();
    let only_made: Vec<&String> = made.iter().filter(|l| !laid.contains(l)).collect();
    assert!(
        only_laid.is_empty() && only_made.is_empty() && laid.len() == made.len(),
        "only in the laid-down schema: {only_laid:#?}\nonly in the migrated one: {only_made:#?}"
    );
}

async fn objects(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_fresh_schema_is_what_the_migrations_make() {
    let all = migrator(Dialect::Sqlite, None).await.unwrap();
    let laid = empty().await;
    assert!(lay_down_if_empty(&laid, &all, SCHEMA).await.unwrap());
    // sqlx checks every recorded checksum against today's files, and applies nothing.
    all.run(&laid)
        .await
        .expect("the migrations after the fresh schema");
    let made = migrated(None).await;
    let (laid, made) = (describe(&laid).await, describe(&made).await);
    assert_same(&laid, &made);
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
    assert_eq!(applied, all.iter().count());
}

#[tokio::test]
async fn the_committed_fresh_schema_is_current() {
    let last = last_version().await;
    let today = dumped(&migrated(None).await, last).await;
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

#[tokio::test]
async fn a_fresh_schema_behind_the_migrations_is_brought_up_by_them() {
    let last = last_version().await;
    let older = dumped(&migrated(Some(last - 1)).await, last - 1).await;
    let all = migrator(Dialect::Sqlite, None).await.unwrap();
    let laid = empty().await;
    assert!(lay_down_if_empty(&laid, &all, &older).await.unwrap());
    let recorded: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&laid)
        .await
        .unwrap();
    assert_eq!(recorded, last - 1);
    all.run(&laid).await.expect("the last migration");
    assert_same(
        &describe(&laid).await,
        &describe(&migrated(None).await).await,
    );
}

#[tokio::test]
async fn a_database_that_holds_anything_is_left_to_the_migrations() {
    let all = migrator(Dialect::Sqlite, None).await.unwrap();
    let old = migrated(Some(last_version().await - 1)).await;
    let before = describe(&old).await;
    assert!(!lay_down_if_empty(&old, &all, SCHEMA).await.unwrap());
    assert_same(&describe(&old).await, &before);

    let other = empty().await;
    sqlx::query("CREATE TABLE notes (text TEXT)")
        .execute(&other)
        .await
        .unwrap();
    assert!(!lay_down_if_empty(&other, &all, SCHEMA).await.unwrap());
    assert_eq!(objects(&other).await, 1);
}

#[tokio::test]
async fn a_script_that_fails_leaves_the_database_empty() {
    let all = migrator(Dialect::Sqlite, None).await.unwrap();
    let pool = empty().await;
    let unnamed = lay_down_if_empty(&pool, &all, "CREATE TABLE a (x);")
        .await
        .unwrap_err();
    assert!(
        unnamed.to_string().contains("names no migration"),
        "{unnamed:#}"
    );
    let broken = "-- through migration 1\nCREATE TABLE a (x);\nCREATE TABLE a (x);\n";
    let failed = lay_down_if_empty(&pool, &all, broken).await.unwrap_err();
    assert!(
        format!("{failed:#}").contains("already exists"),
        "{failed:#}"
    );
    assert_eq!(objects(&pool).await, 0);
    // The connection is usable afterwards: no transaction was left open on it.
    assert!(lay_down_if_empty(&pool, &all, SCHEMA).await.unwrap());
}
