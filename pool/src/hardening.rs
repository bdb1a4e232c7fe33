//! What a runner pod may be: the checks on a class's pod (its template merged over Plue's
//! defaults, exactly as [`crate::kubernetes`]'s pod builder builds it) and the hardening forced on every pod
//! created. Pure.
//!
//! Two layers, on purpose:
//! - `problems` refuses every field of the merged pod that weakens it, each problem
//!   naming its path in the pod (`spec.volumes[1].secret`,
//!   `spec.containers[runner].securityContext.capabilities.drop`). It runs when the pool
//!   file is loaded (`plue serve --check-config` and `plue serve`) and again when the pool
//!   starts, so a weakening template never reaches the API server.
//! - `force` then sets the hardening on the pod actually created, whatever the first
//!   layer let through: every container without privilege, escalation, capabilities,
//!   host ports or a non-default `procMount`, with a read-only root file system;
//!   `RuntimeDefault` seccomp at pod and container level; no AppArmor or SELinux override
//!   (fields or the legacy annotations) nor any runtime pass-through annotation; no
//!   service account token, host namespace or host user namespace, shared process
//!   namespace, sysctl or ephemeral container; a non-root user and group; no pinned node,
//!   control-plane toleration, `system-` priority, overhead, resource claim, host alias or
//!   DNS of its own; a service account, runtime class and pull Secrets only from the
//!   class's allow-lists; an `ephemeral` volume only ever a fresh, single-node one; none of
//!   the labels the chart's Services select the engine's and database's pods by; probes
//!   and hooks that reach the pod itself only.
//!
//! Past 600 lines: every check of the merged pod, one function per part of the pod, read
//! together; `force` is in `hardening/forced.rs` and the table of every weakening found
//! so far in `hardening/tests.rs`.
//!
//! Invariants:
//! - The merged pod is what is checked, not the template alone: a template list replaces
//!   the default's (`capabilities.drop: []` removes `ALL`), so only the merge says what the
//!   pod will be.
//! - Volumes are an allow-list of kinds (`emptyDir`, `ephemeral`, `downwardAPI`,
//!   `projected` of `downwardAPI` and `clusterTrustBundle` sources, by kind too), plus the
//!   Secrets and ConfigMaps the class names in `allow_secret_volumes` /
//!   `allow_config_map_volumes`; environment
//!   variables read from Secrets and ConfigMaps obey the same lists. Everything else
//!   (`hostPath`, a `persistentVolumeClaim` that outlives the pod, network file systems,
//!   CSI drivers, …) is refused by kind, so a kind Kubernetes adds later is refused too.
//!   An `ephemeral` claim is provisioned fresh: no `dataSource`, `volumeName` or
//!   `selector` (those bind or copy an existing PersistentVolume: a hostPath one, another
//!   application's retained data), no empty `storageClassName` (binds any classless
//!   PersistentVolume), access modes `ReadWriteOnce`/`ReadWriteOncePod` only. A non-empty
//!   `storageClassName` stays allowed: a class only says how the fresh volume is
//!   provisioned (do not name one whose volumes are pre-created, such as local static PVs).
//! - What reaches a runner pod from outside its spec is the class's choice, never the
//!   template's: the service account (the namespace's `default` unless the class names
//!   one in `allow_service_account`: GKE Workload Identity and EKS Pod Identity hand a pod
//!   its account's cloud role even without a mounted token), the `runtimeClassName`
//!   (`allow_runtime_classes`, so a template cannot leave gVisor or Kata for `runc`), the
//!   `imagePullSecrets` (`allow_image_pull_secrets`: a list of its own, because a pull
//!   Secret is read by the kubelet, never the pod, and allowing one should not make it
//!   readable by steps), and how names resolve (no `hostAliases`, `dnsConfig` or
//!   `dnsPolicy: None`, which could point the engine's URL, and so the runner's token,
//!   elsewhere).
//! - Allowed on purpose: `lifecycle` hooks and probes that `exec` or `sleep` run in the
//!   container as its user under the same confinement (what the image could do anyway);
//!   an `httpGet`/`tcpSocket` one reaches the pod's own address only (no `host`, which
//!   the kubelet would connect to from its node). `hostname`/`subdomain`/
//!   `setHostnameAsFQDN` name the pod itself. Fields k8s-openapi does not know are
//!   dropped when the template is read, so they never reach the API server.
//! - The runner runs as a non-root user (65532 unless the template picks another
//!   non-zero uid) with no capabilities: it needs none (in a pod every step runs as the
//!   runner's user; the pod is the step's boundary), so nothing here takes one away from it.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, HTTPGetAction, PodSecurityContext, PodSpec, SELinuxOptions,
    SeccompProfile, SecurityContext, TCPSocketAction, Toleration, Volume,
    WindowsSecurityContextOptions,
};

