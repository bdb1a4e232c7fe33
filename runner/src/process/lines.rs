//! Turns one output pipe of a step into log lines.
//!
//! Rules, applied in this order:
//! - Lines end at `\n`; one trailing `\r` is removed. A last line without `\n` still counts.
//! - Bytes are decoded as UTF-8 lossily (invalid sequences become U+FFFD) and NUL characters
//!   become U+FFFD.
//! - A line longer than [`MAX_LINE_BYTES`] is delivered as several lines, cut at character
//!   boundaries; the raw buffer never grows much beyond that, whatever the input.
//! - With a [`Masker`] ([`LineReader::masking`]), secrets are masked here, before any cut: a
//!   line that fits is masked whole; the pieces of an over-long line go through the
//!   streaming masker, which holds back a tail that could still become a secret, so the
//!   delivered pieces concatenate to exactly the masked whole line and no piece shows part
//!   of a secret. Pipe reads never matter: a line is only ever handled once complete or
//!   once it passed the length limit.
//!
//! Lines are sent in order, those of one read together (room in the channel is taken for
//! up to [`SEND_GROUP`] at a time, not line by line); a full channel pauses reading
//! (backpressure, nothing dropped). At most one read's lines wait in the reader: a read is
//! at most [`READ_BUFFER_BYTES`], so 256 Ki empty lines (8 MiB) at worst. If the receiver
//! is gone, the pipe is still drained so the writer never blocks on it.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use futures::FutureExt;

use crate::mask::Masker;
use crate::protocol::{Stream, MAX_LINE_BYTES};

/// Big enough that a fast writer costs few read syscalls.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// After `stop`, data already in the pipe is still read, up to this much: more than any
/// pipe buffers, so only a writer that keeps going is cut off.
const AFTER_STOP_BYTES: usize = 4 * 1024 * 1024;
/// Lines handed to the channel per reservation of room in it, at most.
const SEND_GROUP: usize = 256;

pub(super) struct LineReader<R> {
    reader: BufReader<R>,
    sink: Sink,
    /// Bytes of the current line not yet delivered.
    pending: Vec<u8>,
    /// The current line was already partly delivered because it was too long.
    continued: bool,
    /// Once cancelled, reading stops as soon as the pipe has no data ready.
    stop: CancellationToken,
}

struct Sink {
    stream: Stream,
    tx: Sender<(Stream, String)>,
    /// The receiver is gone; lines are discarded.
    closed: bool,
    /// The attempt's secrets (none unless [`LineReader::masking`]).
    masker: Masker,
    /// The unmasked tail of the current over-long line, held back because it could still
    /// be the start of a secret.
    held: String,
    /// Lines of the current read not sent yet ([`Sink::flush`]).
    out: Vec<(Stream, String)>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(super) fn new(
        source: R,
        stream: Stream,
        tx: Sender<(Stream, String)>,
        stop: CancellationToken,
    ) -> Self {
        LineReader {
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, source),
            sink: Sink {
                stream,
                tx,
                closed: false,
                masker: Masker::default(),
                held: String::new(),
                out: Vec::new(),
            },
            pending: Vec::new(),
            continued: false,
            stop,
        }
    }

    /// Masks the attempt's secrets in every line before it is cut or delivered.
    pub(super) fn masking(mut self, masker: Masker) -> Self {
        self.sink.masker = masker;
        self
    }

    /// Reads until EOF (or `stop` with nothing ready), delivering every line read.
    pub(super) async fn run(mut self) {
        let mut after_stop = AFTER_STOP_BYTES;
        loop {
            let stopped = self.stop.is_cancelled();
            if stopped && after_stop == 0 {
                break;
            }
            let chunk = if stopped {
                match self.reader.fill_buf().now_or_never() {
                    Some(result) => result,
                    None => break,
                }
            } else {
                tokio::select! {
                    biased;
                    result = self.reader.fill_buf() => result,
                    () = self.stop.cancelled() => continue,
                }
            };
            let chunk = match chunk {
                Ok([]) => break,
                Ok(chunk) => chunk,
                Err(err) => {
                    let text = format!(
                        "runner: reading {} failed: {err}",
                        self.sink.stream.as_str()
                    );
                    self.sink.send_as(Stream::System, text);
                    break;
                }
            };
            let len = chunk.len();
            feed(
                &mut self.sink,
                &mut self.pending,
                &mut self.continued,
                chunk,
            );
            self.reader.consume(len);
            self.sink.flush().await;
            if stopped {
                after_stop = after_stop.saturating_sub(len);
            }
        }
        if !self.pending.is_empty() {
            self.sink.emit(&self.pending, false, &mut self.continued);
        }
        self.sink.release_held();
        self.sink.flush().await;
    }
}

