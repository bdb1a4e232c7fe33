//! Turns the bytes of a step's stdout or stderr into log lines.
//!
//! Rules, applied in this order:
//! - Lines end at `\n`; one trailing `\r` is removed. A last line without `\n` still counts.
//! - Bytes are decoded as UTF-8 lossily (invalid sequences become U+FFFD) and NUL characters
//!   become U+FFFD.
//! - A line longer than [`MAX_LINE_BYTES`] is delivered as several lines, cut at character
//!   boundaries; the raw buffer never grows much beyond that, whatever the input.
//! - With a [`Masker`] (given to [`Lines::new`]), secrets are masked here, before any cut: a
//!   line that fits is masked whole; the pieces of an over-long line go through the
//!   streaming masker, which holds back a tail that could still become a secret, so the
//!   delivered pieces concatenate to exactly the masked whole line and no piece shows part
//!   of a secret. Pipe reads never matter: a line is only ever handled once complete or
//!   once it passed the length limit.
//!
//! [`Lines`] applies these rules to one stream, whatever its reads; the lines of both
//! streams then go, in the order `super::ordered` found them, through one [`Output`]:
//! room in the channel is taken for up to [`SEND_GROUP`] lines at a time, not line by
//! line, and a full channel pauses reading (backpressure, nothing dropped). If the
//! receiver is gone, lines are discarded and the pipes still drained, so the writer never
//! blocks on them.

use tokio::sync::mpsc::Sender;

use crate::mask::Masker;
use plue_types::protocol::{Stream, MAX_LINE_BYTES};

/// Lines handed to the channel per reservation of room in it, at most.
pub(super) const SEND_GROUP: usize = 256;

/// One stream's lines in the making.
pub(super) struct Lines {
    sink: Sink,
    /// Bytes of the current line not yet delivered.
    pending: Vec<u8>,
    /// The current line was already partly delivered because it was too long.
    continued: bool,
}

struct Sink {
    stream: Stream,
    /// The attempt's secrets.
    masker: Masker,
    /// The unmasked tail of the current over-long line, held back because it could still
    /// be the start of a secret.
    held: String,
    /// Lines made and not handed on yet.
    out: Vec<(Stream, String)>,
}

impl Lines {
    /// The lines of `stream`, `masker`'s secrets masked in each before it is cut.
    pub(super) fn new(stream: Stream, masker: Masker) -> Self {
        Lines {
            sink: Sink {
                stream,
                masker,
                held: String::new(),
                out: Vec::new(),
            },
            pending: Vec::new(),
            continued: false,
        }
    }

    /// Takes `chunk`, the stream's next bytes; the lines it completes join `out`.
    pub(super) fn feed(&mut self, chunk: &[u8], out: &mut Vec<(Stream, String)>) {
        feed(
            &mut self.sink,
            &mut self.pending,
            &mut self.continued,
            chunk,
        );
        out.append(&mut self.sink.out);
    }

    /// The stream ended: its last line without `\n` and what an over-long line still
    /// holds back join `out`. Nothing more after that (a second call adds nothing).
    pub(super) fn finish(&mut self, out: &mut Vec<(Stream, String)>) {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.sink.emit(&pending, false, &mut self.continued);
        }
        self.sink.release_held();
        out.append(&mut self.sink.out);
    }
}

/// The channel lines leave by, in the order they are given.
pub(super) struct Output {
    tx: Sender<(Stream, String)>,
    /// The receiver is gone; lines are discarded.
    closed: bool,
}

impl Output {
    pub(super) fn new(tx: Sender<(Stream, String)>) -> Self {
        Output { tx, closed: false }
    }

    /// Sends `queue`'s lines, in order, waiting for room in the channel: taken for up to
    /// [`SEND_GROUP`] lines at a time, where a send per line took it line by line.
    pub(super) async fn send(&mut self, queue: &mut Vec<(Stream, String)>) {
        let mut lines = queue.drain(..);
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
        if queue.capacity() > 4 * SEND_GROUP {
            *queue = Vec::new();
        }
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

    /// Queues a line.
    fn send_as(&mut self, stream: Stream, text: String) {
        self.out.push((stream, text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to the rules `chunk` bytes at a time (as reads of that size would)
    /// and returns the lines made.
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
        let mut lines = Lines::new(Stream::Stdout, masker.clone());
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            lines.feed(piece, &mut out);
        }
        lines.finish(&mut out);
        lines.finish(&mut out);
        out.into_iter()
            .map(|(stream, line)| {
                assert_eq!(stream, Stream::Stdout);
                line
            })
            .collect()
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
