//! What a runner pod may be: the checks on a class's pod (its template merged over Plue's
//! defaults, exactly as [`super::pod`] builds it) and the hardening forced on every pod
//! created. Pure.
//!
//! Two layers, on purpose:
//! - [`problems`] refuses every field of the merged pod that weakens it, each problem
//!   naming its path in the pod (`spec.volumes[1].secret`,
//!   `spec.containers[runner].securityContext.capabilities.drop`). It runs when the pool
//!   file is loaded (`plue serve --check-config` and `plue serve`) and again when the pool
//!   starts, so a weakening template never reaches the API server.
//! - [`force`] then sets the hardening on the pod actually created, whatever the first
//!   layer let through: every container without privilege, escalation, capabilities,
//!   host ports or a non-default `procMount`; `RuntimeDefault` seccomp at pod and container
//!   level; no AppArmor or SELinux override (fields or the legacy annotations); no service
//!   account token, host namespace, shared process namespace, sysctl or ephemeral
//!   container; a non-root user and group; the runner container's root file system
//!   read-only.
//!
//! Past 600 lines: the checks are half of it; the rest is the table of every weakening
//! found so far, which belongs beside the checks it pins.
//!
//! Invariants:
//! - The merged pod is what is checked, not the template alone: a template list replaces
//!   the default's (`capabilities.drop: []` removes `ALL`), so only the merge says what the
//!   pod will be.
//! - Volumes are an allow-list of kinds (`emptyDir`, `ephemeral`, `downwardAPI`,
//!   `projected` without service-account tokens), plus the Secrets and ConfigMaps the
//!   class names in `allow_secret_volumes` / `allow_config_map_volumes`; environment
//!   variables read from Secrets and ConfigMaps obey the same lists. Everything else
//!   (`hostPath`, a `persistentVolumeClaim` that outlives the pod, network file systems,
//!   CSI drivers, …) is refused by kind, so a kind Kubernetes adds later is refused too.
//! - The runner runs as a non-root user (65532 unless the template picks another
//!   non-zero uid) with no capabilities: it needs none (in a pod every step runs as the
//!   runner's user; the pod is the step's boundary), so nothing here takes one away from it.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, Container, PodSecurityContext, PodSpec, SELinuxOptions,
    SeccompProfile, SecurityContext, Volume, WindowsSecurityContextOptions,
};

use crate::pool::config_file::{RunnerClass, RUNNER_CONTAINER};

/// The only seccomp profile runner pods run under, at pod and container level.
const RUNTIME_DEFAULT: &str = "RuntimeDefault";

/// Annotation prefixes that change a pod's confinement outside its spec: the legacy
/// (pre-field) AppArmor and seccomp settings, and the container runtimes' pass-through
/// annotations (CRI-O devices and user namespaces, Kata's hypervisor settings, gVisor's
/// sandbox settings, containerd's).
const CONFINEMENT_ANNOTATIONS: [&str; 7] = [
    "container.apparmor.security.beta.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/pod",
    "io.kubernetes.cri-o.",
    "io.katacontainers.",
    "dev.gvisor.",
    "io.containerd.",
];

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
    let spec = super::pod::merged_spec(&class.template);
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
                "is not allowed (a runner pod's AppArmor and seccomp profiles and its runtime's settings are Plue's)",
            );
        }
    }
    pod_level(&spec, &mut found);
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
    CONFINEMENT_ANNOTATIONS.iter().any(|p| key.starts_with(p))
}

