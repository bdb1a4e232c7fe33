//! An upload from start to record: [`Artifacts::upload`] streams a body under the quotas of
//! its run (what its scopes kept when it began), [`Artifacts::record`] records the stored
//! blob after checking the quotas again in the recording transaction.
//!
//! Invariants: an object that is not recorded is deleted — refused by a quota at record
//! time, a failed transaction, an attempt that ended while it streamed — and the object a
//! record replaced is deleted after the record commits; the checks, the record and the
//! clean-up run on a task of their own, so a client that goes away once its body is
//! stored cannot leave an object no row names.

use bytes::Bytes;
use futures::Stream;
use plue_store::{now_ms, NewBlob, RecordError, Store};
use plue_types::protocol::BlobKind;

use super::quota::Allowance;
use super::{ArtifactError, Artifacts, Stored};

/// What an upload is of: one attempt's workspace or artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub run_id: i64,
    pub step_id: String,
    pub attempt: i64,
    pub kind: BlobKind,
}

impl Artifacts {
    /// Streams `body` to a fresh key of `upload`, under the per-step limit and what the
    /// run's quotas leave now, not counting the blob a retry of the same attempt would
    /// replace (as [`Artifacts::record`] does not); nothing is recorded yet.
    pub async fn upload<S, E>(
        &self,
        store: &Store,
        upload: &Upload,
        body: S,
    ) -> Result<Stored, ArtifactError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let usage = store
            .blob_usage(upload.run_id)
            .await
            .map_err(ArtifactError::Record)?
            .ok_or_else(|| ArtifactError::Record(anyhow::anyhow!("no run {}", upload.run_id)))?;
        // regression (attack q1): a retry larger than half of what the quota left was
        // refused while streaming, counted beside the blob it replaces.
        let replaced = store
            .attempt_blob_usage(
                upload.run_id,
                &upload.step_id,
                upload.attempt,
                upload.kind.as_str(),
            )
            .await
            .map_err(ArtifactError::Record)?;
        let usage = usage.without(replaced);
        let allowance = Allowance::new(&self.quotas, &usage);
        let key = Artifacts::key(upload.run_id, &upload.step_id, upload.attempt, upload.kind)
            .map_err(ArtifactError::Record)?;
        let reserved = self.streaming.reserve(upload.run_id);
        self.put_reserved(&key, upload.kind, &allowance, Some(reserved), body)
            .await
    }

    /// Records `stored` as `upload`'s blob if attempt `attempt_id` (the uploader's) is
    /// still live and the blob still fits the run's quotas (checked with the scopes
    /// locked); otherwise, or when recording fails, its object is deleted.
    pub async fn record(
        &self,
        store: &Store,
        upload: Upload,
        stored: Stored,
        attempt_id: i64,
    ) -> Result<(), ArtifactError> {
        let artifacts = self.clone();
        let store = store.clone();
        tokio::spawn(async move {
            match store.attempt_is_live(attempt_id).await {
                Ok(true) => artifacts.record_or_discard(&store, &upload, &stored).await,
                live => {
                    artifacts.discard(&stored.key).await;
                    Err(live.map_or_else(ArtifactError::Record, |_| ArtifactError::Ended))
                }
            }
        })
        .await
        .map_err(|e| ArtifactError::Record(anyhow::anyhow!("the recording task failed: {e}")))?
    }

    async fn record_or_discard(
        &self,
        store: &Store,
        upload: &Upload,
        stored: &Stored,
    ) -> Result<(), ArtifactError> {
        let files: Vec<(String, i64, String)> = stored
            .files
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    i64::try_from(f.size).unwrap_or(i64::MAX),
                    f.digest.clone(),
                )
            })
            .collect();
        let blob = NewBlob {
            run_id: upload.run_id,
            step_id: &upload.step_id,
            attempt: upload.attempt,
            kind: upload.kind.as_str(),
            key: &stored.key,
            size: i64::try_from(stored.size).unwrap_or(i64::MAX),
            digest: &stored.digest,
            files: &files,
            now: now_ms(),
        };
        let quotas = self.quotas;
        let recorded = store
            .record_blob(&blob, |usage| {
                Allowance::new(&quotas, usage).check(stored.size, files.len() as u64)
            })
            .await;
        match recorded {
            Ok(replaced) => {
                if let Some(replaced) = replaced {
                    self.discard(&replaced).await;
                }
                Ok(())
            }
            Err(e) => {
                self.discard(&stored.key).await;
                Err(match e {
                    RecordError::Refused(over) => ArtifactError::OverQuota {
                        kind: upload.kind.as_str(),
                        over,
                    },
                    RecordError::Store(e) => ArtifactError::Record(e),
                })
            }
        }
    }
}
