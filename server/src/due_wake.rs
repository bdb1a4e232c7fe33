//! The due-work watch: one query every [`crate::server::EngineConfig::due_check`] (250 ms)
//! that wakes this engine's waiting polls for queued steps that became claimable as time
//! passed, so an idle runner's poll need not look for work on a short timer of its own.
//!
//! A queued step is claimable once its `ready_at` has passed. A step queued ready is
//! announced when it is queued (`Events::queued`, and to other replicas over PostgreSQL
//! `LISTEN`/`NOTIFY`); one queued for later (a retry's backoff, an environment's wait
//! timer) is announced by nobody. This task asks the store, once a tick, how many queued
//! steps' `ready_at` fell since the last tick (`Store::became_ready`, a range scan of the
//! claim index) and wakes that many polls (`Events::became_due`). It also catches a step
//! another replica queued whose notification was lost, within one tick.
//!
//! Before it, every idle runner's poll re-ran its claim every 250 ms: 64 idle runners made
//! about 340 claims a second (`plue-bench replicas`, idle), where this makes four queries
//! a second per engine, and the polls' own recheck becomes a slow safety net
//! ([`crate::server::EngineConfig::poll_recheck`]).
//!
//! Invariants: the windows `(after, upto]` follow each other without a gap, so every
//! `ready_at` falls in exactly one tick's window (a late tick only widens it); a tick with no
//! waiting poll asks nothing (a poll that starts later claims on its first look); a failed
//! query is retried over the same window on the next tick.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use plue_core::executor::Executor;
use plue_store::now_ms;

/// Runs until `shutdown`: every `every`, wakes polls for work that became due.
pub async fn run(executor: Arc<Executor>, every: Duration, shutdown: CancellationToken) {
    let mut after = now_ms();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match tick(&executor, after, now_ms()).await {
            Ok(upto) => after = upto,
            Err(e) => tracing::warn!("looking for work that became due failed: {e:#}"),
        }
    }
}

/// One look over `(after, upto]`: how far the window may advance.
async fn tick(executor: &Executor, after: i64, upto: i64) -> anyhow::Result<i64> {
    if upto <= after {
        return Ok(after); // the clock went back: keep the window's start
    }
    let events = executor.events();
    if events.waiting_polls() == 0 {
        return Ok(upto);
    }
    let due = executor.store().became_ready(after, upto).await?;
    if due > 0 {
        tracing::trace!(due, "queued work became due: waking polls");
        events.became_due(usize::try_from(due).unwrap_or(usize::MAX));
    }
    Ok(upto)
}

#[cfg(test)]
mod tests {
    use evaluator::plan::{Plan, Step};
    use plue_store::testing::{local_run, queue_run_ready_at};

    use super::*;
    use crate::testing::TestApi;

    /// Whether a poll waiting from now is woken while `during` runs.
    async fn woken_during<T>(
        executor: &Executor,
        during: impl std::future::Future<Output = T>,
    ) -> bool {
        let events = executor.events();
        let waiting = events.poll_wait();
        let notified = waiting.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        during.await;
        tokio::time::timeout(Duration::from_millis(200), notified)
            .await
            .is_ok()
    }

    async fn queued_at(api: &TestApi, ready_at: i64) {
        let plan = Plan::new("p", vec![Step::bash("a", "true")]);
        let json = serde_json::to_string(&plan).unwrap();
        queue_run_ready_at(api.executor.store(), &local_run(&plan, &json), ready_at).await;
    }

    #[tokio::test]
    async fn a_step_wakes_a_waiting_poll_in_the_window_its_time_falls_in_only() {
        let api = TestApi::new("admin").await;
        let executor = &api.executor;
        queued_at(&api, 5_000).await;
        assert!(
            !woken_during(executor, async {
                assert_eq!(tick(executor, 1_000, 4_999).await.unwrap(), 4_999);
            })
            .await
        );
        assert!(
            woken_during(executor, async {
                assert_eq!(tick(executor, 4_999, 5_000).await.unwrap(), 5_000);
            })
            .await
        );
        assert!(
            !woken_during(executor, async {
                assert_eq!(tick(executor, 5_000, 9_000).await.unwrap(), 9_000);
            })
            .await
        );
    }

    #[tokio::test]
    async fn without_a_waiting_poll_the_window_moves_on_and_a_clock_going_back_keeps_it() {
        let api = TestApi::new("admin").await;
        queued_at(&api, 5_000).await;
        assert_eq!(api.executor.events().waiting_polls(), 0);
        assert_eq!(tick(&api.executor, 1_000, 6_000).await.unwrap(), 6_000);
        assert_eq!(tick(&api.executor, 6_000, 5_500).await.unwrap(), 6_000);
    }

    #[tokio::test]
    async fn the_task_wakes_a_poll_when_a_retry_becomes_due() {
        let api = TestApi::new("admin").await;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            api.executor.clone(),
            Duration::from_millis(20),
            shutdown.clone(),
        ));
        let events = api.executor.events();
        let waiting = events.poll_wait();
        let notified = waiting.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        queued_at(&api, now_ms() + 100).await;
        tokio::time::timeout(Duration::from_secs(10), notified)
            .await
            .expect("woken once the step became due");
        shutdown.cancel();
        task.await.unwrap();
    }
}
