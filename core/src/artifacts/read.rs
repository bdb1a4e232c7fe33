//! Streaming a blob, or one file of an artifacts tar, out of the object store to a client.
//!
//! Invariants (a client that never reads must cost nothing scarce for long):
//! - No blocking thread ever waits on a client. One file of a tar is found by reading only
//!   the tar's headers on a blocking thread (ranged reads of the object store, seeking past
//!   every other entry's content, so a request never reads the tar from its start); the
//!   file's bytes are then one ranged, async read of the store.
//! - A download holds a slot ([`Downloads`]): at most [`MAX_DOWNLOADS`] in all and
//!   [`MAX_DOWNLOADS_PER_CLIENT`] per client address stream at once; past either the
//!   download is refused (503) before anything is read.
//! - A download whose client takes no chunk for [`DOWNLOAD_IDLE`] is dropped: its slot and
//!   its store stream are released, and the response ends with an error (never as if
//!   complete).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path as Location;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::sync::mpsc;

use super::{ArtifactError, Artifacts};

/// A blob's bytes as they arrive.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The most downloads streaming at once.
pub const MAX_DOWNLOADS: usize = 64;
/// The most downloads of one client address streaming at once.
pub const MAX_DOWNLOADS_PER_CLIENT: usize = 8;
/// A download whose client takes no chunk for this long is dropped.
pub const DOWNLOAD_IDLE: Duration = Duration::from_secs(30);
/// How much of a tar's headers one ranged read fetches.
const HEADER_READ: u64 = 64 * 1024;

/// The download slots: how many stream, in all and per client.
#[derive(Debug)]
pub struct Downloads {
    max: usize,
    per_client: usize,
    idle: Duration,
    state: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Every download slot (in all, or of this client) is taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Busy(String);

/// A download's slot, released when dropped.
#[derive(Debug)]
pub struct Slot {
    downloads: Arc<Downloads>,
    client: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = self.downloads.lock();
        slots.total = slots.total.saturating_sub(1);
        if let Some(client) = self.client {
            if let Some(n) = slots.by_client.get_mut(&client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    slots.by_client.remove(&client);
                }
            }
        }
    }
}

impl Downloads {
    /// `max` downloads in all, `per_client` of one address, each dropped after `idle`
    /// without its client taking a chunk.
    pub fn new(max: usize, per_client: usize, idle: Duration) -> Downloads {
        Downloads {
            max,
            per_client,
            idle,
            state: Mutex::new(Slots::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a download by `client`, or why there is none.
    pub fn enter(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Slot, Busy> {
        let mut slots = self.lock();
        if slots.total >= self.max {
            return Err(Busy(format!(
                "{} downloads are streaming, the most at once; try again later",
                self.max
            )));
        }
        if let Some(client) = client {
            let n = slots.by_client.entry(client).or_default();
            if *n >= self.per_client {
                return Err(Busy(format!(
                    "this client has {} downloads streaming, the most at once; try again later",
                    self.per_client
                )));
            }
            *n += 1;
        }
        slots.total += 1;
        Ok(Slot {
            downloads: self.clone(),
            client,
        })
    }

    /// Downloads streaming now.
    pub fn streaming(&self) -> usize {
        self.lock().total
    }
}

impl Default for Downloads {
    fn default() -> Downloads {
        Downloads::new(MAX_DOWNLOADS, MAX_DOWNLOADS_PER_CLIENT, DOWNLOAD_IDLE)
    }
}

impl Artifacts {
    /// The blob at `key`, streamed (for the engine itself; clients go through
    /// [`Artifacts::download`]).
    pub async fn get(&self, key: &str) -> Result<ByteStream, ArtifactError> {
        let got = self.store.get(&self.location(key)).await?;
        Ok(Box::pin(got.into_stream().map_err(std::io::Error::other)))
    }

    /// The blob at `key`, streamed to a client in its download `slot` (from
    /// [`Artifacts::downloads`]).
    pub async fn download(&self, key: &str, slot: Slot) -> Result<ByteStream, ArtifactError> {
        let stream = self.get(key).await?;
        Ok(paced(slot, stream, self.downloads.idle))
    }

    /// The content of the regular file `name` in the tar at `key`, streamed to a client
    /// in its download `slot`. An empty stream when the tar has no such file (callers
    /// check the store's listing first).
    pub async fn file(
        &self,
        key: &str,
        name: &str,
        slot: Slot,
    ) -> Result<ByteStream, ArtifactError> {
        let location = self.location(key);
        let len = self.store.head(&location).await?.size;
        let reader = RangeReader {
            store: self.store.clone(),
            location: location.clone(),
            runtime: tokio::runtime::Handle::current(),
            len,
            pos: 0,
            buffer: Bytes::new(),
            buffer_at: 0,
        };
        let wanted = name.to_owned();
        let found = tokio::task::spawn_blocking(move || find_entry(reader, &wanted))
            .await
            .map_err(|e| ArtifactError::Body(format!("the tar reading task failed: {e}")))?
            .map_err(|e| ArtifactError::Body(format!("reading the artifacts tar: {e}")))?;
        let stream: ByteStream = match found {
            Some(range) if !range.is_empty() => {
                let options = GetOptions {
                    range: Some(GetRange::Bounded(range)),
                    ..GetOptions::default()
                };
                let got = self.store.get_opts(&location, options).await?;
                Box::pin(got.into_stream().map_err(std::io::Error::other))
            }
            _ => Box::pin(futures::stream::empty()),
        };
        Ok(paced(slot, stream, self.downloads.idle))
    }

    /// The download slots a client's download must hold one of.
    pub fn downloads(&self) -> &Arc<Downloads> {
        &self.downloads
    }
}

/// `source` handed to the client a chunk at a time by a task that holds `slot`: when the
/// client takes no chunk for `idle` (or leaves) the task ends, releasing the slot and the
/// source, and the stream the client reads ends with an error.
fn paced(slot: Slot, source: ByteStream, idle: Duration) -> ByteStream {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(1);
    let stalled = Arc::new(AtomicBool::new(false));
    let stalled_by_pump = stalled.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let mut source = source;
        while let Some(chunk) = source.next().await {
            let failed = chunk.is_err();
            match tx.send_timeout(chunk, idle).await {
                Ok(()) if !failed => {}
                Ok(()) => return,
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    stalled_by_pump.store(true, Ordering::SeqCst);
                    return;
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => return, // the client left
            }
        }
    });
    Box::pin(futures::stream::unfold(
        (rx, stalled, false),
        |(mut rx, stalled, ended)| async move {
            if ended {
                return None;
            }
            match rx.recv().await {
                Some(chunk) => Some((chunk, (rx, stalled, false))),
                None if stalled.load(Ordering::SeqCst) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client took no data for too long",
                    )),
                    (rx, stalled, true),
                )),
                None => None,
            }
        },
    ))
}

