//! The repository page's table of step cache entries: the newest [`SHOWN`], each with the
//! cache and key, the trust partition that saved it, the trust it was written under, who
//! caused the run that saved it and that run, its size and when a run last used it.
//!
//! Invariants: read only, bounded, and shown only on a page the caller may read (the page
//! checks); every value is text the template escapes (a partition names a branch or a
//! login, a causer a login: both come from outside).

use plue_store::{cache_scope, Store};
use serde::Serialize;

use super::error::WebResult;

/// How many entries the page shows.
const SHOWN: i64 = 50;

/// One entry as the page shows it.
#[derive(Debug, Serialize)]
pub(super) struct CacheRow {
    name: String,
    key: String,
    partition: String,
    trust: String,
    causer: Option<String>,
    run_id: Option<i64>,
    /// `12.3 MiB`.
    size: String,
    last_used_at: i64,
}

/// The newest entries of repository `repo_id`, the most recently used first.
pub(super) async fn newest(store: &Store, repo_id: i64) -> WebResult<Vec<CacheRow>> {
    let rows = store
        .cache_entries_of(&cache_scope(Some(repo_id)), SHOWN)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| CacheRow {
            name: row.name,
            key: row.key,
            partition: row.partition_name,
            trust: row.trust,
            causer: row.causer,
            run_id: row.run_id,
            size: runner::caches::size(u64::try_from(row.size).unwrap_or(0)),
            last_used_at: row.last_used_at,
        })
        .collect())
}
