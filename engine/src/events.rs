//! In-process notifications: hints that something changed, never the data itself.
//!
//! Invariant: the database is the truth. A subscriber that misses events (a lagging
//! broadcast receiver, or a change made by another engine replica) re-reads the store, and
//! every waiter also re-checks on a short timer, so a lost hint costs latency, never data.

use tokio::sync::{broadcast, Notify};

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
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(4096).0,
            work: Notify::new(),
        }
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
}
