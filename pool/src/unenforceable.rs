//! Steps whose network policy no runner can enforce fail at once, with the reason, instead
//! of waiting: an engine without the Kubernetes pool (whose unservable check does the
//! same for its classes, `kubernetes::unservable`).
//!
//! A step asks, besides its labels, for its policy's reserved label
//! (`runner::network::capability`). It fails here when its other labels are offered — by
//! the local pool (`offered`: its runners' labels and the policies they enforce) or by a
//! live registered runner — but no pool offers, and no live runner announces, the policy:
//! e.g. a `network="none"` step of `plue run` on a machine where the runner is not root
//! (so it cannot give a step a network namespace of its own). Before routing such a step
//! was claimed and failed closed by the runner; now no runner claims it, so without this it
//! would wait forever.
//!
//! Invariant: a step that a pool or a live runner could claim is never failed here, and a
//! step whose own labels nobody offers is left waiting (a runner started by hand may come).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use runner::network::capability::{self, Capability};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::scope::format_labels;
use crate::store::now_ms;

/// How often [`run`] looks when nothing was queued.
const INTERVAL: Duration = Duration::from_secs(5);

fn superset(offered: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| offered.get(k) == Some(v))
}

/// Why a step asking for `labels` (its policy `policy`) finds no runner, given what the
/// local pool's runners enforce (`local`, when it runs).
pub fn reason(
    labels: &BTreeMap<String, String>,
    policy: &str,
    local: Option<Capability>,
) -> String {
    let operators = capability::without_reserved(labels);
    let shown = if operators.is_empty() {
        "none".to_string()
    } else {
        format_labels(&operators)
    };
    let local = match local {
        Some(local) => format!(
            "this engine's local runners enforce {} (a step's own network namespace needs a \
             runner that is root, or has CAP_SYS_ADMIN)",
            local.describe()
        ),
        None => "no pool of this engine enforces it".to_string(),
    };
    format!(
        "no runner can enforce this step's network policy, {policy}, with labels {shown}: \
         {local}, and no registered runner announces it (the step never runs with the \
         host's network instead)"
    )
}

/// Fails every ready step whose policy no one enforces though its labels are offered;
/// how many attempts it failed. `offered`: the local pool's labels (with its reserved
/// ones), when it runs.
pub async fn fail_unenforceable(
    executor: &dyn Engine,
    offered: Option<&BTreeMap<String, String>>,
) -> anyhow::Result<usize> {
    let store = executor.store();
    let now = now_ms();
    let asking: Vec<BTreeMap<String, String>> = store
        .queued_ready_by_labels(now)
        .await?
        .into_iter()
        .map(|(labels, _, _)| labels)
        .filter(|labels| capability::asked_policy(labels).is_some())
        .filter(|labels| !offered.is_some_and(|o| superset(o, labels)))
        .collect();
    if asking.is_empty() {
        return Ok(0);
    }
    let live: Vec<BTreeMap<String, String>> = store
        .live_runners(10_000)
        .await?
        .into_iter()
        .filter(|r| !r.name.starts_with(crate::forks::HOLDER_PREFIX))
        .filter_map(|r| serde_json::from_str(&r.labels).ok())
        .collect();
    let mut failed = 0;
    let mut seen = std::collections::BTreeSet::new();
    for labels in asking {
        if !seen.insert(labels.clone()) || live.iter().any(|l| superset(l, &labels)) {
            continue;
        }
        let operators = capability::without_reserved(&labels);
        let someone_offers_the_rest = offered.is_some_and(|o| superset(o, &operators))
            || live.iter().any(|l| superset(l, &operators));
        if !someone_offers_the_rest {
            continue;
        }
        let policy = capability::asked_policy(&labels).unwrap_or("its policy");
        let why = reason(&labels, policy, offered.map(Capability::of_labels));
        // Steps of forks' runs too: a holder that accepts forks claims them.
        let holder = crate::forks::register_holder(store, true).await?;
        failed += crate::engine::fail_claimable(executor, holder, &labels, false, &why).await?;
    }
    Ok(failed)
}

