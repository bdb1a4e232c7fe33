//! One transaction on either backend, so that a state transition is written once as an
//! ordinary Rust function over [`Tx`] and runs on SQLite and PostgreSQL alike.
//!
//! A statement is its SQL and its arguments ([`Statement`]); [`Tx`] binds the arguments
//! to the backend it holds and runs it. What differs between the backends lives here, in
//! one place per difference:
//! - SQL text that must differ (the claim: `FOR UPDATE SKIP LOCKED` on PostgreSQL) is a
//!   [`Statement::per_backend`], side by side in the statement's own definition;
//! - a set of texts ([`Arg::TextSet`]) is a `text[]` on PostgreSQL and a JSON array (read
//!   with `json_each`) on SQLite.
//!
//! Invariants:
//! - Values are always bound, never spliced into SQL; placeholders are `$N` on both
//!   backends (sqlx's SQLite driver numbers `$N` as PostgreSQL does).
//! - A [`Tx`] dropped without [`Tx::commit`] rolls back: a transition that returns early
//!   with an error (or a repeat that must write nothing) leaves nothing written.
//! - Rows decode through `sqlx::FromRow` / `sqlx::Decode` for both backends at once
//!   ([`FromEitherRow`], [`EitherScalar`]): a row type or a column type that does not
//!   decode on one of them fails to build.

use anyhow::Context;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, Row, Sqlite};

use super::Db;

/// An open transaction on the store's database, or ([`Tx::autocommit`]) a connection
/// whose statements each commit on their own, for reads that need no transaction.
pub(crate) enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
    SqliteAutocommit(sqlx::pool::PoolConnection<Sqlite>),
    PostgresAutocommit(sqlx::pool::PoolConnection<Postgres>),
}

/// The connection a statement runs on.
enum Connection<'c> {
    Sqlite(&'c mut sqlx::SqliteConnection),
    Postgres(&'c mut sqlx::PgConnection),
}

/// One argument of a statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Bool(bool),
    /// A set of texts to match with `= ANY($N)` on PostgreSQL and
    /// `IN (SELECT value FROM json_each($N))` on SQLite.
    TextSet(&'a [String]),
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Arg::Int(Some(value))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(value: Option<i64>) -> Self {
        Arg::Int(value)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(Some(value))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(value: &'a String) -> Self {
        Arg::Text(Some(value))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(value: &'a Option<String>) -> Self {
        Arg::Text(value.as_deref())
    }
}

impl From<bool> for Arg<'_> {
    fn from(value: bool) -> Self {
        Arg::Bool(value)
    }
}

/// A statement's SQL: the same on both backends, or one text for each.
#[derive(Debug, Clone, Copy)]
enum Sql<'a> {
    Same(&'a str),
    PerBackend { sqlite: &'a str, postgres: &'a str },
}

/// SQL and its bound arguments, ready to run on either backend.
#[derive(Debug, Clone)]
#[must_use = "a statement does nothing until a transaction runs it"]
pub(crate) struct Statement<'a> {
    sql: Sql<'a>,
    args: Vec<Arg<'a>>,
}

impl<'a> Statement<'a> {
    /// A statement written once for both backends.
    pub(crate) fn new(sql: &'a str) -> Self {
        Statement {
            sql: Sql::Same(sql),
            args: Vec::new(),
        }
    }

    /// A statement whose SQL must differ between the backends (same arguments).
    pub(crate) fn per_backend(sqlite: &'a str, postgres: &'a str) -> Self {
        Statement {
            sql: Sql::PerBackend { sqlite, postgres },
            args: Vec::new(),
        }
    }

    /// Binds the next `$N`.
    pub(crate) fn bind(mut self, value: impl Into<Arg<'a>>) -> Self {
        self.args.push(value.into());
        self
    }

    fn sql_for_sqlite(&self) -> &'a str {
        match self.sql {
            Sql::Same(sql) | Sql::PerBackend { sqlite: sql, .. } => sql,
        }
    }

    fn sql_for_postgres(&self) -> &'a str {
        match self.sql {
            Sql::Same(sql) | Sql::PerBackend { postgres: sql, .. } => sql,
        }
    }

    /// The statement's first words, for an error's context.
    fn gist(&self) -> String {
        let words: Vec<&str> = self.sql_for_postgres().split_whitespace().take(6).collect();
        words.join(" ")
    }
}

