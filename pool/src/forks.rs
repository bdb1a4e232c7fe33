//! Fork steps no runner accepts fail at once, with the reason, instead of waiting forever.
//!
//! A step of a fork's run (a pull request from a fork: `runs.secrets_allowed` false) is
//! claimed only by a runner that accepts forks (see [`crate::store`]'s claim). When no
//! runner that accepts forks carries the step's labels, and no pool that starts such
//! runners offers them, the step fails with "no runner accepts runs of pull requests from
//! forks for labels ...".
//!
//! The rule, checked whenever work is queued (at most every `SWEEP_GAP`) and every few
//! seconds ([`run`], or the Kubernetes pool's unservable check, which passes its classes
//! as `offered`):
//! - a runner counts when it accepts forks and carries the labels, and is live or was
//!   heard from in the last [`RECENT`] (an ephemeral runner between two registrations).
//!   After an engine restarts, the runners it knew are still live in the store (the
//!   sweeper judges none until `lost_after` has passed), so their fork steps wait for them.
//!
//! The step fails the only way the state machine allows: a holder runner row (with no
//! session anyone holds) claims it with [`Store::claim_fork_step`], which takes steps of
//! forks' runs only, and its attempt completes as failed.
//!
//! Invariant: a fork step that a runner accepting forks could claim is never failed
//! here, and no step of a run that is not a fork's ever is.
//!
//! [`Store::claim_fork_step`]: crate::store::Store::claim_fork_step

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::scope::format_labels;
use crate::store::{now_ms, NewRunner, Registration, Store};
use crate::tokens;

/// A runner heard from this recently still counts as one that may take a fork step.
pub const RECENT: Duration = Duration::from_secs(300);

/// Names of the holder runners the engine registers to fail steps no runner can serve
/// (here and in the Kubernetes pool's check): they never count as runners that may.
pub const HOLDER_PREFIX: &str = "pool-unservable-";

/// Registers a runner of the engine's own (named [`HOLDER_PREFIX`]…) that only takes steps
/// to fail them ([`crate::engine::fail_claimable`]); it accepts forks' steps with
/// `accept_forks`, and takes secrets' steps as any runner allowed them. Returns its id.
pub(crate) async fn register_holder(store: &Store, accept_forks: bool) -> anyhow::Result<i64> {
    let name = format!("{HOLDER_PREFIX}{}", &tokens::new_token()?[..12]);
    let registered = store
        .register(&NewRunner {
            name: &name,
            labels_json: "{}",
            session_hash: &tokens::hash_token(&tokens::new_token()?),
            ephemeral: true,
            token: None,
            secrets: true,
            accept_forks,
            host: None,
            now: now_ms(),
        })
        .await?;
    match registered {
        Registration::Registered(holder) => Ok(holder),
        other => anyhow::bail!("registering holder runner {name}: {other:?}"),
    }
}

/// How often [`run`] looks when nothing was queued.
const INTERVAL: Duration = Duration::from_secs(5);

fn superset(offered: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| offered.get(k) == Some(v))
}

/// Why a fork step asking for `labels` cannot run.
pub fn reason(labels: &BTreeMap<String, String>) -> String {
    let shown = if labels.is_empty() {
        "(none)".to_string()
    } else {
        format_labels(labels)
    };
    format!(
        "no runner accepts runs of pull requests from forks for labels {shown}: set \
         accept_forks on a runner class or token"
    )
}

/// Fails every ready fork step that no runner accepting forks (live or recent) and no
/// pool offering forks (`offered`: the labels of each such pool or class) can serve;
/// how many attempts it failed.
pub async fn fail_unservable_forks(
    executor: &dyn Engine,
    offered: &[BTreeMap<String, String>],
) -> anyhow::Result<usize> {
    let store = executor.store();
    let now = now_ms();
    let waiting: Vec<_> = store
        .queued_ready_fork_labels(now)
        .await?
        .into_iter()
        .filter(|labels| !offered.iter().any(|o| superset(o, labels)))
        .collect();
    if waiting.is_empty() {
        return Ok(0);
    }
    let runners = store
        .fork_runner_labels(now - RECENT.as_millis() as i64, HOLDER_PREFIX)
        .await?;
    let mut failed = 0;
    for labels in waiting {
        if runners.iter().any(|offered| superset(offered, &labels)) {
            continue;
        }
        let holder = register_holder(store, true).await?;
        failed += crate::engine::fail_claimable(executor, holder, &labels, true, &reason(&labels))
            .await?;
    }
    Ok(failed)
}

/// Without the Kubernetes pool: checks whenever work is queued (at most every
/// `crate::engine::SWEEP_GAP`) and every few seconds,
/// until `shutdown`. `offered`: the labels of a local pool whose runners accept forks.
pub async fn run(
    executor: Arc<dyn Engine>,
    offered: Vec<BTreeMap<String, String>>,
    shutdown: CancellationToken,
) {
    crate::engine::sweep_on_work(
        &executor.events().work,
        crate::engine::SWEEP_GAP,
        INTERVAL,
        &shutdown,
        "failing fork steps no runner accepts",
        || fail_unservable_forks(&*executor, &offered),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_the_labels_and_the_remedy() {
        let prod = BTreeMap::from([("zone".to_string(), "prod".to_string())]);
        assert_eq!(
            reason(&prod),
            "no runner accepts runs of pull requests from forks for labels zone=prod: set \
             accept_forks on a runner class or token"
        );
        assert!(reason(&BTreeMap::new()).contains("labels (none)"));
    }
}