use crate::class::{RunnerClass, RUNNER_CONTAINER};

mod forced;
pub(crate) mod pod_defaults;
pub(crate) use forced::force;

/// The only seccomp profile runner pods run under, at pod and container level.
const RUNTIME_DEFAULT: &str = "RuntimeDefault";

/// Annotation prefixes that change a pod's confinement outside its spec, by family: the
/// legacy (pre-field) AppArmor, seccomp and sysctl settings, and the container runtimes'
/// pass-through annotations (`io.kubernetes.cri.*` and `io.kubernetes.cri-o.*`: CRI-O's
/// devices and user namespaces, containerd's untrusted-workload; crun's `run.oci.*`, e.g.
/// `run.oci.handler`; Kata's hypervisor settings, gVisor's sandbox settings, containerd's,
/// Podman's and the OCI ones). Device injection by CDI (`cdi.k8s.io/…`,
/// `<vendor>.cdi.k8s.io/…`) is refused by [`is_confinement_annotation`] too.
const CONFINEMENT_ANNOTATIONS: [&str; 12] = [
    "container.apparmor.security.beta.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
    "security.alpha.kubernetes.io/",
    "io.kubernetes.",
    "run.oci.",
    "io.katacontainers.",
    "dev.gvisor.",
    "io.containerd.",
    "io.containers.",
    "io.podman.",
    "org.opencontainers.",
];

/// Label keys of the chart's Service selectors (`plue.engineSelector`,
/// `plue.postgresSelector`: name, instance and component; the instance is Plue's on a
/// runner pod): a runner pod carrying them could become an endpoint of the engine's or the
/// database's Service when runners share the release's namespace.
const SELECTOR_LABELS: [&str; 2] = ["app.kubernetes.io/name", "app.kubernetes.io/component"];

/// The taints that keep workloads off control-plane nodes.
const CONTROL_PLANE_TAINTS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// The access modes of a volume only one node mounts.
const SINGLE_NODE_ACCESS: [&str; 2] = ["ReadWriteOnce", "ReadWriteOncePod"];

/// One field of a class's pod that weakens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Where in the pod: `spec.volumes[1].secret`, `metadata.annotations["..."]`.
    pub(crate) path: String,
    /// What is wrong, read after the path: `is not allowed (...)`, `must be ...`.
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path, self.message)
    }
}

#[derive(Default)]
struct Found(Vec<Problem>);

impl Found {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Every field of `class`'s pod (its template merged over Plue's defaults) that weakens
/// the pod's hardening; empty when the class may run.
pub(crate) fn problems(class: &RunnerClass) -> Vec<Problem> {
    let spec = pod_defaults::merged_spec(&class.template);
    let mut found = Found::default();
    let annotations = class
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref());
    for key in annotations.into_iter().flat_map(BTreeMap::keys) {
        if is_confinement_annotation(key) {
            found.add(
                format!("metadata.annotations[{key:?}]"),
                "is not allowed (a runner pod's AppArmor and seccomp profiles, its runtime's settings and its devices are Plue's)",
            );
        }
    }
    let labels = class
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    for key in labels.into_iter().flat_map(BTreeMap::keys) {
        if SELECTOR_LABELS.contains(&key.as_str()) {
            found.add(
                format!("metadata.labels[{key:?}]"),
                "is not allowed (the chart's Services select the engine's and the database's pods by it; a runner pod is never their endpoint)",
            );
        }
    }
    pod_level(&spec, class, &mut found);
    if let Some(sc) = &spec.security_context {
        pod_security(sc, &mut found);
    }
    let containers = spec.containers.iter().map(|c| ("containers", c));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", c));
    for (list, c) in containers.chain(init) {
        let at = format!("spec.{list}[{}]", c.name);
        container(
            c,
            &at,
            list == "containers" && c.name == RUNNER_CONTAINER,
            class,
            &mut found,
        );
    }
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        self::volume(volume, &format!("spec.volumes[{i}]"), class, &mut found);
    }
    found.0
}