/// Where the content of the regular file `name` lies in the tar `reader` reads, reading
/// only headers (every other entry's content is seeked past).
fn find_entry(reader: RangeReader, name: &str) -> std::io::Result<Option<Range<u64>>> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        let path = entry.path()?;
        if entry.header().entry_type().is_file()
            && plue_types::handoff::clean_relative(&path).is_some_and(|p| p.as_os_str() == name)
        {
            let start = entry.raw_file_position();
            return Ok(Some(start..start.saturating_add(entry.size())));
        }
    }
    Ok(None)
}

/// A blocking, seekable reader of an object, by ranged reads of [`HEADER_READ`] bytes: it
/// waits on the object store only, never on a client.
struct RangeReader {
    store: Arc<dyn ObjectStore>,
    location: Location,
    runtime: tokio::runtime::Handle,
    len: u64,
    pos: u64,
    buffer: Bytes,
    /// Where `buffer` starts in the object.
    buffer_at: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let buffered = self.buffer_at..self.buffer_at + self.buffer.len() as u64;
        if !buffered.contains(&self.pos) {
            let end = self.len.min(self.pos.saturating_add(HEADER_READ));
            let range = self.pos..end;
            self.buffer = self
                .runtime
                .block_on(self.store.get_range(&self.location, range))
                .map_err(std::io::Error::other)?;
            self.buffer_at = self.pos;
            if self.buffer.is_empty() {
                return Ok(0);
            }
        }
        let offset = usize::try_from(self.pos - self.buffer_at).unwrap_or(usize::MAX);
        let available = &self.buffer[offset.min(self.buffer.len())..];
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    //! Clients that never read, played against a local store on a runtime with two
    //! blocking threads: they must hold no blocking thread, only their capped slots, and
    //! only until they have been idle for the idle time.

    use plue_store::BlobUsage;
    use plue_types::protocol::BlobKind;

    use super::*;
    use crate::artifacts::quota::{Allowance, Quota, Quotas};
    use crate::artifacts::ArtifactsConfig;

    const LONG: Duration = Duration::from_secs(60);

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    async fn collect(stream: ByteStream) -> std::io::Result<Vec<u8>> {
        let chunks: Vec<Bytes> = stream.try_collect().await?;
        Ok(chunks.concat())
    }

