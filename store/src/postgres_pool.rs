//! The store's pool of PostgreSQL connections: how many, and that they are all opened when
//! the store connects and kept open.
//!
//! Invariants:
//! - The pool has a fixed size ([`PostgresConnections`]): every connection is opened by
//!   [`Store::connect_with`](crate::Store::connect_with), before it returns, and the pool
//!   keeps that many open. A burst of work never starts backends: each costs PostgreSQL
//!   ≈ 4.5 ms of CPU to start (measured with `psql` against this repository's test server)
//!   and then reads its catalog again, which a burst would otherwise pay per step.
//! - The size is at least 2: one connection listens for the other replicas' wakes for as
//!   long as the store lives (`wake`), and the work needs at least one more.
//! - A server that cannot take that many connections fails the connect (after sqlx's 30 s
//!   of retries), naming the setting and the server's refusal, instead of a transition
//!   failing later.
//! - A connection is tested (pinged) whenever it returns to the pool (sqlx does so), and
//!   again before it is handed out only when it sat idle for [`TESTED_AFTER_IDLE`] or
//!   longer: a server that closed it while it idled that long costs no caller an error.
//!   One closed within that second fails the one statement that takes it, and is dropped
//!   when it comes back (its test fails).
//! - Every connection of the pool plans as the store's statements want ([`PLANNING`]),
//!   from the moment it opens for as long as it lives; the migrations alone run with
//!   PostgreSQL's defaults ([`migrate`]), on a connection that gets the pool's planning back
//!   before it returns to the pool.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor};

/// How many connections one store (one `plue serve`) keeps to PostgreSQL.
///
/// Fewer than the runners it serves on purpose: a completion holds a connection for one
/// transaction, and on a database server with few cores more connections than the cores
/// can serve only wait for each other's locks while off the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresConnections(u32);

impl PostgresConnections {
    /// What a store keeps unless told otherwise: the listener and three for the work.
    ///
    /// What a step costs PostgreSQL grows with the transactions in flight across all
    /// replicas, not with the replicas themselves: on a 2-core server one engine with 8
    /// connections and two engines with 4 each cost the same per step, and one engine with
    /// 4 about a tenth less, at the same steps per second (bench/README.md, replicas). A
    /// larger server takes a larger figure.
    pub const DEFAULT: PostgresConnections = PostgresConnections(4);
    /// The least that works: the wake listener's connection and one for the work.
    pub const MIN: u32 = 2;
    /// More than any PostgreSQL server is configured to take from one client by default
    /// (`max_connections` is 100): a larger figure is a typo.
    pub const MAX: u32 = 1_000;

    /// `count` connections, when within [`Self::MIN`]..=[`Self::MAX`].
    pub fn new(count: u32) -> Result<PostgresConnections, ConnectionsError> {
        if (Self::MIN..=Self::MAX).contains(&count) {
            Ok(PostgresConnections(count))
        } else {
            Err(ConnectionsError::OutOfRange(count))
        }
    }

    /// The pool's options: this many connections, all opened at once and kept.
    fn pool_options(self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.0)
            .min_connections(self.0)
            // Kept: a connection closed for idling or age would be a backend started again
            // (and its plans made again) by the next burst.
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            // A connection is tested when it comes back (sqlx pings every connection
            // released to the pool), so one taken again at once is not tested twice: only
            // one idle for a while is, when it may have died idle.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= TESTED_AFTER_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(|conn, _| {
                Box::pin(async move { conn.execute(PLANNING).await.map(drop) })
            })
    }
}

/// A pooled connection idle this long is tested (a round trip) before it is handed out:
/// the server may have closed it meanwhile. One taken again sooner was tested as it came
/// back, and is handed out untested: on a busy engine the test on taking cost a round trip
/// per transaction, ≈ 7 % of the engine's CPU in a burst (`perf`, bench/README.md).
const TESTED_AFTER_IDLE: Duration = Duration::from_secs(1);

/// How every connection of the pool plans, set once when it opens (one trip for the
/// connection's life, where a transaction's two `SET LOCAL`s cost PostgreSQL 45–65 µs of CPU
/// every transaction: bench/README.md, replicas).
///
/// - **Generic plans** (`plan_cache_mode`): a statement is planned once per connection.
///   The store's statements find rows by key, or by a status written into their text (so a
///   partial index such as `step_runs_claim` is in the generic plan too): their plans do
///   not depend on the values bound. Left to choose (`auto`), PostgreSQL kept planning the
///   claim, the attempt's end and the take of the change list afresh on every call (custom
///   plans, and again for five calls after each `ANALYZE` of their tables): 179 µs of
///   planning a step with one engine and 317 µs with two, against 48 and 105 µs.
/// - **No sequential scan where an index serves** (`enable_seqscan`): a generic plan is made
///   from the table's statistics at that moment and kept until the next `ANALYZE`. Made
///   while a table was still small (a fresh installation's first burst), the take of the
///   change list (`id = ANY(<ids>)`) scanned all of `step_runs` on every call once the
///   burst had filled it: 611 µs and 59 buffers a call against 15 µs and 5 by its key, in
///   about half of the benchmark's runs. With sequential scans off, a table is scanned
///   whole only where no index can find its rows.
pub(crate) const PLANNING: &str = "SET plan_cache_mode = force_generic_plan; \
                                   SET enable_seqscan = off";