fn is_confinement_annotation(key: &str) -> bool {
    let cdi = key
        .split_once('/')
        .is_some_and(|(prefix, _)| prefix == "cdi.k8s.io" || prefix.ends_with(".cdi.k8s.io"));
    cdi || CONFINEMENT_ANNOTATIONS.iter().any(|p| key.starts_with(p))
}

/// A toleration of a control-plane taint, or of every taint (empty key, `Exists`).
fn tolerates_control_plane(t: &Toleration) -> bool {
    let key = t.key.as_deref().unwrap_or_default();
    (key.is_empty() && t.operator.as_deref() == Some("Exists"))
        || CONTROL_PLANE_TAINTS.contains(&key)
}

/// The namespace's `default` account (what a pod without one runs as), or the class's.
fn service_account_allowed(name: &str, class: &RunnerClass) -> bool {
    name.is_empty() || name == "default" || class.allow_service_account.as_deref() == Some(name)
}

fn pod_level(spec: &PodSpec, class: &RunnerClass, found: &mut Found) {
    if let Some(node) = &spec.node_name {
        found.add(
            "spec.nodeName",
            format!("is not allowed (runner pods are placed by nodeSelector and affinity, never pinned to a node), got {node:?}"),
        );
    }
    for (i, toleration) in spec.tolerations.iter().flatten().enumerate() {
        if tolerates_control_plane(toleration) {
            found.add(
                format!("spec.tolerations[{i}]"),
                match toleration.key.as_deref().filter(|k| !k.is_empty()) {
                    Some(key) => format!(
                        "is not allowed (runner pods never run on control-plane nodes), got key {key:?}"
                    ),
                    None => "is not allowed (runner pods never run on control-plane nodes), got a toleration of every taint".into(),
                },
            );
        }
    }
    for (field, name) in [
        ("serviceAccountName", &spec.service_account_name),
        ("serviceAccount", &spec.service_account),
    ] {
        if let Some(name) = name
            .as_deref()
            .filter(|n| !service_account_allowed(n, class))
        {
            found.add(
                format!("spec.{field}"),
                format!("is not allowed unless the class names it in allow_service_account (a service account can carry a cloud identity even without a token), got {name:?}"),
            );
        }
    }
    if let Some(runtime) = spec
        .runtime_class_name
        .as_deref()
        .filter(|r| !class.allow_runtime_classes.contains(*r))
    {
        found.add(
            "spec.runtimeClassName",
            format!("is not allowed unless the class lists it in allow_runtime_classes (a template never picks the pod's runtime), got {runtime:?}"),
        );
    }
    if spec.host_aliases.as_ref().is_some_and(|a| !a.is_empty()) {
        found.add(
            "spec.hostAliases",
            "is not allowed (names, the engine's included, resolve through the cluster's DNS)",
        );
    }
    if spec.dns_policy.as_deref() == Some("None") {
        found.add(
            "spec.dnsPolicy",
            "must not be None (names, the engine's included, resolve through the cluster's DNS)",
        );
    }
    if spec.dns_config.is_some() {
        found.add(
            "spec.dnsConfig",
            "is not allowed (names, the engine's included, resolve through the cluster's DNS)",
        );
    }
    if spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty()) {
        found.add(
            "spec.resourceClaims",
            "is not allowed (devices are not a runner pod's)",
        );
    }
    if let Some(class) = spec
        .priority_class_name
        .as_deref()
        .filter(|c| c.starts_with("system-"))
    {
        found.add(
            "spec.priorityClassName",
            format!("must not be a system- class (those are the cluster's critical pods'), got {class:?}"),
        );
    }
    if spec.priority.is_some() {
        found.add(
            "spec.priority",
            "is not allowed (a priority comes from priorityClassName)",
        );
    }
    if spec.host_users == Some(true) {
        found.add(
            "spec.hostUsers",
            "must not be true (a runner pod never asks for the host's user namespace)",
        );
    }
    if spec.overhead.is_some() {
        found.add(
            "spec.overhead",
            "is not allowed (a RuntimeClass sets a pod's overhead)",
        );
    }
    for (i, secret) in spec.image_pull_secrets.iter().flatten().enumerate() {
        if !class.allow_image_pull_secrets.contains(&secret.name) {
            found.add(
                format!("spec.imagePullSecrets[{i}]"),
                format!(
                    "is not allowed (pull Secrets need allow_image_pull_secrets), got Secret {:?}",
                    secret.name
                ),
            );
        }
    }
    if spec.automount_service_account_token == Some(true) {
        found.add(
            "spec.automountServiceAccountToken",
            "must not be true (a step would hold the service account's token)",
        );
    }
    for (field, on) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if on == Some(true) {
            found.add(
                format!("spec.{field}"),
                "must not be true (host namespaces are not allowed for runner pods)",
            );
        }
    }
    if spec.share_process_namespace == Some(true) {
        found.add(
            "spec.shareProcessNamespace",
            "must not be true (a step would see and signal the other containers' processes)",
        );
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|c| !c.is_empty())
    {
        found.add("spec.ephemeralContainers", "is not allowed");
    }
}

