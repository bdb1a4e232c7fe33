//! Step caches on the wire: what a step's caches are ([`CacheSpec`], in the
//! [`super::Assignment`]), and the runner asking the engine for an entry and giving it a new
//! one. Every path names only the attempt the runner holds: the engine picks the run, and
//! from the run the **partition** — the runner never says which partition it reads or
//! writes, and nothing a step does can change it.
//!
//! The conversation, per cache of an attempt:
//! 1. Before the step starts, the runner computes the cache's key from the workspace
//!    ([`CacheSpec::key_files`]) and `POST`s a [`CacheLookup`] to [`lookup_path`]. The engine
//!    answers a [`CacheLookupReply`]: the entry to restore (the exact key first, then each
//!    of [`CacheSpec::restore_prefixes`]; the run's own partition first, then each more
//!    trusted one), or none.
//! 2. The runner `GET`s the entry's archive from [`entry_path`] (at most
//!    [`CacheEntry::size`] bytes: the engine never sends more), checks its length and
//!    SHA-256 against [`CacheEntry::size`] and [`CacheEntry::digest`] before unpacking
//!    anything (a mismatch is refused, logged as "does not match its digest", and treated
//!    as a miss; the engine, which checks the same bytes as it sends them, has removed the
//!    entry by the time the body ends, so the step's save replaces it), and unpacks it
//!    with the hand-off unpacker's rules within [`CacheSpec::max_bytes`].
//! 3. After the step succeeded, when the exact key missed, it `PUT`s the archive (a
//!    zstd-compressed tar of [`CacheSpec::paths`]) to [`save_path`]. The engine streams it
//!    into the blob store under its own digest, in the run's partition, within the
//!    repository's quota (its decompressed size within [`CacheSpec::max_bytes`]), and
//!    answers a [`CacheSaved`]. An entry already saved under the
//!    same key in the same partition is kept (the first write wins; no entry is ever
//!    overwritten).
//!
//! Invariants: every body rejects unknown fields; a cache failure (engine unreachable,
//! quota, digest mismatch) never fails a step, it is a line in the step's log.

use serde::{Deserialize, Serialize};

/// The longest key a runner may send: the cache's name, `-`, and a SHA-256 in hex, with room.
pub const MAX_KEY_BYTES: usize = 256;

/// One cache of a step, as the plan declares it and the engine dispatches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// An identifier, unique among the step's caches; the key starts with it.
    pub name: String,
    /// What is cached: relative to the workspace, or to the step's home when starting with
    /// `~/`. Never absolute, never `..`.
    pub paths: Vec<String>,
    /// Workspace files whose contents make the key (`Cargo.lock`), in the plan's order; a
    /// missing file counts as empty and is said in the step's log.
    pub key_files: Vec<String>,
    /// Key prefixes to restore from when the exact key misses, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_prefixes: Vec<String>,
    /// The partition the run reads and writes, for the step's log only (the engine decides
    /// it again on every request).
    pub partition: String,
    /// The most bytes one entry of this cache may hold, counted as the runner writes them:
    /// the files' full lengths (a sparse file at its apparent size) and the tar's headers,
    /// never the compressed size. The runner refuses to pack past it and stops unpacking
    /// at it; the engine refuses an upload whose decompressed archive passes it. The
    /// engine's per-entry limit (`--artifacts-max-bytes`, within `--cache-quota`); 0: not
    /// given (the runner then takes the hand-off bound).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `POST` path: which entry to restore for one cache of the attempt.
pub fn lookup_path(attempt_id: i64) -> String {
    format!("/internal/attempts/{attempt_id}/caches/lookup")
}

/// `GET` path: the archive of entry `entry_id`, readable by this attempt's run.
pub fn entry_path(attempt_id: i64, entry_id: i64) -> String {
    format!("/internal/attempts/{attempt_id}/caches/entries/{entry_id}")
}

/// `PUT` path: a new entry for cache `name` under `key` (percent-encoding is not needed:
/// both are checked to be `[A-Za-z0-9._-]`).
pub fn save_path(attempt_id: i64, name: &str, key: &str) -> String {
    format!("/internal/attempts/{attempt_id}/caches/{name}/{key}")
}

/// The runner asking which entry to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheLookup {
    /// The cache's name, as in its [`CacheSpec`].
    pub name: String,
    /// The exact key the runner computed.
    pub key: String,
}

/// The engine's answer to a [`CacheLookup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheLookupReply {
    /// The entry to restore, or `None` on a miss.
    pub entry: Option<CacheEntry>,
}

/// A stored cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheEntry {
    pub id: i64,
    pub key: String,
    /// The partition that wrote it.
    pub partition: String,
    /// `sha256:<hex>` of the archive, recorded when it was saved.
    pub digest: String,
    pub size: u64,
    /// Whether `key` is the exact key asked for (else it matched a restore prefix).
    pub exact: bool,
    /// Who wrote it: the run that saved it, who caused that run (`github:alice`, a user's
    /// name, `schedule`) and the trust it was written under — what the step's log says of
    /// a restore. Absent when not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<CacheWriter>,
}

/// Who wrote a cache entry (see [`CacheEntry::written_by`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheWriter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causer: Option<String>,
    /// `trusted`, `relayed`, `outsider` or `local`.
    pub trust: String,
}

/// The engine's answer to a save.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSaved {
    pub id: i64,
    pub partition: String,
    pub digest: String,
    pub size: u64,
    /// `false` when an entry with this key already was in the partition (kept, not
    /// replaced).
    pub created: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_refuse_unknown_fields() {
        let with_partition = r#"{"name":"rust","key":"rust-00","partition":"default"}"#;
        assert!(serde_json::from_str::<CacheLookup>(with_partition).is_err());
        let lookup: CacheLookup =
            serde_json::from_str(r#"{"name":"rust","key":"rust-00"}"#).expect("a lookup");
        assert_eq!(lookup.key, "rust-00");
    }

    #[test]
    fn paths_name_the_attempt() {
        assert_eq!(lookup_path(7), "/internal/attempts/7/caches/lookup");
        assert_eq!(entry_path(7, 3), "/internal/attempts/7/caches/entries/3");
        assert_eq!(
            save_path(7, "rust", "rust-ab"),
            "/internal/attempts/7/caches/rust/rust-ab"
        );
    }
}
