//! The hardening set on every runner pod created, over whatever its template said (the
//! second layer of [`super`]): what [`super::problems`] refuses can never reach a created
//! pod even if a check were missed or a class never went through them. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, HTTPGetAction, PodSecurityContext, PodSpec, SeccompProfile,
    SecurityContext, TCPSocketAction,
};

use super::{
    is_confinement_annotation, service_account_allowed, tolerates_control_plane, RUNTIME_DEFAULT,
    SELECTOR_LABELS, SINGLE_NODE_ACCESS,
};
use crate::class::RunnerClass;

/// Sets the hardening on a merged pod `spec`, its `annotations` and its `labels` (the
/// template's), over whatever the template said, `class` giving the allow-lists: what
/// [`problems`] refuses can never reach a created pod even if a check were missed.
pub(crate) fn force(
    spec: &mut PodSpec,
    annotations: &mut BTreeMap<String, String>,
    labels: &mut BTreeMap<String, String>,
    class: &RunnerClass,
) {
    annotations.retain(|key, _| !is_confinement_annotation(key));
    labels.retain(|key, _| !SELECTOR_LABELS.contains(&key.as_str()));
    spec.automount_service_account_token = Some(false);
    spec.node_name = None;
    if let Some(tolerations) = &mut spec.tolerations {
        tolerations.retain(|t| !tolerates_control_plane(t));
    }
    let account = spec
        .service_account_name
        .take()
        .filter(|n| !n.is_empty())
        .or(spec.service_account.take());
    spec.service_account = None;
    spec.service_account_name = account.filter(|n| service_account_allowed(n, class));
    spec.runtime_class_name = spec
        .runtime_class_name
        .take()
        .filter(|r| class.allow_runtime_classes.contains(r));
    spec.host_aliases = None;
    spec.dns_config = None;
    if spec.dns_policy.as_deref() == Some("None") {
        spec.dns_policy = None;
    }
    spec.resource_claims = None;
    spec.priority_class_name = spec
        .priority_class_name
        .take()
        .filter(|c| !c.starts_with("system-"));
    spec.priority = None;
    spec.host_users = spec.host_users.filter(|on| !on);
    spec.overhead = None;
    if let Some(secrets) = &mut spec.image_pull_secrets {
        secrets.retain(|s| class.allow_image_pull_secrets.contains(&s.name));
    }
    for volume in spec.volumes.iter_mut().flatten() {
        let claim = volume
            .ephemeral
            .as_mut()
            .and_then(|e| e.volume_claim_template.as_mut());
        if let Some(claim) = claim {
            let s = &mut claim.spec;
            s.data_source = None;
            s.data_source_ref = None;
            s.volume_name = None;
            s.selector = None;
            s.storage_class_name = s.storage_class_name.take().filter(|c| !c.is_empty());
            let modes = s.access_modes.get_or_insert_with(Vec::new);
            modes.retain(|m| SINGLE_NODE_ACCESS.contains(&m.as_str()));
            if modes.is_empty() {
                modes.push(SINGLE_NODE_ACCESS[0].into());
            }
        }
    }
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
        .or(Some(super::pod_defaults::RUNNER_UID));
    psc.run_as_group = psc
        .run_as_group
        .filter(|g| *g != 0)
        .or(Some(super::pod_defaults::RUNNER_UID));
    psc.fs_group = psc
        .fs_group
        .filter(|g| *g != 0)
        .or(Some(super::pod_defaults::RUNNER_UID));
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
        force_container(c);
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: RUNTIME_DEFAULT.into(),
        localhost_profile: None,
    }
}

fn force_container(c: &mut Container) {
    let sc = c
        .security_context
        .get_or_insert_with(SecurityContext::default);
    sc.privileged = Some(false);
    sc.allow_privilege_escalation = Some(false);
    sc.capabilities = Some(Capabilities {
        add: None,
        drop: Some(vec!["ALL".into()]),
    });
    sc.read_only_root_filesystem = Some(true);
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
    if let Some(resources) = &mut c.resources {
        resources.claims = None;
    }
    let probes = [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ];
    for probe in probes.into_iter().flatten() {
        clear_hosts(probe.http_get.as_mut(), probe.tcp_socket.as_mut());
    }
    if let Some(lifecycle) = &mut c.lifecycle {
        for hook in [&mut lifecycle.post_start, &mut lifecycle.pre_stop]
            .into_iter()
            .flatten()
        {
            clear_hosts(hook.http_get.as_mut(), hook.tcp_socket.as_mut());
        }
    }
}

fn clear_hosts(http: Option<&mut HTTPGetAction>, tcp: Option<&mut TCPSocketAction>) {
    if let Some(http) = http {
        http.host = None;
    }
    if let Some(tcp) = tcp {
        tcp.host = None;
    }
}
