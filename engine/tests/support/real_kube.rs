//! The real single-node Kubernetes of `scripts/kube/up.sh` for tests/real_kube.rs: the
//! cluster from its env file's variables, the chart installed with the real `helm` (and
//! uninstalled on drop), and a fake Gitea on the node's address whose repositories the
//! engine's pods can fetch.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use super::{client, printed};

/// The release's name; its namespace is unique per run of the test.
pub(crate) const RELEASE: &str = "plue";

/// The cluster `scripts/kube/up.sh` started, from the variables its env file exports.
pub(crate) struct Cluster {
    /// Where kubectl, helm and crictl are.
    pub(crate) bin: PathBuf,
    /// The node's address: the API server, the kubelet and the cluster DNS listen here.
    pub(crate) node_ip: String,
    pub(crate) pod_cidr: String,
    pub(crate) svc_cidr: String,
}

pub(crate) fn cluster() -> Option<Cluster> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("KUBECONFIG"),
        var("PLUE_KUBE_BIN"),
        var("PLUE_KUBE_NODE_IP"),
        var("PLUE_KUBE_POD_CIDR"),
        var("PLUE_KUBE_SVC_CIDR"),
    ) {
        (Some(_), Some(bin), Some(node_ip), Some(pod_cidr), Some(svc_cidr)) => Some(Cluster {
            bin: bin.into(),
            node_ip,
            pod_cidr,
            svc_cidr,
        }),
        _ if var("PLUE_REQUIRE_KUBE").as_deref() == Some("1") => {
            panic!("PLUE_REQUIRE_KUBE=1 but no cluster: source \"$(scripts/kube/up.sh)\" first")
        }
        _ => {
            eprintln!("skipping: no cluster (source \"$(scripts/kube/up.sh)\" to run this)");
            None
        }
    }
}

impl Cluster {
    pub(crate) fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(self.bin.join(tool))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .expect("write stdin");
        drop(input);
        child.wait_with_output().expect("wait")
    }

    /// `kubectl ARGS`, which must succeed: its stdout.
    pub(crate) fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_in(args, None)
    }

    pub(crate) fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run("kubectl", args, stdin);
        assert!(out.status.success(), "kubectl {args:?}: {}", printed(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl's JSON")
    }
}

/// The chart installed in a namespace of its own, with an external PostgreSQL listening on
/// the node's address (the chart's own needs an image no registry here serves).
pub(crate) struct Release<'c> {
    pub(crate) cluster: &'c Cluster,
    pub(crate) ns: String,
    pub(crate) runners: String,
    pub(crate) values: Value,
    _postgres: testkit::TempPostgres,
    _hba: tempfile::TempDir,
}

