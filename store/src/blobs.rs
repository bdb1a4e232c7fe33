//! Hand-off blobs and artifacts in the store: which tar each step attempt left in the
//! object store (`blobs`), and the files of each artifacts tar (`artifacts`).
//!
//! Invariants: a blob row is written only after its object was stored whole, in one
//! transaction with its files, so a listed artifact can always be read; lookups for a
//! runner are by the run of the attempt it holds, never by a run id it names. A blob row
//! carries its size and file count, so what a run or a repository keeps (its quotas,
//! `crate::artifacts::quota`) is a sum over blob rows, checked in the transaction that
//! records the blob with the repository's (or the run's) row locked: two uploads racing one
//! quota are serialized there (SQLite has one connection, one writer). Listings are pages
//! in (step, name) order after a cursor, never a whole run at once. Deleting a blob row,
//! however it happens (a repository's or a run's cascade too), leaves its key in
//! `doomed_blobs` in the same transaction (a trigger), for the sweeper to delete the object.

use anyhow::Context;

use super::Store;
use crate::tx::{Conn, Statement, Tx};

/// A stored blob about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBlob<'a> {
    pub run_id: i64,
    pub step_id: &'a str,
    pub attempt: i64,
    /// `workspace` or `artifacts`.
    pub kind: &'a str,
    pub key: &'a str,
    pub size: i64,
    pub digest: &'a str,
    /// The files of an artifacts tar: path, size, digest.
    pub files: &'a [(String, i64, String)],
    pub now: i64,
}

/// What a scope keeps: bytes of blobs and artifact files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: i64,
    pub files: i64,
}

/// What a run's quota scopes keep, and which scopes it is in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobUsage {
    /// The run's blobs.
    pub run: Usage,
    /// Every blob of the run's repository (`None`: a local run).
    pub repository: Option<Usage>,
    /// Every blob of the repository's fork runs (`Some` only for a fork run).
    pub forks: Option<Usage>,
    /// The run is a pull request's from a fork (its steps get no secrets).
    pub fork: bool,
}

impl BlobUsage {
    /// This usage without `blob`, one of the run's own blobs (the one a retried upload
    /// replaces): it counts in every scope the run is in.
    pub fn without(self, blob: Usage) -> BlobUsage {
        let minus = |u: Usage| Usage {
            bytes: u.bytes.saturating_sub(blob.bytes).max(0),
            files: u.files.saturating_sub(blob.files).max(0),
        };
        BlobUsage {
            run: minus(self.run),
            repository: self.repository.map(minus),
            forks: self.forks.map(minus),
            fork: self.fork,
        }
    }
}

/// A step's artifacts in a run (its latest attempt that kept any), without the files.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct StepArtifacts {
    pub step_id: String,
    pub attempt: i64,
    pub files: i64,
    /// The tar's size.
    pub size: i64,
}

/// Why [`Store::record_blob`] recorded nothing.
#[derive(Debug, thiserror::Error)]
pub enum RecordError<E> {
    /// The caller's check of the scopes' usage refused the blob (a quota).
    #[error("{0}")]
    Refused(E),
    /// The database failed.
    #[error("{0:#}")]
    Store(#[from] anyhow::Error),
}

/// A recorded blob.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct BlobRow {
    pub id: i64,
    pub run_id: i64,
    pub step_id: String,
    pub attempt: i64,
    pub kind: String,
    pub key: String,
    pub size: i64,
    pub digest: String,
}

/// One artifact file of a run (of the latest attempt of its step that kept artifacts).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct ArtifactRow {
    pub step_id: String,
    pub attempt: i64,
    pub name: String,
    pub size: i64,
    pub digest: String,
}

const BLOB_COLUMNS: &str = "id, run_id, step_id, attempt, kind, key, size, digest";

/// What one scope keeps, as summed over its blob rows.
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
struct UsageRow {
    bytes: i64,
    files: i64,
}

/// What a repository's blobs keep, all of them and those of its fork runs.
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
struct RepositoryUsageRow {
    bytes: i64,
    files: i64,
    fork_bytes: i64,
    fork_files: i64,
}

