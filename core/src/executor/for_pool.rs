//! The executor as the pools see it ([`plue_pool::engine::Engine`]): the store, the
//! notifications, and failing an attempt through [`Executor::complete`] so the run's
//! rules (retries, the next steps) apply as for any other ending. Also where the pools'
//! reports reach this process's metrics.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use plue_pool::report::PoolEvent;
use plue_store::events::Events;
use plue_store::Store;
use plue_types::protocol::Outcome;

use super::{Executor, Report};
use crate::metrics;

impl plue_pool::engine::Engine for Executor {
    fn store(&self) -> &Store {
        Executor::store(self)
    }

    fn events(&self) -> &Arc<Events> {
        Executor::events(self)
    }

    fn fail_attempt(
        &self,
        attempt_id: i64,
        run_id: i64,
        reason: String,
    ) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async move {
            let report = Report {
                outcome: Outcome::Failed,
                exit_code: None,
                reason: Some(reason),
                outputs: BTreeMap::new(),
            };
            self.complete(attempt_id, run_id, None, &report).await
        })
    }

    fn return_unacknowledged_of<'a>(
        &'a self,
        runner_id: i64,
        how: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<usize>> {
        let why = plue_store::Unanswered::RunnerEnded(how);
        Box::pin(self.return_unacknowledged(i64::MAX, Some(runner_id), why))
    }
}

/// Sends the pools' reports to this process's metrics families (installed by
/// [`Executor::new`]: every engine process makes an executor before it starts a pool).
pub(super) fn install_pool_reports() {
    plue_pool::report::set_sink(|event| {
        metrics::record(match event {
            PoolEvent::StartFailed { class } => metrics::Event::StartFailed { class },
            PoolEvent::PodFailed { class, reason } => metrics::Event::PodFailed { class, reason },
            PoolEvent::Leader(leading) => metrics::Event::Leader(leading),
        })
    });
}
