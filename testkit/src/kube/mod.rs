//! A local Kubernetes API server for tests and benchmarks: no cluster can run on the
//! machines Plue is built on, so the Kubernetes pool is exercised against this server
//! through the real kube-rs client, over HTTP, speaking the API's wire protocol.
//!
//! - [`FakeKube::start`] serves `/api/v1/...` and `/apis/GROUP/VERSION/...` on
//!   `127.0.0.1:0` from its own thread and runtime; [`FakeKube::kubeconfig`] writes a
//!   kubeconfig file pointing at it (for `KUBECONFIG`).
//! - Objects are JSON with `metadata.resourceVersion` from one counter, `uid`,
//!   `creationTimestamp`; writes on a stale version or an existing name answer `409` with a
//!   `Status`; lists take label and field selectors, `limit` and `continue`; watches stream
//!   one event per line, `BOOKMARK`s with `allowWatchBookmarks=true`, `DELETED` with the last
//!   state, and an `ERROR` 410 `Expired` for a version older than the log keeps
//!   ([`FakeKube::compact`]). Pods, Secrets, Leases, Events and ConfigMaps are known kinds;
//!   deleting an object deletes what it owns (`ownerReferences`).
//! - Faults ([`Fault`]): a test scripts `5xx`, `429` with `Retry-After`, `409`, slow answers;
//!   [`FakeKube::drop_watches`] closes every open watch.
//! - A simulated kubelet ([`Kubelet`], module `kubelet`) runs a pod's containers as local
//!   processes: the image maps to a program, Secret volumes are written to a temporary
//!   directory (the container's paths in its arguments rewritten to it), `emptyDir`s too;
//!   pod phases and container statuses follow the process. Images it does not know fail
//!   with `ErrImagePull` then `ImagePullBackOff`; a test can OOM-kill, evict, make pods
//!   unschedulable, kill the node, or spread pods over several nodes and hang one.
//! - [`FakeKube::requests`] is the audit log: every request, its method, path, query and
//!   answer.
//!
//! Invariants:
//! - The server never outlives its [`FakeKube`]: dropping it stops the runtime, which
//!   kills every process the kubelet started (`kill_on_drop`).
//! - Nothing here is shared with the engine's Kubernetes code: it reads and writes plain
//!   JSON, so a disagreement about the protocol shows up as a test failure.

mod http;
mod kubelet;
mod selector;
mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use axum::http::Method;
use serde_json::Value;

pub use kubelet::{Kubelet, KubeletConfig};

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Query parameters, sorted.
    pub query: Vec<(String, String)>,
    /// `pods`, `secrets`, `coordination.k8s.io/leases`, ... (`None` for other paths).
    pub resource: Option<String>,
    /// The HTTP status answered (200 for a watch that streamed).
    pub status: u16,
    pub watch: bool,
}

impl Recorded {
    /// Whether this request wrote (create, replace, patch, delete).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// A scripted failure: the next `times` requests matching `method`, `resource` and
/// `watch` get `status` instead of an answer.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Option<String>,
    pub resource: Option<String>,
    /// `Some(true)`: watches only; `Some(false)`: everything but watches.
    pub watch: Option<bool>,
    pub status: u16,
    /// Sent as `Retry-After` (429 and 503 answers).
    pub retry_after: Option<u64>,
    /// Answer only after this long (a slow server; the client may time out first).
    pub delay: Option<Duration>,
    pub times: usize,
}

impl Fault {
    /// `status` for the next `times` requests of `method` on `resource`.
    pub fn on(method: &str, resource: &str, status: u16, times: usize) -> Fault {
        Fault {
            method: Some(method.to_string()),
            resource: Some(resource.to_string()),
            watch: Some(false),
            status,
            retry_after: None,
            delay: None,
            times,
        }
    }

    fn reason(&self) -> &'static str {
        match self.status {
            409 => "Conflict",
            410 => "Expired",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        }
    }

    fn applies(&self, method: &Method, resource: &str, watch: bool) -> bool {
        self.times > 0
            && self.method.as_deref().is_none_or(|m| m == method.as_str())
            && self.resource.as_deref().is_none_or(|r| r == resource)
            && self.watch.is_none_or(|w| w == watch)
    }
}

/// State shared by the HTTP handlers, the kubelet and the test's handle.
pub(crate) struct Shared {
    store: Mutex<store::Store>,
    faults: Mutex<Vec<Fault>>,
    requests: Mutex<Vec<Recorded>>,
    drop_watches: tokio::sync::watch::Sender<u64>,
    kubelet_wake: tokio::sync::Notify,
    kubelet_attached: AtomicBool,
    bookmark_every: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, store::Store> {
        lock(&self.store)
    }

