//! Streaming a blob, or one file of an artifacts tar, out of the object store.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use tokio::sync::mpsc;

use super::{ArtifactError, Artifacts};

/// A blob's bytes as they arrive.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

impl Artifacts {
    /// The blob at `key`, streamed.
    pub async fn get(&self, key: &str) -> Result<ByteStream, ArtifactError> {
        let got = self.store.get(&self.location(key)).await?;
        Ok(Box::pin(got.into_stream().map_err(std::io::Error::other)))
    }

    /// The content of the regular file `name` in the tar at `key`, streamed: the tar is
    /// read entry by entry on a blocking thread until the file is found. An empty stream
    /// when the tar has no such file (callers check the store's listing first).
    pub async fn file(&self, key: &str, name: &str) -> Result<ByteStream, ArtifactError> {
        let tar = self.get(key).await?;
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(tar));
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = copy_entry(reader, &name, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })))
    }
}

fn copy_entry(
    reader: impl std::io::Read,
    name: &str,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<()> {
    use std::io::Read;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?;
        if entry.header().entry_type().is_file()
            && runner::handoff::clean_relative(&path).is_some_and(|p| p.as_os_str() == name)
        {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = entry.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                if tx
                    .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
                {
                    return Ok(()); // the client left
                }
            }
        }
    }
    Ok(())
}