/// How a connection plans now, as `<plan_cache_mode> <enable_seqscan>` (for tests).
#[cfg(test)]
pub(crate) const PLANNING_NOW: &str =
    "SELECT current_setting('plan_cache_mode') || ' ' || current_setting('enable_seqscan')";

/// Applies `migrator`'s migrations on a connection of `pool` planning with PostgreSQL's
/// defaults (a data migration over a whole table is better served by a sequential scan),
/// and gives the connection the pool's [`PLANNING`] back before it returns to the pool.
pub(crate) async fn migrate(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<()> {
    let mut conn = pool
        .acquire()
        .await
        .context("a connection for the migrations")?;
    conn.execute("RESET plan_cache_mode; RESET enable_seqscan")
        .await
        .context("planning the migrations with PostgreSQL's defaults")?;
    let migrated = migrator
        .run(&mut *conn)
        .await
        .context("applying PostgreSQL migrations");
    if let Err(error) = conn.execute(PLANNING).await {
        // Not handed back to the pool planning otherwise (the pool opens another, with it).
        drop(conn.detach().close().await);
        let error = anyhow::Error::from(error).context("the pool's planning after the migrations");
        return Err(match migrated {
            Err(failed) => failed.context(format!("{error:#}")),
            Ok(()) => error,
        });
    }
    migrated
}

/// The pool of `connections` to the server `options` name, every connection open.
///
/// sqlx retries a server that answers "too many connections" (or refuses the connection,
/// or is starting) until its acquire timeout — 30 s: the server may be about to free one —
/// and then reports only the timeout. After such a timeout one connection of this
/// function's own (within [`PROBE_TIMEOUT`]) says why: refused as too many, or taken while
/// the pool's were not, the count is what the server cannot take, and the error names the
/// setting; refused for another reason (down, starting, unreachable), that reason is the
/// error. Every other failure (a wrong password, no such database) is sqlx's, as it was.
pub(crate) async fn open(
    connections: PostgresConnections,
    options: PgConnectOptions,
) -> anyhow::Result<PgPool> {
    let failed = match connections
        .pool_options()
        .connect_with(options.clone())
        .await
    {
        Ok(pool) => return Ok(pool),
        Err(failed) => failed,
    };
    if !matches!(failed, sqlx::Error::PoolTimedOut) && !too_many(&failed) {
        return Err(failed.into());
    }
    let too_small = || {
        format!(
            "cannot open {connections} connections (--database-connections): PostgreSQL's \
             max_connections, or the role's connection limit, must take that many from \
             each replica"
        )
    };
    let probe = tokio::time::timeout(PROBE_TIMEOUT, sqlx::PgConnection::connect_with(&options));
    Err(match probe.await {
        Ok(Ok(probe)) => {
            drop(probe.close().await);
            anyhow::Error::from(failed).context(too_small())
        }
        Ok(Err(refused)) if too_many(&refused) => anyhow::Error::from(refused)
            .context(format!("the pool: {failed}"))
            .context(too_small()),
        Ok(Err(refused)) => anyhow::Error::from(refused).context(format!("the pool: {failed}")),
        Err(_) => anyhow::Error::from(failed).context(format!(
            "no connection within {PROBE_TIMEOUT:?} either: is PostgreSQL reachable?"
        )),
    })
}

/// How long [`open`]'s own connection may take, after sqlx's 30 s.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether PostgreSQL refused the connection as one too many (SQLSTATE 53300, for the
/// server or for the role).
fn too_many(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("53300"))
}

impl Default for PostgresConnections {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for PostgresConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for PostgresConnections {
    type Err = ConnectionsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let count = text
            .trim()
            .parse::<u32>()
            .map_err(|_| ConnectionsError::NotANumber(text.to_owned()))?;
        PostgresConnections::new(count)
    }
}

