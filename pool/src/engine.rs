//! What a pool needs of the engine that runs it, and nothing more: the store, the
//! in-process notifications, and a way to fail an attempt as the engine ends one.
//!
//! Invariant: the pool decides how many runners there are and which attempts are lost;
//! the engine decides what a failed attempt means for its run (a retry, the next steps).
//! So the pool never writes an attempt's end itself: it asks [`Engine::fail_attempt`],
//! which the engine's executor implements with its own rules — and, for a claim the
//! runner never acknowledged (it ran nothing of it), [`Engine::return_unacknowledged_of`],
//! which returns the step to the queue without using a retry.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::events::Events;
use crate::scope::format_labels;
use crate::store::{now_ms, Store};

/// The engine as a pool sees it (implemented by the engine's executor).
pub trait Engine: Send + Sync + 'static {
    /// The store every replica shares.
    fn store(&self) -> &Store;

    /// This process's notifications (work queued, runs changed).
    fn events(&self) -> &Arc<Events>;

    /// Ends attempt `attempt_id` of run `run_id` as failed with `reason` and moves the run
    /// on (a retry where its step has retries left). False when it had already ended.
    fn fail_attempt(
        &self,
        attempt_id: i64,
        run_id: i64,
        reason: String,
    ) -> BoxFuture<'_, anyhow::Result<bool>>;

    /// Returns every claim runner `runner_id` never acknowledged to the queue, without
    /// using a retry (the runner ended: `how` says how); how many.
    fn return_unacknowledged_of<'a>(
        &'a self,
        runner_id: i64,
        how: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<usize>>;
}

/// Ends every attempt runner `runner_id` holds, for a runner declared lost or one its pool
/// saw die: a claim it never acknowledged goes back to the queue without using a retry,
/// the rest fail with `reason` (retried if their step has retries left). Returns how many
/// failed.
pub async fn fail_attempts_of(
    engine: &dyn Engine,
    runner_id: i64,
    reason: &str,
) -> anyhow::Result<usize> {
    engine.return_unacknowledged_of(runner_id, reason).await?;
    let attempts = engine.store().active_attempts_of(runner_id).await?;
    for (attempt_id, run_id) in &attempts {
        tracing::info!(runner_id, attempt_id, "{reason}");
        engine
            .fail_attempt(*attempt_id, *run_id, reason.to_string())
            .await?;
    }
    Ok(attempts.len())
}

/// Takes every step `holder` — a runner registered only for this — may claim with
/// `labels` (of forks' runs only, with `forks_only`), fails each with `why`, then retires
/// the holder: how the pools end steps no runner can serve. Returns how many it failed.
pub(crate) async fn fail_claimable(
    engine: &dyn Engine,
    holder: i64,
    labels: &BTreeMap<String, String>,
    forks_only: bool,
    why: &str,
) -> anyhow::Result<usize> {
    let store = engine.store();
    let sets = [format_labels(labels)];
    let mut failed = 0;
    loop {
        let now = now_ms();
        let claimed = if forks_only {
            store.claim_fork_step(holder, &sets, now).await?
        } else {
            store.claim(holder, &sets, now).await?
        };
        let Some(claimed) = claimed else { break };
        tracing::warn!(step = %claimed.step_id, run_id = claimed.run_id, "{why}");
        engine
            .fail_attempt(claimed.attempt_id, claimed.run_id, why.to_string())
            .await?;
        failed += 1;
    }
    store.runner_gone(holder, now_ms()).await?;
    Ok(failed)
}

