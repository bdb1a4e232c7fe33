//! Tests of `config_file`: a good file with its defaults, every problem reported with its
//! field and value, and each class option's rules.

use super::*;

const GOOD: &str = r#"
kubernetes:
  namespace: ci
  engine_url: http://plue.ci.svc:8600/
classes:
  - name: small
    labels: {size: small}
    min_warm: 2
    max_runners: 20
    idle_timeout: 5m
    allow_runtime_classes: [gvisor]
    template:
      spec:
        runtimeClassName: gvisor
        nodeSelector: {pool: runners}
        containers:
          - name: runner
            image: registry.example/plue:1
            resources: {limits: {cpu: 1, memory: 1Gi}}
  - name: gpu
    labels: {size: small, gpu: "yes"}
    max_runners: 2
    idle_timeout: 90
    accept_forks: true
    step_network: pod
    template:
      spec:
        containers: [{name: runner, image: registry.example/plue-gpu:1}]
"#;

#[test]
fn a_good_file_parses_with_defaults_filled_in() {
    let file = parse(GOOD, "pool.yaml").unwrap();
    assert_eq!(file.kubernetes.namespace, "ci");
    assert_eq!(file.kubernetes.engine_url, "http://plue.ci.svc:8600");
    assert_eq!(file.kubernetes.instance, "plue");
    assert_eq!(file.kubernetes.start_timeout, DEFAULT_START);
    assert_eq!(file.kubernetes.max_start_backoff, DEFAULT_MAX_START_BACKOFF);
    let [small, gpu] = &file.classes[..] else {
        panic!("two classes")
    };
    assert_eq!((small.min_warm, small.max_runners), (2, 20));
    assert_eq!(small.idle_timeout, Duration::from_secs(300));
    assert_eq!(gpu.idle_timeout, Duration::from_secs(90));
    // A class with labels refuses forks unless it says otherwise.
    assert!(!small.accept_forks && gpu.accept_forks);
    // Each step confines its own network unless the class says its pods are.
    assert_eq!(small.step_network, StepNetwork::Step);
    assert_eq!(gpu.step_network, StepNetwork::Pod);
    let summary = summary(&file, "pool.yaml");
    assert!(summary.contains("step_network pod"), "{summary}");
    assert!(
        summary.contains("refuses forks, allow_runtime_classes [gvisor]; enforces network: open\n"),
        "{summary}"
    );
    assert!(
        summary.ends_with("; enforces network: open, none"),
        "{summary}"
    );
    let spec = small.template.spec.as_ref().unwrap();
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    let limits = spec.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["cpu"].0, "1", "a YAML number is a quantity string");
    let step = BTreeMap::from([("size".to_string(), "small".to_string())]);
    assert!(small.serves(&step) && gpu.serves(&step));
    assert!(small.serves(&BTreeMap::new()));
    let gpu_step = BTreeMap::from([("gpu".to_string(), "yes".to_string())]);
    assert!(!small.serves(&gpu_step) && gpu.serves(&gpu_step));
}