/// Delivers the complete lines in `chunk` and keeps the rest in `pending`.
fn feed(sink: &mut Sink, pending: &mut Vec<u8>, continued: &mut bool, chunk: &[u8]) {
    let mut rest = chunk;
    while let Some(at) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..at];
        rest = &rest[at + 1..];
        if pending.is_empty() {
            sink.emit(line, true, continued);
        } else {
            pending.extend_from_slice(line);
            sink.emit(pending, true, continued);
            pending.clear();
        }
    }
    pending.extend_from_slice(rest);
    while pending.len() > MAX_LINE_BYTES {
        let cut = raw_cut(pending);
        sink.emit(&pending[..cut], false, continued);
        pending.drain(..cut);
    }
}

/// Where to cut an over-long raw line: at most [`MAX_LINE_BYTES`], not inside a UTF-8
/// sequence (unless the bytes are not UTF-8 there anyway).
fn raw_cut(bytes: &[u8]) -> usize {
    let is_continuation = |at: usize| bytes.get(at).is_some_and(|b| b & 0xC0 == 0x80);
    (MAX_LINE_BYTES.saturating_sub(3)..=MAX_LINE_BYTES)
        .rev()
        .find(|&at| !is_continuation(at))
        .unwrap_or(MAX_LINE_BYTES)
}

impl Sink {
    /// Delivers one raw line (or a piece of an over-long one, `terminated == false`).
    fn emit(&mut self, raw: &[u8], terminated: bool, continued: &mut bool) {
        let raw = match raw {
            [head @ .., b'\r'] if terminated => head,
            _ => raw,
        };
        let whole = terminated && !*continued;
        *continued = !terminated;
        let mut text = String::from_utf8_lossy(raw).into_owned();
        if text.contains('\0') {
            text = text.replace('\0', "\u{FFFD}");
        }
        let shown = if whole {
            match self.masker.mask(&text) {
                std::borrow::Cow::Borrowed(_) => text,
                std::borrow::Cow::Owned(masked) => masked,
            }
        } else {
            // regression: each piece of an over-long line was masked on its own, so a secret
            // across the cut was stored in clear, in two halves.
            let mut shown = self.masker.push_piece(&mut self.held, &text);
            if terminated {
                shown.push_str(&self.masker.finish_pieces(&mut self.held));
            }
            if shown.is_empty() {
                // All held back, or the `\n` of a line delivered already: no line.
                return;
            }
            shown
        };
        self.send_cut(shown);
    }

    /// Delivers what an over-long line still holds back (the stream ended mid-line).
    fn release_held(&mut self) {
        let rest = self.masker.finish_pieces(&mut self.held);
        if !rest.is_empty() {
            self.send_cut(rest);
        }
    }

