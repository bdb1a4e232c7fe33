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

use anyhow::Context;
use plue_types::partition::{Partition, Trust};

use super::Store;
use crate::tx::{Conn, Statement};

/// The scope of a run's caches: its repository's, or the local one.
pub fn cache_scope(repo_id: Option<i64>) -> String {
    match repo_id {
        Some(id) => format!("repo-{id}"),
        None => "local".to_owned(),
    }
}

/// A stored cache entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
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

/// An entry a record may evict to make room, as it weighs them.
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
struct EvictionCandidate {
    id: i64,
    size: i64,
    partition_name: String,
    blob_key: String,
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
        let exact = format!(
            "SELECT {COLUMNS} FROM cache_entries \
             WHERE scope = $1 AND partition_name = $2 AND name = $3 AND key = $4 \
             AND trust = $5"
        );
        for place in places {
            if let Some(entry) = self.cache_entry_in(&exact, scope, place, name, key).await? {
                return Ok(Some((entry, true)));
            }
        }
        // `substr`, not `LIKE`: a prefix's `%` and `_` are characters, not patterns.
        let newest_with_prefix = format!(
            "SELECT {COLUMNS} FROM cache_entries \
             WHERE scope = $1 AND partition_name = $2 AND name = $3 \
             AND substr(key, 1, length($4)) = $4 AND trust = $5 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        for prefix in prefixes {
            for place in places {
                let found = self
                    .cache_entry_in(&newest_with_prefix, scope, place, name, prefix)
                    .await?;
                if let Some(entry) = found {
                    return Ok(Some((entry, false)));
                }
            }
        }
        Ok(None)
    }

    /// The entry `sql` finds in `place`: `$1` the scope, `$2` the partition, `$3` the cache's
    /// name, `$4` the key (or a prefix of it), `$5` the trust.
    async fn cache_entry_in(
        &self,
        sql: &str,
        scope: &str,
        place: &CachePlace,
        name: &str,
        key: &str,
    ) -> anyhow::Result<Option<CacheEntryRow>> {
        let (partition, trust) = (place.partition.label(), place.trust.label());
        self.row(
            Statement::new(sql)
                .bind(scope)
                .bind(&partition)
                .bind(name)
                .bind(key)
                .bind(trust),
        )
        .await
    }

    /// Entry `id`, when it exists.
    pub async fn cache_entry(&self, id: i64) -> anyhow::Result<Option<CacheEntryRow>> {
        let sql = format!("SELECT {COLUMNS} FROM cache_entries WHERE id = $1");
        self.row(Statement::new(&sql).bind(id)).await
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
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.begin().await?;
        if tx.is_postgres() {
            // One record of a scope at a time: the quota is checked against what the
            // others recorded.
            match entry.repo_id {
                Some(repo_id) => {
                    tx.scalar::<i64>(
                        Statement::new(
                            "SELECT id FROM repositories WHERE id = $1 FOR NO KEY UPDATE",
                        )
                        .bind(repo_id),
                    )
                    .await?;
                }
                None => {
                    tx.execute(Statement::new(
                        "SELECT pg_advisory_xact_lock(hashtext('plue-cache-local'))",
                    ))
                    .await?;
                }
            }
        }
        let existing: Option<CacheEntryRow> = tx
            .row(
                Statement::new(&existing_sql)
                    .bind(&scope)
                    .bind(&partition)
                    .bind(entry.key),
            )
            .await?;
        if let Some(existing) = existing {
            return Ok(CacheRecorded::Kept(existing));
        }
        let used: i64 = tx
            .scalar(
                Statement::new(
                    "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS used FROM cache_entries \
                     WHERE scope = $1",
                )
                .bind(&scope),
            )
            .await?
            .context("the scope's usage")?;
        let mut evicted = Vec::new();
        if used.saturating_add(entry.size) > quota {
            let mut candidates: Vec<EvictionCandidate> = tx
                .rows(
                    Statement::new(
                        "SELECT id, size, partition_name, blob_key FROM cache_entries \
                         WHERE scope = $1 ORDER BY last_used_at, id",
                    )
                    .bind(&scope),
                )
                .await?;
            // Least recently used first, but the spared partitions' entries last.
            candidates.sort_by_key(|candidate| spare.contains(&candidate.partition_name));
            let mut left = used;
            let mut doomed = Vec::new();
            for candidate in candidates {
                if left.saturating_add(entry.size) <= quota {
                    break;
                }
                if keep.contains(&candidate.partition_name) {
                    continue;
                }
                doomed.push((candidate.id, candidate.blob_key));
                left -= candidate.size;
            }
            if left.saturating_add(entry.size) > quota {
                return Ok(CacheRecorded::OverQuota { used });
            }
            for (id, blob_key) in doomed {
                tx.execute(Statement::new("DELETE FROM cache_entries WHERE id = $1").bind(id))
                    .await?;
                evicted.push(blob_key);
            }
        }
        let inserted: Option<CacheEntryRow> = tx
            .row(
                Statement::new(&insert_sql)
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
                    .bind(entry.now),
            )
            .await?;
        let Some(inserted) = inserted else {
            anyhow::bail!("cache entry '{}' appeared while it was recorded", entry.key);
        };
        tx.commit().await?;
        Ok(CacheRecorded::Created {
            entry: inserted,
            evicted,
        })
    }

    /// Marks entry `id` used at `now` (what eviction and retention go by).
    pub async fn touch_cache_entry(&self, id: i64, now: i64) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "UPDATE cache_entries SET last_used_at = $2 WHERE id = $1 AND last_used_at < $2",
            )
            .bind(id)
            .bind(now),
        )
        .await?;
        Ok(())
    }

    /// Deletes entry `id` (its object goes with the next sweep of doomed blobs).
    pub async fn delete_cache_entry(&self, id: i64) -> anyhow::Result<()> {
        self.execute(Statement::new("DELETE FROM cache_entries WHERE id = $1").bind(id))
            .await?;
        Ok(())
    }

    /// Deletes every entry whose archive is the object at `blob_key` (an object found not
    /// to match its record: all of them are); returns how many. The object is doomed.
    pub async fn delete_cache_entries_of_blob(&self, blob_key: &str) -> anyhow::Result<u64> {
        self.execute(Statement::new("DELETE FROM cache_entries WHERE blob_key = $1").bind(blob_key))
            .await
    }

    /// Whether an entry names the object at `blob_key`.
    pub async fn cache_object_named(&self, blob_key: &str) -> anyhow::Result<bool> {
        let found: Option<i64> = self
            .scalar(
                Statement::new("SELECT id FROM cache_entries WHERE blob_key = $1 LIMIT 1")
                    .bind(blob_key),
            )
            .await?;
        Ok(found.is_some())
    }

    /// Leaves `key` to the sweep of doomed blobs: an object stored for an entry that was not
    /// recorded (deleted unless an entry names it by then).
    pub async fn doom_blob_key(&self, key: &str) -> anyhow::Result<()> {
        self.execute(
            Statement::new("INSERT INTO doomed_blobs (key) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(key),
        )
        .await?;
        Ok(())
    }

    /// Deletes every entry last used before `before`; returns how many.
    pub async fn delete_unused_cache_entries(&self, before: i64) -> anyhow::Result<u64> {
        self.execute(
            Statement::new("DELETE FROM cache_entries WHERE last_used_at < $1").bind(before),
        )
        .await
    }

    /// The bytes scope `scope`'s entries keep.
    pub async fn cache_usage(&self, scope: &str) -> anyhow::Result<i64> {
        self.one_scalar(
            Statement::new(
                "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS used FROM cache_entries \
                 WHERE scope = $1",
            )
            .bind(scope),
        )
        .await
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
        self.rows(Statement::new(&sql).bind(scope).bind(limit))
            .await
    }
}

#[cfg(test)]
mod tests;
