//! An attempt's log sender: masks, numbers and batches the lines its processes print and
//! sends them to the engine, one batch in flight at a time.
//!
//! Invariants: every line is sent once, in the order it came, numbered from 1 without a
//! gap (a retried batch is the same batch); the lines are masked as one text
//! ([`AcrossLines`]: a secret of the step spelt over several lines, batches included, is
//! masked in each), so a line that may end in the start of a secret is held back until
//! the next line or the attempt's end, and is numbered when it goes; a batch holds at most
//! [`wire::MAX_BATCH_LINES`] lines and passes [`MAX_BATCH_BYTES`] by at most one line and
//! the lines held back before it (one line and at most a spelling's length more); no
//! line is longer than [`wire::MAX_LINE_BYTES`] (a longer one, or one a mask lengthened,
//! is cut on character boundaries); a line is stamped when it came, not when it was sent;
//! a batch waits at most [`wire::LOG_HOLD`] past its first lines' arrival (or past the
//! previous batch's acknowledgement) for more, or for the attempt's end; the lines left
//! when the attempt ended, if they fit in one batch of at most [`MAX_TAIL_BYTES`], are not
//! sent here but returned for the completion to carry, after every batch sent was
//! acknowledged.

use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{now_ms, Engine};
use crate::mask::{AcrossLines, Masker};
use plue_types::protocol::{self as wire, LogBatch, LogLine, Stream};

/// The most bytes of text in one log batch (the engine accepts far more).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The most bytes of text a completion carries ([`Sent::tail`]); more goes as a batch of
/// its own. A completion also carries the step's outputs and reason, and the engine takes
/// 32 MiB a request: a full batch (≈ 24 MiB of JSON at worst, control bytes escaped) might
/// not fit beside them; this much always does.
const MAX_TAIL_BYTES: usize = 256 * 1024;

/// What [`send_logs`] leaves to the completion.
#[derive(Debug)]
pub(super) struct Sent {
    /// The number of lines, sent or in `tail` (the last `seq`).
    pub lines: u64,
    /// The lines not sent when the attempt ended ([`wire::Completion::logs`]).
    pub tail: Option<LogBatch>,
}

/// Masks, numbers and sends lines in batches: whatever arrives while a batch is in flight
/// is masked and numbered meanwhile, and goes in the next one (one batch in flight at a
/// time: the engine stores an attempt's batches in the order they come). A batch's first
/// lines wait up to [`wire::LOG_HOLD`] for more; the last batch, when the channel closed
/// before it was sent, is returned instead (see [`Sent`]).
pub(super) async fn send_logs(
    engine: Engine,
    attempt: i64,
    mut lines: mpsc::Receiver<(Stream, String)>,
    masker: Arc<Masker>,
    cancel: CancellationToken,
    stop: CancellationToken,
) -> anyhow::Result<Sent> {
    let path = wire::logs_path(attempt);
    let mut next = NextBatch::default();
    let mut open = true;
    loop {
        if next.lines.is_empty() {
            if !open {
                break;
            }
            match lines.recv().await {
                Some(line) => next.push_after_wait(line, &masker),
                None => {
                    open = false;
                    next.end();
                }
            }
        }
        // What is ready now joins the batch, and what comes within the hold.
        open = open && next.take_ready(&mut lines, &masker);
        if open {
            open = next.hold(&mut lines, &masker, wire::LOG_HOLD).await;
        }
        if next.lines.is_empty() {
            // Everything that came is held back (or nothing came): wait for more.
            continue;
        }
        if !open && next.fits_a_completion() {
            let tail = next.take();
            return Ok(Sent {
                lines: next.seq,
                tail: Some(tail),
            });
        }
        let body = next.take();
        let send = engine.send::<_, wire::LogAck>(&path, &body, None, &stop);
        tokio::pin!(send);
        let ack = loop {
            tokio::select! {
                biased;
                ack = &mut send => break ack?,
                line = lines.recv(), if open && !next.full() => match line {
                    Some(line) => {
                        next.push_after_wait(line, &masker);
                        open = next.take_ready(&mut lines, &masker);
                    }
                    None => {
                        open = false;
                        next.end();
                    }
                },
            }
        };
        if ack.cancel {
            cancel.cancel();
        }
    }
    Ok(Sent {
        lines: next.seq,
        tail: None,
    })
}

