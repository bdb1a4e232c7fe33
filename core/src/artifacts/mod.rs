//! Blobs of step hand-offs and artifacts: the tars runners upload after a step (its final
//! workspace, its artifact files) and download before a later one, kept in an object
//! store — a directory below the data directory by default, or an S3-compatible bucket
//! (`plue serve --artifacts-url s3://bucket/prefix`, endpoint, region and credentials from
//! the `AWS_*` environment).
//!
//! [`Artifacts`] is the one entry point: [`Artifacts::put`] streams a body into a multipart
//! upload under a per-step size limit and the run's quotas ([`quota`]; an artifacts tar is
//! listed on the way: every file with its size and digest, every entry checked as the
//! runner's unpacker checks it, no path twice); [`Artifacts::record`] records it, checking
//! the quotas again in the recording transaction; [`Artifacts::get`] and
//! [`Artifacts::file`] stream a blob, or one file of it, back (to a client:
//! [`Artifacts::download`] and [`Artifacts::file`], in capped slots, dropped when the
//! client stalls, no blocking thread ever waiting on it: [`read`]); [`Artifacts::sweep`]
//! deletes the blobs of runs past the retention (which frees quota). Step cache archives
//! live beside them, content-addressed ([`cache`]).
//!
//! Invariants: nothing here buffers a whole blob; a blob that failed (over the limit or a
//! quota, a refused entry, a broken body, a record that failed) is aborted or deleted and
//! never recorded, so no object is left that no row names; keys are built from ids, step
//! ids (identifiers) and a random suffix only, never from a path a client sent, and each
//! upload has its own key, so a refused one never touches an object already recorded.

pub mod cache;
pub mod quota;
pub mod read;
mod record;
mod retention;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::path::Path as Location;
use object_store::ObjectStore;
use plue_types::protocol::BlobKind;

pub use quota::{OverQuota, Quota, Quotas};
pub use read::{Busy, ByteStream, Downloads, Slot};
pub use record::Upload;
pub use write::{Reserved, Stored, Streaming};

/// Where blobs go and how long they stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactsConfig {
    /// `s3://bucket/prefix`; `None`: the local directory.
    pub url: Option<String>,
    /// The local directory (created if needed) when there is no URL.
    pub local_dir: PathBuf,
    /// The most bytes of one tar of one step attempt.
    pub max_bytes: u64,
    /// Blobs of runs older than this are deleted; `None`: kept.
    pub retention: Option<Duration>,
    /// What a run, a fork's run and a repository may keep in all.
    pub quotas: Quotas,
    /// What step caches may keep, and for how long ([`cache`]).
    pub caches: CacheLimits,
}

/// The bounds of step caches: per scope (a repository, or the local runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// The most bytes a repository's entries keep (`plue serve --cache-quota`); the least
    /// recently used are evicted past it.
    pub quota: u64,
    /// Entries unused this long are deleted (`--cache-retention-days`); `None`: kept.
    pub retention: Option<Duration>,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            quota: DEFAULT_CACHE_QUOTA,
            retention: Some(Duration::from_secs(
                DEFAULT_CACHE_RETENTION_DAYS * 24 * 3600,
            )),
        }
    }
}

/// The default cache quota of a repository: 10 GiB.
pub const DEFAULT_CACHE_QUOTA: u64 = 10 << 30;
/// The default cache retention in days.
pub const DEFAULT_CACHE_RETENTION_DAYS: u64 = 7;

impl ArtifactsConfig {
    /// A local store in `dir` with the default limit and retention.
    pub fn local(dir: PathBuf) -> ArtifactsConfig {
        ArtifactsConfig {
            url: None,
            local_dir: dir,
            max_bytes: DEFAULT_MAX_BYTES,
            retention: Some(Duration::from_secs(DEFAULT_RETENTION_DAYS * 24 * 3600)),
            quotas: Quotas::default(),
            caches: CacheLimits::default(),
        }
    }
}

