//! An attempt's caches ([`Assignment::caches`]): restored after its workspace is ready and
//! before its files are handed to the step's user ([`restore_all`]), saved after the step
//! succeeded when the exact key missed ([`save_all`]). The disk side is
//! [`crate::caches`]; here is the conversation with the engine and the step's log lines:
//!
//! - `cache <name>: restored <key> from partition <p> (exact|prefix, <size>) in <t>`
//! - `cache <name>: miss (<key>) in partition <p>`
//! - `cache <name>: refused entry <key> from <p>: does not match its digest` (then a miss;
//!   the engine removed the entry when it sent it, so the step's save replaces it)
//! - `cache <name>: saved <key> to partition <p> (<size>) in <t>`
//!
//! Invariants: a cache never fails the step — every failure (the engine unreachable or
//! refusing, a digest mismatch, a hostile archive, a path in the way) is one line in the
//! step's log and the step goes on as on a miss. Each engine request is tried once (a
//! cache is worth less than the time waiting for one). The entry is checked against its
//! recorded length and digest before anything of it is unpacked; the partition and the
//! bound ([`CacheSpec::max_bytes`]) are the engine's, the runner only shows the one and
//! holds the archive to the other, packing and unpacking. No line shows the engine's
//! address: a step's log is read by people who need not know where the engine listens.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::mpsc;

use super::{answer_error, AttemptDir, ChunkWriter, Engine};
use crate::caches::{self, CacheError, Dirs};
use plue_types::handoff::Limits;
use plue_types::protocol::caches::{
    entry_path, lookup_path, save_path, CacheEntry, CacheLookup, CacheLookupReply, CacheSaved,
    CacheSpec,
};
use plue_types::protocol::{Assignment, Stream};

/// One cache of the attempt after its restore: its key (none when it could not be
/// computed) and whether the exact key was restored (then nothing is saved).
#[derive(Debug, Clone)]
pub(super) struct Cached {
    spec: CacheSpec,
    key: Option<String>,
    exact_hit: bool,
}

/// Where a received entry waits while it is checked: inside the attempt's directory,
/// which is the runner's alone until it hands it over after the restore.
fn entry_file(dir: &Path) -> PathBuf {
    dir.join(".plue-cache-entry")
}

/// The bounds of `spec`'s archive: the engine's bound for the cache, else the attempt's
/// hand-off bound (an engine that sends none).
fn limits(assignment: &Assignment, spec: &CacheSpec) -> Limits {
    let mut limits = super::handoff_limits(assignment);
    if spec.max_bytes > 0 {
        limits.max_bytes = spec.max_bytes;
    }
    limits
}

/// Restores each of the attempt's caches, saying each outcome in the step's log.
pub(super) async fn restore_all(
    engine: &Engine,
    assignment: &Assignment,
    dir: &Path,
    lines: &mpsc::Sender<(Stream, String)>,
) -> Vec<Cached> {
    let mut cached = Vec::new();
    for spec in &assignment.caches {
        let outcome = restore_one(engine, assignment, dir, spec, lines).await;
        cached.push(outcome);
    }
    cached
}

async fn restore_one(
    engine: &Engine,
    assignment: &Assignment,
    dir: &Path,
    spec: &CacheSpec,
    lines: &mpsc::Sender<(Stream, String)>,
) -> Cached {
    let say = |line: String| async move {
        let _ = lines.send((Stream::System, line)).await;
    };
    let name = &spec.name;
    let mut cached = Cached {
        spec: spec.clone(),
        key: None,
        exact_hit: false,
    };
    let workspace = AttemptDir::new(dir).workspace;
    let computed = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || caches::key(&workspace, &spec)).await
    };
    let key = match computed {
        Ok(Ok(key)) => key,
        Ok(Err(e)) => {
            say(format!(
                "cache {name}: no key ({e}); not restored, not saved"
            ))
            .await;
            return cached;
        }
        Err(e) => {
            say(format!(
                "cache {name}: no key ({e}); not restored, not saved"
            ))
            .await;
            return cached;
        }
    };
    for (file, why) in &key.absent {
        say(format!(
            "cache {name}: key file '{}' {why}; counted as absent",
            file.escape_debug()
        ))
        .await;
    }
    let key = key.key;
    cached.key = Some(key.clone());
    let started = Instant::now();
    let lookup = CacheLookup {
        name: name.clone(),
        key: key.clone(),
    };
    let reply: CacheLookupReply = match engine
        .send_once(&lookup_path(assignment.attempt_id), &lookup, None)
        .await
    {
        Ok(reply) => reply,
        Err(e) => {
            say(format!(
                "cache {name}: lookup failed ({e}); the step starts without it"
            ))
            .await;
            return cached;
        }
    };
    let Some(entry) = reply.entry else {
        say(format!(
            "cache {name}: miss ({key}) in partition {}",
            spec.partition
        ))
        .await;
        return cached;
    };
    match fetch_and_restore(engine, assignment, dir, spec, &entry).await {
        Ok(()) => {
            say(format!(
                "cache {name}: restored {} from partition {} ({}, {}) in {}",
                entry.key,
                entry.partition,
                if entry.exact { "exact" } else { "prefix" },
                caches::size(entry.size),
                seconds(started.elapsed())
            ))
            .await;
            say(format!("cache {name}: {}", written_by(&entry))).await;
            cached.exact_hit = entry.exact;
        }
        Err(e) => {
            let why = match e.downcast_ref::<CacheError>() {
                Some(CacheError::Digest) => CacheError::Digest.to_string(),
                // The connection failed mid-body: a network fault, not the entry's bytes.
                Some(CacheError::Io(io))
                    if io
                        .get_ref()
                        .is_some_and(|inner| inner.is::<reqwest::Error>()) =>
                {
                    format!("the download broke off before its digest could be checked ({io})")
                }
                _ => format!("{e:#}"),
            };
            say(format!(
                "cache {name}: refused entry {} from {}: {why}",
                entry.key, entry.partition
            ))
            .await;
            say(format!(
                "cache {name}: miss ({key}) in partition {}",
                spec.partition
            ))
            .await;
        }
    }
    cached
}

