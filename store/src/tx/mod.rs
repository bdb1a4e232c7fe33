//! The store's one way to speak SQL: a [`Statement`] (its SQL and its bound arguments) run
//! through a [`Tx`] — a transaction, or a connection whose statements each commit on their
//! own ([`Conn::autocommit`]; `autocommit.rs` gives the lone reads and writes their
//! shorthand, `Store::row`, `Store::execute`, ...). A state transition is written once as
//! an ordinary Rust function over [`Tx`] and runs on SQLite and PostgreSQL alike.
//!
//! A transition takes a connection ([`Conn::acquire`]) and opens its transaction on it
//! ([`Conn::begin`]). On PostgreSQL that is an sqlx transaction: a round trip a statement,
//! each planned once per connection (generic plans, set when the pool opens the connection:
//! `postgres_pool::PLANNING`). On SQLite the store's one connection, a `rusqlite` one, is
//! locked for the whole transition ([`sqlite`]) and every statement runs on the calling
//! thread, prepared once for every later use.
//!
//! What differs between the backends lives here, in one place per difference:
//! - SQL text that must differ (the claim: `FOR UPDATE SKIP LOCKED` on PostgreSQL) is a
//!   [`Statement::per_backend`], side by side in the statement's own definition, or, for a
//!   statement long enough to want names, a [`Statement::named_per_backend`] ([`named`]);
//! - a set of values ([`Arg::TextSet`], [`Arg::IntSet`]) is an array on PostgreSQL and a
//!   JSON array (read with `json_each`) on SQLite.
//!
//! Invariants:
//! - Values are always bound, never spliced into SQL; placeholders are `$N` on both
//!   backends, bound by their number on SQLite too.
//! - One binder and one row decoder per backend: rows decode through `sqlx::FromRow` on
//!   PostgreSQL and through serde, by column name, on SQLite ([`FromEitherRow`],
//!   [`EitherScalar`]): a row type that does not decode on one of them fails to build.
//! - A [`Tx`] dropped without [`Tx::commit`] rolls back (on SQLite before the connection
//!   is unlocked): a transition that returns early with an error (or a repeat that must
//!   write nothing) leaves nothing written.
//! - Nothing acquires a second connection while a [`Conn`] is held: SQLite has one.

mod arg;
mod autocommit;
mod named;
mod sqlite;

pub(crate) use arg::Arg;
pub(crate) use named::NamedSql;
pub(crate) use sqlite::SqliteDb;

use anyhow::Context;
use serde::de::DeserializeOwned;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row};

use super::{Db, Store};

/// A connection of the store's pool, held for one transition (or a few reads).
pub(crate) enum Conn {
    /// SQLite's one connection, locked.
    Sqlite(sqlite::SqliteConn),
    Postgres(PoolConnection<Postgres>),
}

impl Conn {
    pub(crate) async fn acquire(store: &Store) -> anyhow::Result<Conn> {
        Ok(match &store.db {
            Db::Sqlite(db) => Conn::Sqlite(db.lock().await?),
            Db::Postgres(pool) => Conn::Postgres(pool.acquire().await.context("a connection")?),
        })
    }

    /// Opens a transaction.
    pub(crate) async fn begin(&mut self) -> anyhow::Result<Tx<'_>> {
        Ok(match self {
            Conn::Sqlite(locked) => Tx::Sqlite(sqlite::Session::begin(locked)?),
            Conn::Postgres(conn) => Tx::Postgres(
                sqlx::Connection::begin(&mut **conn)
                    .await
                    .context("BEGIN")?,
            ),
        })
    }

    /// The connection outside any transaction: each statement commits on its own (reads
    /// that need no transaction).
    pub(crate) async fn autocommit(&mut self) -> anyhow::Result<Tx<'_>> {
        Ok(match self {
            Conn::Sqlite(locked) => Tx::Sqlite(sqlite::Session::autocommit(locked)),
            Conn::Postgres(conn) => Tx::PostgresAutocommit(conn),
        })
    }
}

