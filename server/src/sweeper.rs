//! The sweeper: the engine's timers. It returns to the queue the claims their runners did
//! not acknowledge within `claim_ack` (no retry used, the runner suspect:
//! `Executor::return_unacknowledged`), declares silent runners lost (failing their
//! attempts with `runner lost`: [`fail_attempts_of`], which the pools use too for runners
//! they see die), fails attempts that outlived their timeout by a grace
//! period (`timed out after Ns`, in case the runner could not), tidies the store's list of
//! step changes (`Store::tidy_change_list`), and periodically advances
//! every active run so nothing waits on a notification that was missed — after a restart,
//! or when another replica made the change.
//!
//! Invariant: runners are not judged until `lost_after` has passed since this engine
//! started, nor claims until `claim_ack` has, so an engine coming back after downtime gives
//! live runners time to check in and to acknowledge what they took.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use plue_core::executor::{Executor, Report};
use plue_store::{now_ms, Unanswered};
use plue_types::protocol::Outcome;
use tokio_util::sync::CancellationToken;

use crate::internal_api::RunnerAuth;

#[derive(Debug, Clone)]
pub struct SweeperConfig {
    /// A runner silent this long is lost.
    pub lost_after: Duration,
    /// A claim its runner has not acknowledged this long after it was made goes back to the
    /// queue (`plue serve --claim-ack-ms`).
    pub claim_ack: Duration,
    /// How often the sweeper looks.
    pub interval: Duration,
    /// How far past its timeout an attempt may run before the engine fails it itself.
    pub timeout_grace: Duration,
}

pub async fn run(
    executor: Arc<Executor>,
    auth: Arc<RunnerAuth>,
    config: SweeperConfig,
    shutdown: CancellationToken,
) {
    let started = now_ms();
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
        ticks += 1;
        if let Err(e) = sweep(&executor, &auth, &config, started, ticks).await {
            tracing::warn!("sweep failed: {e:#}");
        }
    }
}

async fn sweep(
    executor: &Executor,
    auth: &RunnerAuth,
    config: &SweeperConfig,
    started: i64,
    ticks: u64,
) -> anyhow::Result<()> {
    let store = executor.store();
    let now = now_ms();
    // Claims nobody acknowledged first (a runner about to be declared lost gets its
    // unacknowledged claim returned, not failed, either way) — once runners had the window
    // to acknowledge to this engine what they took from one before it.
    let claim_ack = i64::try_from(config.claim_ack.as_millis()).unwrap_or(i64::MAX);
    if now - started >= claim_ack {
        let why = Unanswered::Within {
            window_ms: claim_ack,
        };
        executor
            .return_unacknowledged(now - claim_ack, None, why)
            .await?;
    }
    let lost_after = config.lost_after.as_millis() as i64;
    if now - started >= lost_after {
        for runner_id in store.mark_lost(now - lost_after, now).await? {
            auth.forget_runner(runner_id);
            fail_attempts_of(executor, runner_id, "runner lost").await?;
        }
    }
    let grace = config.timeout_grace.as_millis() as i64;
    for (attempt_id, run_id, timeout_ms) in store.overdue_attempts(now, grace).await? {
        let reason = format!("timed out after {}s", timeout_ms / 1000);
        executor
            .complete(attempt_id, run_id, None, &failed(reason))
            .await?;
    }
    for run_id in store.expire_approvals(now).await? {
        executor.advance(run_id).await?;
    }
    // Every few ticks, move every active run on (cheap; covers missed notifications), and
    // wake every waiting poll if claimable work waits (a wake lost between replicas whose
    // step the due-work watch did not see: clocks apart). Idle, that is one count.
    if ticks.is_multiple_of(4) {
        for run_id in store.active_runs().await? {
            executor.advance(run_id).await?;
        }
        if store.queued_ready(now_ms()).await? > 0 {
            executor.events().wake_all();
        }
    }
    // Housekeeping last: a failure here costs the next takes some speed, nothing else.
    if let Err(error) = store.tidy_change_list().await {
        tracing::warn!("tidying the change list: {error:#}");
    }
    Ok(())
}

/// Fails every attempt runner `runner_id` holds with `reason` (retried if its step has
/// retries left): [`plue_pool::engine::fail_attempts_of`] with this engine's executor.
pub async fn fail_attempts_of(
    executor: &Executor,
    runner_id: i64,
    reason: &str,
) -> anyhow::Result<usize> {
    plue_pool::engine::fail_attempts_of(executor, runner_id, reason).await
}

fn failed(reason: String) -> Report {
    Report {
        outcome: Outcome::Failed,
        exit_code: None,
        reason: Some(reason),
        outputs: BTreeMap::new(),
    }
}
