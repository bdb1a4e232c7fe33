//! A runner pod and its token Secret, built from a class's template. Pure.
//!
//! The pod is the class's `template` merged over Plue's hardened defaults (non-root user
//! 65532, no privilege escalation, every capability dropped, `seccompProfile:
//! RuntimeDefault`, read-only root file system, `automountServiceAccountToken: false`,
//! `restartPolicy: Never`, no service links), then the hardening forced over whatever the
//! template said ([`super::hardening::force`]; the class was already refused if its template
//! weakens the pod), then Plue's own parts set last so no template can replace them: the
//! runner container's command and arguments, the token
//! volume, `emptyDir`s for the work directory and `/tmp`, the labels the controller
//! selects its pods by, and (for a `step_network: pod` class, whose pods have no DNS) the
//! host aliases of the names its runners need ([`with_host_aliases`], resolved by the
//! provider through `super::names`).
//!
//! Invariants:
//! - The one-time token is only in the Secret, mounted read-only (mode 0400) into the
//!   runner container alone: never in the pod spec, an environment variable or an argument.
//! - The Secret is owned by its pod (`ownerReferences` with the pod's uid): deleting the
//!   pod deletes it, and it is immutable.
//! - Every pod and Secret carries the four labels [`selector`] matches, so the controller
//!   (and an engine restarted later) finds exactly its own objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, HostAlias, Pod, Secret, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;

use crate::class::{KubernetesSettings, RunnerClass, StepNetwork, RUNNER_CONTAINER};
use crate::hardening;
use crate::hardening::pod_defaults::merged_spec;
use crate::scope::format_labels;

pub(super) const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub(super) const INSTANCE: &str = "app.kubernetes.io/instance";
pub(super) const CLASS: &str = "plue.dev/class";
pub(super) const RUNNER: &str = "plue.dev/runner";
/// The annotation holding the id of the one-time token minted for the pod's runner (how a
/// restarted engine follows the pods it adopts).
pub(super) const TOKEN_ID: &str = "plue.dev/token-id";

/// Where the token Secret is mounted, and the file the runner reads.
pub(super) const TOKEN_DIR: &str = "/var/run/plue/token";
pub(super) const TOKEN_FILE: &str = "/var/run/plue/token/token";
pub(super) const WORK_DIR: &str = "/work";
/// The runner argument of a class whose pods a NetworkPolicy confines (`step_network:
/// pod`).
pub(super) const NETWORK_CONFINED_BY_POD: &str = "--network-confined-by-pod";
/// The runner argument naming a class's `engine_proxy`.
pub(super) const ENGINE_PROXY: &str = "--engine-proxy";
/// The runner argument naming a class's `egress_proxy`.
pub(super) const EGRESS_PROXY: &str = "--egress-proxy";
/// The runner's environment variable holding its node's name (the downward API's
/// `spec.nodeName`), which it tells the engine at registration.
pub(super) const NODE_NAME_ENV: &str = "PLUE_NODE_NAME";

/// The label selector of one engine installation's pods (all classes).
pub(super) fn selector(instance: &str) -> String {
    format!("{MANAGED_BY}=plue,{INSTANCE}={instance}")
}

fn labels(settings: &KubernetesSettings, class: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), "plue".to_string()),
        (INSTANCE.to_string(), settings.instance.clone()),
        (CLASS.to_string(), class.to_string()),
        (RUNNER.to_string(), name.to_string()),
    ])
}

