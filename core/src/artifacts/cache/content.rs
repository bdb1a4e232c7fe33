//! What a cache archive holds once decompressed, counted as it streams in: the engine's own
//! measure of what a runner restoring the entry would write (the tar's files at their full
//! lengths — a sparse file at its apparent size — and their headers), however small the
//! zstd stream that carries it.
//!
//! Invariants: nothing decompressed is kept (one fixed buffer, overwritten); the count
//! stops, with [`ContentError::TooLarge`], as soon as it passes the bound, so a
//! decompression bomb costs the engine at most the bound's worth of decoding; a frame may
//! not ask for a window larger than the runner would allocate
//! ([`runner::caches::WINDOW_LOG_MAX`]); a body that is not whole zstd frames is refused.

use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

/// The size of the buffer each step decodes into.
const BUFFER: usize = 128 * 1024;
/// The decompressed archive may pass the entry's bound by this much: the tar's closing
/// blocks (the runner counts each entry's headers within the bound already).
const SLACK: u64 = 64 << 10;

/// Why an archive's content is refused.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The decompressed archive passes the bound.
    #[error("the cache archive holds more than {limit} once decompressed")]
    TooLarge { limit: String },
    /// The body is not a zstd stream the runner would read.
    #[error("the cache archive is not a zstd stream a runner would read: {0}")]
    NotZstd(String),
}

/// Counts the decompressed bytes of a zstd stream fed to it piece by piece.
pub struct ContentMeter {
    decoder: Decoder<'static>,
    buffer: Vec<u8>,
    written: u64,
    limit: u64,
    /// The last step ended a frame (and no byte of another has come since).
    frame_done: bool,
}

impl ContentMeter {
    /// A meter refusing an archive whose content passes `limit` (the decompressed tar may
    /// be `SLACK` longer: its closing blocks).
    pub fn new(limit: u64) -> Result<ContentMeter, ContentError> {
        let mut decoder = Decoder::new().map_err(not_zstd)?;
        decoder
            .set_parameter(DParameter::WindowLogMax(runner::caches::WINDOW_LOG_MAX))
            .map_err(not_zstd)?;
        Ok(ContentMeter {
            decoder,
            buffer: vec![0; BUFFER],
            written: 0,
            limit,
            frame_done: false,
        })
    }

    /// Decodes `chunk`, counting what it makes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ContentError> {
        let mut input = InBuffer::around(chunk);
        loop {
            let mut output = OutBuffer::around(&mut self.buffer[..]);
            let before = input.pos();
            let hint = self
                .decoder
                .run(&mut input, &mut output)
                .map_err(not_zstd)?;
            let made = output.pos();
            self.count(made)?;
            if hint == 0 {
                self.frame_done = true;
            } else if made > 0 || input.pos() > before {
                self.frame_done = false;
            }
            if input.pos() == chunk.len() && made < BUFFER {
                return Ok(());
            }
        }
    }

    /// The decompressed size, once the body has ended: it must end a frame.
    pub fn finish(mut self) -> Result<u64, ContentError> {
        // What the decoder still holds.
        loop {
            let mut output = OutBuffer::around(&mut self.buffer[..]);
            let left = self.decoder.flush(&mut output).map_err(not_zstd)?;
            let made = output.pos();
            self.count(made)?;
            if left == 0 {
                break;
            }
        }
        if !self.frame_done {
            return Err(ContentError::NotZstd(
                "it ends inside a frame (or holds none)".into(),
            ));
        }
        Ok(self.written)
    }

    fn count(&mut self, made: usize) -> Result<(), ContentError> {
        self.written = self.written.saturating_add(made as u64);
        if self.written > self.limit.saturating_add(SLACK) {
            return Err(ContentError::TooLarge {
                limit: plue_types::handoff::human(self.limit),
            });
        }
        Ok(())
    }
}

fn not_zstd(e: std::io::Error) -> ContentError {
    ContentError::NotZstd(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// `bytes` fed to a meter of `limit` in pieces of `piece`.
    fn measured(bytes: &[u8], limit: u64, piece: usize) -> Result<u64, ContentError> {
        let mut meter = ContentMeter::new(limit)?;
        for chunk in bytes.chunks(piece) {
            meter.feed(chunk)?;
        }
        meter.finish()
    }

    #[test]
    fn the_decompressed_size_is_counted_in_any_pieces() {
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let packed = zstd::encode_all(&content[..], 3).unwrap();
        for piece in [1, 7, 4096, packed.len()] {
            assert_eq!(
                measured(&packed, 512 << 10, piece).unwrap(),
                content.len() as u64,
                "{piece}"
            );
        }
        // Two frames back to back, as a concatenation would make.
        let mut two = packed.clone();
        two.extend_from_slice(&packed);
        assert_eq!(
            measured(&two, 1 << 20, 999).unwrap(),
            2 * content.len() as u64
        );
        // Past the bound and its slack: refused.
        assert!(matches!(
            measured(&two, 512 << 10, 999),
            Err(ContentError::TooLarge { .. })
        ));
    }

    // The attack (issue 69): 192 MiB of zeros compress to a few KiB; under a 64 MiB bound
    // the count stops at the bound, long before the end.
    #[test]
    fn a_bomb_stops_at_the_bound() {
        let mut encoder = zstd::Encoder::new(Vec::new(), 19).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..192 {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let err = measured(&bomb, 64 << 20, 64 << 10).unwrap_err();
        assert!(matches!(err, ContentError::TooLarge { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "the cache archive holds more than 64 MiB once decompressed"
        );
    }

    #[test]
    fn what_is_not_whole_zstd_is_refused() {
        let packed = zstd::encode_all(&b"hello"[..], 3).unwrap();
        for bad in [
            &b"plain text, no frame"[..],
            &packed[..packed.len() - 1],
            &[][..],
        ] {
            let err = measured(bad, 1 << 20, 3).unwrap_err();
            assert!(matches!(err, ContentError::NotZstd(_)), "{err}");
        }
        // A frame asking for a window the runner would not allocate.
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(27).unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(b"x").unwrap();
        let wide = encoder.finish().unwrap();
        assert!(matches!(
            measured(&wide, 1 << 20, 64),
            Err(ContentError::NotZstd(_))
        ));
    }
}
