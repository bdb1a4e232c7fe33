//! What the egress proxy and the DNS stub of one step share: its allow-list, its log, and
//! the count of refusals; and how a refusal is noted (a step log line and the count that
//! becomes `plue_network_refused_total`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::Sender;

use super::allow::AllowList;
use plue_types::protocol::Stream;

/// What every connection's task (and the DNS stub) shares.
pub(super) struct Shared {
    pub(super) allow: AllowList,
    pub(super) log: Sender<(Stream, String)>,
    pub(super) refused: Arc<AtomicU64>,
}

/// Counts a refusal and says it in the step's log.
pub(super) async fn note_refused(shared: &Shared, target: &str, why: &str) {
    shared.refused.fetch_add(1, Ordering::Relaxed);
    let _ = shared
        .log
        .send((Stream::System, format!("network: refused {target} ({why})")))
        .await;
}
