//! What the runner protocol's cache endpoints do, over the store's `cache_entries` and the
//! blob store's cache objects: find the entry an attempt's run may restore, hand out an
//! entry's archive only to a run that may read it, save a new entry into the run's own
//! partition.
//!
//! Invariants: the partition and scope always come from the run's stored row, never from
//! a request; an entry of a partition the run may not read, or written under a trust it
//! may not restore, is answered exactly as a missing one; a save's name and key are
//! checked ([`check_key`]) before any byte is read, and its archive is stored under the
//! engine's own digest, within the per-entry limit (the smaller of
//! `--artifacts-max-bytes` and the quota: its bytes and its decompressed content) and the
//! scope's quota, or not at all, recording the run, who caused it and its trust; a run
//! below `default` never evicts an entry of `default` or `protected`, and a save evicts
//! those only once no entry of a less trusted partition is left (what less trusted runs
//! fill never pushes the trusted caches out). No object outlives its entry past the
//! request that removed it: an eviction's objects, a refused save's and a tampered
//! entry's are deleted then (a failure to delete leaves them to the sweep).

use bytes::Bytes;
use futures::Stream;
use plue_store::{
    cache_scope, now_ms, CacheEntryRow, CachePlace, CacheRecorded, NewCacheEntry, Store,
};
use plue_types::partition::{Partition, Trust};
use plue_types::protocol::caches::{CacheEntry, CacheSaved, CacheSpec, MAX_KEY_BYTES};

use super::causer;
use crate::artifacts::cache::content::ContentError;
use crate::artifacts::cache::{CacheBlobError, OnMismatch};
use crate::artifacts::{ArtifactError, Artifacts, ByteStream};

/// A run's caches: its partition and its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCaches {
    pub run_id: i64,
    pub repo_id: Option<i64>,
    pub scope: String,
    pub partition: Partition,
}

/// Why a save was refused.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The name or key is not one a cache may have.
    #[error("{0}")]
    Invalid(String),
    /// The archive passes the per-entry limit or the repository's cache quota.
    #[error("{0}")]
    TooLarge(String),
    /// The runner's body failed.
    #[error("the upload failed: {0}")]
    Body(String),
    #[error(transparent)]
    Engine(#[from] anyhow::Error),
}

/// Checks a cache's `name` and `key` as a runner sends them: `[A-Za-z0-9._-]`, at most
/// [`MAX_KEY_BYTES`], and the key starting with `<name>-`.
pub fn check_key(name: &str, key: &str) -> Result<(), String> {
    let allowed = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if name.is_empty() || name.len() > MAX_KEY_BYTES || !allowed(name) || name.starts_with('.') {
        return Err(format!(
            "'{}' is not a cache name ([A-Za-z0-9._-], not starting with '.', at most {MAX_KEY_BYTES} bytes)",
            name.escape_debug()
        ));
    }
    if key.len() > MAX_KEY_BYTES || !allowed(key) {
        return Err(format!(
            "'{}' is not a cache key ([A-Za-z0-9._-], at most {MAX_KEY_BYTES} bytes)",
            key.escape_debug()
        ));
    }
    if !key.starts_with(&format!("{name}-")) || key.len() == name.len() + 1 {
        return Err(format!(
            "cache key '{key}' does not start with '{name}-' and something after it"
        ));
    }
    Ok(())
}

/// Run `run_id`'s caches, as its stored row says; `None` when there is no such run.
pub async fn of_run(store: &Store, run_id: i64) -> anyhow::Result<Option<RunCaches>> {
    let Some((partition, repo_id)) = store.run_cache_partition(run_id).await? else {
        return Ok(None);
    };
    Ok(Some(RunCaches {
        run_id,
        repo_id,
        scope: cache_scope(repo_id),
        partition,
    }))
}

impl RunCaches {
    /// Where this run restores from, in order: each partition it reads, with the trust its
    /// entries are written under (one the run may restore: [`Partition::may_read`]).
    fn places(&self) -> Vec<CachePlace> {
        self.partition
            .reads()
            .into_iter()
            .filter(|read| self.partition.may_read(read))
            .map(|read| CachePlace {
                trust: read.trust(),
                partition: read,
            })
            .collect()
    }

