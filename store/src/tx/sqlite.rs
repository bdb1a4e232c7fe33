//! SQLite through one driver: the store's one connection is a `rusqlite::Connection`
//! behind an async mutex ([`SqliteDb`]). A transition or a read locks it
//! ([`SqliteDb::lock`]) and every statement then runs on the calling thread — no trip to
//! another thread per statement — prepared once and kept in the connection's statement
//! cache for every later use. Rows decode by column name through serde
//! ([`RowDeserializer`]), the one decoder of SQLite rows.
//!
//! Why one connection: SQLite has one writer at a time, and writers on several connections
//! wait for each other in SQLite's busy handler, which sleeps a millisecond or more each
//! time (most of a short step's cost). On one connection they queue in-process instead
//! (the mutex is fair: first come, first served); every statement is short and no
//! transaction waits on anything but the database.
//!
//! Invariants:
//! - A session that began a transaction ends it before the lock is released: by
//!   [`Session::commit`], or by a `ROLLBACK` when dropped without one.
//! - `$N` placeholders are bound by their number (SQLite numbers parameters by first
//!   appearance).
//! - Closed ([`SqliteDb::close`]) the connection is gone for every clone of the store: a
//!   later lock is an error, never a connection opened again behind the caller's back. The
//!   last clone dropped closes it too (which checkpoints the write-ahead log away).
//! - Nothing locks the connection while holding it (one connection: it would wait for
//!   itself; the lock gives up after 30 s with an error saying so).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rusqlite::types::ValueRef;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Arg, Statement};

/// How many distinct statements stay prepared: every statement the store runs, with room
/// for the few whose text varies (an `IN` list's length).
const PREPARED_STATEMENTS: usize = 512;

/// How long a lock waits for the connection (what sqlx's pool waited for its one).
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The store's SQLite database: its one connection (`None` once closed). Cheap to clone.
#[derive(Clone)]
pub(crate) struct SqliteDb {
    conn: Arc<Mutex<Option<rusqlite::Connection>>>,
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteDb")
    }
}

