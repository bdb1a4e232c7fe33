//! Single statements outside any transaction: the store's reads and lone writes, each on a
//! connection held for that statement alone, through the same [`Tx`] (and so
//! the same binders and row decoders) as the transitions.
//!
//! Invariant: nothing here holds a connection past its statement, so a read never waits
//! for another read of the same caller (SQLite has one connection).

use anyhow::Context;

use super::{Conn, EitherScalar, FromEitherRow, Statement};
use crate::Store;

/// What a statement that must return a row says when it returned none. Made only then:
/// an error is not free (it captures a backtrace when `RUST_BACKTRACE` is set).
fn none_returned(sql: &str) -> anyhow::Error {
    anyhow::anyhow!("{}: no row returned", Statement::gist_of(sql))
}

impl Store {
    /// Runs `statement` on its own: how many rows it changed.
    pub(crate) async fn execute(&self, statement: Statement<'_>) -> anyhow::Result<u64> {
        let mut conn = Conn::acquire(self).await.context("a connection")?;
        let mut tx = conn.autocommit().await?;
        tx.execute(statement).await
    }

    /// Every row `statement` returns.
    pub(crate) async fn rows<T: FromEitherRow>(
        &self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Vec<T>> {
        let mut conn = Conn::acquire(self).await.context("a connection")?;
        let mut tx = conn.autocommit().await?;
        tx.rows(statement).await
    }

    /// The row `statement` returns, if any (the first, if several).
    pub(crate) async fn row<T: FromEitherRow>(
        &self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Option<T>> {
        let mut conn = Conn::acquire(self).await.context("a connection")?;
        let mut tx = conn.autocommit().await?;
        tx.row(statement).await
    }

    /// The row `statement` must return (the first, if several).
    pub(crate) async fn one_row<T: FromEitherRow>(
        &self,
        statement: Statement<'_>,
    ) -> anyhow::Result<T> {
        let sql = statement.sql_for_postgres();
        self.row(statement).await?.ok_or_else(|| none_returned(sql))
    }

    /// The first column of every row `statement` returns.
    pub(crate) async fn scalars<T: EitherScalar>(
        &self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Vec<T>> {
        let mut conn = Conn::acquire(self).await.context("a connection")?;
        let mut tx = conn.autocommit().await?;
        tx.scalars(statement).await
    }

    /// The first column of the row `statement` returns, if any.
    pub(crate) async fn scalar<T: EitherScalar>(
        &self,
        statement: Statement<'_>,
    ) -> anyhow::Result<Option<T>> {
        let mut conn = Conn::acquire(self).await.context("a connection")?;
        let mut tx = conn.autocommit().await?;
        tx.scalar(statement).await
    }

    /// The first column of the row `statement` must return.
    pub(crate) async fn one_scalar<T: EitherScalar>(
        &self,
        statement: Statement<'_>,
    ) -> anyhow::Result<T> {
        let sql = statement.sql_for_postgres();
        self.scalar(statement)
            .await?
            .ok_or_else(|| none_returned(sql))
    }
}