/// What a run's quota scopes keep ([`BlobUsage`]), read in `tx` (a transaction or a
/// connection's autocommit statements).
async fn usage_in(
    tx: &mut Tx<'_>,
    run_id: i64,
    repo_id: Option<i64>,
    fork: bool,
) -> anyhow::Result<BlobUsage> {
    let run: UsageRow = tx
        .row(
            Statement::new(
                "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes, \
                        CAST(COALESCE(SUM(files), 0) AS BIGINT) AS files \
                 FROM blobs WHERE run_id = $1",
            )
            .bind(run_id),
        )
        .await?
        .context("the run's usage")?;
    let run = Usage {
        bytes: run.bytes,
        files: run.files,
    };
    let mut repository = None;
    let mut forks = None;
    if let Some(repo_id) = repo_id {
        let row: RepositoryUsageRow = tx
            .row(
                Statement::new(
                    "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS bytes, \
                        CAST(COALESCE(SUM(b.files), 0) AS BIGINT) AS files, \
                        CAST(COALESCE(SUM(CASE WHEN r.secrets_allowed THEN 0 ELSE b.size END), 0) AS BIGINT) AS fork_bytes, \
                        CAST(COALESCE(SUM(CASE WHEN r.secrets_allowed THEN 0 ELSE b.files END), 0) AS BIGINT) AS fork_files \
                 FROM blobs b JOIN runs r ON r.id = b.run_id WHERE r.repo_id = $1",
                )
                .bind(repo_id),
            )
            .await?
            .context("the repository's usage")?;
        repository = Some(Usage {
            bytes: row.bytes,
            files: row.files,
        });
        if fork {
            forks = Some(Usage {
                bytes: row.fork_bytes,
                files: row.fork_files,
            });
        }
    }
    Ok(BlobUsage {
        run,
        repository,
        forks,
        fork: repo_id.is_some() && fork,
    })
}

/// A run's repository (`None`: a local run) and whether its steps get secrets.
const RUN_SCOPE: &str = "SELECT repo_id, secrets_allowed FROM runs WHERE id = $1";

impl Store {
    /// The step id of a step run.
    pub async fn step_id_of(&self, step_run_id: i64) -> anyhow::Result<Option<String>> {
        self.scalar(Statement::new("SELECT step_id FROM step_runs WHERE id = $1").bind(step_run_id))
            .await
    }

    /// The dispatch document of a step run (`None` before it was queued).
    pub async fn dispatch_of(&self, step_run_id: i64) -> anyhow::Result<Option<String>> {
        let action: Option<Option<String>> = self
            .scalar(Statement::new("SELECT action FROM step_runs WHERE id = $1").bind(step_run_id))
            .await?;
        Ok(action.flatten())
    }