impl<'c> Release<'c> {
    pub(crate) fn install(cluster: &'c Cluster, values: Value) -> Release<'c> {
        let ns = format!("plue-e2e-{}", std::process::id());
        let runners = format!("{ns}-runners");
        // PostgreSQL for the engine's pods: reached at the node's address from the pod
        // network, trusted from there only.
        let hba = tempfile::tempdir().expect("tempdir");
        let hba_file = hba.path().join("pg_hba.conf");
        std::fs::write(
            &hba_file,
            format!(
                "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all {} trust\n",
                cluster.pod_cidr
            ),
        )
        .expect("write pg_hba.conf");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(hba.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&hba_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let postgres = testkit::TempPostgres::start_with(&[
            &format!("listen_addresses=127.0.0.1,{}", cluster.node_ip),
            &format!("hba_file={}", hba_file.display()),
        ])
        .expect("PostgreSQL");
        let url = postgres
            .new_database()
            .expect("a database")
            .replace("127.0.0.1", &cluster.node_ip);
        let mut values = values;
        values["database"] = json!({"url": url});
        let release = Release {
            cluster,
            ns,
            runners,
            values,
            _postgres: postgres,
            _hba: hba,
        };
        release.helm("install", &["--create-namespace"]);
        release
    }

    pub(crate) fn helm(&self, verb: &str, extra: &[&str]) {
        let values = tempfile::NamedTempFile::new().expect("values file");
        std::fs::write(values.path(), self.values.to_string()).expect("write values");
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/plue");
        let mut args = vec![
            verb,
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            &self.ns,
            "--values",
            values.path().to_str().unwrap(),
            "--wait",
            "--timeout",
            "8m",
        ];
        args.extend(extra);
        let out = self.cluster.run("helm", &args, None);
        assert!(
            out.status.success(),
            "helm {args:?}: {}\n{}",
            printed(&out),
            self.what_the_cluster_says()
        );
    }

    /// What explains a release that did not become ready: its pods, the namespaces' events
    /// and the engine's last log lines (best effort: each part says when it could not be read).
    pub(crate) fn what_the_cluster_says(&self) -> String {
        let mut said = String::new();
        let mut ask = |title: &str, args: &[&str]| {
            let out = self.cluster.run("kubectl", args, None);
            said.push_str(&format!("--- {title}\n{}\n", printed(&out)));
        };
        for ns in [&self.ns, &self.runners] {
            ask(
                &format!("pods in {ns}"),
                &["-n", ns, "get", "pods", "-o", "wide"],
            );
            ask(
                &format!("events in {ns}"),
                &["-n", ns, "get", "events", "--sort-by=.lastTimestamp"],
            );
        }
        ask(
            "the engine's log",
            &[
                "-n",
                &self.ns,
                "logs",
                "-l",
                "app.kubernetes.io/component=engine",
                "--all-containers",
                "--tail=80",
            ],
        );
        said
    }

    pub(crate) fn upgrade(&mut self, change: impl FnOnce(&mut Value)) {
        change(&mut self.values);
        self.helm("upgrade", &[]);
    }

    pub(crate) fn pods(&self, ns: &str, selector: &str) -> Vec<Value> {
        let list = self
            .cluster
            .json(&["-n", ns, "get", "pods", "-l", selector]);
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Runner pods that run and are not being deleted, by name.
    pub(crate) fn running_runners(&self, class: &str) -> BTreeSet<String> {
        self.pods(&self.runners, &format!("plue.dev/class={class}"))
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    pub(crate) fn engine_pods(&self) -> Vec<Value> {
        self.pods(&self.ns, "app.kubernetes.io/component=engine")
    }

    /// The engine's API through its Service (kube-proxy routes the node's own traffic too).
    pub(crate) fn engine_url(&self) -> String {
        let ip = self.cluster.kubectl(&[
            "-n",
            &self.ns,
            "get",
            "service",
            RELEASE,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        format!("http://{ip}:8600")
    }

    /// `bash -c SCRIPT` in the first container of `pod`: whether it exited 0.
    pub(crate) fn exec(&self, ns: &str, pod: &str, script: &str) -> bool {
        self.cluster
            .run(
                "kubectl",
                &["-n", ns, "exec", pod, "--", "bash", "-c", script],
                None,
            )
            .status
            .success()
    }
}

impl Drop for Release<'_> {
    /// Uninstalls, unless `PLUE_KUBE_KEEP=1` asks to keep the release to look at.
    fn drop(&mut self) {
        if std::env::var("PLUE_KUBE_KEEP").as_deref() == Ok("1") {
            eprintln!("kept: the release {RELEASE} in namespace {}", self.ns);
            return;
        }
        let _ = self.cluster.run(
            "helm",
            &["uninstall", RELEASE, "--namespace", &self.ns, "--wait"],
            None,
        );
        for ns in [&self.runners, &self.ns] {
            let _ = self.cluster.run(
                "kubectl",
                &["delete", "namespace", ns, "--wait=false"],
                None,
            );
        }
    }
}

/// Whether a TCP connection to `host:port` opens within 3 s, tried from inside a pod.
pub(crate) fn connects(host: &str, port: u16) -> String {
    format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{host}/{port}'")
}

/// file system can only run on runners of the engine's machine).
pub(crate) struct Forge {
    pub(crate) forge: testkit::forge::FakeForge,
    _root: tempfile::TempDir,
}

pub(crate) const FORGE_TOKEN: &str = "forge-token-of-the-real-kube-test";

impl Forge {
    pub(crate) fn start(cluster: &Cluster) -> Forge {
        let listener = std::net::TcpListener::bind((cluster.node_ip.as_str(), 0))
            .expect("bind the node's address");
        let root = tempfile::tempdir().expect("tempdir");
        let forge = testkit::forge::FakeForge::serve(
            listener,
            testkit::forge::Flavor::Gitea,
            FORGE_TOKEN,
            root.path().to_owned(),
        )
        .expect("the fake forge");
        Forge { forge, _root: root }
    }

    pub(crate) fn port(&self) -> u16 {
        self.forge
            .url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port")
    }

    /// Registers acme/NAME holding `.plue/NAME.plue.py` with the engine and dispatches
    /// that workflow: the engine's URL and the run's id.
    pub(crate) async fn dispatch(
        &self,
        release: &Release<'_>,
        name: &str,
        workflow: &str,
    ) -> (String, i64) {
        let repo = format!("acme/{name}");
        self.forge
            .create_repo_with(&repo, &[(&format!(".plue/{name}.plue.py"), workflow)])
            .expect("a repository");
        let url = release.engine_url();
        let http = client();
        let registered = http
            .post(format!("{url}/api/repos"))
            .json(&json!({
                "name": repo, "clone_url": self.forge.clone_url(&repo), "forge": "gitea",
                "api_url": self.forge.api_url(), "api_token": FORGE_TOKEN,
                "webhook_secret": "webhook-secret-of-the-real-kube-test",
            }))
            .send()
            .await
            .expect("POST /api/repos");
        assert_eq!(
            registered.status(),
            201,
            "{}",
            registered.text().await.unwrap_or_default()
        );
        let answer = http
            .post(format!("{url}/api/repos/{repo}/dispatch"))
            .json(&json!({"workflow": name}))
            .send()
            .await
            .expect("POST dispatch");
        let status = answer.status();
        let body: Value = answer.json().await.expect("JSON");
        assert_eq!(status, 201, "{body}");
        (url, body["run_id"].as_i64().expect("run_id"))
    }
}
