//! What a pool needs of the engine that runs it, and nothing more: the store, the
//! in-process notifications, and a way to fail an attempt as the engine ends one.
//!
//! Invariant: the pool decides how many runners there are and which attempts are lost;
//! the engine decides what a failed attempt means for its run (a retry, the next steps).
//! So the pool never writes an attempt's end itself: it asks [`Engine::fail_attempt`],
//! which the engine's executor implements with its own rules.

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
}

/// Fails every attempt runner `runner_id` holds with `reason` (retried if its step has
/// retries left): for a runner declared lost, or one its pool saw die. Returns how many.
pub async fn fail_attempts_of(
    engine: &dyn Engine,
    runner_id: i64,
    reason: &str,
) -> anyhow::Result<usize> {
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

/// An [`Engine`] for this crate's tests: it fails an attempt in the store directly (final,
/// no retry), as the executor does for a step without retries.
/// Runs `check` whenever work is queued and every `interval`, until `shutdown`: how the
/// engine-side sweepers (steps of forks no runner accepts, steps whose network policy no
/// runner enforces) look for work to fail. A check that fails is logged (`what` says of
/// what) and tried again at the next wake.
pub(crate) async fn sweep_on_work<T, F, Fut>(
    executor: &dyn Engine,
    interval: std::time::Duration,
    shutdown: &tokio_util::sync::CancellationToken,
    what: &str,
    mut check: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    loop {
        // Registered before the check, so work queued during it is not missed.
        let work = executor.events().work.notified();
        if let Err(e) = check().await {
            tracing::warn!("{what}: {e:#}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = work => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

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
    }
}