fn pod_security(sc: &PodSecurityContext, found: &mut Found) {
    let at = "spec.securityContext";
    if sc.run_as_non_root == Some(false) {
        found.add(format!("{at}.runAsNonRoot"), "must stay true");
    }
    root_ids(at, sc.run_as_user, sc.run_as_group, found);
    if sc.fs_group == Some(0) {
        found.add(format!("{at}.fsGroup"), "must not be 0 (the root group)");
    }
    for (i, group) in sc.supplemental_groups.iter().flatten().enumerate() {
        if *group == 0 {
            found.add(
                format!("{at}.supplementalGroups[{i}]"),
                "must not be 0 (the root group)",
            );
        }
    }
    if sc.sysctls.as_ref().is_some_and(|s| !s.is_empty()) {
        found.add(
            format!("{at}.sysctls"),
            "is not allowed (kernel settings of runner pods are the node's)",
        );
    }
    profiles(
        at,
        sc.seccomp_profile.as_ref(),
        sc.app_armor_profile.as_ref(),
        sc.se_linux_options.as_ref(),
        sc.windows_options.as_ref(),
        found,
    );
}

fn root_ids(at: &str, user: Option<i64>, group: Option<i64>, found: &mut Found) {
    if user == Some(0) {
        found.add(format!("{at}.runAsUser"), "must not be 0 (root)");
    }
    if group == Some(0) {
        found.add(format!("{at}.runAsGroup"), "must not be 0 (the root group)");
    }
}

fn profiles(
    at: &str,
    seccomp: Option<&SeccompProfile>,
    app_armor: Option<&AppArmorProfile>,
    se_linux: Option<&SELinuxOptions>,
    windows: Option<&WindowsSecurityContextOptions>,
    found: &mut Found,
) {
    if let Some(profile) = seccomp.filter(|p| p.type_ != RUNTIME_DEFAULT) {
        found.add(
            format!("{at}.seccompProfile.type"),
            format!("must be {RUNTIME_DEFAULT}, got {:?}", profile.type_),
        );
    }
    if let Some(profile) = app_armor.filter(|p| p.type_ != RUNTIME_DEFAULT) {
        found.add(
            format!("{at}.appArmorProfile"),
            format!(
                "is not allowed (the runtime's default AppArmor profile stays), got type {:?}",
                profile.type_
            ),
        );
    }
    if se_linux.is_some() {
        found.add(
            format!("{at}.seLinuxOptions"),
            "is not allowed (the runtime's default SELinux label stays)",
        );
    }
    if windows.is_some() {
        found.add(
            format!("{at}.windowsOptions"),
            "is not allowed (runner pods are Linux pods)",
        );
    }
}

