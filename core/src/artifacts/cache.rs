//! Step cache archives in the blob store, content-addressed: `caches/<scope>/<sha256 hex>`
//! (`scope`: `repo-<id>` or `local`). [`Artifacts::put_cache`] streams a body into a
//! multipart upload under a fresh `caches/<scope>/upload-<random>` key, hashing it on the
//! way, and only once it is whole and within the limit moves it to the address of its
//! digest; [`Artifacts::get_cache`] streams an object back, checking it against the digest
//! and size recorded at save as it goes.
//!
//! Invariants: the digest is the engine's own, computed from the bytes as they arrived,
//! never a runner's word; nothing buffers a whole archive; an upload that fails (over the
//! limit, a broken body, the store) is aborted and leaves no object; a key is made of the
//! scope (from ids) and hex only. A download whose bytes do not match the recorded digest
//! or size ends with an error instead of its last chunk, so a client never receives a
//! tampered object whole.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::WriteMultipart;
use sha2::{Digest, Sha256};

use super::{ArtifactError, Artifacts, ByteStream};
use crate::store::Store;

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
    /// `limit` bytes; stored under its digest's address.
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
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            }
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

    /// The cache archive at `key`, cut with an error as soon as it is longer than `size`
    /// or, at its end, when its SHA-256 is not `digest`.
    pub async fn get_cache(
        &self,
        key: &str,
        digest: &str,
        size: u64,
    ) -> Result<ByteStream, ArtifactError> {
        let stream = self.get(key).await?;
        Ok(verified(stream, digest.to_owned(), size))
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

/// `stream`, checked against `digest` and `size` as it flows.
fn verified(stream: ByteStream, digest: String, size: u64) -> ByteStream {
    struct State {
        inner: ByteStream,
        hasher: Option<Sha256>,
        seen: u64,
        digest: String,
        size: u64,
    }
    let state = State {
        inner: stream,
        hasher: Some(Sha256::new()),
        seen: 0,
        digest,
        size,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let hasher = state.hasher.as_mut()?;
        match state.inner.next().await {
            Some(Ok(chunk)) => {
                state.seen += chunk.len() as u64;
                if state.seen > state.size {
                    state.hasher = None;
                    let e = std::io::Error::other("the cache archive is longer than recorded");
                    return Some((Err(e), state));
                }
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
                if got != state.digest || state.seen != state.size {
                    tracing::warn!(
                        "a cache archive does not match its record ({got}, {} bytes; recorded {}, {} bytes): download cut",
                        state.seen,
                        state.digest,
                        state.size
                    );
                    let e = std::io::Error::other("the cache archive does not match its digest");
                    return Some((Err(e), state));
                }
                None
            }
        }
    }))
}

#[cfg(test)]
mod tests {
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
        let stored = artifacts
            .put_cache("repo-1", 1024, body(&[b"hello ", b"world"]))
            .await
            .unwrap();
        let hex = hex::encode(Sha256::digest(b"hello world"));
        assert_eq!(stored.digest, format!("sha256:{hex}"));
        assert_eq!(stored.key, format!("caches/repo-1/{hex}"));
        assert_eq!(stored.size, 11);
        assert_eq!(files(dir.path()), vec![format!("caches/repo-1/{hex}")]);
        let back = artifacts
            .get_cache(&stored.key, &stored.digest, stored.size)
            .await
            .unwrap();
        assert_eq!(collect(back).await.unwrap(), b"hello world");
    }

    #[tokio::test]
    async fn an_archive_past_the_limit_or_broken_leaves_no_object() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::open(&ArtifactsConfig::local(dir.path().into())).unwrap();
        let refused = artifacts
            .put_cache("local", 8, body(&[b"01234", b"56789"]))
            .await;
        assert!(matches!(refused, Err(CacheBlobError::TooLarge { .. })));
        let broken = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"half")),
            Err("the runner went away"),
        ]);
        let refused = artifacts.put_cache("local", 1024, broken).await;
        assert!(matches!(refused, Err(CacheBlobError::Body(_))));
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_tampered_object_is_cut_before_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::open(&ArtifactsConfig::local(dir.path().into())).unwrap();
        let stored = artifacts
            .put_cache("local", 1024, body(&[b"trusted bytes"]))
            .await
            .unwrap();
        // Somebody with access to the blob store changes the bytes, same length...
        std::fs::write(dir.path().join(&stored.key), b"evil! bytes!!").unwrap();
        let back = artifacts
            .get_cache(&stored.key, &stored.digest, stored.size)
            .await
            .unwrap();
        assert!(collect(back).await.is_err());
        // ... or longer.
        std::fs::write(dir.path().join(&stored.key), b"trusted bytes and more").unwrap();
        let back = artifacts
            .get_cache(&stored.key, &stored.digest, stored.size)
            .await
            .unwrap();
        assert!(collect(back).await.is_err());
    }
}