/// An open transaction on the store's database, or ([`Conn::autocommit`]) a connection
/// whose statements each commit on their own.
pub(crate) enum Tx<'c> {
    Sqlite(sqlite::Session<'c>),
    Postgres(sqlx::Transaction<'c, Postgres>),
    PostgresAutocommit(&'c mut PoolConnection<Postgres>),
}

/// A statement's SQL: the same on both backends, or one text for each, or one text for each
/// with named parameters.
#[derive(Debug, Clone, Copy)]
enum Sql<'a> {
    Same(&'a str),
    PerBackend {
        sqlite: &'a str,
        postgres: &'a str,
    },
    Named {
        sqlite: &'static NamedSql,
        postgres: &'static NamedSql,
    },
}

/// SQL and its bound arguments, ready to run on either backend.
#[derive(Debug, Clone)]
#[must_use = "a statement does nothing until a transaction runs it"]
pub(crate) struct Statement<'a> {
    sql: Sql<'a>,
    /// `$1`, `$2`, ... in order.
    args: Vec<Arg<'a>>,
    /// A named statement's values by name, put in its backend's order when it runs.
    named: Vec<(&'static str, Arg<'a>)>,
}

impl<'a> Statement<'a> {
    /// A statement written once for both backends.
    pub(crate) fn new(sql: &'a str) -> Self {
        Statement {
            sql: Sql::Same(sql),
            args: Vec::new(),
            named: Vec::new(),
        }
    }

    /// A statement whose SQL must differ between the backends (same arguments).
    pub(crate) fn per_backend(sqlite: &'a str, postgres: &'a str) -> Self {
        Statement {
            sql: Sql::PerBackend { sqlite, postgres },
            args: Vec::new(),
            named: Vec::new(),
        }
    }

    /// A statement with named parameters ([`NamedSql`]), the same on both backends; its
    /// values are [`Statement::set`] by name.
    pub(crate) fn named(sql: &'static NamedSql) -> Self {
        Statement::named_per_backend(sql, sql)
    }

    /// A statement with named parameters, one text per backend (each binds the names its
    /// text has).
    pub(crate) fn named_per_backend(
        sqlite: &'static NamedSql,
        postgres: &'static NamedSql,
    ) -> Self {
        Statement {
            sql: Sql::Named { sqlite, postgres },
            args: Vec::new(),
            named: Vec::new(),
        }
    }

    /// Binds the next `$N`.
    pub(crate) fn bind(mut self, value: impl Into<Arg<'a>>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Sets the value of `:name` (a named statement's; bound only where its text has it).
    pub(crate) fn set(mut self, name: &'static str, value: impl Into<Arg<'a>>) -> Self {
        self.named.push((name, value.into()));
        self
    }

    /// The statement as `postgres` (or SQLite) runs it: a named statement's values put in
    /// the order its text numbers them, each name's value required.
    fn for_backend(self, postgres: bool) -> anyhow::Result<Statement<'a>> {
        let Sql::Named {
            sqlite,
            postgres: postgres_sql,
        } = self.sql
        else {
            return Ok(self);
        };
        let named = if postgres { postgres_sql } else { sqlite };
        let args = named
            .names()
            .iter()
            .map(|name| {
                self.named
                    .iter()
                    .find(|(set, _)| set == name)
                    .map(|(_, value)| value.clone())
                    .with_context(|| format!("no value set for :{name} in {}", named.sql()))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Statement {
            sql: Sql::Same(named.sql()),
            args,
            named: Vec::new(),
        })
    }

    fn sql_for_sqlite(&self) -> &'a str {
        match self.sql {
            Sql::Same(sql) | Sql::PerBackend { sqlite: sql, .. } => sql,
            Sql::Named { sqlite, .. } => sqlite.sql(),
        }
    }

    pub(super) fn sql_for_postgres(&self) -> &'a str {
        match self.sql {
            Sql::Same(sql) | Sql::PerBackend { postgres: sql, .. } => sql,
            Sql::Named { postgres, .. } => postgres.sql(),
        }
    }

    /// The statement's first words, for an error's context.
    fn gist(&self) -> String {
        Self::gist_of(self.sql_for_postgres())
    }

    /// `sql`'s first words.
    pub(super) fn gist_of(sql: &str) -> String {
        let words: Vec<&str> = sql.split_whitespace().take(6).collect();
        words.join(" ")
    }
}

/// A row type both backends decode: `#[derive(sqlx::FromRow, serde::Deserialize)]` (the
/// locked SQLite connection decodes rows through serde, by column name).
pub(crate) trait FromEitherRow:
    for<'r> sqlx::FromRow<'r, PgRow> + DeserializeOwned + Send + Unpin
{
}

impl<T> FromEitherRow for T where
    T: for<'r> sqlx::FromRow<'r, PgRow> + DeserializeOwned + Send + Unpin
{
}

/// A column type both backends decode.
pub(crate) trait EitherScalar:
    for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + DeserializeOwned + Send + Unpin
{
}

impl<T> EitherScalar for T where
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + DeserializeOwned + Send + Unpin
{
}

fn postgres_query<'q>(
    statement: &'q Statement<'_>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let mut query = sqlx::query(statement.sql_for_postgres());
    for arg in &statement.args {
        query = match arg {
            Arg::Int(value) => query.bind(*value),
            Arg::Real(value) => query.bind(*value),
            Arg::Text(value) => query.bind(value.as_deref()),
            Arg::Bool(value) => query.bind(*value),
            Arg::Bytes(value) => query.bind(*value),
            Arg::TextSet(values) => query.bind(&values[..]),
            Arg::IntSet(values) => query.bind(*values),
            Arg::StrSet(values) => query.bind(*values),
        };
    }
    query
}

