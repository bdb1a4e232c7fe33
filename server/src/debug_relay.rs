//! The terminal relay of debug sessions (`plue debug RUN STEP`): bytes between the runner
//! that claimed a session (`internal_api::debug`) and its creator's terminal (`api::debug`).
//!
//! The store holds each session's record (who made it, which runner claimed it, whether it
//! ended: `store::debug_sessions`) and is asked before anything is relayed; this module
//! holds only what is in flight: the terminal's recent output (at most
//! [`OUTPUT_KEPT`] bytes, the oldest dropped), the input not yet taken by the runner (at
//! most [`INPUT_KEPT`] bytes; more is refused, never dropped), whether a terminal is
//! attached, and when anything last moved.
//!
//! Invariants:
//! - At most one terminal is attached to a session at a time ([`Session::attach`]); its
//!   guard detaches on drop, so a client that goes away frees the place.
//! - A session ends once ([`end`]): its watchdog ([`watch`]) ends it in the store
//!   after its idle timeout without a byte either way, or after as long without an
//!   attached terminal; every waiter wakes and sees the end.
//! - Output chunks are numbered by the runner and taken once each (a repeat is dropped),
//!   input events are numbered here without gaps and kept until the runner acknowledges
//!   them.
//!
//! The relay is process-wide (one map, keyed by the sessions' random 128-bit ids): the
//! API and the runner protocol share it without a field in each of their states. Both
//! ask the store who may touch a session first, so two engines in one process (tests)
//! never reach each other's sessions. Several replicas: a session's runner and terminal
//! must reach the same replica (the runner protocol and the API of one engine); see the
//! book's Internals, "The engine" (debug sessions).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use plue_types::protocol::debug::InputEvent;
use tokio::sync::Notify;
use tokio::time::Instant;

use plue_store::{now_ms, Store};

/// The most recent terminal output kept for the attached (or next) terminal.
pub const OUTPUT_KEPT: usize = 256 * 1024;
/// The most input bytes waiting for the runner.
pub const INPUT_KEPT: usize = 256 * 1024;
/// What each queued input event counts for, beyond its keystrokes' bytes: so window sizes,
/// which carry none, cannot queue without bound either.
const INPUT_EVENT_COST: usize = 32;
/// How long an ended session stays in the relay, so its terminal hears why.
const ENDED_KEPT: Duration = Duration::from_secs(30);

/// Every session this process relays.
#[derive(Default)]
pub struct Relay {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

/// The process-wide relay.
pub fn relay() -> &'static Relay {
    static RELAY: OnceLock<Relay> = OnceLock::new();
    RELAY.get_or_init(Relay::default)
}

impl Relay {
    /// Session `id`'s relay, made when it is not here yet (the session was made by another
    /// process, or before a restart).
    pub fn open(&self, id: &str, idle_timeout: Duration) -> Arc<Session> {
        lock(&self.sessions)
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Session::new(idle_timeout)))
            .clone()
    }

    /// Session `id`'s relay, when it is here.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    fn forget(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }
}

/// Where a session is, as its terminal is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a runner.
    Queued,
    /// A runner runs the step again.
    Running,
    /// The shell is up.
    Ready,
    /// Over, and why.
    Ended(String),
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "claimed",
            Phase::Ready => "ready",
            Phase::Ended(_) => "ended",
        }
    }
}

/// One session's relay.
pub struct Session {
    inner: Mutex<Inner>,
    changed: Notify,
    idle_timeout: Duration,
}

struct Inner {
    phase: Phase,
    /// The runner that claimed it, as the store said when it did.
    runner_id: Option<i64>,
    /// The last `OUTPUT_KEPT` bytes of output; `output_end` is the offset after the last.
    output: VecDeque<u8>,
    output_end: u64,
    /// The last output chunk taken from the runner.
    output_seq: u64,
    /// Input not yet acknowledged by the runner, and the last number given.
    input: VecDeque<InputEvent>,
    input_bytes: usize,
    input_seq: u64,
    attached: bool,
    /// When a byte last moved, either way (or the session was made).
    last_activity: Instant,
    /// Since when no terminal is attached (`None`: one is).
    detached_since: Option<Instant>,
}

