//! `cache_entries`: the step caches runs saved, by scope (`repo-<id>`, or `local` for runs
//! without a repository), trust partition and trust (`core::caches::partition` decides
//! which, and which a run may read: the store only filters by the partitions it is given,
//! stored as their labels).
//! Each entry records the run that saved it, who caused that run and the trust it was
//! written under (migration 0043).
//!
//! Invariants:
//! - A lookup matches an entry's partition **and** its trust, as pairs the caller gives:
//!   an entry recorded under another trust than its pair's is never found, whatever its
//!   partition.
//! - A scope's partition keeps the first entry saved under a key: [`Store::record_cache_entry`]
//!   never replaces one (the second save answers the first entry).
//! - A lookup ([`Store::lookup_cache`]) looks only in the partitions it is given, in their
//!   order: the exact key first, then each restore prefix (matched literally by `substr`,
//!   never as a `LIKE` pattern), the most recently saved entry first.
//! - A scope keeps at most its quota: a record evicts the least recently used entries it
//!   may (never those of the partitions it is told to keep; those of the partitions it is
//!   told to spare only once every other one is gone, so what less trusted runs fill never
//!   pushes a trusted partition's entries out) and, when that is not enough, records
//!   nothing. Records of one scope are serialised (the repository's row locked on
//!   PostgreSQL; SQLite runs one transaction at a time).
//! - A deleted entry leaves its blob key in `doomed_blobs` (a trigger, migration 0033);
//!   the sweep deletes an object only when no entry (and no hand-off blob) names it. A
//!   record says which objects its evictions left unnamed, for the caller to delete at
//!   once ([`CacheRecorded::Created::evicted`]).

use plue_types::partition::{Partition, Trust};
use sqlx::Row;

use super::{on_db, Store};

/// The scope of a run's caches: its repository's, or the local one.
pub fn cache_scope(repo_id: Option<i64>) -> String {
    match repo_id {
        Some(id) => format!("repo-{id}"),
        None => "local".to_owned(),
    }
}

/// A stored cache entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CacheEntryRow {
    pub id: i64,
    pub repo_id: Option<i64>,
    pub scope: String,
    pub partition_name: String,
    pub name: String,
    pub key: String,
    /// `sha256:<hex>` of the archive, as the engine computed it when it was saved.
    pub digest: String,
    pub size: i64,
    pub blob_key: String,
    pub run_id: Option<i64>,
    /// Who caused the run that saved it, as recorded with the run (`github:alice`, a
    /// user's name, `schedule`); `None` when nobody was recorded.
    pub causer: Option<String>,
    /// The trust it was written under (`trusted`, `relayed`, `outsider`, `local`).
    pub trust: String,
    pub created_at: i64,
    pub last_used_at: i64,
}

const COLUMNS: &str = "id, repo_id, scope, partition_name, name, key, digest, size, blob_key, \
     run_id, causer, trust, created_at, last_used_at";

/// An entry about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCacheEntry<'a> {
    pub repo_id: Option<i64>,
    pub partition: Partition,
    pub name: &'a str,
    pub key: &'a str,
    pub digest: &'a str,
    pub size: i64,
    pub blob_key: &'a str,
    pub run_id: i64,
    /// Who caused the run (see [`CacheEntryRow::causer`]).
    pub causer: Option<&'a str>,
    /// The trust the run writes under.
    pub trust: Trust,
    pub now: i64,
}

/// A place a lookup looks: a partition, and the trust its entries must have been written
/// under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlace {
    pub partition: Partition,
    pub trust: Trust,
}

/// What [`Store::record_cache_entry`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheRecorded {
    /// The entry is new; `evicted`: the blob keys of the older entries evicted for it
    /// (several may name one object).
    Created {
        entry: CacheEntryRow,
        evicted: Vec<String>,
    },
    /// The partition already had an entry under the key: kept, nothing recorded.
    Kept(CacheEntryRow),
    /// The scope's quota has no room for it, even after evicting what may be evicted.
    OverQuota { used: i64 },
}