/// The default per-step limit: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = plue_types::handoff::DEFAULT_MAX_BYTES;
/// The default retention in days.
pub const DEFAULT_RETENTION_DAYS: u64 = 30;

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The body grew past the per-step limit.
    #[error("the {kind} is larger than the limit of {limit} per step (plue serve --artifacts-max-bytes)")]
    TooLarge { kind: &'static str, limit: String },
    /// The upload would pass one of the run's quotas.
    #[error("the {kind} would pass {over}")]
    OverQuota { kind: &'static str, over: OverQuota },
    /// An artifacts tar holds an entry no runner would unpack, or a path twice.
    #[error("{0}")]
    Refused(String),
    /// The attempt ended while its blob streamed: it was deleted, not recorded.
    #[error("the attempt has ended; its files can no longer change")]
    Ended,
    /// The blob was stored but could not be recorded (it was deleted again).
    #[error("recording the blob failed: {0:#}")]
    Record(anyhow::Error),
    /// The uploader's body failed or ended early.
    #[error("the upload failed: {0}")]
    Body(String),
    /// The object store failed.
    #[error("the blob store failed: {0}")]
    Store(#[from] object_store::Error),
}

/// The blob store.
#[derive(Debug, Clone)]
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
    prefix: Location,
    max_bytes: u64,
    retention: Option<Duration>,
    quotas: Quotas,
    caches: CacheLimits,
    downloads: Arc<Downloads>,
    streaming: Arc<Streaming>,
}

impl Artifacts {
    /// Opens the store `config` names (an S3 bucket is not contacted until first use).
    pub fn open(config: &ArtifactsConfig) -> anyhow::Result<Artifacts> {
        let (store, prefix): (Arc<dyn ObjectStore>, Location) = match &config.url {
            None => {
                std::fs::create_dir_all(&config.local_dir).with_context(|| {
                    format!(
                        "creating the artifacts directory {}",
                        config.local_dir.display()
                    )
                })?;
                let store =
                    object_store::local::LocalFileSystem::new_with_prefix(&config.local_dir)
                        .context("opening the artifacts directory")?;
                (Arc::new(store), Location::default())
            }
            Some(url) => {
                let rest = url.strip_prefix("s3://").with_context(|| {
                    format!("--artifacts-url '{url}': only s3://bucket/prefix is supported")
                })?;
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    anyhow::bail!("--artifacts-url '{url}': no bucket");
                }
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                // An S3-compatible endpoint (MinIO, moto, ...) over plain HTTP is allowed
                // when the operator names one.
                if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                    builder = builder
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                let store = builder
                    .build()
                    .with_context(|| format!("--artifacts-url '{url}'"))?;
                (Arc::new(store), Location::from(prefix.trim_matches('/')))
            }
        };
        Ok(Artifacts {
            store,
            prefix,
            max_bytes: config.max_bytes,
            retention: config.retention,
            quotas: config.quotas,
            caches: config.caches,
            downloads: Arc::new(Downloads::default()),
            streaming: Arc::new(Streaming::default()),
        })
    }

    /// The per-step limit, which runners are told too.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The bytes uploads stream now, by run.
    pub fn streaming(&self) -> &Streaming {
        &self.streaming
    }

    /// The bounds of step caches.
    pub fn cache_limits(&self) -> CacheLimits {
        self.caches
    }

    /// The most one cache entry may hold: the per-step limit, within the cache quota. The
    /// runner is told it ([`plue_types::protocol::caches::CacheSpec::max_bytes`]) and
    /// counts the archive's content as it writes it; the engine holds the upload and its
    /// decompressed content to it.
    pub fn cache_entry_limit(&self) -> u64 {
        self.max_bytes.min(self.caches.quota)
    }

    /// The quotas uploads are held to.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// A fresh key for the `kind` tar of one attempt of a step: the ids, then a random
    /// suffix, so an upload never overwrites an object another one recorded.
    pub fn key(run_id: i64, step_id: &str, attempt: i64, kind: BlobKind) -> anyhow::Result<String> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce)
            .map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
        Ok(format!(
            "runs/{run_id}/{step_id}/{attempt}/{}-{}.tar",
            kind.as_str(),
            hex::encode(nonce)
        ))
    }

    /// Deletes the object at `key` (one no row names); a failure is logged.
    pub async fn discard(&self, key: &str) {
        match self.store.delete(&self.location(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!("deleting the unrecorded blob {key}: {e}"),
        }
    }

    fn location(&self, key: &str) -> Location {
        let mut location = self.prefix.clone();
        for part in key.split('/') {
            location = location.child(part);
        }
        location
    }
}

#[cfg(test)]
mod tests;
