//! The simulated kubelet: schedules the fake server's pods onto its nodes (one,
//! `fake-node`, unless a test names several: [`Kubelet::set_nodes`], each new pod on the
//! node with the fewest) and runs each pod's first container as a local process, reporting
//! phases and container statuses as a real kubelet does.
//!
//! - The container's image names a program ([`KubeletConfig::images`]), run in place of
//!   `command[0]`; an unknown image waits in `ErrImagePull`, then `ImagePullBackOff`, or
//!   in `ErrImageNeverPull` under `imagePullPolicy: Never`, as a real kubelet's does.
//! - Secret volumes become files in the pod's own temporary directory, laid out as the
//!   kubelet's atomic writer does (`..data` link; mode `defaultMode`, group-readable under
//!   an `fsGroup`), `emptyDir`s empty directories; an argument or `workingDir` under a
//!   volume's `mountPath` is rewritten to that directory. An `env` `secretKeyRef` to a
//!   missing Secret is `CreateContainerConfigError`; a `fieldRef` gives `metadata.name` and
//!   `spec.nodeName` (the downward API).
//! - Exit 0 is `Succeeded`/`Completed`, anything else `Failed`/`Error` (with the log's last
//!   lines as `state.terminated.message` under `terminationMessagePolicy:
//!   FallbackToLogsOnError`, as a kubelet does); a test can
//!   OOM-kill (`OOMKilled`, 137), evict (`Failed`/`Evicted`), freeze a pod (a hung node:
//!   still `Running`, doing nothing) or every pod of a node ([`Kubelet::hang_node`], which
//!   gets no new pods), make new pods unschedulable
//!   (`PodScheduled=False`/`Unschedulable`) or kill the node (processes gone, pods left
//!   `Running` with `Ready=False`, reason `NodeLost`).
//! - A pod marked for deletion gets SIGTERM, SIGKILL after its grace period (at most 5 s
//!   here), then is removed from the store (its owned Secrets with it) — except on a dead
//!   node, where it stays `Terminating` until someone deletes it with grace period 0.
//!
//! Invariant: every process it starts is in its own process group and is killed when its
//! pod goes, when [`Kubelet::stop_all`] runs, or when the server's runtime stops.
//!
//! Why one file past ~600 lines: one simulated kubelet: scheduling, running containers and
//! reporting their status are one loop.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use super::store::{now_rfc3339, Key};
use super::{lock, pod_dir, Shared};

/// How pods run.
#[derive(Debug, Clone, Default)]
pub struct KubeletConfig {
    /// Image → the program run in place of the container's `command[0]`.
    pub images: HashMap<String, PathBuf>,
    /// Variables every container gets before its own `env` (a container has no
    /// environment of the test process).
    pub base_env: Vec<(String, String)>,
}

/// Why a pod's process ended, when the kubelet ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    OomKilled,
    Evicted,
    NodeLost,
    Deleted,
}

struct Running {
    pid: Option<u32>,
    ending: Option<Ending>,
    /// The node it was scheduled on.
    node: String,
}

/// The node pods are scheduled on unless a test names others.
const DEFAULT_NODE: &str = "fake-node";

pub struct Kubelet {
    shared: Arc<Shared>,
    config: KubeletConfig,
    root: tempfile::TempDir,
    /// Pods this kubelet has taken (by namespace/name), with their process.
    pods: Mutex<HashMap<(String, String), Running>>,
    unschedulable: AtomicBool,
    node_dead: AtomicBool,
    /// The nodes new pods are scheduled on, and those that hang (no new pod goes there).
    nodes: Mutex<Nodes>,
}

/// The kubelet's nodes.
#[derive(Debug)]
struct Nodes {
    names: Vec<String>,
    hung: Vec<String>,
    /// Where every pod this kubelet took was scheduled, kept after the pod is gone.
    placed: HashMap<(String, String), String>,
}