#[test]
fn every_problem_is_reported_with_its_field_and_value() {
    let text = r#"
kubernetes: {namespace: CI_Space, engine_url: "plue:8600", max_start_backoff: forever}
classes:
  - name: a
    labels: {"bad key!": x}
    min_warm: 5
    max_runners: 2
    idle_timeout: 5 minutes
    template:
      spec:
        hostNetwork: true
        automountServiceAccountToken: true
        restartPolicy: Always
        containers:
          - name: runner
            image: img
            command: [sh]
            securityContext: {privileged: true, capabilities: {add: [SYS_ADMIN]}}
        volumes: [{name: plue-token, emptyDir: {}}]
  - name: a
    max_runners: 1
    template: {spec: {containers: [{name: sidecar, image: x}]}}
"#;
    let err = parse(text, "f.yaml").unwrap_err();
    let all = err.to_string();
    for expected in [
        "f.yaml: kubernetes.namespace: \"CI_Space\" is not a DNS label",
        "f.yaml: kubernetes.engine_url: \"plue:8600\" is not an http:// or https:// URL",
        "f.yaml: kubernetes.max_start_backoff: expected a duration",
        "classes[0].labels: invalid label 'bad key!=x'",
        "classes[0].min_warm: must be at most max_runners (2), got 5",
        "classes[0].idle_timeout: expected a duration",
        "\"5 minutes\"",
        "classes[0].template: pool class \"a\": spec.hostNetwork must not be true (host namespaces",
        "classes[0].template: pool class \"a\": spec.automountServiceAccountToken must not be true",
        "classes[0].template.spec.restartPolicy: must be Never",
        "classes[0].template.spec.containers[runner]: command and args are Plue's",
        "classes[0].template: pool class \"a\": spec.containers[runner].securityContext.privileged must not be true",
        "spec.containers[runner].securityContext.capabilities.add is not allowed (runner pods hold no capabilities), got SYS_ADMIN",
        "classes[0].template.spec.volumes: volume name 'plue-token' is reserved",
        "classes[1].name: 'a' is already the name of classes[0]",
        "classes[1].template.spec.containers: no container named 'runner'",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    assert!(err.problems.iter().all(|p| !p.contains('\n')), "{all}");
}

#[test]
fn syntax_errors_and_unknown_fields_are_refused_with_the_file_name() {
    let err = parse("kubernetes: [", "f.yaml").unwrap_err().to_string();
    assert!(err.starts_with("f.yaml: "), "{err}");
    let err = parse(
        "kubernetes: {namespace: ci, engine_url: http://e, nmespace: x}\nclasses: []",
        "f.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `nmespace`"), "{err}");
    let err = parse(
        "kubernetes: {namespace: ci, engine_url: http://e}",
        "f.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("classes: at least one class is needed"),
        "{err}"
    );
}