/// The least time between two checks of [`sweep_on_work`], however often work is queued.
/// A burst queues a step at every completion, and each check reads every ready step run:
/// checked at each queueing, the two sweepers cost PostgreSQL ≈ 0.1 ms a step. A step no
/// runner can serve still fails within this of being queued.
pub(crate) const SWEEP_GAP: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs `check` when work is queued (`work`) and every `interval`, never twice within
/// `gap`, until `shutdown`: how the engine-side sweepers (steps of forks no runner
/// accepts, steps whose network policy no runner enforces, steps no class of the
/// Kubernetes pool serves) look for work to fail. Work queued during a check or the gap
/// after it is checked once the gap is over. A check that fails is logged (`what` says of
/// what) and tried again at the next wake.
pub(crate) async fn sweep_on_work<T, F, Fut>(
    work: &tokio::sync::Notify,
    gap: std::time::Duration,
    interval: std::time::Duration,
    shutdown: &tokio_util::sync::CancellationToken,
    what: &str,
    mut check: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    loop {
        // Registered before the check: `notify_waiters` reaches it from its creation on,
        // so work queued during the check or the gap wakes the next one.
        let queued = work.notified();
        if let Err(e) = check().await {
            tracing::warn!("{what}: {e:#}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(gap) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = queued => {}
            _ = tokio::time::sleep(interval.saturating_sub(gap)) => {}
        }
    }
}

/// An [`Engine`] for this crate's tests: it fails an attempt in the store directly (final,
/// no retry), as the executor does for a step without retries.
#[cfg(test)]
pub(crate) mod engine_for_tests {
    use std::sync::Arc;

    use futures::future::BoxFuture;

    use super::Engine;
    use crate::events::Events;
    use crate::store::{now_ms, AttemptEnd, StepAfter, Store};
    use plue_types::status::{AttemptStatus, StepStatus};

    pub(crate) struct TestEngine {
        store: Store,
        events: Arc<Events>,
    }

    pub(crate) fn engine(store: &Store) -> Arc<dyn Engine> {
        Arc::new(TestEngine {
            store: store.clone(),
            events: Arc::new(Events::default()),
        })
    }

    impl Engine for TestEngine {
        fn store(&self) -> &Store {
            &self.store
        }

        fn events(&self) -> &Arc<Events> {
            &self.events
        }

        fn fail_attempt(
            &self,
            attempt_id: i64,
            _run_id: i64,
            reason: String,
        ) -> BoxFuture<'_, anyhow::Result<bool>> {
            Box::pin(async move {
                let end = AttemptEnd {
                    status: AttemptStatus::Failed,
                    exit_code: None,
                    reason: Some(&reason),
                    at: now_ms(),
                    usage: None,
                    model: None,
                    cost_micros: None,
                    has_outputs: false,
                    started_at: None,
                    runner_claims_next: false,
                };
                let completed = self
                    .store
                    .complete_attempt(attempt_id, None, &end, |_| StepAfter::Final {
                        status: StepStatus::Failed,
                        reason: Some(reason.clone()),
                        exit_code: None,
                        outputs: "{}".into(),
                    })
                    .await?;
                Ok(completed.is_some())
            })
        }

        fn return_unacknowledged_of<'a>(
            &'a self,
            runner_id: i64,
            how: &'a str,
        ) -> BoxFuture<'a, anyhow::Result<usize>> {
            Box::pin(async move {
                let why = crate::store::Unanswered::RunnerEnded(how);
                let returned = self
                    .store
                    .return_unacknowledged(i64::MAX, Some(runner_id), why, now_ms())
                    .await?;
                Ok(returned.len())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    use super::sweep_on_work;

    const GAP: Duration = Duration::from_millis(100);

    /// When each check ran, of a sweep (its interval an hour: only work wakes it) on `work`.
    fn sweep(
        work: &Arc<Notify>,
        shutdown: &CancellationToken,
    ) -> (Arc<Mutex<Vec<Instant>>>, tokio::task::JoinHandle<()>) {
        let checks = Arc::new(Mutex::new(Vec::new()));
        let (work, shutdown, seen) = (work.clone(), shutdown.clone(), checks.clone());
        let task = tokio::spawn(async move {
            let check = move || {
                seen.lock().unwrap().push(Instant::now());
                async { anyhow::Ok(()) }
            };
            let hour = Duration::from_secs(3600);
            sweep_on_work(&work, GAP, hour, &shutdown, "test sweep", check).await;
        });
        (checks, task)
    }

    async fn until_checked(checks: &Mutex<Vec<Instant>>, count: usize) -> Vec<Instant> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = checks.lock().unwrap().clone();
            if seen.len() >= count || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_flood_of_work_is_checked_at_most_once_a_gap() {
        let (work, shutdown) = (Arc::new(Notify::new()), CancellationToken::new());
        let (checks, task) = sweep(&work, &shutdown);
        // Work queued about every millisecond for 0.6 s: a check at each would be hundreds.
        let flood = Instant::now();
        while flood.elapsed() < Duration::from_millis(600) {
            work.notify_waiters();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let seen = checks.lock().unwrap().clone();
        shutdown.cancel();
        task.await.unwrap();
        assert!(
            seen.len() >= 2,
            "the flood woke no check after the first: {seen:?}"
        );
        assert!(
            seen.len() <= 8,
            "{} checks in 0.6 s with a gap of 0.1 s",
            seen.len()
        );
        for pair in seen.windows(2) {
            assert!(
                pair[1] - pair[0] >= GAP,
                "two checks {:?} apart",
                pair[1] - pair[0]
            );
        }
    }

    #[tokio::test]
    async fn work_queued_during_the_gap_is_checked_after_it() {
        let (work, shutdown) = (Arc::new(Notify::new()), CancellationToken::new());
        let (checks, task) = sweep(&work, &shutdown);
        // The first check runs at once; then quiet, past its gap.
        until_checked(&checks, 1).await;
        tokio::time::sleep(GAP * 2).await;
        work.notify_waiters();
        let seen = until_checked(&checks, 2).await;
        assert_eq!(seen.len(), 2, "queued work woke no check");
        // Queued again right after that check, within its gap (or, on a slow machine,
        // just past it): checked all the same, never sooner than the gap.
        work.notify_waiters();
        let seen = until_checked(&checks, 3).await;
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(
            seen.len(),
            3,
            "work queued during the gap was never checked"
        );
        assert!(seen[2] - seen[1] >= GAP, "{:?}", seen[2] - seen[1]);
    }
}