/// A connection count that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionsError {
    #[error("{0:?} is not a number of connections (a whole number, such as 8)")]
    NotANumber(String),
    #[error(
        "a pool of {0}: a store needs at least {min} connections (one listens for the \
         other replicas, one works) and at most {max}",
        min = PostgresConnections::MIN,
        max = PostgresConnections::MAX
    )]
    OutOfRange(u32),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::postgres_database as postgres;

    #[test]
    fn a_count_is_read_and_kept_within_its_bounds() {
        assert_eq!("4".parse(), Ok(PostgresConnections::DEFAULT));
        assert_eq!("8".parse(), PostgresConnections::new(8));
        assert_eq!(" 2 ".parse(), PostgresConnections::new(2));
        assert_eq!("1000".parse(), PostgresConnections::new(1000));
        assert_eq!(PostgresConnections::new(1000).unwrap().to_string(), "1000");
        for bad in ["0", "1", "1001"] {
            let error = bad.parse::<PostgresConnections>().unwrap_err();
            assert!(
                matches!(error, ConnectionsError::OutOfRange(_)),
                "{bad}: {error}"
            );
            assert!(error.to_string().contains("at least 2"), "{error}");
        }
        for bad in ["", "eight", "-3", "8.5", "99999999999"] {
            let error = bad.parse::<PostgresConnections>().unwrap_err();
            assert_eq!(error, ConnectionsError::NotANumber(bad.to_owned()));
        }
    }

    #[tokio::test]
    async fn a_postgres_store_has_every_connection_open_when_it_returns() {
        let Some((server, url)) = postgres() else {
            return;
        };
        let store = crate::Store::connect_with(&url, PostgresConnections::new(3).unwrap())
            .await
            .expect("open the store");
        let open = || {
            server
                .psql(
                    &url,
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid() \
                       AND backend_type = 'client backend'",
                )
                .expect("count the store's connections")
        };
        assert_eq!(open().trim(), "3", "opened before connect_with returned");
        store.close().await;
    }

    #[tokio::test]
    async fn a_server_that_cannot_take_the_connections_fails_the_connect_naming_the_setting() {
        if postgres().is_none() {
            return;
        }
        // A server of its own that takes five connections in all (a role's connection
        // limit is only approximate: PostgreSQL's documentation says so, and a run here
        // let three through a limit of two).
        let small = testkit::TempPostgres::start_with(&[
            "max_connections=5",
            "superuser_reserved_connections=0",
        ])
        .expect("a PostgreSQL server taking five connections");
        let url = small.new_database().expect("a database");
        let Err(error) =
            crate::Store::connect_with(&url, PostgresConnections::new(8).unwrap()).await
        else {
            panic!("eight connections from a server taking five");
        };
        // Whether the pool's five were closed before the probe connected or not, the count
        // is what the server cannot take.
        let message = format!("{error:#}");
        assert!(message.contains("cannot open 8 connections"), "{message}");
        assert!(message.contains("--database-connections"), "{message}");
        assert!(message.contains("max_connections"), "{message}");
    }

    #[tokio::test]
    async fn a_connect_failing_for_another_reason_says_that_reason_and_not_the_count() {
        let Some((_, url)) = postgres() else {
            return;
        };
        let missing = format!("{}_never_created", url);
        let started = std::time::Instant::now();
        let Err(error) = crate::Store::connect_with(&missing, PostgresConnections::DEFAULT).await
        else {
            panic!("a database that does not exist");
        };
        let message = format!("{error:#}");
        assert!(message.contains("does not exist"), "{message}");
        assert!(!message.contains("--database-connections"), "{message}");
        // Not retried: only a server's "too many", refusal or start-up is.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{message}"
        );
    }

    #[tokio::test]
    async fn the_migrations_plan_with_the_defaults_and_the_pool_keeps_its_planning() {
        let Some((_, url)) = postgres() else {
            return;
        };
        let options = PgConnectOptions::from_str(&url).unwrap();
        let pool = open(PostgresConnections::new(2).unwrap(), options)
            .await
            .expect("open the pool");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("1_planning.sql"),
            format!("CREATE TABLE planning AS {PLANNING_NOW} AS mode"),
        )
        .unwrap();
        let migrator = Migrator::new(dir.path()).await.unwrap();
        migrate(&pool, &migrator).await.expect("migrate");
        let during: String = sqlx::query_scalar("SELECT mode FROM planning")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            during, "auto on",
            "the migration ran with PostgreSQL's defaults"
        );
        // Both connections at once, so the migrations' is one of them.
        let mut held = vec![pool.acquire().await.unwrap(), pool.acquire().await.unwrap()];
        for conn in &mut held {
            let mode: String = sqlx::query_scalar(PLANNING_NOW)
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(mode, "force_generic_plan off");
        }
    }

    // A connection the server closed while it sat idle in the pool is found out when it is
    // taken (it is tested then, having idled past `TESTED_AFTER_IDLE`) and replaced: the
    // statement that took it never sees the dead one.
    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_before_a_statement_uses_it() {
        let Some((server, url)) = postgres() else {
            return;
        };
        let store = crate::Store::connect_with(&url, PostgresConnections::new(3).unwrap())
            .await
            .expect("open the store");
        tokio::time::sleep(TESTED_AFTER_IDLE).await;
        // Every connection of the store (no replica listens for wakes on this one).
        let ended = server
            .psql(
                &url,
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                   AND backend_type = 'client backend') ended",
            )
            .expect("end the store's idle connections");
        assert_eq!(ended.trim(), "3", "the store's three connections ended");
        for _ in 0..4 {
            let one: Option<i64> = store
                .scalar(crate::tx::Statement::new("SELECT CAST(1 AS BIGINT)"))
                .await
                .expect("a statement after the server closed the idle connections");
            assert_eq!(one, Some(1));
        }
        store.close().await;
    }

    #[test]
    fn the_pool_is_opened_whole_and_kept_whole() {
        let options = PostgresConnections::new(5).unwrap().pool_options();
        assert_eq!(options.get_max_connections(), 5);
        assert_eq!(options.get_min_connections(), 5);
        assert_eq!(options.get_idle_timeout(), None);
        assert_eq!(options.get_max_lifetime(), None);
    }
}
