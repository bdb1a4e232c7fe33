//! The pool configuration's types: the Kubernetes settings and the runner classes a pool
//! file declares, as [`super::config_file`] parses them and the Kubernetes provider builds
//! pods from them. Data only.
//!
//! Invariant: a value of these types has passed `config_file`'s checks (labels, durations,
//! the template's hardening); nothing else constructs them outside tests.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use runner::network::capability::Capability;
use serde::Deserialize;

/// The runner container's name in a class's template.
pub const RUNNER_CONTAINER: &str = "runner";
/// Volume names Plue adds to every pod; a template may not use them.
pub const RESERVED_VOLUMES: [&str; 3] = ["plue-token", "plue-work", "plue-tmp"];

/// A validated pool configuration file.
#[derive(Debug, Clone)]
pub struct PoolFile {
    pub kubernetes: KubernetesSettings,
    /// In file order: a step goes to the first class whose labels include all of its own.
    pub classes: Vec<RunnerClass>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    pub namespace: String,
    /// How runner pods reach the engine, e.g. `http://plue.ci.svc:8600`.
    pub engine_url: String,
    /// Labels this engine's pods (`app.kubernetes.io/instance`), so two Plue installations
    /// in one namespace never touch each other's pods.
    pub instance: String,
    /// A pod that has not registered this long after its creation is replaced.
    pub start_timeout: Duration,
    /// How long a leader's Lease holds without renewal (another replica takes over after).
    pub lease_duration: Duration,
    /// The longest a class waits between pods after pods that ended before registering;
    /// reaching it fails the class's queued steps ([`crate::start_failures`]).
    pub max_start_backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct RunnerClass {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub min_warm: usize,
    pub max_runners: usize,
    pub idle_timeout: Duration,
    /// Whether its runners take steps of runs of pull requests from forks (default: only
    /// a class with no labels, which runs nothing an operator set apart).
    pub accept_forks: bool,
    /// Secrets the pod may use by name (volumes, projected sources, environment).
    pub allow_secret_volumes: BTreeSet<String>,
    /// ConfigMaps the pod may use by name.
    pub allow_config_map_volumes: BTreeSet<String>,
    /// Secrets the template may name in `imagePullSecrets` (the kubelet reads them; the
    /// pod never does).
    pub allow_image_pull_secrets: BTreeSet<String>,
    /// `runtimeClassName` values the template may pick (none: the cluster's default).
    pub allow_runtime_classes: BTreeSet<String>,
    /// The service account the template may name besides the namespace's `default`.
    pub allow_service_account: Option<String>,
    /// Who confines the network of a step whose policy is not `open`.
    pub step_network: StepNetwork,
    /// The proxy the class's runners reach the engine through (`--engine-proxy`); `None`:
    /// directly, whatever proxy variables the template sets.
    pub engine_proxy: Option<String>,
    /// The cluster's egress proxy (`plue egress-proxy`) the class's allow-list steps go out
    /// through, each with its attempt's credential (`--egress-proxy`); only a class with
    /// `step_network: pod` has one (`config_file`'s check). `None`: allow-lists are not
    /// routed to the class.
    pub egress_proxy: Option<String>,
    /// Names the class's runners need besides the engine and its proxies (the model's API,
    /// a forge's git host): a `step_network: pod` class's pods have no DNS, so the engine
    /// resolves these when it creates each pod and writes them into its `/etc/hosts`
    /// (`crate::kubernetes`'s `names`). Only such a class has any (`config_file`'s check).
    pub resolve: Vec<String>,
    pub template: PodTemplateSpec,
}

/// Who confines a class's steps' network (`step_network`). The operator's setting, told
/// to the class's runners by the argument the pool gives them
/// ([`crate::kubernetes`]'s pod builder): never a step's or a plan's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepNetwork {
    /// The runner gives each such step a network namespace of its own, or fails it. A
    /// hardened pod cannot make one, so such steps are not routed to the class
    /// ([`RunnerClass::network`]; a runner that claimed one anyway fails it closed).
    #[default]
    Step,
    /// The class's pods are confined by a NetworkPolicy (the chart's, for a class that
    /// says so: the engine, its egress proxy and the class's `egress`, and no DNS — the
    /// names its runners need are resolved by the engine into the pod's `/etc/hosts`): a
    /// `none` step runs without a namespace of its own, confined per pod, with a line of
    /// its log saying so. An allow-list is routed to the class only when it has an
    /// `egress_proxy` ([`RunnerClass::network`]).
    Pod,
}

impl RunnerClass {
    /// The network policies this class's runners enforce, from its configuration: a
    /// hardened pod cannot make a network namespace, so only `open`, `none` where the
    /// pod's NetworkPolicy confines it (`step_network: pod`), and allow-lists where such a
    /// class also has the cluster's egress proxy (`egress_proxy`). What its runners
    /// announce (`plue runner` finds the same from its arguments and its pod).
    pub fn network(&self) -> Capability {
        let confined = self.step_network == StepNetwork::Pod;
        Capability {
            none: confined,
            allow: confined && self.egress_proxy.is_some(),
        }
    }

    /// The labels its runners announce: the class's and the reserved labels of
    /// [`RunnerClass::network`].
    pub fn offered_labels(&self) -> BTreeMap<String, String> {
        let mut offered = self.labels.clone();
        offered.extend(self.network().labels());
        offered
    }

    /// Whether this class's runners may claim a step asking for `labels` (its network
    /// policy's reserved label included).
    pub fn serves(&self, labels: &BTreeMap<String, String>) -> bool {
        let network = self.network().labels();
        labels
            .iter()
            .all(|(k, v)| self.labels.get(k).or_else(|| network.get(k)) == Some(v))
    }
}
