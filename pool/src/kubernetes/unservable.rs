//! Steps no runner can serve fail at once, with the reason, instead of waiting forever: a
//! ready step whose labels no class offers, no other pool of this engine offers, and no
//! live registered runner announces.
//!
//! The engine fails a queued step the only way the state machine allows: an attempt is
//! claimed for it by a runner row the pool registers for the purpose (never able to run
//! anything: it has no session anyone holds), then completed as failed. A step with
//! retries left fails each retry the same way, immediately.
//!
//! A step of a fork's run (a pull request from a fork) is failed too when no class that
//! accepts forks (`accept_forks`) offers its labels, no other pool of this engine whose
//! runners accept forks does, and no runner accepting forks carries them
//! ([`crate::forks`]): "no runner accepts runs of pull requests from forks for
//! labels ...".
//!
//! The labels include a step's network policy's reserved label
//! (`runner::network::capability`): a step whose policy no class enforces, no other pool's
//! runners do and no live runner announces fails with that reason ("no runner can enforce
//! this step's network policy, an allow-list ...").
//!
//! Invariant: a step that any live runner could claim is never failed here, so a runner
//! an operator started by hand for special labels keeps its work.

use std::collections::BTreeMap;

use runner::network::capability;

use crate::config_file::RunnerClass;
use crate::engine::Engine;
use crate::scope::format_labels;
use crate::store::now_ms;

fn superset(offered: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| offered.get(k) == Some(v))
}

/// Why steps asking for `labels` cannot run here: their network policy, when some class
/// offers their other labels but none enforces it; else the labels no class offers.
fn reason(labels: &BTreeMap<String, String>, classes: &[RunnerClass]) -> String {
    let offered: Vec<String> = classes
        .iter()
        .map(|c| {
            let labels = if c.labels.is_empty() {
                "no labels".to_string()
            } else {
                format_labels(&c.labels)
            };
            format!(
                "{} ({labels}; enforces network: {})",
                c.name,
                c.network().describe()
            )
        })
        .collect();
    let operators = capability::without_reserved(labels);
    if let Some(policy) = capability::asked_policy(labels) {
        if classes.iter().any(|c| c.serves(&operators)) {
            return format!(
                "no runner can enforce this step's network policy, {policy}, with labels {}: \
                 no Kubernetes runner class does (classes: {}) and no registered runner \
                 announces it",
                shown(&operators),
                offered.join(", ")
            );
        }
    }
    format!(
        "no runner can serve labels {}: no Kubernetes runner class offers them (classes: {}) \
         and no registered runner announces them",
        format_labels(labels),
        offered.join(", ")
    )
}

fn shown(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        "none".into()
    } else {
        format_labels(labels)
    }
}

/// Fails every ready step no one can serve, then every fork step no one accepting forks
/// can serve; returns how many attempts it failed.
pub(super) async fn fail_unservable(
    executor: &dyn Engine,
    classes: &[RunnerClass],
    other_pools: &[BTreeMap<String, String>],
) -> anyhow::Result<usize> {
    let failed = fail_unoffered(executor, classes, other_pools).await?;
    Ok(failed
        + crate::forks::fail_unservable_forks(executor, &fork_offers(classes, other_pools)).await?)
}

/// The labels of the classes, and of the other pools, whose runners accept forks (other
/// pools' runners do when they have no labels: [`crate::Provider::accept_forks`]).
fn fork_offers(
    classes: &[RunnerClass],
    other_pools: &[BTreeMap<String, String>],
) -> Vec<BTreeMap<String, String>> {
    classes
        .iter()
        .filter(|c| c.accept_forks)
        .map(RunnerClass::offered_labels)
        .chain(
            other_pools
                .iter()
                .filter(|o| o.keys().all(|k| capability::is_reserved(k)))
                .cloned(),
        )
        .collect()
}

