//! Step cache archives in the blob store, content-addressed: `caches/<scope>/<sha256 hex>`
//! (`scope`: `repo-<id>` or `local`). [`Artifacts::put_cache`] streams a body into a
//! multipart upload under a fresh `caches/<scope>/upload-<random>` key, hashing it and
//! counting its decompressed content ([`content`]) on the way, and only once it is whole
//! and within the limit moves it to the address of its digest; [`Artifacts::get_cache`]
//! streams an object back, checking it against the digest and size recorded at save as it
//! goes; [`Artifacts::drop_cache_objects`] deletes objects no entry names any more at once
//! (an eviction's, a refused save's, a tampered entry's), not at the next sweep.
//!
//! Invariants: the digest is the engine's own, computed from the bytes as they arrived,
//! never a runner's word; nothing buffers a whole archive; an upload that fails (over the
//! limit — its bytes or its decompressed content —, not zstd, a broken body, the store) is
//! aborted and leaves no object; a key is made of the scope (from ids) and hex only. A
//! download sends at most the recorded size; when the object's bytes do not match the
//! recorded digest or size, the download's mismatch hook (which removes the entries naming
//! the object, and the object) has run before the body ends — so the runner, which checks
//! the digest itself before unpacking anything, refuses it with "does not match its
//! digest", and its own save of the key is recorded anew. A failure to read the store
//! ends the body with an error.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use object_store::WriteMultipart;
use plue_store::Store;
use sha2::{Digest, Sha256};

use super::{ArtifactError, Artifacts, ByteStream};

pub mod content;

use content::{ContentError, ContentMeter};

/// What a download does, before its body ends, when the object does not match its record.
pub type OnMismatch = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// How many parts may be in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A cache archive [`Artifacts::put_cache`] stored (no row names it yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStored {
    /// `caches/<scope>/<hex>`.
    pub key: String,
    pub size: u64,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// Why a cache archive could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum CacheBlobError {
    #[error("the cache archive is larger than the limit of {limit}")]
    TooLarge { limit: String },
    /// The decompressed archive passes the limit, or is not zstd.
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("the upload failed: {0}")]
    Body(String),
    #[error("the blob store failed: {0}")]
    Store(#[from] object_store::Error),
}

impl Artifacts {
    /// The content address of a cache archive of `scope` with `digest` (`sha256:<hex>`);
    /// `None` when either is not what the engine makes.
    pub fn cache_key(scope: &str, digest: &str) -> Option<String> {
        let hex = digest.strip_prefix("sha256:")?;
        let scope_ok = scope == "local"
            || scope
                .strip_prefix("repo-")
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        let hex_ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (scope_ok && hex_ok).then(|| format!("caches/{scope}/{hex}"))
    }