    /// Records a stored blob and its files; a repeat of the same attempt and kind replaces
    /// the earlier record (a runner that retried its upload). Returns the replaced key.
    ///
    /// `check` sees what the run's scopes keep without the replaced record (and without
    /// this blob), read in the recording transaction after locking the repository's row
    /// (or, for a local run, the run's), so concurrent uploads of one scope are checked one
    /// after the other; when it refuses, nothing changes.
    pub async fn record_blob<E>(
        &self,
        blob: &NewBlob<'_>,
        check: impl FnOnce(&BlobUsage) -> Result<(), E>,
    ) -> Result<Option<String>, RecordError<E>> {
        // PostgreSQL: row locks serialize uploads of one repository (or run) without
        // blocking anything else's foreign-key checks; SQLite's one connection already
        // runs one transaction at a time.
        let files = i64::try_from(blob.files.len()).unwrap_or(i64::MAX);
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.begin().await?;
        let (repo_id, secrets_allowed): (Option<i64>, bool) = tx
            .row(Statement::new(RUN_SCOPE).bind(blob.run_id))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no run {}", blob.run_id))?;
        if let Some(repo_id) = repo_id {
            tx.scalar::<i64>(
                Statement::per_backend(
                    "SELECT id FROM repositories WHERE id = $1",
                    "SELECT id FROM repositories WHERE id = $1 FOR NO KEY UPDATE",
                )
                .bind(repo_id),
            )
            .await?;
        }
        tx.scalar::<i64>(
            Statement::per_backend(
                "SELECT id FROM runs WHERE id = $1",
                "SELECT id FROM runs WHERE id = $1 FOR NO KEY UPDATE",
            )
            .bind(blob.run_id),
        )
        .await?
        .with_context(|| format!("no run {}", blob.run_id))?;
        let old: Option<String> = tx
            .scalar(
                Statement::new(
                    "DELETE FROM blobs WHERE run_id = $1 AND step_id = $2 AND attempt = $3 \
                     AND kind = $4 RETURNING key",
                )
                .bind(blob.run_id)
                .bind(blob.step_id)
                .bind(blob.attempt)
                .bind(blob.kind),
            )
            .await?;
        let usage = usage_in(&mut tx, blob.run_id, repo_id, !secrets_allowed).await?;
        if let Err(refused) = check(&usage) {
            tx.rollback().await?;
            return Err(RecordError::Refused(refused));
        }
        let id: i64 = tx
            .scalar(
                Statement::new(
                    "INSERT INTO blobs (run_id, step_id, attempt, kind, key, size, digest, \
                     created_at, files) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                )
                .bind(blob.run_id)
                .bind(blob.step_id)
                .bind(blob.attempt)
                .bind(blob.kind)
                .bind(blob.key)
                .bind(blob.size)
                .bind(blob.digest)
                .bind(blob.now)
                .bind(files),
            )
            .await?
            .context("the recorded blob's id")?;
        for (name, size, digest) in blob.files {
            tx.execute(
                Statement::new(
                    "INSERT INTO artifacts (blob_id, name, size, digest) VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(name)
                .bind(*size)
                .bind(digest),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(old.filter(|key| key != blob.key))
    }

    /// What the quota scopes of run `run_id` keep now (`None`: no such run).
    pub async fn blob_usage(&self, run_id: i64) -> anyhow::Result<Option<BlobUsage>> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.autocommit().await?;
        let Some((repo_id, secrets_allowed)) = tx
            .row::<(Option<i64>, bool)>(Statement::new(RUN_SCOPE).bind(run_id))
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(
            usage_in(&mut tx, run_id, repo_id, !secrets_allowed).await?,
        ))
    }

    /// What the blob of `kind` recorded for attempt `attempt` of `step_id` keeps (zero
    /// when there is none): a retried upload of that attempt replaces it.
    pub async fn attempt_blob_usage(
        &self,
        run_id: i64,
        step_id: &str,
        attempt: i64,
        kind: &str,
    ) -> anyhow::Result<Usage> {
        let row: Option<(i64, i64)> = self
            .row(
                Statement::new(
                    "SELECT size, files FROM blobs \
                     WHERE run_id = $1 AND step_id = $2 AND attempt = $3 AND kind = $4",
                )
                .bind(run_id)
                .bind(step_id)
                .bind(attempt)
                .bind(kind),
            )
            .await?;
        Ok(match row {
            Some((bytes, files)) => Usage { bytes, files },
            None => Usage::default(),
        })
    }

    /// The blob of `kind` that step run `reader` (of run `run_id`) starts from when its
    /// dispatch names `step_id`: the latest that step left — but of the reader's own step
    /// (`loop_workspace="previous"`) only what its earlier rounds left (attempts up to the
    /// round's `iteration_base`), never a failed attempt of the round being retried.
    pub async fn handed_blob(
        &self,
        run_id: i64,
        step_id: &str,
        kind: &str,
        reader: i64,
    ) -> anyhow::Result<Option<BlobRow>> {
        let sql = format!(
            "SELECT {BLOB_COLUMNS} FROM blobs WHERE run_id = $1 AND step_id = $2 AND kind = $3 \
             AND attempt <= COALESCE((SELECT iteration_base FROM step_runs \
             WHERE id = $4 AND step_id = $2), 9223372036854775807) \
             ORDER BY attempt DESC LIMIT 1"
        );
        self.row(
            Statement::new(&sql)
                .bind(run_id)
                .bind(step_id)
                .bind(kind)
                .bind(reader),
        )
        .await
    }

    /// The blob of `kind` the latest attempt of `step_id` in run `run_id` left.
    pub async fn latest_blob(
        &self,
        run_id: i64,
        step_id: &str,
        kind: &str,
    ) -> anyhow::Result<Option<BlobRow>> {
        let sql = format!(
            "SELECT {BLOB_COLUMNS} FROM blobs WHERE run_id = $1 AND step_id = $2 AND kind = $3 \
             ORDER BY attempt DESC LIMIT 1"
        );
        self.row(Statement::new(&sql).bind(run_id).bind(step_id).bind(kind))
            .await
    }

    /// The artifact files of a run: for each step, those of its latest attempt that kept
    /// artifacts, by step and path. Bounded by the run's file quota; pages
    /// ([`Store::artifacts_page`]) are for anything a client can ask for repeatedly.
    pub async fn artifacts_of_run(&self, run_id: i64) -> anyhow::Result<Vec<ArtifactRow>> {
        self.artifacts_page(run_id, None, None, i64::MAX).await
    }

    /// Up to `limit` artifact files of a run (as [`Store::artifacts_of_run`]), only of
    /// `step` when given, after the (step, name) `after` in that order.
    pub async fn artifacts_page(
        &self,
        run_id: i64,
        step: Option<&str>,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> anyhow::Result<Vec<ArtifactRow>> {
        let (after_step, after_name) = after.unzip();
        self.rows(
            Statement::new(
                "SELECT b.step_id, b.attempt, a.name, a.size, a.digest FROM artifacts a \
                 JOIN blobs b ON b.id = a.blob_id \
                 WHERE b.run_id = $1 AND b.kind = 'artifacts' AND b.attempt = ( \
                     SELECT MAX(l.attempt) FROM blobs l \
                     WHERE l.run_id = b.run_id AND l.step_id = b.step_id AND l.kind = 'artifacts') \
                   AND ($2 IS NULL OR b.step_id = $2) \
                   AND ($3 IS NULL OR b.step_id > $3 OR (b.step_id = $3 AND a.name > $4)) \
                 ORDER BY b.step_id, a.name LIMIT $5",
            )
            .bind(run_id)
            .bind(step)
            .bind(after_step)
            .bind(after_name)
            .bind(limit),
        )
        .await
    }

    /// The file `name` of the artifacts blob `blob_id`, if it lists one.
    pub async fn artifact_of_blob(
        &self,
        blob_id: i64,
        name: &str,
    ) -> anyhow::Result<Option<ArtifactRow>> {
        self.row(
            Statement::new(
                "SELECT b.step_id, b.attempt, a.name, a.size, a.digest FROM artifacts a \
                 JOIN blobs b ON b.id = a.blob_id WHERE a.blob_id = $1 AND a.name = $2",
            )
            .bind(blob_id)
            .bind(name),
        )
        .await
    }

    /// Each step of a run that kept artifacts, with how many files (its latest attempt
    /// that kept any), by step: one row a step, whatever the number of files.
    pub async fn artifact_steps(&self, run_id: i64) -> anyhow::Result<Vec<StepArtifacts>> {
        self.rows(
            Statement::new(
                "SELECT b.step_id, b.attempt, b.files, b.size FROM blobs b \
                 WHERE b.run_id = $1 AND b.kind = 'artifacts' AND b.attempt = ( \
                     SELECT MAX(l.attempt) FROM blobs l \
                     WHERE l.run_id = b.run_id AND l.step_id = b.step_id AND l.kind = 'artifacts') \
                 ORDER BY b.step_id",
            )
            .bind(run_id),
        )
        .await
    }

    /// Up to `limit` blobs of runs created before `before` (retention).
    pub async fn expired_blobs(&self, before: i64, limit: i64) -> anyhow::Result<Vec<BlobRow>> {
        let sql = format!(
            "SELECT {} FROM blobs b JOIN runs r ON r.id = b.run_id \
             WHERE r.created_at < $1 ORDER BY b.id LIMIT $2",
            BLOB_COLUMNS
                .split(", ")
                .map(|c| format!("b.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.rows(Statement::new(&sql).bind(before).bind(limit))
            .await
    }

    /// Up to `limit` keys of objects whose blob row is gone (`doomed_blobs`, filled by a
    /// trigger whenever a row is deleted: a repository or run deleted, a record replaced,
    /// retention) and that no row names.
    pub async fn doomed_blobs(&self, limit: i64) -> anyhow::Result<Vec<String>> {
        // A key a row names again is not doomed (never for a hand-off blob, whose keys
        // are random; a cache object is content-addressed: another entry may name it).
        self.execute(Statement::new(
            "DELETE FROM doomed_blobs WHERE key IN (SELECT key FROM blobs) \
             OR key IN (SELECT blob_key FROM cache_entries)",
        ))
        .await?;
        self.scalars(
            Statement::new("SELECT key FROM doomed_blobs ORDER BY key LIMIT $1").bind(limit),
        )
        .await
    }

    /// Forgets a doomed key whose object was deleted.
    pub async fn forget_doomed_blob(&self, key: &str) -> anyhow::Result<()> {
        self.execute(Statement::new("DELETE FROM doomed_blobs WHERE key = $1").bind(key))
            .await?;
        Ok(())
    }

    /// Forgets a blob (its files with it) whose object was deleted.
    pub async fn delete_blob(&self, id: i64) -> anyhow::Result<()> {
        self.execute(Statement::new("DELETE FROM blobs WHERE id = $1").bind(id))
            .await?;
        Ok(())
    }
}
