//! The controller's view of its pods: a kube-runtime watcher on the installation's label
//! selector, kept as a map by name, and a stream of the names that changed.
//!
//! Invariants:
//! - The map is rebuilt from every re-list (`Init` … `InitDone`, after a `410 Gone` or a
//!   restart of the watch): a pod deleted while the watch was down disappears then, and
//!   its name is reported as changed, so nothing is missed.
//! - [`PodCache::ready`] becomes true after the first complete list and stays true; no
//!   decision that depends on "which pods exist" (adoption) is taken before.
//! - A pod once seen is remembered as seen (bounded), so "created but not yet in the cache"
//!   (watch lag) is never confused with "created and already gone".

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How many deleted names are remembered as seen.
const SEEN_MEMORY: usize = 10_000;

/// Pauses between failed watch or list attempts: 100 ms doubling to 3 s, reset by the
/// first success. (kube's default climbs to 30 s; a dead pod must be noticed within
/// seconds even while the API server misbehaves.)
struct WatchBackoff {
    next: Duration,
}

const WATCH_RETRY_FIRST: Duration = Duration::from_millis(100);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(3);

impl Default for WatchBackoff {
    fn default() -> WatchBackoff {
        WatchBackoff {
            next: WATCH_RETRY_FIRST,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(WATCH_RETRY_MAX);
        Some(wait)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_RETRY_FIRST;
    }
}

#[derive(Default)]
struct Inner {
    pods: HashMap<String, Arc<Pod>>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
}

impl Inner {
    fn remember(&mut self, name: &str) {
        if self.seen.insert(name.to_string()) {
            self.seen_order.push_back(name.to_string());
            while self.seen_order.len() > SEEN_MEMORY {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }
}

/// A pod that changed, with its latest state (its last one when it is gone).
#[derive(Debug, Clone)]
pub(super) struct PodChange {
    pub(super) pod: Arc<Pod>,
    /// The pod no longer exists.
    pub(super) gone: bool,
}

pub(super) struct PodCache {
    inner: Mutex<Inner>,
    ready: watch::Sender<bool>,
}

impl PodCache {
    pub(super) fn new() -> Arc<PodCache> {
        Arc::new(PodCache {
            inner: Mutex::new(Inner::default()),
            ready: watch::channel(false).0,
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, name: &str) -> Option<Arc<Pod>> {
        self.inner().pods.get(name).cloned()
    }

    /// Whether a pod of this name was ever in the cache.
    pub(super) fn seen(&self, name: &str) -> bool {
        self.inner().seen.contains(name)
    }

    pub(super) fn all(&self) -> Vec<Arc<Pod>> {
        self.inner().pods.values().cloned().collect()
    }

    /// Waits until the first complete list is in.
    pub(super) async fn ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Follows `api`'s pods matching `selector` until `shutdown`, sending each changed
    /// name on `changed`.
    pub(super) async fn follow(
        self: Arc<Self>,
        api: Api<Pod>,
        selector: String,
        changed: mpsc::UnboundedSender<PodChange>,
        shutdown: CancellationToken,
    ) {
        let config = watcher::Config::default().labels(&selector);
        let mut stream = watcher::watcher(api, config)
            .backoff(WatchBackoff::default())
            .boxed();
        let mut relisting: Option<HashMap<String, Arc<Pod>>> = None;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = stream.next() => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            match event {
                Ok(Event::Init) => relisting = Some(HashMap::new()),
                Ok(Event::InitApply(pod)) => {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    relisting
                        .get_or_insert_with(HashMap::new)
                        .insert(name, Arc::new(pod));
                }
                Ok(Event::InitDone) => {
                    let listed = relisting.take().unwrap_or_default();
                    let mut changes: Vec<PodChange> = listed
                        .values()
                        .map(|pod| PodChange {
                            pod: pod.clone(),
                            gone: false,
                        })
                        .collect();
                    {
                        let mut inner = self.inner();
                        for (name, pod) in &inner.pods {
                            if !listed.contains_key(name) {
                                changes.push(PodChange {
                                    pod: pod.clone(),
                                    gone: true,
                                });
                            }
                        }
                        for name in listed.keys() {
                            inner.remember(name);
                        }
                        inner.pods = listed;
                    }
                    self.ready.send_replace(true);
                    for change in changes {
                        let _ = changed.send(change);
                    }
                }
                Ok(Event::Apply(pod)) => {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let pod = Arc::new(pod);
                    {
                        let mut inner = self.inner();
                        inner.remember(&name);
                        inner.pods.insert(name, pod.clone());
                    }
                    let _ = changed.send(PodChange { pod, gone: false });
                }
                Ok(Event::Delete(pod)) => {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    {
                        let mut inner = self.inner();
                        inner.remember(&name);
                        inner.pods.remove(&name);
                    }
                    let _ = changed.send(PodChange {
                        pod: Arc::new(pod),
                        gone: true,
                    });
                }
                // The backoff paces the retries; the watcher re-lists by itself after 410.
                Err(e) => tracing::warn!("watching runner pods: {e}"),
            }
        }
    }
}