/// The lines of the batch [`send_logs`] sends next, masked and numbered as they go.
#[derive(Default)]
struct NextBatch {
    lines: Vec<LogLine>,
    /// The attempt's lines as one text: what is held back, and where the text is.
    masking: AcrossLines<(Stream, i64)>,
    /// What [`NextBatch::masking`] hands on, reused.
    shown: Vec<((Stream, i64), String)>,
    bytes: usize,
    /// The last seq given.
    seq: u64,
    /// When the lines of the burst now arriving are stamped: the clock is read for the
    /// first line after a wait and again every [`STAMP_EVERY`] lines (a burst arrives
    /// within microseconds; stamps are in milliseconds).
    stamp: Option<(i64, u32)>,
}

const STAMP_EVERY: u32 = 64;
/// Lines [`NextBatch::take_ready`] takes from the channel at once, at most.
const TAKE_GROUP: usize = 64;

impl NextBatch {
    /// [`NextBatch::push`] for a line the sender waited for: it starts a burst.
    fn push_after_wait(&mut self, line: (Stream, String), masker: &Masker) {
        self.stamp = None;
        self.push(line, masker);
    }

    /// Adds the lines ready now, until the batch is full; returns whether the channel is
    /// still open. Lines are taken up to [`TAKE_GROUP`] at a time: the channel's room is
    /// given back once per group, not once per line (a lock each). A group is no larger
    /// than the bytes the batch has left allow at [`wire::MAX_LINE_BYTES`] a line, so a
    /// batch goes past [`MAX_BATCH_BYTES`] by one line at most, as when lines were taken
    /// one by one (JSON may write a control byte in six: the engine's body limit has room
    /// for that, not for more).
    fn take_ready(
        &mut self,
        lines: &mut mpsc::Receiver<(Stream, String)>,
        masker: &Masker,
    ) -> bool {
        let mut group = Vec::with_capacity(TAKE_GROUP);
        while !self.full() {
            let bytes_left = MAX_BATCH_BYTES.saturating_sub(self.bytes) / wire::MAX_LINE_BYTES;
            let room = TAKE_GROUP
                .min(wire::MAX_BATCH_LINES.saturating_sub(self.lines.len()))
                .min(bytes_left);
            // Ready, or not: `None` is a channel with nothing ready now, which sends what
            // the batch holds. Unconstrained: never waiting, this takes no turn from other
            // tasks, and tokio's budget would otherwise cut a batch at 128 groups.
            let ready = tokio::task::unconstrained(lines.recv_many(&mut group, room.max(1)));
            match ready.now_or_never() {
                Some(0) => {
                    self.end();
                    return false;
                }
                Some(_) => group.drain(..).for_each(|line| self.push(line, masker)),
                None => break,
            }
        }
        true
    }

    /// Adds the lines that come within `hold` (those ready at once too), until the batch
    /// is full; returns whether the channel is still open.
    async fn hold(
        &mut self,
        lines: &mut mpsc::Receiver<(Stream, String)>,
        masker: &Masker,
        hold: std::time::Duration,
    ) -> bool {
        let until = tokio::time::Instant::now() + hold;
        while !self.full() {
            match tokio::time::timeout_at(until, lines.recv()).await {
                Ok(Some(line)) => {
                    self.push_after_wait(line, masker);
                    if !self.take_ready(lines, masker) {
                        return false;
                    }
                }
                Ok(None) => {
                    self.end();
                    return false;
                }
                Err(_) => break,
            }
        }
        true
    }

    /// Takes a line that came: stamped now, masked with the lines before and after it, and
    /// numbered into the batch once it may be shown (at once, unless held back).
    fn push(&mut self, (stream, text): (Stream, String), masker: &Masker) {
        let ts_ms = match &mut self.stamp {
            Some((ts, uses)) if *uses < STAMP_EVERY => {
                *uses += 1;
                *ts
            }
            stamp => stamp.insert((now_ms(), 1)).0,
        };
        let mut shown = std::mem::take(&mut self.shown);
        self.masking.push(masker, (stream, ts_ms), text, &mut shown);
        self.add_shown(&mut shown);
        self.shown = shown;
    }

    /// The attempt's lines ended: what was held back joins the batch.
    fn end(&mut self) {
        let mut shown = std::mem::take(&mut self.shown);
        self.masking.finish(&mut shown);
        self.add_shown(&mut shown);
        self.shown = shown;
    }

