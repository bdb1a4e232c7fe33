//! The Kubernetes pool against the real `plue` binary. No cluster runs on these machines:
//! the Kubernetes API is testkit's local server (`testkit::kube`), reached through the
//! real kube-rs client over HTTP with `KUBECONFIG`, and its simulated kubelet runs each
//! runner pod's container as a real `plue runner` process.
//!
//! Why one file past ~600 lines: every test needs the same fake API server, simulated
//! kubelet and `plue serve` harness (`World` below) and they run one at a
//! time (`serial`); split, each file would rebuild that harness.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support;

use serde_json::{json, Value};
use testkit::kube::{FakeKube, Fault, Kubelet, KubeletConfig, Recorded};

use crate::support::{
    client, free_port, get_json, log_lines, serial, start_run, wait_final, wait_for,
    wait_succeeded, Engine, Sandbox, RUNNER_TOKEN,
};

const GOOD_CONFIG: &str = r#"
kubernetes:
  namespace: ci
  engine_url: http://plue.ci.svc:8600
classes:
  - name: small
    labels: {size: small}
    min_warm: 1
    max_runners: 4
    idle_timeout: 30s
    template:
      spec:
        containers:
          - name: runner
            image: registry.example/plue:1
            resources: {limits: {cpu: 1, memory: 512Mi}}
"#;

#[test]
fn check_config_accepts_a_valid_file_and_says_what_it_holds() {
    let sandbox = Sandbox::new("kube-check");
    let file = sandbox.write("pool.yaml", GOOD_CONFIG);
    let output = sandbox.check_pool_config(&file, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("valid: namespace ci, engine_url http://plue.ci.svc:8600"),
        "{stdout}"
    );
    assert!(
        stdout.contains("small: labels size=small, min_warm 1, max_runners 4, idle_timeout 30s, image registry.example/plue:1"),
        "{stdout}"
    );
    assert!(!sandbox.path(".plue").exists(), "checking opens no store");
}

#[test]
fn check_config_refuses_an_invalid_file_with_every_problem() {
    let sandbox = Sandbox::new("kube-check-bad");
    let bad = GOOD_CONFIG
        .replace("min_warm: 1", "min_warm: 9")
        .replace("namespace: ci", "namespace: Not_A_Name");
    let file = sandbox.write("pool.yaml", &bad);
    let output = sandbox.check_pool_config(&file, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr.contains("kubernetes.namespace: \"Not_A_Name\" is not a DNS label"),
        "{stderr}"
    );
    assert!(
        stderr.contains("classes[0].min_warm: must be at most max_runners (4), got 9"),
        "{stderr}"
    );
    let no_file = sandbox
        .plue(&["serve", "--pool", "kubernetes"])
        .output()
        .unwrap();
    assert_eq!(no_file.status.code(), Some(1), "{no_file:?}");
    assert!(String::from_utf8_lossy(&no_file.stderr)
        .contains("--pool kubernetes needs --pool-config FILE"));
    let missing = sandbox.check_pool_config(Path::new("/nonexistent/pool.yaml"), &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("reading the pool configuration /nonexistent/pool.yaml"));
}

/// Every way found to weaken a runner pod through a class's template (issue 30), as the
/// inside of one class's `template` (`spec: ...`, with `metadata: ...` when it matters),
/// and what its refusal must name. The unit tests in
/// `pool/kubernetes/hardening.rs` hold the full table; these go through the binary.
const WEAKENINGS: &[(&str, &str)] = &[
    (
        r#"spec: {volumes: [{name: t, projected: {sources: [{serviceAccountToken: {path: token}}]}}], containers: [{name: runner, image: i}]}"#,
        "spec.volumes[0].projected.sources[0].serviceAccountToken is not allowed",
    ),
    (
        r#"spec: {automountServiceAccountToken: true, containers: [{name: runner, image: i}]}"#,
        "spec.automountServiceAccountToken must not be true",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, securityContext: {capabilities: {drop: []}}}]}"#,
        "spec.containers[runner].securityContext.capabilities.drop must include ALL, got []",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, securityContext: {capabilities: {add: [SYS_PTRACE]}}}]}"#,
        "spec.containers[runner].securityContext.capabilities.add is not allowed",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, securityContext: {readOnlyRootFilesystem: false}}]}"#,
        "spec.containers[runner].securityContext.readOnlyRootFilesystem must stay true",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, securityContext: {privileged: true}}]}"#,
        "spec.containers[runner].securityContext.privileged must not be true",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, securityContext: {allowPrivilegeEscalation: true}}]}"#,
        "spec.containers[runner].securityContext.allowPrivilegeEscalation must stay false",
    ),
    (
        r#"spec: {securityContext: {seccompProfile: {type: Unconfined}}, containers: [{name: runner, image: i}]}"#,
        "spec.securityContext.seccompProfile.type must be RuntimeDefault, got \"Unconfined\"",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, securityContext: {seccompProfile: {type: Unconfined}}}]}"#,
        "spec.containers[runner].securityContext.seccompProfile.type must be RuntimeDefault",
    ),
    (
        r#"spec: {securityContext: {appArmorProfile: {type: Unconfined}}, containers: [{name: runner, image: i}]}"#,
        "spec.securityContext.appArmorProfile is not allowed",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, securityContext: {seLinuxOptions: {type: spc_t}}}]}"#,
        "spec.containers[runner].securityContext.seLinuxOptions is not allowed",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, securityContext: {procMount: Unmasked}}]}"#,
        "spec.containers[runner].securityContext.procMount must be Default, got \"Unmasked\"",
    ),
    (
        r#"spec: {volumes: [{name: scratch, emptyDir: {}}, {name: creds, secret: {secretName: plue}}], containers: [{name: runner, image: i}]}"#,
        "spec.volumes[1].secret is not allowed (Secret volumes need allow_secret_volumes)",
    ),
    (
        r#"spec: {volumes: [{name: c, configMap: {name: plue-pool}}], containers: [{name: runner, image: i}]}"#,
        "spec.volumes[0].configMap is not allowed (ConfigMap volumes need allow_config_map_volumes)",
    ),
    (
        r#"spec: {volumes: [{name: h, hostPath: {path: /}}], containers: [{name: runner, image: i}]}"#,
        "spec.volumes[0].hostPath is not allowed",
    ),
    (
        r#"spec: {shareProcessNamespace: true, containers: [{name: runner, image: i}]}"#,
        "spec.shareProcessNamespace must not be true",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, ports: [{containerPort: 8080, hostPort: 8080}]}]}"#,
        "spec.containers[runner].ports[0].hostPort is not allowed",
    ),
    (
        r#"spec: {hostPID: true, containers: [{name: runner, image: i}]}"#,
        "spec.hostPID must not be true",
    ),
    (
        r#"spec: {securityContext: {runAsGroup: 0}, containers: [{name: runner, image: i}]}"#,
        "spec.securityContext.runAsGroup must not be 0 (the root group)",
    ),
    (
        r#"spec: {securityContext: {supplementalGroups: [0]}, containers: [{name: runner, image: i}]}"#,
        "spec.securityContext.supplementalGroups[0] must not be 0",
    ),
    (
        r#"spec: {securityContext: {fsGroup: 0}, containers: [{name: runner, image: i}]}"#,
        "spec.securityContext.fsGroup must not be 0",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, securityContext: {runAsUser: 0}}]}"#,
        "spec.containers[runner].securityContext.runAsUser must not be 0 (root)",
    ),
    (
        r#"spec: {securityContext: {sysctls: [{name: kernel.shm_rmid_forced, value: "0"}]}, containers: [{name: runner, image: i}]}"#,
        "spec.securityContext.sysctls is not allowed",
    ),
    (
        r#"spec: {initContainers: [{name: setup, image: b, securityContext: {privileged: true}}], containers: [{name: runner, image: i}]}"#,
        "spec.initContainers[setup].securityContext.privileged must not be true",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, envFrom: [{secretRef: {name: plue}}]}]}"#,
        "spec.containers[runner].envFrom[0].secretRef is not allowed",
    ),
    (
        r#"spec: {volumes: [{name: v, ephemeral: {volumeClaimTemplate: {spec: {volumeName: host-data-pv, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}}}], containers: [{name: runner, image: i, volumeMounts: [{name: v, mountPath: /x}]}]}"#,
        "spec.volumes[0].ephemeral.volumeClaimTemplate.spec.volumeName is not allowed (it binds an existing PersistentVolume",
    ),
    (
        r#"spec: {volumes: [{name: v, ephemeral: {volumeClaimTemplate: {spec: {selector: {matchLabels: {app: db}}, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}}}], containers: [{name: runner, image: i}]}"#,
        "spec.volumes[0].ephemeral.volumeClaimTemplate.spec.selector is not allowed",
    ),
    (
        r#"spec: {volumes: [{name: v, ephemeral: {volumeClaimTemplate: {spec: {storageClassName: nfs-shared, accessModes: [ReadWriteMany], resources: {requests: {storage: 1Gi}}}}}}], containers: [{name: runner, image: i}]}"#,
        "spec.volumes[0].ephemeral.volumeClaimTemplate.spec.accessModes[0] must be ReadWriteOnce or ReadWriteOncePod",
    ),
    (
        r#"spec: {volumes: [{name: v, ephemeral: {volumeClaimTemplate: {spec: {storageClassName: '', accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}}}], containers: [{name: runner, image: i}]}"#,
        "spec.volumes[0].ephemeral.volumeClaimTemplate.spec.storageClassName must not be empty",
    ),
    (
        r#"spec: {nodeName: cp-1, containers: [{name: runner, image: i}]}"#,
        "spec.nodeName is not allowed",
    ),
    (
        r#"spec: {tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}], containers: [{name: runner, image: i}]}"#,
        "spec.tolerations[0] is not allowed (runner pods never run on control-plane nodes)",
    ),
    (
        r#"spec: {serviceAccountName: plue, containers: [{name: runner, image: i}]}"#,
        "spec.serviceAccountName is not allowed unless the class names it in allow_service_account",
    ),
    (
        r#"spec: {serviceAccount: plue, containers: [{name: runner, image: i}]}"#,
        "spec.serviceAccount is not allowed unless the class names it in allow_service_account",
    ),
    (
        r#"spec: {runtimeClassName: runc, containers: [{name: runner, image: i}]}"#,
        "spec.runtimeClassName is not allowed unless the class lists it in allow_runtime_classes",
    ),
    (
        r#"spec: {hostAliases: [{ip: 10.9.9.9, hostnames: [plue.ci.svc]}], containers: [{name: runner, image: i}]}"#,
        "spec.hostAliases is not allowed",
    ),
    (
        r#"spec: {dnsPolicy: None, containers: [{name: runner, image: i}]}"#,
        "spec.dnsPolicy must not be None",
    ),
    (
        r#"spec: {dnsConfig: {nameservers: [10.9.9.9]}, containers: [{name: runner, image: i}]}"#,
        "spec.dnsConfig is not allowed",
    ),
    (
        r#"spec: {resourceClaims: [{name: gpu, resourceClaimName: host-device}], containers: [{name: runner, image: i}]}"#,
        "spec.resourceClaims is not allowed",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, resources: {claims: [{name: gpu}]}}]}"#,
        "spec.containers[runner].resources.claims is not allowed",
    ),
    (
        r#"metadata: {annotations: {run.oci.handler: krun}}, spec: {containers: [{name: runner, image: i}]}"#,
        "metadata.annotations[\"run.oci.handler\"] is not allowed",
    ),
    (
        r#"metadata: {annotations: {io.kubernetes.cri.untrusted-workload: 'false'}}, spec: {containers: [{name: runner, image: i}]}"#,
        "metadata.annotations[\"io.kubernetes.cri.untrusted-workload\"] is not allowed",
    ),
    (
        r#"spec: {priorityClassName: system-node-critical, containers: [{name: runner, image: i}]}"#,
        "spec.priorityClassName must not be a system- class",
    ),
    (
        r#"spec: {hostUsers: true, containers: [{name: runner, image: i}]}"#,
        "spec.hostUsers must not be true",
    ),
    (
        r#"spec: {overhead: {cpu: '0'}, containers: [{name: runner, image: i}]}"#,
        "spec.overhead is not allowed",
    ),
    (
        r#"spec: {imagePullSecrets: [{name: plue}], containers: [{name: runner, image: i}]}"#,
        "spec.imagePullSecrets[0] is not allowed (pull Secrets need allow_image_pull_secrets), got Secret \"plue\"",
    ),
    (
        r#"metadata: {labels: {app.kubernetes.io/component: engine}}, spec: {containers: [{name: runner, image: i}]}"#,
        "metadata.labels[\"app.kubernetes.io/component\"] is not allowed",
    ),
    (
        r#"spec: {containers: [{name: runner, image: i, livenessProbe: {httpGet: {host: 169.254.169.254, port: 80}}}]}"#,
        "spec.containers[runner].livenessProbe.httpGet.host is not allowed",
    ),
];