    /// The entry to restore for `spec` under the exact `key` (then its restore prefixes),
    /// marked used.
    pub async fn lookup(
        &self,
        store: &Store,
        spec: &CacheSpec,
        key: &str,
    ) -> anyhow::Result<Option<CacheEntry>> {
        let found = store
            .lookup_cache(
                &self.scope,
                &self.places(),
                &spec.name,
                key,
                &spec.restore_prefixes,
            )
            .await?;
        let Some((row, exact)) = found else {
            return Ok(None);
        };
        store.touch_cache_entry(row.id, now_ms()).await?;
        Ok(Some(CacheEntry {
            id: row.id,
            key: row.key,
            partition: row.partition_name,
            digest: row.digest,
            size: u64::try_from(row.size).unwrap_or(0),
            exact,
            written_by: Some(plue_types::protocol::caches::CacheWriter {
                run_id: row.run_id,
                causer: row.causer,
                trust: row.trust,
            }),
        }))
    }

    /// Entry `id` when this run may read it; `None` as well for one of another scope, a
    /// partition it may not read, or written under a trust it may not restore (the same
    /// answer as a missing entry).
    pub async fn readable_entry(
        &self,
        store: &Store,
        id: i64,
    ) -> anyhow::Result<Option<CacheEntryRow>> {
        let Some(entry) = store.cache_entry(id).await? else {
            return Ok(None);
        };
        let readable = entry.scope == self.scope
            && Partition::parse(&entry.partition_name).is_some_and(|writer| {
                self.partition.may_read(&writer)
                    && Trust::parse(&entry.trust).is_some_and(|trust| {
                        trust == writer.trust() && self.partition.trust().may_restore(trust)
                    })
            });
        Ok(readable.then_some(entry))
    }

    /// The archive of `entry` (one [`RunCaches::readable_entry`] gave): at most its
    /// recorded size; when its object does not match the record, every entry naming the
    /// object and the object itself are removed before the body ends (so the runner's own
    /// digest check refuses it, and its save of the key is recorded anew). `None`: its
    /// object is gone, and so is the entry now.
    pub async fn download(
        &self,
        artifacts: &Artifacts,
        store: &Store,
        entry: &CacheEntryRow,
    ) -> anyhow::Result<Option<ByteStream>> {
        let size = u64::try_from(entry.size).unwrap_or(0);
        let on_mismatch = remove_on_mismatch(artifacts.clone(), store.clone(), entry);
        match artifacts
            .get_cache(&entry.blob_key, &entry.digest, size, on_mismatch)
            .await
        {
            Ok(stream) => Ok(Some(stream)),
            Err(ArtifactError::Store(object_store::Error::NotFound { .. })) => {
                // Its object is gone: the entry is of no use to anyone.
                store.delete_cache_entry(entry.id).await?;
                Ok(None)
            }
            Err(e) => Err(anyhow::anyhow!("cache entry {}: {e}", entry.id)),
        }
    }

    /// The partitions whose entries this run may not evict: `default` and `protected`,
    /// for every run below them.
    fn kept(&self) -> Vec<Partition> {
        match self.partition {
            Partition::Protected | Partition::Default | Partition::Local => Vec::new(),
            _ => vec![Partition::Default, Partition::Protected],
        }
    }