impl Store {
    /// The entry to restore for cache `name` and exact `key`, looking in `places` in
    /// order: the exact key first, then each of `prefixes` (the most recently saved first).
    /// The flag is whether the key matched exactly.
    pub async fn lookup_cache(
        &self,
        scope: &str,
        places: &[CachePlace],
        name: &str,
        key: &str,
        prefixes: &[String],
    ) -> anyhow::Result<Option<(CacheEntryRow, bool)>> {
        for place in places {
            let (partition, trust) = (place.partition.label(), place.trust.label());
            let sql = format!(
                "SELECT {COLUMNS} FROM cache_entries \
                 WHERE scope = $1 AND partition_name = $2 AND name = $3 AND key = $4 \
                 AND trust = $5"
            );
            let found: Option<CacheEntryRow> = on_db!(self, pool => sqlx::query_as(&sql)
                .bind(scope)
                .bind(&partition)
                .bind(name)
                .bind(key)
                .bind(trust)
                .fetch_optional(pool)
                .await?);
            if let Some(entry) = found {
                return Ok(Some((entry, true)));
            }
        }
        for prefix in prefixes {
            for place in places {
                let (partition, trust) = (place.partition.label(), place.trust.label());
                // `substr`, not `LIKE`: a prefix's `%` and `_` are characters, not patterns.
                let sql = format!(
                    "SELECT {COLUMNS} FROM cache_entries \
                     WHERE scope = $1 AND partition_name = $2 AND name = $3 \
                     AND substr(key, 1, length($4)) = $4 AND trust = $5 \
                     ORDER BY created_at DESC, id DESC LIMIT 1"
                );
                let found: Option<CacheEntryRow> = on_db!(self, pool => sqlx::query_as(&sql)
                    .bind(scope)
                    .bind(&partition)
                    .bind(name)
                    .bind(prefix)
                    .bind(trust)
                    .fetch_optional(pool)
                    .await?);
                if let Some(entry) = found {
                    return Ok(Some((entry, false)));
                }
            }
        }
        Ok(None)
    }

    /// Entry `id`, when it exists.
    pub async fn cache_entry(&self, id: i64) -> anyhow::Result<Option<CacheEntryRow>> {
        let sql = format!("SELECT {COLUMNS} FROM cache_entries WHERE id = $1");
        Ok(on_db!(self, pool => sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await?))
    }

