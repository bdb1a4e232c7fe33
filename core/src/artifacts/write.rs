//! Streaming a body into the object store: a multipart upload fed chunk by chunk, counted
//! against the per-step limit and the run's quotas and hashed on the way; an artifacts tar
//! is also listed (and checked) by the runner's reader on a blocking thread fed the same
//! chunks, with no more entries than the file quotas leave, and no path twice.
//!
//! Uploads of one run streaming at once in this engine see each other, first come first
//! served: each counts its bytes in [`Streaming`] while it streams, and each is checked
//! with the bytes of the run's uploads that began before it added, so together they do not
//! stream past the run's quotas, and the first of two that cannot both fit is never
//! refused for the second (the record, in a transaction, stays the authority; uploads of
//! other runs of a repository are not counted here).

use std::io::Read;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::WriteMultipart;
use plue_types::protocol::BlobKind;
use runner::handoff;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::quota::Allowance;
use super::{ArtifactError, Artifacts};

/// What [`Artifacts::put`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Where (no row names it until [`Artifacts::record`]).
    pub key: String,
    pub size: u64,
    /// `sha256:<hex>` of the whole blob.
    pub digest: String,
    /// The files of an artifacts tar (empty for a workspace).
    pub files: Vec<handoff::Listed>,
}

/// The bytes each run's uploads have streamed so far, in this engine, by upload in the
/// order they began.
#[derive(Debug, Default)]
pub struct Streaming {
    inner: std::sync::Mutex<StreamingRuns>,
}

#[derive(Debug, Default)]
struct StreamingRuns {
    /// The next upload's place in the order.
    next: u64,
    /// Per run: each streaming upload's place and bytes so far.
    by_run: std::collections::HashMap<i64, std::collections::BTreeMap<u64, u64>>,
}

/// One upload's part of [`Streaming`], given back when dropped.
#[derive(Debug)]
pub struct Reserved<'a> {
    streaming: &'a Streaming,
    run_id: i64,
    place: u64,
}

impl Streaming {
    fn lock(&self) -> std::sync::MutexGuard<'_, StreamingRuns> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An upload of run `run_id` that counts nothing yet, after every upload that began
    /// before it.
    pub fn reserve(&self, run_id: i64) -> Reserved<'_> {
        let mut runs = self.lock();
        let place = runs.next;
        runs.next += 1;
        runs.by_run.entry(run_id).or_default().insert(place, 0);
        Reserved {
            streaming: self,
            run_id,
            place,
        }
    }

    /// The bytes run `run_id`'s uploads have streamed.
    pub fn of_run(&self, run_id: i64) -> u64 {
        self.lock()
            .by_run
            .get(&run_id)
            .map_or(0, |uploads| uploads.values().sum())
    }
}

impl Reserved<'_> {
    /// Counts `n` more bytes of this upload; returns what the run's uploads that began
    /// before this one stream.
    fn grow(&mut self, n: u64) -> u64 {
        let mut runs = self.streaming.lock();
        let uploads = runs.by_run.entry(self.run_id).or_default();
        let mine = uploads.entry(self.place).or_default();
        *mine = mine.saturating_add(n);
        uploads
            .range(..self.place)
            .fold(0u64, |sum, (_, bytes)| sum.saturating_add(*bytes))
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut runs = self.streaming.lock();
        if let Some(uploads) = runs.by_run.get_mut(&self.run_id) {
            uploads.remove(&self.place);
            if uploads.is_empty() {
                runs.by_run.remove(&self.run_id);
            }
        }
    }
}

/// How many parts may be in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