/// Fails every ready step whose labels no one offers.
async fn fail_unoffered(
    executor: &dyn Engine,
    classes: &[RunnerClass],
    other_pools: &[BTreeMap<String, String>],
) -> anyhow::Result<usize> {
    let store = executor.store();
    let now = now_ms();
    let mut unservable = Vec::new();
    let wanted: std::collections::BTreeSet<_> = store
        .queued_ready_by_labels(now)
        .await?
        .into_iter()
        .map(|(labels, _, _)| labels)
        .collect();
    for labels in wanted {
        if classes.iter().any(|c| c.serves(&labels))
            || other_pools.iter().any(|offered| superset(offered, &labels))
        {
            continue;
        }
        unservable.push(labels);
    }
    if unservable.is_empty() {
        return Ok(0);
    }
    let live = store.live_runners(10_000).await?;
    let announced: Vec<BTreeMap<String, String>> = live
        .iter()
        .filter_map(|r| serde_json::from_str(&r.labels).ok())
        .collect();
    let mut failed = 0;
    for labels in unservable {
        if announced.iter().any(|offered| superset(offered, &labels)) {
            continue;
        }
        // A holder accepting forks: a step no runner can serve fails in forks' runs too.
        let holder = crate::forks::register_holder(store, true).await?;
        let why = reason(&labels, classes);
        failed += crate::engine::fail_claimable(executor, holder, &labels, false, &why).await?;
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fork_steps_count_only_classes_and_pools_that_accept_forks() {
        let file = crate::config_file::parse(
            r#"
kubernetes: {namespace: ci, engine_url: "http://plue:8601"}
classes:
  - {name: any, labels: {}, max_runners: 1, template: {spec: {containers: [{name: runner, image: p}]}}}
  - {name: prod, labels: {zone: prod}, max_runners: 1, template: {spec: {containers: [{name: runner, image: p}]}}}
  - {name: sandbox, labels: {zone: sandbox}, max_runners: 1, accept_forks: true,
     template: {spec: {containers: [{name: runner, image: p}]}}}
"#,
            "pool.yaml",
        )
        .unwrap();
        let offers = fork_offers(&file.classes, &[labels(&[("size", "big")]), labels(&[])]);
        assert_eq!(
            offers,
            [labels(&[]), labels(&[("zone", "sandbox")]), labels(&[])],
            "the prod class and the labelled local pool take no forks"
        );
    }

    #[test]
    fn a_step_no_class_enforces_the_policy_of_fails_with_that_reason() {
        let file = crate::config_file::parse(
            r#"
kubernetes: {namespace: ci, engine_url: "http://plue:8601"}
classes:
  - {name: plain, labels: {}, max_runners: 1, template: {spec: {containers: [{name: runner, image: p}]}}}
  - {name: agents, labels: {role: agent}, max_runners: 1, step_network: pod,
     template: {spec: {containers: [{name: runner, image: p}]}}}
"#,
            "pool.yaml",
        )
        .unwrap();
        let allow = labels(&[(capability::ALLOW, capability::YES)]);
        let why = reason(&allow, &file.classes);
        assert!(
            why.starts_with("no runner can enforce this step's network policy, an allow-list (network=[...]), with labels none: no Kubernetes runner class does (classes: plain (no labels; enforces network: open), agents (role=agent; enforces network: open, none))"),
            "{why}"
        );
        let none_elsewhere = labels(&[("zone", "x"), (capability::NONE, capability::YES)]);
        assert!(reason(&none_elsewhere, &file.classes)
            .starts_with("no runner can serve labels plue.network/none=yes,zone=x"),);
        // Forks: the local pool's runners, with only reserved labels, take them.
        let local = capability::Capability::EVERY.labels();
        assert_eq!(fork_offers(&[], std::slice::from_ref(&local)), [local]);
    }

    #[test]
    fn a_runner_serves_subsets_of_its_labels() {
        let offered = labels(&[("size", "small"), ("zone", "a")]);
        assert!(superset(&offered, &labels(&[("size", "small")])));
        assert!(superset(&offered, &BTreeMap::new()));
        assert!(!superset(&offered, &labels(&[("gpu", "yes")])));
        assert!(!superset(&offered, &labels(&[("size", "big")])));
    }
}
