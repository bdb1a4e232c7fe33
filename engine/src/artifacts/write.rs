//! Streaming a body into the object store: a multipart upload fed chunk by chunk, counted
//! against the per-step limit and hashed on the way; an artifacts tar is also listed (and
//! checked) by the runner's reader on a blocking thread fed the same chunks.

use std::io::Read;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::WriteMultipart;
use runner::handoff;
use runner::protocol::BlobKind;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{ArtifactError, Artifacts};

/// What [`Artifacts::put`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    /// `sha256:<hex>` of the whole blob.
    pub digest: String,
    /// The files of an artifacts tar (empty for a workspace).
    pub files: Vec<handoff::Listed>,
}

/// How many parts may be in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

impl Artifacts {
    /// Streams `body` to `key`. Fails, storing nothing, when the body passes the limit,
    /// breaks, or (artifacts) holds an entry the runner's unpacker refuses.
    pub async fn put<S, E>(
        &self,
        key: &str,
        kind: BlobKind,
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
        let limits = handoff::Limits {
            max_bytes: self.max_bytes,
            ..handoff::Limits::default()
        };
        let (mut feed, lister) = match kind {
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
            BlobKind::Workspace => (None, None),
        };
        let mut body = std::pin::pin!(body);
        let streamed: Result<(), ArtifactError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| ArtifactError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > self.max_bytes {
                    return Err(ArtifactError::TooLarge {
                        kind: kind.as_str(),
                        limit: handoff::human(self.max_bytes),
                    });
                }
                hasher.update(&chunk);
                if let Some(tx) = &feed {
                    if tx.send(chunk.clone()).await.is_err() {
                        // The lister stopped: it found the end, or a problem it reports.
                        feed = None;
                    }
                }
                writer.write(&chunk);
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            }
            Ok(())
        }
        .await;
        drop(feed);
        let listed = match lister {
            Some(task) => Some(
                task.await
                    .map_err(|e| ArtifactError::Body(format!("the listing task failed: {e}"))),
            ),
            None => None,
        };
        let files = match (streamed, listed) {
            (Err(e), _) => Err(e),
            (Ok(()), None) => Ok(Vec::new()),
            (Ok(()), Some(Err(e))) => Err(e),
            (Ok(()), Some(Ok(Err(handoff::HandoffError::TooLarge(why))))) => Err(
                ArtifactError::Refused(format!("the artifacts tar is {why}")),
            ),
            (Ok(()), Some(Ok(Err(e)))) => Err(ArtifactError::Refused(format!(
                "the artifacts tar is refused: {e}"
            ))),
            (Ok(()), Some(Ok(Ok(files)))) => Ok(files),
        };
        match files {
            Ok(files) => {
                writer.finish().await?;
                Ok(Stored {
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