/// A row type both backends decode (`#[derive(sqlx::FromRow)]` gives both).
pub(crate) trait FromEitherRow:
    for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> FromEitherRow for T where
    T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

/// A column type both backends decode.
pub(crate) trait EitherScalar:
    for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
    + for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
    + Send
    + Unpin
{
}

impl<T> EitherScalar for T where
    T: for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
        + Send
        + Unpin
{
}

/// A row as one backend returned it.
enum AnyRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl AnyRow {
    fn decode<T: FromEitherRow>(&self) -> sqlx::Result<T> {
        match self {
            AnyRow::Sqlite(row) => T::from_row(row),
            AnyRow::Postgres(row) => T::from_row(row),
        }
    }

    fn first_column<T: EitherScalar>(&self) -> sqlx::Result<T> {
        match self {
            AnyRow::Sqlite(row) => row.try_get(0),
            AnyRow::Postgres(row) => row.try_get(0),
        }
    }
}

fn sqlite_query<'q>(
    statement: &Statement<'q>,
) -> anyhow::Result<sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>> {
    let mut query = sqlx::query(statement.sql_for_sqlite());
    for arg in &statement.args {
        query = match *arg {
            Arg::Int(value) => query.bind(value),
            Arg::Text(value) => query.bind(value),
            Arg::Bool(value) => query.bind(value),
            Arg::TextSet(values) => query.bind(serde_json::to_string(values)?),
        };
    }
    Ok(query)
}

fn postgres_query<'q>(
    statement: &Statement<'q>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let mut query = sqlx::query(statement.sql_for_postgres());
    for arg in &statement.args {
        query = match *arg {
            Arg::Int(value) => query.bind(value),
            Arg::Text(value) => query.bind(value),
            Arg::Bool(value) => query.bind(value),
            Arg::TextSet(values) => query.bind(values),
        };
    }
    query
}