impl SqliteDb {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub(crate) async fn open(path: &Path) -> anyhow::Result<SqliteDb> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || {
            let mut conn = connect(&path)
                .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
            crate::migrations::apply_sqlite(&mut conn).context("applying SQLite migrations")?;
            anyhow::Ok(conn)
        })
        .await
        .context("opening the SQLite database")??;
        Ok(SqliteDb {
            conn: Arc::new(Mutex::new(Some(conn))),
        })
    }

    /// The connection, for one transition or a few reads (waiting for whoever holds it, at
    /// most [`LOCK_WAIT`]: a caller that locked it twice gets an error, not a hang).
    pub(crate) async fn lock(&self) -> anyhow::Result<SqliteConn> {
        let guard = tokio::time::timeout(LOCK_WAIT, self.conn.clone().lock_owned())
            .await
            .map_err(|_| {
                anyhow::anyhow!("waited {} s for the SQLite connection", LOCK_WAIT.as_secs())
            })?;
        anyhow::ensure!(guard.is_some(), "the store is closed");
        Ok(SqliteConn(guard))
    }

    /// Closes the connection once whoever holds it lets go (the store's clones' later
    /// statements fail).
    pub(crate) async fn close(&self) {
        let conn = self.conn.lock().await.take();
        if let Some(conn) = conn {
            if let Err((_, error)) = conn.close() {
                tracing::error!("closing the SQLite database: {error}");
            }
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl SqliteDb {
    /// Runs `script` (statements separated by `;`, nothing bound): for tests that change
    /// the schema under the engine.
    pub(crate) async fn execute_script(&self, script: &str) -> anyhow::Result<()> {
        let mut locked = self.lock().await?;
        locked.conn().execute_batch(script).context("the script")
    }
}

/// The connection, opened as the engine runs it: write-ahead log (readers of another
/// process never block it), `synchronous = NORMAL` (a committed transaction survives a
/// process crash, kill -9; only an OS crash may lose the last ones), foreign keys on, a
/// 64 MiB page cache, and 30 s of waiting for another process's write.
fn connect(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    write_ahead_log(&conn, path)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
    Ok(conn)
}

/// Puts the database in write-ahead-log mode, which the file keeps: only its first opener
/// changes it. That change takes the file whole and SQLite does not wait for it (busy at
/// once, whatever the busy timeout), so an opener racing another (two processes creating
/// one new file) tries again for up to 30 s.
fn write_ahead_log(conn: &rusqlite::Connection, path: &Path) -> rusqlite::Result<()> {
    let is_wal = |mode: &str| mode.eq_ignore_ascii_case("wal");
    let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
    if is_wal(&mode) {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        {
            Ok(mode) => {
                if !is_wal(&mode) {
                    tracing::warn!(
                        "SQLite kept journal mode {mode} (not WAL) for {}",
                        path.display()
                    );
                }
                return Ok(());
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The locked connection, held for one transition or a few reads.
pub(crate) struct SqliteConn(OwnedMutexGuard<Option<rusqlite::Connection>>);

impl SqliteConn {
    fn conn(&mut self) -> &mut rusqlite::Connection {
        self.0.as_mut().expect("checked open when locked")
    }
}

/// Statements on the locked connection, in a transaction or each on its own.
pub(crate) struct Session<'c> {
    conn: &'c mut rusqlite::Connection,
    /// Whether a transaction is open (rolled back on drop).
    in_transaction: bool,
}

impl<'c> Session<'c> {
    fn conn(&self) -> &rusqlite::Connection {
        self.conn
    }

    /// Opens a transaction on the locked connection.
    pub(crate) fn begin(locked: &'c mut SqliteConn) -> anyhow::Result<Self> {
        let conn = locked.conn();
        conn.execute_batch("BEGIN").context("BEGIN")?;
        Ok(Session {
            conn,
            in_transaction: true,
        })
    }

    /// Statements that each commit on their own.
    pub(crate) fn autocommit(locked: &'c mut SqliteConn) -> Self {
        Session {
            conn: locked.conn(),
            in_transaction: false,
        }
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

    /// A transition of one statement.
    async fn one_transition(store: &Store) {
        let mut conn = Conn::acquire(store).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let _: Option<i64> = tx
            .scalar(Statement::new("SELECT count(*) FROM runs"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// Waits until SQLite removed `dir`'s write-ahead log: the last connection closed.
    async fn closed(dir: &std::path::Path) {
        let wal = dir.join("plue.db-wal");
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

    #[tokio::test]
    async fn closing_the_store_closes_the_connection_for_every_clone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let clone = store.clone();
        one_transition(&store).await;
        assert!(dir.path().join("plue.db-wal").exists(), "WAL mode");
        store.close().await;
        closed(dir.path()).await;
        let error = clone
            .scalar::<i64>(Statement::new("SELECT 1"))
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("closed"), "{error:#}");
    }

    #[tokio::test]
    async fn the_last_store_dropped_closes_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let clone = store.clone();
        one_transition(&clone).await;
        drop(clone);
        assert!(
            dir.path().join("plue.db-wal").exists(),
            "open while a clone lives"
        );
        drop(store);
        closed(dir.path()).await;
    }

    /// A caller that locks the connection while it holds it gets an error, not a hang.
    #[tokio::test(start_paused = true)]
    async fn a_second_lock_by_the_holder_gives_up_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let held = Conn::acquire(&store).await.unwrap();
        let error = match Conn::acquire(&store).await {
            Ok(_) => panic!("the connection was locked twice"),
            Err(error) => error,
        };
        assert!(
            format!("{error:#}").contains("waited 30 s for the SQLite connection"),
            "{error:#}"
        );
        drop(held);
        one_transition(&store).await;
    }

    /// Two processes (here, two stores) creating one new database at once both open it:
    /// the one that loses the race to the journal mode and the schema waits and finds them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_openers_of_one_new_database_both_open_it() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = tokio::join!(
                Store::open_data_dir(dir.path()),
                Store::open_data_dir(dir.path())
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            one_transition(&a).await;
            one_transition(&b).await;
        }
    }

    #[tokio::test]
    async fn a_session_dropped_in_a_transaction_rolls_it_back_before_the_next_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        {
            let mut conn = Conn::acquire(&store).await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            tx.execute(Statement::new(
                "INSERT INTO concurrency_groups (scope, name) VALUES ('s', 'g')",
            ))
            .await
            .unwrap();
        }
        let groups: i64 = store
            .one_scalar(Statement::new("SELECT COUNT(*) FROM concurrency_groups"))
            .await
            .unwrap();
        assert_eq!(groups, 0);
        // And the next transaction begins: none was left open.
        one_transition(&store).await;
    }
}
