//! An attempt's end as its runner reports it ([`Attempts::complete`]): its last lines
//! stored, its checkout token's fate, its proposals judged, its outputs and reason masked
//! with the run's wall, the executor's one transition — and the runner's next attempt
//! handed over in the answer ([`Attempts::claim_now`]).

use plue_store::{now_ms, AttemptOwner, NextClaim};
use plue_types::protocol::{self as wire, Assignment};

use super::{checkout, Attempts, AuthedRunner, WITHHELD_NO_WALL};
use crate::executor::{Report, RunnerSaid};

impl Attempts {
    /// Completes attempt `attempt_id` (of `owner`, held by `runner`) as `completion` says
    /// (validated by the transport): the runner's next assignment when it asked for one
    /// (`claim_next`) and there is one.
    pub async fn complete(
        &self,
        runner: &AuthedRunner,
        attempt_id: i64,
        owner: &AttemptOwner,
        mut completion: wire::Completion,
    ) -> anyhow::Result<Option<Assignment>> {
        // Its last lines, as their own batch would have been: stored and told to readers
        // before the end is recorded. A batch past a quota fails the attempt there, and
        // this report is then a repeat.
        if let Some(batch) = completion.logs.take() {
            self.store_batch(attempt_id, owner, batch).await?;
        }
        let network_refused = completion.network_refused;
        let (mut outcome, mut reason) = (completion.outcome, completion.reason);
        // A checkout the forge refused the token of: that token is forgotten.
        if let Err(e) = checkout::after_attempt(
            &self.executor,
            &self.checkouts,
            attempt_id,
            outcome,
            reason.as_deref(),
        )
        .await
        {
            tracing::warn!(attempt = attempt_id, "the attempt's checkout token: {e:#}");
        }
        // Safe outputs: judged before the attempt ends (a refusal fails it), stored after.
        let judged = crate::safe_outputs::judge(
            &self.executor,
            owner.run_id,
            owner.step_run_id,
            &mut outcome,
            &mut reason,
            &completion.proposals,
        )
        .await?;
        // The runner masked its reason and outputs with the step's own secrets; readers see
        // them only as the run's wall leaves them (another step's token a tool printed, or
        // an agent put in its result, is masked too).
        let mut outputs = completion.outputs;
        let wall = self.wall_of(owner.run_id).await;
        match &wall {
            Ok(wall) if wall.has_secrets() => {
                for value in outputs.values_mut() {
                    if let Some(masked) = wall.mask_spellings(value) {
                        *value = masked;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(run = owner.run_id, "the run's outbound wall: {e:#}");
                for value in outputs.values_mut() {
                    *value = WITHHELD_NO_WALL.into();
                }
            }
        }
        if let Some(text) = reason.take() {
            reason = Some(match &wall {
                Ok(wall) => wall.redact(&text).into_string(),
                Err(_) => WITHHELD_NO_WALL.into(),
            });
        }
        let report = Report {
            outcome,
            exit_code: completion.exit_code,
            reason,
            outputs,
        };
        // The next attempt is claimed in the completion's transaction, unless the engine is
        // shutting down (then it claims nothing, below) or proposals are still to be
        // recorded after it: a claim made there must reach the runner, so nothing that may
        // fail comes between (with proposals, the claim comes after their record, as a
        // claim of its own).
        let next_labels =
            (completion.claim_next && !self.shutdown.is_cancelled() && judged.is_empty())
                .then(|| runner.label_sets.clone());
        let done = self
            .executor
            .complete_holding(
                attempt_id,
                owner.run_id,
                Some(runner.id),
                &report,
                RunnerSaid {
                    usage: completion.usage,
                    model: completion.model,
                    started_ms_ago: completion.started_ms_ago,
                    claims_next: completion.claim_next,
                    next_labels,
                },
            )
            .await?;
        let (completed, queued) = (done.completed, done.queued);
        // Recorded by the report that completed the attempt (a repeated one records nothing).
        if completed {
            judged.record(&self.executor, attempt_id).await?;
        }
        // Counted once, by the report that completed the attempt.
        if completed && network_refused > 0 {
            crate::metrics::record(crate::metrics::Event::NetworkRefused(network_refused));
        }
        // A repeated report (its first answer was lost) claims nothing: the first may have.
        let next = if completed && completion.claim_next {
            self.claim_now(runner, done.next).await
        } else {
            Ok(None)
        };
        // The other runners hear of what this runner did not take (everything, if the claim
        // failed or took another run's step): a step the completion queued is never left
        // unannounced.
        let taken = usize::from(matches!(&next, Ok(Some(a)) if a.run_id == owner.run_id));
        self.executor.events().queued(queued.saturating_sub(taken));
        next
    }

    /// One claim for `runner` without waiting, as a poll's first look makes it: the
    /// runner's next attempt handed over with its completion. `made`: the first look's
    /// claim when the completion already made it ([`crate::executor::Completed::next`]).
    pub async fn claim_now(
        &self,
        runner: &AuthedRunner,
        mut made: NextClaim,
    ) -> anyhow::Result<Option<Assignment>> {
        let store = self.executor.store();
        // The runner is still `busy` from the attempt it just completed (`claims_next`):
        // the first look keeps it so, or turns it idle when there is nothing to take. An
        // attempt that fails at once (a missing secret) is ended by the engine, which turns
        // the runner idle: the looks after it (a few) mark it busy again, as a poll's claim
        // does.
        for look in 0..4 {
            // A claim the completion made is handed over whatever comes: it is the runner's.
            let made_now = std::mem::take(&mut made);
            if made_now == NextClaim::NotAsked && self.shutdown.is_cancelled() {
                if look == 0 {
                    store.runner_idle(runner.id, now_ms()).await?;
                }
                return Ok(None);
            }
            let claimed = match made_now {
                NextClaim::Claimed(claimed) => Some(claimed),
                NextClaim::NothingToTake => None,
                NextClaim::NotAsked if look == 0 => {
                    store
                        .claim_next(runner.id, &runner.label_sets, now_ms())
                        .await?
                }
                NextClaim::NotAsked => {
                    // A polling runner's claim, but handed in this answer to a runner that
                    // just spoke: acknowledged here, as a busy runner's claim is as it is
                    // made.
                    let claimed = store.claim(runner.id, &runner.label_sets, now_ms()).await?;
                    if let Some(claimed) = &claimed {
                        store
                            .acknowledge_claim(claimed.attempt_id, runner.id, now_ms())
                            .await?;
                    }
                    claimed
                }
            };
            let Some(claimed) = claimed else {
                return Ok(None);
            };
            if let Some(assignment) = self.assign(runner, claimed).await? {
                return Ok(Some(assignment));
            }
        }
        Ok(None)
    }
}
