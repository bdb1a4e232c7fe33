//! Checkouts served from the engine's mirrors: for a step whose workspace is a commit a
//! mirror already holds, the runner asks the engine for that commit's pack (the runner
//! protocol's [`plue_types::protocol::checkout_path`]) instead of fetching it from the
//! forge — one HTTP request to the engine and `git index-pack` where a fetch was `git
//! init`, `git fetch` (itself five more processes, the forge's side included) and the
//! forge's round trips.
//!
//! Invariants:
//! - Only full ids of commit objects are served, and only from a mirror that exists:
//!   nothing here creates a mirror or fetches into one. What is served is exactly what a
//!   fetch of depth 1 would bring (the commit and its tree, no history;
//!   [`super::git::Mirror::shallow_pack`]).
//! - The caller decides which commit a runner may have (the attempt it holds names it, and
//!   only from the repository's own clone URL); nothing here takes a commit from a request.
//! - Bounded: at most [`MAKERS`] packs are made at once (each by a single-threaded git),
//!   none over [`MAX_PACK_BYTES`] (the runner then fetches from the forge as before), and
//!   the packs kept for the next step of the same commit hold at most [`CACHE_BYTES`] in
//!   all (and are at most 256), the oldest dropped first.
//! - Concurrent requests for one commit make its pack once, and share its outcome: a pack,
//!   "too large", or a failure (kept [`FAILURE_KEPT`], so a commit that cannot be packed is
//!   not packed again by every step that asks). A commit the mirror lacks is not kept (the
//!   mirror may fetch it later).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OnceCell, Semaphore};

use super::git::{is_full_sha, Mirror, Packed};

/// The largest pack served; a bigger checkout is left to the forge.
pub const MAX_PACK_BYTES: usize = 32 * 1024 * 1024;
/// How many packs are made at once.
pub const MAKERS: usize = 2;
/// How long a failure to pack a commit is remembered.
pub const FAILURE_KEPT: Duration = Duration::from_secs(60);
/// The most the kept packs hold in all.
pub const CACHE_BYTES: usize = 128 * 1024 * 1024;

/// The most packs kept.
const MAX_KEPT: usize = 256;

/// A commit's pack as served: `None` when the engine does not serve it (no mirror, the
/// commit is not there, or it is too large).
pub type Served = Option<Bytes>;

/// What a kept cell holds.
#[derive(Clone)]
enum Verdict {
    Pack(Bytes),
    /// Kept, so that every step of a large commit does not make its pack again.
    TooLarge,
    /// Not kept: the mirror may fetch the commit later.
    NoCommit,
    /// Why it could not be packed, and when: kept [`FAILURE_KEPT`].
    Failed(Arc<str>, Instant),
}

/// The packs of commits the mirrors under one directory hold.
pub struct CheckoutPacks {
    mirrors: PathBuf,
    kept: Mutex<Kept>,
    makers: Semaphore,
}

type Key = (i64, String);

#[derive(Default)]
struct Kept {
    packs: HashMap<Key, Arc<OnceCell<Verdict>>>,
    /// Insertion order, for dropping the oldest.
    order: VecDeque<Key>,
    bytes: usize,
}

impl CheckoutPacks {
    /// Packs made from the mirrors under `mirrors` (`<repo id>.git`, as
    /// [`super::Registry`] keeps them).
    pub fn new(mirrors: PathBuf) -> CheckoutPacks {
        CheckoutPacks {
            mirrors,
            kept: Mutex::new(Kept::default()),
            makers: Semaphore::new(MAKERS),
        }
    }

