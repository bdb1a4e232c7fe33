//! In-process notifications: hints that something changed, and a tap of the log lines
//! just stored, for a reader in the same process (`plue run`'s printer).
//!
//! Invariant: the database is the truth. A subscriber that misses events (a lagging
//! broadcast receiver, or a change made by another engine replica) re-reads the store, and
//! every waiter also re-checks on a short timer, so a lost hint costs latency, never data.
//! The tap is a copy of lines already stored, never the only one: it drops batches when
//! its reader falls behind (at most [`TAP_BUDGET_BYTES`] wait), and a reader uses a batch
//! only where it continues the reader's cursor exactly, reading the store otherwise. Every
//! batch stored for a tapped run is either offered ([`Events::offer_lines`]) or said left
//! out for its step run ([`Events::left_out`], and a batch over the budget) before its
//! `Logs` event: so a reader whose tap holds nothing more for a step, and says nothing was
//! left out, has printed every line of it whose event it has seen ([`LineTap`]).
//!
//! Runners' polls are woken one per queued attempt ([`Events::queued`]), not all at once:
//! with 64 idle runners every queued step woke 64 polls, each running a claim transaction
//! that mostly found nothing. A poll woken that finds nothing while ready work it may not
//! take remains (labels, forks, secrets: `Store::ready_for_others`) wakes every waiting
//! poll ([`PollWait::sweep`]), once per queueing: a step that only some runners may take
//! still reaches one of them at once, at the cost the old wake-everyone had. Ready work it
//! may take but did not get went to another claim in flight, and wakes nobody. A woken
//! poll that ends before it looked for work hands its wake to another
//! ([`Events::pass_wake`]). The pools' controllers are woken for every queueing.
//!
//! A reader that keeps a copy of a run's step states (`plue run`'s printer) watches the
//! run ([`Events::watch_steps`]): it is sent the step runs whose state an advance, a start
//! or a completion changed ([`Events::steps_moved`]), and re-reads only those, not every
//! step of a large run. Only a change to a step run the copy holds as `pending` or
//! `queued` needs the hint (the reader re-reads the claimed, running and waiting ones
//! itself), and every such change is an advance's, a start's or a completion's.
//!
//! Other engine replicas on the same PostgreSQL hear of queueings, sweeps and cancels
//! through a relay ([`Events::relay_to`], set up by [`crate::wake`]): each [`Hint`] said
//! here is handed to it, and one heard from another replica ([`Events::heard`]) wakes this
//! process's waiters as the local one would have, without being relayed again. A queueing
//! is relayed only for the attempts this process's waiting polls do not cover (more than
//! are waiting): a step one of them is woken for needs no poll elsewhere, unless that
//! poll may not take it, and then its sweep is relayed too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{broadcast, mpsc, Notify};

use plue_types::protocol::LogLine;

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
    /// Woken whenever step runs were queued: the pools' controllers (every one of them).
    pub work: Notify,
    /// The runners' polls waiting for an attempt ([`Events::poll_wait`]).
    polls: Polls,
    /// Line taps by run.
    taps: Mutex<HashMap<i64, Tap>>,
    /// Step watches by run ([`Events::watch_steps`]).
    watches: Mutex<HashMap<i64, mpsc::UnboundedSender<Vec<i64>>>>,
    /// Where hints for other replicas go ([`Events::relay_to`]); unset: nowhere.
    relay: OnceLock<mpsc::UnboundedSender<Hint>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(4096).0,
            work: Notify::new(),
            polls: Polls::default(),
            taps: Mutex::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
            relay: OnceLock::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Polls {
    notify: Notify,
    /// Polls between [`Events::poll_wait`] and the end of their wait.
    waiting: AtomicUsize,
    /// Whether a poll that was woken and found nothing it may claim may still wake every
    /// waiting poll: armed by each queueing, spent by the first such sweep.
    sweep: AtomicBool,
}

/// One poll's registration as waiting for work; the wait itself is [`PollWait::notified`].
/// Dropping it ends the registration.
#[derive(Debug)]
pub struct PollWait<'a> {
    polls: &'a Polls,
    events: &'a Events,
}

