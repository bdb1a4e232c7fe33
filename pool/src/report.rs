//! What the pools report for the engine's metrics: a few events, handed to one sink the
//! engine installs ([`set_sink`]) when it starts.
//!
//! Invariant: the pool knows no metric family or label scheme; the engine's `metrics`
//! module decides what an event counts in. Before a sink is installed (unit tests of this
//! crate), events are dropped: reports never change what a pool does.

use std::sync::OnceLock;

/// Something a pool saw that the metrics count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEvent<'a> {
    /// A runner ended before registering (a start failure) in pool class `class`.
    StartFailed { class: &'a str },
    /// A runner pod of `class` failed; `reason` is a bounded kind (`image`, `evicted`, ...).
    PodFailed { class: &'a str, reason: &'a str },
    /// This engine became (true) or stopped being (false) the Kubernetes pool's leader.
    Leader(bool),
}

/// Where events go: a plain function, so installing it twice is harmless.
pub type Sink = fn(PoolEvent<'_>);

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends every later event to `sink`. The first sink installed stays.
pub fn set_sink(sink: Sink) {
    let _ = SINK.set(sink);
}

pub(crate) fn record(event: PoolEvent<'_>) {
    if let Some(sink) = SINK.get() {
        sink(event);
    }
}
