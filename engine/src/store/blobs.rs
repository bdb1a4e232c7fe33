//! Hand-off blobs and artifacts in the store: which tar each step attempt left in the
//! object store (`blobs`), and the files of each artifacts tar (`artifacts`).
//!
//! Invariants: a blob row is written only after its object was stored whole, in one
//! transaction with its files, so a listed artifact can always be read; lookups for a
//! runner are by the run of the attempt it holds, never by a run id it names.

use sqlx::Row;

use super::{on_db, Store};

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

/// A recorded blob.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRow {
    pub step_id: String,
    pub attempt: i64,
    pub name: String,
    pub size: i64,
    pub digest: String,
}

const BLOB_COLUMNS: &str = "id, run_id, step_id, attempt, kind, key, size, digest";

/// A [`BlobRow`] from a row of either backend.
macro_rules! blob_row {
    ($row:expr) => {{
        let row = $row;
        Ok::<_, sqlx::Error>(BlobRow {
            id: row.try_get("id")?,
            run_id: row.try_get("run_id")?,
            step_id: row.try_get("step_id")?,
            attempt: row.try_get("attempt")?,
            kind: row.try_get("kind")?,
            key: row.try_get("key")?,
            size: row.try_get("size")?,
            digest: row.try_get("digest")?,
        })
    }};
}

impl Store {
    /// The step id of a step run.
    pub async fn step_id_of(&self, step_run_id: i64) -> anyhow::Result<Option<String>> {
        on_db!(self, pool => {
            let row = sqlx::query("SELECT step_id FROM step_runs WHERE id = $1")
                .bind(step_run_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| r.try_get("step_id")).transpose()?)
        })
    }

    /// The dispatch document of a step run (`None` before it was queued).
    pub async fn dispatch_of(&self, step_run_id: i64) -> anyhow::Result<Option<String>> {
        on_db!(self, pool => {
            let row = sqlx::query("SELECT action FROM step_runs WHERE id = $1")
                .bind(step_run_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.and_then(|r| r.try_get::<Option<String>, _>("action").ok().flatten()))
        })
    }

    /// Records a stored blob and its files; a repeat of the same attempt and kind replaces
    /// the earlier record (a runner that retried its upload). Returns the replaced key.
    pub async fn record_blob(&self, blob: &NewBlob<'_>) -> anyhow::Result<Option<String>> {
        on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            let old = sqlx::query(
                "DELETE FROM blobs WHERE run_id = $1 AND step_id = $2 AND attempt = $3 AND kind = $4 RETURNING key",
            )
            .bind(blob.run_id)
            .bind(blob.step_id)
            .bind(blob.attempt)
            .bind(blob.kind)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<String, _>("key"))
            .transpose()?;
            let id: i64 = sqlx::query(
                "INSERT INTO blobs (run_id, step_id, attempt, kind, key, size, digest, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(blob.run_id)
            .bind(blob.step_id)
            .bind(blob.attempt)
            .bind(blob.kind)
            .bind(blob.key)
            .bind(blob.size)
            .bind(blob.digest)
            .bind(blob.now)
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
            for (name, size, digest) in blob.files {
                sqlx::query("INSERT INTO artifacts (blob_id, name, size, digest) VALUES ($1, $2, $3, $4)")
                    .bind(id)
                    .bind(name)
                    .bind(size)
                    .bind(digest)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(old.filter(|key| key != blob.key))
        })
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
        on_db!(self, pool => {
            let row = sqlx::query(&sql)
                .bind(run_id)
                .bind(step_id)
                .bind(kind)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| blob_row!(&r)).transpose()?)
        })
    }

    /// The artifact files of a run: for each step, those of its latest attempt that kept
    /// artifacts, by step and path.
    pub async fn artifacts_of_run(&self, run_id: i64) -> anyhow::Result<Vec<ArtifactRow>> {
        on_db!(self, pool => {
            let rows = sqlx::query(
                "SELECT b.step_id, b.attempt, a.name, a.size, a.digest FROM artifacts a \
                 JOIN blobs b ON b.id = a.blob_id \
                 WHERE b.run_id = $1 AND b.kind = 'artifacts' AND b.attempt = ( \
                     SELECT MAX(l.attempt) FROM blobs l \
                     WHERE l.run_id = b.run_id AND l.step_id = b.step_id AND l.kind = 'artifacts') \
                 ORDER BY b.step_id, a.name",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(ArtifactRow {
                        step_id: r.try_get("step_id")?,
                        attempt: r.try_get("attempt")?,
                        name: r.try_get("name")?,
                        size: r.try_get("size")?,
                        digest: r.try_get("digest")?,
                    })
                })
                .collect()
        })
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
        on_db!(self, pool => {
            let rows = sqlx::query(&sql)
                .bind(before)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| blob_row!(r)).collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Forgets a blob (its files with it) whose object was deleted.
    pub async fn delete_blob(&self, id: i64) -> anyhow::Result<()> {
        on_db!(self, pool => {
            sqlx::query("DELETE FROM blobs WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }
}