impl<'a> PollWait<'a> {
    /// Completes when this poll is woken (a wake is never lost: one sent to a poll that
    /// stops waiting goes to another).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'a> {
        self.polls.notify.notified()
    }

    /// Whether [`PollWait::sweep`] would wake anyone: ask before the store is asked
    /// whether ready work remains.
    pub fn sweep_armed(&self) -> bool {
        self.polls.sweep.load(Ordering::Relaxed)
    }

    /// For a poll that was woken and then found nothing it may claim while ready work
    /// remains (work only other runners may take): wakes every waiting poll, once per
    /// queueing. True when this call did.
    pub fn sweep(&self) -> bool {
        let armed = self.polls.sweep.swap(false, Ordering::Relaxed);
        if armed {
            self.polls.notify.notify_waiters();
            self.events.relay(Hint::Sweep);
        }
        armed
    }
}

impl Drop for PollWait<'_> {
    fn drop(&mut self) {
        self.polls.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Tap {
    tx: mpsc::UnboundedSender<TappedLines>,
    /// Bytes of lines sent and not yet dropped by the reader.
    waiting: Arc<AtomicUsize>,
    /// The step runs with a batch stored and not offered, until the reader takes them.
    left_out: Arc<Mutex<HashSet<i64>>>,
}

/// What other engine replicas need to hear of ([`crate::wake`] carries it): the rest of
/// [`Event`]s serve readers that re-read the store on their own timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Attempts became claimable: as many as this.
    Queued(usize),
    /// The run was asked to cancel: its runners' watches should say so now.
    Cancel { run_id: i64 },
    /// A poll was woken for work it may not take while ready work remains: every waiting
    /// poll looks ([`PollWait::sweep`]).
    Sweep,
}

/// The reader's end of a run's line tap ([`Events::tap_lines`]): the batches offered, in
/// order, and which step runs had a batch left out since the reader last asked.
#[derive(Debug)]
pub struct LineTap {
    rx: mpsc::UnboundedReceiver<TappedLines>,
    left_out: Arc<Mutex<HashSet<i64>>>,
}

impl LineTap {
    /// The next batch offered, if one waits.
    pub fn try_recv(&mut self) -> Option<TappedLines> {
        self.rx.try_recv().ok()
    }

    /// Whether a batch of `step_run_id` was stored and left out of the tap since the last
    /// call for it (its lines are then only in the store); clears the mark.
    pub fn take_left_out(&self, step_run_id: i64) -> bool {
        lock(&self.left_out).remove(&step_run_id)
    }
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
        if let Event::Cancel { run_id } = event {
            self.relay(Hint::Cancel { run_id });
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(event);
    }

    /// Hands every [`Hint`] said from now on to `relay` as well (once: false, and nothing
    /// changes, when a relay is already set).
    pub fn relay_to(&self, relay: mpsc::UnboundedSender<Hint>) -> bool {
        self.relay.set(relay).is_ok()
    }

    fn relay(&self, hint: Hint) {
        if let Some(relay) = self.relay.get() {
            // A relay that stopped (its replica's store closed) drops the hint: a hint only.
            let _ = relay.send(hint);
        }
    }

    /// `hint`, said by another replica: wakes this process's waiters as if it had been
    /// said here, and is not relayed again.
    pub fn heard(&self, hint: Hint) {
        match hint {
            Hint::Queued(n) => self.wake_polls(n),
            Hint::Sweep => self.polls.notify.notify_waiters(),
            Hint::Cancel { run_id } => {
                let _ = self.tx.send(Event::Cancel { run_id });
            }
        }
    }