    /// Sends masked `text` as one line, or cut at character boundaries into lines of at
    /// most [`MAX_LINE_BYTES`] (decoding and masking can both lengthen a line).
    fn send_cut(&mut self, text: String) {
        if text.len() <= MAX_LINE_BYTES {
            return self.send_as(self.stream, text);
        }
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let mut cut = rest.len().min(MAX_LINE_BYTES);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            self.send_as(self.stream, rest[..cut].to_owned());
            rest = &rest[cut..];
        }
    }

    /// Queues a line for the next [`Sink::flush`].
    fn send_as(&mut self, stream: Stream, text: String) {
        if !self.closed {
            self.out.push((stream, text));
        }
    }

    /// Sends the queued lines, in order, waiting for room in the channel: taken for up to
    /// [`SEND_GROUP`] lines at a time, where a send per line took it line by line.
    async fn flush(&mut self) {
        let mut lines = self.out.drain(..);
        while !self.closed && lines.len() > 0 {
            let room = lines.len().min(SEND_GROUP).min(self.tx.max_capacity());
            match self.tx.reserve_many(room).await {
                Ok(permits) => {
                    for (permit, line) in permits.zip(lines.by_ref()) {
                        permit.send(line);
                    }
                }
                Err(_) => self.closed = true,
            }
        }
        drop(lines);
        // A read of empty lines may have grown the queue to megabytes: not kept for later.
        if self.out.capacity() > 4 * SEND_GROUP {
            self.out = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Writes `input` through a pipe that hands it over `chunk` bytes at a time and returns
    /// the lines read.
    async fn lines_of(input: impl Into<Vec<u8>>, chunk: usize) -> Vec<String> {
        masked_lines_of(input, chunk, &Masker::default()).await
    }

    /// [`lines_of`] with `masker`.
    async fn masked_lines_of(
        input: impl Into<Vec<u8>>,
        chunk: usize,
        masker: &Masker,
    ) -> Vec<String> {
        let input = input.into();
        let (mut writer, source) = tokio::io::duplex(chunk);
        let writing = tokio::spawn(async move { writer.write_all(&input).await.unwrap() });
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let reader = LineReader::new(source, Stream::Stdout, tx, CancellationToken::new())
            .masking(masker.clone());
        let reading = tokio::spawn(reader.run());
        let mut out = Vec::new();
        while let Some((stream, line)) = rx.recv().await {
            assert_eq!(stream, Stream::Stdout);
            out.push(line);
        }
        writing.await.unwrap();
        reading.await.unwrap();
        out
    }

    fn lengths(lines: &[String]) -> Vec<usize> {
        lines.iter().map(String::len).collect()
    }

    #[tokio::test]
    async fn splits_on_newlines_and_strips_one_carriage_return() {
        for chunk in [1, 3, 4096] {
            assert_eq!(lines_of("a\r\nb\n\nc", chunk).await, ["a", "b", "", "c"]);
            assert_eq!(lines_of("x\r\r\n", chunk).await, ["x\r"]);
        }
        assert_eq!(lines_of("", 16).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn invalid_utf8_and_nul_become_replacement_characters() {
        assert_eq!(lines_of(*b"a\0b\xffc\n", 2).await, ["a\u{FFFD}b\u{FFFD}c"]);
    }

    #[tokio::test]
    async fn long_lines_are_cut_at_char_boundaries() {
        for chunk in [1000, 1 << 20] {
            let input = "é".repeat(MAX_LINE_BYTES) + "\n"; // 2 bytes each
            let lines = lines_of(input, chunk).await;
            assert_eq!(lines.len(), 2);
            assert!(lines.iter().all(|l| l.len() <= MAX_LINE_BYTES));
            assert!(lines.iter().all(|l| l.chars().all(|c| c == 'é')));
            assert_eq!(lines.concat().len(), 2 * MAX_LINE_BYTES);
        }
    }

    #[tokio::test]
    async fn cutting_adds_no_empty_lines() {
        let exact = "x".repeat(MAX_LINE_BYTES) + "\nnext\n";
        assert_eq!(lengths(&lines_of(exact, 100).await), [MAX_LINE_BYTES, 4]);
        let twice = "x".repeat(2 * MAX_LINE_BYTES) + "\r\nnext";
        for chunk in [100, 1 << 20] {
            let lines = lines_of(twice.clone(), chunk).await;
            assert_eq!(lengths(&lines), [MAX_LINE_BYTES, MAX_LINE_BYTES, 4]);
        }
    }

    #[tokio::test]
    async fn invalid_bytes_that_grow_when_decoded_are_cut_again() {
        let lines = lines_of(vec![0xff; MAX_LINE_BYTES], 1 << 20).await;
        // Each U+FFFD is 3 bytes, so a piece holds `MAX_LINE_BYTES / 3` of them.
        assert_eq!(lines.len(), MAX_LINE_BYTES.div_ceil(MAX_LINE_BYTES / 3));
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE_BYTES));
        assert_eq!(lines.concat().chars().count(), MAX_LINE_BYTES);
    }

    #[tokio::test]
    async fn stop_ends_reading_when_the_pipe_is_idle() {
        let (mut writer, source) = tokio::io::duplex(64);
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let stop = CancellationToken::new();
        let reading = tokio::spawn(LineReader::new(source, Stream::Stderr, tx, stop.clone()).run());
        writer.write_all(b"one\ntw").await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), (Stream::Stderr, "one".to_owned()));
        stop.cancel();
        // The writer is still open; the partial line is delivered and reading ends.
        assert_eq!(rx.recv().await.unwrap(), (Stream::Stderr, "tw".to_owned()));
        reading.await.unwrap();
        assert!(rx.recv().await.is_none());
    }

    /// Every delivered line is within the limit and shows no secret, and the lines
    /// concatenate to the masked input lines (cut where the input was too long).
    fn assert_masked(lines: &[String], input_lines: &[&str], masker: &Masker, secret: &str) {
        for line in lines {
            assert!(
                line.len() <= MAX_LINE_BYTES,
                "a line of {} bytes",
                line.len()
            );
            assert!(!line.contains(secret), "a line shows the secret");
        }
        let expected: String = input_lines.iter().map(|l| masker.mask(l)).collect();
        assert_eq!(lines.concat(), expected, "the masked text changed");
    }

    // The attacker's view: a step prints a secret exactly where the reader must cut (the
    // line length limit), for every offset around each cut, through pipes that hand the
    // bytes over in reads of every size. Before, each piece was masked on its own and the
    // secret was stored in two clear halves.
    #[tokio::test]
    async fn a_secret_across_any_cut_or_read_is_masked() {
        for secret in ["s3cr3t-T0KEN-0123456789abcdef", "пароль-ключ-✓"] {
            let masker = Masker::new([secret]);
            let starts = (MAX_LINE_BYTES - secret.len() - 2..=MAX_LINE_BYTES + 2)
                .chain(2 * MAX_LINE_BYTES - secret.len()..=2 * MAX_LINE_BYTES);
            for start in starts {
                let line = "x".repeat(start) + secret + &"y".repeat(40 * 1024 - start);
                for chunk in [4093, 1 << 16] {
                    let lines = masked_lines_of(format!("{line}\nafter\n"), chunk, &masker).await;
                    assert_masked(&lines, &[&line, "after"], &masker, secret);
                    assert_eq!(lines.last().unwrap(), "after", "offset {start}");
                    // The same line as the stream's unterminated end.
                    let lines = masked_lines_of(line.clone(), chunk, &masker).await;
                    assert_masked(&lines, &[&line], &masker, secret);
                }
            }
        }
    }

    #[tokio::test]
    async fn short_lines_are_masked_whole_whatever_the_reads() {
        let secret = "hunter2-hunter2";
        let masker = Masker::new([secret]);
        let input = format!("pw={secret}\n{secret}{secret}\r\nnone\n{secret}");
        for chunk in 1..=secret.len() + 1 {
            let lines = masked_lines_of(input.clone(), chunk, &masker).await;
            assert_eq!(
                lines,
                ["pw=***", "******", "none", "***"],
                "reads of {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn a_line_ending_in_a_held_back_prefix_is_delivered_whole() {
        // The tail of an over-long line that could start a secret is held back, then
        // delivered with the line's end, not lost and not delayed past it.
        let masker = Masker::new(["abcdef"]);
        let line = "x".repeat(MAX_LINE_BYTES + 10) + "abc";
        let lines = masked_lines_of(format!("{line}\nnext\n"), 1 << 20, &masker).await;
        assert_eq!(lines.concat(), line.clone() + "next");
        assert_eq!(lines.last().unwrap(), "next");
        let lines = masked_lines_of(line.clone(), 1 << 20, &masker).await;
        assert_eq!(lines.concat(), line);
    }

    #[tokio::test]
    async fn masks_shorter_than_their_secret_still_fit_the_limit() {
        // A one-byte secret masked by three bytes makes a line longer; it is cut after.
        let masker = Masker::new(["z"]);
        let line = "z".repeat(MAX_LINE_BYTES);
        let lines = masked_lines_of(format!("{line}\n"), 1 << 20, &masker).await;
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE_BYTES));
        assert_eq!(lines.concat(), "***".repeat(MAX_LINE_BYTES));
    }
}