/// One pool file with a class per weakening (`w0`, `w1`, …, each its own labels).
fn weakening_classes() -> String {
    let mut text = String::from(
        "kubernetes: {namespace: ci, engine_url: http://plue.ci.svc:8600}\nclasses:\n",
    );
    for (i, (template, _)) in WEAKENINGS.iter().enumerate() {
        text.push_str(&format!(
            "  - {{name: w{i}, labels: {{case: \"{i}\"}}, max_runners: 1, template: {{{template}}}}}\n"
        ));
    }
    text
}

#[test]
fn check_config_refuses_every_weakening_template_naming_its_class_and_field() {
    let sandbox = Sandbox::new("kube-check-weak");
    let file = sandbox.write("pool.yaml", &weakening_classes());
    let output = sandbox.check_pool_config(&file, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    for (i, (template, expected)) in WEAKENINGS.iter().enumerate() {
        let line = format!("classes[{i}].template: pool class \"w{i}\": {expected}");
        assert!(
            stderr.contains(&line),
            "{template}\nwanted {line}\nin:\n{stderr}"
        );
    }
    // One problem per weakening, each on its own line: nothing else was found wrong.
    let problems = stderr
        .lines()
        .filter(|l| l.contains(": pool class \"w"))
        .count();
    assert_eq!(problems, WEAKENINGS.len(), "{stderr}");

    // An allow-listed Secret and ConfigMap pass (and a runner token's name never does).
    let allowed = sandbox.write(
        "allowed.yaml",
        "kubernetes: {namespace: ci, engine_url: http://plue.ci.svc:8600}\nclasses:\n  - name: gpu\n    max_runners: 1\n\
         \x20   allow_secret_volumes: [registry-ca]\n    allow_config_map_volumes: [tools]\n\
         \x20   allow_image_pull_secrets: [registry-pull]\n    allow_runtime_classes: [gvisor]\n\
         \x20   allow_service_account: ci-runner\n\
         \x20   template: {spec: {runtimeClassName: gvisor, serviceAccountName: ci-runner, imagePullSecrets: [{name: registry-pull}], volumes: [{name: ca, secret: {secretName: registry-ca}}, {name: t, configMap: {name: tools}}], containers: [{name: runner, image: i, volumeMounts: [{name: ca, mountPath: /ca}]}]}}\n",
    );
    let output = sandbox.check_pool_config(&allowed, &[]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(", allow_secret_volumes [registry-ca], allow_config_map_volumes [tools], allow_image_pull_secrets [registry-pull], allow_runtime_classes [gvisor], allow_service_account ci-runner"),
        "{stdout}"
    );
}

/// The engine refuses to start with such a file: not one pod reaches the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_weakening_template_before_creating_any_pod() {
    let world = World::new("kube-serve-weak").await;
    let extra = "  - name: gpu\n    labels: {gpu: \"yes\"}\n    max_runners: 1\n    min_warm: 1\n\
                 \x20   template: {spec: {volumes: [{name: scratch, emptyDir: {}}, {name: creds, secret: {secretName: plue}}], containers: [{name: runner, image: \"registry.example/plue:test\"}]}}\n";
    let stderr = serve_refused(&world, &world.config(1, 2, IMAGE, extra));
    assert!(
        stderr.contains("pool class \"gpu\": spec.volumes[1].secret is not allowed (Secret volumes need allow_secret_volumes), got secretName \"plue\""),
        "{stderr}"
    );
}

/// A class with an egress proxy and an engine without its token: `plue serve` refuses to
/// start (the class's allow-list steps would be routed to it and fail for want of a grant),
/// before creating any pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_class_with_an_egress_proxy_without_the_proxys_token() {
    let world = World::new("kube-serve-egress").await;
    let extra = "  - name: agents\n    labels: {role: agent}\n    max_runners: 1\n    min_warm: 1\n\
                 \x20   step_network: pod\n    egress_proxy: http://plue-egress:3128\n\
                 \x20   template: {spec: {containers: [{name: runner, image: \"registry.example/plue:test\"}]}}\n";
    let stderr = serve_refused(&world, &world.config(1, 2, IMAGE, extra));
    assert!(
        stderr.contains("the pool class 'agents' has an egress_proxy: give the proxy's token with --egress-proxy-token-file"),
        "{stderr}"
    );
}