fn container(c: &Container, at: &str, runner: bool, class: &RunnerClass, found: &mut Found) {
    if let Some(sc) = &c.security_context {
        container_security(sc, &format!("{at}.securityContext"), runner, found);
    }
    for (i, port) in c.ports.iter().flatten().enumerate() {
        if port.host_port.is_some_and(|p| p != 0) || port.host_ip.is_some() {
            found.add(
                format!("{at}.ports[{i}].hostPort"),
                "is not allowed (a runner pod listens on no port of its node)",
            );
        }
    }
    for (i, mount) in c.volume_mounts.iter().flatten().enumerate() {
        if let Some(propagation) = mount.mount_propagation.as_deref().filter(|p| *p != "None") {
            found.add(
                format!("{at}.volumeMounts[{i}].mountPropagation"),
                format!("must be None, got {propagation:?}"),
            );
        }
    }
    if c.volume_devices.as_ref().is_some_and(|d| !d.is_empty()) {
        found.add(format!("{at}.volumeDevices"), "is not allowed");
    }
    if c.resources
        .as_ref()
        .and_then(|r| r.claims.as_ref())
        .is_some_and(|claims| !claims.is_empty())
    {
        found.add(
            format!("{at}.resources.claims"),
            "is not allowed (devices are not a runner pod's)",
        );
    }
    for (field, http, tcp) in targets(c) {
        if http
            .and_then(|h| h.host.as_deref())
            .is_some_and(|h| !h.is_empty())
        {
            found.add(
                format!("{at}.{field}.httpGet.host"),
                "is not allowed (the kubelet would connect to another host from its node; a probe or hook reaches the pod itself)",
            );
        }
        if tcp
            .and_then(|t| t.host.as_deref())
            .is_some_and(|h| !h.is_empty())
        {
            found.add(
                format!("{at}.{field}.tcpSocket.host"),
                "is not allowed (the kubelet would connect to another host from its node; a probe or hook reaches the pod itself)",
            );
        }
    }
    for (i, var) in c.env.iter().flatten().enumerate() {
        let Some(source) = &var.value_from else {
            continue;
        };
        if let Some(secret) = &source.secret_key_ref {
            secret_ref(
                &format!("{at}.env[{i}].valueFrom.secretKeyRef"),
                &secret.name,
                class,
                found,
            );
        }
        if let Some(map) = &source.config_map_key_ref {
            config_map_ref(
                &format!("{at}.env[{i}].valueFrom.configMapKeyRef"),
                &map.name,
                class,
                found,
            );
        }
    }
    for (i, source) in c.env_from.iter().flatten().enumerate() {
        if let Some(secret) = &source.secret_ref {
            secret_ref(
                &format!("{at}.envFrom[{i}].secretRef"),
                &secret.name,
                class,
                found,
            );
        }
        if let Some(map) = &source.config_map_ref {
            config_map_ref(
                &format!("{at}.envFrom[{i}].configMapRef"),
                &map.name,
                class,
                found,
            );
        }
    }
}

/// A container's probes and lifecycle hooks: (field, its `httpGet`, its `tcpSocket`).
type Target<'a> = (
    &'static str,
    Option<&'a HTTPGetAction>,
    Option<&'a TCPSocketAction>,
);

fn targets(c: &Container) -> Vec<Target<'_>> {
    let mut out = Vec::new();
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(p) = probe {
            out.push((field, p.http_get.as_ref(), p.tcp_socket.as_ref()));
        }
    }
    if let Some(lifecycle) = &c.lifecycle {
        for (field, hook) in [
            ("lifecycle.postStart", &lifecycle.post_start),
            ("lifecycle.preStop", &lifecycle.pre_stop),
        ] {
            if let Some(h) = hook {
                out.push((field, h.http_get.as_ref(), h.tcp_socket.as_ref()));
            }
        }
    }
    out
}