impl Session {
    fn new(idle_timeout: Duration) -> Session {
        let now = Instant::now();
        Session {
            inner: Mutex::new(Inner {
                phase: Phase::Queued,
                runner_id: None,
                output: VecDeque::new(),
                output_end: 0,
                output_seq: 0,
                input: VecDeque::new(),
                input_bytes: 0,
                input_seq: 0,
                attached: false,
                last_activity: now,
                detached_since: Some(now),
            }),
            changed: Notify::new(),
            idle_timeout,
        }
    }

    fn update<T>(&self, change: impl FnOnce(&mut Inner) -> T) -> T {
        let result = change(&mut lock(&self.inner));
        self.changed.notify_waiters();
        result
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub fn phase(&self) -> Phase {
        lock(&self.inner).phase.clone()
    }

    /// The runner that claimed the session, as recorded here.
    pub fn runner_id(&self) -> Option<i64> {
        lock(&self.inner).runner_id
    }

    /// Runner `runner_id` claimed it and runs the step.
    pub fn claimed(&self, runner_id: i64) {
        self.update(|inner| {
            if inner.phase == Phase::Queued {
                inner.phase = Phase::Running;
            }
            inner.runner_id = Some(runner_id);
            inner.last_activity = Instant::now();
        });
    }

    /// The shell is up.
    pub fn ready(&self) {
        self.update(|inner| {
            if matches!(inner.phase, Phase::Queued | Phase::Running) {
                inner.phase = Phase::Ready;
            }
            inner.last_activity = Instant::now();
        });
    }

    /// Ends the relay (not the record: see [`end`]); whether this ended it.
    fn close(&self, reason: &str) -> bool {
        self.update(|inner| {
            if matches!(inner.phase, Phase::Ended(_)) {
                return false;
            }
            inner.phase = Phase::Ended(reason.to_owned());
            true
        })
    }

    /// Output chunk `seq` from the runner; a chunk already taken is dropped.
    pub fn push_output(&self, seq: u64, bytes: &[u8]) {
        self.update(|inner| {
            if seq <= inner.output_seq {
                return;
            }
            inner.output_seq = seq;
            inner.output.extend(bytes);
            inner.output_end += bytes.len() as u64;
            let excess = inner.output.len().saturating_sub(OUTPUT_KEPT);
            inner.output.drain(..excess);
            if !bytes.is_empty() {
                inner.last_activity = Instant::now();
            }
        });
    }

    /// Output from offset `from` (what is still kept of it), at most `max` bytes, and the
    /// offset after it.
    pub fn read_output(&self, from: u64, max: usize) -> (Vec<u8>, u64) {
        let inner = lock(&self.inner);
        let start = inner.output_end - inner.output.len() as u64;
        let from = from.max(start);
        let skip = usize::try_from(from - start).unwrap_or(usize::MAX);
        let bytes: Vec<u8> = inner.output.iter().skip(skip).take(max).copied().collect();
        let next = from + bytes.len() as u64;
        (bytes, next)
    }

    /// Queues keystrokes (`hex` of `len` bytes) or a window size (`len` 0); `false` when
    /// the runner is this far behind ([`INPUT_KEPT`], each event counting
    /// `INPUT_EVENT_COST` more).
    pub fn push_input(&self, event: impl FnOnce(u64) -> InputEvent, len: usize) -> bool {
        self.update(|inner| {
            let cost = len + INPUT_EVENT_COST;
            if inner.input_bytes + cost > INPUT_KEPT {
                return false;
            }
            inner.input_seq += 1;
            inner.input.push_back(event(inner.input_seq));
            inner.input_bytes += cost;
            inner.last_activity = Instant::now();
            true
        })
    }

    /// The input events after `after` (those up to it are acknowledged and dropped).
    pub fn input_after(&self, after: u64) -> Vec<InputEvent> {
        let mut inner = lock(&self.inner);
        while inner.input.front().is_some_and(|e| e.seq() <= after) {
            let len = match inner.input.pop_front() {
                Some(InputEvent::Data { hex, .. }) => hex.len() / 2,
                _ => 0,
            };
            inner.input_bytes = inner.input_bytes.saturating_sub(len + INPUT_EVENT_COST);
        }
        inner.input.iter().cloned().collect()
    }

    /// Whether a terminal is attached.
    pub fn is_attached(&self) -> bool {
        lock(&self.inner).attached
    }

    /// Attaches a terminal; `None` when one is attached already.
    pub fn attach(self: &Arc<Self>) -> Option<Attached> {
        self.update(|inner| {
            if inner.attached {
                return None;
            }
            inner.attached = true;
            inner.detached_since = None;
            Some(Attached {
                session: self.clone(),
            })
        })
    }

    /// Waits until anything changes, or `limit` passes.
    pub async fn changed(&self, limit: Duration) {
        let notified = self.changed.notified();
        let _ = tokio::time::timeout(limit, notified).await;
    }

    /// Why the session should end now, by its timers.
    fn overdue(&self) -> Option<String> {
        self.overdue_at(Instant::now())
    }

    fn overdue_at(&self, now: Instant) -> Option<String> {
        let inner = lock(&self.inner);
        let secs = self.idle_timeout.as_secs();
        if now.saturating_duration_since(inner.last_activity) >= self.idle_timeout {
            return Some(format!("idle for {secs}s"));
        }
        match inner.detached_since {
            Some(since) if now.saturating_duration_since(since) >= self.idle_timeout => {
                Some(format!("no terminal attached for {secs}s"))
            }
            _ => None,
        }
    }
}

/// An attached terminal; detaches on drop.
pub struct Attached {
    session: Arc<Session>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.session.update(|inner| {
            inner.attached = false;
            inner.detached_since = Some(Instant::now());
        });
    }
}