/// Checks whenever work is queued (at most every `crate::engine::SWEEP_GAP`) and every
/// few seconds, until `shutdown`.
pub async fn run(
    executor: Arc<dyn Engine>,
    offered: Option<BTreeMap<String, String>>,
    shutdown: CancellationToken,
) {
    crate::engine::sweep_on_work(
        &executor.events().work,
        crate::engine::SWEEP_GAP,
        INTERVAL,
        &shutdown,
        "failing steps whose network policy no runner enforces",
        || fail_unenforceable(&*executor, offered.as_ref()),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::engine_for_tests::engine;
    use crate::store::Store;
    use evaluator::network::Network;
    use evaluator::plan::{Plan, Step};

    #[test]
    fn the_reason_names_the_policy_the_labels_and_what_local_runners_enforce() {
        let labels = Capability::EVERY.labels();
        let why = reason(&labels, "network=\"none\"", Some(Capability::default()));
        assert_eq!(
            why,
            "no runner can enforce this step's network policy, network=\"none\", with labels \
             none: this engine's local runners enforce open (a step's own network namespace \
             needs a runner that is root, or has CAP_SYS_ADMIN), and no registered runner \
             announces it (the step never runs with the host's network instead)"
        );
    }

    /// Queues one step of each policy, with the reserved labels the executor stores them
    /// with (`network_route`), and an allow-list step asking for a zone nobody offers.
    async fn queue(store: &Store) {
        let with = |id: &str, network: Network, asks: Capability| {
            let mut step = Step::bash(id, "true");
            step.network = Some(network);
            step.runner = asks.labels();
            step
        };
        let none = Capability {
            none: true,
            allow: false,
        };
        let allow = Capability {
            none: false,
            allow: true,
        };
        let list = || Network::Allow(vec!["pypi.org".into()]);
        let mut zoned = with("zoned", list(), allow);
        zoned.runner.insert("zone".into(), "far".into());
        let plan = Plan::new(
            "p",
            vec![
                Step::bash("open", "true"),
                with("none", Network::None, none),
                with("allow", list(), allow),
                zoned,
            ],
        );
        let json = serde_json::to_string(&plan).unwrap();
        plue_store::testing::queue_run(store, &plue_store::testing::local_run(&plan, &json)).await;
    }

    #[tokio::test]
    async fn a_step_fails_only_when_its_policy_is_what_no_one_enforces() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        queue(&store).await;
        let engine = engine(&store);
        let waiting = || async {
            let mut left: Vec<String> = store
                .queued_ready_by_labels(now_ms() + 1)
                .await
                .unwrap()
                .into_iter()
                .map(|(labels, _, _)| format_labels(&labels))
                .collect();
            left.sort();
            left
        };
        // Without a local pool and with no runner, nothing is anyone's: all wait.
        assert_eq!(fail_unenforceable(&*engine, None).await.unwrap(), 0);
        // The local runners enforce `none`, not allow-lists: the allow-list step fails;
        // the zoned one waits (nobody offers zone=far: a runner may come).
        let local = Capability {
            none: true,
            allow: false,
        }
        .labels();
        assert_eq!(fail_unenforceable(&*engine, Some(&local)).await.unwrap(), 1);
        assert_eq!(
            waiting().await,
            [
                "",
                "plue.network/allow=yes,zone=far",
                "plue.network/none=yes"
            ]
        );
        // A runner of zone=far that cannot enforce allow-lists: now the zoned step fails.
        let far = BTreeMap::from([("zone".to_string(), "far".to_string())]);
        let far = serde_json::to_string(&far).unwrap();
        store
            .register_ephemeral_runner("far", &far, "h", now_ms())
            .await
            .unwrap();
        assert_eq!(fail_unenforceable(&*engine, Some(&local)).await.unwrap(), 1);
        assert_eq!(waiting().await, ["", "plue.network/none=yes"]);
    }
}