/// Starts `plue serve` with `pool`, which it must refuse before creating any pod; its stderr.
fn serve_refused(world: &World, pool: &str) -> String {
    let output = world
        .cluster
        .serve_command(&world.sandbox, "engine", world.port, pool, &[])
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let requests = world.cluster.kube.requests();
    assert_eq!(writes(&requests, "pods", "POST"), 0, "{requests:?}");
    assert!(pods(&world.cluster).is_empty());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The image name the simulated kubelet maps to the `plue` binary under test.
const IMAGE: &str = "registry.example/plue:test";
/// An image whose entrypoint says why on stderr and exits 1 at once, until the file
/// `repaired` exists in its sandbox; then it is the runner under test.
const CRASHING_IMAGE: &str = "registry.example/crashing:1";

/// An image whose runner holds no `CAP_SYS_ADMIN`, as in a hardened pod (these tests'
/// pods are processes of the test's user, often root): it cannot make network namespaces.
const CAPLESS_IMAGE: &str = "registry.example/capless:1";

/// Writes the program behind [`CAPLESS_IMAGE`].
fn capless_runner(sandbox: &Sandbox) {
    use std::os::unix::fs::PermissionsExt;
    let script = sandbox.write(
        "capless-runner",
        &format!(
            "#!/bin/sh\nexec setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin -- '{plue}' \"$@\"\n",
            plue = env!("CARGO_BIN_EXE_plue"),
        ),
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Writes the program behind [`CRASHING_IMAGE`]; returns the file that repairs it.
fn crashing_runner(sandbox: &Sandbox) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let repaired = sandbox.path("repaired");
    let script = sandbox.write(
        "crashing-runner",
        &format!(
            "#!/bin/sh
if [ -e '{repaired}' ]; then exec '{plue}' \"$@\"; fi
\
             echo 'plue runner: starting' >&2
\
             echo 'Error: the work directory /work cannot be reached by the step users' >&2
\
             exit 1
",
            repaired = repaired.display(),
            plue = env!("CARGO_BIN_EXE_plue"),
        ),
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    repaired
}
const NAMESPACE: &str = "ci";

/// A fake API server with its kubelet, and the kubeconfig that reaches it.
struct Cluster {
    kube: FakeKube,
    kubelet: Arc<Kubelet>,
    kubeconfig: PathBuf,
}

fn cluster(sandbox: &Sandbox) -> Cluster {
    let mut kube = FakeKube::start_with(Duration::from_millis(200)).expect("fake API server");
    let kubeconfig = sandbox.path("kubeconfig");
    kube.kubeconfig(&kubeconfig, NAMESPACE).unwrap();
    let mark = sandbox.path("x");
    let mark = mark.parent().unwrap().to_str().unwrap().to_string();
    let kubelet = kube
        .attach_kubelet(KubeletConfig {
            images: HashMap::from([
                (IMAGE.to_string(), PathBuf::from(env!("CARGO_BIN_EXE_plue"))),
                // Not a runner: a pod of Plue's labels that no pool started.
                (
                    "registry.example/sleep:1".to_string(),
                    PathBuf::from("/bin/sleep"),
                ),
                // A runner whose entrypoint fails at once until the test repairs it
                // ([`crashing_runner`]).
                (CRASHING_IMAGE.to_string(), sandbox.path("crashing-runner")),
                (CAPLESS_IMAGE.to_string(), sandbox.path("capless-runner")),
            ]),
            base_env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("LANG".into(), "C.UTF-8".into()),
                // Marks the pods' processes as this sandbox's (cleaned up with it).
                ("PLUE_TEST_SANDBOX".into(), mark),
            ],
        })
        .unwrap();
    Cluster {
        kube,
        kubelet,
        kubeconfig,
    }
}

/// One test's world: a fake cluster in a sandbox, the port and URL its engine listens on,
/// and the binary-wide lock (fields drop in this order: the cluster, the sandbox and its
/// processes, then the lock).
struct World {
    cluster: Cluster,
    sandbox: Sandbox,
    port: u16,
    url: String,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl World {
    async fn new(name: &str) -> World {
        let serial = serial().await;
        let sandbox = Sandbox::new(name);
        let port = free_port();
        World {
            cluster: cluster(&sandbox),
            sandbox,
            port,
            url: format!("http://127.0.0.1:{port}"),
            _serial: serial,
        }
    }

    /// [`config`] for an engine on this world's URL.
    fn config(&self, min_warm: usize, max_runners: usize, image: &str, extra: &str) -> String {
        config(&self.url, min_warm, max_runners, image, extra)
    }

    /// `plue serve` named `engine` on this world's port with the pool file `config`.
    async fn serve(&self, config: &str) -> Engine {
        self.serve_with(config, &[]).await
    }

    /// [`World::serve`] with more arguments.
    async fn serve_with(&self, config: &str, extra: &[&str]) -> Engine {
        let (sandbox, cluster) = (&self.sandbox, &self.cluster);
        serve_with(sandbox, cluster, "engine", self.port, config, extra).await
    }

    /// [`run`] of `steps` on `engine` in this world's sandbox; the run's id.
    async fn run(&self, engine: &Engine, name: &str, steps: &[String]) -> i64 {
        run(&self.sandbox, &engine.url, name, steps).await
    }

    /// [`finish`] in this world's sandbox.
    async fn finish(&self, engine: &Engine, name: &str, steps: &[String], secs: u64) -> Value {
        finish(&self.sandbox, engine, name, steps, secs).await
    }

    /// Asserts that the run `done` succeeded, showing the processes' stderr if not.
    fn assert_succeeded(&self, done: &Value) {
        succeeded(&self.sandbox, done);
    }

    /// How many pods were created so far (`POST`s of pods, watches aside).
    fn created_pods(&self) -> usize {
        created_pods(&self.cluster)
    }
}

/// [`run`], waited for until it is final (at most `secs` seconds); the run.
async fn finish(
    sandbox: &Sandbox,
    engine: &Engine,
    name: &str,
    steps: &[String],
    secs: u64,
) -> Value {
    let run_id = run(sandbox, &engine.url, name, steps).await;
    wait_final(&client(), &engine.url, run_id, Duration::from_secs(secs)).await
}

/// Asserts that the run `done` succeeded, showing `sandbox`'s stderr if not.
fn succeeded(sandbox: &Sandbox, done: &Value) {
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\n{}",
        sandbox.diagnostics()
    );
}

/// How many pods were created in `cluster` so far.
fn created_pods(cluster: &Cluster) -> usize {
    writes(&cluster.kube.requests(), "pods", "POST")
}

/// A `bash` step `id` running `command` on the class `small`.
fn small(id: &str, command: &str) -> String {
    format!("Step.bash('{id}', '{command}', runner={{'size': 'small'}})")
}

/// A pool configuration with one class `small` ({size: small}) plus `extra` classes.
fn config(engine: &str, min_warm: usize, max_runners: usize, image: &str, extra: &str) -> String {
    format!(
        "kubernetes:\n  namespace: {NAMESPACE}\n  engine_url: {engine}\n  start_timeout: 20s\n  lease_duration: 2s\n\
         classes:\n  - name: small\n    labels: {{size: small}}\n    min_warm: {min_warm}\n    max_runners: {max_runners}\n    idle_timeout: 60s\n\
         \x20   template:\n      spec:\n        containers: [{{name: runner, image: \"{image}\"}}]\n{extra}"
    )
}

/// `plue serve --pool kubernetes --pool-config FILE` with `KUBECONFIG` at the fake server.
async fn serve(
    sandbox: &Sandbox,
    cluster: &Cluster,
    name: &str,
    port: u16,
    config: &str,
) -> Engine {
    serve_with(sandbox, cluster, name, port, config, &[]).await
}

/// [`serve`] with more arguments.
async fn serve_with(
    sandbox: &Sandbox,
    cluster: &Cluster,
    name: &str,
    port: u16,
    config: &str,
    extra: &[&str],
) -> Engine {
    let command = cluster.serve_command(sandbox, name, port, config, extra);
    let pid = sandbox.spawn(name, command);
    let url = format!("http://127.0.0.1:{port}");
    let http = client();
    wait_for(
        Duration::from_secs(30),
        &format!("{name} to answer /healthz"),
        || async {
            assert!(
                !sandbox.exited(pid),
                "{name} exited\n{}",
                sandbox.diagnostics()
            );
            let up = http
                .get(format!("{url}/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            up.then_some(())
        },
    )
    .await;
    Engine { url, pid }
}

impl Cluster {
    /// The command of [`serve_with`]: `plue serve` named `name` on `port` with the pool file
    /// `config` (written to `NAME-pool.yaml`) and `KUBECONFIG` at this cluster, plus `extra`.
    fn serve_command(
        &self,
        sandbox: &Sandbox,
        name: &str,
        port: u16,
        config: &str,
        extra: &[&str],
    ) -> std::process::Command {
        let file = sandbox.write(&format!("{name}-pool.yaml"), config);
        let listen = format!("127.0.0.1:{port}");
        let root = sandbox.path("x");
        let root = root.parent().unwrap().to_str().unwrap().to_string();
        // Engines sharing a PostgreSQL database keep their own data directories.
        let shared_db = extra.contains(&"--database-url");
        let data = sandbox.path(if shared_db { name } else { "data" });
        let mut command = sandbox.plue(&[
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().unwrap(),
            "--local-workflows",
            &root,
            "--pool",
            "kubernetes",
            "--pool-config",
            file.to_str().unwrap(),
            "--runner-token",
            RUNNER_TOKEN,
        ]);
        command.args(extra);
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "engine=info,kube=warn");
        command
    }
}

/// `Some` once the pod `name` is gone from `cluster`.
fn pod_gone(cluster: &Cluster, name: &str) -> Option<()> {
    cluster
        .kube
        .object("pods", NAMESPACE, name)
        .is_none()
        .then_some(())
}

fn pods(cluster: &Cluster) -> Vec<Value> {
    cluster.kube.objects("pods", NAMESPACE)
}

/// Pods that run or may still run a runner: not finished, not being deleted.
fn live_pods(cluster: &Cluster) -> usize {
    pods(cluster)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .count()
}

fn pod_names(cluster: &Cluster) -> Vec<String> {
    pods(cluster)
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Names of runners in `state` (`idle`, `busy`).
async fn runners_in(engine: &str, state: &str) -> Vec<String> {
    let runners = get_json(&client(), &format!("{engine}/api/runners")).await;
    runners
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == state)
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect()
}

async fn wait_idle(engine: &str, n: usize) -> Vec<String> {
    wait_for(
        Duration::from_secs(60),
        &format!("{n} idle pod runners"),
        || async {
            let idle = runners_in(engine, "idle").await;
            (idle.len() >= n).then_some(idle)
        },
    )
    .await
}

fn workflow(steps: &[String]) -> String {
    let mut source = String::from(
        "def workflow():\n    return Plan(name='kube', triggers=[Trigger.manual()], steps=[\n",
    );
    for step in steps {
        source.push_str(&format!("        {step},\n"));
    }
    source.push_str("    ])\n");
    source
}

async fn run(sandbox: &Sandbox, engine: &str, name: &str, steps: &[String]) -> i64 {
    let file = sandbox.write(&format!("{name}.plue.py"), &workflow(steps));
    let workspace = sandbox.path(&format!("ws-{name}"));
    std::fs::create_dir_all(&workspace).unwrap();
    start_run(&client(), engine, &file, &workspace).await
}

/// The writes of `requests` but those of Leases (leader election).
fn writes_but_leases(requests: &[Recorded]) -> usize {
    requests
        .iter()
        .filter(|r| r.is_write() && r.resource.as_deref() != Some("coordination.k8s.io/leases"))
        .count()
}

fn writes(requests: &[Recorded], resource: &str, method: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.resource.as_deref() == Some(resource) && r.method == method && !r.watch)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_runs_on_a_warm_pod_whose_token_only_its_secret_holds() {
    let world = World::new("kube-e2e").await;
    let cluster = &world.cluster;
    let engine = world.serve(&world.config(1, 2, IMAGE, "")).await;
    let warm = wait_idle(&engine.url, 1).await;
    assert_eq!(
        pod_names(cluster),
        warm,
        "the warm pod is the registered runner"
    );
    // `/api/pool`'s totals are the classes' sums (regression: they stayed 0 while the
    // class held its warm pod, so a dashboard reading the totals saw an empty pool).
    let shown = wait_for(
        Duration::from_secs(20),
        "the class's warm pod in /api/pool",
        || async {
            let shown = get_json(&client(), &format!("{}/api/pool", engine.url)).await;
            (shown["classes"][0]["warm"] == 1).then_some(shown)
        },
    )
    .await;
    for key in [
        "warm",
        "busy",
        "starting",
        "min_warm",
        "max_runners",
        "queued",
    ] {
        assert_eq!(shown[key], shown["classes"][0][key], "{key}: {shown}");
    }
    assert_eq!(
        (shown["warm"].as_u64(), shown["max_runners"].as_u64()),
        (Some(1), Some(2)),
        "{shown}"
    );

    // The pod as the cluster holds it: hardened, labelled, the token nowhere but its Secret.
    let pod = cluster.kube.object("pods", NAMESPACE, &warm[0]).unwrap();
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "plue");
    assert_eq!(labels["app.kubernetes.io/instance"], "plue");
    assert_eq!(labels["plue.dev/class"], "small");
    assert_eq!(labels["plue.dev/runner"], warm[0].as_str());
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    // The forced hardening, as created: seccomp at pod and container level, nothing
    // privileged, no profile override, no host port, no token.
    let runtime_default = json!({"type": "RuntimeDefault"});
    assert_eq!(
        pod["spec"]["securityContext"]["seccompProfile"],
        runtime_default
    );
    assert_eq!(
        container["securityContext"]["seccompProfile"],
        runtime_default
    );
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["privileged"], false);
    assert_eq!(pod["spec"]["shareProcessNamespace"], false);
    for absent in [
        "appArmorProfile",
        "seLinuxOptions",
        "procMount",
        "runAsUser",
    ] {
        assert!(
            container["securityContext"][absent].is_null(),
            "{absent}: {pod}"
        );
    }
    for absent in ["appArmorProfile", "seLinuxOptions", "sysctls"] {
        assert!(
            pod["spec"]["securityContext"][absent].is_null(),
            "{absent}: {pod}"
        );
    }
    for absent in ["hostNetwork", "hostPID", "hostIPC", "ephemeralContainers"] {
        assert!(pod["spec"][absent].is_null(), "{absent}: {pod}");
    }
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .filter(|v| !v["secret"].is_null())
            .all(|v| v["secret"]["secretName"] == warm[0].as_str()),
        "the only Secret volume is the pod's own token: {volumes:?}"
    );
    assert!(volumes
        .iter()
        .all(|v| v["projected"].is_null() && v["hostPath"].is_null()));
    let secret = cluster.kube.object("secrets", NAMESPACE, &warm[0]).unwrap();
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        pod["metadata"]["uid"]
    );
    let token_b64 = secret["data"]["token"].as_str().unwrap().to_string();
    let pod_text = pod.to_string();
    assert!(!pod_text.contains(&token_b64));
    // No variable is read from a Secret; the one reference is the node's name, which the
    // runner tells the engine (a lost runner's node-mates must prove alive).
    let node_name = json!({"fieldRef": {"fieldPath": "spec.nodeName"}});
    let env = container["env"].as_array().cloned().unwrap_or_default();
    assert!(env
        .iter()
        .all(|v| v["valueFrom"].is_null() || v["valueFrom"] == node_name));
    assert!(env
        .iter()
        .any(|v| v["name"] == "PLUE_NODE_NAME" && v["valueFrom"] == node_name));

    let started = Instant::now();
    let run_id = world
        .run(&engine, "one", &[small("hello", "echo hello from a pod")])
        .await;
    let done = wait_final(&client(), &engine.url, run_id, Duration::from_secs(60)).await;
    world.assert_succeeded(&done);
    let step = support::step(&done, "hello");
    let claim_ms = step["started_at"].as_i64().unwrap() - done["created_at"].as_i64().unwrap();
    eprintln!("claim latency (run created -> step started on the warm pod): {claim_ms} ms; whole run {:?}", started.elapsed());
    let lines = support::log_lines(&client(), &engine.url, run_id, "hello")
        .await
        .unwrap();
    assert!(
        lines.iter().any(|l| l["text"] == "hello from a pod"),
        "{lines:?}"
    );

    // The pod took its one step and went, with its Secret; another keeps min_warm.
    wait_for(
        Duration::from_secs(30),
        "the used pod to go and a new one to be warm",
        || async {
            let names = pod_names(cluster);
            let idle = runners_in(&engine.url, "idle").await;
            (!names.contains(&warm[0]) && names.len() == 1 && idle == names).then_some(())
        },
    )
    .await;
    assert!(cluster
        .kube
        .object("secrets", NAMESPACE, &warm[0])
        .is_none());
    let requests = cluster.kube.requests();
    eprintln!(
        "API requests: {:?}",
        testkit::kube::request_counts(&requests)
    );
    assert_eq!(
        writes(&requests, "pods", "POST"),
        2,
        "one pod per runner, no duplicates"
    );
    assert_eq!(writes(&requests, "secrets", "POST"), 2);
    // Deleted by the pool itself, not left to an API server's garbage collection.
    assert!(writes(&requests, "secrets", "DELETE") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_scales_to_max_runners_and_never_above() {
    const STEPS: usize = 50;
    const MAX: usize = 20;
    let world = World::new("kube-burst").await;
    let (sandbox, cluster) = (&world.sandbox, &world.cluster);
    let engine = world.serve(&world.config(0, MAX, IMAGE, "")).await;
    let steps: Vec<String> = (0..STEPS)
        .map(|i| format!("Step.bash('s{i}', 'echo step {i}', runner={{'size': 'small'}})"))
        .collect();
    let started = Instant::now();
    let run_id = world.run(&engine, "burst", &steps).await;
    let mut most = 0;
    let done = loop {
        most = most.max(live_pods(cluster));
        if let Some(run) = support::run_view(&client(), &engine.url, run_id).await {
            if matches!(run["status"].as_str(), Some("succeeded" | "failed")) {
                break run;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the burst did not finish\n{}",
            sandbox.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(most <= MAX, "{most} pods at once, max_runners is {MAX}");
    assert!(most >= 2, "the pool grew under demand ({most})");
    let requests = cluster.kube.requests();
    let created = writes(&requests, "pods", "POST");
    let all_writes = writes_but_leases(&requests);
    eprintln!(
        "burst of {STEPS} steps, max_runners {MAX}: converged in {:?}, {created} pods, {:.2} API writes per step (leases aside)",
        started.elapsed(),
        all_writes as f64 / STEPS as f64
    );
    assert!(created <= STEPS + MAX, "{created} pods for {STEPS} steps");
    let events = cluster.kube.objects("events", NAMESPACE);
    assert!(
        events.is_empty(),
        "pods that did their step are no failures: {events:?}"
    );
}

/// Asserts that the step `long` of the run `done` failed for a reason starting `expected`.
fn lost_its_runner(done: &Value, expected: &str) {
    let reason = failed_reason(done, "long");
    assert!(
        reason.starts_with(expected),
        "expected {expected:?}: {done}"
    );
}

/// Asserts that the step `id` of the run `done` failed; its reason.
fn failed_reason<'a>(done: &'a Value, id: &str) -> &'a str {
    let step = support::step(done, id);
    assert_eq!(step["status"], "failed", "{done:#}");
    step["reason"].as_str().unwrap_or_default()
}

/// Waits until `engine` has a busy runner and returns its name (the pod running the step).
async fn busy_runner(engine: &str) -> String {
    wait_for(Duration::from_secs(60), "a busy pod runner", || async {
        runners_in(engine, "busy").await.into_iter().next()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_dies_mid_step_fails_its_attempt_within_seconds() {
    let world = World::new("kube-lost").await;
    let cluster = &world.cluster;
    let engine = world.serve(&world.config(1, 1, IMAGE, "")).await;
    type Kill = Box<dyn Fn(&Cluster, &str) + Send>;
    let kills: Vec<(&str, Kill)> = vec![
        (
            "OOMKilled",
            Box::new(|c: &Cluster, pod: &str| c.kubelet.oom_kill(NAMESPACE, pod)),
        ),
        (
            "Evicted",
            Box::new(|c: &Cluster, pod: &str| c.kubelet.evict(NAMESPACE, pod)),
        ),
        (
            "deleted",
            Box::new(|c: &Cluster, pod: &str| c.kube.delete_now("pods", NAMESPACE, pod).unwrap()),
        ),
        (
            "NodeLost",
            Box::new(|c: &Cluster, _: &str| c.kubelet.kill_node()),
        ),
    ];
    for (i, (reason, kill)) in kills.iter().enumerate() {
        let name = format!("lost{i}");
        let run_id = world
            .run(&engine, &name, &[small("long", "sleep 60")])
            .await;
        let pod = busy_runner(&engine.url).await;
        let killed = Instant::now();
        kill(cluster, &pod);
        let done = wait_final(&client(), &engine.url, run_id, Duration::from_secs(20)).await;
        let after = killed.elapsed();
        lost_its_runner(&done, &format!("runner lost: pod {pod} {reason}"));
        eprintln!("{reason}: the attempt failed {after:?} after its pod died");
        assert!(after < Duration::from_secs(5), "{reason}: {after:?}");
        if *reason == "NodeLost" {
            cluster.kubelet.revive_node();
        }
        wait_idle(&engine.url, 1).await;
    }
    // Every failure is a Kubernetes Event on its pod.
    let events = cluster.kube.objects("events", NAMESPACE);
    for reason in ["OOMKilled", "Evicted", "NodeLost"] {
        assert!(
            events.iter().any(|e| e["reason"] == "RunnerPodFailed"
                && e["message"].as_str().unwrap_or_default().contains(reason)),
            "no event for {reason}: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_cannot_start_are_replaced_with_backoff_not_in_a_hot_loop() {
    let world = World::new("kube-backoff").await;
    let cluster = &world.cluster;
    let broken = world
        .config(2, 2, "registry.example/missing:1", "")
        .replace("start_timeout: 20s", "start_timeout: 2s");
    let engine = world.serve(&broken).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The pool says why, per class.
    let shown = get_json(&client(), &format!("{}/api/pool", engine.url)).await;
    let class = &shown["classes"][0];
    assert_eq!(class["name"], "small", "{shown}");
    assert_eq!(class["leader"], true, "{shown}");
    assert!(class["failures"].as_u64().unwrap() >= 1, "{shown}");
    let last = class["last_failure"].as_str().unwrap_or_default();
    assert!(
        last.contains("ErrImagePull") || last.contains("ImagePullBackOff"),
        "{shown}"
    );
    let created = world.created_pods();
    eprintln!("image pull failures: {created} pods created in 5 s");
    // 2 at once, then 1 s, 2 s, 4 s of backoff with one probe each: at most 5.
    assert!((2..=5).contains(&created), "{created} pods in 5 s");
    let events = cluster.kube.objects("events", NAMESPACE);
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ErrImagePull")),
        "{events:?}"
    );

    // A node that fits nothing: pods are Unschedulable, replaced after start_timeout.
    let sandbox2 = Sandbox::new("kube-unschedulable");
    let cluster2 = self::cluster(&sandbox2);
    cluster2.kubelet.set_unschedulable(true);
    let port2 = free_port();
    let url2 = format!("http://127.0.0.1:{port2}");
    let tight = config(&url2, 1, 1, IMAGE, "").replace("start_timeout: 20s", "start_timeout: 1s");
    let _engine2 = serve(&sandbox2, &cluster2, "engine", port2, &tight).await;
    wait_for(
        Duration::from_secs(10),
        "an Unschedulable event",
        || async {
            let events = cluster2.kube.objects("events", NAMESPACE);
            events
                .iter()
                .any(|e| {
                    e["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("Unschedulable")
                })
                .then_some(())
        },
    )
    .await;
    cluster2.kubelet.set_unschedulable(false);
    let engine2 = Engine { url: url2, pid: 0 };
    wait_idle(&engine2.url, 1).await;

    // A template whose environment names a Secret (allowed to the class) that does not
    // exist: CreateContainerConfigError, reported and backed off like a bad image.
    let sandbox3 = Sandbox::new("kube-config-error");
    let cluster3 = self::cluster(&sandbox3);
    let port3 = free_port();
    let url3 = format!("http://127.0.0.1:{port3}");
    let missing = config(&url3, 1, 1, IMAGE, "")
        .replace(
            "image: \"registry.example/plue:test\"}]",
            "image: \"registry.example/plue:test\", env: [{name: X, valueFrom: {secretKeyRef: {name: absent, key: k}}}]}]",
        )
        .replace(
            "    idle_timeout: 60s\n",
            "    idle_timeout: 60s\n    allow_secret_volumes: [absent]\n",
        );
    assert!(missing.contains("secretKeyRef"), "{missing}");
    let engine3 = serve(&sandbox3, &cluster3, "engine", port3, &missing).await;
    wait_for(
        Duration::from_secs(10),
        "a CreateContainerConfigError",
        || async {
            let shown = get_json(&client(), &format!("{}/api/pool", engine3.url)).await;
            let last = shown["classes"][0]["last_failure"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            last.contains("CreateContainerConfigError").then_some(())
        },
    )
    .await;
}

// regression (issue 36): a runner container exiting 1 right after it started made the
// pool create pods without end (270 in 30 s for min_warm 2) while /api/pool said
// `backing_off: false`, and the class's steps waited forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_pods_that_exit_at_start_back_off_fail_their_steps_and_recover() {
    let world = World::new("kube-crash").await;
    let cluster = &world.cluster;
    let repaired = crashing_runner(&world.sandbox);
    let crashing = world.config(2, 2, CRASHING_IMAGE, "").replace(
        "  lease_duration: 2s\n",
        "  lease_duration: 2s\n  max_start_backoff: 2s\n",
    );
    assert!(crashing.contains("max_start_backoff"), "{crashing}");
    let began = Instant::now();
    let engine = world.serve(&crashing).await;
    let pool_url = format!("{}/api/pool", engine.url);
    let class = wait_for(Duration::from_secs(20), "the class to back off", || async {
        let shown = get_json(&client(), &pool_url).await;
        let class = shown["classes"][0].clone();
        (class["backing_off"] == true).then_some(class)
    })
    .await;
    let last = class["last_failure"].as_str().unwrap_or_default();
    assert!(
        last.contains("exit code 1: plue runner: starting | Error: the work directory /work cannot be reached by the step users"),
        "the exit code and the container's last lines: {class}\n{:?}",
        std::fs::read_to_string(cluster.kubelet.log_path(
            last.split(':').next().unwrap_or_default().trim_start_matches("pod ")
        ))
    );

    // A step only this class serves fails with the reason instead of waiting forever.
    let build = [small("build", "true")];
    let done = world.finish(&engine, "crash", &build, 20).await;
    let reason = failed_reason(&done, "build");
    assert!(
        reason.starts_with("runner class small is backing off: ")
            && reason.contains("runners in a row ended before registering")
            && reason.contains("exit code 1: plue runner: starting | Error: the work directory"),
        "{reason}"
    );

    // Bounded: 2 pods, 2 more, then one probe per 2 s wait — watched until two probes
    // have failed too (without the backoff: 9 pods a second).
    wait_for(Duration::from_secs(20), "two probes to fail", || async {
        let shown = get_json(&client(), &pool_url).await;
        (shown["classes"][0]["failures"].as_u64() >= Some(6)).then_some(())
    })
    .await;
    let window = began.elapsed();
    let created = world.created_pods();
    eprintln!("crashing runners: {created} pods created in {window:?}");
    let bound = 4 + window.as_secs().div_ceil(2) as usize + 1;
    assert!(
        created <= bound,
        "{created} pods in {window:?} (at most {bound})"
    );
    let events = cluster.kube.objects("events", NAMESPACE);
    assert!(
        events.iter().any(|e| e["reason"] == "RunnerStartBackOff"
            && e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("exit code 1")),
        "{events:?}"
    );
    let metrics = support::get_text(&client(), &format!("{}/metrics", engine.url)).await;
    assert!(
        metrics.contains("plue_pool_backing_off{class=\"small\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plue_pool_start_failures_total{class=\"small\"}"),
        "{metrics}"
    );

    // Repaired: the next probe registers, the class stops backing off and serves again.
    std::fs::write(&repaired, "").unwrap();
    wait_idle(&engine.url, 2).await;
    wait_for(
        Duration::from_secs(5),
        "the class to stop backing off",
        || async {
            let shown = get_json(&client(), &pool_url).await;
            (shown["classes"][0]["backing_off"] == false).then_some(())
        },
    )
    .await;
    let done = world.finish(&engine, "repaired", &build, 30).await;
    assert_eq!(
        support::step(&done, "build")["status"],
        "succeeded",
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_no_class_serves_fail_at_once_with_the_reason() {
    let world = World::new("kube-unservable").await;
    let engine = world.serve(&world.config(0, 2, IMAGE, "")).await;
    let started = Instant::now();
    let train = ["Step.bash('train', 'true', runner={'gpu': 'yes'})".into()];
    let done = world.finish(&engine, "gpu", &train, 10).await;
    let reason = failed_reason(&done, "train");
    assert!(
        reason.contains("no runner can serve labels gpu=yes"),
        "{reason}"
    );
    assert!(
        reason.contains("small (size=small; enforces network: open)"),
        "{reason}"
    );
    eprintln!("unservable step failed after {:?}", started.elapsed());
    assert!(
        pods(&world.cluster).is_empty(),
        "no pod for a step no class serves"
    );
}

/// `network="none"` on the Kubernetes pool, whose hardened pods cannot make network
/// namespaces: on a class with `step_network: pod` (its pods confined by the chart's
/// NetworkPolicy) a `bash` step and an `llm` step's `bash` tool run, each with the line
/// saying the policy is the pod's, not the step's. A step whose policy no class enforces is
/// claimed by none (claims route by the reserved labels the engine derives from each
/// class's configuration) and fails with that reason: `none` asking for a class without
/// `step_network: pod`, an allow-list on any class (no engine-side proxy yet). A step
/// cannot ask for the mode: only the class's file gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_steps_run_on_a_pod_confined_class_and_fail_closed_elsewhere() {
    use testkit::claude::{FakeClaude, Turn};
    let world = World::new("kube-step-network").await;
    let sandbox = &world.sandbox;
    capless_runner(sandbox);
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("toolu_1", "bash", &json!({"command": "echo tool-ran"}))
            .usage(10, 5)
            .reply(),
        Turn::text(&["done"]).usage(10, 1).reply(),
    ]);
    let agents = format!(
        "  - name: agents\n    labels: {{role: agent}}\n    max_runners: 2\n    idle_timeout: 60s\n    step_network: pod\n\
         \x20   template:\n      spec:\n        containers:\n          - name: runner\n            image: \"{CAPLESS_IMAGE}\"\n\
         \x20           env: [{{name: ANTHROPIC_BASE_URL, value: \"{}\"}}]\n",
        claude.url()
    );
    let pool = world.config(0, 2, CAPLESS_IMAGE, &agents);
    let secret = ["--secret", "ANTHROPIC_API_KEY=sk-ant-kube-step-network"];
    let engine = world.serve_with(&pool, &secret).await;
    let run_id = world
        .run(
            &engine,
            "net",
            &[
            "Step.bash('confined', 'echo step-ran', network='none', runner={'role': 'agent'})"
                .into(),
            "Step.llm('agent', prompt='Run the tool.', tools=['bash'], runner={'role': 'agent'})"
                .into(),
            "Step.bash('unconfined', 'echo step-ran', network='none', runner={'size': 'small'})"
                .into(),
            "Step.bash('listed', 'true', network=['pypi.org'], runner={'role': 'agent'})".into(),
            ],
        )
        .await;
    let done = wait_final(&client(), &engine.url, run_id, Duration::from_secs(90)).await;
    let logs = |step: &'static str| {
        let url = engine.url.clone();
        async move {
            log_lines(&client(), &url, run_id, step)
                .await
                .unwrap_or_default()
                .iter()
                .map(|l| l["text"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let per_pod = "network: 'none' is enforced per pod by this runner class's NetworkPolicy";
    for step in ["confined", "agent"] {
        assert_eq!(
            support::step(&done, step)["status"],
            "succeeded",
            "{done:#}\n{}",
            sandbox.diagnostics()
        );
        let log = logs(step).await;
        assert!(log.contains(per_pod), "{step}: {log}");
    }
    assert!(logs("confined").await.contains("step-ran"));
    let results = claude.requests()[1].tool_results();
    assert!(
        results[0]["content"].to_string().contains("tool-ran"),
        "{results:?}"
    );

    let reason = failed_reason(&done, "unconfined");
    assert!(
        reason.starts_with(
            "no runner can enforce this step's network policy, network=\"none\", with labels \
             size=small: no Kubernetes runner class does"
        ) && reason.contains("agents (role=agent; enforces network: open, none)"),
        "{reason}"
    );
    assert!(!logs("unconfined").await.contains("step-ran"));
    assert!(!logs("unconfined").await.contains(per_pod));

    let reason = failed_reason(&done, "listed");
    assert!(
        reason.starts_with(
            "no runner can enforce this step's network policy, an allow-list (network=[...]), \
             with labels role=agent"
        ),
        "{reason}"
    );
    // The pool says what each class enforces (its labels include the reserved ones).
    let pool: serde_json::Value = client()
        .get(format!("{}/api/pool", engine.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agents = pool["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "agents")
        .unwrap();
    assert_eq!(agents["labels"]["plue.network/none"], "yes", "{pool:#}");
    assert!(
        agents["labels"].get("plue.network/allow").is_none(),
        "{pool:#}"
    );
}

/// A local HTTP server answering each connection's first request with `body`; counts the
/// connections it accepted.
async fn counting_server(body: &'static str) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    counting_server_on("127.0.0.1", body).await
}

/// [`counting_server`] on `address`.
async fn counting_server_on(
    address: &str,
    body: &'static str,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((address, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = reached.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, reached)
}

/// An allow-list step on a pod class with `egress_proxy` (bash steps, and an agent's
/// `bash` tool) goes out through its runner's proxy and `plue egress-proxy`, with a
/// credential only its runner holds: it reaches its
/// listed host; an unlisted one is refused (a line of its log, counted in
/// `plue_network_refused_total`); listed addresses inside — the database's stand-in in a
/// network the proxy denies, the cloud metadata address — are refused by the cluster's
/// proxy and never reached; a second request of another host on a kept-alive
/// connection is never sent; going around its runner's proxy straight to the cluster's,
/// it has no credential and gets `407`. The engine answers the proxy about a grant only
/// while its attempt runs (then `403`: it dies with the attempt), only from its runner's
/// pod (the kubelet gives every pod 127.0.0.1: the live credential replayed from
/// 127.0.0.2, another pod, is `403` at the engine and `407` at the proxy, and reaches
/// nothing), only with the proxy's token (`401`), and never for a grant another key
/// signed.
///
/// What this proves and what it does not: the simulated kubelet runs a pod's container as
/// a plain local process, with no network namespace and no NetworkPolicy, so the step
/// *could* connect to the unlisted server directly; what is shown is the routing (the class
/// gets allow-lists only with a proxy), the credential (minted per attempt, checked by the
/// engine on every connection) and the proxies' rules. That the pods reach nothing but the
/// engine, the proxy and DNS is the chart's NetworkPolicy, checked by the chart tests
/// (`engine/tests/chart.rs`), and enforced only by a real cluster's CNI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_steps_on_pods_go_out_through_the_egress_proxy_with_their_own_credential() {
    use std::sync::atomic::Ordering::SeqCst;
    let world = World::new("kube-egress-proxy").await;
    let sandbox = &world.sandbox;
    capless_runner(sandbox);
    let (listed, listed_reached) = counting_server("listed-answer").await;
    let (unlisted, unlisted_reached) = counting_server("unlisted-answer").await;
    // The cluster's database, as far as the proxy knows: a network it is told to deny.
    let (database, database_reached) = counting_server_on("127.0.0.2", "database").await;
    let proxy_port = free_port();
    // An agent whose bash tool fetches the listed host, then the unlisted one.
    let tool = format!(
        "curl -sS http://127.0.0.1:{listed}/; echo; \
         curl -sS -o /dev/null -w 'unlisted %{{http_code}}' http://127.0.0.1:{unlisted}/"
    );
    let claude = testkit::claude::FakeClaude::start(vec![
        testkit::claude::Turn::new()
            .tool_use("toolu_1", "bash", &json!({ "command": tool }))
            .usage(10, 5)
            .reply(),
        testkit::claude::Turn::text(&["done"]).usage(10, 1).reply(),
    ]);
    let agents = format!(
        "  - name: agents\n    labels: {{role: agent}}\n    max_runners: 2\n    idle_timeout: 60s\n    step_network: pod\n\
         \x20   egress_proxy: http://127.0.0.1:{proxy_port}\n\
         \x20   resolve: [localhost]\n\
         \x20   template:\n      spec:\n        containers:\n          - name: runner\n            image: \"{CAPLESS_IMAGE}\"\n\
         \x20           env: [{{name: ANTHROPIC_BASE_URL, value: \"{}\"}}]\n",
        claude.url()
    );
    let pool = world.config(0, 2, CAPLESS_IMAGE, &agents);
    let token = sandbox.write_private("egress-token", "egress-proxy-token-0123456789\n");
    let token = token.to_str().unwrap();
    let engine = world
        .serve_with(
            &pool,
            &[
                "--egress-proxy-token-file",
                token,
                "--secret",
                "ANTHROPIC_API_KEY=sk-ant-kube-egress-proxy",
            ],
        )
        .await;
    let listen = format!("127.0.0.1:{proxy_port}");
    let proxy = sandbox.plue(&[
        "egress-proxy",
        "--listen",
        &listen,
        "--engine",
        &engine.url,
        "--token-file",
        token,
        "--deny",
        "10.96.0.0/12",
        "--deny",
        "127.0.0.2/32",
    ]);
    sandbox.spawn("egress-proxy", proxy);

    // One connection to the step's proxy carrying two requests: the listed host's, then
    // (kept alive) the unlisted one's.
    let kept_alive = format!(
        r#"at=${{HTTP_PROXY#http://}}
exec 3<>/dev/tcp/${{at%:*}}/${{at##*:}}
printf "GET http://127.0.0.1:{listed}/ HTTP/1.1\r\nHost: 127.0.0.1:{listed}\r\nConnection: keep-alive\r\n\r\nGET http://127.0.0.1:{unlisted}/ HTTP/1.1\r\nHost: 127.0.0.1:{unlisted}\r\n\r\n" >&3
cat <&3
echo
curl -sS -o /dev/null -w 'around %{{http_code}}\n' -x http://127.0.0.1:{proxy_port} http://127.0.0.1:{listed}/"#
    );
    let through = format!(
        "curl -sS http://127.0.0.1:{listed}/; echo; \
         curl -sS -o /dev/null -w 'unlisted %{{http_code}}\\n' http://127.0.0.1:{unlisted}/"
    );
    // Listed, yet inside: the database's network and the cloud metadata address.
    let inside = format!(
        "curl -sS -o /dev/null -w 'database %{{http_code}}\\n' http://127.0.0.2:{database}/; \
         curl -sS -o /dev/null -w 'metadata %{{http_code}}\\n' http://169.254.169.254/latest/"
    );
    let steps = [
        format!(
            "Step.bash('through', {through:?}, network=['127.0.0.1:{listed}'], \
             runner={{'role': 'agent'}})"
        ),
        format!(
            "Step.bash('inside', {inside:?}, \
             network=['127.0.0.2:{database}', '169.254.169.254'], runner={{'role': 'agent'}})"
        ),
        format!(
            "Step.llm('agent', prompt='Fetch it.', tools=['bash'], \
             network=['127.0.0.1:{listed}'], runner={{'role': 'agent'}})"
        ),
        format!(
            "Step.bash('kept_alive', {kept_alive:?}, network=['127.0.0.1:{listed}'], \
             runner={{'role': 'agent'}})"
        ),
    ];
    let run_id = world.run(&engine, "egress", &steps).await;
    let done = wait_final(&client(), &engine.url, run_id, Duration::from_secs(120)).await;
    world.assert_succeeded(&done);
    let logs = |step: &'static str| {
        let url = engine.url.clone();
        async move {
            log_lines(&client(), &url, run_id, step)
                .await
                .unwrap_or_default()
                .iter()
                .map(|l| l["text"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let through = logs("through").await;
    assert!(through.contains("listed-answer"), "{through}");
    assert!(through.contains("unlisted 403"), "{through}");
    assert!(
        through.contains(
            "network: this step's allow-list is enforced by the runner's proxy and the cluster's"
        ),
        "{through}"
    );
    let refusal = format!("network: refused 127.0.0.1:{unlisted} (not in this step's allow-list)");
    assert!(through.contains(&refusal), "{through}");
    // The agent's bash tool: the listed host's answer, the unlisted one refused.
    let results = claude.requests()[1].tool_results();
    let result = results[0]["content"].to_string();
    assert!(result.contains("listed-answer"), "{results:?}");
    assert!(result.contains("unlisted 403"), "{results:?}");
    let agent = logs("agent").await;
    assert!(agent.contains(&refusal), "{agent}");
    let inside = logs("inside").await;
    assert!(inside.contains("database 403"), "{inside}");
    assert!(inside.contains("metadata 403"), "{inside}");
    for target in [
        format!("127.0.0.2:{database}"),
        "169.254.169.254:80".to_owned(),
    ] {
        let line = format!("network: refused {target} (refused by the cluster's egress proxy");
        assert!(inside.contains(&line), "{inside}");
    }
    assert_eq!(database_reached.load(SeqCst), 0);
    let kept = logs("kept_alive").await;
    assert!(kept.contains("listed-answer"), "{kept}");
    assert_eq!(kept.matches("HTTP/1.1 ").count(), 1, "one response: {kept}");
    // Going around the step's proxy to the cluster's: no credential, nothing out.
    assert!(kept.contains("around 407"), "{kept}");
    assert_eq!(unlisted_reached.load(SeqCst), 0);
    assert_eq!(listed_reached.load(SeqCst), 3);

    // The class enforces allow-lists, as `/api/pool` says.
    let pool: Value = get_json(&client(), &format!("{}/api/pool", engine.url)).await;
    let agents = pool["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "agents")
        .unwrap();
    assert_eq!(agents["labels"]["plue.network/allow"], "yes", "{pool:#}");

    // The engine answers the proxy for a running attempt's grant only, and the proxy only.
    let check_from = |credential: String, token: &'static str, peer: &'static str| {
        let url = format!("{}/internal/egress/check", engine.url);
        async move {
            let answer = client()
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "credential": credential, "peer": peer }))
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or_default())
        }
    };
    let check =
        |credential: String, token: &'static str| check_from(credential, token, "127.0.0.1");
    let key = plue_vault::grants::GrantKey::derive("egress-proxy-token-0123456789");
    let credential = |attempt_id: i64| {
        use base64::Engine as _;
        let grant = key
            .mint(attempt_id, &[format!("127.0.0.1:{listed}")])
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(format!("attempt:{grant}"))
    };
    const PROXY_TOKEN: &str = "egress-proxy-token-0123456789";
    // The four attempts above (a fresh database's first) ended: refused.
    for attempt_id in [1, 2, 3, 4] {
        assert_eq!(check(credential(attempt_id), PROXY_TOKEN).await.0, 403);
    }
    let waiting = world
        .run(
            &engine,
            "waiting",
            &[format!(
                "Step.bash('waiting', 'sleep 8', network=['127.0.0.1:{listed}'], \
                 runner={{'role': 'agent'}})"
            )],
        )
        .await;
    let (status, grant) = wait_for(
        Duration::from_secs(60),
        "the fifth attempt to be claimed",
        || async {
            let answer = check(credential(5), PROXY_TOKEN).await;
            (answer.0 == 200).then_some(answer)
        },
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        grant,
        json!({"attempt_id": 5, "hosts": [format!("127.0.0.1:{listed}")]})
    );
    // attack: the live credential, leaked, replayed from another pod (127.0.0.2): the
    // engine refuses it, and through the proxy it reaches nothing; from its own pod it
    // still goes out.
    assert_eq!(
        check_from(credential(5), PROXY_TOKEN, "127.0.0.2").await.0,
        403
    );
    let replay = |from: &'static str| {
        let head = format!(
            "GET http://127.0.0.1:{listed}/ HTTP/1.1\r\nHost: 127.0.0.1:{listed}\r\n\
             Proxy-Authorization: Basic {}\r\n\r\n",
            credential(5)
        );
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
            let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], proxy_port));
            let mut stream = socket.connect(proxy).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let before = listed_reached.load(SeqCst);
    let answer = replay("127.0.0.2").await;
    assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
    assert_eq!(
        listed_reached.load(SeqCst),
        before,
        "the replay reached the host"
    );
    let answer = replay("127.0.0.1").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(listed_reached.load(SeqCst), before + 1);
    // The class's pods have no DNS: the names of its `resolve` list are in their
    // /etc/hosts, resolved by the engine when it made the pod.
    let aliased = pods(&world.cluster).iter().any(|pod| {
        pod["spec"]["hostAliases"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|alias| alias["ip"] == "127.0.0.1" && alias["hostnames"] == json!(["localhost"]))
    });
    assert!(aliased, "{:#?}", pods(&world.cluster));
    assert_eq!(
        check(credential(3), "not-the-proxy-token-0000").await.0,
        401
    );
    let forged = {
        use base64::Engine as _;
        let other = plue_vault::grants::GrantKey::derive("another-token-0123456789");
        let grant = other.mint(5, &["evil.example".to_owned()]).unwrap();
        base64::engine::general_purpose::STANDARD.encode(format!("attempt:{grant}"))
    };
    assert_eq!(check(forged, PROXY_TOKEN).await.0, 403);
    let done = wait_final(&client(), &engine.url, waiting, Duration::from_secs(60)).await;
    world.assert_succeeded(&done);
    assert_eq!(
        check(credential(5), PROXY_TOKEN).await.0,
        403,
        "dies with its attempt"
    );

    // The refusal is counted, as a runner's own proxy's are (the runner reports it).
    wait_for(
        Duration::from_secs(10),
        "plue_network_refused_total to count the refusal",
        || async {
            let metrics = client()
                .get(format!("{}/metrics", engine.url))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let refused = metrics
                .lines()
                .find_map(|l| l.strip_prefix("plue_network_refused_total "))
                .and_then(|n| n.trim().parse::<f64>().ok())?;
            (refused >= 1.0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_restart_adopts_its_pods_and_starts_no_duplicates() {
    let world = World::new("kube-restart").await;
    let cluster = &world.cluster;
    let pool = world.config(2, 3, IMAGE, "");
    let first = serve(&world.sandbox, cluster, "first", world.port, &pool).await;
    let mut warm = wait_idle(&first.url, 2).await;
    world.sandbox.kill9(first.pid);
    let second = serve(&world.sandbox, cluster, "second", world.port, &pool).await;
    // Past the dead engine's lease, the new leader adopts; give it time to (wrongly) act.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut names = pod_names(cluster);
    names.sort();
    warm.sort();
    assert_eq!(names, warm, "the same two pods");
    assert_eq!(world.created_pods(), 2, "no duplicates");
    // A pod with this installation's labels that no pool started (a previous leader's
    // last creation, say) is not left running uncounted.
    let stray = json!({
        "metadata": {
            "name": "stray-1",
            "labels": {
                "app.kubernetes.io/managed-by": "plue",
                "app.kubernetes.io/instance": "plue",
                "plue.dev/class": "small",
                "plue.dev/runner": "stray-1",
            },
            "annotations": {"plue.dev/token-id": "999999"},
        },
        "spec": {"containers": [{"name": "runner", "image": "registry.example/sleep:1", "command": ["sleep", "60"]}]},
        "status": {"phase": "Pending"},
    });
    cluster.kube.create("pods", NAMESPACE, stray).unwrap();
    wait_for(
        Duration::from_secs(15),
        "the stray pod to be removed",
        || async { pod_gone(cluster, "stray-1") },
    )
    .await;
    let adopted = [small("s", "echo adopted")];
    let done = world.finish(&second, "after", &adopted, 30).await;
    world.assert_succeeded(&done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_dropped_watches_and_410s_lose_and_duplicate_nothing() {
    let world = World::new("kube-faults").await;
    let cluster = &world.cluster;
    for (method, resource, status, times) in [
        ("POST", "pods", 500, 2),
        ("POST", "secrets", 503, 1),
        ("DELETE", "pods", 500, 2),
    ] {
        cluster
            .kube
            .fail(Fault::on(method, resource, status, times));
    }
    cluster.kube.fail(Fault {
        retry_after: Some(1),
        ..Fault::on("POST", "pods", 429, 1)
    });
    let engine = world.serve(&world.config(0, 3, IMAGE, "")).await;
    let steps: Vec<String> = (0..9)
        .map(|i| format!("Step.bash('s{i}', 'sleep 0.2; echo {i}', runner={{'size': 'small'}})"))
        .collect();
    let run_id = world.run(&engine, "faults", &steps).await;
    let mut most = 0;
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        most = most.max(live_pods(cluster));
        if round % 2 == 0 {
            cluster.kube.compact();
        } else {
            cluster.kube.drop_watches();
        }
    }
    let done = wait_final(&client(), &engine.url, run_id, Duration::from_secs(90)).await;
    world.assert_succeeded(&done);
    let requests = cluster.kube.requests();
    let created = requests
        .iter()
        .filter(|r| r.method == "POST" && r.resource.as_deref() == Some("pods") && r.status == 201)
        .count();
    let relists = requests
        .iter()
        .filter(|r| r.method == "GET" && r.resource.as_deref() == Some("pods") && !r.watch)
        .count();
    eprintln!("faults: {created} pods for 9 steps, {relists} lists, at most {most} pods at once");
    assert!(created <= 9 + 3, "{created} pods for 9 steps");
    assert!(most <= 3, "{most}");
    assert!(relists >= 2, "410s made the watcher list again ({relists})");
    wait_for(Duration::from_secs(20), "every used pod to go", || async {
        pods(cluster).is_empty().then_some(())
    })
    .await;
    assert!(
        cluster.kube.objects("secrets", NAMESPACE).is_empty(),
        "no Secret outlives its pod"
    );
}

/// The runner accepts a group-readable token file only in a pod's Secret volume (the
/// kubelet's `..data` layout, the runner's own group as the pod's `fsGroup`): a token file
/// others could read is refused anywhere else.
#[test]
fn a_group_readable_token_file_is_refused_outside_a_pod_secret_volume() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new("kube-token-file");
    let refused = |dir: &str, gid: Option<u32>| {
        let file = sandbox.write(
            &format!("{dir}/token"),
            "a-token-of-sixteen-chars-or-more\n",
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o440)).unwrap();
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&file, None, Some(gid)).unwrap();
        }
        let output = sandbox
            .plue(&[
                "runner",
                "--engine",
                "http://127.0.0.1:9",
                "--token-file",
                file.to_str().unwrap(),
                "--give-up-after",
                "1",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).contains("is readable by other users")
    };
    assert!(
        refused("plain", None),
        "group-readable outside a Secret volume"
    );
    std::fs::create_dir_all(sandbox.path("pod/..2026")).unwrap();
    std::os::unix::fs::symlink("..2026", sandbox.path("pod/..data")).unwrap();
    assert!(!refused("pod", None), "the pod's own group may read it");
    if nix::unistd::geteuid().is_root() {
        std::fs::create_dir_all(sandbox.path("foreign/..2026")).unwrap();
        std::os::unix::fs::symlink("..2026", sandbox.path("foreign/..data")).unwrap();
        assert!(refused("foreign", Some(4242)), "another group may not");
    }
}

/// `step started - run created` of `n` one-step runs, each started once `engine` has
/// `warm` idle runners (so each is claimed by a warm runner), sorted.
async fn claim_latencies(
    sandbox: &Sandbox,
    engine: &str,
    label: &str,
    n: usize,
    warm: usize,
) -> Vec<i64> {
    let mut latencies = Vec::new();
    for i in 0..n {
        wait_idle(engine, warm).await;
        let step = format!("Step.bash('s', 'true'{label})");
        let run_id = run(sandbox, engine, &format!("lat{i}"), &[step]).await;
        let done = wait_succeeded(&client(), engine, run_id, Duration::from_secs(30)).await;
        let started = support::step(&done, "s")["started_at"].as_i64().unwrap();
        latencies.push(started - done["created_at"].as_i64().unwrap());
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Measures (does not assert) claim latency: an idle registered pod taking a ready step,
/// against the local pool's runners in the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pod_claim_latency_against_the_local_pool() {
    let n = 12;
    let world = World::new("kube-latency").await;
    let engine = world.serve(&world.config(2, 3, IMAGE, "")).await;
    let pods = claim_latencies(
        &world.sandbox,
        &engine.url,
        ", runner={'size': 'small'}",
        n,
        2,
    )
    .await;
    let local_sandbox = Sandbox::new("local-latency");
    let local = local_sandbox
        .serve("local", free_port(), &["--runners", "2"])
        .await;
    let locals = claim_latencies(&local_sandbox, &local.url, "", n, 2).await;
    let writes = writes_but_leases(&world.cluster.kube.requests());
    eprintln!(
        "claim latency over {n} runs (run created -> step started): warm pods p50 {} ms p99 {} ms; \
         local pool p50 {} ms p99 {} ms; {:.2} Kubernetes API writes per claimed step",
        percentile(&pods, 0.5),
        percentile(&pods, 0.99),
        percentile(&locals, 0.5),
        percentile(&locals, 0.99),
        writes as f64 / n as f64,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_kubernetes_pools_serve_together_each_class_its_steps() {
    let world = World::new("kube-combined").await;
    let cluster = &world.cluster;
    let big = format!(
        "  - name: big\n    labels: {{size: big}}\n    max_runners: 1\n    template:\n      spec:\n        containers: [{{name: runner, image: \"{IMAGE}\"}}]\n"
    );
    let pool = world.config(0, 1, IMAGE, &big);
    let local = [
        "--pool",
        "local",
        "--runners",
        "1",
        "--pass-env",
        "PLUE_TEST_SANDBOX",
    ];
    let engine = world.serve_with(&pool, &local).await;
    // The totals add the local pool's (1 runner) and both classes' (0 warm, 1 at most each)
    // once this engine leads the classes.
    let shown = wait_for(Duration::from_secs(20), "both classes led", || async {
        let shown = get_json(&client(), &format!("{}/api/pool", engine.url)).await;
        let classes = shown["classes"].as_array().cloned().unwrap_or_default();
        (classes.len() == 2 && classes.iter().all(|c| c["leader"] == true)).then_some(shown)
    })
    .await;
    assert_eq!(
        (shown["min_warm"].as_u64(), shown["max_runners"].as_u64()),
        (Some(1), Some(3)),
        "{shown}"
    );
    let steps = [
        "Step.bash('plain', 'echo local')".into(),
        small("small", "echo small"),
        "Step.bash('big', 'echo big', runner={'size': 'big'})".into(),
    ];
    let done = world.finish(&engine, "mixed", &steps, 60).await;
    world.assert_succeeded(&done);
    let requests = cluster.kube.requests();
    let created: Vec<String> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.resource.as_deref() == Some("pods"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        created.len(),
        2,
        "one pod per labelled step, none for the plain one: {created:?}"
    );
    wait_for(Duration::from_secs(20), "both used pods to go", || async {
        let deleted = cluster
            .kube
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE" && r.resource.as_deref() == Some("pods"))
            .count();
        (deleted == 2 && pods(cluster).is_empty()).then_some(())
    })
    .await;
}

/// A stand-in for the engines' Kubernetes Service: each connection goes to the first of
/// `backends` that accepts it.
async fn service(backends: Vec<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let backends = backends.clone();
            tokio::spawn(async move {
                for backend in &backends {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_one_leader_creates_pods_and_the_other_takes_over() {
    let _serial = serial().await;
    let why = "two engines sharing a store need a PostgreSQL";
    let Some((_postgres, database)) = support::postgres_database(why) else {
        return;
    };
    let sandbox = Sandbox::new("kube-leader");
    let cluster = cluster(&sandbox);
    let (port_a, port_b) = (free_port(), free_port());
    let url = service(vec![
        format!("127.0.0.1:{port_a}"),
        format!("127.0.0.1:{port_b}"),
    ])
    .await;
    let pool = config(&url, 2, 3, IMAGE, "");
    let shared = ["--database-url", database.as_str()];
    let a = serve_with(&sandbox, &cluster, "a", port_a, &pool, &shared).await;
    wait_idle(&a.url, 2).await;
    let b = serve_with(&sandbox, &cluster, "b", port_b, &pool, &shared).await;
    // b follows: it serves the API (and claims) but starts no pod of its own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(created_pods(&cluster), 2, "only the leader creates pods");
    let done = finish(&sandbox, &b, "via-b", &[small("s", "echo one")], 30).await;
    succeeded(&sandbox, &done);
    wait_idle(&b.url, 2).await;
    let before = created_pods(&cluster);
    // The leader dies without a word: b takes over once the Lease expires and adopts the
    // warm pods (their runners reach b through the service) instead of starting new ones.
    sandbox.kill9(a.pid);
    let lease = || {
        cluster
            .kube
            .object("coordination.k8s.io/leases", NAMESPACE, "plue-pool")
            .unwrap()
    };
    let leader_a = lease()["spec"]["holderIdentity"].clone();
    let started = Instant::now();
    wait_for(Duration::from_secs(15), "b to take the lease", || async {
        (lease()["spec"]["holderIdentity"] != leader_a).then_some(())
    })
    .await;
    eprintln!("b took over {:?} after a died", started.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(created_pods(&cluster), before, "adopted, no duplicates");
    let done = finish(&sandbox, &b, "after", &[small("s", "echo two")], 30).await;
    succeeded(&sandbox, &done);
    wait_for(
        Duration::from_secs(20),
        "b to replace the used pod",
        || async { (created_pods(&cluster) == before + 1).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_dead_node_are_force_deleted_once_its_kubelet_never_confirms() {
    let world = World::new("kube-dead-node").await;
    let cluster = &world.cluster;
    let pool = world
        .config(1, 1, IMAGE, "")
        .replace("start_timeout: 20s", "start_timeout: 2s");
    let engine = world.serve(&pool).await;
    let warm = wait_idle(&engine.url, 1).await;
    cluster.kubelet.kill_node();
    wait_for(
        Duration::from_secs(5),
        "the lost pod to be Terminating",
        || async {
            let pod = cluster.kube.object("pods", NAMESPACE, &warm[0])?;
            (!pod["metadata"]["deletionTimestamp"].is_null()).then_some(())
        },
    )
    .await;
    let started = Instant::now();
    wait_for(
        Duration::from_secs(15),
        "the Terminating pod to be force-deleted",
        || async { pod_gone(cluster, &warm[0]) },
    )
    .await;
    eprintln!(
        "force-deleted {:?} after it became Terminating",
        started.elapsed()
    );
    let forced = cluster
        .kube
        .requests()
        .iter()
        .filter(|r| {
            r.method == "DELETE"
                && r.resource.as_deref() == Some("pods")
                && r.path.ends_with(&warm[0])
        })
        .count();
    // The forced one, after at most one graceful one (which the node's eviction may have
    // made unnecessary): never a loop of deletes.
    assert!(
        (1..=2).contains(&forced),
        "{forced} deletes of the pod: expected a forced one after at most one graceful"
    );
    cluster.kubelet.revive_node();
    wait_idle(&engine.url, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_pod_loses_its_step_to_the_heartbeat_and_is_replaced() {
    let world = World::new("kube-hung").await;
    let pool = world
        .config(1, 1, IMAGE, "")
        .replace("start_timeout: 20s", "start_timeout: 3s");
    let beats = ["--heartbeat-ms", "200", "--lost-after-ms", "1500"];
    let engine = world.serve_with(&pool, &beats).await;
    let run_id = world
        .run(&engine, "hung", &[small("long", "sleep 60")])
        .await;
    let pod = busy_runner(&engine.url).await;
    world.cluster.kubelet.freeze(NAMESPACE, &pod);
    let done = wait_final(&client(), &engine.url, run_id, Duration::from_secs(20)).await;
    lost_its_runner(&done, "runner lost");
    wait_for(
        Duration::from_secs(20),
        "the hung pod to be replaced",
        || async {
            let idle = runners_in(&engine.url, "idle").await;
            pod_gone(&world.cluster, &pod).filter(|()| idle.len() == 1)
        },
    )
    .await;
}

// `plue debug` on Kubernetes: no warm pod, so the queued session is the pool's demand; a
// fresh pod's runner (the same agent, speaking the same protocol) runs the failed step
// again and relays its shell — no `kubectl exec`, no access to the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_session_gets_a_pod_and_its_shell_without_kubectl_exec() {
    use base64::Engine as _;
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let world = World::new("kube-debug").await;
    let (sandbox, cluster) = (&world.sandbox, &world.cluster);
    let engine = world.serve(&world.config(0, 2, IMAGE, "")).await;
    let broken = [small("broken", "echo in-the-pod; exit 4")];
    let run_id = world.run(&engine, "broken", &broken).await;
    let done = wait_final(&client(), &engine.url, run_id, Duration::from_secs(60)).await;
    assert_eq!(
        done["status"],
        "failed",
        "{done}\n{}",
        sandbox.diagnostics()
    );
    // The ephemeral pod that ran it is gone before the session asks for another.
    wait_for(Duration::from_secs(30), "the step's pod to go", || async {
        (live_pods(cluster) == 0).then_some(())
    })
    .await;
    let pods_before = world.created_pods();

    let http = client();
    let debug = format!("{}/api/runs/{run_id}/steps/broken/debug", engine.url);
    let opened: Value =
        support::send_json(http.post(debug).json(&json!({"idle_timeout_secs": 60}))).await;
    let id = opened["id"].as_str().unwrap_or_else(|| panic!("{opened}"));
    let stream = http
        .get(format!("{}/api/debug/{id}/attach", engine.url))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut events = stream.bytes_stream().eventsource();
    let (mut text, mut end) = (String::new(), None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline, events.next()).await {
        match event.event.as_str() {
            "output" => text.push_str(&String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(event.data.trim())
                    .unwrap(),
            )),
            "status" if event.data.contains("\"ready\"") => {
                let keys = base64::engine::general_purpose::STANDARD
                    .encode("echo \"answer=$((6 * 7))\"; exit 0\n");
                let typed = http
                    .post(format!("{}/api/debug/{id}/input", engine.url))
                    .json(&json!({ "data": keys }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(typed.status(), 204);
            }
            "end" => {
                end = Some(event.data);
                break;
            }
            _ => {}
        }
    }
    assert!(
        text.contains("in-the-pod"),
        "{text}\n{}",
        sandbox.diagnostics()
    );
    assert!(text.contains("answer=42"), "{text}");
    assert!(
        end.as_deref()
            .is_some_and(|e| e.contains("the shell exited with code 0")),
        "{end:?}\n{text}"
    );
    assert_eq!(
        world.created_pods(),
        pods_before + 1,
        "one pod for the session"
    );
    // Its runner was ephemeral: the pod goes with the session.
    wait_for(
        Duration::from_secs(30),
        "the session's pod to go",
        || async { (live_pods(cluster) == 0).then_some(()) },
    )
    .await;
}

// regression (issue 70): on a cluster of two nodes the node running a step hung; attempt 2
// went, four times in five, to a runner pod of the same node whose long-poll the engine
// still held, counted as taken, and was lost again — the retry spent, healthy pods idle.
// Here the hung node's other pod is the only one polling when attempt 2 is queued: its
// held poll must be handed nothing (its runner is silent past the liveness window, and a
// node-mate of a lost runner), so attempt 2 waits for a pod of the healthy node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_nodes_step_succeeds_on_the_healthy_node_at_its_second_attempt() {
    let world = World::new("kube-hung-node").await;
    let kubelet = &world.cluster.kubelet;
    // The first two pods on node-a; every later one on the node with fewer.
    kubelet.set_nodes(&["node-a"]);
    // The issue's timers: heartbeats every 2 s, lost after 10 s; claims acknowledged in 3 s.
    let timers = [
        "--heartbeat-ms",
        "2000",
        "--lost-after-ms",
        "10000",
        "--claim-ack-ms",
        "3000",
    ];
    let engine = world
        .serve_with(&world.config(1, 2, IMAGE, ""), &timers)
        .await;
    let http = client();
    let first = wait_idle(&engine.url, 1).await;
    let script = r#"echo try $PLUE_ATTEMPT; if [ "$PLUE_ATTEMPT" = 1 ]; then sleep 60; fi"#;
    let step =
        format!("Step.bash('long', '{script}', runner={{'size': 'small'}}, retries=1, backoff=1)");
    let run_id = world.run(&engine, "hung-node", &[step]).await;
    wait_for(Duration::from_secs(30), "attempt 1 to run", || async {
        let lines = log_lines(&http, &engine.url, run_id, "long").await?;
        lines.iter().any(|l| l["text"] == "try 1").then_some(())
    })
    .await;
    // The pool keeps one pod warm beside the busy one: on node-a too.
    let mate = wait_idle(&engine.url, 1).await;
    assert_ne!(mate, first, "a second pod polls");
    for pod in first.iter().chain(&mate) {
        assert_eq!(kubelet.node_of(NAMESPACE, pod).as_deref(), Some("node-a"));
    }
    kubelet.set_nodes(&["node-a", "node-b"]);
    kubelet.hang_node("node-a");
    let done = wait_final(&http, &engine.url, run_id, Duration::from_secs(60)).await;
    world.assert_succeeded(&done);
    let record = get_json(&http, &format!("{}/api/runs/{run_id}/record", engine.url)).await;
    let attempts: Vec<(i64, &str, &str)> = record["attempt_records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap_or(0),
                a["status"].as_str().unwrap_or_default(),
                a["runner"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(
        attempts[0],
        (1, "failed", first[0].as_str()),
        "{attempts:?}"
    );
    assert_eq!(
        (attempts[1].0, attempts[1].1),
        (2, "succeeded"),
        "{attempts:?}"
    );
    let node = kubelet.node_of(NAMESPACE, attempts[1].2);
    assert_eq!(node.as_deref(), Some("node-b"), "{attempts:?}");
}
