//! Wakes across engine replicas: several `plue serve` on one PostgreSQL tell each other,
//! with `LISTEN`/`NOTIFY` on the channel [`CHANNEL`], what [`Events`] tells the waiters
//! of one process, so a step queued through one engine wakes a runner long-polling
//! another at once instead of at that poll's next re-check (250 ms).
//!
//! Invariant: notifications are hints, the database is the truth. A notification lost (the
//! listener's connection dropped, a payload that cannot be read, a `NOTIFY` that failed)
//! costs latency — the waiters' own timers find the work — never correctness: nothing is
//! decided from a notification, a woken waiter re-reads the store.
//!
//! What is told ([`Hint`]), and why only that:
//! - work queued (how many attempts), beyond what the sender's own waiting polls cover:
//!   runners' polls on every replica wait for it, and claim latency is what replicas lose
//!   without it. What the sender's waiting polls cover is not told: it would wake an idle
//!   poll on every other replica into a claim transaction that finds nothing;
//! - a sweep: a poll woken for work it may not take (labels, forks) while ready work
//!   remains, so a runner elsewhere that may take it looks at once;
//! - a run asked to cancel (its id): the watch of a runner working on it may be held by
//!   another replica, which otherwise notices within its 1 s re-check while the step keeps
//!   running.
//!
//! Not told: a run finished, steps moved, log lines stored. Their readers (the live page,
//! log followers) re-read the store on their own timers, and `plue run`'s printer follows
//! its own in-process engine; telling them would be a notification per advance for no
//! claim. The sweeper's periodic wake is each replica's own, and a debug session queued
//! on one replica is found by the others' polls within their 2 s look.
//!
//! How:
//! - Each replica has a random id ([`ReplicaWakes::replica`]); a notification carries it,
//!   and a replica ignores its own.
//! - Hints go to a task (`tell`) that sends them with `SELECT pg_notify(...)` after the
//!   change was committed (the caller said it after its commit). While one notification
//!   is in flight the next hints gather, and go together in one (counts added, run ids
//!   listed): one notification per commit at most, fewer under load. The statement is its
//!   own transaction, off the request's path: a request never waits for it, and the
//!   replicas' queueing transactions never serialize on PostgreSQL's commit-time lock of
//!   the notification queue.
//! - Every replica listens (`hear`) on one connection of the store's pool (sqlx's
//!   `PgListener`), and wakes its waiters ([`Events::heard`]) as a local queueing does.
//!   When that connection drops it reconnects, and once it listens again it wakes every
//!   waiter once ([`Events::wake_all`]): what was told meanwhile was lost.
//! - SQLite: nothing (one engine per database file, and no `NOTIFY`).

mod payload;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::events::{Events, Hint};
use crate::{Db, Store};

/// The PostgreSQL notification channel replicas of one database tell each other on.
pub const CHANNEL: &str = "plue_wake";

/// The longest wait between two attempts to listen again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A replica's telling and hearing, while it lives: dropping it stops both.
#[derive(Debug)]
pub struct ReplicaWakes {
    replica: u64,
    counts: Arc<Counts>,
    tasks: [JoinHandle<()>; 2],
}

/// What a replica's wakes did so far (for tests and logs).
#[derive(Debug, Default)]
pub struct Counts {
    /// Notifications sent.
    pub sent: AtomicU64,
    /// Notifications heard from other replicas.
    pub heard: AtomicU64,
    /// Notifications heard that this replica sent (ignored).
    pub own: AtomicU64,
    /// Times the listener listened again after losing its connection.
    pub relistened: AtomicU64,
}

impl ReplicaWakes {
    /// This replica's id in the notifications it sends.
    pub fn replica(&self) -> u64 {
        self.replica
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

impl Drop for ReplicaWakes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// On PostgreSQL: relays the hints `events` is told to the other replicas of `store`'s
/// database, and wakes `events`' waiters for theirs; listening has begun when this
/// returns, unless PostgreSQL refused (then it is retried in the background). `None` on
/// SQLite, and when `events` already has a relay.
pub async fn start(store: &Store, events: Arc<Events>) -> Option<ReplicaWakes> {
    let Db::Postgres(pool) = &store.db else {
        return None;
    };
    let (tx, rx) = mpsc::unbounded_channel();
    if !events.relay_to(tx) {
        tracing::warn!("replica wakes: these events already have a relay");
        return None;
    }
    let replica = replica_id();
    let counts = Arc::new(Counts::default());
    let listener = match subscribe(pool).await {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!("replica wakes: cannot listen on {CHANNEL} yet (retrying): {e:#}");
            None
        }
    };
    let hearing = tokio::spawn(hear(
        pool.clone(),
        events,
        replica,
        counts.clone(),
        listener,
    ));
    let telling = tokio::spawn(tell(pool.clone(), replica, rx, counts.clone()));
    Some(ReplicaWakes {
        replica,
        counts,
        tasks: [hearing, telling],
    })
}

/// A random id for this replica, different for every call in a process too.
fn replica_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.write_i64(crate::now_ms());
    hasher.finish()
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Sends the hints said here, gathered while the previous notification was in flight.
async fn tell(
    pool: PgPool,
    replica: u64,
    mut hints: mpsc::UnboundedReceiver<Hint>,
    counts: Arc<Counts>,
) {
    let mut failing = false;
    while let Some(first) = hints.recv().await {
        let mut batch = payload::Batch::default();
        batch.add(first);
        while let Ok(hint) = hints.try_recv() {
            batch.add(hint);
        }
        for text in batch.payloads(replica) {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&text)
                .execute(&pool)
                .await;
            match sent {
                Ok(_) => {
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    failing = false;
                }
                Err(sqlx::Error::PoolClosed) => return,
                // Once per spell of failures: the other replicas' timers cover them.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("replica wakes: NOTIFY {CHANNEL} failed: {e}");
                }
                Err(_) => {}
            }
        }
    }
}

/// Wakes `events`' waiters for what the other replicas tell, listening again (and waking
/// everyone once) whenever the connection was lost.
async fn hear(
    pool: PgPool,
    events: Arc<Events>,
    replica: u64,
    counts: Arc<Counts>,
    mut listener: Option<PgListener>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(listening) = listener.as_mut() else {
            match subscribe(&pool).await {
                Ok(again) => {
                    listener = Some(again);
                    backoff = Duration::from_millis(100);
                    relistened(&events, &counts);
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::debug!("replica wakes: listening on {CHANNEL} again: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        match listening.try_recv().await {
            Ok(Some(notification)) => match payload::Heard::parse(notification.payload()) {
                Some(heard) if heard.replica == replica => {
                    counts.own.fetch_add(1, Ordering::Relaxed);
                }
                Some(heard) => {
                    counts.heard.fetch_add(1, Ordering::Relaxed);
                    for hint in heard.hints {
                        events.heard(hint);
                    }
                }
                // Another replica's words this one cannot read (a newer one): whatever it
                // said, everyone looks.
                None => {
                    counts.heard.fetch_add(1, Ordering::Relaxed);
                    events.wake_all();
                }
            },
            // The connection was lost, and the listener listens again on a new one.
            Ok(None) => relistened(&events, &counts),
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!("replica wakes: listening on {CHANNEL}: {e}");
                listener = None;
            }
        }
    }
}

/// Listening again: what the other replicas told meanwhile was lost, so every waiter looks.
fn relistened(events: &Events, counts: &Counts) {
    counts.relistened.fetch_add(1, Ordering::Relaxed);
    events.wake_all();
}
