//! Cron schedules: every engine looks for due schedules once a second and fires each tick
//! it manages to take.
//!
//! Invariants: a tick is taken with a compare-and-set on `next_fire_at` in the store, so
//! with several engines on one database each tick starts at most one run; ticks missed
//! while no engine was running are not replayed (the next fire time is computed from now).

use std::sync::Arc;
use std::time::Duration;

use plue_store::now_ms;
use tokio_util::sync::CancellationToken;

use crate::registry::{next_fire, Registry};

/// How often due schedules are looked for.
pub const TICK: Duration = Duration::from_secs(1);

pub async fn run(registry: Arc<Registry>, interval: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(e) = fire_due(&registry).await {
            tracing::warn!("schedules: {e:#}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Fires every due schedule this engine takes; returns the runs started.
pub async fn fire_due(registry: &Registry) -> anyhow::Result<Vec<i64>> {
    let store = registry.executor().store();
    let now = now_ms();
    let mut started = Vec::new();
    for schedule in store.due_schedules(now).await? {
        let Some(next) = next_fire(&schedule.cron, now) else {
            continue;
        };
        if !store
            .take_schedule_tick(schedule.id, schedule.next_fire_at, next, now)
            .await?
        {
            continue;
        }
        let Some(repo) = store.repo_by_id(schedule.repo_id).await? else {
            continue;
        };
        match registry.fire_schedule(&repo, &schedule).await {
            Ok(Some(run_id)) => started.push(run_id),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                repository = %repo.name,
                workflow = %schedule.workflow_path,
                "schedule '{}' did not start a run: {e:#}",
                schedule.cron
            ),
        }
    }
    Ok(started)
}
