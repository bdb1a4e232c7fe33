//! The chart on a real single-node Kubernetes (scripts/kube/up.sh: a real API server with
//! RBAC and Pod Security admission, scheduler, controller-manager, a kubelet on containerd
//! and runc, kube-proxy, cluster DNS and kube-router's NetworkPolicy firewall), installed
//! with the real `helm` and the project's own image, the engine in its pod as the docs
//! describe. What the emulator (`testkit::kube`, tests/kubernetes_pool.rs) cannot say is
//! checked here: Pod Security `restricted` admits what the chart and the pool write and
//! refuses what it should; the engine's RBAC is enough and no wider; NetworkPolicies
//! confine runner pods; the pool keeps `min_warm` real pods through kills, evictions,
//! images that cannot be had, an engine restart and two engines sharing the lease.
//!
//! Runs when the cluster is up (`source "$(scripts/kube/up.sh)"` sets KUBECONFIG and
//! PLUE_KUBE_BIN); skips otherwise, unless `PLUE_REQUIRE_KUBE=1` (`.ci/run`).
//!
//! One test, in phases: installing the chart takes most of a minute, and each phase builds
//! on the release the one before left.

use crate::support;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::real_kube::{cluster, connects, Cluster, Forge, Release, RELEASE};
use crate::support::{client, get_json, wait_final, wait_for, ADMIN_TOKEN, RUNNER_TOKEN};
use serde_json::{json, Value};

