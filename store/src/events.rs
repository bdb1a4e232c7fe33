//! In-process notifications: hints that something changed, and a tap of the log lines
//! just stored, for a reader in the same process (`plue run`'s printer).
//!
//! Invariant: the database is the truth. A subscriber that misses events (a lagging
//! broadcast receiver, or a change made by another engine replica) re-reads the store, and
//! every waiter also re-checks on a short timer, so a lost hint costs latency, never data.
//! The tap is a copy of lines already stored, never the only one: it drops batches when
//! its reader falls behind (at most [`TAP_BUDGET_BYTES`] wait), and a reader uses a batch
//! only where it continues the reader's cursor exactly, reading the store otherwise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, Notify};

use runner::protocol::LogLine;

/// How many bytes of tapped lines may wait for their reader; past it, batches are dropped
/// (the reader reads them from the store).
pub const TAP_BUDGET_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// New log lines were stored for a step run.
    Logs { run_id: i64, step_run_id: i64 },
    /// A step of the run changed state.
    Step { run_id: i64 },
    /// The run reached a final state.
    RunFinished { run_id: i64 },
    /// The run was asked to cancel.
    Cancel { run_id: i64 },
}

#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// Woken whenever step runs were queued (pollers waiting for work).
    pub work: Notify,
    /// Line taps by run.
    taps: Mutex<HashMap<i64, Tap>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(4096).0,
            work: Notify::new(),
            taps: Mutex::new(HashMap::new()),
        }
    }
}

#[derive(Debug)]
struct Tap {
    tx: mpsc::UnboundedSender<TappedLines>,
    /// Bytes of lines sent and not yet dropped by the reader.
    waiting: Arc<AtomicUsize>,
}

/// A batch of lines of one attempt of a step run as the store just stored them, in
/// order: the runner's lines themselves, handed on without a copy.
#[derive(Debug)]
pub struct TappedLines {
    pub step_run_id: i64,
    pub attempt: i64,
    pub lines: Vec<LogLine>,
    /// Returns the batch's bytes to its tap's budget when the reader drops it.
    _budget: Budget,
}

#[derive(Debug)]
struct Budget {
    bytes: usize,
    waiting: Arc<AtomicUsize>,
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.waiting.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Events {
    pub fn send(&self, event: Event) {
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Copies of the lines stored for `run_id` from now on, in the order they were stored
    /// (a batch is left out when [`TAP_BUDGET_BYTES`] of them wait to be read). One tap a
    /// run: a second replaces the first. It ends when its receiver is dropped.
    pub fn tap_lines(&self, run_id: i64) -> mpsc::UnboundedReceiver<TappedLines> {
        let (tx, rx) = mpsc::unbounded_channel();
        let tap = Tap {
            tx,
            waiting: Arc::default(),
        };
        lock(&self.taps).insert(run_id, tap);
        rx
    }

    /// Whether someone taps the lines of `run_id`: the batch to [`Events::offer_lines`]
    /// need not be built otherwise.
    pub fn tapped(&self, run_id: i64) -> bool {
        let mut taps = lock(&self.taps);
        if taps.get(&run_id).is_some_and(|tap| tap.tx.is_closed()) {
            taps.remove(&run_id);
        }
        taps.contains_key(&run_id)
    }

    /// Hands `lines`, just stored for attempt `attempt` of `step_run_id` of `run_id`, to
    /// the run's tap, if it has one and the batch fits in its budget. Call before sending
    /// the `Logs` event.
    pub fn offer_lines(&self, run_id: i64, step_run_id: i64, attempt: i64, lines: Vec<LogLine>) {
        let mut taps = lock(&self.taps);
        let Some(tap) = taps.get(&run_id) else {
            return;
        };
        let bytes: usize = lines.iter().map(|l| l.text.len() + 64).sum();
        let fits = tap
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |waiting| {
                (waiting + bytes <= TAP_BUDGET_BYTES).then_some(waiting + bytes)
            })
            .is_ok();
        if !fits {
            return;
        }
        let batch = TappedLines {
            step_run_id,
            attempt,
            lines,
            _budget: Budget {
                bytes,
                waiting: tap.waiting.clone(),
            },
        };
        if tap.tx.send(batch).is_err() {
            taps.remove(&run_id);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, text: &str) -> LogLine {
        LogLine {
            seq,
            stream: runner::protocol::Stream::Stdout,
            text: text.into(),
            ts_ms: 0,
        }
    }

    #[test]
    fn a_tap_gets_its_runs_lines_in_order() {
        let events = Events::default();
        assert!(!events.tapped(7));
        let mut tap = events.tap_lines(7);
        assert!(events.tapped(7));
        events.offer_lines(7, 70, 1, vec![line(1, "a"), line(2, "b")]);
        events.offer_lines(8, 80, 1, vec![line(1, "other run")]);
        events.offer_lines(7, 71, 1, vec![line(1, "c")]);
        let first = tap.try_recv().unwrap();
        assert_eq!((first.step_run_id, first.lines.len()), (70, 2));
        assert_eq!(tap.try_recv().unwrap().lines[0].text, "c");
        assert!(tap.try_recv().is_err(), "nothing of run 8");
    }

    #[test]
    fn a_reader_that_falls_behind_misses_batches_not_memory() {
        let events = Events::default();
        let mut tap = events.tap_lines(1);
        let big = "x".repeat(1 << 20);
        for seq in 1..=40 {
            events.offer_lines(1, 10, 1, vec![line(seq, &big)]);
        }
        let mut kept = Vec::new();
        while let Ok(batch) = tap.try_recv() {
            kept.push(batch);
        }
        assert!(
            (10..40).contains(&kept.len()),
            "{} of 40 1 MiB batches kept under a 16 MiB budget",
            kept.len()
        );
        // Read batches give their room back.
        kept.clear();
        events.offer_lines(1, 10, 1, vec![line(41, &big)]);
        assert_eq!(tap.try_recv().unwrap().lines[0].seq, 41);
    }

    #[test]
    fn a_dropped_reader_ends_its_tap() {
        let events = Events::default();
        drop(events.tap_lines(3));
        assert!(!events.tapped(3));
        events.offer_lines(3, 30, 1, vec![line(1, "nobody reads this")]);
    }
}