/// Ends session `id` in the store and in the relay, with `reason`, recording the end in
/// the audit trail (`debug.end`); whether this ended it.
pub async fn end(store: &Store, id: &str, reason: &str) -> anyhow::Result<bool> {
    let ended = store.end_debug_session(id, reason, now_ms()).await?;
    if let Some(session) = relay().get(id) {
        session.close(reason);
    }
    if ended {
        if let Some(row) = store.debug_session(id).await? {
            let run = store.run(row.run_id).await?;
            store
                .audit(&plue_store::Audit {
                    user_id: None,
                    actor: "engine",
                    action: "debug.end",
                    repo_id: run.and_then(|run| run.repo_id),
                    run_id: Some(row.run_id),
                    detail: serde_json::json!({
                        "session": short_id(id),
                        "reason": reason,
                    }),
                })
                .await?;
        }
    }
    Ok(ended)
}

/// The first 8 characters of a session id: enough to tell sessions apart in the audit
/// trail, too few to attach with (and attaching needs the creator's token anyway).
pub fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `text` as one line of at most `max` bytes: control characters become spaces.
pub fn clean_reason(text: &str, max: usize) -> String {
    let mut clean = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if clean.len() + c.len_utf8() > max {
            break;
        }
        clean.push(c);
    }
    clean
}

