//! Masks an attempt's log lines as one text: a secret spelt over two or more lines (two
//! `printf`s, a model's two deltas, a line cut at the length limit, two log batches) is
//! masked in every line it touches, so no reader — stored lines, the live log, the API,
//! downloads — ever sees a whole spelling, whether the pieces are read joined with their
//! line breaks or without them.
//!
//! How: the lines are read, in the order they came and whatever their stream, as one text
//! joined without line breaks — the breaks inside a line (a model's deltas keep theirs)
//! and carriage returns skipped too — by the masker's automaton ([`super::trie`]), whose
//! state is carried from line to line. Every spelling that ends in a line is masked in
//! it, and its part in earlier lines in those too — which works because a line whose end
//! may be the start of a spelling is **held back**: it is not handed on until a later
//! line settles it (completes the spelling, which is then masked in both, or shows it was
//! none) or the attempt ends. What is held is bounded by the longest spelling: the line
//! where the open tail starts and the lines after it, at most [`MAX_HELD_LINES`].
//!
//! What a reader may still see, by design:
//! - **The first few bytes of a spelling.** A line is held back only when its tail is at
//!   least `trie::hold_at` bytes of a spelling's start, so at most 3 bytes
//!   (`trie::SHOWN_AT_MOST`), and less than half of a short spelling, show before the rest
//!   arrives; the rest is masked when it comes. Holding every line that ends in one byte
//!   a spelling may start with (a hex digit) would hold most lines until the next one; 4
//!   bytes of a spelling's start end a line rarely.
//! - **A spelling cut by other text**: pieces with any character between them (a space, a
//!   prompt, another process's line printed in between, a line of the runner's own),
//!   characters decoded only by the reader, or an encoding the wall does not know. So is a
//!   spelling split by more than [`MAX_HELD_LINES`] empty lines.
//! - **Another step's secret**, which this runner does not hold: the engine masks the run's
//!   other secrets line by line only.
//!
//! Why here and not in the engine: a runner sends one attempt's lines, in order, from one
//! process, and holds the step's secrets already; the engine's replicas would need the
//! held-back tail of every attempt in the database, between any two batches. The engine
//! stays the authority line by line (every secret of the run, in every spelling); a
//! runner that skipped this masking would leak only its own step's secrets, which its
//! step holds anyway.
//!
//! Cost: linear in the text. One automaton step per byte (amortised O(1)); a spelling that
//! reaches back marks the held lines it covers once per line, not once per byte; a line is
//! copied only when it has something to mask, once, as it is handed on. No time-based
//! release: a held line waits for the next line or the attempt's end (a timer would give
//! the attacker's pause back).

use std::collections::VecDeque;

use super::trie::State;
use super::{Masker, MASK};

/// The most lines held back at once; past it the oldest goes, as masked as it is by then.
pub const MAX_HELD_LINES: usize = 256;

/// Masks lines as one stream; see the module doc. `M` is what travels with each line (its
/// stream and stamp), handed back with it.
#[derive(Debug)]
pub struct AcrossLines<M> {
    /// The automaton's state after every byte read so far.
    state: State,
    /// How many bytes were read so far.
    read: u64,
    /// Where the last bytes the automaton stepped on are in the text read (line breaks are
    /// skipped, so a spelling's length there says nothing of where it starts), at most
    /// the longest spelling's length of them.
    stepped: VecDeque<u64>,
    /// Lines not handed on yet, oldest first.
    held: VecDeque<Held<M>>,
}

impl<M> Default for AcrossLines<M> {
    fn default() -> Self {
        AcrossLines {
            state: 0,
            read: 0,
            stepped: VecDeque::new(),
            held: VecDeque::new(),
        }
    }
}

#[derive(Debug)]
struct Held<M> {
    meta: M,
    /// As it came.
    text: String,
    /// Where it starts in the text read.
    start: u64,
    /// Byte ranges of `text` to mask, sorted, none overlapping another (touching ones are
    /// two masks, as [`Masker::mask`] makes them).
    masked: Vec<(usize, usize)>,
}

impl<M> Held<M> {
    fn end(&self) -> u64 {
        self.start + self.text.len() as u64
    }

    /// The line as it may be shown.
    fn shown(self) -> (M, String) {
        if self.masked.is_empty() {
            return (self.meta, self.text);
        }
        let mut out = String::with_capacity(self.text.len());
        let mut copied = 0;
        for (start, end) in self.masked {
            out.push_str(&self.text[copied..start]);
            out.push_str(MASK);
            copied = end;
        }
        out.push_str(&self.text[copied..]);
        (self.meta, out)
    }
}

/// Adds `start..end` to `ranges`, whose ends are all at most `end`, merging the ones it
/// overlaps.
fn cover(ranges: &mut Vec<(usize, usize)>, mut start: usize, end: usize) {
    while let Some(&(s, e)) = ranges.last() {
        if e <= start {
            break;
        }
        start = start.min(s);
        ranges.pop();
    }
    ranges.push((start, end));
}

impl<M> AcrossLines<M> {
    /// Takes the next line (`masker` must be the same every time); the lines that may be
    /// shown now, masked, are appended to `out`, in the order they came. With no secrets,
    /// that is `line` at once.
    pub fn push(&mut self, masker: &Masker, meta: M, line: String, out: &mut Vec<(M, String)>) {
        let Some(trie) = masker.trie.as_deref() else {
            out.push((meta, line));
            return;
        };
        let start = self.read;
        let mut masked = Vec::new();
        // The earliest start, in the text read, of a spelling ending in this line that
        // began before it.
        let mut reaches_back: Option<u64> = None;
        let mut state = self.state;
        for (at, &byte) in line.as_bytes().iter().enumerate() {
            if byte == b'\n' || byte == b'\r' {
                continue;
            }
            state = trie.step(state, byte);
            if self.stepped.len() == trie.longest() {
                self.stepped.pop_front();
            }
            self.stepped.push_back(start + at as u64);
            let len = trie.done(state);
            if len == 0 {
                continue;
            }
            let end = at + 1;
            let from = self.stepped[self.stepped.len() - len];
            if from < start {
                reaches_back = Some(reaches_back.map_or(from, |r| r.min(from)));
            }
            cover(&mut masked, from.saturating_sub(start) as usize, end);
        }
        self.state = state;
        self.read += line.len() as u64;
        if let Some(from) = reaches_back {
            // Its part in the lines before: a tail of the one it began in, all of the rest.
            for held in self.held.iter_mut().rev() {
                if held.end() <= from {
                    break;
                }
                let local = from.saturating_sub(held.start) as usize;
                if local < held.text.len() {
                    cover(&mut held.masked, local, held.text.len());
                }
            }
        }
        self.held.push_back(Held {
            meta,
            text: line,
            start,
            masked,
        });
        // Where the longest tail that may still become a spelling (and is long enough to
        // hold back) starts: the lines from the one holding its first byte wait.
        let open_from = match trie.held(state) {
            0 => self.read,
            len => self.stepped[self.stepped.len() - len],
        };
        while let Some(first) = self.held.front() {
            if first.end() > open_from && self.held.len() <= MAX_HELD_LINES {
                break;
            }
            let first = self.held.pop_front().expect("a first line");
            out.push(first.shown());
        }
    }

    /// The text ended: every line still held back, masked, is appended to `out`.
    pub fn finish(&mut self, out: &mut Vec<(M, String)>) {
        out.extend(self.held.drain(..).map(Held::shown));
        self.state = 0;
        self.stepped.clear();
    }
}

#[cfg(test)]
mod tests;
