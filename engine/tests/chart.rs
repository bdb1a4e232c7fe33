//! The Helm chart (`charts/plue`) through the real Helm SDK and the Kubernetes API schemas:
//! lint, five value sets rendered and every manifest validated in strict mode (unknown
//! fields fail), then what the manifests promise — hardened pods, a least-privilege
//! namespaced Role, NetworkPolicies that keep runner pods to the engine, a PDB, secrets
//! wired the way `plue serve` reads them, and a pool ConfigMap that the real `plue serve
//! --check-config` accepts. The tools come from `deploy/python.rs`.
//!
//! Why one file past ~600 lines: the chart's promises are checked against one rendering of
//! its value sets (Helm takes seconds a render); split, each file would render them again.

use crate::python;
use crate::support;
use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::support::Sandbox;
use serde_json::{json, Value};

const NAMESPACE: &str = "ci";
/// Where the runner pods go by default: a namespace of their own.
const RUNNERS: &str = "ci-runners";

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/plue")
}

/// One rendering of the chart: its objects (validated) and its notes.
struct Rendered {
    objects: Vec<Value>,
    notes: String,
}

/// What `chart.py render` does with `values`.
fn render_output(values: &Value) -> std::process::Output {
    let chart = chart_dir();
    let args = ["render", chart.to_str().unwrap(), NAMESPACE];
    python::run_script("chart.py", &args, values.to_string().as_bytes())
}

/// Asserts that the chart refuses to render `values`, saying `why`.
fn assert_render_refuses(values: &Value, why: &str) {
    let output = render_output(values);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{values} rendered");
    assert!(stderr.contains(why), "{values}: {stderr}");
}