impl Tx {
    /// Opens a transaction on `db`.
    pub(crate) async fn begin(db: &Db) -> anyhow::Result<Tx> {
        Ok(match db {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin().await.context("BEGIN")?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await.context("BEGIN")?),
        })
    }

    /// A connection of `db` outside any transaction: each statement commits on its own.
    pub(crate) async fn autocommit(db: &Db) -> anyhow::Result<Tx> {
        Ok(match db {
            Db::Sqlite(pool) => Tx::SqliteAutocommit(pool.acquire().await.context("a connection")?),
            Db::Postgres(pool) => {
                Tx::PostgresAutocommit(pool.acquire().await.context("a connection")?)
            }
        })
    }

    /// Commits a transaction (an autocommit connection has nothing left to commit).
    pub(crate) async fn commit(self) -> anyhow::Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
            Tx::SqliteAutocommit(_) | Tx::PostgresAutocommit(_) => Ok(()),
        }
        .context("COMMIT")
    }

    fn connection(&mut self) -> Connection<'_> {
        match self {
            Tx::Sqlite(tx) => Connection::Sqlite(tx),
            Tx::Postgres(tx) => Connection::Postgres(tx),
            Tx::SqliteAutocommit(conn) => Connection::Sqlite(conn),
            Tx::PostgresAutocommit(conn) => Connection::Postgres(conn),
        }
    }

    /// Runs `statement`; how many rows it changed.
    pub(crate) async fn execute(&mut self, statement: Statement<'_>) -> anyhow::Result<u64> {
        let changed = match self.connection() {
            Connection::Sqlite(conn) => sqlite_query(&statement)?
                .execute(conn)
                .await
                .map(|done| done.rows_affected()),
            Connection::Postgres(conn) => postgres_query(&statement)
                .execute(conn)
                .await
                .map(|done| done.rows_affected()),
        };
        changed.with_context(|| statement.gist())
    }

    async fn fetch_optional(
        &mut self,
        statement: &Statement<'_>,
    ) -> anyhow::Result<Option<AnyRow>> {
        let row = match self.connection() {
            Connection::Sqlite(conn) => sqlite_query(statement)?
                .fetch_optional(conn)
                .await
                .map(|row| row.map(AnyRow::Sqlite)),
            Connection::Postgres(conn) => postgres_query(statement)
                .fetch_optional(conn)
                .await
                .map(|row| row.map(AnyRow::Postgres)),
        };
        row.with_context(|| statement.gist())
    }

    async fn fetch_all(&mut self, statement: &Statement<'_>) -> anyhow::Result<Vec<AnyRow>> {
        let rows = match self.connection() {
            Connection::Sqlite(conn) => sqlite_query(statement)?
                .fetch_all(conn)
                .await
                .map(|rows| rows.into_iter().map(AnyRow::Sqlite).collect()),
            Connection::Postgres(conn) => postgres_query(statement)
                .fetch_all(conn)
                .await
                .map(|rows| rows.into_iter().map(AnyRow::Postgres).collect()),
        };
        rows.with_context(|| statement.gist())
    }

    /// The row `statement` returns, if any.
    pub(crate) async fn row<T: FromEitherRow>(
        &mut self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Option<T>> {
        match self.fetch_optional(&statement).await? {
            Some(row) => Ok(Some(row.decode().with_context(|| statement.gist())?)),
            None => Ok(None),
        }
    }

    /// Every row `statement` returns.
    pub(crate) async fn rows<T: FromEitherRow>(
        &mut self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Vec<T>> {
        let rows = self.fetch_all(&statement).await?;
        rows.iter()
            .map(|row| row.decode().with_context(|| statement.gist()))
            .collect()
    }

    /// The first column of the row `statement` returns, if any.
    pub(crate) async fn scalar<T: EitherScalar>(
        &mut self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Option<T>> {
        match self.fetch_optional(&statement).await? {
            Some(row) => Ok(Some(row.first_column().with_context(|| statement.gist())?)),
            None => Ok(None),
        }
    }

    /// The first column of every row `statement` returns.
    pub(crate) async fn scalars<T: EitherScalar>(
        &mut self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Vec<T>> {
        let rows = self.fetch_all(&statement).await?;
        rows.iter()
            .map(|row| row.first_column().with_context(|| statement.gist()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::stores;

    #[derive(Debug, PartialEq, sqlx::FromRow)]
    struct Pair {
        n: i64,
        t: Option<String>,
    }

    #[tokio::test]
    async fn one_statement_binds_and_decodes_alike_on_both_backends() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let mut tx = Tx::begin(&store.db).await.unwrap();
            let pair: Option<Pair> = tx
                .row(
                    Statement::new("SELECT CAST($1 AS BIGINT) + 1 AS n, CAST($2 AS TEXT) AS t")
                        .bind(41)
                        .bind(None::<&str>),
                )
                .await
                .unwrap();
            assert_eq!(pair, Some(Pair { n: 42, t: None }), "{backend}");
            let sets = ["a".to_string(), "b".to_string()];
            let found: Vec<String> = tx
                .scalars(
                    Statement::per_backend(
                        "SELECT value FROM json_each($1) ORDER BY value",
                        "SELECT unnest($1::text[]) AS value ORDER BY value",
                    )
                    .bind(Arg::TextSet(&sets)),
                )
                .await
                .unwrap();
            assert_eq!(found, sets, "{backend}");
            let error = tx
                .execute(Statement::new("UPDATE no_such_table SET x = 1"))
                .await
                .unwrap_err();
            assert!(
                format!("{error:#}").contains("UPDATE no_such_table"),
                "{backend}: the statement is named: {error:#}"
            );
        }
    }

    #[tokio::test]
    async fn a_transaction_dropped_uncommitted_leaves_nothing_written() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let count = "SELECT CAST(COUNT(*) AS BIGINT) FROM concurrency_groups";
            let mut tx = Tx::begin(&store.db).await.unwrap();
            tx.execute(
                Statement::new("INSERT INTO concurrency_groups (scope, name) VALUES ($1, $2)")
                    .bind("s")
                    .bind("g"),
            )
            .await
            .unwrap();
            let inside: Option<i64> = tx.scalar(Statement::new(count)).await.unwrap();
            assert_eq!(inside, Some(1), "{backend}");
            drop(tx);
            let mut tx = Tx::begin(&store.db).await.unwrap();
            let after: Option<i64> = tx.scalar(Statement::new(count)).await.unwrap();
            assert_eq!(after, Some(0), "{backend}: rolled back");
        }
    }
}