    /// Streams `body` into the store as a cache archive of `scope`, refusing it past
    /// `limit` bytes, or when its decompressed content passes `limit` (what a runner
    /// restoring it would write) or is not zstd; stored under its digest's address.
    pub async fn put_cache<S, E>(
        &self,
        scope: &str,
        limit: u64,
        body: S,
    ) -> Result<CacheStored, CacheBlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce)
            .map_err(|e| CacheBlobError::Body(format!("no randomness from the OS: {e}")))?;
        // Checked like the final key, with a digest of zeros.
        if Artifacts::cache_key(scope, &format!("sha256:{}", "0".repeat(64))).is_none() {
            return Err(CacheBlobError::Body(format!("'{scope}' is no cache scope")));
        }
        let upload_key = format!("caches/{scope}/upload-{}", hex::encode(nonce));
        let location = self.location(&upload_key);
        let upload = self.store.put_multipart(&location).await?;
        let mut writer = WriteMultipart::new(upload);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        let streamed: Result<(), CacheBlobError> = async {
            let mut meter = ContentMeter::new(limit)?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| CacheBlobError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(CacheBlobError::TooLarge {
                        limit: plue_types::handoff::human(limit),
                    });
                }
                hasher.update(&chunk);
                writer.write(&chunk);
                // Decoding a chunk may take a while (up to the bound): off the runtime.
                let piece = chunk.clone();
                let fed = tokio::task::spawn_blocking(move || {
                    let fed = meter.feed(&piece);
                    (meter, fed)
                })
                .await
                .map_err(|e| CacheBlobError::Body(format!("the counting task failed: {e}")))?;
                meter = fed.0;
                fed.1?;
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            }
            meter.finish()?;
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            if let Err(abort) = writer.abort().await {
                tracing::warn!("aborting the cache upload {upload_key}: {abort}");
            }
            return Err(e);
        }
        writer.finish().await?;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        let key = Artifacts::cache_key(scope, &digest)
            .ok_or_else(|| CacheBlobError::Body("a digest the engine cannot address".into()))?;
        // The same bytes make the same object: replacing it changes nothing readers see.
        if let Err(e) = self.store.rename(&location, &self.location(&key)).await {
            self.discard(&upload_key).await;
            return Err(e.into());
        }
        Ok(CacheStored { key, size, digest })
    }

    /// The cache archive at `key`: at most its first `size` bytes; when they are not the
    /// recorded ones (their SHA-256 is not `digest`, the object is shorter or longer),
    /// `on_mismatch` runs before the body ends.
    pub async fn get_cache(
        &self,
        key: &str,
        digest: &str,
        size: u64,
        on_mismatch: OnMismatch,
    ) -> Result<ByteStream, ArtifactError> {
        let stream = self.get(key).await?;
        Ok(verified(stream, digest.to_owned(), size, on_mismatch))
    }

    /// Deletes the cache objects at `keys` that no entry names, now (each is left to the
    /// sweep of doomed blobs first, so a crash or a failure to delete leaves it there for
    /// the next sweep); returns how many were deleted.
    pub async fn drop_cache_objects(&self, store: &Store, keys: &[String]) -> anyhow::Result<u64> {
        let mut deleted = 0;
        for key in keys {
            store.doom_blob_key(key).await?;
            if store.cache_object_named(key).await? {
                continue;
            }
            match self.store.delete(&self.location(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!("deleting the cache object {key}: {e} (left to the sweep)");
                    continue;
                }
            }
            store.forget_doomed_blob(key).await?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

impl Artifacts {
    /// Deletes the cache entries unused for the cache retention (their objects go with the
    /// sweep of doomed blobs); returns how many.
    pub async fn sweep_caches(&self, store: &Store, now: i64) -> anyhow::Result<u64> {
        let Some(retention) = self.caches.retention else {
            return Ok(0);
        };
        let before = now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        store.delete_unused_cache_entries(before).await
    }
}

/// `stream`, at most its first `size` bytes, checked against `digest` and `size` as it
/// flows; `on_mismatch` runs before the end when they do not match.
fn verified(stream: ByteStream, digest: String, size: u64, on_mismatch: OnMismatch) -> ByteStream {
    struct State {
        inner: ByteStream,
        hasher: Option<Sha256>,
        seen: u64,
        /// The object had more than `size` bytes: what was sent is all that will be.
        longer: bool,
        digest: String,
        size: u64,
        on_mismatch: Option<OnMismatch>,
    }
    let state = State {
        inner: stream,
        hasher: Some(Sha256::new()),
        seen: 0,
        longer: false,
        digest,
        size,
        on_mismatch: Some(on_mismatch),
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let hasher = state.hasher.as_mut()?;
        let next = if state.longer {
            None
        } else {
            state.inner.next().await
        };
        match next {
            Some(Ok(mut chunk)) => {
                let room = state.size - state.seen;
                if chunk.len() as u64 > room {
                    chunk.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                    state.longer = true;
                }
                state.seen += chunk.len() as u64;
                hasher.update(&chunk);
                Some((Ok(chunk), state))
            }
            Some(Err(e)) => {
                state.hasher = None;
                Some((Err(e), state))
            }
            None => {
                let hasher = state.hasher.take()?;
                let got = format!("sha256:{}", hex::encode(hasher.finalize()));
                if state.longer || got != state.digest || state.seen != state.size {
                    tracing::warn!(
                        "a cache archive does not match its record ({got}, {} bytes{}; recorded {}, {} bytes): its entries are removed",
                        state.seen,
                        if state.longer { " and more" } else { "" },
                        state.digest,
                        state.size
                    );
                    if let Some(hook) = state.on_mismatch.take() {
                        hook().await;
                    }
                }
                None
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::artifacts::ArtifactsConfig;

    fn body(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::copy_from_slice(p)))
                .collect::<Vec<_>>(),
        )
    }

    fn zstd(content: &[u8]) -> Vec<u8> {
        zstd::encode_all(content, 3).unwrap()
    }

    async fn collect(stream: ByteStream) -> Result<Vec<u8>, std::io::Error> {
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn files(dir: &std::path::Path) -> Vec<String> {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                e.path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    /// A mismatch hook that counts its calls.
    fn counted() -> (OnMismatch, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let hook: OnMismatch = Box::new(move || {
            Box::pin(async move {
                seen.fetch_add(1, Ordering::SeqCst);
            })
        });
        (hook, calls)
    }

    #[test]
    fn keys_are_made_of_ids_and_hex_only() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            Artifacts::cache_key("repo-7", &digest).as_deref(),
            Some(format!("caches/repo-7/{}", "ab".repeat(32)).as_str())
        );
        for (scope, digest) in [
            ("repo-7/../x", digest.as_str()),
            ("repo-", digest.as_str()),
            ("other", digest.as_str()),
            ("local", "sha256:../../etc"),
            ("local", "md5:00"),
        ] {
            assert_eq!(
                Artifacts::cache_key(scope, digest),
                None,
                "{scope} {digest}"
            );
        }
    }

    #[tokio::test]
    async fn an_archive_is_stored_under_its_digest_and_read_back_checked() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::open(&ArtifactsConfig::local(dir.path().into())).unwrap();
        let archive = zstd(b"hello world");
        let (first, second) = archive.split_at(5);
        let stored = artifacts
            .put_cache("repo-1", 1024, body(&[first, second]))
            .await
            .unwrap();
        let hex = hex::encode(Sha256::digest(&archive));
        assert_eq!(stored.digest, format!("sha256:{hex}"));
        assert_eq!(stored.key, format!("caches/repo-1/{hex}"));
        assert_eq!(stored.size, archive.len() as u64);
        assert_eq!(files(dir.path()), vec![format!("caches/repo-1/{hex}")]);
        let (hook, calls) = counted();
        let back = artifacts
            .get_cache(&stored.key, &stored.digest, stored.size, hook)
            .await
            .unwrap();
        assert_eq!(collect(back).await.unwrap(), archive);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "a good object is no mismatch"
        );
    }

    #[tokio::test]
    async fn an_archive_past_the_limit_or_broken_leaves_no_object() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::open(&ArtifactsConfig::local(dir.path().into())).unwrap();
        let archive = zstd(b"0123456789abcdef");
        let (first, second) = archive.split_at(6);
        let refused = artifacts
            .put_cache("local", 8, body(&[first, second]))
            .await;
        assert!(
            matches!(refused, Err(CacheBlobError::TooLarge { .. })),
            "{refused:?}"
        );
        let half = Bytes::copy_from_slice(&archive[..4]);
        let broken = futures::stream::iter(vec![Ok(half), Err("the runner went away")]);
        let refused = artifacts.put_cache("local", 1024, broken).await;
        assert!(matches!(refused, Err(CacheBlobError::Body(_))));
        let refused = artifacts
            .put_cache("local", 1024, body(&[b"not zstd at all"]))
            .await;
        assert!(
            matches!(
                refused,
                Err(CacheBlobError::Content(ContentError::NotZstd(_)))
            ),
            "{refused:?}"
        );
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    // The attack (issue 69): a runner (or whoever holds its token) saves 192 MiB of zeros
    // as a few KiB of zstd under a 64 MiB bound. The engine counts what a restore would
    // write and refuses it while it streams, leaving no object.
    #[tokio::test]
    async fn a_decompression_bomb_is_refused_at_save() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::open(&ArtifactsConfig::local(dir.path().into())).unwrap();
        let mut encoder = zstd::Encoder::new(Vec::new(), 19).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..192 {
            std::io::Write::write_all(&mut encoder, &zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 64 << 10);
        let chunks: Vec<&[u8]> = bomb.chunks(4096).collect();
        let refused = artifacts.put_cache("repo-1", 64 << 20, body(&chunks)).await;
        assert!(
            matches!(
                refused,
                Err(CacheBlobError::Content(ContentError::TooLarge { .. }))
            ),
            "{refused:?}"
        );
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    // Somebody with access to the blob store changes an entry's bytes. The download sends
    // no more than the recorded size, and the mismatch hook (which removes the entry) has
    // run by the time the body ends; the client's own digest check refuses what it got.
    #[tokio::test]
    async fn a_tampered_object_runs_the_mismatch_hook_before_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::open(&ArtifactsConfig::local(dir.path().into())).unwrap();
        let archive = zstd(b"trusted bytes");
        let stored = artifacts
            .put_cache("local", 1024, body(&[&archive]))
            .await
            .unwrap();
        let mut same_length = archive.clone();
        let last = same_length.len() - 1;
        same_length[last] ^= 1;
        let mut longer = archive.clone();
        longer.extend_from_slice(b"and more");
        let shorter = archive[..archive.len() - 1].to_vec();
        for (tampered, sends_the_saved_bytes) in
            [(same_length, false), (longer, true), (shorter, false)]
        {
            std::fs::write(dir.path().join(&stored.key), &tampered).unwrap();
            let (hook, calls) = counted();
            let back = artifacts
                .get_cache(&stored.key, &stored.digest, stored.size, hook)
                .await
                .unwrap();
            let got = collect(back).await.unwrap();
            assert!(got.len() as u64 <= stored.size, "never more than recorded");
            // What was appended is never sent: the recorded bytes, whole, are all a
            // longer object gives; any other change fails the client's digest check.
            let matches = format!("sha256:{}", hex::encode(Sha256::digest(&got))) == stored.digest;
            assert_eq!(matches, sends_the_saved_bytes, "{tampered:?}");
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{tampered:?}");
        }
    }

    // Objects no entry names go at once; one an entry names stays.
    #[tokio::test]
    async fn dropped_objects_leave_the_disk_at_once_unless_named() {
        let (store, _db) = plue_store::testing::sqlite().await;
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::open(&ArtifactsConfig::local(dir.path().into())).unwrap();
        let kept = artifacts
            .put_cache("local", 1024, body(&[&zstd(b"kept")]))
            .await
            .unwrap();
        let gone = artifacts
            .put_cache("local", 1024, body(&[&zstd(b"gone")]))
            .await
            .unwrap();
        let plan = evaluator::plan::Plan::new("ci", Vec::new());
        let json = serde_json::to_string(&plan).unwrap();
        let run = store
            .create_run(&plue_store::testing::local_run(&plan, &json), 1)
            .await
            .unwrap()
            .id;
        let entry = plue_store::NewCacheEntry {
            repo_id: None,
            partition: plue_types::partition::Partition::Local,
            name: "rust",
            key: "rust-1",
            digest: &kept.digest,
            size: kept.size as i64,
            blob_key: &kept.key,
            run_id: run,
            causer: None,
            trust: plue_types::partition::Trust::Local,
            now: 1,
        };
        store
            .record_cache_entry(&entry, 1 << 30, &[], &[])
            .await
            .unwrap();
        let deleted = artifacts
            .drop_cache_objects(&store, &[kept.key.clone(), gone.key.clone()])
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        assert_eq!(files(dir.path()), vec![kept.key.clone()]);
        assert_eq!(store.doomed_blobs(10).await.unwrap(), Vec::<String>::new());
    }
}