impl Artifacts {
    /// Streams `body` to `key`. Fails, storing nothing, when the body passes the limit or
    /// what `allowance` leaves, breaks, or (artifacts) holds an entry the runner's unpacker
    /// refuses, a path twice, or more files than `allowance` leaves.
    pub async fn put<S, E>(
        &self,
        key: &str,
        kind: BlobKind,
        allowance: &Allowance,
        body: S,
    ) -> Result<Stored, ArtifactError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.put_reserved(key, kind, allowance, None, body).await
    }

    /// [`Artifacts::put`] counting the body in `reserved` (its run's part of
    /// [`Streaming`]) as it streams, checked with the run's other uploads added.
    pub async fn put_reserved<S, E>(
        &self,
        key: &str,
        kind: BlobKind,
        allowance: &Allowance,
        mut reserved: Option<Reserved<'_>>,
        body: S,
    ) -> Result<Stored, ArtifactError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let location = self.location(key);
        let upload = self.store.put_multipart(&location).await?;
        let mut writer = WriteMultipart::new(upload);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        // Every entry of an artifacts tar counts as a file (the runner writes only
        // files): the lister stops one past what the quotas leave, before listing more.
        let files_left = allowance.files_left();
        let capped = files_left < plue_types::handoff::DEFAULT_MAX_ENTRIES;
        let limits = plue_types::handoff::Limits {
            max_bytes: self.max_bytes,
            max_entries: files_left.min(plue_types::handoff::DEFAULT_MAX_ENTRIES),
        };
        let over_quota = |over| ArtifactError::OverQuota {
            kind: kind.as_str(),
            over,
        };
        let (mut feed, mut lister) = match kind {
            BlobKind::Artifacts => {
                let (tx, rx) = mpsc::channel::<Bytes>(16);
                let task = tokio::task::spawn_blocking(move || {
                    handoff::list(
                        ChannelReader {
                            rx,
                            current: Bytes::new(),
                        },
                        &limits,
                    )
                });
                (Some(tx), Some(task))
            }
            BlobKind::Workspace | BlobKind::Transcript => (None, None),
        };
        let mut listed = None;
        let mut body = std::pin::pin!(body);
        let streamed: Result<(), ArtifactError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| ArtifactError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > self.max_bytes {
                    return Err(ArtifactError::TooLarge {
                        kind: kind.as_str(),
                        limit: plue_types::handoff::human(self.max_bytes),
                    });
                }
                let others = reserved.as_mut().map_or(0, |r| r.grow(chunk.len() as u64));
                allowance
                    .check_upload(size.saturating_add(others), 0, true)
                    .map_err(over_quota)?;
                hasher.update(&chunk);
                if let Some(tx) = &feed {
                    if tx.send(chunk.clone()).await.is_err() {
                        // The lister stopped: it found the end, or a problem, which ends
                        // the upload now rather than after the rest of the body.
                        feed = None;
                        let result = join(lister.take()).await;
                        if matches!(result, Some(Err(_) | Ok(Err(_)))) {
                            listed = result;
                            return Ok(());
                        }
                        listed = result;
                    }
                }
                writer.write(&chunk);
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            }
            Ok(())
        }
        .await;
        drop(feed);
        if listed.is_none() {
            listed = join(lister).await;
        }
        let files = match (streamed, listed) {
            (Err(e), _) => Err(e),
            (Ok(()), None) => Ok(Vec::new()),
            (Ok(()), Some(Err(e))) => Err(e),
            // The stream is checked against the byte limit before the lister sees a chunk,
            // so what stops the lister first is its entry count: past the quota's when the
            // quota set it.
            (Ok(()), Some(Ok(Err(handoff::HandoffError::TooLarge(_))))) if capped => Err(allowance
                .check_upload(size, files_left.saturating_add(1), true)
                .map_or_else(over_quota, |()| {
                    ArtifactError::Refused(format!(
                        "the artifacts tar has more than {files_left} entries"
                    ))
                })),
            (Ok(()), Some(Ok(Err(handoff::HandoffError::TooLarge(why))))) => Err(
                ArtifactError::Refused(format!("the artifacts tar is {why}")),
            ),
            (Ok(()), Some(Ok(Err(e)))) => Err(ArtifactError::Refused(format!(
                "the artifacts tar is refused: {e}"
            ))),
            (Ok(()), Some(Ok(Ok(files)))) => unique(files).and_then(|files| {
                allowance
                    .check(size, files.len() as u64)
                    .map(|()| files)
                    .map_err(over_quota)
            }),
        };
        match files {
            Ok(files) => {
                writer.finish().await?;
                Ok(Stored {
                    key: key.to_owned(),
                    size,
                    digest: format!("sha256:{}", hex::encode(hasher.finalize())),
                    files,
                })
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!("aborting the upload of {key}: {abort}");
                }
                Err(e)
            }
        }
    }
}

/// The lister's result, once it has finished.
async fn join(
    lister: Option<tokio::task::JoinHandle<Result<Vec<handoff::Listed>, handoff::HandoffError>>>,
) -> Option<Result<Result<Vec<handoff::Listed>, handoff::HandoffError>, ArtifactError>> {
    let task = lister?;
    Some(
        task.await
            .map_err(|e| ArtifactError::Body(format!("the listing task failed: {e}"))),
    )
}

/// `files` when no path is listed twice (each is one row, one download URL).
fn unique(files: Vec<handoff::Listed>) -> Result<Vec<handoff::Listed>, ArtifactError> {
    let mut seen = std::collections::HashSet::with_capacity(files.len());
    for file in &files {
        if !seen.insert(file.path.as_str()) {
            return Err(ArtifactError::Refused(format!(
                "the artifacts tar is refused: it holds '{}' twice",
                file.path.escape_debug()
            )));
        }
    }
    Ok(files)
}

/// A blocking reader over the chunks an async task sends.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