/// Downloads `entry` into [`entry_file`] while hashing it, refuses it unless its digest is
/// the recorded one, then unpacks it into the cache's paths.
async fn fetch_and_restore(
    engine: &Engine,
    assignment: &Assignment,
    dir: &Path,
    spec: &CacheSpec,
    entry: &CacheEntry,
) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let limits = limits(assignment, spec);
    let path = entry_path(assignment.attempt_id, entry.id);
    // Errors without the engine's address: they become lines of the step's log.
    let response = engine
        .client
        .get(format!("{}{path}", engine.base))
        .bearer_auth(engine.token.as_str())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("the engine could not be asked ({})", e.without_url()))?;
    if !response.status().is_success() {
        bail!("{}", answer_error(response).await);
    }
    let stream = Box::pin(
        response
            .bytes_stream()
            .map_err(|e| std::io::Error::other(e.without_url())),
    );
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let (dir, spec, digest, size) = (
        dir.to_owned(),
        spec.clone(),
        entry.digest.clone(),
        entry.size,
    );
    // The archive may hold a little more than its content (headers, compression of
    // incompressible data); its content is bounded again while unpacking.
    let max_archive = limits
        .max_bytes
        .saturating_add(limits.max_bytes / 8 + (1 << 20));
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let at = entry_file(&dir);
        let _ = std::fs::remove_file(&at);
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&at)
            .context("making the entry's file")?;
        let restored = (|| {
            let recorded = caches::Recorded {
                digest: &digest,
                size,
            };
            caches::receive(reader, &mut file, recorded, max_archive)?;
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(0))?;
            let files = AttemptDir::new(&dir);
            let dirs = Dirs {
                workspace: &files.workspace,
                home: &files.home,
            };
            caches::restore(file, dirs, &spec, &limits)
        })();
        let _ = std::fs::remove_file(&at);
        restored?;
        Ok(())
    })
    .await
    .context("the restoring task failed")?
}

/// Saves each cache whose exact key missed, after the step succeeded.
pub(super) async fn save_all(
    engine: &Engine,
    assignment: &Assignment,
    dir: &Path,
    cached: Vec<Cached>,
    lines: &mpsc::Sender<(Stream, String)>,
) {
    for cache in cached {
        let (Some(key), false) = (&cache.key, cache.exact_hit) else {
            continue;
        };
        let name = &cache.spec.name;
        let started = Instant::now();
        let said = match save_one(engine, assignment, dir, &cache.spec, key).await {
            Ok(Saved::Nothing(left_out)) => {
                for (path, why) in left_out {
                    let _ = lines
                        .send((
                            Stream::System,
                            format!(
                                "cache {name}: path '{}' {why}; not saved",
                                path.escape_debug()
                            ),
                        ))
                        .await;
                }
                format!("cache {name}: nothing to save (none of its paths is there)")
            }
            Ok(Saved::Sent(packed, saved)) => {
                for (path, why) in packed.left_out {
                    let _ = lines
                        .send((
                            Stream::System,
                            format!(
                                "cache {name}: path '{}' {why}; not saved",
                                path.escape_debug()
                            ),
                        ))
                        .await;
                }
                if packed.archive.skipped > 0 {
                    let _ = lines
                        .send((
                            Stream::System,
                            format!(
                                "cache {name}: {} entries left out (links out of their path, special files)",
                                packed.archive.skipped
                            ),
                        ))
                        .await;
                }
                if saved.created {
                    format!(
                        "cache {name}: saved {key} to partition {} ({}) in {}",
                        saved.partition,
                        caches::size(saved.size),
                        seconds(started.elapsed())
                    )
                } else {
                    format!(
                        "cache {name}: {key} was already saved in partition {}; kept",
                        saved.partition
                    )
                }
            }
            Err(e) => format!("cache {name}: not saved: {e:#}"),
        };
        let _ = lines.send((Stream::System, said)).await;
    }
}

