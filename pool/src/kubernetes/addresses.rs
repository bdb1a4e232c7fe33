//! Where the pool's runner pods are on the cluster's network, as the watch last saw them:
//! how the engine tells that a connection to the cluster's egress proxy comes from the pod
//! an attempt's runner runs in (the server's `internal_api::egress` binds every egress
//! credential to its pod with it).
//!
//! [`PodAddresses`] is a handle made before the pool starts (the server is wired first) and
//! given the pool's watch cache once it runs ([`super::KubernetesPool::publish_addresses`]);
//! every replica's pool keeps its cache, leader or not, so any replica answers.
//!
//! Invariants:
//! - An address is answered only for a pod that carries the runner's name *and* the id of
//!   the one-time token its runner registered with (an annotation only the engine writes),
//!   that runs (phase `Running`), is not being deleted and is not on the node's network: a
//!   pod of that name from before, one being deleted, or one the watch has not shown yet
//!   answers nothing.
//! - Without a Kubernetes pool (or before it started) nothing is answered: a credential
//!   whose pod cannot be found is refused, never let through.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Pod;

use super::cache::PodCache;
use super::provider::token_id_of;

/// The runner pods' addresses, once the Kubernetes pool runs; cheap to clone.
#[derive(Clone, Default)]
pub struct PodAddresses(Arc<OnceLock<Arc<PodCache>>>);

impl std::fmt::Debug for PodAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodAddresses")
            .field("following", &self.0.get().is_some())
            .finish()
    }
}

impl PodAddresses {
    /// The addresses of pod `name` whose runner registered with one-time token `token_id`
    /// (empty when there is no such running pod, or no pool).
    pub fn of(&self, name: &str, token_id: i64) -> Vec<IpAddr> {
        match self.0.get().and_then(|cache| cache.get(name)) {
            Some(pod) => addresses(&pod, token_id),
            None => Vec::new(),
        }
    }

    /// Answers from `cache` from now on (the first cache given stays).
    pub(super) fn follow(&self, cache: Arc<PodCache>) {
        let _ = self.0.set(cache);
    }
}

/// `pod`'s addresses (`status.podIPs`, else `status.podIP`) if it is the running pod of the
/// runner that registered with `token_id`.
fn addresses(pod: &Pod, token_id: i64) -> Vec<IpAddr> {
    let on_node_network = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.host_network)
        .unwrap_or(false);
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    if token_id_of(pod) != Some(token_id)
        || pod.metadata.deletion_timestamp.is_some()
        || on_node_network
        || status.phase.as_deref() != Some("Running")
    {
        return Vec::new();
    }
    let listed = status.pod_ips.iter().flatten().map(|ip| ip.ip.as_str());
    let mut found: Vec<IpAddr> = listed
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn running(token: &str, ips: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "pool-a-1", "annotations": {"plue.dev/token-id": token}},
            "spec": {"containers": [{"name": "runner"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.7", "podIPs": ips},
        })
    }

    #[test]
    fn only_the_running_pod_of_the_runners_own_token_has_an_address() {
        let dual = serde_json::json!([{"ip": "10.244.1.7"}, {"ip": "fd00::7"}]);
        let found = addresses(&pod(running("42", dual.clone())), 42);
        let expected: Vec<IpAddr> = vec!["10.244.1.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        assert_eq!(found, expected);
        // Another runner's token (a pod of the same name from before): nothing.
        assert!(addresses(&pod(running("41", dual.clone())), 42).is_empty());
        let mut value = running("42", dual.clone());
        value["status"]["phase"] = "Pending".into();
        assert!(addresses(&pod(value), 42).is_empty());
        let mut value = running("42", dual.clone());
        value["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z".into();
        assert!(addresses(&pod(value), 42).is_empty());
        let mut value = running("42", dual);
        value["spec"]["hostNetwork"] = true.into();
        assert!(addresses(&pod(value), 42).is_empty());
        // podIP alone, as older kubelets report.
        let found = addresses(&pod(running("42", serde_json::Value::Null)), 42);
        assert_eq!(found, vec!["10.244.1.7".parse::<IpAddr>().unwrap()]);
        // No pool: nothing.
        assert!(PodAddresses::default().of("pool-a-1", 42).is_empty());
    }
}
