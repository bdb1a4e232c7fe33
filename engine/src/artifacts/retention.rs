//! Retention: the blobs of runs older than the configured age are deleted, object first,
//! then the record (so a crash in between leaves a record whose object is gone, which the
//! next sweep deletes again, never an unrecorded object).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Artifacts;
use crate::store::{now_ms, Store};

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

    /// Sweeps at start and every [`SWEEP_EVERY`] until `shutdown`.
    pub async fn run_retention(self, store: Store, shutdown: CancellationToken) {
        if self.retention.is_none() {
            return;
        }
        loop {
            match self.sweep(&store, now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("deleted {n} expired artifact blobs"),
                Err(e) => tracing::warn!("artifact retention: {e:#}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    }
}
