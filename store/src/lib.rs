//! The store: every piece of engine state, in SQLite (embedded default) or PostgreSQL,
//! behind one type with the same behaviour on both.
//!
//! Invariants:
//! - One way to speak SQL: every statement is a `tx::Statement` (its SQL, with `$N`
//!   placeholders, and its bound arguments) run through a `tx::Tx` — a transaction, or
//!   the autocommit form a lone read or write takes (`Store::row`, `Store::execute`, ...).
//!   Each backend has one binder and one row decoder: sqlx's on PostgreSQL, the store's
//!   own `rusqlite` session on SQLite's one connection, decoding rows by column name
//!   through serde (see `tx`). Statements that must differ are written per backend side by
//!   side (`Statement::per_backend`): the claim (`FOR UPDATE SKIP LOCKED` and a
//!   data-modifying `WITH` on PostgreSQL), a set of values (`= ANY($N)` against
//!   `json_each($N)`) and log lines (a row each on PostgreSQL, chunks of lines on SQLite).
//! - A transaction that reads before it writes opens with a write to the row it is about
//!   (`UPDATE runs SET advances = advances + 1` in [`Store::lock_run`]): on PostgreSQL that
//!   locks the run against other engine replicas, on SQLite it takes the write lock first
//!   so the transaction can never fail to upgrade from a stale read snapshot.
//! - Times are milliseconds since the Unix epoch; JSON documents are TEXT.
//! - Values are always bound, never spliced into SQL.
//! - SQL lives in this crate alone: the pool is crate-private; other crates' tests set up
//!   or check rows no method reaches through `testing::Sql` (the `testing` feature), which
//!   runs through the same statements.
//!
//! [`events`] are the in-process hints that something here changed (work queued, a run
//! moved on, lines stored): hints only, the tables stay the truth.
//! [`wake`] carries the hints other engine replicas on the same PostgreSQL need.

mod annotations;
mod api_tokens;
mod approvals;
mod blobs;
mod caches;
mod change_list;
mod check_runs;
mod claims;
mod costs;
mod dashboard;
mod debug_sessions;
mod environments;
pub mod events;
mod filters;
mod forge_roles;
mod forges;
mod gauges;
mod groups;
mod held_secrets;
mod installations;
mod known_steps;
mod logs;
pub mod migrations;
mod oidc_keys;
mod people;
mod postgres_pool;
mod proposals;
mod provenance;
mod record;
mod repo_roles;
mod reruns;
mod run_titles;
mod runner_tokens;
mod runners;
mod runs;
mod secret_holders;
mod sign_in;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod timeline;
mod transition;
mod tx;
pub mod wake;

use std::path::Path;
use std::str::FromStr;

use crate::tx::Statement;
use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPool};

pub use annotations::{AnnotationRow, DroppedAnnotations, NewAnnotation};
pub use api_tokens::{Adopted, NewToken, TokenRow, ValidToken};
pub use approvals::{ApprovalRow, Decided, Reviewer, Verdict};
pub use blobs::{ArtifactRow, BlobRow, BlobUsage, NewBlob, RecordError, StepArtifacts, Usage};
pub use caches::{cache_scope, CacheEntryRow, CachePlace, CacheRecorded, NewCacheEntry};
pub use claims::unacknowledged::{Acknowledgement, ReturnedClaim, UnacknowledgedRow, Unanswered};
pub use claims::{AttemptEnd, AttemptOwner, Claimed, CompletedAttempt, EndingAttempt, StepAfter};
pub use costs::{BudgetClaimants, Reservation};
pub use dashboard::{AttemptRow, RunFilter};
pub use debug_sessions::{DebugClaim, DebugSessionRow, NewDebugSession};
pub use environments::{EnvironmentRow, EnvironmentSettings, RunEnvironments, RunOrigin};
pub use forge_roles::{ForgeRoleRow, LinkedLogin};
pub use forges::schedules::{ScheduleEntry, ScheduleRow};
pub use forges::status_reports::StatusReportRow;
pub use forges::{NewRepo, RepoRow};
pub use installations::{InstallationFacts, InstallationRow};
pub use known_steps::KnownSteps;
pub use logs::quota::{self as log_quota, LogBudget, LogQuotas, OverLogQuota};
pub use logs::{BatchEnd, LogAttempt, StoredLine};
pub use oidc_keys::{OidcKeyRow, ID_TOKEN_ISSUED};
pub use people::{
    valid_name, ForgeLoginRow, GroupRow, NameError, NewUser, Triggerer, UserKind, UserRow,
};
pub use plue_types::status::RunnerState;
pub use postgres_pool::{ConnectionsError, PostgresConnections};
pub use proposals::{CheckedProposal, NewProposal, ProposalDecided, ProposalRow};
pub use provenance::{Landing, SigningKeyRow, StatementRow};
pub use record::RoundRow;
pub use repo_roles::{Audit, AuditFilter, AuditRow, MemberRow};
pub use runner_tokens::{
    AttemptPod, MintedRunner, NewRunnerToken, RunnerTokenKind, RunnerTokenRow,
};
pub use runners::{Liveness, NewRunner, RedeemedToken, Registration, RunnerRow};
pub use runs::canonical_labels;
pub use runs::create::{CreatedRun, NewRun, RunRepo};
pub use runs::{Advanced, RunDocuments, RunRow, RunSnapshot, StepChange, StepRunRow};
pub use secret_holders::needs_secrets_runner;
pub use sign_in::{CliRequest, GroupChanges, NewSignIn, SignInIdentity, SignInRow};
pub use timeline::{RunProgress, TimelineAttempt};
pub use transition::{
    ClaimNext, Committed, Grouping, NextClaim, RunToAdvance, RunTransition, ThenAdvance,
    TransitionConn,
};