fn render(values: Value) -> Rendered {
    let output = render_output(&values);
    assert!(
        output.status.success(),
        "rendering with {values}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("the renderer's JSON");
    let version = out["kubernetes"].as_str().unwrap();
    let minor: u32 = version.split('.').nth(1).unwrap().parse().unwrap();
    assert!(
        minor >= 33,
        "validated against Kubernetes {version}, not a current release"
    );
    Rendered {
        objects: out["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["object"].clone())
            .collect(),
        notes: out["notes"].as_str().unwrap().to_owned(),
    }
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", self.names()))
    }

    fn names(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
            .collect()
    }

    fn engine(&self) -> &Value {
        self.one("Deployment", "plue")
    }

    fn engine_container(&self) -> &Value {
        &self.engine()["spec"]["template"]["spec"]["containers"][0]
    }

    fn env(&self, name: &str) -> &Value {
        self.engine_container()["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no env {name}"))
    }

    /// The pool configuration file the ConfigMap carries.
    fn pool_file(&self) -> String {
        self.one("ConfigMap", "plue-pool")["data"]["pool.yaml"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn external_database() -> Value {
    json!({"postgresql": {"enabled": false},
           "database": {"url": "postgres://plue:hunter2hunter2@db.example:5432/plue"}})
}

fn ingress_with_tls() -> Value {
    json!({"ingress": {"enabled": true, "className": "nginx",
        "hosts": [{"host": "ci.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "plue-tls", "hosts": ["ci.example.com"]}]}})
}

fn three_replicas_two_classes() -> Value {
    json!({"replicaCount": 3,
        "pool": {"classes": [
            {"name": "small", "labels": {"size": "small"}, "min_warm": 2, "max_runners": 20,
             "idle_timeout": "5m"},
            {"name": "sandboxed", "labels": {"sandbox": "gvisor"}, "max_runners": 5,
             "accept_forks": true,
             "allow_config_map_volumes": ["ca-bundle"],
             "allow_runtime_classes": ["gvisor"],
             "allow_service_account": "ci-runner",
             "template": {"spec": {"runtimeClassName": "gvisor", "serviceAccountName": "ci-runner",
                "nodeSelector": {"sandbox": "gvisor"},
                "volumes": [{"name": "ca", "configMap": {"name": "ca-bundle"}}],
                "containers": [{"name": "runner", "image": "registry.example/plue:1",
                                "volumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/extra"}],
                                "resources": {"limits": {"cpu": "2", "memory": "2Gi"}}}]}}}]}})
}

fn existing_secret() -> Value {
    json!({"existingSecret": "plue-credentials", "postgresql": {"enabled": false},
           "database": {"existingSecret": "plue-db", "existingSecretKey": "url"},
           "provenance": {"existingSecret": "plue-provenance"}})
}

fn github_app() -> Value {
    json!({"githubApp": {"id": 4242, "existingSecret": "plue-github-app",
                         "apiUrl": "https://ghe.example.com/api/v3"}})
}

/// Every value set the chart is checked with.
fn value_sets() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", json!({})),
        ("external database", external_database()),
        ("ingress with TLS", ingress_with_tls()),
        ("three replicas, two classes", three_replicas_two_classes()),
        ("existing secret", existing_secret()),
        ("GitHub App", github_app()),
    ]
}

#[test]
fn helm_lint_finds_nothing() {
    let chart = chart_dir();
    let output = python::run_script("chart.py", &["lint", chart.to_str().unwrap()], b"");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["total_charts_linted"], 1, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    let serious: Vec<&Value> = report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap() >= 2)
        .collect();
    assert!(serious.is_empty(), "lint warnings or errors: {serious:?}");
}

#[test]
fn every_value_set_renders_manifests_valid_in_strict_mode() {
    for (name, values) in value_sets() {
        let rendered = render(values);
        let kinds: BTreeSet<&str> = rendered
            .objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        for kind in [
            "Deployment",
            "Service",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ] {
            assert!(kinds.contains(kind), "{name}: no {kind} in {kinds:?}");
        }
        for object in &rendered.objects {
            let namespace = object["metadata"]["namespace"].as_str();
            // The pool's Role and the runners' NetworkPolicies (theirs and their classes')
            // sit with the runner pods.
            let runners_side = matches!(object["kind"].as_str(), Some("Role" | "RoleBinding"))
                || (object["kind"] == "NetworkPolicy"
                    && object["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("plue-runners")));
            match object["kind"].as_str() {
                Some("Namespace") => assert!(namespace.is_none(), "{name}: {object}"),
                _ if runners_side => assert_eq!(namespace, Some(RUNNERS), "{name}: {object}"),
                _ => assert_eq!(namespace, Some(NAMESPACE), "{name}: {object}"),
            }
        }
    }
}

#[test]
fn pods_run_as_non_root_without_privileges_and_containers_are_hardened() {
    for (name, values) in value_sets() {
        let rendered = render(values);
        let workloads: Vec<&Value> = rendered
            .all("Deployment")
            .into_iter()
            .chain(rendered.all("StatefulSet"))
            .collect();
        for workload in workloads {
            let pod = &workload["spec"]["template"]["spec"];
            let what = format!("{name}: {}", workload["metadata"]["name"]);
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
            assert!(
                pod["securityContext"]["runAsUser"].as_i64().unwrap() > 0,
                "{what}"
            );
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            assert!(
                pod["hostNetwork"].is_null() && pod["hostPID"].is_null(),
                "{what}"
            );
            for container in pod["containers"].as_array().unwrap() {
                let sc = &container["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
                assert_eq!(sc["runAsNonRoot"], true, "{what}");
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
                assert!(sc["privileged"].is_null(), "{what}");
                assert!(sc["capabilities"]["add"].is_null(), "{what}");
                let limits = &container["resources"]["limits"];
                assert!(!limits["memory"].is_null(), "{what}: no memory limit");
            }
        }
    }
}

#[test]
fn the_engine_deployment_starts_plue_serve_as_it_reads_its_configuration() {
    let rendered = render(json!({}));
    let pod = &rendered.engine()["spec"]["template"]["spec"];
    let container = rendered.engine_container();
    assert_eq!(
        container["command"],
        json!(["plue"]),
        "the image puts plue on PATH"
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let joined = args.join(" ");
    assert!(
        joined.starts_with("serve --listen 0.0.0.0:8600 "),
        "{joined}"
    );
    assert!(
        joined.contains("--pool kubernetes --pool-config /etc/plue/pool.yaml"),
        "{joined}"
    );
    assert!(
        joined.contains("--runners 0"),
        "no local runners in the engine pod"
    );
    // The port the engine listens on is the one the Service and probes use.
    assert_eq!(container["ports"][0]["containerPort"], 8600);
    assert_eq!(container["ports"][0]["name"], "http");
    let service = rendered.one("Service", "plue");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    // The runner protocol has a port of its own, which the Service exposes too.
    assert!(joined.contains("--runner-listen 0.0.0.0:8601"), "{joined}");
    assert_eq!(container["ports"][1]["containerPort"], 8601);
    assert_eq!(container["ports"][1]["name"], "runners");
    assert_eq!(service["spec"]["ports"][1]["targetPort"], "runners");
    assert_eq!(service["spec"]["ports"][1]["port"], 8601);
    // Reads need a token by default.
    assert_eq!(rendered.env("PLUE_PRIVATE_READS")["value"], "true");
    assert_eq!(
        service["spec"]["selector"],
        rendered.engine()["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["startupProbe"]["httpGet"]["path"], "/healthz");
    // Rollouts: the pod keeps serving through preStop, then drains within its grace.
    let pre_stop = &container["lifecycle"]["preStop"]["exec"]["command"];
    assert_eq!(pre_stop[0], "sleep");
    let sleep: i64 = pre_stop[1].as_str().unwrap().parse().unwrap();
    let grace: i64 = rendered.env("PLUE_SHUTDOWN_GRACE")["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let delay: i64 = rendered.env("PLUE_DRAIN_DELAY")["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let termination = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        termination > sleep + delay + grace,
        "terminationGracePeriodSeconds {termination} leaves no room after preStop {sleep}s, drain {delay}s and grace {grace}s"
    );
    assert_eq!(
        rendered.env("PLUE_LOG_FORMAT")["value"],
        "json",
        "logs for collectors"
    );
    let strategy = &rendered.engine()["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        strategy["maxUnavailable"], 0,
        "a rollout never drops below the replicas"
    );
    // Credentials come from the Secret by the variables `plue serve` reads.
    for (var, key) in [
        ("PLUE_ADMIN_TOKEN", "admin-token"),
        ("PLUE_RUNNER_TOKEN", "runner-token"),
        ("PLUE_SECRET_KEY", "secret-key"),
    ] {
        let from = &rendered.env(var)["valueFrom"]["secretKeyRef"];
        assert_eq!((&from["name"], &from["key"]), (&json!("plue"), &json!(key)));
    }
    let secret = rendered.one("Secret", "plue");
    for key in ["admin-token", "runner-token", "secret-key"] {
        let value = secret["data"][key].as_str().unwrap();
        assert!(value.len() >= 40, "{key} is generated long enough");
    }
    // The in-chart PostgreSQL by default, reached with its generated password.
    let url = rendered.env("DATABASE_URL")["value"].as_str().unwrap();
    assert_eq!(
        url,
        "postgres://plue:$(POSTGRES_PASSWORD)@plue-postgresql:5432/plue"
    );
    let postgres = rendered.one("StatefulSet", "plue-postgresql");
    let claim = &postgres["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "8Gi");
    // Mounts: the pool file from its ConfigMap, writable scratch on emptyDirs only.
    let mounts = container["volumeMounts"].as_array().unwrap();
    let pool_mount = mounts.iter().find(|m| m["name"] == "pool").unwrap();
    assert_eq!(pool_mount["mountPath"], "/etc/plue");
    let pool_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "pool")
        .unwrap();
    assert_eq!(pool_volume["configMap"]["name"], "plue-pool");
}

// The App's key reaches `plue serve` as a file of a read-only Secret volume of the engine's
// pod (never an environment value), at the path its env names; without the Secret the
// chart refuses to render.
#[test]
fn a_github_app_gives_the_engine_its_id_and_its_key_from_a_secret() {
    let rendered = render(github_app());
    assert_eq!(rendered.env("PLUE_GITHUB_APP_ID")["value"], "4242");
    assert_eq!(
        rendered.env("PLUE_GITHUB_APP_KEY_FILE")["value"],
        "/etc/plue-github-app/private-key.pem"
    );
    assert_eq!(
        rendered.env("PLUE_GITHUB_APP_API_URL")["value"],
        "https://ghe.example.com/api/v3"
    );
    let pod = &rendered.engine()["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "github-app")
        .unwrap_or_else(|| panic!("{pod}"));
    assert_eq!(volume["secret"]["secretName"], "plue-github-app");
    assert_eq!(volume["secret"]["items"][0]["key"], "private-key.pem");
    let mount = rendered.engine_container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "github-app")
        .cloned()
        .unwrap();
    assert_eq!(mount["mountPath"], "/etc/plue-github-app");
    assert_eq!(mount["readOnly"], true);
    // Only the engine's pod holds it.
    let holders: Vec<String> = rendered
        .objects
        .iter()
        .filter(|o| o.to_string().contains("plue-github-app\""))
        .map(|o| {
            let name = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            format!("{}/{}", name(&o["kind"]), name(&o["metadata"]["name"]))
        })
        .collect();
    assert_eq!(holders, ["Deployment/plue"], "{holders:?}");
    // Without an App, nothing of it.
    let plain = render(json!({}));
    assert!(!plain.engine().to_string().contains("GITHUB_APP"));
    assert_render_refuses(
        &json!({"githubApp": {"id": 4242}}),
        "githubApp.existingSecret",
    );
}

// The App's webhook secret (its installation deliveries) is a second file of the same
// Secret volume; registering installed repositories is a flag that needs it.
#[test]
fn a_github_apps_webhook_secret_and_registering_come_from_the_same_secret() {
    let mut values = github_app();
    values["githubApp"]["webhookSecretKey"] = json!("webhook-secret");
    values["githubApp"]["registerInstalledRepos"] = json!(true);
    values["githubApp"]["installationOwners"] = json!(["acme", "Widgets"]);
    let rendered = render(values);
    assert_eq!(
        rendered.env("PLUE_GITHUB_APP_WEBHOOK_SECRET_FILE")["value"],
        "/etc/plue-github-app/webhook-secret"
    );
    assert_eq!(
        rendered.env("PLUE_REGISTER_INSTALLED_REPOS")["value"],
        "true"
    );
    // The accounts whose installations are accepted: `--installation-owner`'s variable.
    assert_eq!(
        rendered.env("PLUE_INSTALLATION_OWNERS")["value"],
        "acme,Widgets"
    );
    let pod = &rendered.engine()["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "github-app")
        .unwrap_or_else(|| panic!("{pod}"));
    let keys: Vec<&str> = volume["secret"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["private-key.pem", "webhook-secret"]);
    // By default neither: installation deliveries are refused, nothing is registered.
    let plain = render(github_app()).engine().to_string();
    assert!(!plain.contains("WEBHOOK_SECRET_FILE") && !plain.contains("REGISTER_INSTALLED"));
    // No account accepted by default: every installation is refused.
    assert!(!plain.contains("PLUE_INSTALLATION_OWNERS"), "{plain}");
    assert_render_refuses(
        &json!({"githubApp": {"id": 4242, "existingSecret": "plue-github-app",
                              "installationOwners": ["acme"]}}),
        "githubApp.installationOwners needs githubApp.webhookSecretKey",
    );
    // One entry holding two accounts (or a pattern) is no login: refused by the schema.
    for smuggled in ["acme,mallory", "*", "acme/*"] {
        let mut values = github_app();
        values["githubApp"]["webhookSecretKey"] = json!("webhook-secret");
        values["githubApp"]["installationOwners"] = json!([smuggled]);
        let output = render_output(&values);
        assert!(!output.status.success(), "{smuggled} rendered");
    }
    // Registering without the secret could never receive an installation: refused.
    assert_render_refuses(
        &json!({"githubApp": {"id": 4242, "existingSecret": "plue-github-app",
                              "registerInstalledRepos": true}}),
        "githubApp.registerInstalledRepos needs githubApp.webhookSecretKey",
    );
}

// The provenance signing key reaches `plue serve --signing-key` (PLUE_SIGNING_KEY) as a
// file of a read-only Secret volume of the engine's pod only; without the Secret, no key
// is mounted and the engine makes its own.
#[test]
fn a_provenance_signing_key_comes_from_a_secret_of_the_engine_pod_only() {
    let rendered = render(existing_secret());
    assert_eq!(
        rendered.env("PLUE_SIGNING_KEY")["value"],
        "/etc/plue-provenance/signing-key.pem"
    );
    let pod = &rendered.engine()["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "provenance")
        .unwrap_or_else(|| panic!("{pod}"));
    assert_eq!(volume["secret"]["secretName"], "plue-provenance");
    assert_eq!(volume["secret"]["items"][0]["key"], "signing-key.pem");
    let mount = rendered.engine_container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "provenance")
        .cloned()
        .unwrap();
    assert_eq!(mount["mountPath"], "/etc/plue-provenance");
    assert_eq!(mount["readOnly"], true);
    let holders: Vec<String> = rendered
        .objects
        .iter()
        .filter(|o| o.to_string().contains("plue-provenance\""))
        .map(|o| {
            let name = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            format!("{}/{}", name(&o["kind"]), name(&o["metadata"]["name"]))
        })
        .collect();
    assert_eq!(holders, ["Deployment/plue"], "{holders:?}");
    let plain = render(json!({}));
    assert!(!plain.engine().to_string().contains("PLUE_SIGNING_KEY"));
}

#[test]
fn an_external_database_and_an_existing_secret_replace_the_chart_made_ones() {
    let external = render(external_database());
    assert!(
        external.all("StatefulSet").is_empty(),
        "no in-chart PostgreSQL"
    );
    let from = &external.env("DATABASE_URL")["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (&from["name"], &from["key"]),
        (&json!("plue-database"), &json!("database-url"))
    );
    let stored = external.one("Secret", "plue-database")["data"]["database-url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !stored.contains("hunter2"),
        "the URL is only in the Secret, encoded"
    );
    assert!(
        !external.engine().to_string().contains("hunter2"),
        "never in the pod spec"
    );

    let existing = render(existing_secret());
    assert!(
        existing.all("Secret").is_empty(),
        "the chart makes no Secret: {:?}",
        existing.names()
    );
    for var in ["PLUE_ADMIN_TOKEN", "PLUE_RUNNER_TOKEN", "PLUE_SECRET_KEY"] {
        let from = &existing.env(var)["valueFrom"]["secretKeyRef"];
        assert_eq!(from["name"], "plue-credentials", "{var}");
    }
    let from = &existing.env("DATABASE_URL")["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (&from["name"], &from["key"]),
        (&json!("plue-db"), &json!("url"))
    );
    assert!(
        existing.notes.contains("get secret plue-credentials"),
        "{}",
        existing.notes
    );

    // No database at all is refused with what to set, not rendered into a crash loop.
    let chart = chart_dir();
    let output = python::run_script(
        "chart.py",
        &["render", chart.to_str().unwrap(), NAMESPACE],
        json!({"postgresql": {"enabled": false}})
            .to_string()
            .as_bytes(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "no database: set database.url, database.existingSecret, or postgresql.enabled=true"
        ),
        "{stderr}"
    );
}

#[test]
fn the_engine_account_cannot_reach_beyond_pods_secrets_leases_and_events_of_its_namespace() {
    for (name, values) in value_sets() {
        let rendered = render(values);
        for kind in ["ClusterRole", "ClusterRoleBinding"] {
            assert!(rendered.all(kind).is_empty(), "{name}: a {kind}");
        }
        let roles = rendered.all("Role");
        assert_eq!(roles.len(), 1, "{name}");
        assert_eq!(roles[0]["metadata"]["namespace"], RUNNERS, "{name}");
        let mut granted = BTreeSet::new();
        for rule in roles[0]["rules"].as_array().unwrap() {
            assert!(rule["resourceNames"].is_null() || rule["resourceNames"].is_array());
            assert!(rule["nonResourceURLs"].is_null(), "{name}: {rule}");
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        let (g, r, v) = (
                            group.as_str().unwrap(),
                            resource.as_str().unwrap(),
                            verb.as_str().unwrap(),
                        );
                        assert!(
                            !g.contains('*') && !r.contains('*') && !v.contains('*'),
                            "{name}: a wildcard in {rule}"
                        );
                        granted.insert(format!("{g}/{r}:{v}"));
                    }
                }
            }
        }
        let expected: BTreeSet<String> = [
            "/pods:get",
            "/pods:list",
            "/pods:watch",
            "/pods:create",
            "/pods:delete",
            "/pods/log:get",
            "/secrets:create",
            "/secrets:delete",
            "coordination.k8s.io/leases:get",
            "coordination.k8s.io/leases:create",
            "coordination.k8s.io/leases:update",
            "/events:create",
            "/events:patch",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(granted, expected, "{name}");
        // The engine never reads a Secret through the API: a token it wrote is all it
        // touches, and only to create and delete it.
        for forbidden in [
            "/secrets:get",
            "/pods/exec:create",
            "/secrets:list",
            "/secrets:watch",
            "/pods:patch",
        ] {
            assert!(!granted.contains(forbidden), "{name}: {forbidden}");
        }
        let binding = &rendered.all("RoleBinding")[0];
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], roles[0]["metadata"]["name"]);
        let account = rendered.engine()["spec"]["template"]["spec"]["serviceAccountName"].clone();
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}])
        );
        // The in-chart PostgreSQL gets no token for the API at all.
        for set in rendered.all("StatefulSet") {
            let pod = &set["spec"]["template"]["spec"];
            assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        }
    }
}

#[test]
fn runner_pods_reach_only_the_engine_dns_and_the_configured_egress() {
    let rendered = render(json!({}));
    let pool: Value = {
        let file = rendered.pool_file();
        let instance = file
            .lines()
            .find_map(|l| l.trim().strip_prefix("instance: "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        json!({"instance": instance})
    };
    let runners = rendered.one("NetworkPolicy", "plue-runners");
    let spec = &runners["spec"];
    // It selects exactly the pods the pool creates (pool/kubernetes/pod.rs's labels).
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/managed-by": "plue", "app.kubernetes.io/instance": pool["instance"]})
    );
    let mut types: Vec<&str> = spec["policyTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(types, ["Egress", "Ingress"]);
    assert_eq!(
        spec["ingress"],
        json!([]),
        "nothing may connect to a runner pod"
    );
    let egress = spec["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 1, "the engine only: {egress:?}");
    let engine_rule = &egress[0];
    assert_eq!(
        engine_rule["to"][0]["podSelector"]["matchLabels"],
        rendered.engine()["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        engine_rule["ports"],
        json!([{"port": 8601, "protocol": "TCP"}]),
        "the runner port only: not the API, dashboard, webhooks or metrics"
    );
    // DNS is the default class's (a `step` class: its steps never share the pod's network).
    let class = rendered.one("NetworkPolicy", "plue-runners-default");
    let dns = &class["spec"]["egress"][0];
    assert_eq!(
        dns["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    for port in dns["ports"].as_array().unwrap() {
        assert_eq!(port["port"], 53);
    }
    // No rule opens everything (an empty `to` or an ipBlock of the world).
    for rule in egress
        .iter()
        .chain(class["spec"]["egress"].as_array().unwrap())
    {
        assert!(
            rule["to"].as_array().is_some_and(|to| !to.is_empty()),
            "{rule}"
        );
        assert!(!rule.to_string().contains("0.0.0.0/0"), "{rule}");
    }
    // The runner pods cannot select the engine pods or the database by accident.
    let engine_labels = &rendered.engine()["spec"]["template"]["metadata"]["labels"];
    assert_ne!(engine_labels["app.kubernetes.io/managed-by"], "plue");

    let engine_policy = rendered.one("NetworkPolicy", "plue-engine");
    assert_eq!(
        engine_policy["spec"]["ingress"][0]["ports"][0]["port"],
        "http"
    );
    // The runner port: from the runner pods only.
    let runner_port = &engine_policy["spec"]["ingress"][1];
    assert_eq!(
        runner_port["ports"],
        json!([{"port": "runners", "protocol": "TCP"}])
    );
    assert_eq!(runner_port["from"].as_array().unwrap().len(), 1);
    assert_eq!(
        runner_port["from"][0]["podSelector"]["matchLabels"],
        spec["podSelector"]["matchLabels"]
    );
    let database = rendered.one("NetworkPolicy", "plue-postgresql");
    assert_eq!(
        database["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
        rendered.engine()["spec"]["selector"]["matchLabels"],
        "only the engine reaches PostgreSQL"
    );

    // Restricting who reaches the engine keeps the runners in.
    let restricted = render(json!({"networkPolicy": {"engine": {"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}]}}}));
    let ingress = restricted.one("NetworkPolicy", "plue-engine")["spec"]["ingress"].clone();
    assert_eq!(ingress[0]["from"].as_array().unwrap().len(), 1, "{ingress}");
    assert_eq!(
        ingress[1]["from"][0]["podSelector"]["matchLabels"], spec["podSelector"]["matchLabels"],
        "the runner pods may still reach the runner port"
    );

    // Configured egress is added, nothing else.
    let open = render(json!({"networkPolicy": {"runners": {"egress": [
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
         "ports": [{"port": 443, "protocol": "TCP"}]}]}}}));
    let egress = open.one("NetworkPolicy", "plue-runners")["spec"]["egress"].clone();
    assert_eq!(egress.as_array().unwrap().len(), 2);
    assert_eq!(egress[1]["ports"][0]["port"], 443);
}

/// A class's `egress` becomes a NetworkPolicy selecting that class's runner pods only,
/// after the cluster's DNS (a `step` class's); a class without it gets DNS alone.
#[test]
fn a_class_declares_its_own_egress() {
    let mut values = three_replicas_two_classes();
    values["pool"]["classes"][0]["egress"] = json!([
        {"to": [{"ipBlock": {"cidr": "151.101.0.0/16"}}], "ports": [{"port": 443, "protocol": "TCP"}]}]);
    let rendered = render(values);
    let small = rendered.one("NetworkPolicy", "plue-runners-small");
    assert_eq!(small["metadata"]["namespace"], RUNNERS);
    assert_eq!(small["spec"]["policyTypes"], json!(["Egress"]));
    let runners = rendered.one("NetworkPolicy", "plue-runners");
    let mut selector = runners["spec"]["podSelector"]["matchLabels"].clone();
    selector["plue.dev/class"] = json!("small");
    assert_eq!(small["spec"]["podSelector"]["matchLabels"], selector);
    assert_eq!(small["spec"]["egress"][0]["ports"][0]["port"], 53);
    assert_eq!(small["spec"]["egress"][1]["ports"][0]["port"], 443);
    let sandboxed = rendered.one("NetworkPolicy", "plue-runners-sandboxed");
    assert_eq!(
        sandboxed["spec"]["egress"].as_array().unwrap().len(),
        1,
        "DNS alone: {sandboxed}"
    );
    // The pool's configuration is unchanged: the engine never sees `egress`.
    let pool = rendered.one("ConfigMap", "plue-pool")["data"]["pool.yaml"].clone();
    assert!(!pool.as_str().unwrap().contains("egress"), "{pool}");
}

#[test]
fn the_disruption_budget_covers_the_engine_pods() {
    let rendered = render(three_replicas_two_classes());
    assert_eq!(rendered.engine()["spec"]["replicas"], 3);
    let pdb = rendered.one("PodDisruptionBudget", "plue");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        rendered.engine()["spec"]["selector"]["matchLabels"]
    );
    let pod_labels = &rendered.engine()["spec"]["template"]["metadata"]["labels"];
    for (key, value) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "the PDB selects the engine's pods");
    }
}

#[test]
fn the_ingress_serves_the_engine_over_tls_and_the_notes_give_its_webhook_urls() {
    let rendered = render(ingress_with_tls());
    let ingress = rendered.one("Ingress", "plue");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(
        ingress["spec"]["tls"],
        json!([{"secretName": "plue-tls", "hosts": ["ci.example.com"]}])
    );
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend, &json!({"name": "plue", "port": {"name": "http"}}));
    let public = &rendered.env("PLUE_PUBLIC_URL")["value"];
    assert_eq!(public, "https://ci.example.com");
    let notes = &rendered.notes;
    for line in [
        "GitHub: https://ci.example.com/webhooks/github",
        "Gitea:  https://ci.example.com/webhooks/gitea",
        "kubectl -n ci get secret plue \\",
        "-o jsonpath='{.data.admin-token}' | base64 -d",
    ] {
        assert!(notes.contains(line), "NOTES.txt lacks {line:?}:\n{notes}");
    }
    let plain = render(json!({}));
    assert!(plain
        .notes
        .contains("GitHub: http://plue.ci.svc:8600/webhooks/github"));
    assert!(plain.notes.contains("port-forward svc/plue 8600:8600"));
}

/// The ConfigMap's `pool.yaml` is a pool configuration the real binary accepts.
#[test]
fn the_pool_configmap_passes_plue_serve_check_config() {
    let sandbox = Sandbox::new("chart-pool");
    let help = sandbox.plue(&["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--check-config") && help.contains("--pool-config"),
        "`plue serve` has no --check-config/--pool-config: the chart's pool file cannot be checked\n{help}"
    );
    for (name, values) in value_sets() {
        let rendered = render(values);
        let file = sandbox.write("pool.yaml", &rendered.pool_file());
        // The Deployment's own arguments, the mounted file's path pointed at this copy.
        let mut args: Vec<String> = rendered.engine_container()["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("/etc/plue/pool.yaml", file.to_str().unwrap())
            })
            .collect();
        args.push("--check-config".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = sandbox.plue(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: plue refused the chart's pool file:\n{}\n{}",
            rendered.pool_file(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(
                "valid: namespace ci-runners, engine_url http://plue.ci.svc:8601, instance plue"
            ),
            "{name}: {stdout}"
        );
        if name == "three replicas, two classes" {
            assert!(stdout.contains("2 class(es)"), "{stdout}");
            assert!(
                stdout.contains("small: labels size=small, min_warm 2, max_runners 20, idle_timeout 300s, image plue:0.1.0"),
                "a class without a template runs the chart's image: {stdout}"
            );
            assert!(
                stdout.contains("sandboxed: labels sandbox=gvisor, min_warm 0, max_runners 5"),
                "{stdout}"
            );
            // A class with labels refuses forks unless it says otherwise.
            assert!(
                stdout.contains("image plue:0.1.0, refuses forks"),
                "{stdout}"
            );
            assert!(
                stdout.contains("registry.example/plue:1, accepts forks"),
                "{stdout}"
            );
            assert!(
                stdout.contains("allow_runtime_classes [gvisor], allow_service_account ci-runner"),
                "{stdout}"
            );
            assert!(
                rendered
                    .pool_file()
                    .contains("\"runtimeClassName\":\"gvisor\""),
                "{}",
                rendered.pool_file()
            );
        } else {
            assert!(
                stdout.contains("default: labels none, min_warm 1, max_runners 10"),
                "{name}: {stdout}"
            );
        }
    }
}

/// Every duration the chart documents (`values.schema.json`'s `duration`: integer seconds,
/// or a string with a unit, from 1 s to 7 days at both ends) and every class setting whose
/// YAML could change type (names and labels that read as numbers, booleans or null),
/// rendered by Helm, is accepted by the real `plue serve --check-config` with the value it
/// was given; and what the engine refuses (`"120"`, `"500ms"`, `"169h"`, `604801`, a
/// `min_warm` above `max_runners`, …) the chart refuses before rendering anything.
/// regression: the chart quoted numbers (`idle_timeout: "120"`), which the engine refuses,
/// and printed large ones as `6.048e+05`.
#[test]
fn every_value_the_chart_accepts_renders_a_pool_file_the_engine_accepts() {
    let sandbox = Sandbox::new("chart-values");
    // (value, the seconds `--check-config` reports for it)
    let durations: &[(Value, u64)] = &[
        (json!(1), 1),
        (json!(90), 90),
        (json!(120), 120),
        (json!(604800), 604800),
        (json!("1000ms"), 1),
        (json!("1500ms"), 1),
        (json!("604800000ms"), 604800),
        (json!("1s"), 1),
        (json!("90s"), 90),
        (json!("604800s"), 604800),
        (json!("5m"), 300),
        (json!("10080m"), 604800),
        (json!("1h"), 3600),
        (json!("168h"), 604800),
    ];
    // One class per duration (idle_timeout), each with settings that YAML could misread.
    let names = ["123", "true", "null", "1e3", "0x1f", "yes", "off", "n", "y"];
    let label_values = ["true", "1", "null", "1.5", "~", "yes", "", "0o17", "a b"];
    let classes: Vec<Value> = durations
        .iter()
        .enumerate()
        .map(|(i, (idle, _))| {
            let name = names.get(i).map_or(format!("c{i}"), |n| n.to_string());
            let max_runners = [1, 10000, 7][i % 3];
            let mut class = json!({"name": name, "max_runners": max_runners,
                "labels": {"n": label_values.get(i).copied().unwrap_or("x"), "i": i.to_string()},
                "idle_timeout": idle});
            match i % 3 {
                0 => class["min_warm"] = json!(1),
                1 => class["min_warm"] = json!(10000),
                _ => {}
            }
            if i % 2 == 0 {
                class["accept_forks"] = json!(i % 4 == 0);
            }
            class
        })
        .collect();
    for (i, (start, _)) in durations.iter().enumerate() {
        // The classes once with every start_timeout form; the namespace reads as a number.
        let values = if i == 0 {
            json!({"pool": {"startTimeout": start, "namespace": "123", "classes": classes}})
        } else {
            json!({"pool": {"startTimeout": start}})
        };
        let (code, message) = check_schema(&values);
        assert_eq!(code, Some(0), "the schema refused {values}: {message}");
        let rendered = render(values.clone());
        let pool = rendered.pool_file();
        let file = sandbox.write("pool.yaml", &pool);
        let output = sandbox.check_pool_config(&file, &[]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "plue refused the pool file rendered from {values}:\n{pool}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        if i > 0 {
            continue;
        }
        assert!(stdout.contains("valid: namespace 123,"), "{stdout}");
        assert!(
            stdout.contains(&format!("{} class(es)", durations.len())),
            "{stdout}"
        );
        for (j, class) in classes.iter().enumerate() {
            let line = stdout
                .lines()
                .find(|l| {
                    l.trim_start()
                        .starts_with(&format!("{}: ", class["name"].as_str().unwrap()))
                })
                .unwrap_or_else(|| panic!("no line for class {class}: {stdout}"));
            let expected = format!(
                "min_warm {}, max_runners {}, idle_timeout {}s",
                class["min_warm"].as_u64().unwrap_or(0),
                class["max_runners"],
                durations[j].1
            );
            assert!(line.contains(&expected), "{class}: {line} lacks {expected}");
            let label = format!("n={}", class["labels"]["n"].as_str().unwrap());
            assert!(line.contains(&label), "{class}: {line} lacks {label}");
            let forks = match class.get("accept_forks") {
                Some(Value::Bool(true)) => "accepts forks",
                _ => "refuses forks",
            };
            assert!(line.contains(forks), "{class}: {line}");
            // Then what the class enforces (step_network: step, the default: open only).
            assert!(
                line.ends_with("; enforces network: open"),
                "{class}: {line}"
            );
        }
    }
    // What the engine refuses, the schema refuses.
    let class = |extra: Value| {
        let mut class = json!({"name": "a", "max_runners": 2});
        class
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"pool": {"classes": [class]}})
    };
    let mut refused = Vec::new();
    for bad in [
        json!("120"),
        json!(0),
        json!(604801),
        json!("0s"),
        json!("999ms"),
        json!("604801s"),
        json!("10081m"),
        json!("169h"),
        json!("1d"),
        json!("5 m"),
        json!(1.5),
        json!(true),
    ] {
        refused.push(class(json!({"idle_timeout": bad})));
        refused.push(json!({"pool": {"startTimeout": bad}}));
    }
    refused.extend([
        class(json!({"min_warm": 10001, "max_runners": 10000})),
        class(json!({"labels": {"a": "x=y"}})),
        class(json!({"labels": {"a": "x,y"}})),
        class(json!({"labels": {"a": "x".repeat(64)}})),
        class(json!({"labels": {"a b": "x"}})),
        class(json!({"labels": {"a": "\u{202e}x"}})),
        class(json!({"labels": (0..9).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()})),
    ]);
    for values in refused {
        let (code, message) = check_schema(&values);
        assert_eq!(code, Some(3), "the schema accepted {values}: {message}");
    }
    // What no schema can say (one value against another), the rendering refuses.
    for (values, why) in [
        (class(json!({"min_warm": 3})), "must be at most max_runners"),
        (
            json!({"pool": {"classes": [{"name": "a", "max_runners": 1},
                                        {"name": "a", "max_runners": 1, "labels": {"x": "y"}}]}}),
            "two classes are named a",
        ),
        (
            json!({"pool": {"classes": [{"name": "a", "max_runners": 1, "labels": {"x": "y"}},
                                        {"name": "b", "max_runners": 1, "labels": {"x": "y"}}]}}),
            "already offers the labels",
        ),
    ] {
        assert_render_refuses(&values, why);
    }
}

/// Whether the chart's `values.schema.json` accepts `values`: the exit code (0 yes, 3 no)
/// and what Helm said.
fn check_schema(values: &Value) -> (Option<i32>, String) {
    let output = python::run_script(
        "chart.py",
        &["schema", chart_dir().to_str().unwrap()],
        values.to_string().as_bytes(),
    );
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// Runner pods run untrusted steps: by default they live in a namespace of their own
/// (Pod Security "restricted" enforced), where the engine's Role is, and where none of the
/// engine's Secrets are for a pod to name.
#[test]
fn runner_pods_get_a_namespace_of_their_own_by_default() {
    let rendered = render(json!({}));
    let namespace = rendered.one("Namespace", RUNNERS);
    let labels = &namespace["metadata"]["labels"];
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert!(
        rendered
            .pool_file()
            .contains(&format!("namespace: \"{RUNNERS}\"\n")),
        "{}",
        rendered.pool_file()
    );
    for (kind, name) in [
        ("Role", "plue-pool"),
        ("RoleBinding", "plue-pool"),
        ("NetworkPolicy", "plue-runners"),
    ] {
        assert_eq!(rendered.one(kind, name)["metadata"]["namespace"], RUNNERS);
    }
    // The engine, its Secrets and its configuration stay in the release's namespace.
    for (kind, name) in [
        ("Deployment", "plue"),
        ("Secret", "plue"),
        ("ConfigMap", "plue-pool"),
    ] {
        assert_eq!(rendered.one(kind, name)["metadata"]["namespace"], NAMESPACE);
    }
    assert!(rendered
        .notes
        .contains(&format!("start in namespace {RUNNERS}")));
    // Runner pods reach the engine across namespaces; the engine admits them by theirs.
    let runners = rendered.one("NetworkPolicy", "plue-runners");
    assert_eq!(
        runners["spec"]["egress"][0]["to"][0]["namespaceSelector"]["matchLabels"]
            ["kubernetes.io/metadata.name"],
        NAMESPACE
    );
    let restricted = render(json!({"networkPolicy": {"engine": {"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}]}}}));
    // The engine's runner port admits them by their namespace, whoever else reaches it.
    for rendered in [&rendered, &restricted] {
        let ingress = &rendered.one("NetworkPolicy", "plue-engine")["spec"]["ingress"];
        assert_eq!(
            ingress[1]["from"][0]["namespaceSelector"]["matchLabels"]
                ["kubernetes.io/metadata.name"],
            RUNNERS
        );
    }

    // A namespace that exists already: the chart makes none.
    let existing = render(json!({"pool": {"createNamespace": false}}));
    assert!(existing.all("Namespace").is_empty());
    assert_eq!(
        existing.one("Role", "plue-pool")["metadata"]["namespace"],
        RUNNERS
    );
    // Choosing the release's own namespace is explicit, and makes no Namespace.
    let shared = render(json!({"pool": {"namespace": NAMESPACE}}));
    assert!(shared.all("Namespace").is_empty());
    assert_eq!(
        shared.one("Role", "plue-pool")["metadata"]["namespace"],
        NAMESPACE
    );
    // A class's allow-lists reach the pool file.
    let classes = render(three_replicas_two_classes());
    let pool_file = classes.pool_file();
    for line in [
        "allow_config_map_volumes: [\"ca-bundle\"]",
        "allow_runtime_classes: [\"gvisor\"]",
        "allow_service_account: \"ci-runner\"",
    ] {
        assert!(pool_file.contains(line), "{line}: {pool_file}");
    }
}

#[test]
fn a_pool_without_classes_gets_no_role_and_no_kubernetes_flags() {
    let rendered = render(json!({"pool": {"classes": []}}));
    assert!(rendered.all("Role").is_empty() && rendered.all("RoleBinding").is_empty());
    assert!(rendered.all("ConfigMap").is_empty());
    let args = rendered.engine_container()["args"].to_string();
    assert!(!args.contains("--pool"), "{args}");
    let pod = &rendered.engine()["spec"]["template"]["spec"];
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "no pool, no API token"
    );
    let with_pool = render(json!({}));
    let pod = &with_pool.engine()["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], true);
}

#[test]
fn misspelt_or_unknown_values_are_refused_by_the_schema() {
    let chart = chart_dir();
    let check = |values: Value| {
        let output = python::run_script(
            "chart.py",
            &["schema", chart.to_str().unwrap()],
            values.to_string().as_bytes(),
        );
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    for (name, values) in value_sets() {
        assert_eq!(check(values).0, Some(0), "{name} is valid");
    }
    for (values, key) in [
        (json!({"replicaCont": 3}), "replicaCont"),
        (json!({"ingress": {"enabled": true, "tsl": []}}), "tsl"),
        (json!({"engine": {"resource": {}}}), "resource"),
        (
            json!({"pool": {"classes": [{"name": "a", "max_runner": 3}]}}),
            "max_runner",
        ),
        (json!({"database": {"URL": "postgres://x"}}), "URL"),
        (
            json!({"networkPolicy": {"runner": {"egress": []}}}),
            "runner",
        ),
    ] {
        let (code, message) = check(values.clone());
        assert_eq!(code, Some(3), "{values} was accepted: {message}");
        assert!(message.contains(key), "the refusal names {key}: {message}");
    }
    // Wrong types and values too.
    for values in [
        json!({"replicaCount": "3"}),
        json!({"replicaCount": 0}),
        json!({"secrets": {"adminToken": "short"}}),
        json!({"pool": {"classes": [{"name": "Not_A_Name", "max_runners": 1}]}}),
        json!({"image": {"pullPolicy": "Sometimes"}}),
        json!({"pool": {"createNamespace": "yes"}}),
        json!({"pool": {"classes": [{"name": "a", "max_runners": 1,
                                     "allow_secret_volumes": ["Not_A_Name"]}]}}),
        json!({"pool": {"classes": [{"name": "a", "max_runners": 1,
                                     "allow_service_account": ["a", "b"]}]}}),
        json!({"pool": {"classes": [{"name": "a", "max_runners": 1,
                                     "allow_runtime_classes": "gvisor"}]}}),
        json!({"engine": {"logFormat": "yaml"}}),
    ] {
        assert_eq!(check(values.clone()).0, Some(3), "{values} was accepted");
    }
    // And an install with a misspelt key does not render at all.
    let output = python::run_script(
        "chart.py",
        &["render", chart.to_str().unwrap(), NAMESPACE],
        json!({"replicaCont": 3}).to_string().as_bytes(),
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("replicaCont"));
}

/// The Deployment's command line and environment, as rendered, start a working engine
/// (only the listen address, data directory and database are pointed at this sandbox), and
/// it drains on SIGTERM well within the pod's termination grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_s_command_line_and_environment_start_a_working_engine() {
    const ADMIN: &str = "chart-admin-token-0123456789";
    const RUNNER: &str = "chart-runner-token-0123456789";
    let rendered = render(json!({
        "secrets": {"adminToken": ADMIN, "runnerToken": RUNNER, "secretKey": "chart-secret-key"},
        "pool": {"classes": []},
        "engine": {"trustedProxies": ["10.0.0.0/8", "192.168.1.7"]},
    }));
    let sandbox = Sandbox::new("chart-engine");
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let runner_listen = format!("127.0.0.1:{}", support::free_port());
    let data = sandbox.path("data");
    let container = rendered.engine_container();
    let mut args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    // The ingress's proxies reach `--trusted-proxy` (the engine below must accept them).
    let proxies: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "--trusted-proxy")
        .map(|w| w[1].as_str())
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "192.168.1.7"]);
    // How long a runner has to acknowledge a claim reaches `--claim-ack-ms`.
    let claim_ack = args.windows(2).find(|w| w[0] == "--claim-ack-ms");
    assert_eq!(claim_ack.map(|w| w[1].as_str()), Some("5000"));
    for (flag, value) in [
        ("--listen", listen.as_str()),
        ("--runner-listen", runner_listen.as_str()),
        ("--data-dir", data.to_str().unwrap()),
    ] {
        let at = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("no {flag}"));
        args[at + 1] = value.to_owned();
    }
    let secret = rendered.one("Secret", "plue");
    let mut command = sandbox.plue(&[]);
    command
        .env_remove("PLUE_ADMIN_TOKEN")
        .env_remove("PLUE_TOKEN");
    command.args(&args);
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        let value = match (&var["value"], &var["valueFrom"]["secretKeyRef"]) {
            (Value::String(value), _) => value.clone(),
            (_, Value::Object(from)) if from["name"] == "plue" => {
                let key = from["key"].as_str().unwrap();
                assert!(secret["data"][key].is_string(), "the Secret has {key}");
                match key {
                    "admin-token" => ADMIN.to_owned(),
                    "runner-token" => RUNNER.to_owned(),
                    "secret-key" => "chart-secret-key".to_owned(),
                    other => panic!("unexpected key {other}"),
                }
            }
            // The in-chart PostgreSQL's password: this test uses SQLite instead.
            (_, Value::Object(from)) if from["name"] == "plue-postgresql" => "unused".to_owned(),
            other => panic!("{name}: {other:?}"),
        };
        command.env(name, value);
    }
    let db = sandbox.path("plue.db");
    command.env("DATABASE_URL", format!("sqlite://{}", db.display()));
    let pid = sandbox.spawn("engine", command);
    let url = format!("http://{listen}");
    let http = reqwest::Client::new();
    support::wait_for(std::time::Duration::from_secs(30), "/readyz", || async {
        let ready = http.get(format!("{url}/readyz")).send().await.ok()?;
        ready.status().is_success().then_some(())
    })
    .await;
    // The chart's admin token is the engine's: it makes an API token; a wrong one does not.
    let created = http
        .post(format!("{url}/api/tokens"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "chart-test"}))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "{}",
        created.text().await.unwrap()
    );
    let refused = http
        .post(format!("{url}/api/tokens"))
        .bearer_auth("not-the-admin-token-at-all")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    // Runners register on the runner port, which serves nothing else; the public port
    // does not serve the runner protocol.
    let register = json!({"name": "chart-runner", "labels": {}, "ephemeral": true});
    let on = |base: &str| format!("{base}{}", plue_types::protocol::REGISTER);
    let runners = format!("http://{runner_listen}");
    // Not on the public listener; on the runners' own.
    for (base, status) in [(&url, 404), (&runners, 200)] {
        let answer = http
            .post(on(base))
            .bearer_auth(RUNNER)
            .json(&register)
            .send();
        assert_eq!(answer.await.unwrap().status(), status, "{base}");
    }
    for path in ["/api/runs", "/metrics", "/healthz", "/"] {
        let refused = http
            .get(format!("{runners}{path}"))
            .bearer_auth(ADMIN)
            .send();
        assert_eq!(
            refused.await.unwrap().status(),
            404,
            "{path} on the runner port"
        );
    }

    let grace = rendered.engine()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let status = sandbox
        .wait_exit(pid, std::time::Duration::from_secs(grace))
        .await;
    assert!(status.success(), "{status:?}\n{}", sandbox.diagnostics());
    assert!(
        started.elapsed().as_secs() < grace,
        "drained within the pod's grace"
    );
}

/// A class with `step_network: pod` (its runners run `network="none"` steps confined by
/// the pod's NetworkPolicy, not per step) reaches the engine's pool file, which the real
/// binary accepts, and its pods are confined: the runners' policy (the engine only) and the
/// class's own egress, no DNS. The chart refuses such a class where nothing would confine
/// it — no NetworkPolicy at all, or `networkPolicy.runners.egress` widening every class.
#[test]
fn a_pod_confined_class_renders_with_its_policy_and_never_without_one() {
    let mut values = three_replicas_two_classes();
    values["pool"]["classes"][1]["step_network"] = json!("pod");
    values["pool"]["classes"][1]["engine_proxy"] = json!("http://egress.ci.svc:3128");
    values["pool"]["classes"][1]["egress"] = json!([
        {"to": [{"ipBlock": {"cidr": "160.79.104.0/23"}}], "ports": [{"port": 443, "protocol": "TCP"}]}]);
    let rendered = render(values.clone());
    let pool = rendered.pool_file();
    assert!(pool.contains("step_network: \"pod\""), "{pool}");
    assert_eq!(
        pool.matches("step_network").count(),
        1,
        "only the class that says so: {pool}"
    );
    let runners = rendered.one("NetworkPolicy", "plue-runners");
    assert_eq!(runners["spec"]["egress"].as_array().unwrap().len(), 1);
    let class = rendered.one("NetworkPolicy", "plue-runners-sandboxed");
    assert_eq!(
        class["spec"]["podSelector"]["matchLabels"]["plue.dev/class"],
        "sandboxed"
    );
    assert_eq!(
        class["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"],
        "160.79.104.0/23"
    );

    // The engine reads the setting from the chart's file.
    let sandbox = Sandbox::new("chart-step-network");
    let file = sandbox.write("pool.yaml", &pool);
    let output = sandbox.check_pool_config(&file, &["--pool", "kubernetes"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("step_network pod"), "{stdout}");
    // What the class enforces, which routes steps to it, and the runners' engine proxy.
    assert!(
        stdout.contains("engine_proxy http://egress.ci.svc:3128; enforces network: open, none"),
        "{stdout}"
    );

    let mut bad = values.clone();
    bad["pool"]["classes"][1]["step_network"] = json!("namespace");
    assert_eq!(check_schema(&bad).0, Some(3), "the schema accepted {bad}");
    let mut bad = values.clone();
    bad["pool"]["classes"][1]["engine_proxy"] = json!("socks5://p:1080");
    assert_eq!(check_schema(&bad).0, Some(3), "the schema accepted {bad}");
    for (changes, why) in [
        (
            json!({"enabled": false}),
            "pool.classes sandboxed: step_network: pod needs networkPolicy.enabled",
        ),
        (
            json!({"runners": {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}}),
            "networkPolicy.runners.egress would widen that for every class",
        ),
    ] {
        let mut values = values.clone();
        values["networkPolicy"] = changes;
        assert_render_refuses(&values, why);
    }
}

/// A class with `egress_proxy: true`: the chart deploys `plue egress-proxy` with its own
/// token (which the engine reads too), lets only runner pods reach it and it only the
/// engine's runner port, DNS and the world outside the cluster's networks and link-local;
/// the class's pods may reach the proxy; the pool file names it and the engine says the
/// class enforces allow-lists. Refused without the proxy or without `step_network: pod`.
#[test]
fn an_egress_proxy_class_renders_the_proxy_its_policies_and_its_token() {
    let mut values = three_replicas_two_classes();
    values["egressProxy"] = json!({"enabled": true,
        "clusterCidrs": ["10.244.0.0/16", "10.96.0.0/12", "fd00:10::/56"]});
    values["pool"]["classes"][1]["step_network"] = json!("pod");
    values["pool"]["classes"][1]["egress_proxy"] = json!(true);
    let rendered = render(values.clone());

    let proxy = rendered.one("Deployment", "plue-egress");
    let container = &proxy["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "egress-proxy");
    for pair in [
        ["--engine", "http://plue.ci.svc:8601"],
        ["--token-file", "/etc/plue-egress/token"],
        ["--deny", "127.0.0.0/8"],
        ["--deny", "10.244.0.0/16"],
        ["--deny", "10.96.0.0/12"],
        ["--deny", "fd00:10::/56"],
    ] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
    }
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        proxy["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    let token_volume = |deployment: &Value| {
        deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["secret"]["secretName"] == "plue-egress-proxy")
            .cloned()
    };
    assert!(token_volume(proxy).is_some(), "{proxy}");
    let engine = rendered.one("Deployment", "plue");
    assert!(token_volume(engine).is_some(), "{engine}");
    let env = engine["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains(r#""name":"PLUE_EGRESS_PROXY_TOKEN_FILE","value":"/etc/plue-egress/token""#),
        "{env}"
    );
    rendered.one("Secret", "plue-egress-proxy");
    assert_eq!(
        rendered.one("Service", "plue-egress")["spec"]["ports"][0]["port"],
        3128
    );

    // The proxy: reached by runner pods only; reaching the engine's runner port, DNS and
    // the outside, never the cluster's networks or link-local.
    let policy = rendered.one("NetworkPolicy", "plue-egress-proxy");
    let from = &policy["spec"]["ingress"][0]["from"];
    assert_eq!(from.as_array().unwrap().len(), 1, "{policy}");
    assert_eq!(
        from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        RUNNERS
    );
    let egress = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress[0]["ports"][0]["port"], 8601, "{policy}");
    let outside = &egress[2]["to"];
    assert_eq!(outside[0]["ipBlock"]["cidr"], "0.0.0.0/0");
    assert_eq!(
        outside[0]["ipBlock"]["except"],
        json!(["169.254.0.0/16", "10.244.0.0/16", "10.96.0.0/12"])
    );
    assert_eq!(
        outside[1]["ipBlock"]["except"],
        json!(["fe80::/10", "fd00:10::/56"])
    );
    // The engine's runner port admits the proxy besides the runner pods.
    let engine_policy = rendered.one("NetworkPolicy", "plue-engine");
    let runner_port = &engine_policy["spec"]["ingress"][1]["from"];
    assert_eq!(runner_port.as_array().unwrap().len(), 2, "{engine_policy}");
    assert_eq!(
        runner_port[1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "egress-proxy"
    );
    // The class's pods reach the proxy; the other class's do not.
    let class = rendered.one("NetworkPolicy", "plue-runners-sandboxed");
    assert_eq!(
        class["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]
            ["app.kubernetes.io/component"],
        "egress-proxy"
    );
    let small = rendered.one("NetworkPolicy", "plue-runners-small");
    assert!(!small.to_string().contains("egress-proxy"), "{small}");

    // The pool file names the proxy, and the engine says what the class enforces.
    let pool = rendered.pool_file();
    assert!(
        pool.contains("egress_proxy: \"http://plue-egress.ci.svc:3128\""),
        "{pool}"
    );
    assert_eq!(pool.matches("egress_proxy").count(), 1, "{pool}");
    let sandbox = Sandbox::new("chart-egress-proxy");
    let file = sandbox.write("pool.yaml", &pool);
    let output = sandbox.check_pool_config(&file, &["--pool", "kubernetes"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("enforces network: open, none, allow-list"),
        "{stdout}"
    );

    let mut bad = values.clone();
    bad["egressProxy"]["clusterCidrs"] = json!(["not a network"]);
    assert_eq!(check_schema(&bad).0, Some(3), "the schema accepted {bad}");
    let mut without = values.clone();
    without["egressProxy"] = json!({"enabled": false});
    assert_render_refuses(&without, "egress_proxy needs egressProxy.enabled");
    let mut unconfined = values.clone();
    unconfined["pool"]["classes"][1]["step_network"] = json!("step");
    assert_render_refuses(&unconfined, "egress_proxy needs step_network: pod");
    let mut no_cidrs = values;
    no_cidrs["egressProxy"]["clusterCidrs"] = json!([]);
    assert_render_refuses(&no_cidrs, "egressProxy.clusterCidrs");
}

/// Whether the egress `rules` let a pod send a DNS question: a rule naming port 53 (or a
/// range over it, or kube-dns's named ports), or one naming no port at all.
fn opens_dns(rules: &[Value]) -> bool {
    rules.iter().any(|rule| match rule["ports"].as_array() {
        None => true,
        Some(ports) if ports.is_empty() => true,
        Some(ports) => ports.iter().any(|port| {
            let number = port["port"].as_i64();
            let end = port["endPort"].as_i64().or(number);
            number.is_some_and(|n| n <= 53 && end.is_some_and(|e| e >= 53))
                || ["dns", "dns-tcp", "domain"].contains(&port["port"].as_str().unwrap_or(""))
        }),
    })
}

/// Every egress rule the NetworkPolicies give a runner pod of `class` (they add up).
fn egress_of_class(rendered: &Rendered, class: &str) -> Vec<Value> {
    let labels = json!({"app.kubernetes.io/managed-by": "plue",
        "app.kubernetes.io/instance": "plue", "plue.dev/class": class});
    rendered
        .all("NetworkPolicy")
        .into_iter()
        .filter(|policy| policy["metadata"]["namespace"] == RUNNERS)
        .filter(|policy| {
            let selector = policy["spec"]["podSelector"]["matchLabels"]
                .as_object()
                .unwrap();
            selector.iter().all(|(k, v)| labels[k] == *v)
        })
        .flat_map(|policy| {
            policy["spec"]["egress"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// attack: a `network="none"` step on a pod shares its pod's network; a lookup of
/// `<data>.attacker.example` through the cluster's resolvers carried the data to the
/// attacker's name server. A `step_network: pod` class's pods get no DNS from any policy
/// (an allow-list step's names are resolved by the egress proxy, the runner's by the
/// engine into the pod's /etc/hosts: `resolve` reaches the pool file, which the real
/// binary accepts); a `step` class keeps the cluster's DNS; a pod class whose egress opens
/// port 53 is refused.
#[test]
fn a_none_step_on_a_pod_confined_class_has_no_dns_to_carry_data_out() {
    let mut values = three_replicas_two_classes();
    values["egressProxy"] = json!({"enabled": true, "clusterCidrs": ["10.244.0.0/16"]});
    values["pool"]["classes"][1]["step_network"] = json!("pod");
    values["pool"]["classes"][1]["egress_proxy"] = json!(true);
    values["pool"]["classes"][1]["resolve"] = json!(["api.anthropic.com", "github.com"]);
    values["pool"]["classes"][1]["egress"] = json!([
        {"to": [{"ipBlock": {"cidr": "160.79.104.0/23"}}], "ports": [{"port": 443, "protocol": "TCP"}]}]);
    let rendered = render(values.clone());
    let confined = egress_of_class(&rendered, "sandboxed");
    assert!(!confined.is_empty());
    assert!(!opens_dns(&confined), "{confined:#?}");
    assert!(opens_dns(&egress_of_class(&rendered, "small")));

    let pool = rendered.pool_file();
    assert!(
        pool.contains("resolve: [\"api.anthropic.com\",\"github.com\"]"),
        "{pool}"
    );
    let sandbox = Sandbox::new("chart-no-dns");
    let file = sandbox.write("pool.yaml", &pool);
    let output = sandbox.check_pool_config(&file, &["--pool", "kubernetes"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("resolve [api.anthropic.com, github.com]"),
        "{stdout}"
    );

    for port in [
        json!({"port": 53, "protocol": "UDP"}),
        json!({"port": 1, "endPort": 1024}),
        json!({"port": "dns"}),
    ] {
        let mut opened = values.clone();
        opened["pool"]["classes"][1]["egress"] = json!([
            {"to": [{"ipBlock": {"cidr": "10.96.0.10/32"}}], "ports": [port]}]);
        assert_render_refuses(&opened, "its egress must not open port 53");
    }
    // Found in review: a rule with no ports, or a port entry with no number, opens every
    // port — DNS included.
    for (rule, says) in [
        (
            json!({"to": [{"ipBlock": {"cidr": "10.96.0.10/32"}}]}),
            "an egress rule without ports opens every port",
        ),
        (
            json!({"to": [{"ipBlock": {"cidr": "10.96.0.10/32"}}], "ports": [{"protocol": "UDP"}]}),
            "an egress port without a port number opens every port",
        ),
    ] {
        let mut opened = values.clone();
        opened["pool"]["classes"][1]["egress"] = json!([rule]);
        assert_render_refuses(&opened, says);
    }
    let mut unconfined = values;
    unconfined["pool"]["classes"][1]["step_network"] = json!("step");
    unconfined["pool"]["classes"][1]["egress_proxy"] = json!(false);
    assert_render_refuses(&unconfined, "resolve needs step_network: pod");
}
