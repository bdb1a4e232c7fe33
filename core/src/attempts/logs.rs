//! An attempt's log lines as the engine stores them ([`Attempts::store_batch`]): counted
//! against the log quotas, masked with the run's wall, annotations read, told to readers.

use std::collections::BTreeMap;

use plue_store::events::Event;
use plue_store::{log_quota, now_ms, AttemptOwner, BatchEnd, LogAttempt};
use plue_types::protocol::LogBatch;

use super::{Attempts, WITHHELD_NO_WALL};
use crate::executor::Report;
use crate::metrics;

impl Attempts {
    /// Stores a batch of attempt `attempt_id`'s lines (a runner's batch, or the one its
    /// completion carries), already validated by the transport: counted against the log quotas, masked with the run's wall, told to
    /// readers. Answers whether the runner should stop the attempt.
    pub async fn store_batch(
        &self,
        attempt_id: i64,
        owner: &AttemptOwner,
        batch: LogBatch,
    ) -> anyhow::Result<bool> {
        let store = self.executor.store();
        // Counted against the log quotas (store::logs::quota): past one, the batch is cut and
        // ends with a marker line, and the attempt is failed here with the marker as reason.
        let Some(budget) = store.log_budget(attempt_id).await? else {
            return Ok(true);
        };
        let mut planned = log_quota::plan(&self.config.log_quotas, &budget, &batch.lines, now_ms());
        // The runner masked the lines with the step's own secrets; readers see them masked
        // with every secret of the run (a token another step left in the workspace, printed by
        // a tool here).
        match self.wall_of(owner.run_id).await {
            Ok(wall) if wall.has_secrets() => {
                for line in &mut planned.lines {
                    if let Some(masked) = wall.mask_spellings(&line.text) {
                        line.text = masked;
                    }
                }
            }
            Ok(_) => {}
            // Never kept unmasked, never refused (the runner would send it again and again).
            Err(e) => {
                tracing::warn!(run = owner.run_id, "the run's outbound wall: {e:#}");
                for line in &mut planned.lines {
                    line.text = WITHHELD_NO_WALL.into();
                }
            }
        }
        let at = LogAttempt {
            attempt_id,
            run_id: owner.run_id,
            step_run_id: owner.step_run_id,
            number: owner.number,
        };
        let stored = store
            .append_logs_counted(
                at,
                &planned.lines,
                match planned.over {
                    Some(_) => BatchEnd::Cut,
                    None => BatchEnd::Open,
                },
            )
            .await?;
        metrics::record(metrics::Event::LogLines(stored));
        if stored > 0 {
            // Under the attempt the runner holds: a line cannot name another step.
            crate::annotations::ingest(store, at, &planned.lines).await?;
        }
        let events = self.executor.events();
        // A tapped run's reader gets the lines as stored, when all of them were new (a batch
        // sent again stores nothing, or only what its first copy did not) and in order; it is
        // told of any other batch that stored lines, so it reads those from the store.
        let in_order = planned.lines.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        if stored > 0 && events.tapped(owner.run_id) {
            if stored == planned.lines.len() as u64 && in_order {
                events.offer_lines(owner.run_id, owner.step_run_id, owner.number, planned.lines);
            } else {
                events.left_out(owner.run_id, owner.step_run_id);
            }
        }
        events.send(Event::Logs {
            run_id: owner.run_id,
            step_run_id: owner.step_run_id,
        });
        if let Some(over) = planned.over {
            let report = Report {
                outcome: plue_types::protocol::Outcome::Failed,
                exit_code: None,
                reason: Some(over.to_string()),
                outputs: BTreeMap::new(),
            };
            self.executor
                .complete(attempt_id, owner.run_id, None, &report)
                .await?;
            return Ok(true);
        }
        Ok(budget.stop || budget.truncated)
    }
}