    /// Records `entry` in its scope within `quota` bytes, evicting the least recently used
    /// entries of partitions not in `keep` when it would not fit — those of partitions in
    /// `spare` only after every other one; a partition's existing entry under the key is
    /// kept instead (see [`CacheRecorded`]).
    pub async fn record_cache_entry(
        &self,
        entry: &NewCacheEntry<'_>,
        quota: i64,
        keep: &[Partition],
        spare: &[Partition],
    ) -> anyhow::Result<CacheRecorded> {
        let scope = cache_scope(entry.repo_id);
        let partition = entry.partition.label();
        // Rows name their partitions by label.
        let keep: Vec<String> = keep.iter().map(Partition::label).collect();
        let spare: Vec<String> = spare.iter().map(Partition::label).collect();
        let existing_sql = format!(
            "SELECT {COLUMNS} FROM cache_entries \
             WHERE scope = $1 AND partition_name = $2 AND key = $3"
        );
        let insert_sql = format!(
            "INSERT INTO cache_entries (repo_id, scope, partition_name, name, key, digest, size, \
             blob_key, run_id, causer, trust, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
             ON CONFLICT (scope, partition_name, key) DO NOTHING RETURNING {COLUMNS}"
        );
        let postgres = matches!(self.db, super::Db::Postgres(_));
        on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            if postgres {
                // One record of a scope at a time: the quota is checked against what the
                // others recorded.
                match entry.repo_id {
                    Some(repo_id) => {
                        sqlx::query("SELECT id FROM repositories WHERE id = $1 FOR NO KEY UPDATE")
                            .bind(repo_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    }
                    None => {
                        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('plue-cache-local'))")
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            let existing: Option<CacheEntryRow> = sqlx::query_as(&existing_sql)
                .bind(&scope)
                .bind(&partition)
                .bind(entry.key)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(existing) = existing {
                return Ok(CacheRecorded::Kept(existing));
            }
            let used: i64 = sqlx::query(
                "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS used FROM cache_entries \
                 WHERE scope = $1",
            )
            .bind(&scope)
            .fetch_one(&mut *tx)
            .await?
            .try_get("used")?;
            let mut evicted = Vec::new();
            if used.saturating_add(entry.size) > quota {
                let candidates = sqlx::query(
                    "SELECT id, size, partition_name, blob_key FROM cache_entries \
                     WHERE scope = $1 ORDER BY last_used_at, id",
                )
                .bind(&scope)
                .fetch_all(&mut *tx)
                .await?;
                // Least recently used first, but the spared partitions' entries last.
                let mut candidates = candidates
                    .into_iter()
                    .map(|row| {
                        let partition: String = row.try_get("partition_name")?;
                        Ok((spare.contains(&partition), row))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                candidates.sort_by_key(|(spared, _)| *spared);
                let candidates = candidates.into_iter().map(|(_, row)| row);
                let mut left = used;
                let mut doomed = Vec::new();
                for row in candidates {
                    if left.saturating_add(entry.size) <= quota {
                        break;
                    }
                    let partition: String = row.try_get("partition_name")?;
                    if keep.contains(&partition) {
                        continue;
                    }
                    doomed.push((
                        row.try_get::<i64, _>("id")?,
                        row.try_get::<String, _>("blob_key")?,
                    ));
                    left -= row.try_get::<i64, _>("size")?;
                }
                if left.saturating_add(entry.size) > quota {
                    return Ok(CacheRecorded::OverQuota { used });
                }
                for (id, blob_key) in doomed {
                    sqlx::query("DELETE FROM cache_entries WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    evicted.push(blob_key);
                }
            }
            let inserted: Option<CacheEntryRow> = sqlx::query_as(&insert_sql)
                .bind(entry.repo_id)
                .bind(&scope)
                .bind(&partition)
                .bind(entry.name)
                .bind(entry.key)
                .bind(entry.digest)
                .bind(entry.size)
                .bind(entry.blob_key)
                .bind(entry.run_id)
                .bind(entry.causer)
                .bind(entry.trust.label())
                .bind(entry.now)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(inserted) = inserted else {
                anyhow::bail!("cache entry '{}' appeared while it was recorded", entry.key);
            };
            tx.commit().await?;
            Ok(CacheRecorded::Created {
                entry: inserted,
                evicted,
            })
        })
    }

    /// Marks entry `id` used at `now` (what eviction and retention go by).
    pub async fn touch_cache_entry(&self, id: i64, now: i64) -> anyhow::Result<()> {
        on_db!(self, pool => {
            sqlx::query("UPDATE cache_entries SET last_used_at = $2 WHERE id = $1 AND last_used_at < $2")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Deletes entry `id` (its object goes with the next sweep of doomed blobs).
    pub async fn delete_cache_entry(&self, id: i64) -> anyhow::Result<()> {
        on_db!(self, pool => {
            sqlx::query("DELETE FROM cache_entries WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Deletes every entry whose archive is the object at `blob_key` (an object found not
    /// to match its record: all of them are); returns how many. The object is doomed.
    pub async fn delete_cache_entries_of_blob(&self, blob_key: &str) -> anyhow::Result<u64> {
        on_db!(self, pool => {
            let done = sqlx::query("DELETE FROM cache_entries WHERE blob_key = $1")
                .bind(blob_key)
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        })
    }

    /// Whether an entry names the object at `blob_key`.
    pub async fn cache_object_named(&self, blob_key: &str) -> anyhow::Result<bool> {
        let found: Option<i64> = on_db!(self, pool => sqlx::query_scalar(
            "SELECT id FROM cache_entries WHERE blob_key = $1 LIMIT 1",
        )
        .bind(blob_key)
        .fetch_optional(pool)
        .await?);
        Ok(found.is_some())
    }

    /// Leaves `key` to the sweep of doomed blobs: an object stored for an entry that was not
    /// recorded (deleted unless an entry names it by then).
    pub async fn doom_blob_key(&self, key: &str) -> anyhow::Result<()> {
        on_db!(self, pool => {
            sqlx::query("INSERT INTO doomed_blobs (key) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(key)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Deletes every entry last used before `before`; returns how many.
    pub async fn delete_unused_cache_entries(&self, before: i64) -> anyhow::Result<u64> {
        on_db!(self, pool => {
            let done = sqlx::query("DELETE FROM cache_entries WHERE last_used_at < $1")
                .bind(before)
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        })
    }

    /// The bytes scope `scope`'s entries keep.
    pub async fn cache_usage(&self, scope: &str) -> anyhow::Result<i64> {
        on_db!(self, pool => {
            let row = sqlx::query(
                "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS used FROM cache_entries \
                 WHERE scope = $1",
            )
            .bind(scope)
            .fetch_one(pool)
            .await?;
            Ok(row.try_get("used")?)
        })
    }

    /// Up to `limit` entries of `scope`, the most recently used first.
    pub async fn cache_entries_of(
        &self,
        scope: &str,
        limit: i64,
    ) -> anyhow::Result<Vec<CacheEntryRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM cache_entries WHERE scope = $1 \
             ORDER BY last_used_at DESC, id DESC LIMIT $2"
        );
        Ok(on_db!(self, pool => sqlx::query_as(&sql)
            .bind(scope)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::stores;

    fn partition(label: &str) -> Partition {
        Partition::parse(label).expect("a partition's label")
    }

    fn entry<'a>(partition: &str, key: &'a str, size: i64, now: i64) -> NewCacheEntry<'a> {
        NewCacheEntry {
            repo_id: None,
            partition: self::partition(partition),
            name: "rust",
            key,
            digest: "sha256:00",
            size,
            blob_key: "caches/local/00",
            run_id: 1,
            causer: Some("github:alice"),
            trust: Trust::Trusted,
            now,
        }
    }

    fn labels(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn partitions(list: &[&str]) -> Vec<Partition> {
        list.iter().map(|label| partition(label)).collect()
    }

    /// Each partition of `list` with the trust every test entry is written under.
    fn places(list: &[&str]) -> Vec<CachePlace> {
        list.iter()
            .map(|p| CachePlace {
                partition: partition(p),
                trust: Trust::Trusted,
            })
            .collect()
    }

    async fn record(store: &Store, new: &NewCacheEntry<'_>) -> CacheEntryRow {
        match store
            .record_cache_entry(new, 1 << 40, &[], &[])
            .await
            .unwrap()
        {
            CacheRecorded::Created { entry, .. } => entry,
            other => panic!("not created: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_run_keeps_the_partition_it_was_stored_with() {
        for (store, _dir) in stores().await {
            let plan = evaluator::plan::Plan::new("ci", Vec::new());
            let json = serde_json::to_string(&plan).unwrap();
            let new = crate::testing::local_run(&plan, &json);
            let without = store.create_run(&new, 4).await.unwrap().id;
            assert_eq!(
                store.run_cache_partition(without).await.unwrap(),
                Some((None, None))
            );
            let with = store
                .create_run_in_partition(&new, 4, None, &[], "local")
                .await
                .unwrap()
                .id;
            assert_eq!(
                store.run_cache_partition(with).await.unwrap(),
                Some((Some("local".to_string()), None))
            );
            assert_eq!(store.run_cache_partition(with + 100).await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn lookup_reads_only_the_given_partitions_in_order() {
        for (store, _dir) in stores().await {
            record(&store, &entry("fork:eve/x", "rust-aa", 1, 10)).await;
            let default = record(&store, &entry("default", "rust-aa", 1, 5)).await;
            let own = record(&store, &entry("pull:1", "rust-aa", 1, 1)).await;
            let none = store
                .lookup_cache("local", &places(&["protected"]), "rust", "rust-aa", &[])
                .await
                .unwrap();
            assert_eq!(none, None);
            let (found, exact) = store
                .lookup_cache(
                    "local",
                    &places(&["default", "protected"]),
                    "rust",
                    "rust-aa",
                    &[],
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!((found.id, exact), (default.id, true));
            let (found, _) = store
                .lookup_cache(
                    "local",
                    &places(&["pull:1", "default", "protected"]),
                    "rust",
                    "rust-aa",
                    &[],
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!(found.id, own.id, "the run's own partition first");
            // Another scope sees nothing; another cache name sees nothing.
            assert_eq!(
                store
                    .lookup_cache("repo-1", &places(&["default"]), "rust", "rust-aa", &[])
                    .await
                    .unwrap(),
                None
            );
            assert_eq!(
                store
                    .lookup_cache("local", &places(&["default"]), "node", "rust-aa", &[])
                    .await
                    .unwrap(),
                None
            );
        }
    }

    // An entry is found only under the trust it was written with: a run with secrets
    // looking in a partition never finds what a lower trust wrote there (an entry saved
    // before trust was recorded, a row written wrongly), by key or by prefix.
    #[tokio::test]
    async fn a_lookup_matches_the_trust_an_entry_was_written_under() {
        for (store, _dir) in stores().await {
            let mut lower = entry("agents", "rust-aa", 1, 1);
            lower.trust = Trust::Relayed;
            lower.causer = Some("github:mallory");
            let written = record(&store, &lower).await;
            assert_eq!(written.trust, "relayed");
            assert_eq!(written.causer.as_deref(), Some("github:mallory"));
            let trusted = places(&["agents"]);
            for prefixes in [vec![], labels(&["rust-"])] {
                let key = if prefixes.is_empty() {
                    "rust-aa"
                } else {
                    "rust-zz"
                };
                assert_eq!(
                    store
                        .lookup_cache("local", &trusted, "rust", key, &prefixes)
                        .await
                        .unwrap(),
                    None,
                    "{prefixes:?}"
                );
            }
            let relayed = [CachePlace {
                partition: Partition::Agents,
                trust: Trust::Relayed,
            }];
            let (found, _) = store
                .lookup_cache("local", &relayed, "rust", "rust-aa", &[])
                .await
                .unwrap()
                .unwrap();
            assert_eq!(found.id, written.id);
        }
    }

    // A tampered object takes every entry naming it; what names an object is known.
    #[tokio::test]
    async fn the_entries_of_an_object_go_together() {
        for (store, _dir) in stores().await {
            let first = record(&store, &entry("default", "rust-1", 1, 1)).await;
            record(&store, &entry("pull:2", "rust-1", 1, 2)).await;
            let mut other = entry("default", "rust-2", 1, 3);
            other.blob_key = "caches/local/02";
            record(&store, &other).await;
            assert!(store.cache_object_named(&first.blob_key).await.unwrap());
            assert_eq!(
                store
                    .delete_cache_entries_of_blob(&first.blob_key)
                    .await
                    .unwrap(),
                2
            );
            assert!(!store.cache_object_named(&first.blob_key).await.unwrap());
            assert!(store.cache_object_named("caches/local/02").await.unwrap());
            assert_eq!(kept_keys(&store).await, vec!["rust-2".to_string()]);
        }
    }

    #[tokio::test]
    async fn prefixes_match_literally_and_the_newest_wins() {
        for (store, _dir) in stores().await {
            record(&store, &entry("default", "rust-a1", 1, 1)).await;
            let newer = record(&store, &entry("default", "rust-a2", 1, 2)).await;
            record(&store, &entry("default", "rust-xy", 1, 3)).await;
            let parts = places(&["default"]);
            let (found, exact) = store
                .lookup_cache("local", &parts, "rust", "rust-zz", &labels(&["rust-a"]))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((found.id, exact), (newer.id, false));
            // `_` and `%` are no wildcards.
            for pattern in ["rust-_", "rust-%", "rust-a%", "rust_"] {
                assert_eq!(
                    store
                        .lookup_cache("local", &parts, "rust", "rust-zz", &labels(&[pattern]))
                        .await
                        .unwrap(),
                    None,
                    "{pattern}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_first_write_wins() {
        for (store, _dir) in stores().await {
            let first = record(&store, &entry("default", "rust-aa", 1, 1)).await;
            let mut second = entry("default", "rust-aa", 2, 2);
            second.digest = "sha256:11";
            match store
                .record_cache_entry(&second, 1 << 40, &[], &[])
                .await
                .unwrap()
            {
                CacheRecorded::Kept(kept) => assert_eq!(kept, first),
                other => panic!("replaced: {other:?}"),
            }
            // The same key in another partition is its own entry.
            record(&store, &entry("branch:x", "rust-aa", 1, 3)).await;
        }
    }

    #[tokio::test]
    async fn eviction_is_least_recently_used_and_spares_kept_partitions() {
        for (store, _dir) in stores().await {
            let old = record(&store, &entry("default", "rust-1", 40, 1)).await;
            let used = record(&store, &entry("default", "rust-2", 40, 2)).await;
            store.touch_cache_entry(old.id, 10).await.unwrap();
            // A fork may not evict the default's entries: over quota, nothing recorded.
            let keep = partitions(&["default", "protected"]);
            let forked = store
                .record_cache_entry(&entry("fork:eve/x", "rust-3", 40, 11), 100, &keep, &keep)
                .await
                .unwrap();
            assert_eq!(forked, CacheRecorded::OverQuota { used: 80 });
            assert_eq!(store.cache_usage("local").await.unwrap(), 80);
            // The default branch evicts the least recently used (rust-2, untouched).
            match store
                .record_cache_entry(&entry("default", "rust-3", 40, 12), 100, &[], &[])
                .await
                .unwrap()
            {
                CacheRecorded::Created { evicted, .. } => {
                    assert_eq!(evicted, vec!["caches/local/00".to_string()])
                }
                other => panic!("{other:?}"),
            }
            let kept = kept_keys(&store).await;
            assert_eq!(kept, vec!["rust-1".to_string(), "rust-3".to_string()]);
            assert_ne!(used.key, old.key);
            // Larger than the quota: never recorded.
            assert!(matches!(
                store
                    .record_cache_entry(&entry("default", "rust-4", 101, 13), 100, &[], &[])
                    .await
                    .unwrap(),
                CacheRecorded::OverQuota { .. }
            ));
        }
    }

    /// The keys of scope `local`'s entries, sorted.
    async fn kept_keys(store: &Store) -> Vec<String> {
        let mut kept: Vec<String> = store
            .cache_entries_of("local", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        kept.sort();
        kept
    }

    // The attack: forks fill the quota with entries used more recently than the default
    // branch's; the default branch's next save must evict theirs, not its own older one.
    #[tokio::test]
    async fn less_trusted_entries_go_before_a_spared_partitions_own() {
        for (store, _dir) in stores().await {
            let spare = partitions(&["default", "protected"]);
            let main = record(&store, &entry("default", "rust-1", 40, 1)).await;
            let tag = record(&store, &entry("protected", "rust-t", 10, 2)).await;
            for (i, key) in ["rust-2", "rust-3"].into_iter().enumerate() {
                let recorded = store
                    .record_cache_entry(
                        &entry("fork:eve/x", key, 20, 10 + i as i64),
                        100,
                        &spare,
                        &spare,
                    )
                    .await
                    .unwrap();
                assert!(matches!(recorded, CacheRecorded::Created { .. }));
            }
            // Full (90 of 100): a pull request evicts the fork's oldest, never `default`'s
            // or `protected`'s; more than the others hold is refused.
            let pull = store
                .record_cache_entry(&entry("pull:4", "rust-4", 20, 20), 100, &spare, &spare)
                .await
                .unwrap();
            assert!(
                matches!(&pull, CacheRecorded::Created { evicted, .. } if evicted.len() == 1),
                "{pull:?}"
            );
            let refused = store
                .record_cache_entry(&entry("pull:4", "rust-6", 60, 21), 100, &spare, &spare)
                .await
                .unwrap();
            assert_eq!(refused, CacheRecorded::OverQuota { used: 90 });
            // The default branch's save evicts the fork's and the pull request's entries, though
            // more recently used than its own.
            match store
                .record_cache_entry(&entry("default", "rust-5", 40, 30), 100, &[], &spare)
                .await
                .unwrap()
            {
                CacheRecorded::Created { evicted, .. } => assert_eq!(evicted.len(), 2),
                other => panic!("{other:?}"),
            }
            let kept = kept_keys(&store).await;
            assert_eq!(kept, vec![main.key, "rust-5".to_string(), tag.key]);
        }
    }

    #[tokio::test]
    async fn retention_deletes_unused_entries_and_dooms_their_objects() {
        for (store, _dir) in stores().await {
            let stale = record(&store, &entry("default", "rust-1", 1, 1)).await;
            let mut fresh = entry("default", "rust-2", 1, 100);
            fresh.blob_key = "caches/local/02";
            let fresh = record(&store, &fresh).await;
            assert_eq!(store.delete_unused_cache_entries(50).await.unwrap(), 1);
            assert_eq!(store.cache_entry(stale.id).await.unwrap(), None);
            assert_eq!(
                store.cache_entries_of("local", 10).await.unwrap(),
                vec![fresh]
            );
            assert_eq!(
                store.doomed_blobs(10).await.unwrap(),
                vec!["caches/local/00".to_string()]
            );
            // An object another entry still names is not doomed.
            let mut again = entry("default", "rust-3", 1, 100);
            again.blob_key = "caches/local/02";
            record(&store, &again).await;
            let second = store.cache_entries_of("local", 10).await.unwrap();
            store.delete_cache_entry(second[0].id).await.unwrap();
            store.forget_doomed_blob("caches/local/00").await.unwrap();
            assert_eq!(store.doomed_blobs(10).await.unwrap(), Vec::<String>::new());
            store.doom_blob_key("caches/local/03").await.unwrap();
            store.doom_blob_key("caches/local/03").await.unwrap();
            assert_eq!(
                store.doomed_blobs(10).await.unwrap(),
                vec!["caches/local/03".to_string()]
            );
        }
    }
}
