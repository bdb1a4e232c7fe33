//! The Kubernetes pool against the real `plue` binary. No cluster runs on these machines:
//! the Kubernetes API is testkit's local server (`testkit::kube`), reached through the
//! real kube-rs client over HTTP with `KUBECONFIG`, and its simulated kubelet runs each
//! runner pod's container as a real `plue runner` process.

#[allow(dead_code)] // each test binary uses part of the support module
mod support;

use support::Sandbox;

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
    let output = sandbox
        .plue(&[
            "serve",
            "--check-config",
            "--pool-config",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
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
    let output = sandbox
        .plue(&[
            "serve",
            "--check-config",
            "--pool-config",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
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
    let missing = sandbox
        .plue(&[
            "serve",
            "--check-config",
            "--pool-config",
            "/nonexistent/pool.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("reading the pool configuration /nonexistent/pool.yaml"));
}
