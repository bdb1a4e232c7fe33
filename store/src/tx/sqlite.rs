//! A transition on SQLite's one connection, locked: sqlx's worker thread hands the
//! connection over once ([`sqlx::sqlite::LockedSqliteHandle`]) and every statement of the
//! transition runs on the calling thread through `rusqlite` on the same handle, with its
//! statements prepared once and kept for the next transitions ([`SqliteStatements`]:
//! preparing them anew each time was a third of a short step's engine time).
//!
//! Invariants:
//! - The `rusqlite` view of the handle is used only while the lock is held; between
//!   sessions it sits in [`SqliteStatements`] with every statement reset (no read or write
//!   transaction of its own open), and it never closes the handle (sqlx owns it).
//! - The prepared statements are finalized before sqlx closes the connection: the pool
//!   never closes it while it lives (no idle timeout, no maximum lifetime), the store
//!   drops its [`SqliteStatements`] before its pool, and [`crate::Store::close`]
//!   finalizes them ([`SqliteStatements::finalize`]) before it closes the pool. SQLite's connection mutex
//!   (`serialized`) makes that drop, on whatever thread, safe beside sqlx's worker. A
//!   session that finds another handle than the statements were prepared on drops them
//!   and prepares anew: the old handle cannot have been freed with statements open
//!   (`sqlite3_close` refuses), so finalizing them is still sound.
//! - A session that began a transaction ends it before the lock is released: by
//!   [`Session::commit`], or by a `ROLLBACK` when dropped without one, so sqlx never gets
//!   the connection back inside a transaction it does not know of.
//! - `$N` placeholders are bound by their number (SQLite numbers parameters by first
//!   appearance), as sqlx's SQLite driver binds them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::types::ValueRef;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::LockedSqliteHandle;
use sqlx::Sqlite;

use super::{Arg, Statement};

/// How many distinct statements stay prepared: every statement the store runs, with room
/// for the few whose text varies (an `IN` list's length).
const PREPARED_STATEMENTS: usize = 512;

/// The transitions' statements, prepared on the pool's one SQLite connection and kept
/// between sessions (one per store and its clones; empty on PostgreSQL).
#[derive(Default)]
pub(crate) struct SqliteStatements {
    kept: Mutex<Option<Prepared>>,
    /// Set by [`SqliteStatements::finalize`]: sessions from then on finalize their
    /// statements when they end instead of keeping them.
    closing: AtomicBool,
}

impl SqliteStatements {
    /// Finalizes the kept statements, and from now on every session's own when it ends:
    /// before the pool is closed (which closes the connection, and SQLite refuses to close
    /// one with statements still prepared).
    pub(crate) fn finalize(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        drop(kept);
    }
}

impl std::fmt::Debug for SqliteStatements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStatements")
    }
}

/// A `rusqlite` view of one sqlx handle, with the statements prepared on it.
struct Prepared {
    /// The `sqlite3*` it was made of.
    handle: usize,
    conn: rusqlite::Connection,
}

/// The locked connection, for one transition or a few reads.
pub(crate) struct Session<'c> {
    /// `Some` until dropped, when it goes back to `statements`.
    prepared: Option<Prepared>,
    statements: &'c Arc<SqliteStatements>,
    /// Whether a transaction is open (rolled back on drop).
    in_transaction: bool,
    _lock: LockedSqliteHandle<'c>,
}