    /// Numbers masked lines into the batch. Masking may lengthen a line (a secret shorter
    /// than the mask); the engine refuses lines over the limit, so such a line is split
    /// like an over-long one. Nothing else is changed: a token line keeps its `\n`s and
    /// spaces.
    fn add_shown(&mut self, shown: &mut Vec<((Stream, i64), String)>) {
        for ((stream, ts_ms), masked) in shown.drain(..) {
            self.bytes += masked.len();
            let mut push = |text| {
                self.seq += 1;
                self.lines.push(LogLine {
                    seq: self.seq,
                    stream,
                    text,
                    ts_ms,
                });
            };
            if masked.len() <= wire::MAX_LINE_BYTES {
                push(masked);
            } else {
                fit_line(masked).into_iter().for_each(push);
            }
        }
    }

    /// Whether what the batch holds may ride in the completion ([`MAX_TAIL_BYTES`]).
    fn fits_a_completion(&self) -> bool {
        !self.full() && self.bytes <= MAX_TAIL_BYTES
    }

    fn full(&self) -> bool {
        self.lines.len() >= wire::MAX_BATCH_LINES || self.bytes >= MAX_BATCH_BYTES
    }

    /// The batch to send (at most [`wire::MAX_BATCH_LINES`] lines: a line split in pieces
    /// may have gone past it; the rest waits for the next).
    fn take(&mut self) -> LogBatch {
        let rest = if self.lines.len() > wire::MAX_BATCH_LINES {
            self.lines.split_off(wire::MAX_BATCH_LINES)
        } else {
            Vec::new()
        };
        self.bytes = rest.iter().map(|line| line.text.len()).sum();
        LogBatch {
            lines: std::mem::replace(&mut self.lines, rest),
        }
    }
}