fn values(cluster: &Cluster, forge: &Forge) -> Value {
    // Runners check a run's commit out from its forge: each class reaches the forge's port
    // on the node's address, as a cluster's runners must reach theirs.
    let forge_egress = json!([{"to": [{"ipBlock": {"cidr": format!("{}/32", cluster.node_ip)}}],
        "ports": [{"port": forge.port(), "protocol": "TCP"}]}]);
    json!({
        "image": {"repository": "plue", "tag": "0.1.0", "pullPolicy": "Never"},
        "postgresql": {"enabled": false},
        "secrets": {"adminToken": ADMIN_TOKEN, "runnerToken": RUNNER_TOKEN},
        "engine": {"resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}},
        "pool": {
            "startTimeout": "45s",
            "classes": [
                {"name": "default", "labels": {}, "min_warm": 2, "max_runners": 3, "idle_timeout": "5m",
                 "egress": forge_egress},
                {"name": "confined", "labels": {"net": "pod"}, "min_warm": 1, "max_runners": 1,
                 "idle_timeout": "5m", "step_network": "pod", "egress": forge_egress},
                {"name": "proxied", "labels": {"net": "proxied"}, "min_warm": 1, "max_runners": 1,
                 "idle_timeout": "5m", "step_network": "pod", "egress_proxy": true,
                 "egress": forge_egress}
            ]
        },
        "egressProxy": {"enabled": true, "replicas": 1,
                        "clusterCidrs": [cluster.pod_cidr, cluster.svc_cidr]},
    })
}

/// The forge of the test's repositories: testkit's fake Gitea, on the node's address so
/// that the engine's pods reach it (runs on pods start from a repository: the runner checks
/// out the commit from the engine's mirror; a run of a workflow file of the engine's own

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_on_a_real_cluster() {
    let Some(cluster) = cluster() else { return };
    // The image of the binary under test, imported into the node's containerd.
    let image =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kube/images.sh"))
            .arg(&cluster.bin)
            .args(["--binary", env!("CARGO_BIN_EXE_plue")])
            .output()
            .expect("scripts/kube/images.sh");
    assert!(
        image.status.success(),
        "images.sh: {}",
        support::printed(&image)
    );

    let forge = Forge::start(&cluster);
    let mut release = Release::install(&cluster, values(&cluster, &forge));
    let (ns, runners) = (release.ns.clone(), release.runners.clone());
    let http = client();

    // -- Pod Security: the engine's and the runners' pods are admitted under `restricted`
    // (enforced cluster-wide by the API server's configuration, and by the label the chart
    // puts on the runners' namespace); a pod that is not hardened is refused.
    let labels = cluster.json(&["get", "namespace", &runners]);
    assert_eq!(
        labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
        "{labels}"
    );
    let warm = wait_for(
        Duration::from_secs(180),
        "2 warm default runner pods",
        || async {
            let pods = release.running_runners("default");
            (pods.len() == 2).then_some(pods)
        },
    )
    .await;
    for class in ["confined", "proxied"] {
        wait_for(
            Duration::from_secs(120),
            &format!("1 warm {class} runner pod"),
            || async { (release.running_runners(class).len() == 1).then_some(()) },
        )
        .await;
    }
    let refused = cluster.run(
        "kubectl",
        &[
            "-n",
            &runners,
            "run",
            "not-hardened",
            "--image=plue:0.1.0",
            "--image-pull-policy=Never",
            "--restart=Never",
            "--dry-run=server",
            "--",
            "sleep",
            "1",
        ],
        None,
    );
    assert!(
        !refused.status.success(),
        "a pod without hardening was admitted"
    );
    assert!(
        support::printed(&refused).contains("violates PodSecurity \"restricted:latest\""),
        "{}",
        support::printed(&refused)
    );

    // -- The warm pool: every warm pod registered with the engine.
    let engine = release.engine_url();
    wait_for(Duration::from_secs(120), "4 runners registered", || async {
        let runners = get_json(&http, &format!("{engine}/api/runners")).await;
        let online = runners
            .as_array()
            .map(|r| r.iter().filter(|r| r["status"] != "offline").count())
            .unwrap_or(0);
        (online >= 4).then_some(())
    })
    .await;

    // -- RBAC: the engine's ServiceAccount can do what the pool needs and nothing more.
    let sa = format!("system:serviceaccount:{ns}:{RELEASE}");
    // `kubectl auth can-i VERB pods/exec` would ask about a pod named "exec": a
    // subresource is its own flag.
    let can = |verb: &str, resource: &str, namespace: &str| {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let mut args = vec![
            "auth", "can-i", verb, resource, "-n", namespace, "--as", &sa,
        ];
        if !subresource.is_empty() {
            args.extend(["--subresource", subresource]);
        }
        let out = cluster.run("kubectl", &args, None);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for (verb, resource) in [
        ("create", "pods"),
        ("delete", "pods"),
        ("watch", "pods"),
        ("get", "pods/log"),
        ("create", "secrets"),
        ("delete", "secrets"),
        ("update", "leases.coordination.k8s.io"),
        ("create", "events"),
    ] {
        assert!(
            can(verb, resource, &runners),
            "the engine cannot {verb} {resource}"
        );
    }
    for (verb, resource, namespace) in [
        ("get", "secrets", runners.as_str()),
        ("list", "secrets", &runners),
        ("create", "pods/exec", &runners),
        ("create", "pods/attach", &runners),
        ("create", "pods/portforward", &runners),
        ("create", "pods/eviction", &runners),
        ("patch", "pods", &runners),
        ("update", "pods/status", &runners),
        ("create", "pods", &ns),
        ("create", "pods", "default"),
        ("list", "nodes", "default"),
        ("delete", "networkpolicies.networking.k8s.io", &runners),
        ("create", "rolebindings.rbac.authorization.k8s.io", &runners),
        ("create", "serviceaccounts/token", &runners),
        ("get", "secrets", &ns),
    ] {
        assert!(
            !can(verb, resource, namespace),
            "the engine may {verb} {resource} in {namespace}"
        );
    }

    // -- NetworkPolicy (enforced by kube-router): a runner pod reaches the engine's runner
    // port and nothing else — not its API port, not the API server, not DNS for the
    // confined class. The engine's pod, which no egress policy confines, is the control.
    let engine_pod = release.engine_pods()[0].clone();
    let engine_ip = engine_pod["status"]["podIP"]
        .as_str()
        .expect("engine pod IP")
        .to_string();
    let engine_pod = engine_pod["metadata"]["name"].as_str().unwrap().to_string();
    assert!(
        release.exec(&ns, &engine_pod, &connects(&cluster.node_ip, 6443)),
        "the control: the engine's pod reaches the API server"
    );
    let runner = warm.iter().next().unwrap().clone();
    assert!(
        release.exec(&runners, &runner, &connects(&engine_ip, 8601)),
        "a runner pod cannot reach the engine's runner port"
    );
    assert!(
        !release.exec(&runners, &runner, &connects(&engine_ip, 8600)),
        "a runner pod reached the engine's API port"
    );
    assert!(
        !release.exec(&runners, &runner, &connects(&cluster.node_ip, 6443)),
        "a runner pod reached the API server"
    );
    let confined = release
        .running_runners("confined")
        .into_iter()
        .next()
        .unwrap();
    assert!(
        release.exec(&runners, &confined, &connects(&engine_ip, 8601)),
        "a confined pod cannot reach the engine's runner port"
    );
    assert!(
        !release.exec(&runners, &confined, &connects(&cluster.node_ip, 53)),
        "a confined pod reached the cluster DNS"
    );

    // -- Steps on the pods: a burst of 6 open steps on a class capped at 3 runners, and a
    // network="none" step on the confined class, which finds no way out.
    let mut steps: Vec<String> = (1..=6)
        .map(|i| format!("Step.bash('burst{i}', 'sleep 2; echo burst-{i}-done')"))
        .collect();
    steps.push(format!(
        "Step.bash('sealed', \"if timeout 3 bash -c 'exec 3<>/dev/tcp/{}/6443'; then echo escaped; exit 1; else echo sealed; fi\", network='none')",
        cluster.node_ip
    ));
    // Allow-list steps go out through the chart's egress proxy: the listed forge answers,
    // an unlisted address gets the proxy's refusal, and no direct way out exists.
    let (node, port) = (&cluster.node_ip, forge.port());
    let through_proxy = |target: &str| {
        format!(
            r#"at=${{HTTP_PROXY#http://}}; exec 3<>/dev/tcp/${{at%:*}}/${{at##*:}}; printf "GET http://{target}/acme/burst.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n" >&3; echo "answer: $(head -n 1 <&3 | tr -d '\r')""#
        )
    };
    steps.push(format!(
        "Step.bash('listed', {:?}, network=['{node}:{port}'], runner={{'net': 'proxied'}})",
        through_proxy(&format!("{node}:{port}"))
    ));
    steps.push(format!(
        "Step.bash('unlisted', {:?}, network=['{node}:{port}'], runner={{'net': 'proxied'}})",
        format!(
            "{}; if timeout 3 bash -c 'exec 3<>/dev/tcp/{node}/6443'; then echo direct-open; else echo direct-blocked; fi",
            through_proxy(&format!("{node}:6443"))
        )
    ));
    let source = support::workflow_source("burst", &steps);
    let (url, run) = forge.dispatch(&release, "burst", &source).await;
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    let finished = loop {
        // Live pods: an ephemeral runner's pod that has ended (Succeeded) or is being
        // deleted holds no runner any more.
        let live = release
            .pods(&runners, "plue.dev/class=default")
            .iter()
            .filter(|p| {
                matches!(p["status"]["phase"].as_str(), Some("Pending" | "Running"))
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
            .count();
        most = most.max(live);
        if let Some(run) = support::run_view(&http, &url, run).await {
            if run["status"] != "running" && run["status"] != "queued" {
                break run;
            }
        }
        assert!(Instant::now() < deadline, "the burst did not finish");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert!(
        most <= 3,
        "{most} default runner pods at once; max_runners is 3"
    );
    let sealed = support::log_lines(&http, &url, run, "sealed")
        .await
        .unwrap_or_default();
    assert!(sealed.iter().any(|l| l["text"] == "sealed"), "{sealed:?}");
    let text = |lines: Vec<Value>| {
        lines
            .iter()
            .filter_map(|l| l["text"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let listed = text(
        support::log_lines(&http, &url, run, "listed")
            .await
            .unwrap_or_default(),
    );
    assert!(
        listed.iter().any(|l| l == "answer: HTTP/1.1 200 OK"),
        "the listed forge through the proxy: {listed:?}"
    );
    let unlisted = text(
        support::log_lines(&http, &url, run, "unlisted")
            .await
            .unwrap_or_default(),
    );
    assert!(
        unlisted.iter().any(|l| l.starts_with("answer: HTTP/1.1 4")),
        "an unlisted address through the proxy: {unlisted:?}"
    );
    assert!(
        unlisted.iter().any(|l| l == "direct-blocked"),
        "a way around the proxy: {unlisted:?}"
    );

    // -- A pod killed, a pod evicted: each is replaced, back to min_warm.
    let before = release.running_runners("default");
    let killed = before.iter().next().unwrap().clone();
    cluster.kubectl(&[
        "-n",
        &runners,
        "delete",
        "pod",
        &killed,
        "--grace-period=0",
        "--force",
    ]);
    let after_kill = wait_for(
        Duration::from_secs(120),
        "the killed pod replaced",
        || async {
            let now = release.running_runners("default");
            (now.len() == 2 && !now.contains(&killed)).then_some(now)
        },
    )
    .await;
    let evicted = after_kill.iter().next().unwrap().clone();
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": evicted, "namespace": runners}});
    cluster.kubectl_in(
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/{runners}/pods/{evicted}/eviction"),
            "-f",
            "-",
        ],
        Some(&eviction.to_string()),
    );
    wait_for(
        Duration::from_secs(120),
        "the evicted pod replaced",
        || async {
            let now = release.running_runners("default");
            (now.len() == 2 && !now.contains(&evicted)).then_some(())
        },
    )
    .await;

    // -- An image that cannot be had: the pool names the kubelet's reason and keeps
    // replacing the pod, without touching the other classes.
    release.upgrade(|v| {
        v["pool"]["classes"].as_array_mut().unwrap().push(json!({
            "name": "broken", "labels": {"image": "missing"}, "min_warm": 1, "max_runners": 1,
            "template": {"spec": {"containers": [{"name": "runner", "image": "plue-missing:0",
                "imagePullPolicy": "Never"}]}}
        }));
    });
    let engine = release.engine_url();
    let reason = wait_for(
        Duration::from_secs(180),
        "the pool reporting the missing image",
        || async {
            let pool = get_json(&http, &format!("{engine}/api/pool")).await;
            let text = pool.to_string();
            text.contains("ErrImageNeverPull").then_some(text)
        },
    )
    .await;
    assert!(reason.contains("broken"), "{reason}");
    assert_eq!(release.running_runners("default").len(), 2);

    // -- The engine restarted: its new pod finds the warm pods and runs steps on them.
    let old = release.engine_pods()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.kubectl(&["-n", &ns, "delete", "pod", &old]);
    wait_for(
        Duration::from_secs(180),
        "a new engine pod ready",
        || async {
            let pods = release.engine_pods();
            pods.iter()
                .any(|p| {
                    p["metadata"]["name"] != old.as_str()
                        && p["status"]["conditions"].as_array().is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                })
                .then_some(())
        },
    )
    .await;
    let after = support::workflow_source("after", &["Step.bash('hello', 'echo hello-after')"]);
    let (url, run) = forge.dispatch(&release, "after", &after).await;
    let done = wait_final(&http, &url, run, Duration::from_secs(180)).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // -- Two engines: one holds the pool's lease, the pool does not double, and the lease
    // moves to the other engine when its holder goes.
    release.upgrade(|v| v["replicaCount"] = json!(2));
    let holder = || {
        let leases = cluster.json(&["-n", &runners, "get", "leases"]);
        leases["items"]
            .as_array()
            .and_then(|l| l.first().cloned())
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    let first = wait_for(Duration::from_secs(60), "a lease holder", || async {
        holder()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        release.running_runners("default").len(),
        2,
        "two engines doubled the pool"
    );
    let leader = release
        .engine_pods()
        .into_iter()
        .find(|p| first.contains(p["metadata"]["name"].as_str().unwrap_or("?")))
        .unwrap_or_else(|| panic!("the holder {first} is no engine pod"));
    cluster.kubectl(&[
        "-n",
        &ns,
        "delete",
        "pod",
        leader["metadata"]["name"].as_str().unwrap(),
    ]);
    wait_for(Duration::from_secs(120), "the lease moved", || async {
        holder().filter(|h| *h != first).map(|_| ())
    })
    .await;
}