    fn requests(&self) -> MutexGuard<'_, Vec<Recorded>> {
        lock(&self.requests)
    }

    fn take_fault(&self, method: &Method, resource: &str, watch: bool) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let fault = faults
            .iter_mut()
            .find(|f| f.applies(method, resource, watch))?;
        fault.times -= 1;
        Some(fault.clone())
    }

    pub(crate) fn wake_kubelet(&self) {
        self.kubelet_wake.notify_one();
    }

    fn kubelet_attached(&self) -> bool {
        self.kubelet_attached.load(Ordering::SeqCst)
    }
}

/// A running fake API server (and, once attached, its kubelet).
pub struct FakeKube {
    shared: Arc<Shared>,
    address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    kubelet: Option<Arc<Kubelet>>,
}

impl FakeKube {
    /// Starts a server on `127.0.0.1:0` (watch bookmarks every 500 ms).
    pub fn start() -> anyhow::Result<FakeKube> {
        FakeKube::start_with(Duration::from_millis(500))
    }

    /// Starts a server sending watch bookmarks every `bookmark_every` to watches that ask.
    pub fn start_with(bookmark_every: Duration) -> anyhow::Result<FakeKube> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("a runtime for the fake Kubernetes API")?;
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new()),
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            drop_watches: tokio::sync::watch::channel(0).0,
            kubelet_wake: tokio::sync::Notify::new(),
            kubelet_attached: AtomicBool::new(false),
            bookmark_every,
        });
        // Bound here, served on the server's own runtime: callers may be inside another
        // runtime, where blocking on this one is not allowed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("binding the fake Kubernetes API")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        runtime.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    let _ = axum::serve(listener, app).await;
                }
                Err(e) => eprintln!("testkit kube: serving: {e}"),
            }
        });
        Ok(FakeKube {
            shared,
            address,
            runtime: Some(runtime),
            kubelet: None,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Writes a kubeconfig whose current context reaches this server in `namespace`.
    pub fn kubeconfig(&self, path: &Path, namespace: &str) -> anyhow::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            url = self.url()
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Starts the simulated kubelet: pods created from now on are scheduled and run.
    pub fn attach_kubelet(&mut self, config: KubeletConfig) -> anyhow::Result<Arc<Kubelet>> {
        let runtime = self.runtime.as_ref().context("the server is stopped")?;
        let kubelet = Arc::new(Kubelet::new(self.shared.clone(), config)?);
        self.shared.kubelet_attached.store(true, Ordering::SeqCst);
        runtime.spawn(kubelet.clone().run());
        self.kubelet = Some(kubelet.clone());
        Ok(kubelet)
    }

    /// Adds a scripted failure.
    pub fn fail(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Closes every open watch stream now (clients resume from their last version).
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|n| *n += 1);
    }

    /// Forgets the change log and closes every watch: each resume gets `410 Expired` and
    /// must list again.
    pub fn compact(&self) {
        self.shared.store().compact();
        self.drop_watches();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests().clone()
    }

    /// The objects of `resource` (`pods`, `secrets`, ...) in `namespace`.
    pub fn objects(&self, resource: &str, namespace: &str) -> Vec<Value> {
        self.shared.store().list(resource, Some(namespace))
    }

    /// One object, if it exists.
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .store()
            .get(&store::Key {
                resource: resource.into(),
                namespace: namespace.into(),
                name: name.into(),
            })
            .cloned()
    }

    /// Creates an object as another client would (e.g. a pod left by an earlier engine).
    pub fn create(&self, resource: &str, namespace: &str, object: Value) -> anyhow::Result<Value> {
        let name = object["metadata"]["name"]
            .as_str()
            .context("the object needs metadata.name")?
            .to_string();
        let key = store::Key {
            resource: resource.into(),
            namespace: namespace.into(),
            name,
        };
        let created = self
            .shared
            .store()
            .create(&key, object)
            .map_err(|r| anyhow::anyhow!("{r:?}"))?;
        self.shared.wake_kubelet();
        Ok(created)
    }

    /// Deletes an object at once, as an operator's `kubectl delete --force` would.
    pub fn delete_now(&self, resource: &str, namespace: &str, name: &str) -> anyhow::Result<()> {
        let key = store::Key {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        self.shared
            .store()
            .remove(&key)
            .map_err(|r| anyhow::anyhow!("{r:?}"))?;
        self.shared.wake_kubelet();
        Ok(())
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(kubelet) = &self.kubelet {
            kubelet.stop_all();
        }
        if let Some(runtime) = self.runtime.take() {
            // Never blocks, so dropping works inside a caller's runtime too.
            runtime.shutdown_background();
        }
    }
}

/// Where the simulated kubelet keeps a pod's volumes and logs.
pub(crate) fn pod_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

/// Counts of requests by `METHOD resource` (watches as `WATCH resource`).
pub fn request_counts(requests: &[Recorded]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in requests {
        let verb = if r.watch { "WATCH" } else { r.method.as_str() };
        let key = format!("{verb} {}", r.resource.as_deref().unwrap_or(&r.path));
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