    /// Saves `body` as the entry `key` of cache `name` in this run's partition (the name
    /// is one of the attempt's caches: the caller checked). An entry already there under
    /// the key is kept and answered (`created: false`), and the body is not read.
    pub async fn save<S, E>(
        &self,
        artifacts: &Artifacts,
        store: &Store,
        name: &str,
        key: &str,
        body: S,
    ) -> Result<CacheSaved, SaveError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        check_key(name, key).map_err(SaveError::Invalid)?;
        let own = [CachePlace {
            partition: self.partition.clone(),
            trust: self.partition.trust(),
        }];
        if let Some((row, true)) = store
            .lookup_cache(&self.scope, &own, name, key, &[])
            .await?
        {
            return Ok(saved(row, false));
        }
        let limits = artifacts.cache_limits();
        let limit = artifacts.cache_entry_limit();
        let stored = artifacts
            .put_cache(&self.scope, limit, body)
            .await
            .map_err(|e| match e {
                CacheBlobError::TooLarge { .. }
                | CacheBlobError::Content(ContentError::TooLarge { .. }) => {
                    SaveError::TooLarge(e.to_string())
                }
                CacheBlobError::Content(ContentError::NotZstd(_)) => {
                    SaveError::Invalid(e.to_string())
                }
                CacheBlobError::Body(why) => SaveError::Body(why),
                CacheBlobError::Store(e) => SaveError::Engine(anyhow::anyhow!("blob store: {e}")),
            })?;
        let causer = causer::shown(store.trigger_of(self.run_id).await?.as_ref());
        let new = NewCacheEntry {
            repo_id: self.repo_id,
            partition: self.partition.clone(),
            name,
            key,
            digest: &stored.digest,
            size: i64::try_from(stored.size).unwrap_or(i64::MAX),
            blob_key: &stored.key,
            run_id: self.run_id,
            causer: causer.as_deref(),
            trust: self.partition.trust(),
            now: now_ms(),
        };
        let quota = i64::try_from(limits.quota).unwrap_or(i64::MAX);
        let spared = [Partition::Default, Partition::Protected];
        let recorded = store
            .record_cache_entry(&new, quota, &self.kept(), &spared)
            .await;
        // What no entry names any more leaves the disk now, not at the next sweep: a run
        // within its quota cannot fill the disk by saving and evicting between sweeps.
        let unnamed = std::slice::from_ref(&stored.key);
        match recorded {
            Ok(CacheRecorded::Created { entry, evicted }) => {
                if !evicted.is_empty() {
                    tracing::info!(
                        scope = %self.scope,
                        "evicted {} least recently used cache entries for '{key}'",
                        evicted.len()
                    );
                    artifacts.drop_cache_objects(store, &evicted).await?;
                }
                Ok(saved(entry, true))
            }
            Ok(CacheRecorded::Kept(entry)) => {
                // Saved meanwhile by another attempt: ours goes, unless it is the same
                // object (an entry names it).
                artifacts.drop_cache_objects(store, unnamed).await?;
                Ok(saved(entry, false))
            }
            Ok(CacheRecorded::OverQuota { used }) => {
                artifacts.drop_cache_objects(store, unnamed).await?;
                Err(SaveError::TooLarge(format!(
                    "the cache entry ({}) does not fit the repository's cache quota of {} \
                     ({} kept; plue serve --cache-quota)",
                    plue_types::handoff::human(stored.size),
                    plue_types::handoff::human(limits.quota),
                    plue_types::handoff::human(u64::try_from(used).unwrap_or(0)),
                )))
            }
            Err(e) => {
                store.doom_blob_key(&stored.key).await?;
                Err(SaveError::Engine(e.context("recording a cache entry")))
            }
        }
    }
}

/// What a download of `entry` does when its object does not match the record: every entry
/// naming the object goes (the object is the same for all of them), then the object.
fn remove_on_mismatch(artifacts: Artifacts, store: Store, entry: &CacheEntryRow) -> OnMismatch {
    let (blob_key, id) = (entry.blob_key.clone(), entry.id);
    Box::new(move || {
        Box::pin(async move {
            let removed = async {
                let entries = store.delete_cache_entries_of_blob(&blob_key).await?;
                artifacts
                    .drop_cache_objects(&store, std::slice::from_ref(&blob_key))
                    .await?;
                anyhow::Ok(entries)
            }
            .await;
            match removed {
                Ok(entries) => tracing::warn!(
                    "cache entry {id} does not match its digest: {entries} entries of its object removed, and the object"
                ),
                Err(e) => tracing::warn!(
                    "cache entry {id} does not match its digest, and removing it failed: {e:#}"
                ),
            }
        })
    })
}

fn saved(row: CacheEntryRow, created: bool) -> CacheSaved {
    CacheSaved {
        id: row.id,
        partition: row.partition_name,
        digest: row.digest,
        size: u64::try_from(row.size).unwrap_or(0),
        created,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_checked() {
        assert_eq!(check_key("rust", "rust-0a1b"), Ok(()));
        assert_eq!(check_key("r.u_s-t", "r.u_s-t-x.y_z"), Ok(()));
        for (name, key) in [
            ("", "-x"),
            ("rust", "rust-"),
            ("rust", "rustx"),
            ("rust", "node-00"),
            ("rust", "rust-a/b"),
            ("rust", "rust-%2e%2e"),
            ("rust", "rust-a b"),
            ("../x", "../x-1"),
            ("..", "..-1"),
            (".hidden", ".hidden-1"),
            ("rust", "rust-é"),
        ] {
            assert!(check_key(name, key).is_err(), "{name} {key}");
        }
        let long = format!("rust-{}", "a".repeat(MAX_KEY_BYTES));
        assert!(check_key("rust", &long).is_err());
    }
}