/// The session's watchdog: ends it after its idle timeout without a byte either way, or
/// as long without an attached terminal, and forgets it a little after it ended.
pub async fn watch(store: Store, id: String, session: Arc<Session>) {
    loop {
        if let Phase::Ended(_) = session.phase() {
            break;
        }
        if let Some(reason) = session.overdue() {
            if let Err(err) = end(&store, &id, &reason).await {
                tracing::warn!(session = %id, "could not end a debug session: {err:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            break;
        }
        // Ended elsewhere (the runner's report on another path, the store): follow it.
        match store.debug_session(&id).await {
            Ok(Some(row)) if row.status == plue_types::status::DebugSessionStatus::Ended => {
                session.close(row.end_reason.as_deref().unwrap_or("ended"));
                break;
            }
            Ok(None) => {
                session.close("the session is gone");
                break;
            }
            _ => {}
        }
        session
            .changed(Duration::from_millis(500).min(session.idle_timeout))
            .await;
    }
    tokio::time::sleep(ENDED_KEPT).await;
    relay().forget(&id);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values updated in one step each: a panic cannot leave them half-written.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_taken_once_per_chunk_and_only_the_recent_part_is_kept() {
        let session = Session::new(Duration::from_secs(60));
        session.push_output(1, b"hello ");
        session.push_output(1, b"hello ");
        session.push_output(2, b"world");
        assert_eq!(session.read_output(0, 100), (b"hello world".to_vec(), 11));
        assert_eq!(session.read_output(6, 3), (b"wor".to_vec(), 9));
        session.push_output(3, &vec![b'x'; OUTPUT_KEPT + 10]);
        let (bytes, next) = session.read_output(0, usize::MAX);
        assert_eq!(bytes.len(), OUTPUT_KEPT);
        assert_eq!(next, 11 + OUTPUT_KEPT as u64 + 10);
    }

    #[test]
    fn one_terminal_at_a_time_and_input_waits_until_acknowledged() {
        let session = Arc::new(Session::new(Duration::from_secs(60)));
        let first = session.attach().expect("the first attach");
        assert!(session.attach().is_none(), "a second attach was let in");
        drop(first);
        let _again = session.attach().expect("attach after the first left");
        let hex = |seq| InputEvent::Data {
            seq,
            hex: "6c730a".into(),
        };
        assert!(session.push_input(hex, 3));
        assert!(session.push_input(hex, 3));
        assert_eq!(session.input_after(0).len(), 2);
        assert_eq!(session.input_after(1).len(), 1);
        assert!(session.input_after(2).is_empty());
        assert!(!session.push_input(hex, INPUT_KEPT + 1));
    }

    /// Red team: window sizes carry no keystrokes, but a terminal sending them without end
    /// while the runner reads nothing must still be refused at the bound (it was not: they
    /// counted 0 bytes, and the queue grew for as long as requests came).
    #[test]
    fn window_sizes_alone_cannot_queue_without_bound() {
        let session = Session::new(Duration::from_secs(60));
        let resize = |seq| InputEvent::Resize {
            seq,
            cols: 80,
            rows: 24,
        };
        let queued = (0..INPUT_KEPT)
            .take_while(|_| session.push_input(resize, 0))
            .count();
        assert!(queued < INPUT_KEPT, "{queued} window sizes queued");
        assert_eq!(session.input_after(0).len(), queued);
        // Acknowledged, they free their place again.
        let last = session.input_after(0).last().map(|e| e.seq()).unwrap();
        assert!(session.input_after(last).is_empty());
        assert!(session.push_input(resize, 0));
    }

    #[test]
    fn a_session_is_overdue_when_idle_or_detached_for_its_timeout() {
        let session = Arc::new(Session::new(Duration::from_millis(100)));
        let start = Instant::now();
        assert_eq!(session.overdue_at(start), None);
        assert_eq!(
            session
                .overdue_at(start + Duration::from_millis(150))
                .as_deref(),
            Some("idle for 0s")
        );
        let attached = session.attach().unwrap();
        session.push_output(1, b"x");
        let active = Instant::now();
        assert_eq!(session.overdue_at(active), None);
        // Attached but silent: idle still ends it.
        assert!(session
            .overdue_at(active + Duration::from_millis(150))
            .is_some_and(|why| why.starts_with("idle")));
        drop(attached);
        let detached = Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        session.push_output(2, b"y");
        // Output keeps it from idling, but nobody watches it.
        assert_eq!(
            session
                .overdue_at(detached + Duration::from_millis(110))
                .as_deref(),
            Some("no terminal attached for 0s")
        );
    }
}