impl Tx<'_> {
    /// Commits a transaction (an autocommit connection has nothing left to commit).
    pub(crate) async fn commit(self) -> anyhow::Result<()> {
        match self {
            Tx::Sqlite(session) => session.commit(),
            Tx::Postgres(tx) => tx.commit().await.context("COMMIT"),
            Tx::PostgresAutocommit(_) => Ok(()),
        }
    }

    /// Rolls a transaction back (what dropping it does, said where it is meant).
    pub(crate) async fn rollback(self) -> anyhow::Result<()> {
        match self {
            Tx::Sqlite(session) => drop(session),
            Tx::Postgres(tx) => tx.rollback().await.context("ROLLBACK")?,
            Tx::PostgresAutocommit(_) => {}
        }
        Ok(())
    }

    /// Whether this is PostgreSQL's: for the few transitions that take fewer statements
    /// there (a data-modifying `WITH`, which SQLite lacks), with the same outcome.
    pub(crate) fn is_postgres(&self) -> bool {
        !matches!(self, Tx::Sqlite(_))
    }

    /// Runs `statement`; how many rows it changed.
    pub(crate) async fn execute(&mut self, statement: Statement<'_>) -> anyhow::Result<u64> {
        let statement = statement.for_backend(self.is_postgres())?;
        let changed = match self {
            Tx::Sqlite(session) => session.execute(&statement),
            Tx::Postgres(tx) => postgres_query(&statement)
                .execute(&mut **tx)
                .await
                .map(|done| done.rows_affected())
                .map_err(anyhow::Error::from),
            Tx::PostgresAutocommit(conn) => postgres_query(&statement)
                .execute(&mut ***conn)
                .await
                .map(|done| done.rows_affected())
                .map_err(anyhow::Error::from),
        };
        changed.with_context(|| statement.gist())
    }

    async fn postgres_rows(&mut self, statement: &Statement<'_>) -> anyhow::Result<Vec<PgRow>> {
        let query = postgres_query(statement);
        Ok(match self {
            Tx::Sqlite(_) => unreachable!("called for PostgreSQL only"),
            Tx::Postgres(tx) => query.fetch_all(&mut **tx).await?,
            Tx::PostgresAutocommit(conn) => query.fetch_all(&mut ***conn).await?,
        })
    }

    /// Every row `statement` returns.
    pub(crate) async fn rows<T: FromEitherRow>(
        &mut self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Vec<T>> {
        let statement = statement.for_backend(self.is_postgres())?;
        let rows = match self {
            Tx::Sqlite(session) => session.rows(&statement),
            _ => self.postgres_rows(&statement).await.and_then(|rows| {
                rows.iter()
                    .map(|row| T::from_row(row).map_err(anyhow::Error::from))
                    .collect()
            }),
        };
        rows.with_context(|| statement.gist())
    }

    /// The first column of every row `statement` returns.
    pub(crate) async fn scalars<T: EitherScalar>(
        &mut self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Vec<T>> {
        let statement = statement.for_backend(self.is_postgres())?;
        let values = match self {
            Tx::Sqlite(session) => session.first_columns(&statement),
            _ => self.postgres_rows(&statement).await.and_then(|rows| {
                rows.iter()
                    .map(|row| row.try_get(0).map_err(anyhow::Error::from))
                    .collect()
            }),
        };
        values.with_context(|| statement.gist())
    }

    /// The row `statement` returns, if any (the first, if several).
    pub(crate) async fn row<T: FromEitherRow>(
        &mut self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Option<T>> {
        Ok(self.rows(statement).await?.into_iter().next())
    }

    /// The first column of the row `statement` returns, if any (the first, if several).
    pub(crate) async fn scalar<T: EitherScalar>(
        &mut self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Option<T>> {
        Ok(self.scalars(statement).await?.into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::stores;
    use plue_types::status::StepStatus;

    #[derive(Debug, PartialEq, sqlx::FromRow, serde::Deserialize)]
    struct Pair {
        n: i64,
        t: Option<String>,
    }

    #[tokio::test]
    async fn one_statement_binds_and_decodes_alike_on_both_backends() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let mut conn = Conn::acquire(&store).await.unwrap();
            let mut tx = conn.begin().await.unwrap();
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

    #[derive(Debug, PartialEq, sqlx::FromRow, serde::Deserialize)]
    struct Typed {
        flag: bool,
        #[sqlx(try_from = "String")]
        status: StepStatus,
        missing: Option<i64>,
    }

    #[tokio::test]
    async fn placeholders_bind_by_number_and_columns_decode_by_name() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let mut conn = Conn::acquire(&store).await.unwrap();
            let mut tx = conn.autocommit().await.unwrap();
            // `$2` appears first: SQLite would number it 1; it is bound as the second.
            let difference: Option<i64> = tx
                .scalar(
                    Statement::new("SELECT CAST($2 AS BIGINT) - CAST($1 AS BIGINT)")
                        .bind(1)
                        .bind(10),
                )
                .await
                .unwrap();
            assert_eq!(difference, Some(9), "{backend}");
            let typed: Option<Typed> = tx
                .row(
                    Statement::new(
                        "SELECT CAST(NULL AS BIGINT) AS missing, $1 AS status, \
                         (1 = 1) AS flag",
                    )
                    .bind(StepStatus::Succeeded),
                )
                .await
                .unwrap();
            assert_eq!(
                typed,
                Some(Typed {
                    flag: true,
                    status: StepStatus::Succeeded,
                    missing: None
                }),
                "{backend}"
            );
            let unknown = tx
                .row::<Typed>(Statement::new(
                    "SELECT NULL AS missing, 'sleeping' AS status, (1 = 0) AS flag",
                ))
                .await;
            assert!(unknown.is_err(), "{backend}: an unknown status is an error");
        }
    }

    /// Every connection of a PostgreSQL store plans with generic plans and by index, in a
    /// transaction and out of one — the migrations' connection too, once they are done.
    #[tokio::test]
    async fn every_postgres_connection_plans_generically_and_by_index() {
        for (store, _dir) in stores().await {
            let mut first = Conn::acquire(&store).await.unwrap();
            if !first.begin().await.unwrap().is_postgres() {
                continue;
            }
            // All of the pool's connections at once, so each is a different one.
            let mut conns = vec![first];
            for _ in 1..crate::testing::TEST_POOL_CONNECTIONS {
                conns.push(Conn::acquire(&store).await.unwrap());
            }
            let mode = crate::postgres_pool::PLANNING_NOW;
            for conn in &mut conns {
                let mut tx = conn.begin().await.unwrap();
                let inside: Option<String> = tx.scalar(Statement::new(mode)).await.unwrap();
                assert_eq!(inside.as_deref(), Some("force_generic_plan off"));
                tx.commit().await.unwrap();
                let mut tx = conn.autocommit().await.unwrap();
                let outside: Option<String> = tx.scalar(Statement::new(mode)).await.unwrap();
                assert_eq!(outside.as_deref(), Some("force_generic_plan off"));
            }
        }
    }

    /// The take of the change list's shape (`id = ANY(<ids>)`) on a fresh store, whose
    /// `step_runs` PostgreSQL has never analyzed: with PostgreSQL's defaults (the
    /// migrations' planning) the planner scans the table, on the store's connections it
    /// finds the rows by key, however the table grows afterwards.
    #[tokio::test]
    async fn a_store_connection_finds_rows_by_key_in_a_table_never_analyzed() {
        let lookup = "EXPLAIN SELECT id, status FROM step_runs \
                      WHERE id = ANY(ARRAY(SELECT generate_series(1, 20)::BIGINT))";
        for (store, _dir) in stores().await {
            let mut conn = Conn::acquire(&store).await.unwrap();
            if !conn.begin().await.unwrap().is_postgres() {
                continue;
            }
            let plan = |rows: Vec<String>| rows.join("\n");
            let mut tx = conn.begin().await.unwrap();
            for default in [
                "SET LOCAL plan_cache_mode = auto",
                "SET LOCAL enable_seqscan = on",
            ] {
                tx.execute(Statement::new(default)).await.unwrap();
            }
            let defaults: Vec<String> = tx.scalars(Statement::new(lookup)).await.unwrap();
            assert!(
                plan(defaults.clone()).contains("Seq Scan on step_runs"),
                "the case this guards against is no longer the planner's choice: {defaults:?}"
            );
            drop(tx);
            let store_planned: Vec<String> = conn
                .autocommit()
                .await
                .unwrap()
                .scalars(Statement::new(lookup))
                .await
                .unwrap();
            let store_planned = plan(store_planned);
            assert!(
                !store_planned.contains("Seq Scan on step_runs"),
                "{store_planned}"
            );
            assert!(store_planned.contains("step_runs_pkey"), "{store_planned}");
        }
    }

    #[tokio::test]
    async fn a_transaction_dropped_uncommitted_leaves_nothing_written() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let count = "SELECT CAST(COUNT(*) AS BIGINT) FROM concurrency_groups";
            let mut conn = Conn::acquire(&store).await.unwrap();
            let mut tx = conn.begin().await.unwrap();
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
            let mut tx = conn.begin().await.unwrap();
            let after: Option<i64> = tx.scalar(Statement::new(count)).await.unwrap();
            assert_eq!(after, Some(0), "{backend}: rolled back");
        }
    }
}