fn container_security(sc: &SecurityContext, at: &str, runner: bool, found: &mut Found) {
    if sc.privileged == Some(true) {
        found.add(format!("{at}.privileged"), "must not be true");
    }
    if sc.allow_privilege_escalation == Some(true) {
        found.add(format!("{at}.allowPrivilegeEscalation"), "must stay false");
    }
    if let Some(caps) = &sc.capabilities {
        if let Some(add) = caps.add.as_ref().filter(|a| !a.is_empty()) {
            found.add(
                format!("{at}.capabilities.add"),
                format!(
                    "is not allowed (runner pods hold no capabilities), got {}",
                    add.join(",")
                ),
            );
        }
        if let Some(drop) = caps.drop.as_ref().filter(|d| !d.iter().any(|c| c == "ALL")) {
            found.add(
                format!("{at}.capabilities.drop"),
                format!("must include ALL, got [{}]", drop.join(",")),
            );
        }
    }
    if sc.read_only_root_filesystem == Some(false) {
        found.add(
            format!("{at}.readOnlyRootFilesystem"),
            if runner {
                "must stay true (the runner writes only /work and /tmp)"
            } else {
                "must not be false (an emptyDir holds what a container writes)"
            },
        );
    }
    if sc.run_as_non_root == Some(false) {
        found.add(format!("{at}.runAsNonRoot"), "must stay true");
    }
    root_ids(at, sc.run_as_user, sc.run_as_group, found);
    if let Some(mount) = sc.proc_mount.as_deref().filter(|m| *m != "Default") {
        found.add(
            format!("{at}.procMount"),
            format!("must be Default, got {mount:?}"),
        );
    }
    profiles(
        at,
        sc.seccomp_profile.as_ref(),
        sc.app_armor_profile.as_ref(),
        sc.se_linux_options.as_ref(),
        sc.windows_options.as_ref(),
        found,
    );
}

fn secret_ref(at: &str, name: &str, class: &RunnerClass, found: &mut Found) {
    if !class.allow_secret_volumes.contains(name) {
        found.add(
            at,
            format!("is not allowed (Secrets need allow_secret_volumes), got Secret {name:?}"),
        );
    }
}

fn config_map_ref(at: &str, name: &str, class: &RunnerClass, found: &mut Found) {
    if !class.allow_config_map_volumes.contains(name) {
        found.add(
            at,
            format!(
                "is not allowed (ConfigMaps need allow_config_map_volumes), got ConfigMap {name:?}"
            ),
        );
    }
}

/// A volume's or projected source's kind: its one field besides `name` (`emptyDir`,
/// `secret`, `hostPath`, …), so a kind k8s-openapi learns later is refused by default.
fn kinds(volume: &impl serde::Serialize) -> Vec<String> {
    match serde_json::to_value(volume) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "name")
            .collect(),
        _ => Vec::new(),
    }
}