/// The pod for runner `name` of `class`, whose one-time token has id `token_id`.
pub(crate) fn runner_pod(
    settings: &KubernetesSettings,
    class: &RunnerClass,
    name: &str,
    token_id: i64,
) -> Pod {
    let mut spec = merged_spec(&class.template);
    let template_meta = class.template.metadata.clone().unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    let mut pod_labels = template_meta.labels.unwrap_or_default();
    // The hardening, then Plue's parts, after the merge so the template cannot replace
    // them.
    hardening::force(&mut spec, &mut annotations, &mut pod_labels, class);
    spec.restart_policy = Some("Never".into());
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(Volume {
        name: "plue-token".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.to_string()),
            default_mode: Some(0o400),
            optional: Some(false),
            items: None,
        }),
        ..Volume::default()
    });
    for volume in ["plue-work", "plue-tmp"] {
        volumes.push(Volume {
            name: volume.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    if let Some(runner) = spec
        .containers
        .iter_mut()
        .find(|c| c.name == RUNNER_CONTAINER)
    {
        let mut args = vec![
            "runner".to_string(),
            "--engine".into(),
            settings.engine_url.clone(),
            "--name".into(),
            name.to_string(),
            "--token-file".into(),
            TOKEN_FILE.into(),
            "--work-dir".into(),
            WORK_DIR.into(),
            "--ephemeral".into(),
            "--give-up-after".into(),
            "300".into(),
        ];
        if !class.labels.is_empty() {
            args.push("--labels".into());
            args.push(format_labels(&class.labels));
        }
        // The class's NetworkPolicy confines the pod (the operator's word, in the pool's
        // file): the runner then runs `none` steps without a namespace of their own.
        if class.step_network == StepNetwork::Pod {
            args.push(NETWORK_CONFINED_BY_POD.into());
        }
        // The runner's traffic to the engine goes through this proxy only when the class
        // says so: never through one the template's environment names.
        if let Some(proxy) = &class.engine_proxy {
            args.push(ENGINE_PROXY.into());
            args.push(proxy.clone());
        }
        // Allow-list steps go out through the cluster's egress proxy, each with its
        // attempt's credential (a class with `step_network: pod` only).
        if let Some(proxy) = &class.egress_proxy {
            args.push(EGRESS_PROXY.into());
            args.push(proxy.clone());
        }
        runner.command = Some(vec!["plue".into()]);
        runner.args = Some(args);
        // A runner that fails says why in its last log lines; the kubelet keeps them in
        // the container's status (`state.terminated.message`), where the pool reads them.
        if runner.termination_message_policy.is_none() {
            runner.termination_message_policy = Some("FallbackToLogsOnError".into());
        }
        let mounts = runner.volume_mounts.get_or_insert_with(Vec::new);
        for (volume, path, read_only) in [
            ("plue-token", TOKEN_DIR, true),
            ("plue-work", WORK_DIR, false),
            ("plue-tmp", "/tmp", false),
        ] {
            mounts.push(VolumeMount {
                name: volume.into(),
                mount_path: path.into(),
                read_only: Some(read_only),
                ..VolumeMount::default()
            });
        }
        let env = runner.env.get_or_insert_with(Vec::new);
        env.retain(|v| v.name != "TMPDIR" && v.name != NODE_NAME_ENV);
        env.push(k8s_openapi::api::core::v1::EnvVar {
            name: "TMPDIR".into(),
            value: Some("/tmp".into()),
            value_from: None,
        });
        // The runner tells the engine its node: when a runner of a node is lost (a hung
        // node), the others there must prove alive before they claim its step again.
        env.push(k8s_openapi::api::core::v1::EnvVar {
            name: NODE_NAME_ENV.into(),
            value: None,
            value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                    field_path: "spec.nodeName".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
        });
    }
    pod_labels.extend(labels(settings, &class.name, name));
    annotations.insert(TOKEN_ID.into(), token_id.to_string());
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(pod_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Writes `aliases` (the names a pod-confined class's runners need, resolved by the
/// engine: `super::names`) into `pod`'s `/etc/hosts`. The template's own were removed by
/// the hardening, so these are the only ones.
pub(super) fn with_host_aliases(pod: &mut Pod, aliases: Vec<HostAlias>) {
    if let Some(spec) = pod.spec.as_mut() {
        spec.host_aliases = (!aliases.is_empty()).then_some(aliases);
    }
}

/// The Secret holding runner `name`'s one-time token, owned by its pod (`pod_uid`).
pub(super) fn token_secret(
    settings: &KubernetesSettings,
    class: &str,
    name: &str,
    pod_uid: &str,
    token: &str,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels(settings, class, name)),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: name.to_string(),
                uid: pod_uid.to_string(),
                controller: Some(false),
                block_owner_deletion: Some(false),
            }]),
            ..ObjectMeta::default()
        },
        immutable: Some(true),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            "token".to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::parse;

    fn class(template: &str) -> (KubernetesSettings, RunnerClass) {
        let text = format!(
            "kubernetes: {{namespace: ci, engine_url: 'http://plue:8600'}}\nclasses:\n  - name: small\n    labels: {{size: small}}\n    max_runners: 2\n    allow_service_account: runner-sa\n    allow_runtime_classes: [gvisor]\n    template: {template}\n"
        );
        let mut file = parse(&text, "t").unwrap();
        (file.kubernetes, file.classes.remove(0))
    }

    #[test]
    fn a_pod_is_hardened_and_carries_its_labels_whatever_the_template() {
        let (settings, class) = class(
            "{metadata: {labels: {team: a, app.kubernetes.io/managed-by: other}}, spec: {runtimeClassName: gvisor, serviceAccountName: runner-sa, containers: [{name: runner, image: 'img:1', securityContext: {runAsUser: 1000}}]}}",
        );
        let pod = runner_pod(&settings, &class, "pool-abc-1", 42);
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY], "plue", "ours win over the template's");
        assert_eq!(labels[INSTANCE], "plue");
        assert_eq!(labels[CLASS], "small");
        assert_eq!(labels[RUNNER], "pool-abc-1");
        assert_eq!(labels["team"], "a");
        assert_eq!(pod.metadata.annotations.as_ref().unwrap()[TOKEN_ID], "42");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(spec.service_account_name.as_deref(), Some("runner-sa"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let psc = spec.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(spec.containers.len(), 1);
        let runner = &spec.containers[0];
        assert_eq!(runner.image.as_deref(), Some("img:1"));
        let sc = runner.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(1000), "the template's user");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let args = runner.args.as_ref().unwrap().join(" ");
        assert_eq!(runner.command.as_deref(), Some(&["plue".to_string()][..]));
        assert_eq!(
            runner.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        assert!(
            args.contains("--token-file /var/run/plue/token/token --work-dir /work --ephemeral"),
            "{args}"
        );
        assert!(args.ends_with("--labels size=small"), "{args}");
        let mounts: Vec<(&str, &str, Option<bool>)> = runner
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        assert!(mounts.contains(&("plue-token", TOKEN_DIR, Some(true))));
        assert!(mounts.contains(&("plue-work", WORK_DIR, Some(false))));
        let token_volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "plue-token")
            .unwrap();
        let secret = token_volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("pool-abc-1"));
        assert_eq!(secret.default_mode, Some(0o400));
    }

    /// Only a class whose file says `step_network: pod` gets the argument; its template
    /// cannot add it (command and args are Plue's: `config_file`'s checks).
    #[test]
    fn only_a_pod_confined_class_tells_its_runners_so() {
        let template = "{spec: {containers: [{name: runner, image: 'img:1'}]}}";
        let (settings, mut class) = class(template);
        let args = |class: &RunnerClass| {
            let pod = runner_pod(&settings, class, "pool-abc-1", 1);
            pod.spec.unwrap().containers[0].args.clone().unwrap()
        };
        assert!(!args(&class).iter().any(|a| a == NETWORK_CONFINED_BY_POD));
        class.step_network = StepNetwork::Pod;
        assert!(args(&class).iter().any(|a| a == NETWORK_CONFINED_BY_POD));
        // attack: a template of a `step` class that gives its runner the argument itself
        let text = "kubernetes: {namespace: ci, engine_url: 'http://plue:8600'}\nclasses:\n  - name: small\n    max_runners: 1\n    template: {spec: {containers: [{name: runner, image: i, args: [runner, --network-confined-by-pod]}]}}\n";
        let err = parse(text, "t").unwrap_err().to_string();
        assert!(err.contains("command and args are Plue's"), "{err}");
    }

    /// The runner reaches the engine through a proxy only when its class names one; a
    /// template's `HTTPS_PROXY` is the runner's environment, which its client ignores
    /// (`runner::engine_client`).
    #[test]
    fn a_class_engine_proxy_is_the_runners_argument() {
        let template = "{spec: {containers: [{name: runner, image: 'img:1', env: [{name: HTTPS_PROXY, value: 'http://evil:3128'}]}]}}";
        let (settings, mut class) = class(template);
        let args = |class: &RunnerClass| {
            let pod = runner_pod(&settings, class, "pool-abc-1", 1);
            pod.spec.unwrap().containers[0].args.clone().unwrap()
        };
        assert!(!args(&class).iter().any(|a| a == ENGINE_PROXY));
        class.engine_proxy = Some("http://egress.ci:3128".into());
        let args = args(&class);
        let at = args.iter().position(|a| a == ENGINE_PROXY).unwrap();
        assert_eq!(args[at + 1], "http://egress.ci:3128");
    }

    /// The cluster's egress proxy is the runner's argument only when the class names one.
    #[test]
    fn a_class_egress_proxy_is_the_runners_argument() {
        let (settings, mut class) = class("{spec: {containers: [{name: runner, image: i}]}}");
        let args = |class: &RunnerClass| {
            let pod = runner_pod(&settings, class, "pool-abc-1", 1);
            pod.spec.unwrap().containers[0].args.clone().unwrap()
        };
        assert!(!args(&class).iter().any(|a| a == EGRESS_PROXY));
        class.step_network = StepNetwork::Pod;
        class.egress_proxy = Some("http://plue-egress:3128".into());
        let args = args(&class);
        let at = args.iter().position(|a| a == EGRESS_PROXY).unwrap();
        assert_eq!(args[at + 1], "http://plue-egress:3128");
    }

    #[test]
    fn the_token_is_in_the_secret_only_and_the_secret_belongs_to_the_pod() {
        let (settings, class) = class("{spec: {containers: [{name: runner, image: i}]}}");
        let token = "one-time-token-value-0123456789";
        let pod = runner_pod(&settings, &class, "pool-abc-2", 7);
        let pod_json = serde_json::to_string(&pod).unwrap();
        assert!(!pod_json.contains(token));
        let secret = token_secret(&settings, "small", "pool-abc-2", "uid-1", token);
        assert_eq!(secret.data.as_ref().unwrap()["token"].0, token.as_bytes());
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Pod", "pool-abc-2", "uid-1")
        );
        assert_eq!(secret.immutable, Some(true));
    }
}
