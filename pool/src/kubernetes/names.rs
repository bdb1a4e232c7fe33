//! The names a runner pod of a `step_network: pod` class resolves without DNS.
//!
//! Such a pod has no DNS at all (the chart's NetworkPolicy gives it none: a `none` step
//! shares the pod's network, and a lookup of `<data>.attacker.example` through the
//! cluster's resolvers would carry data out). What its runner needs — the engine, the
//! proxies its class names, and the class's `resolve` list (the model's API, a forge's git
//! host) — the engine resolves itself when it creates the pod, and writes into the pod's
//! `/etc/hosts` (`spec.hostAliases`, which no template may set), so the runner reaches them
//! by the names in its configuration (TLS still checks those names) before and during any
//! step, with no question ever leaving the pod.
//!
//! Invariants:
//! - Only a `step_network: pod` class's pods get aliases; other classes resolve through
//!   the cluster's DNS as before.
//! - A name that does not resolve stops the pod's creation with the name and the reason
//!   (the class backs off): a pod is never created whose runner would wait on a lookup
//!   that can never be answered.
//! - An address literal in a URL is used as it is (nothing to resolve).

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Context;
use k8s_openapi::api::core::v1::HostAlias;

use crate::class::{KubernetesSettings, RunnerClass, StepNetwork};

/// The names `class`'s runners need resolved, in order, without duplicates: the hosts of
/// the engine's URL, the class's engine and egress proxies, then its `resolve` list.
/// Empty for a class whose pods resolve through the cluster's DNS.
pub(super) fn needed(settings: &KubernetesSettings, class: &RunnerClass) -> Vec<String> {
    if class.step_network != StepNetwork::Pod {
        return Vec::new();
    }
    let urls = [
        Some(settings.engine_url.as_str()),
        class.engine_proxy.as_deref(),
        class.egress_proxy.as_deref(),
    ];
    let hosts = urls.into_iter().flatten().filter_map(name_of);
    let mut names: Vec<String> = Vec::new();
    for name in hosts.chain(class.resolve.iter().cloned()) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The host of `url` when it is a name (an address literal needs no resolving).
fn name_of(url: &str) -> Option<String> {
    match url::Url::parse(url).ok()?.host()? {
        url::Host::Domain(name) => Some(name.to_owned()),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => None,
    }
}

/// Resolves every name of `names` (with the engine's own resolver) into the pod's host
/// aliases: one per address, naming every name that resolved to it.
pub(super) async fn resolve(names: &[String]) -> anyhow::Result<Vec<HostAlias>> {
    let mut found = Vec::new();
    for name in names {
        let addresses: Vec<IpAddr> = tokio::net::lookup_host((name.as_str(), 0))
            .await
            .with_context(|| {
                format!(
                    "resolving {name} for the pod's /etc/hosts (a `step_network: pod` class's \
                     pods have no DNS of their own)"
                )
            })?
            .map(|address| address.ip().to_canonical())
            .collect();
        if addresses.is_empty() {
            anyhow::bail!("resolving {name} for the pod's /etc/hosts: no address");
        }
        found.push((name.clone(), addresses));
    }
    Ok(aliases(&found))
}

/// Host aliases of resolved `(name, addresses)`: one per address, in address order, its
/// names in the order given.
fn aliases(resolved: &[(String, Vec<IpAddr>)]) -> Vec<HostAlias> {
    let mut by_address: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for (name, addresses) in resolved {
        for address in addresses {
            let names = by_address.entry(*address).or_default();
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    by_address
        .into_iter()
        .map(|(address, hostnames)| HostAlias {
            ip: address.to_string(),
            hostnames: Some(hostnames),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::parse;

    fn file(class: &str) -> crate::config_file::PoolFile {
        let text = format!(
            "kubernetes: {{namespace: ci, engine_url: 'http://plue-runners.plue.svc:8601'}}\n\
             classes:\n  - {{name: a, max_runners: 1, template: {{spec: {{containers: [{{name: runner, image: i}}]}}}}{class}}}\n"
        );
        parse(&text, "t").unwrap()
    }

    #[test]
    fn a_pod_confined_class_needs_its_engine_proxies_and_listed_names_resolved() {
        let pod = file(
            ", step_network: pod, engine_proxy: 'http://10.0.0.9:3128', \
             egress_proxy: 'http://plue-egress.plue.svc:3128', \
             resolve: [api.anthropic.com, Plue-Egress.plue.svc., github.com]",
        );
        assert_eq!(
            needed(&pod.kubernetes, &pod.classes[0]),
            [
                "plue-runners.plue.svc",
                "plue-egress.plue.svc",
                "api.anthropic.com",
                "github.com"
            ]
        );
        // Another class resolves through the cluster's DNS: nothing.
        let step = file("");
        assert!(needed(&step.kubernetes, &step.classes[0]).is_empty());
    }

    #[test]
    fn names_of_one_address_share_an_alias() {
        let v4: IpAddr = "10.96.0.12".parse().unwrap();
        let v6: IpAddr = "fd00::12".parse().unwrap();
        let other: IpAddr = "10.96.0.3".parse().unwrap();
        let found = aliases(&[
            ("plue-runners".into(), vec![v4, v6]),
            ("plue-egress".into(), vec![other]),
            ("again".into(), vec![v4]),
        ]);
        let shown: Vec<(String, Vec<String>)> = found
            .into_iter()
            .map(|a| (a.ip, a.hostnames.unwrap()))
            .collect();
        assert_eq!(
            shown,
            [
                ("10.96.0.3".into(), vec!["plue-egress".into()]),
                (
                    "10.96.0.12".into(),
                    vec!["plue-runners".into(), "again".into()]
                ),
                ("fd00::12".into(), vec!["plue-runners".into()]),
            ]
        );
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_stops_the_pod_with_its_name() {
        let found = resolve(&["localhost".into()]).await.unwrap();
        assert!(found.iter().any(|a| a.ip == "127.0.0.1"), "{found:?}");
        let err = resolve(&["no-such-host.invalid".into()]).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("resolving no-such-host.invalid for the pod's /etc/hosts"),
            "{err:#}"
        );
    }
}
