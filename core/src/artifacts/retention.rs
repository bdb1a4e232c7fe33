//! Retention: the blobs of runs older than the configured age are deleted, object first,
//! then the record (so a crash in between leaves a record whose object is gone, which the
//! next sweep deletes again, never an unrecorded object). And the objects of blob rows
//! deleted otherwise — a repository or a run deleted with its rows, a replaced record —
//! whose keys a trigger left in `doomed_blobs` with the delete: object first, then the key
//! ([`Artifacts::sweep_doomed`], at start, every [`SWEEP_EVERY`] and after a repository is
//! deleted), so no object outlives its row past a sweep, even across a crash. Cache entries
//! unused for the cache retention are deleted first ([`Artifacts::sweep_caches`]), so
//! their objects go in the same sweep.

use std::time::Duration;

use plue_store::{now_ms, Store};
use tokio_util::sync::CancellationToken;

use super::Artifacts;

/// How often expired blobs are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// The most blobs deleted per query.
const BATCH: i64 = 200;

impl Artifacts {
    /// Deletes the blobs of runs created before `now - retention`; returns how many.
    pub async fn sweep(&self, store: &Store, now: i64) -> anyhow::Result<u64> {
        let Some(retention) = self.retention else {
            return Ok(0);
        };
        let before = now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        let mut deleted = 0;
        loop {
            let expired = store.expired_blobs(before, BATCH).await?;
            if expired.is_empty() {
                return Ok(deleted);
            }
            for blob in expired {
                match self.store.delete(&self.location(&blob.key)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        // Kept for the next sweep.
                        tracing::warn!("deleting expired blob {}: {e}", blob.key);
                        return Ok(deleted);
                    }
                }
                store.delete_blob(blob.id).await?;
                deleted += 1;
            }
        }
    }

    /// Deletes the objects of blob rows that are gone (`doomed_blobs`); returns how many.
    pub async fn sweep_doomed(&self, store: &Store) -> anyhow::Result<u64> {
        let mut deleted = 0;
        loop {
            let doomed = store.doomed_blobs(BATCH).await?;
            if doomed.is_empty() {
                return Ok(deleted);
            }
            for key in doomed {
                match self.store.delete(&self.location(&key)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        // Kept for the next sweep.
                        tracing::warn!("deleting the blob {key} of a deleted row: {e}");
                        return Ok(deleted);
                    }
                }
                store.forget_doomed_blob(&key).await?;
                deleted += 1;
            }
        }
    }

    /// Sweeps at start and every `SWEEP_EVERY` until `shutdown`.
    pub async fn run_retention(self, store: Store, shutdown: CancellationToken) {
        loop {
            match self.sweep(&store, now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("deleted {n} expired artifact blobs"),
                Err(e) => tracing::warn!("artifact retention: {e:#}"),
            }
            match self.sweep_caches(&store, now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("deleted {n} cache entries unused for the retention"),
                Err(e) => tracing::warn!("cache retention: {e:#}"),
            }
            match self.sweep_doomed(&store).await {
                Ok(_) => {}
                Err(e) => tracing::warn!("deleting the blobs of deleted rows: {e:#}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    }
}