/// `text` as it is if it fits in a line, else cut on character boundaries into pieces of at
/// most [`wire::MAX_LINE_BYTES`].
fn fit_line(text: String) -> Vec<String> {
    if text.len() <= wire::MAX_LINE_BYTES {
        return vec![text];
    }
    let mut pieces = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(wire::MAX_LINE_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        pieces.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    pieces
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn lines_that_fit_are_untouched_and_long_ones_split_on_char_boundaries() {
        // regression guard: token lines carry `\n` and edge spaces, which must survive.
        assert_eq!(fit_line(" a\nb \n".into()), [" a\nb \n"]);
        let long = "é".repeat(wire::MAX_LINE_BYTES / 2) + "x";
        let pieces = fit_line(long.clone());
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.len() <= wire::MAX_LINE_BYTES));
        assert_eq!(pieces.concat(), long);
    }

    #[test]
    fn a_line_that_came_after_a_wait_is_stamped_when_it_came() {
        // regression (review): lines arriving while a batch was in flight, seconds apart
        // when the engine was slow to answer, all took the first one's stamp.
        let masker = Masker::default();
        let mut next = NextBatch::default();
        next.push_after_wait((Stream::Stdout, "a".into()), &masker);
        next.push((Stream::Stdout, "a burst".into()), &masker);
        std::thread::sleep(std::time::Duration::from_millis(30));
        next.push_after_wait((Stream::Stdout, "b".into()), &masker);
        let stamps: Vec<i64> = next.take().lines.iter().map(|l| l.ts_ms).collect();
        assert_eq!(stamps[0], stamps[1]);
        assert!(stamps[2] >= stamps[0] + 30, "{stamps:?}");
    }

    #[test]
    fn a_secret_spelt_over_two_batches_is_masked_in_both() {
        // regression: each line was masked alone, so the step's secret reversed, in hex or
        // in base64, printed over two lines that went in two batches, reached the engine
        // (and its readers) as two clear halves; the same spelling on one line was masked.
        let secret = "tok-Kx9Q2mPzW";
        let masker = Masker::new([secret]);
        for (how, s) in plue_outbound::spellings::of(secret) {
            let cut = s.len() / 2;
            let mut next = NextBatch::default();
            next.push_after_wait((Stream::Stdout, "before".into()), &masker);
            next.push((Stream::Stdout, format!("a {}", &s[..cut])), &masker);
            let first: Vec<String> = next.take().lines.into_iter().map(|l| l.text).collect();
            assert_eq!(first, ["before"], "{how}: the piece is held back");
            next.push_after_wait((Stream::Stderr, format!("{} b", &s[cut..])), &masker);
            next.push((Stream::Stdout, "after".into()), &masker);
            let second: Vec<(u64, Stream, String)> = next
                .take()
                .lines
                .into_iter()
                .map(|l| (l.seq, l.stream, l.text))
                .collect();
            assert_eq!(
                second,
                [
                    (2, Stream::Stdout, "a ***".to_owned()),
                    (3, Stream::Stderr, "*** b".to_owned()),
                    (4, Stream::Stdout, "after".to_owned()),
                ],
                "{how}"
            );
        }
    }

    #[tokio::test]
    async fn what_is_held_back_goes_when_the_lines_end() {
        let masker = Masker::new(["tok-Kx9Q2mPzW"]);
        let (tx, mut rx) = mpsc::channel(4);
        tx.send((Stream::Stdout, "ends in tok-K".into()))
            .await
            .unwrap();
        drop(tx);
        let mut next = NextBatch::default();
        assert!(!next.take_ready(&mut rx, &masker), "closed");
        let batch = next.take();
        assert_eq!(batch.lines.len(), 1);
        assert_eq!(batch.lines[0].text, "ends in tok-K");

        // Through the sender: held back, then carried by the completion.
        let (tx, rx) = mpsc::channel(4);
        tx.send((Stream::Stdout, "ends in tok-K".into()))
            .await
            .unwrap();
        drop(tx);
        // Never asked: a rest that fits rides in the completion.
        let engine = Engine {
            client: reqwest::Client::new(),
            base: "http://127.0.0.1:9".into(),
            token: Arc::new(String::new()),
            give_up_after: Duration::from_secs(1),
            forgotten: Default::default(),
            held: Default::default(),
        };
        let sent = send_logs(
            engine,
            1,
            rx,
            Arc::new(masker),
            CancellationToken::new(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(sent.lines, 1);
        let tail = sent.tail.expect("a tail");
        assert_eq!(tail.lines[0].text, "ends in tok-K");
    }

    #[test]
    fn a_batch_never_holds_more_lines_than_the_engine_takes() {
        // A secret shorter than its mask makes a line of secrets longer than the limit, so
        // it is sent in pieces: the last line of a nearly full batch may add several.
        let masker = Masker::new(["é"]);
        let mut next = NextBatch::default();
        for n in 0..wire::MAX_BATCH_LINES - 1 {
            next.push((Stream::Stdout, n.to_string()), &masker);
        }
        assert!(!next.full());
        next.push(
            (Stream::Stdout, "é".repeat(wire::MAX_LINE_BYTES / 2)),
            &masker,
        );
        assert!(next.full());
        let first = next.take();
        assert_eq!(first.lines.len(), wire::MAX_BATCH_LINES);
        let rest = next.take();
        assert!(!rest.lines.is_empty());
        let seqs: Vec<u64> = first
            .lines
            .iter()
            .chain(&rest.lines)
            .map(|l| l.seq)
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        assert!(rest
            .lines
            .iter()
            .all(|l| l.text.len() <= wire::MAX_LINE_BYTES));
        assert!(next.take().lines.is_empty());
    }

    #[tokio::test]
    async fn lines_taken_in_groups_pass_the_batch_bytes_by_one_line_at_most() {
        let masker = Masker::default();
        let long = "x".repeat(wire::MAX_LINE_BYTES);
        let total = 2 * MAX_BATCH_BYTES / wire::MAX_LINE_BYTES;
        let (tx, mut rx) = mpsc::channel(total + 7);
        // A few short lines first, so that no group ends exactly on the limit.
        for _ in 0..7 {
            tx.send((Stream::Stdout, "short".into())).await.unwrap();
        }
        for _ in 0..total {
            tx.send((Stream::Stdout, long.clone())).await.unwrap();
        }
        let mut next = NextBatch::default();
        assert!(next.take_ready(&mut rx, &masker));
        assert!(next.full());
        let bytes: usize = next.take().lines.iter().map(|l| l.text.len()).sum();
        assert!(
            (MAX_BATCH_BYTES..MAX_BATCH_BYTES + wire::MAX_LINE_BYTES).contains(&bytes),
            "{bytes} bytes in a batch"
        );
    }

    #[tokio::test]
    async fn lines_ready_are_taken_in_order_up_to_a_full_batch_and_a_closed_channel_is_seen() {
        let masker = Masker::default();
        let total = wire::MAX_BATCH_LINES + 100;
        let (tx, mut rx) = mpsc::channel(total);
        for n in 0..total {
            tx.send((Stream::Stdout, n.to_string())).await.unwrap();
        }
        let mut next = NextBatch::default();
        assert!(next.take_ready(&mut rx, &masker), "still open");
        assert!(next.full());
        let first = next.take();
        assert_eq!(first.lines.len(), wire::MAX_BATCH_LINES);
        // What did not fit stays in the channel, in order, and the channel's room is back.
        assert_eq!(rx.len(), total - wire::MAX_BATCH_LINES);
        assert_eq!(tx.capacity(), wire::MAX_BATCH_LINES);
        drop(tx);
        assert!(!next.take_ready(&mut rx, &masker), "closed once drained");
        let rest = next.take();
        let texts: Vec<String> = first
            .lines
            .into_iter()
            .chain(rest.lines)
            .map(|l| l.text)
            .collect();
        assert_eq!(texts, (0..total).map(|n| n.to_string()).collect::<Vec<_>>());
        // Nothing ready and still open: nothing taken, no wait.
        let (_tx, mut idle) = mpsc::channel::<(Stream, String)>(4);
        assert!(next.take_ready(&mut idle, &masker));
        assert!(next.take().lines.is_empty());
    }

    #[tokio::test]
    async fn a_hold_takes_what_comes_until_the_end_and_a_full_batch_waits_for_nothing() {
        let masker = Masker::default();
        // The attempt ends within the hold: everything printed is in the batch, and the
        // closed channel is seen at once (the hold is far longer than the test may take).
        let (tx, mut rx) = mpsc::channel(8);
        let mut next = NextBatch::default();
        next.push_after_wait((Stream::Stdout, "first".into()), &masker);
        let late = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send((Stream::Stderr, "second".into())).await.unwrap();
        });
        let held = tokio::time::timeout(
            Duration::from_secs(30),
            next.hold(&mut rx, &masker, Duration::from_secs(600)),
        )
        .await
        .expect("a closed channel ends the hold");
        late.await.unwrap();
        assert!(!held, "closed");
        let batch = next.take();
        let seen: Vec<(u64, &str)> = batch
            .lines
            .iter()
            .map(|l| (l.seq, l.text.as_str()))
            .collect();
        assert_eq!(seen, vec![(1, "first"), (2, "second")]);

        // Nothing comes and the channel stays open: the hold ends, and says so.
        let (_tx, mut idle) = mpsc::channel::<(Stream, String)>(4);
        let mut next = NextBatch::default();
        assert!(
            next.hold(&mut idle, &masker, Duration::from_millis(20))
                .await
        );
        assert!(next.take().lines.is_empty());

        // A full batch goes without holding.
        let (tx, mut rx) = mpsc::channel(wire::MAX_BATCH_LINES + 1);
        for n in 0..=wire::MAX_BATCH_LINES {
            tx.send((Stream::Stdout, n.to_string())).await.unwrap();
        }
        let mut next = NextBatch::default();
        assert!(next.take_ready(&mut rx, &masker));
        assert!(next.full());
        let held = tokio::time::timeout(
            Duration::from_secs(30),
            next.hold(&mut rx, &masker, Duration::from_secs(600)),
        )
        .await
        .expect("a full batch is not held");
        assert!(held, "still open");
        assert_eq!(next.take().lines.len(), wire::MAX_BATCH_LINES);
    }

    #[test]
    fn only_a_small_rest_rides_in_the_completion() {
        let masker = Masker::default();
        let mut next = NextBatch::default();
        assert!(next.fits_a_completion(), "nothing");
        next.push_after_wait((Stream::Stdout, "x".repeat(1000)), &masker);
        assert!(next.fits_a_completion());
        while next.bytes <= MAX_TAIL_BYTES {
            next.push((Stream::Stdout, "y".repeat(wire::MAX_LINE_BYTES)), &masker);
        }
        assert!(
            !next.full(),
            "not a full batch, yet too much for a completion"
        );
        assert!(!next.fits_a_completion());
    }
}