fn volume(volume: &Volume, at: &str, class: &RunnerClass, found: &mut Found) {
    for kind in kinds(volume) {
        let path = format!("{at}.{kind}");
        match kind.as_str() {
            "emptyDir" | "downwardAPI" => {}
            "ephemeral" => {
                let claim = volume
                    .ephemeral
                    .as_ref()
                    .and_then(|e| e.volume_claim_template.as_ref());
                let Some(spec) = claim.map(|c| &c.spec) else {
                    continue;
                };
                let at = format!("{path}.volumeClaimTemplate.spec");
                if spec.data_source.is_some() || spec.data_source_ref.is_some() {
                    found.add(
                        format!("{at}.dataSource"),
                        "is not allowed (a runner's volume starts empty, never as a copy of another volume)",
                    );
                }
                if let Some(name) = &spec.volume_name {
                    found.add(
                        format!("{at}.volumeName"),
                        format!("is not allowed (it binds an existing PersistentVolume, a hostPath one or another application's; a runner's volume is provisioned fresh), got {name:?}"),
                    );
                }
                if spec.selector.is_some() {
                    found.add(
                        format!("{at}.selector"),
                        "is not allowed (it binds existing PersistentVolumes by label; a runner's volume is provisioned fresh)",
                    );
                }
                if spec.storage_class_name.as_deref() == Some("") {
                    found.add(
                        format!("{at}.storageClassName"),
                        "must not be empty (an empty class binds an existing PersistentVolume without a class; name a provisioning StorageClass or leave it out)",
                    );
                }
                for (k, mode) in spec.access_modes.iter().flatten().enumerate() {
                    if !SINGLE_NODE_ACCESS.contains(&mode.as_str()) {
                        found.add(
                            format!("{at}.accessModes[{k}]"),
                            format!("must be ReadWriteOnce or ReadWriteOncePod (a volume of several nodes is shared), got {mode:?}"),
                        );
                    }
                }
            }
            "secret" => {
                let name = volume
                    .secret
                    .as_ref()
                    .and_then(|s| s.secret_name.clone())
                    .unwrap_or_default();
                if !class.allow_secret_volumes.contains(&name) {
                    found.add(
                        path,
                        format!(
                            "is not allowed (Secret volumes need allow_secret_volumes), got secretName {name:?}"
                        ),
                    );
                }
            }
            "configMap" => {
                let name = volume
                    .config_map
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                if !class.allow_config_map_volumes.contains(&name) {
                    found.add(
                        path,
                        format!(
                            "is not allowed (ConfigMap volumes need allow_config_map_volumes), got name {name:?}"
                        ),
                    );
                }
            }
            "projected" => {
                let sources = volume.projected.iter().flat_map(|p| p.sources.iter().flatten());
                for (j, source) in sources.enumerate() {
                    let at = format!("{path}.sources[{j}]");
                    for kind in kinds(source) {
                        let at = format!("{at}.{kind}");
                        match kind.as_str() {
                            "downwardAPI" | "clusterTrustBundle" => {}
                            "secret" => {
                                let name = source.secret.as_ref().map(|s| s.name.as_str());
                                secret_ref(&at, name.unwrap_or_default(), class, found);
                            }
                            "configMap" => {
                                let name = source.config_map.as_ref().map(|m| m.name.as_str());
                                config_map_ref(&at, name.unwrap_or_default(), class, found);
                            }
                            "serviceAccountToken" => found.add(
                                at,
                                "is not allowed (a step would hold a token of the pod's service account)",
                            ),
                            _ => found.add(
                                at,
                                "is not allowed (projected sources are downwardAPI, clusterTrustBundle and the Secrets and ConfigMaps the class allows)",
                            ),
                        }
                    }
                }
            }
            "hostPath" => found.add(
                path,
                "is not allowed (a step would reach its node's files)",
            ),
            "persistentVolumeClaim" => found.add(
                path,
                "is not allowed (a volume that outlives the pod hands one step's files to the next; use emptyDir or ephemeral)",
            ),
            _ => found.add(
                path,
                "is not allowed (runner pods may use emptyDir, ephemeral, downwardAPI, projected, and the Secret and ConfigMap volumes their class allows)",
            ),
        }
    }
}

/// What a class's allow-list names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listed {
    /// Secrets (`allow_secret_volumes`, `allow_image_pull_secrets`).
    Secrets,
    /// Other objects (ConfigMaps, runtime classes, a service account).
    Objects,
}

/// Why a name cannot be in a class's allow-list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotListable {
    #[error("{0:?} is not a Kubernetes object name")]
    NotAnObjectName(String),
    /// A runner's token Secret (`pool-…`, one per pod, Plue's alone).
    #[error("{0:?}: Secrets named pool-… are runners' one-time tokens, never a class's")]
    RunnerToken(String),
}

/// Whether `name` may be listed in an allow-list of `listed`: an object name, and never a
/// runner's token Secret.
pub(crate) fn check_listable(name: &str, listed: Listed) -> Result<(), NotListable> {
    let subdomain = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !subdomain {
        Err(NotListable::NotAnObjectName(name.to_owned()))
    } else if listed == Listed::Secrets && name.starts_with("pool-") {
        Err(NotListable::RunnerToken(name.to_owned()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
