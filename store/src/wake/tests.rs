//! Two replicas — two stores on one PostgreSQL database, each with its own [`Events`] —
//! in one process. Nothing here waits on a timer that could wake a waiter instead: the
//! [`Events`] waiters have none, so a waiter woken at all was woken by a notification (or,
//! after a lost connection, by the listener's wake of everyone). The timeouts only bound a
//! failing test.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::events::Event;
use crate::tx::Statement;

const BOUND: Duration = Duration::from_secs(60);

struct Replica {
    store: Store,
    events: Arc<Events>,
    wakes: ReplicaWakes,
}

/// Two replicas of a fresh database, or `None` when PostgreSQL is unavailable (and not
/// required).
async fn two_replicas() -> Option<(Replica, Replica)> {
    let (_, url) = crate::testing::postgres_database()?;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = Store::connect(&url).await.expect("open the store");
        let events = Arc::new(Events::default());
        let wakes = start(&store, events.clone())
            .await
            .expect("wakes on PostgreSQL");
        replicas.push(Replica {
            store,
            events,
            wakes,
        });
    }
    let b = replicas.pop()?;
    Some((replicas.pop()?, b))
}

/// Waits (bounded) until `what` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(BOUND, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within {BOUND:?}"));
}

// regression (bench replicas): a step queued by one engine woke only that engine's
// polls; a runner polling the other found it at its next 250 ms re-check.
#[tokio::test]
async fn a_queueing_on_one_replica_wakes_a_poll_waiting_on_the_other() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    assert_ne!(a.wakes.replica(), b.wakes.replica());
    let waiting = b.events.poll_wait();
    let notified = waiting.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();

    a.events.queued(1);
    tokio::time::timeout(BOUND, notified)
        .await
        .expect("B's poll woken by A's notification");
    assert_eq!(b.wakes.counts().heard.load(Ordering::Relaxed), 1);
    // A hears its own notification and ignores it.
    until("A's notification sent and heard back", || {
        let counts = a.wakes.counts();
        counts.own.load(Ordering::Relaxed) == 1 && counts.sent.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(a.wakes.counts().heard.load(Ordering::Relaxed), 0);
    assert_eq!(b.wakes.counts().sent.load(Ordering::Relaxed), 0, "no echo");
    a.store.close().await;
    b.store.close().await;
}

#[tokio::test]
async fn a_cancel_on_one_replica_reaches_the_watches_of_the_other() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let mut watching = b.events.subscribe();
    a.events.send(Event::Cancel { run_id: 7 });
    let heard = tokio::time::timeout(BOUND, watching.recv())
        .await
        .expect("the cancel within the bound")
        .expect("an event");
    assert_eq!(heard, Event::Cancel { run_id: 7 });
    a.store.close().await;
    b.store.close().await;
}

// A notification sent while a replica's listener was disconnected is lost: once it listens
// again it wakes every waiter, and hears the next ones.
#[tokio::test]
async fn a_listener_that_lost_its_connection_wakes_everyone_and_listens_again() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let waiting = b.events.poll_wait();
    let notified = waiting.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();

    let killed: Vec<bool> = a
        .store
        .scalars(Statement::new(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
        ))
        .await
        .expect("end the listeners' connections");
    assert_eq!(killed, vec![true, true], "both replicas' listeners");
    tokio::time::timeout(BOUND, notified)
        .await
        .expect("B's poll woken when B listens again");
    until("both listening again", || {
        [&a, &b]
            .iter()
            .all(|r| r.wakes.counts().relistened.load(Ordering::Relaxed) >= 1)
    })
    .await;

    let notified = waiting.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    a.events.queued(1);
    tokio::time::timeout(BOUND, notified)
        .await
        .expect("B hears A again");
    drop(waiting);
    a.store.close().await;
    b.store.close().await;
}

#[tokio::test]
async fn an_embedded_database_has_no_replicas_to_wake() {
    let (store, _dir) = crate::testing::sqlite().await;
    let events = Arc::new(Events::default());
    assert!(start(&store, events.clone()).await.is_none());
    let (tx, _rx) = mpsc::unbounded_channel();
    assert!(events.relay_to(tx), "no relay was set");
}