#[test]
fn classes_offering_the_same_labels_are_ambiguous() {
    let text = r#"
kubernetes: {namespace: ci, engine_url: http://e}
classes:
  - {name: a, max_runners: 1, template: {spec: {containers: [{name: runner, image: i}]}}}
  - {name: b, max_runners: 1, template: {spec: {containers: [{name: runner, image: i}]}}}
"#;
    let err = parse(text, "f").unwrap_err().to_string();
    assert!(
        err.contains("classes[1].labels: classes[0] already offers the same labels (none)"),
        "{err}"
    );
}

#[test]
fn a_class_routes_steps_by_the_network_policies_it_enforces() {
    let file = parse(GOOD, "pool.yaml").unwrap();
    let [small, gpu] = &file.classes[..] else {
        panic!("two classes")
    };
    let none = capability::Capability {
        none: true,
        allow: false,
    };
    assert_eq!(small.network(), capability::Capability::default());
    assert_eq!(gpu.network(), none);
    let asking = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let none_step = asking(&[("size", "small"), (capability::NONE, capability::YES)]);
    let allow_step = asking(&[("size", "small"), (capability::ALLOW, capability::YES)]);
    assert!(!small.serves(&none_step) && gpu.serves(&none_step));
    assert!(!small.serves(&allow_step) && !gpu.serves(&allow_step));
    assert_eq!(
        gpu.offered_labels(),
        asking(&[
            ("size", "small"),
            ("gpu", "yes"),
            (capability::NONE, capability::YES)
        ])
    );
}

#[test]
fn reserved_labels_and_bad_engine_proxies_are_refused() {
    let text = r#"
kubernetes: {namespace: ci, engine_url: http://e}
classes:
  - {name: a, max_runners: 1, labels: {plue.network/allow: "yes"}, engine_proxy: "socks://p",
     template: {spec: {containers: [{name: runner, image: i}]}}}
  - {name: b, max_runners: 1, engine_proxy: "http://proxy.ci:3128",
     template: {spec: {containers: [{name: runner, image: i}]}}}
"#;
    let err = parse(text, "f").unwrap_err().to_string();
    assert!(
        err.contains("classes[0].labels: the key 'plue.network/allow' is reserved"),
        "{err}"
    );
    assert!(
        err.contains("classes[0].engine_proxy: \"socks://p\" is not a proxy URL"),
        "{err}"
    );
    assert!(!err.contains("classes[1]"), "{err}");
}

#[test]
fn an_egress_proxy_is_a_pod_confined_class_s_and_gives_it_allow_lists() {
    let text = r#"
kubernetes: {namespace: ci, engine_url: http://e}
classes:
  - {name: a, max_runners: 1, egress_proxy: "http://plue-egress:3128",
     template: {spec: {containers: [{name: runner, image: i}]}}}
  - {name: b, max_runners: 1, labels: {b: x}, step_network: pod, egress_proxy: "http://u:p@e:1",
     template: {spec: {containers: [{name: runner, image: i}]}}}
"#;
    let err = parse(text, "f").unwrap_err().to_string();
    assert!(
        err.contains("classes[0].egress_proxy: needs `step_network: pod`"),
        "{err}"
    );
    assert!(
        err.contains("classes[1].egress_proxy: 'http://u:p@e:1' is not http://host:port"),
        "{err}"
    );
    let text = r#"
kubernetes: {namespace: ci, engine_url: http://e}
classes:
  - {name: a, max_runners: 1, step_network: pod, egress_proxy: "http://plue-egress:3128/",
     template: {spec: {containers: [{name: runner, image: i}]}}}
  - {name: b, max_runners: 1, labels: {b: x}, step_network: pod,
     template: {spec: {containers: [{name: runner, image: i}]}}}
"#;
    let file = parse(text, "f").unwrap();
    let asking = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let proxied = &file.classes[0];
    assert_eq!(
        proxied.egress_proxy.as_deref(),
        Some("http://plue-egress:3128")
    );
    assert_eq!(proxied.network(), capability::Capability::EVERY);
    assert!(proxied.serves(&asking(&[(capability::ALLOW, capability::YES)])));
    // Without one, an allow-list still fails closed before a claim.
    let confined = &file.classes[1];
    assert!(!confined.network().allow);
    assert!(!confined.serves(&asking(&[("b", "x"), (capability::ALLOW, capability::YES)])));
    let summary = summary(&file, "f");
    assert!(
        summary.contains(
            "egress_proxy http://plue-egress:3128 (allow-lists through the cluster's \
                 egress proxy); enforces network: open, none, allow-list"
        ),
        "{summary}"
    );
}

#[test]
fn resolve_is_a_pod_confined_class_s_list_of_host_names() {
    let text = r#"
kubernetes: {namespace: ci, engine_url: http://e}
classes:
  - {name: a, max_runners: 1, resolve: [api.anthropic.com],
     template: {spec: {containers: [{name: runner, image: i}]}}}
  - {name: b, max_runners: 1, labels: {b: x}, step_network: pod,
     resolve: ["*.attacker.example", "10.0.0.1", "a b", "-x.com"],
     template: {spec: {containers: [{name: runner, image: i}]}}}
"#;
    let err = parse(text, "f").unwrap_err().to_string();
    assert!(
        err.contains("classes[0].resolve: needs `step_network: pod`"),
        "{err}"
    );
    for bad in ["*.attacker.example", "10.0.0.1", "a b", "-x.com"] {
        assert!(
            err.contains(&format!("classes[1].resolve: {bad:?} is not a host name")),
            "{bad}: {err}"
        );
    }
    let text = r#"
kubernetes: {namespace: ci, engine_url: http://e}
classes:
  - {name: a, max_runners: 1, step_network: pod, resolve: [api.anthropic.com, github.com.],
     template: {spec: {containers: [{name: runner, image: i}]}}}
"#;
    let file = parse(text, "f").unwrap();
    assert_eq!(
        file.classes[0].resolve,
        ["api.anthropic.com", "github.com."]
    );
    assert!(summary(&file, "f").contains(
        "resolve [api.anthropic.com, github.com.] (into the pods' /etc/hosts: they have no DNS)"
    ));
}

#[test]
fn step_network_is_step_or_pod_and_nothing_else() {
    let text = r#"
kubernetes: {namespace: ci, engine_url: http://e}
classes:
  - {name: a, max_runners: 1, step_network: namespace, template: {spec: {containers: [{name: runner, image: i}]}}}
"#;
    let err = parse(text, "f").unwrap_err().to_string();
    assert!(
        err.contains("unknown variant `namespace`, expected `step` or `pod`"),
        "{err}"
    );
}