impl<'c> Session<'c> {
    async fn lock(
        conn: &'c mut PoolConnection<Sqlite>,
        statements: &'c Arc<SqliteStatements>,
    ) -> anyhow::Result<Session<'c>> {
        let mut lock = conn
            .lock_handle()
            .await
            .context("locking the SQLite connection")?;
        let handle = lock.as_raw_handle();
        let kept = statements
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let prepared = match kept {
            Some(prepared) if prepared.handle == handle.as_ptr() as usize => prepared,
            // None yet, or the pool's connection was replaced: dropped (finalized) here.
            _ => {
                // The one unsafe call of the store.
                // SAFETY: the handle is valid and used by no one else while `lock` is
                // held; the connection made of it is used only while a lock on the same
                // handle is held (it is kept in `statements` between sessions, checked
                // against the handle above), is dropped before the pool closes the handle
                // (module invariants), and, made by `from_handle`, never closes it.
                #[allow(unsafe_code)]
                let conn = unsafe { rusqlite::Connection::from_handle(handle.as_ptr()) }
                    .context("using the locked SQLite connection")?;
                conn.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
                Prepared {
                    handle: handle.as_ptr() as usize,
                    conn,
                }
            }
        };
        Ok(Session {
            prepared: Some(prepared),
            statements,
            in_transaction: false,
            _lock: lock,
        })
    }

    fn conn(&self) -> &rusqlite::Connection {
        &self
            .prepared
            .as_ref()
            .expect("a session's connection, until dropped")
            .conn
    }

    /// Locks the connection and opens a transaction on it.
    pub(crate) async fn begin(
        conn: &'c mut PoolConnection<Sqlite>,
        statements: &'c Arc<SqliteStatements>,
    ) -> anyhow::Result<Self> {
        let mut session = Session::lock(conn, statements).await?;
        session.conn().execute_batch("BEGIN").context("BEGIN")?;
        session.in_transaction = true;
        Ok(session)
    }

    /// Locks the connection for statements that each commit on their own.
    pub(crate) async fn autocommit(
        conn: &'c mut PoolConnection<Sqlite>,
        statements: &'c Arc<SqliteStatements>,
    ) -> anyhow::Result<Self> {
        Session::lock(conn, statements).await
    }

    pub(crate) fn commit(mut self) -> anyhow::Result<()> {
        if self.in_transaction {
            self.conn().execute_batch("COMMIT").context("COMMIT")?;
            self.in_transaction = false;
        }
        Ok(())
    }

    /// The statement, prepared once for every session, with its arguments bound.
    fn prepare(&self, statement: &Statement<'_>) -> anyhow::Result<rusqlite::CachedStatement<'_>> {
        let mut prepared = self.conn().prepare_cached(statement.sql_for_sqlite())?;
        for index in 1..=prepared.parameter_count() {
            let name = prepared.parameter_name(index).unwrap_or("?");
            let number: usize = name
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("placeholder {name}: only $N is bound"))?;
            let arg = statement
                .args
                .get(number.wrapping_sub(1))
                .with_context(|| format!("no argument bound for {name}"))?;
            match arg {
                Arg::Int(value) => prepared.raw_bind_parameter(index, value)?,
                Arg::Real(value) => prepared.raw_bind_parameter(index, value)?,
                Arg::Text(value) => prepared.raw_bind_parameter(index, value.as_deref())?,
                Arg::Bool(value) => prepared.raw_bind_parameter(index, value)?,
                Arg::Bytes(value) => prepared.raw_bind_parameter(index, value)?,
                Arg::TextSet(values) => {
                    prepared.raw_bind_parameter(index, serde_json::to_string(values)?)?
                }
                Arg::StrSet(values) => {
                    prepared.raw_bind_parameter(index, serde_json::to_string(values)?)?
                }
                Arg::IntSet(values) => {
                    prepared.raw_bind_parameter(index, serde_json::to_string(values)?)?
                }
            }
        }
        Ok(prepared)
    }

    pub(crate) fn execute(&self, statement: &Statement<'_>) -> anyhow::Result<u64> {
        let mut prepared = self.prepare(statement)?;
        let mut rows = prepared.raw_query();
        // Stepped to the end: a statement that returns rows runs whole all the same.
        while rows.next()?.is_some() {}
        Ok(self.conn().changes())
    }

    /// Every row, decoded by column name.
    pub(crate) fn rows<T: DeserializeOwned>(
        &self,
        statement: &Statement<'_>,
    ) -> anyhow::Result<Vec<T>> {
        let mut prepared = self.prepare(statement)?;
        let names: Vec<String> = prepared
            .column_names()
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut rows = prepared.raw_query();
        let mut decoded = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..names.len())
                .map(|i| row.get_ref(i))
                .collect::<Result<Vec<_>, _>>()?;
            decoded.push(T::deserialize(RowDeserializer {
                names: &names,
                values: &values,
            })?);
        }
        Ok(decoded)
    }

    /// The first column of every row.
    pub(crate) fn first_columns<T: DeserializeOwned>(
        &self,
        statement: &Statement<'_>,
    ) -> anyhow::Result<Vec<T>> {
        let mut prepared = self.prepare(statement)?;
        let mut rows = prepared.raw_query();
        let mut decoded = Vec::new();
        while let Some(row) = rows.next()? {
            decoded.push(T::deserialize(ValueDeserializer(row.get_ref(0)?))?);
        }
        Ok(decoded)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.in_transaction {
            if let Err(error) = self.conn().execute_batch("ROLLBACK") {
                tracing::error!("rolling back an unfinished SQLite transaction: {error}");
            }
        }
        // Kept for the next session, or finalized when the pool is closing — either way
        // before the lock (a later field) is released.
        let prepared = self.prepared.take();
        if self.statements.closing.load(Ordering::SeqCst) {
            drop(prepared);
        } else {
            *self
                .statements
                .kept
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = prepared;
        }
    }
}

/// Why a row did not decode.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DecodeError(String);

impl de::Error for DecodeError {
    fn custom<M: std::fmt::Display>(message: M) -> Self {
        DecodeError(message.to_string())
    }
}

/// A row as a map of column names to values (structs) or a sequence (tuples).
struct RowDeserializer<'r> {
    names: &'r [String],
    values: &'r [ValueRef<'r>],
}

