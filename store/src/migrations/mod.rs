//! The schema's migrations for each backend, embedded at compile time: the files both
//! dialects write the same way live once in `migrations/shared/`, each dialect's own in
//! `migrations/sqlite/` and `migrations/postgres/`, and a backend's set is the two merged
//! by version ([`migrator`] for PostgreSQL, whose sqlx migrator runs them; the same list
//! for SQLite, which [`apply_sqlite`] runs itself on a rusqlite connection).
//!
//! Invariants: a version stands in the shared set or in the dialect sets, never both
//! (`merged` refuses a repeat); a migration's checksum is sqlx's SHA-384 of its text
//! (`sqlx::migrate!` computes it, on either backend), so moving an unchanged file between
//! these folders changes nothing a database has recorded; applied migrations are never
//! edited, a change is a new numbered file.
//!
//! A SQLite store is brought up to date only by [`apply_sqlite`] (`sqlite`): a new
//! database gets the migrations' schema laid down at once (`fresh`), not replayed, and
//! any database then has its record of applied migrations checked and the rest applied.

mod fresh;
mod script;
mod sqlite;

pub use sqlite::{apply_sqlite, apply_sqlite_through};

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, Migrator};

/// A backend's dialect of SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The migrator of `dialect`, holding every migration up to version `through` (all of them
/// for `None`; tests build an old schema with `Some`).
pub async fn migrator(dialect: Dialect, through: Option<i64>) -> anyhow::Result<Migrator> {
    Ok(Migrator::new(Listed(listed(dialect, through)?)).await?)
}

/// The migrations of `dialect` up to version `through` (all for `None`), in version order.
fn listed(dialect: Dialect, through: Option<i64>) -> anyhow::Result<Vec<Migration>> {
    let own = match dialect {
        Dialect::Sqlite => sqlx::migrate!("../migrations/sqlite"),
        Dialect::Postgres => sqlx::migrate!("../migrations/postgres"),
    };
    let shared = sqlx::migrate!("../migrations/shared");
    let mut listed = merged(&shared, &own)?;
    if let Some(through) = through {
        listed.retain(|migration| migration.version <= through);
    }
    Ok(listed)
}

/// The two sets' migrations in version order, or which version both hold.
fn merged(shared: &Migrator, own: &Migrator) -> anyhow::Result<Vec<Migration>> {
    let mut listed: Vec<Migration> = shared.iter().chain(own.iter()).cloned().collect();
    listed.sort_by_key(|migration| migration.version);
    if let Some(pair) = listed
        .windows(2)
        .find(|pair| pair[0].version == pair[1].version)
    {
        anyhow::bail!(
            "migration {} stands both in migrations/shared and in a dialect's folder",
            pair[0].version
        );
    }
    Ok(listed)
}

/// Migrations already read, handed to [`Migrator::new`].
#[derive(Debug)]
struct Listed(Vec<Migration>);

impl<'s> MigrationSource<'s> for Listed {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sqlx::migrate::MigrationType;

    use super::*;

    fn version(version: i64) -> Migration {
        Migration::new(
            version,
            Cow::Owned(format!("m{version}")),
            MigrationType::Simple,
            Cow::Borrowed("SELECT 1"),
            false,
        )
    }

    async fn set(versions: &[i64]) -> Migrator {
        Migrator::new(Listed(versions.iter().copied().map(version).collect()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn both_dialects_hold_every_shared_migration_in_version_order() {
        let shared = sqlx::migrate!("../migrations/shared");
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let all = migrator(dialect, None).await.unwrap();
            let versions: Vec<i64> = all.iter().map(|m| m.version).collect();
            assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
            for migration in shared.iter() {
                assert!(all.version_exists(migration.version), "{dialect:?}");
            }
            let old = migrator(dialect, Some(3)).await.unwrap();
            assert_eq!(old.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2, 3]);
            let listed: Vec<i64> = listed(dialect, None)
                .unwrap()
                .iter()
                .map(|m| m.version)
                .collect();
            assert_eq!(listed, versions, "{dialect:?}");
        }
    }

    #[tokio::test]
    async fn a_version_in_both_sets_is_refused() {
        let refused = merged(&set(&[3, 5]).await, &set(&[1, 5]).await).unwrap_err();
        assert!(refused.to_string().contains("migration 5"), "{refused}");
        let fine = merged(&set(&[3]).await, &set(&[1, 5]).await).unwrap();
        assert_eq!(
            fine.iter().map(|m| m.version).collect::<Vec<_>>(),
            [1, 3, 5]
        );
    }
}