fn pod_level(spec: &PodSpec, found: &mut Found) {
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

/// The volume's kind: its one field besides `name` (`emptyDir`, `secret`, `hostPath`, …).
fn kinds(volume: &Volume) -> Vec<String> {
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
                let spec = claim.map(|c| &c.spec);
                if spec.is_some_and(|s| s.data_source.is_some() || s.data_source_ref.is_some()) {
                    found.add(
                        format!("{path}.volumeClaimTemplate.spec.dataSource"),
                        "is not allowed (a runner's volume starts empty, never as a copy of another volume)",
                    );
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
                    if source.service_account_token.is_some() {
                        found.add(
                            format!("{at}.serviceAccountToken"),
                            "is not allowed (a step would hold a token of the pod's service account)",
                        );
                    }
                    if let Some(secret) = &source.secret {
                        secret_ref(&format!("{at}.secret"), &secret.name, class, found);
                    }
                    if let Some(map) = &source.config_map {
                        config_map_ref(&format!("{at}.configMap"), &map.name, class, found);
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

/// Sets the hardening on a merged pod `spec` and its `annotations`, over whatever the
/// template said: what [`problems`] refuses can never reach a created pod even if a check
/// were missed.
pub(super) fn force(spec: &mut PodSpec, annotations: &mut BTreeMap<String, String>) {
    annotations.retain(|key, _| !is_confinement_annotation(key));
    spec.automount_service_account_token = Some(false);
    spec.host_network = None;
    spec.host_pid = None;
    spec.host_ipc = None;
    spec.share_process_namespace = Some(false);
    spec.ephemeral_containers = None;
    let psc = spec
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    psc.run_as_non_root = Some(true);
    psc.run_as_user = psc
        .run_as_user
        .filter(|u| *u != 0)
        .or(Some(super::pod::RUNNER_UID));
    psc.run_as_group = psc
        .run_as_group
        .filter(|g| *g != 0)
        .or(Some(super::pod::RUNNER_UID));
    psc.fs_group = psc
        .fs_group
        .filter(|g| *g != 0)
        .or(Some(super::pod::RUNNER_UID));
    if let Some(groups) = &mut psc.supplemental_groups {
        groups.retain(|g| *g != 0);
    }
    psc.sysctls = None;
    psc.seccomp_profile = Some(runtime_default());
    psc.app_armor_profile = None;
    psc.se_linux_options = None;
    psc.windows_options = None;
    let init = spec.init_containers.iter_mut().flatten();
    for c in spec.containers.iter_mut().chain(init) {
        let runner = c.name == RUNNER_CONTAINER;
        force_container(c, runner);
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: RUNTIME_DEFAULT.into(),
        localhost_profile: None,
    }
}

fn force_container(c: &mut Container, runner: bool) {
    let sc = c
        .security_context
        .get_or_insert_with(SecurityContext::default);
    sc.privileged = Some(false);
    sc.allow_privilege_escalation = Some(false);
    sc.capabilities = Some(Capabilities {
        add: None,
        drop: Some(vec!["ALL".into()]),
    });
    if runner {
        sc.read_only_root_filesystem = Some(true);
    }
    sc.run_as_non_root = Some(true);
    sc.run_as_user = sc.run_as_user.filter(|u| *u != 0);
    sc.run_as_group = sc.run_as_group.filter(|g| *g != 0);
    sc.proc_mount = None;
    sc.seccomp_profile = Some(runtime_default());
    sc.app_armor_profile = None;
    sc.se_linux_options = None;
    sc.windows_options = None;
    for port in c.ports.iter_mut().flatten() {
        port.host_port = None;
        port.host_ip = None;
    }
    for mount in c.volume_mounts.iter_mut().flatten() {
        mount.mount_propagation = None;
    }
}

/// Why `name` cannot be listed in `allow_secret_volumes` or `allow_config_map_volumes`:
/// not an object name, or (for Secrets) a runner's token Secret (`pool-…`, one per pod,
/// Plue's alone).
pub(crate) fn allow_list_problem(name: &str, secret: bool) -> Option<String> {
    let subdomain = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !subdomain {
        Some(format!("{name:?} is not a Kubernetes object name"))
    } else if secret && name.starts_with("pool-") {
        Some(format!(
            "{name:?}: Secrets named pool-… are runners' one-time tokens, never a class's"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::pool::config_file::parse;
    use crate::pool::kubernetes::pod::runner_pod;

    /// A pool file with one class `gpu`: `template` (JSON is YAML), `extra` class fields.
    fn file(template: &Value, extra: &str) -> String {
        format!(
            "kubernetes: {{namespace: ci, engine_url: 'http://plue:8600'}}\nclasses:\n  - name: gpu\n    max_runners: 2\n{extra}    template: {template}\n"
        )
    }

    /// A template whose runner container has `runner` fields, whose spec has `spec`
    /// fields and whose metadata is `meta`.
    fn template(meta: Value, spec: Value, runner: Value) -> Value {
        let mut container = json!({"name": "runner", "image": "img:1"});
        container
            .as_object_mut()
            .unwrap()
            .extend(runner.as_object().unwrap().clone());
        let mut spec_json = json!({"containers": [container]});
        spec_json
            .as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        json!({"metadata": meta, "spec": spec_json})
    }

    fn spec(spec: Value) -> Value {
        template(json!({}), spec, json!({}))
    }

    fn runner(runner: Value) -> Value {
        template(json!({}), json!({}), runner)
    }

    fn runner_sc(sc: Value) -> Value {
        runner(json!({"securityContext": sc}))
    }

    fn pod_sc(sc: Value) -> Value {
        spec(json!({"securityContext": sc}))
    }

    fn volume(volume: Value) -> Value {
        let mut v = json!({"name": "extra"});
        v.as_object_mut()
            .unwrap()
            .extend(volume.as_object().unwrap().clone());
        spec(json!({"volumes": [{"name": "scratch", "emptyDir": {}}, v]}))
    }

    /// Every way found to weaken a runner pod through its template, and what the refusal
    /// must say (after `pool class "gpu": `).
    fn weakenings() -> Vec<(Value, &'static str)> {
        vec![
            (
                volume(json!({"projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}})),
                "spec.volumes[1].projected.sources[0].serviceAccountToken is not allowed",
            ),
            (
                spec(json!({"automountServiceAccountToken": true})),
                "spec.automountServiceAccountToken must not be true",
            ),
            (
                runner_sc(json!({"capabilities": {"drop": []}})),
                "spec.containers[runner].securityContext.capabilities.drop must include ALL, got []",
            ),
            (
                runner_sc(json!({"capabilities": {"add": ["SYS_ADMIN"]}})),
                "spec.containers[runner].securityContext.capabilities.add is not allowed",
            ),
            (
                runner_sc(json!({"readOnlyRootFilesystem": false})),
                "spec.containers[runner].securityContext.readOnlyRootFilesystem must stay true",
            ),
            (
                runner_sc(json!({"privileged": true})),
                "spec.containers[runner].securityContext.privileged must not be true",
            ),
            (
                runner_sc(json!({"allowPrivilegeEscalation": true})),
                "spec.containers[runner].securityContext.allowPrivilegeEscalation must stay false",
            ),
            (
                pod_sc(json!({"seccompProfile": {"type": "Unconfined"}})),
                "spec.securityContext.seccompProfile.type must be RuntimeDefault, got \"Unconfined\"",
            ),
            (
                runner_sc(json!({"seccompProfile": {"type": "Unconfined"}})),
                "spec.containers[runner].securityContext.seccompProfile.type must be RuntimeDefault",
            ),
            (
                runner_sc(json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "x.json"}})),
                "spec.containers[runner].securityContext.seccompProfile.type must be RuntimeDefault, got \"Localhost\"",
            ),
            (
                pod_sc(json!({"appArmorProfile": {"type": "Unconfined"}})),
                "spec.securityContext.appArmorProfile is not allowed",
            ),
            (
                runner_sc(json!({"appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}})),
                "spec.containers[runner].securityContext.appArmorProfile is not allowed",
            ),
            (
                pod_sc(json!({"seLinuxOptions": {"type": "spc_t"}})),
                "spec.securityContext.seLinuxOptions is not allowed",
            ),
            (
                runner_sc(json!({"seLinuxOptions": {"level": "s0:c1"}})),
                "spec.containers[runner].securityContext.seLinuxOptions is not allowed",
            ),
            (
                template(
                    json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/runner": "unconfined"}}),
                    json!({}),
                    json!({}),
                ),
                "metadata.annotations[\"container.apparmor.security.beta.kubernetes.io/runner\"] is not allowed",
            ),
            (
                template(
                    json!({"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}}),
                    json!({}),
                    json!({}),
                ),
                "metadata.annotations[\"seccomp.security.alpha.kubernetes.io/pod\"] is not allowed",
            ),
            (
                runner_sc(json!({"procMount": "Unmasked"})),
                "spec.containers[runner].securityContext.procMount must be Default, got \"Unmasked\"",
            ),
            (
                volume(json!({"secret": {"secretName": "plue"}})),
                "spec.volumes[1].secret is not allowed (Secret volumes need allow_secret_volumes), got secretName \"plue\"",
            ),
            (
                volume(json!({"projected": {"sources": [{"downwardAPI": {"items": []}}, {"secret": {"name": "plue"}}]}})),
                "spec.volumes[1].projected.sources[1].secret is not allowed (Secrets need allow_secret_volumes)",
            ),
            (
                volume(json!({"configMap": {"name": "kube-root-ca.crt"}})),
                "spec.volumes[1].configMap is not allowed (ConfigMap volumes need allow_config_map_volumes)",
            ),
            (
                volume(json!({"projected": {"sources": [{"configMap": {"name": "c"}}]}})),
                "spec.volumes[1].projected.sources[0].configMap is not allowed",
            ),
            (
                volume(json!({"hostPath": {"path": "/var/run"}})),
                "spec.volumes[1].hostPath is not allowed",
            ),
            (
                volume(json!({"persistentVolumeClaim": {"claimName": "cache"}})),
                "spec.volumes[1].persistentVolumeClaim is not allowed",
            ),
            (
                volume(json!({"ephemeral": {"volumeClaimTemplate": {"spec": {
                    "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                    "dataSource": {"kind": "PersistentVolumeClaim", "name": "data-plue-postgresql-0"}}}}})),
                "spec.volumes[1].ephemeral.volumeClaimTemplate.spec.dataSource is not allowed",
            ),
            (
                template(
                    json!({"annotations": {"io.kubernetes.cri-o.Devices": "/dev/kmsg"}}),
                    json!({}),
                    json!({}),
                ),
                "metadata.annotations[\"io.kubernetes.cri-o.Devices\"] is not allowed",
            ),
            (
                volume(json!({"nfs": {"server": "nfs", "path": "/"}})),
                "spec.volumes[1].nfs is not allowed",
            ),
            (
                spec(json!({"shareProcessNamespace": true})),
                "spec.shareProcessNamespace must not be true",
            ),
            (
                runner(json!({"ports": [{"containerPort": 22, "hostPort": 2222}]})),
                "spec.containers[runner].ports[0].hostPort is not allowed",
            ),
            (spec(json!({"hostNetwork": true})), "spec.hostNetwork must not be true"),
            (spec(json!({"hostPID": true})), "spec.hostPID must not be true"),
            (spec(json!({"hostIPC": true})), "spec.hostIPC must not be true"),
            (
                pod_sc(json!({"runAsUser": 0})),
                "spec.securityContext.runAsUser must not be 0 (root)",
            ),
            (
                runner_sc(json!({"runAsUser": 0})),
                "spec.containers[runner].securityContext.runAsUser must not be 0 (root)",
            ),
            (
                pod_sc(json!({"runAsGroup": 0})),
                "spec.securityContext.runAsGroup must not be 0 (the root group)",
            ),
            (
                runner_sc(json!({"runAsGroup": 0})),
                "spec.containers[runner].securityContext.runAsGroup must not be 0",
            ),
            (
                pod_sc(json!({"fsGroup": 0})),
                "spec.securityContext.fsGroup must not be 0",
            ),
            (
                pod_sc(json!({"supplementalGroups": [100, 0]})),
                "spec.securityContext.supplementalGroups[1] must not be 0",
            ),
            (
                pod_sc(json!({"runAsNonRoot": false})),
                "spec.securityContext.runAsNonRoot must stay true",
            ),
            (
                runner_sc(json!({"runAsNonRoot": false})),
                "spec.containers[runner].securityContext.runAsNonRoot must stay true",
            ),
            (
                pod_sc(json!({"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "0"}]})),
                "spec.securityContext.sysctls is not allowed",
            ),
            (
                pod_sc(json!({"windowsOptions": {"hostProcess": true}})),
                "spec.securityContext.windowsOptions is not allowed",
            ),
            (
                spec(json!({"ephemeralContainers": [{"name": "debug", "image": "busybox"}]})),
                "spec.ephemeralContainers is not allowed",
            ),
            (
                spec(json!({"initContainers": [{"name": "setup", "image": "busybox",
                    "securityContext": {"privileged": true}}]})),
                "spec.initContainers[setup].securityContext.privileged must not be true",
            ),
            (
                spec(json!({"initContainers": [{"name": "setup", "image": "busybox",
                    "securityContext": {"runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}}}]})),
                "spec.initContainers[setup].securityContext.capabilities.add is not allowed",
            ),
            (
                template(
                    json!({}),
                    json!({"containers": [{"name": "runner", "image": "i"},
                        {"name": "sidecar", "image": "s", "securityContext": {"procMount": "Unmasked"}}]}),
                    json!({}),
                ),
                "spec.containers[sidecar].securityContext.procMount must be Default",
            ),
            (
                spec(json!({"initContainers": [{"name": "setup", "image": "b",
                    "securityContext": {"readOnlyRootFilesystem": false}}]})),
                "spec.initContainers[setup].securityContext.readOnlyRootFilesystem must not be false",
            ),
            (
                runner(json!({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "plue", "key": "admin-token"}}}]})),
                "spec.containers[runner].env[0].valueFrom.secretKeyRef is not allowed (Secrets need allow_secret_volumes), got Secret \"plue\"",
            ),
            (
                runner(json!({"envFrom": [{"secretRef": {"name": "plue"}}]})),
                "spec.containers[runner].envFrom[0].secretRef is not allowed",
            ),
            (
                runner(json!({"envFrom": [{"configMapRef": {"name": "plue-pool"}}]})),
                "spec.containers[runner].envFrom[0].configMapRef is not allowed",
            ),
            (
                template(
                    json!({}),
                    json!({"volumes": [{"name": "x", "emptyDir": {}}]}),
                    json!({"volumeMounts": [{"name": "x", "mountPath": "/x", "mountPropagation": "Bidirectional"}]}),
                ),
                "spec.containers[runner].volumeMounts[0].mountPropagation must be None",
            ),
        ]
    }

    #[test]
    fn every_weakening_template_is_refused_naming_its_class_and_field() {
        for (template, expected) in weakenings() {
            let text = file(&template, "");
            let err = match parse(&text, "pool.yaml") {
                Ok(_) => panic!("accepted: {template}"),
                Err(e) => e.to_string(),
            };
            let expected =
                format!("pool.yaml: classes[0].template: pool class \"gpu\": {expected}");
            assert!(
                err.contains(&expected),
                "{template}\nwanted {expected}\ngot {err}"
            );
            assert!(!err.contains('\n') || err.lines().all(|l| l.starts_with("pool.yaml: ")));
        }
    }

    #[test]
    fn allowed_secrets_config_maps_and_harmless_fields_pass() {
        let template = template(
            json!({"annotations": {"example.com/team": "a"}}),
            json!({
                "serviceAccountName": "runner",
                "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                    "supplementalGroups": [1000],
                                    "appArmorProfile": {"type": "RuntimeDefault"}},
                "initContainers": [{"name": "fetch", "image": "busybox"}],
                "containers": [
                    {"name": "runner", "image": "img:1",
                     "env": [{"name": "CA", "valueFrom": {"configMapKeyRef": {"name": "ca", "key": "pem"}}}],
                     "envFrom": [{"secretRef": {"name": "registry"}}],
                     "volumeMounts": [{"name": "certs", "mountPath": "/certs"}],
                     "securityContext": {"capabilities": {"drop": ["ALL"]}, "procMount": "Default"}},
                    {"name": "sidecar", "image": "s", "ports": [{"containerPort": 9000}]}],
                "volumes": [
                    {"name": "certs", "secret": {"secretName": "registry"}},
                    {"name": "ca", "configMap": {"name": "ca"}},
                    {"name": "both", "projected": {"sources": [
                        {"secret": {"name": "registry"}}, {"configMap": {"name": "ca"}},
                        {"downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}},
                    {"name": "scratch", "emptyDir": {"medium": "Memory"}},
                    {"name": "cache", "ephemeral": {"volumeClaimTemplate": {"spec": {
                        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}]
            }),
            json!({}),
        );
        let text = file(
            &template,
            "    allow_secret_volumes: [registry]\n    allow_config_map_volumes: [ca]\n",
        );
        let parsed = parse(&text, "pool.yaml");
        assert!(parsed.is_ok(), "{}", parsed.unwrap_err());
    }

    #[test]
    fn a_runner_token_secret_is_never_allow_listed() {
        let text = file(
            &runner(json!({})),
            "    allow_secret_volumes: [pool-abc-1, Bad_Name]\n    allow_config_map_volumes: [pool-ok]\n",
        );
        let err = parse(&text, "f").unwrap_err().to_string();
        assert!(
            err.contains("classes[0].allow_secret_volumes: \"pool-abc-1\": Secrets named pool-"),
            "{err}"
        );
        assert!(
            err.contains(
                "classes[0].allow_secret_volumes: \"Bad_Name\" is not a Kubernetes object name"
            ),
            "{err}"
        );
        assert!(!err.contains("allow_config_map_volumes"), "{err}");
    }

    /// A class that never went through the checks (built in code, or a check missed):
    /// the pod created from it is hardened all the same.
    #[test]
    fn the_hardening_is_forced_on_the_pod_whatever_the_class_says() {
        let text = file(&runner(json!({})), "");
        let mut pool = parse(&text, "t").unwrap();
        let mut class = pool.classes.remove(0);
        let weak = template(
            json!({"annotations": {
                "container.apparmor.security.beta.kubernetes.io/runner": "unconfined",
                "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
                "example.com/kept": "yes"}}),
            json!({
                "automountServiceAccountToken": true, "hostNetwork": true, "hostPID": true,
                "hostIPC": true, "shareProcessNamespace": true,
                "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
                "securityContext": {"runAsNonRoot": false, "runAsUser": 0, "runAsGroup": 0,
                    "fsGroup": 0, "supplementalGroups": [0, 5],
                    "sysctls": [{"name": "net.ipv4.ip_forward", "value": "1"}],
                    "seccompProfile": {"type": "Unconfined"},
                    "appArmorProfile": {"type": "Unconfined"},
                    "seLinuxOptions": {"type": "spc_t"}},
                "initContainers": [{"name": "setup", "image": "b",
                    "securityContext": {"privileged": true, "capabilities": {"add": ["ALL"]}}}],
            }),
            json!({
                "ports": [{"containerPort": 22, "hostPort": 2222, "hostIP": "0.0.0.0"}],
                "securityContext": {"privileged": true, "allowPrivilegeEscalation": true,
                    "readOnlyRootFilesystem": false, "runAsNonRoot": false, "runAsUser": 0,
                    "runAsGroup": 0, "procMount": "Unmasked",
                    "capabilities": {"drop": [], "add": ["SYS_ADMIN"]},
                    "seccompProfile": {"type": "Unconfined"},
                    "appArmorProfile": {"type": "Unconfined"},
                    "seLinuxOptions": {"level": "s0"}}
            }),
        );
        class.template = serde_json::from_value(weak).unwrap();
        assert!(
            problems(&class).len() > 20,
            "the pool's start refuses such a class: {:?}",
            problems(&class)
        );
        let pod = runner_pod(&pool.kubernetes, &class, "pool-x-1", 1);
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert!(
            annotations.keys().all(|k| !is_confinement_annotation(k)),
            "{annotations:?}"
        );
        assert_eq!(annotations["example.com/kept"], "yes");
        let pod = serde_json::to_value(&pod).unwrap();
        let spec = &pod["spec"];
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["shareProcessNamespace"], false);
        for absent in ["hostNetwork", "hostPID", "hostIPC", "ephemeralContainers"] {
            assert!(spec[absent].is_null(), "{absent}: {spec}");
        }
        let psc = &spec["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true);
        assert_eq!(psc["runAsUser"], 65532);
        assert_eq!(psc["runAsGroup"], 65532);
        assert_eq!(psc["fsGroup"], 65532);
        assert_eq!(psc["supplementalGroups"], json!([5]));
        assert_eq!(psc["seccompProfile"], json!({"type": "RuntimeDefault"}));
        for absent in ["sysctls", "appArmorProfile", "seLinuxOptions"] {
            assert!(psc[absent].is_null(), "{absent}: {psc}");
        }
        let containers = spec["containers"].as_array().unwrap();
        let init = spec["initContainers"].as_array().unwrap();
        for c in containers.iter().chain(init) {
            let sc = &c["securityContext"];
            assert_eq!(sc["privileged"], false, "{c}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
            assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}), "{c}");
            assert_eq!(sc["runAsNonRoot"], true, "{c}");
            assert_eq!(
                sc["seccompProfile"],
                json!({"type": "RuntimeDefault"}),
                "{c}"
            );
            for absent in [
                "runAsUser",
                "runAsGroup",
                "procMount",
                "appArmorProfile",
                "seLinuxOptions",
            ] {
                assert!(sc[absent].is_null(), "{absent}: {c}");
            }
            for port in c["ports"].as_array().into_iter().flatten() {
                assert!(
                    port["hostPort"].is_null() && port["hostIP"].is_null(),
                    "{port}"
                );
            }
        }
        let runner = containers.iter().find(|c| c["name"] == "runner").unwrap();
        assert_eq!(runner["securityContext"]["readOnlyRootFilesystem"], true);
    }
}