    /// How many runners' polls wait for work now ([`Events::poll_wait`]).
    pub fn waiting_polls(&self) -> usize {
        self.polls.waiting.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// `n` attempts became claimable: wakes the pools' controllers, and `n` waiting polls
    /// (every one when `n` is at least as many), with one sweep of wakes to pass on for
    /// work only some runners may take.
    /// Other replicas are told of the attempts more than this process's waiting polls.
    pub fn queued(&self, n: usize) {
        if n == 0 {
            return;
        }
        let uncovered = n.saturating_sub(self.polls.waiting.load(Ordering::Relaxed));
        if uncovered > 0 {
            self.relay(Hint::Queued(uncovered));
        }
        self.wake_polls(n);
    }

    /// `n` queued attempts became claimable as time passed (`server::due_wake`): wakes `n`
    /// of this process's waiting polls and the pools' controllers, and tells no other
    /// replica (each one looks for due work itself).
    pub fn became_due(&self, n: usize) {
        self.wake_polls(n);
    }

    /// [`Events::queued`] here only.
    fn wake_polls(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.work.notify_waiters();
        let waiting = self.polls.waiting.load(Ordering::Relaxed);
        self.polls.sweep.store(true, Ordering::Relaxed);
        if n >= waiting {
            self.polls.notify.notify_waiters();
        } else {
            for _ in 0..n {
                self.polls.notify.notify_one();
            }
        }
    }

    /// Anything may have become claimable (the sweeper's periodic pass, a debug session
    /// for some runner): wakes every waiting poll and the pools' controllers.
    pub fn wake_all(&self) {
        self.work.notify_waiters();
        self.polls.notify.notify_waiters();
    }

    /// Hands a wake a poll received and did not use (it ended before it looked for work)
    /// to another waiting poll.
    pub fn pass_wake(&self) {
        self.polls.notify.notify_one();
    }

    /// Registers a runner's poll as waiting for work until the returned [`PollWait`] is
    /// dropped; enable its [`PollWait::notified`] before looking for work.
    pub fn poll_wait(&self) -> PollWait<'_> {
        self.polls.waiting.fetch_add(1, Ordering::Relaxed);
        PollWait {
            polls: &self.polls,
            events: self,
        }
    }

    /// Copies of the lines stored for `run_id` from now on, in the order they were stored
    /// (a batch is left out when [`TAP_BUDGET_BYTES`] of them wait to be read). One tap a
    /// run: a second replaces the first. It ends when its receiver is dropped.
    pub fn tap_lines(&self, run_id: i64) -> LineTap {
        let (tx, rx) = mpsc::unbounded_channel();
        let left_out = Arc::<Mutex<HashSet<i64>>>::default();
        let tap = Tap {
            tx,
            waiting: Arc::default(),
            left_out: left_out.clone(),
        };
        lock(&self.taps).insert(run_id, tap);
        LineTap { rx, left_out }
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
    /// the run's tap, if it has one; a batch past its budget is said left out instead. Call
    /// before sending the `Logs` event.
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
            lock(&tap.left_out).insert(step_run_id);
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

    /// Tells the run's tap, if it has one, that lines of `step_run_id` were stored and not
    /// offered (a batch only partly new, or out of order). Call before sending the `Logs`
    /// event.
    pub fn left_out(&self, run_id: i64, step_run_id: i64) {
        if let Some(tap) = lock(&self.taps).get(&run_id) {
            lock(&tap.left_out).insert(step_run_id);
        }
    }

    /// The step runs of `run_id` whose state changes from now on, as batches of ids (an id
    /// may come more than once). One watch a run: a second replaces the first. It ends when
    /// its receiver is dropped.
    pub fn watch_steps(&self, run_id: i64) -> mpsc::UnboundedReceiver<Vec<i64>> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.watches).insert(run_id, tx);
        rx
    }

    /// Tells the run's watch, if it has one, that the state of `step_run_ids` changed. Call
    /// after the change is committed and before the `Step` event.
    pub fn steps_moved(&self, run_id: i64, step_run_ids: &[i64]) {
        if step_run_ids.is_empty() {
            return;
        }
        let mut watches = lock(&self.watches);
        let Some(watch) = watches.get(&run_id) else {
            return;
        };
        if watch.send(step_run_ids.to_vec()).is_err() {
            watches.remove(&run_id);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