enum Saved {
    /// None of the paths is there: nothing was sent.
    Nothing(Vec<(String, &'static str)>),
    Sent(caches::Packed, CacheSaved),
}

/// Packs `spec`'s paths and streams the archive to the engine under `key`.
async fn save_one(
    engine: &Engine,
    assignment: &Assignment,
    dir: &Path,
    spec: &CacheSpec,
    key: &str,
) -> anyhow::Result<Saved> {
    let limits = limits(assignment, spec);
    let files = AttemptDir::new(dir);
    // The paths are opened first: nothing is sent when none of them is there.
    let trees = {
        let (spec, workspace, home) = (spec.clone(), files.workspace.clone(), files.home.clone());
        tokio::task::spawn_blocking(move || {
            let dirs = Dirs {
                workspace: &workspace,
                home: &home,
            };
            caches::trees(dirs, &spec)
        })
        .await
        .context("the packing task failed")??
    };
    if trees.is_empty() {
        return Ok(Saved::Nothing(trees.left_out));
    }
    let (tx, rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let packer = tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(super::CHUNK),
        };
        let packed = caches::pack_trees(trees, &limits, &mut writer).and_then(|packed| {
            writer.flush_chunk()?;
            Ok(packed)
        });
        if let Err(e) = &packed {
            // The request's body fails too, so the engine stores nothing.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        packed
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let path = save_path(assignment.attempt_id, &spec.name, key);
    let sent = engine
        .client
        .put(format!("{}{path}", engine.base))
        .bearer_auth(engine.token.as_str())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    let packed = packer.await.context("the packing task failed")?;
    let (packed, response) = match (packed, sent) {
        (Err(e), _) => return Err(e.into()),
        (_, Err(e)) => bail!("the engine could not be reached ({})", e.without_url()),
        (Ok(packed), Ok(response)) => (packed, response),
    };
    if !response.status().is_success() {
        bail!("{}", answer_error(response).await);
    }
    let saved: CacheSaved = response
        .json()
        .await
        .context("reading the engine's answer")?;
    Ok(Saved::Sent(packed, saved))
}

/// `0.4 s`.
fn seconds(elapsed: Duration) -> String {
    format!("{:.1} s", elapsed.as_secs_f64())
}

/// `entry #7, written by run 12 (caused by github:alice, trust trusted)`: which entry a
/// restore used and who wrote it, as the engine recorded it.
fn written_by(entry: &CacheEntry) -> String {
    let printable =
        |text: &str| -> String { text.chars().filter(|c| !c.is_control()).take(100).collect() };
    let Some(writer) = &entry.written_by else {
        return format!("entry #{} (its writer is not recorded)", entry.id);
    };
    let run = writer
        .run_id
        .map(|id| format!(" by run {id}"))
        .unwrap_or_default();
    let causer = writer
        .causer
        .as_deref()
        .map(|c| format!("caused by {}, ", printable(c)))
        .unwrap_or_default();
    format!(
        "entry #{}, written{run} ({causer}trust {})",
        entry.id,
        printable(&writer.trust)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attempt as the wire carries it, its hand-off bound `handoff_max` (0: none).
    fn assignment(handoff_max: u64) -> Assignment {
        serde_json::from_value(serde_json::json!({
            "attempt_id": 1,
            "run_id": 1,
            "step_id": "build",
            "attempt": 1,
            "action": {"kind": "bash", "command": "true"},
            "env": {},
            "secrets": {},
            "timeout_secs": 60,
            "workspace": {"kind": "empty"},
            "handoff": {"max_bytes": handoff_max},
        }))
        .unwrap()
    }

    fn spec(max_bytes: u64) -> CacheSpec {
        CacheSpec {
            name: "rust".into(),
            paths: vec!["target".into()],
            key_files: vec!["Cargo.lock".into()],
            restore_prefixes: Vec::new(),
            partition: "default".into(),
            max_bytes,
        }
    }

    // regression (issue 69): the runner fell back to its own 1 GiB for caches, so a sparse
    // file and a zstd bomb passed a 64 MiB bound. The engine's bound for the cache is the
    // one packed and unpacked under, even when the assignment carries no other.
    #[test]
    fn a_cache_is_held_to_the_engines_bound() {
        let bound = 64 << 20;
        assert_eq!(limits(&assignment(0), &spec(bound)).max_bytes, bound);
        assert_eq!(limits(&assignment(1 << 30), &spec(bound)).max_bytes, bound);
        // An engine that says nothing for the cache: the hand-off bound, else the default.
        assert_eq!(limits(&assignment(bound), &spec(0)).max_bytes, bound);
        assert_eq!(
            limits(&assignment(0), &spec(0)),
            plue_types::handoff::Limits::default()
        );
        // The wire carries it whatever else the assignment says.
        let mut sent = assignment(0);
        sent.caches = vec![spec(bound)];
        let wire = serde_json::to_value(&sent).unwrap();
        assert_eq!(wire["caches"][0]["max_bytes"], bound);
    }
}