/// The pool of the store's backend: SQL reaches it through [`tx`] alone.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(tx::SqliteDb),
    Postgres(PgPool),
}

/// Handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    /// The database; SQL lives in this crate alone.
    pub(crate) db: Db,
    /// What claims learnt of runs that never changes again (see `claims::ClaimedRuns`).
    pub(crate) claimed_runs: std::sync::Arc<claims::ClaimedRuns>,
}

/// Whether a failed statement broke a unique constraint (a name or key already taken), on
/// either backend, wherever in the error's chain the database's own error sits.
pub(crate) fn is_unique_violation(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
            return e
                .as_database_error()
                .is_some_and(|e| e.is_unique_violation());
        }
        matches!(
            cause.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Creates the engine's data directory (database, mirrors, runner logs) private to the
/// engine's user (0700) and tags it with a `CACHEDIR.TAG`, which workspace copies skip.
/// An existing directory is tightened only when it is empty or already Plue's, so pointing
/// `--data-dir` at a shared directory never changes that directory's mode.
pub fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let context = || format!("preparing the data directory {}", data_dir.display());
    let existed = data_dir.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(context)?;
    let tag = data_dir.join("CACHEDIR.TAG");
    let ours = tag.exists()
        || data_dir.join("plue.db").exists()
        || std::fs::read_dir(data_dir)
            .with_context(context)?
            .next()
            .is_none();
    if existed && ours {
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(context)?;
    }
    if !tag.exists() {
        let text = format!(
            "{}\n# This is Plue's data directory: never copied into a step's workspace.\n",
            plue_types::workspace::CACHEDIR_SIGNATURE
        );
        std::fs::write(&tag, text).with_context(context)?;
    }
    Ok(())
}

impl Store {
    /// Opens `DATABASE_URL`-style `url` (`postgres://` or `sqlite://`) and applies migrations,
    /// with [`PostgresConnections::DEFAULT`] connections to PostgreSQL.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        Store::connect_with(url, PostgresConnections::DEFAULT).await
    }

    /// Opens `url` as [`Store::connect`] does; on PostgreSQL with `connections` connections,
    /// all opened before it returns ([`PostgresConnections`]). SQLite has its own pool (one
    /// connection that writes), which `connections` does not change.
    pub async fn connect_with(
        url: &str,
        connections: PostgresConnections,
    ) -> anyhow::Result<Store> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
            let pool = postgres_pool::open(connections, options)
                .await
                .with_context(|| format!("cannot connect to {}", redact(url)))?;
            let migrator = migrations::migrator(migrations::Dialect::Postgres, None).await?;
            postgres_pool::migrate(&pool, &migrator).await?;
            Store {
                db: Db::Postgres(pool),
                claimed_runs: Default::default(),
            }
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Store::open_sqlite(Path::new(path)).await?
        } else {
            anyhow::bail!(
                "unsupported database URL '{}': expected postgres://... or sqlite://PATH",
                redact(url)
            );
        };
        Ok(store)
    }

    /// Opens (creating if needed) the SQLite database `plue.db` in `data_dir`.
    pub async fn open_data_dir(data_dir: &Path) -> anyhow::Result<Store> {
        prepare_data_dir(data_dir)?;
        Store::open_sqlite(&data_dir.join("plue.db")).await
    }

    async fn open_sqlite(path: &Path) -> anyhow::Result<Store> {
        Ok(Store {
            db: Db::Sqlite(tx::SqliteDb::open(path).await?),
            claimed_runs: Default::default(),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Whether the database is PostgreSQL (for the few statements written per backend).
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        self.execute(Statement::new("SELECT 1")).await.is_ok()
    }

    /// Closes the database (waiting for every connection to come back); the store's clones'
    /// later statements fail.
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(db) => db.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// `url` with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[tokio::test]
    async fn the_embedded_database_runs_as_configured() {
        let (store, _dir) = testing::sqlite().await;
        let journal: String = store
            .one_scalar(Statement::new("PRAGMA journal_mode"))
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        for (pragma, expected) in [("synchronous", 1), ("foreign_keys", 1)] {
            let value: i64 = store
                .one_scalar(Statement::new(&format!("PRAGMA {pragma}")))
                .await
                .unwrap();
            assert_eq!(value, expected, "PRAGMA {pragma}");
        }
    }
}