fn pod_key(namespace: &str, name: &str) -> Key {
    Key {
        resource: "pods".into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// Signals the process group the kubelet gave the container: everything it started goes.
fn signal(pid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}

impl Kubelet {
    pub(crate) fn new(shared: Arc<Shared>, config: KubeletConfig) -> anyhow::Result<Kubelet> {
        let root = tempfile::Builder::new()
            .prefix("plue-kubelet-")
            .tempdir()
            .context("the kubelet's directory")?;
        // Searchable: a root runner hands its attempts' directories to other users.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711))?;
        Ok(Kubelet {
            shared,
            config,
            root,
            pods: Mutex::new(HashMap::new()),
            unschedulable: AtomicBool::new(false),
            node_dead: AtomicBool::new(false),
            nodes: Mutex::new(Nodes {
                names: vec![DEFAULT_NODE.to_string()],
                hung: Vec::new(),
                placed: HashMap::new(),
            }),
        })
    }

    /// Schedules pods created from now on onto `names` (each onto the one with the fewest
    /// of this kubelet's pods, the first of those), instead of the one `fake-node`.
    pub fn set_nodes(&self, names: &[&str]) {
        assert!(!names.is_empty(), "a cluster needs a node");
        lock(&self.nodes).names = names.iter().map(|n| n.to_string()).collect();
    }

    /// The node pod `name` was scheduled on, if this kubelet took it (gone or not).
    pub fn node_of(&self, namespace: &str, name: &str) -> Option<String> {
        lock(&self.nodes)
            .placed
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Node `node` hangs: every process of its pods stops (SIGSTOP), the pods stay
    /// `Running` and ready as far as the API says, and no new pod is scheduled there.
    pub fn hang_node(&self, node: &str) {
        lock(&self.nodes).hung.push(node.to_string());
        // Then the pods' lock alone (see `pick_node`).
        for running in lock(&self.pods).values().filter(|r| r.node == node) {
            if let Some(pid) = running.pid {
                signal(pid, Signal::SIGSTOP);
            }
        }
    }

    /// Node `node` comes back from hanging, as after a reboot: the processes of its pods
    /// are gone (their pods end as a killed container's do), and new pods go there again.
    pub fn recover_node(&self, node: &str) {
        lock(&self.nodes).hung.retain(|n| n != node);
        for running in lock(&self.pods).values_mut().filter(|r| r.node == node) {
            if let Some(pid) = running.pid {
                signal(pid, Signal::SIGKILL);
            }
        }
        self.shared.wake_kubelet();
    }

    /// The node a new pod goes to: the schedulable one with the fewest of this kubelet's
    /// pods still running; `None` when every node hangs.
    fn pick_node(&self) -> Option<String> {
        // One lock at a time: `start` takes the pods' before the nodes'.
        let schedulable: Vec<String> = {
            let nodes = lock(&self.nodes);
            let hung = &nodes.hung;
            nodes
                .names
                .iter()
                .filter(|n| !hung.contains(n))
                .cloned()
                .collect()
        };
        let pods = lock(&self.pods);
        schedulable
            .iter()
            .min_by_key(|n| {
                pods.values()
                    .filter(|r| &r.node == *n && r.ending.is_none())
                    .count()
            })
            .cloned()
    }

    /// The file holding a pod's container output (stdout and stderr).
    pub fn log_path(&self, name: &str) -> PathBuf {
        pod_dir(self.root.path(), name).join("container.log")
    }

    /// New pods stay unschedulable while `on` (no node fits them).
    pub fn set_unschedulable(&self, on: bool) {
        self.unschedulable.store(on, Ordering::SeqCst);
        self.shared.wake_kubelet();
    }

    /// Kills pod `name`'s container as the kernel's OOM killer would.
    pub fn oom_kill(&self, namespace: &str, name: &str) {
        self.end(namespace, name, Ending::OomKilled);
    }

    /// Evicts pod `name` (node pressure): its process is killed, the pod `Failed`/`Evicted`.
    pub fn evict(&self, namespace: &str, name: &str) {
        self.end(namespace, name, Ending::Evicted);
    }

    /// Pod `name`'s container hangs (SIGSTOP): it stays `Running` and ready as far as the
    /// API says, and does nothing — as on a node that hangs.
    pub fn freeze(&self, namespace: &str, name: &str) {
        let pods = lock(&self.pods);
        if let Some(pid) = pods
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|r| r.pid)
        {
            signal(pid, Signal::SIGSTOP);
        }
    }

    /// The node dies: every process goes, the pods stay `Running` but not ready, and no
    /// new pod is scheduled until [`Kubelet::revive_node`].
    pub fn kill_node(&self) {
        self.node_dead.store(true, Ordering::SeqCst);
        let names: Vec<(String, String)> = lock(&self.pods).keys().cloned().collect();
        for (namespace, name) in names {
            self.end(&namespace, &name, Ending::NodeLost);
        }
    }

    pub fn revive_node(&self) {
        self.node_dead.store(false, Ordering::SeqCst);
        self.shared.wake_kubelet();
    }

    /// Kills every process (the server is going away).
    pub fn stop_all(&self) {
        for running in lock(&self.pods).values_mut() {
            if let Some(pid) = running.pid.take() {
                signal(pid, Signal::SIGKILL);
            }
        }
    }

    fn end(&self, namespace: &str, name: &str, ending: Ending) {
        let mut pods = lock(&self.pods);
        if let Some(running) = pods.get_mut(&(namespace.to_string(), name.to_string())) {
            running.ending.get_or_insert(ending);
            if let Some(pid) = running.pid {
                signal(pid, Signal::SIGKILL);
            }
        }
    }

    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.shared.kubelet_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            self.sync();
        }
    }

    /// One pass over the store's pods.
    fn sync(self: &Arc<Self>) {
        let pods = self.shared.store().list("pods", None);
        let present: Vec<(String, String)> = pods
            .iter()
            .map(|p| {
                (
                    p["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        // Pods removed outright (a forced delete): stop their processes.
        let gone: Vec<(String, String)> = lock(&self.pods)
            .keys()
            .filter(|k| !present.contains(k))
            .cloned()
            .collect();
        for key in gone {
            self.end(&key.0, &key.1, Ending::Deleted);
            lock(&self.pods).remove(&key);
        }
        for pod in pods {
            let (namespace, name) = (
                pod["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            let taken = lock(&self.pods).contains_key(&(namespace.clone(), name.clone()));
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                if taken && self.node_dead.load(Ordering::SeqCst) {
                    // A dead node's kubelet never confirms: the pod stays Terminating.
                    continue;
                }
                if taken {
                    self.delete(&namespace, &name, &pod);
                } else {
                    let _ = self.shared.store().remove(&pod_key(&namespace, &name));
                }
                continue;
            }
            if taken || pod["spec"]["nodeName"].is_string() {
                continue;
            }
            let node = self.pick_node();
            if self.unschedulable.load(Ordering::SeqCst)
                || self.node_dead.load(Ordering::SeqCst)
                || node.is_none()
            {
                if pod["status"]["conditions"].is_null() {
                    let _ = self.shared.store().update_with(&pod_key(&namespace, &name), |p| {
                        p["status"]["conditions"] = json!([{
                            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/1 nodes are available: 1 Insufficient cpu.",
                            "lastTransitionTime": now_rfc3339(),
                        }]);
                    });
                }
                continue;
            }
            let node = node.unwrap_or_else(|| DEFAULT_NODE.to_string());
            lock(&self.nodes)
                .placed
                .insert((namespace.clone(), name.clone()), node.clone());
            lock(&self.pods).insert(
                (namespace.clone(), name.clone()),
                Running {
                    pid: None,
                    ending: None,
                    node: node.clone(),
                },
            );
            let _ = self.shared.store().update_with(&pod_key(&namespace, &name), |p| {
                p["spec"]["nodeName"] = json!(node);
                p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}]);
            });
            let kubelet = self.clone();
            tokio::spawn(async move {
                if let Err(e) = kubelet.start(&namespace, &name, &pod).await {
                    eprintln!("testkit kubelet: pod {namespace}/{name}: {e:#}");
                }
            });
        }
    }

    fn delete(self: &Arc<Self>, namespace: &str, name: &str, pod: &Value) {
        let pid = {
            let mut pods = lock(&self.pods);
            let Some(running) = pods.get_mut(&(namespace.to_string(), name.to_string())) else {
                return;
            };
            if running.ending == Some(Ending::Deleted) {
                return;
            }
            running.ending.get_or_insert(Ending::Deleted);
            running.pid
        };
        let grace = pod["metadata"]["deletionGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30)
            .min(5);
        let (shared, namespace, name) =
            (self.shared.clone(), namespace.to_string(), name.to_string());
        let kubelet = self.clone();
        tokio::spawn(async move {
            if let Some(pid) = pid {
                signal(pid, Signal::SIGTERM);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(grace);
                while tokio::time::Instant::now() < deadline {
                    let alive = lock(&kubelet.pods)
                        .get(&(namespace.clone(), name.clone()))
                        .is_some_and(|r| r.pid.is_some());
                    if !alive {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                signal(pid, Signal::SIGKILL);
            }
            let _ = shared.store().remove(&pod_key(&namespace, &name));
            lock(&kubelet.pods).remove(&(namespace.clone(), name.clone()));
            let _ = std::fs::remove_dir_all(pod_dir(kubelet.root.path(), &name));
        });
    }

    fn set_status(&self, namespace: &str, name: &str, change: impl FnOnce(&mut Value)) {
        let _ = self
            .shared
            .store()
            .update_with(&pod_key(namespace, name), change);
    }

    fn waiting(&self, namespace: &str, name: &str, container: &Value, reason: &str, message: &str) {
        let status = json!([{
            "name": container["name"], "image": container["image"], "imageID": "",
            "ready": false, "started": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}},
        }]);
        self.set_status(namespace, name, |p| {
            p["status"]["phase"] = json!("Pending");
            p["status"]["containerStatuses"] = status;
        });
    }

    async fn start(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        pod: &Value,
    ) -> anyhow::Result<()> {
        let container = pod["spec"]["containers"][0].clone();
        let image = container["image"].as_str().unwrap_or_default().to_string();
        let Some(program) = self.config.images.get(&image).cloned() else {
            // A real kubelet pulls nothing under `Never` and says so (seen on the real
            // cluster of scripts/kube/up.sh).
            if container["imagePullPolicy"] == "Never" {
                let message =
                    format!("Container image {image:?} is not present with pull policy of Never");
                self.waiting(namespace, name, &container, "ErrImageNeverPull", &message);
                return Ok(());
            }
            let message = format!("failed to pull image {image:?}: not found");
            self.waiting(namespace, name, &container, "ErrImagePull", &message);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let message = format!("Back-off pulling image {image:?}");
            self.waiting(namespace, name, &container, "ImagePullBackOff", &message);
            return Ok(());
        };
        self.waiting(namespace, name, &container, "ContainerCreating", "");
        let dir = pod_dir(self.root.path(), name);
        std::fs::create_dir_all(dir.join("volumes"))?;
        for searchable in [dir.clone(), dir.join("volumes")] {
            std::fs::set_permissions(&searchable, std::fs::Permissions::from_mode(0o711))?;
        }
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        let volumes: BTreeMap<String, Value> = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or_default().to_string(),
                    v.clone(),
                )
            })
            .collect();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume_name = mount["name"].as_str().unwrap_or_default();
            let Some(volume) = volumes.get(volume_name) else {
                let message = format!("volume {volume_name:?} is not defined");
                self.waiting(
                    namespace,
                    name,
                    &container,
                    "CreateContainerConfigError",
                    &message,
                );
                return Ok(());
            };
            let host = dir.join("volumes").join(volume_name);
            std::fs::create_dir_all(&host)?;
            if volume["emptyDir"].is_object() {
                // As a kubelet makes them: writable by every user of the pod.
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o777))?;
            }
            if let Some(secret_name) = volume["secret"]["secretName"].as_str() {
                // A real kubelet retries the mount until the Secret exists.
                let secret = loop {
                    let found = self
                        .shared
                        .store()
                        .get(&Key {
                            resource: "secrets".into(),
                            namespace: namespace.into(),
                            name: secret_name.into(),
                        })
                        .cloned();
                    if let Some(secret) = found {
                        break secret;
                    }
                    if !self
                        .shared
                        .store()
                        .get(&pod_key(namespace, name))
                        .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_null())
                    {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                // As the kubelet's atomic writer lays a Secret out: the files in a
                // timestamped directory, `..data` pointing at it, each key a link through
                // `..data`; under the pod's `fsGroup` the files are group-readable too.
                let mut mode = volume["secret"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
                if pod["spec"]["securityContext"]["fsGroup"].is_number() {
                    mode |= 0o440;
                }
                let stamp = format!("..{}", now_rfc3339().replace(':', "_"));
                std::fs::create_dir_all(host.join(&stamp))?;
                std::os::unix::fs::symlink(&stamp, host.join("..data"))?;
                for (key, value) in secret["data"].as_object().into_iter().flatten() {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(value.as_str().unwrap_or_default())
                        .context("secret data is not base64")?;
                    let path = host.join(&stamp).join(key);
                    std::fs::write(&path, bytes)?;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
                    std::os::unix::fs::symlink(format!("..data/{key}"), host.join(key))?;
                }
            }
            mounts.push((
                mount["mountPath"].as_str().unwrap_or_default().to_string(),
                host,
            ));
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let rewrite = |arg: &str| -> String {
            for (path, host) in &mounts {
                if let Some(rest) = arg.strip_prefix(path.as_str()) {
                    if rest.is_empty() || rest.starts_with('/') {
                        return format!("{}{rest}", host.display());
                    }
                }
            }
            arg.to_string()
        };
        let mut env: Vec<(String, String)> = self.config.base_env.clone();
        for var in container["env"].as_array().into_iter().flatten() {
            let var_name = var["name"].as_str().unwrap_or_default().to_string();
            if let Some(value) = var["value"].as_str() {
                env.push((var_name, value.to_string()));
            } else if let Some(reference) = var["valueFrom"]["secretKeyRef"].as_object() {
                let secret = self
                    .shared
                    .store()
                    .get(&Key {
                        resource: "secrets".into(),
                        namespace: namespace.into(),
                        name: reference["name"].as_str().unwrap_or_default().into(),
                    })
                    .cloned();
                let value = secret.as_ref().and_then(|s| {
                    s["data"][reference["key"].as_str().unwrap_or_default()].as_str()
                });
                let Some(value) = value else {
                    let message = format!("secret {:?} not found", reference["name"]);
                    self.waiting(
                        namespace,
                        name,
                        &container,
                        "CreateContainerConfigError",
                        &message,
                    );
                    return Ok(());
                };
                let bytes = base64::engine::general_purpose::STANDARD.decode(value)?;
                env.push((var_name, String::from_utf8_lossy(&bytes).into_owned()));
            } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
                env.push((var_name, name.to_string()));
            } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
                let node = lock(&self.pods)
                    .get(&(namespace.to_string(), name.to_string()))
                    .map(|r| r.node.clone())
                    .unwrap_or_else(|| DEFAULT_NODE.to_string());
                env.push((var_name, node));
            }
        }
        let argv: Vec<String> = container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(container["args"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .map(rewrite)
            .collect();
        let working_dir = container["workingDir"]
            .as_str()
            .map(|w| PathBuf::from(rewrite(w)))
            .unwrap_or_else(|| dir.clone());
        let log = std::fs::File::create(dir.join("container.log"))?;
        let mut command = tokio::process::Command::new(&program);
        command
            .args(argv.iter().skip(1))
            .env_clear()
            .envs(env)
            .env("HOSTNAME", name)
            .current_dir(&working_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        if lock(&self.pods)
            .get(&(namespace.to_string(), name.to_string()))
            .is_none_or(|r| r.ending.is_some())
        {
            return Ok(());
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} for image {image}", program.display()))?;
        let started = now_rfc3339();
        let node = lock(&self.pods)
            .get_mut(&(namespace.to_string(), name.to_string()))
            .map(|running| {
                running.pid = child.id();
                running.node.clone()
            });
        // Its node hung while it was being started: it hangs too.
        if node.is_some_and(|node| lock(&self.nodes).hung.contains(&node)) {
            if let Some(pid) = child.id() {
                signal(pid, Signal::SIGSTOP);
            }
        }
        let running_status = json!([{
            "name": container["name"], "image": image, "imageID": format!("fake://{image}"),
            "containerID": format!("fake://{name}"),
            "ready": true, "started": true, "restartCount": 0,
            "state": {"running": {"startedAt": started}},
        }]);
        self.set_status(namespace, name, |p| {
            p["status"]["phase"] = json!("Running");
            p["status"]["podIP"] = json!("127.0.0.1");
            p["status"]["hostIP"] = json!("127.0.0.1");
            p["status"]["startTime"] = json!(started);
            p["status"]["containerStatuses"] = running_status;
            p["status"]["conditions"] = json!([
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "Ready", "status": "True"},
            ]);
        });
        let exit = child.wait().await?;
        let ending = {
            let mut pods = lock(&self.pods);
            let running = pods.get_mut(&(namespace.to_string(), name.to_string()));
            running.and_then(|r| {
                r.pid = None;
                r.ending
            })
        };
        let code = exit.code().unwrap_or(137);
        let finished = now_rfc3339();
        // `FallbackToLogsOnError`: a container that failed says why in its last log lines
        // (the kubelet keeps at most 80 lines and 2048 bytes of them).
        let message = (!exit.success()
            && container["terminationMessagePolicy"] == "FallbackToLogsOnError")
            .then(|| log_tail(&dir.join("container.log")))
            .flatten();
        let terminated = |reason: &str, code: i32| {
            let mut state = json!({"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished});
            if let Some(message) = &message {
                state["message"] = json!(message);
            }
            json!([{
                "name": container["name"], "image": image, "imageID": format!("fake://{image}"),
                "ready": false, "started": false, "restartCount": 0,
                "state": {"terminated": state},
            }])
        };
        match ending {
            Some(Ending::Deleted) | None if exit.success() => {
                self.set_status(namespace, name, |p| {
                    p["status"]["phase"] = json!("Succeeded");
                    p["status"]["containerStatuses"] = terminated("Completed", 0);
                })
            }
            Some(Ending::Deleted) | None => self.set_status(namespace, name, |p| {
                p["status"]["phase"] = json!("Failed");
                p["status"]["containerStatuses"] = terminated("Error", code);
            }),
            Some(Ending::OomKilled) => self.set_status(namespace, name, |p| {
                p["status"]["phase"] = json!("Failed");
                p["status"]["containerStatuses"] = terminated("OOMKilled", 137);
            }),
            Some(Ending::Evicted) => self.set_status(namespace, name, |p| {
                p["status"]["phase"] = json!("Failed");
                p["status"]["reason"] = json!("Evicted");
                p["status"]["message"] = json!("The node was low on resource: memory.");
                p["status"]["containerStatuses"] = terminated("Error", 137);
            }),
            Some(Ending::NodeLost) => self.set_status(namespace, name, |p| {
                p["status"]["reason"] = json!("NodeLost");
                p["status"]["message"] =
                    json!("Node fake-node which was running pod is unresponsive");
                p["status"]["conditions"] =
                    json!([{"type": "Ready", "status": "False", "reason": "NodeLost"}]);
            }),
        }
        Ok(())
    }
}

/// The end of a container's log as a kubelet keeps it for `FallbackToLogsOnError`: the
/// last 80 lines, at most their last 2048 bytes; `None` for an empty log.
fn log_tail(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    let start = (start..=tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(tail.len());
    let tail = tail[start..].trim();
    (!tail.is_empty()).then(|| tail.to_string())
}