    /// Commit `sha` of repository `repo_id` as a pack (see the module doc), made once and
    /// kept for the next request.
    pub async fn pack(&self, repo_id: i64, sha: &str) -> anyhow::Result<Served> {
        if !is_full_sha(sha) {
            return Ok(None);
        }
        let Some(mirror) = Mirror::existing(super::mirror_dir(&self.mirrors, repo_id)) else {
            return Ok(None);
        };
        let key = (repo_id, sha.to_string());
        let cell = self.lock().packs.entry(key.clone()).or_default().clone();
        let mut made_here = false;
        let verdict = cell
            .get_or_init(|| async {
                made_here = true;
                let Ok(_permit) = self.makers.acquire().await else {
                    return Verdict::Failed("the engine is stopping".into(), Instant::now());
                };
                match mirror.shallow_pack(sha, MAX_PACK_BYTES).await {
                    Ok(Packed::Pack(mut pack)) => {
                        // Kept by its length: no spare capacity kept with it.
                        pack.shrink_to_fit();
                        Verdict::Pack(Bytes::from(pack))
                    }
                    Ok(Packed::TooLarge) => Verdict::TooLarge,
                    Ok(Packed::NoCommit) => Verdict::NoCommit,
                    Err(error) => Verdict::Failed(format!("{error:#}").into(), Instant::now()),
                }
            })
            .await
            .clone();
        Ok(match verdict {
            Verdict::Pack(pack) => {
                if made_here {
                    self.kept(key, &cell, pack.len());
                }
                Some(pack)
            }
            Verdict::TooLarge => {
                if made_here {
                    self.kept(key, &cell, 0);
                }
                None
            }
            Verdict::NoCommit => {
                self.forget(&key, &cell);
                None
            }
            Verdict::Failed(why, at) => {
                if at.elapsed() >= FAILURE_KEPT {
                    // Tried again by the next request.
                    self.forget(&key, &cell);
                } else if made_here {
                    self.kept(key, &cell, 0);
                }
                anyhow::bail!("{why}")
            }
        })
    }

    /// Makes `sha`'s pack in the background, so the step that asks for it soon finds it
    /// made; a failure is only a debug line (the request makes it again, or falls back).
    pub fn prepare(self: &Arc<Self>, repo_id: i64, sha: &str) {
        let (packs, sha) = (self.clone(), sha.to_string());
        tokio::spawn(async move {
            if let Err(error) = packs.pack(repo_id, &sha).await {
                tracing::debug!(repo_id, sha, "preparing a checkout pack: {error:#}");
            }
        });
    }

    /// Drops the packs kept of repository `repo_id` (its mirror is being removed).
    pub fn forget_repo(&self, repo_id: i64) {
        let mut kept = self.lock();
        let Kept {
            packs,
            order,
            bytes,
        } = &mut *kept;
        packs.retain(|(repo, _), cell| {
            if *repo != repo_id {
                return true;
            }
            if let Some(Verdict::Pack(pack)) = cell.get() {
                *bytes = bytes.saturating_sub(pack.len());
            }
            false
        });
        order.retain(|(repo, _)| *repo != repo_id);
    }

    /// Counts a pack of `bytes` just made for `key` in `cell` (unless the cell was dropped
    /// meanwhile: [`CheckoutPacks::forget_repo`]) and drops the oldest others while the
    /// kept packs hold more than [`CACHE_BYTES`] or are more than [`MAX_KEPT`].
    fn kept(&self, key: Key, cell: &Arc<OnceCell<Verdict>>, bytes: usize) {
        let mut kept = self.lock();
        if !kept
            .packs
            .get(&key)
            .is_some_and(|kept| Arc::ptr_eq(kept, cell))
        {
            return;
        }
        kept.order.push_back(key.clone());
        kept.bytes += bytes;
        while kept.bytes > CACHE_BYTES || kept.order.len() > MAX_KEPT {
            let Some(oldest) = kept.order.pop_front() else {
                break;
            };
            if oldest == key && kept.order.is_empty() {
                kept.order.push_back(oldest);
                break;
            }
            if let Some(cell) = kept.packs.remove(&oldest) {
                if let Some(Verdict::Pack(pack)) = cell.get() {
                    kept.bytes = kept.bytes.saturating_sub(pack.len());
                }
            }
        }
    }

    /// Drops `key`'s cell after a failure, unless another one replaced it meanwhile.
    fn forget(&self, key: &Key, cell: &Arc<OnceCell<Verdict>>) {
        let mut kept = self.lock();
        if kept
            .packs
            .get(key)
            .is_some_and(|kept| Arc::ptr_eq(kept, cell))
        {
            kept.packs.remove(key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // Each update keeps the map, the order and the count together; a panic cannot
        // happen between them (no call that may panic).
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;