impl<'de> de::Deserializer<'de> for RowDeserializer<'_> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let entries = self
            .names
            .iter()
            .map(|name| name.as_str())
            .zip(self.values.iter().copied().map(ValueDeserializer));
        visitor.visit_map(de::value::MapDeserializer::new(entries))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let values = self.values.iter().copied().map(ValueDeserializer);
        visitor.visit_seq(de::value::SeqDeserializer::new(values))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct tuple_struct enum identifier ignored_any
    }
}

/// One column's value. SQLite has no boolean: an integer decodes as one (0 is false).
#[derive(Clone, Copy)]
struct ValueDeserializer<'r>(ValueRef<'r>);

impl<'de> IntoDeserializer<'de, DecodeError> for ValueDeserializer<'_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'_> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            ValueRef::Null => visitor.visit_unit(),
            ValueRef::Integer(value) => visitor.visit_i64(value),
            ValueRef::Real(value) => visitor.visit_f64(value),
            ValueRef::Text(text) => match std::str::from_utf8(text) {
                Ok(text) => visitor.visit_str(text),
                Err(_) => Err(de::Error::custom("a text column that is not UTF-8")),
            },
            ValueRef::Blob(bytes) => visitor.visit_bytes(bytes),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            ValueRef::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            ValueRef::Integer(value) => visitor.visit_bool(value != 0),
            _ => self.deserialize_any(visitor),
        }
    }

    /// A unit variant from its text (the statuses).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match self.0 {
            ValueRef::Text(text) => match std::str::from_utf8(text) {
                Ok(text) => visitor.visit_enum(text.into_deserializer()),
                Err(_) => Err(de::Error::custom("a text column that is not UTF-8")),
            },
            _ => self.deserialize_any(visitor),
        }
    }

    /// A blob as a sequence of bytes (a `Vec<u8>`).
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            ValueRef::Blob(bytes) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(bytes.iter().copied()))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct tuple tuple_struct map struct identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{Conn, Statement};
    use crate::Store;

    /// The handle the kept statements were prepared on, if any are kept.
    fn kept_handle(store: &Store) -> Option<usize> {
        let kept = store.sqlite_statements.kept.lock().unwrap();
        kept.as_ref().map(|prepared| prepared.handle)
    }

    /// A transition of one statement, which leaves it prepared.
    async fn one_transition(store: &Store) {
        let mut conn = Conn::acquire(store).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let _: Option<i64> = tx
            .scalar(Statement::new("SELECT count(*) FROM runs"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn statements_stay_prepared_across_transitions_on_the_same_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let statement = || Statement::new("SELECT CAST($1 AS BIGINT) * 2").bind(21);
        let mut handles = Vec::new();
        for _ in 0..3 {
            let mut conn = Conn::acquire(&store).await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            let doubled: Option<i64> = tx.scalar(statement()).await.unwrap();
            assert_eq!(doubled, Some(42));
            tx.commit().await.unwrap();
            drop(conn);
            handles.push(kept_handle(&store).expect("statements kept after a transition"));
        }
        assert!(handles.windows(2).all(|w| w[0] == w[1]), "{handles:?}");
        // Kept between sessions, the statement is reset: sqlx's own statements on the
        // connection write freely (an unreset read would hold a read transaction open).
        let crate::Db::Sqlite(pool) = &store.db else {
            unreachable!("open_data_dir opens SQLite")
        };
        sqlx::query("CREATE TABLE t (n INTEGER)")
            .execute(pool)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn closing_the_store_finalizes_the_statements_so_the_connection_closes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        one_transition(&store).await;
        assert!(kept_handle(&store).is_some());
        // Closed while the store (and its kept statements) lives on.
        store.close().await;
        assert!(kept_handle(&store).is_none());
        let wal = dir.path().join("plue.db-wal");
        let deadline = Instant::now() + Duration::from_secs(10);
        while wal.exists() {
            assert!(Instant::now() < deadline, "the connection was not closed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_last_store_dropped_finalizes_the_statements_so_the_connection_closes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let wal = dir.path().join("plue.db-wal");
        let clone = store.clone();
        one_transition(&clone).await;
        drop(clone);
        assert!(kept_handle(&store).is_some());
        assert!(wal.exists(), "WAL mode keeps {} while open", wal.display());
        drop(store);
        // sqlx closes the handle on its worker thread; SQLite then checkpoints and removes
        // the WAL. With a statement still prepared it would refuse to close (SQLITE_BUSY:
        // sqlx panics there, and the WAL stays).
        let deadline = Instant::now() + Duration::from_secs(10);
        while wal.exists() {
            assert!(
                Instant::now() < deadline,
                "the connection was not closed: {} is still there",
                wal.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