    #[test]
    fn clients_that_never_read_hold_no_blocking_thread() {
        // regression (attack d1): each file download copied the entry on a blocking thread
        // that waited in `blocking_send` for as long as its client did not read, so a few
        // hundred anonymous connections took every blocking thread from uploads and
        // workflow validation.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let artifacts =
                Artifacts::open(&ArtifactsConfig::local(dir.path().join("blobs"))).unwrap();
            let big: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
            let tar = tar_of(&[("a.txt", b"a"), ("big.bin", &big), ("z.txt", b"z")]);
            let allowance = Allowance::new(
                &Quotas {
                    run: Quota {
                        bytes: 1 << 30,
                        files: 10,
                    },
                    ..Quotas::default()
                },
                &BlobUsage::default(),
            );
            let body = futures::stream::iter(
                tar.chunks(64 * 1024)
                    .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                    .collect::<Vec<_>>(),
            );
            let key = "runs/1/build/1/artifacts-x.tar";
            artifacts
                .put(key, BlobKind::Artifacts, &allowance, body)
                .await
                .unwrap();

            // Six clients (three times the blocking threads) take one chunk, then stop.
            let mut stalled = Vec::new();
            for n in 0..6u8 {
                let client = Some(IpAddr::from([10, 0, 0, n]));
                let slot = artifacts.downloads().enter(client).unwrap();
                let first = tokio::time::timeout(LONG, async {
                    let mut stream = artifacts.file(key, "big.bin", slot).await.unwrap();
                    assert!(stream.next().await.unwrap().is_ok());
                    stream
                });
                stalled.push(first.await.expect("a download starts"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(artifacts.downloads().streaming(), 6);

            // The blocking pool still serves (an upload's lister, a plan's validation).
            let free = tokio::time::timeout(LONG, tokio::task::spawn_blocking(|| 42)).await;
            assert_eq!(free.expect("a blocking thread is free").unwrap(), 42);
            // Another client's downloads complete, whole: the small file after the big
            // one (found by seeking past it), and the big one.
            let other = Some(IpAddr::from([10, 0, 1, 1]));
            for (name, want) in [("z.txt", b"z".to_vec()), ("big.bin", big.clone())] {
                let slot = artifacts.downloads().enter(other).unwrap();
                let stream = artifacts.file(key, name, slot).await.unwrap();
                let got = tokio::time::timeout(LONG, collect(stream))
                    .await
                    .expect("the download completes")
                    .unwrap();
                assert!(got == want, "{name}: {} bytes", got.len());
            }
            // And an upload.
            let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(tar_of(&[(
                "c.txt", b"c",
            )])))]);
            tokio::time::timeout(
                LONG,
                artifacts.put(
                    "runs/1/build/2/artifacts-y.tar",
                    BlobKind::Artifacts,
                    &allowance,
                    body,
                ),
            )
            .await
            .expect("the upload completes")
            .unwrap();
            drop(stalled);
        });
    }

    #[test]
    fn download_slots_are_capped_per_client_and_in_all() {
        let downloads = Arc::new(Downloads::new(3, 2, DOWNLOAD_IDLE));
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let a1 = downloads.enter(a).unwrap();
        let _a2 = downloads.enter(a).unwrap();
        let busy = downloads.enter(a).unwrap_err();
        assert!(busy.to_string().contains("this client has 2"), "{busy}");
        let _b1 = downloads.enter(b).unwrap();
        let busy = downloads
            .enter(Some(IpAddr::from([10, 0, 0, 3])))
            .unwrap_err();
        assert!(busy.to_string().contains("3 downloads"), "{busy}");
        drop(a1);
        assert_eq!(downloads.streaming(), 2);
        let _a3 = downloads.enter(a).unwrap();
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_loses_its_slot_and_gets_an_error() {
        let downloads = Arc::new(Downloads::new(1, 1, Duration::from_millis(100)));
        let source: ByteStream = Box::pin(futures::stream::iter(
            (0..100).map(|_| Ok(Bytes::from_static(b"0123456789"))),
        ));
        let mut stream = paced(
            downloads.enter(None).unwrap(),
            source,
            Duration::from_millis(100),
        );
        assert!(stream.next().await.unwrap().is_ok());
        // It stops reading: the slot comes back once it has been idle for the idle time.
        let freed = tokio::time::timeout(LONG, async {
            while downloads.streaming() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(freed.is_ok(), "the stalled download kept its slot");
        // What it reads later ends with an error, never as if complete.
        let rest: Vec<_> = stream.collect().await;
        assert!(
            matches!(rest.last(), Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut),
            "{rest:?}"
        );
        assert!(rest.len() < 99);
    }
}
