//! The table of every weakening found so far, each refused naming its field, and the
//! hardening forced on a pod whatever its class says. Past 600 lines: it is the table, one
//! row per weakening, which belongs in one place.

use serde_json::{json, Value};

use super::*;
use crate::config_file::parse;
use crate::kubernetes::pod::runner_pod;

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
        (
            volume(json!({"ephemeral": {"volumeClaimTemplate": {"spec": {
                "volumeName": "host-data-pv", "storageClassName": "standard",
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}})),
            "spec.volumes[1].ephemeral.volumeClaimTemplate.spec.volumeName is not allowed (it binds an existing PersistentVolume",
        ),
        (
            volume(json!({"ephemeral": {"volumeClaimTemplate": {"spec": {
                "selector": {"matchLabels": {"app": "db"}},
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}})),
            "spec.volumes[1].ephemeral.volumeClaimTemplate.spec.selector is not allowed",
        ),
        (
            volume(json!({"ephemeral": {"volumeClaimTemplate": {"spec": {
                "storageClassName": "nfs-shared",
                "accessModes": ["ReadWriteOnce", "ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}}})),
            "spec.volumes[1].ephemeral.volumeClaimTemplate.spec.accessModes[1] must be ReadWriteOnce or ReadWriteOncePod",
        ),
        (
            volume(json!({"ephemeral": {"volumeClaimTemplate": {"spec": {
                "storageClassName": "",
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}})),
            "spec.volumes[1].ephemeral.volumeClaimTemplate.spec.storageClassName must not be empty",
        ),
        (
            spec(json!({"nodeName": "cp-1"})),
            "spec.nodeName is not allowed (runner pods are placed by nodeSelector and affinity, never pinned to a node), got \"cp-1\"",
        ),
        (
            spec(json!({"tolerations": [{"key": "gpu", "operator": "Exists"},
                {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]})),
            "spec.tolerations[1] is not allowed (runner pods never run on control-plane nodes)",
        ),
        (
            spec(json!({"tolerations": [{"key": "node-role.kubernetes.io/master", "operator": "Equal", "value": ""}]})),
            "spec.tolerations[0] is not allowed",
        ),
        (
            spec(json!({"tolerations": [{"operator": "Exists"}]})),
            "spec.tolerations[0] is not allowed",
        ),
        (
            spec(json!({"serviceAccountName": "plue"})),
            "spec.serviceAccountName is not allowed unless the class names it in allow_service_account (a service account can carry a cloud identity even without a token), got \"plue\"",
        ),
        (
            spec(json!({"serviceAccount": "plue"})),
            "spec.serviceAccount is not allowed unless the class names it in allow_service_account",
        ),
        (
            spec(json!({"runtimeClassName": "runc"})),
            "spec.runtimeClassName is not allowed unless the class lists it in allow_runtime_classes",
        ),
        (
            spec(json!({"hostAliases": [{"ip": "10.9.9.9", "hostnames": ["plue"]}]})),
            "spec.hostAliases is not allowed (names, the engine's included, resolve through the cluster's DNS)",
        ),
        (
            spec(json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["10.9.9.9"]}})),
            "spec.dnsPolicy must not be None",
        ),
        (
            spec(json!({"dnsConfig": {"searches": ["evil.example"]}})),
            "spec.dnsConfig is not allowed",
        ),
        (
            spec(json!({"resourceClaims": [{"name": "gpu", "resourceClaimName": "host-device"}]})),
            "spec.resourceClaims is not allowed (devices are not a runner pod's)",
        ),
        (
            runner(json!({"resources": {"claims": [{"name": "gpu"}]}})),
            "spec.containers[runner].resources.claims is not allowed",
        ),
        (
            template(json!({"annotations": {"run.oci.handler": "krun"}}), json!({}), json!({})),
            "metadata.annotations[\"run.oci.handler\"] is not allowed",
        ),
        (
            template(
                json!({"annotations": {"io.kubernetes.cri.untrusted-workload": "false"}}),
                json!({}),
                json!({}),
            ),
            "metadata.annotations[\"io.kubernetes.cri.untrusted-workload\"] is not allowed",
        ),
        (
            template(
                json!({"annotations": {"nvidia.cdi.k8s.io/gpu": "nvidia.com/gpu=all"}}),
                json!({}),
                json!({}),
            ),
            "metadata.annotations[\"nvidia.cdi.k8s.io/gpu\"] is not allowed",
        ),
        (
            spec(json!({"priorityClassName": "system-node-critical"})),
            "spec.priorityClassName must not be a system- class",
        ),
        (
            spec(json!({"priority": 2000001000})),
            "spec.priority is not allowed",
        ),
        (spec(json!({"hostUsers": true})), "spec.hostUsers must not be true"),
        (
            spec(json!({"overhead": {"cpu": "0"}})),
            "spec.overhead is not allowed",
        ),
        (
            spec(json!({"imagePullSecrets": [{"name": "plue"}]})),
            "spec.imagePullSecrets[0] is not allowed (pull Secrets need allow_image_pull_secrets), got Secret \"plue\"",
        ),
        (
            template(
                json!({"labels": {"app.kubernetes.io/component": "engine"}}),
                json!({}),
                json!({}),
            ),
            "metadata.labels[\"app.kubernetes.io/component\"] is not allowed (the chart's Services select",
        ),
        (
            template(json!({"labels": {"app.kubernetes.io/name": "plue"}}), json!({}), json!({})),
            "metadata.labels[\"app.kubernetes.io/name\"] is not allowed",
        ),
        (
            runner(json!({"livenessProbe": {"httpGet": {"host": "169.254.169.254", "port": 80, "path": "/"}}})),
            "spec.containers[runner].livenessProbe.httpGet.host is not allowed",
        ),
        (
            spec(json!({"initContainers": [{"name": "side", "image": "b", "restartPolicy": "Always",
                "lifecycle": {"preStop": {"tcpSocket": {"host": "10.0.0.1", "port": 6443}}}}]})),
            "spec.initContainers[side].lifecycle.preStop.tcpSocket.host is not allowed",
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
        let expected = format!("pool.yaml: classes[0].template: pool class \"gpu\": {expected}");
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
            "serviceAccount": "runner",
            "runtimeClassName": "gvisor",
            "imagePullSecrets": [{"name": "registry-pull"}],
            "priorityClassName": "ci-low",
            "hostUsers": false,
            "hostname": "runner", "subdomain": "runners", "setHostnameAsFQDN": true,
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"}],
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                "supplementalGroups": [1000],
                                "appArmorProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{"name": "fetch", "image": "busybox"}],
            "containers": [
                {"name": "runner", "image": "img:1",
                 "env": [{"name": "CA", "valueFrom": {"configMapKeyRef": {"name": "ca", "key": "pem"}}}],
                 "envFrom": [{"secretRef": {"name": "registry"}}],
                 "volumeMounts": [{"name": "certs", "mountPath": "/certs"}],
                 "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "id"]}},
                               "preStop": {"sleep": {"seconds": 1}}},
                 "readinessProbe": {"httpGet": {"port": 8080, "path": "/ready"}},
                 "startupProbe": {"tcpSocket": {"port": 8080}},
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
                    "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}},
                {"name": "fast", "ephemeral": {"volumeClaimTemplate": {"spec": {
                    "storageClassName": "local-ssd", "accessModes": ["ReadWriteOncePod"],
                    "resources": {"requests": {"storage": "1Gi"}}}}}}]
        }),
        json!({}),
    );
    let text = file(
        &template,
        "    allow_secret_volumes: [registry]\n    allow_config_map_volumes: [ca]\n\
         \x20   allow_image_pull_secrets: [registry-pull]\n    allow_runtime_classes: [gvisor, kata]\n\
         \x20   allow_service_account: runner\n",
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
    class.allow_image_pull_secrets.insert("registry".into());
    let weak = template(
        json!({"annotations": {
            "container.apparmor.security.beta.kubernetes.io/runner": "unconfined",
            "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
            "run.oci.handler": "krun", "io.kubernetes.cri.untrusted-workload": "false",
            "cdi.k8s.io/dev": "vendor.com/dev=all",
            "example.com/kept": "yes"},
            "labels": {"app.kubernetes.io/name": "plue", "app.kubernetes.io/component": "engine",
                       "team": "a"}}),
        json!({
            "nodeName": "cp-1", "serviceAccountName": "plue", "serviceAccount": "plue",
            "runtimeClassName": "runc", "hostUsers": true, "priority": 2000001000,
            "priorityClassName": "system-node-critical", "overhead": {"cpu": "0"},
            "hostAliases": [{"ip": "10.9.9.9", "hostnames": ["plue"]}],
            "dnsPolicy": "None", "dnsConfig": {"nameservers": ["10.9.9.9"]},
            "resourceClaims": [{"name": "gpu", "resourceClaimName": "host-device"}],
            "imagePullSecrets": [{"name": "plue"}, {"name": "registry"}],
            "tolerations": [{"operator": "Exists"},
                {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"},
                {"key": "dedicated", "operator": "Exists"}],
            "volumes": [{"name": "v", "ephemeral": {"volumeClaimTemplate": {"spec": {
                "volumeName": "host-data-pv", "storageClassName": "",
                "selector": {"matchLabels": {"app": "db"}},
                "dataSource": {"kind": "PersistentVolumeClaim", "name": "db"},
                "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}}}],
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
                "securityContext": {"privileged": true, "capabilities": {"add": ["ALL"]}}},
                {"name": "side", "image": "b", "restartPolicy": "Always",
                 "lifecycle": {"preStop": {"httpGet": {"host": "10.0.0.1", "port": 80}}}}],
        }),
        json!({
            "resources": {"claims": [{"name": "gpu"}]},
            "livenessProbe": {"tcpSocket": {"host": "169.254.169.254", "port": 80}},
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
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert!(
        labels
            .keys()
            .all(|k| !SELECTOR_LABELS.contains(&k.as_str())),
        "{labels:?}"
    );
    assert_eq!(labels["team"], "a");
    let pod = serde_json::to_value(&pod).unwrap();
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["shareProcessNamespace"], false);
    for absent in [
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "ephemeralContainers",
        "nodeName",
        "serviceAccountName",
        "serviceAccount",
        "runtimeClassName",
        "hostUsers",
        "priority",
        "priorityClassName",
        "overhead",
        "hostAliases",
        "dnsPolicy",
        "dnsConfig",
        "resourceClaims",
    ] {
        assert!(spec[absent].is_null(), "{absent}: {spec}");
    }
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "registry"}]));
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "dedicated", "operator": "Exists"}])
    );
    let claim = &spec["volumes"][0]["ephemeral"]["volumeClaimTemplate"]["spec"];
    assert_eq!(
        claim,
        &json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}})
    );
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
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
        assert!(c["resources"]["claims"].is_null(), "{c}");
        let text = c.to_string();
        assert!(!text.contains("\"host\""), "{c}");
    }
    let runner = containers.iter().find(|c| c["name"] == "runner").unwrap();
    assert_eq!(runner["securityContext"]["readOnlyRootFilesystem"], true);
}
