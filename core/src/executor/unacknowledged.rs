//! Claims nobody acknowledged, as the executor returns them to the queue: the store's
//! transition (`store::claims::unacknowledged`), then what follows every committed return —
//! the polls woken for the step, readers told it moved, the metric counted, its run
//! advanced (a run cancelled meanwhile cancels the step it got back).
//!
//! Invariant: a returned claim is counted once, by the process whose transaction returned
//! it, after that transaction committed.

use plue_store::events::Event;
use plue_store::{now_ms, ReturnedClaim, Unanswered};

use crate::metrics;

use super::Executor;

impl Executor {
    /// Returns every claim still unacknowledged that was made before `claimed_before` (of
    /// runner `runner`, when given) to the queue, with `why` as the reason (see
    /// [`plue_store::Store::return_unacknowledged`]); how many it returned.
    pub async fn return_unacknowledged(
        &self,
        claimed_before: i64,
        runner: Option<i64>,
        why: Unanswered<'_>,
    ) -> anyhow::Result<usize> {
        let returned = self
            .store()
            .return_unacknowledged(claimed_before, runner, why, now_ms())
            .await?;
        if returned.is_empty() {
            return Ok(0);
        }
        metrics::record(metrics::Event::ClaimsUnacknowledged(returned.len() as u64));
        for ReturnedClaim {
            attempt_id,
            run_id,
            step_run_id,
            runner_id,
        } in &returned
        {
            tracing::warn!(
                attempt_id,
                run_id,
                runner_id,
                "a claim was not acknowledged: its step went back to the queue, the runner \
                 is suspect"
            );
            self.events().steps_moved(*run_id, &[*step_run_id]);
            self.events().send(Event::Step { run_id: *run_id });
        }
        self.events().queued(returned.len());
        for claim in &returned {
            self.advance(claim.run_id).await?;
        }
        Ok(returned.len())
    }
}
