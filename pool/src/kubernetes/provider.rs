//! The pool [`Provider`] of one runner class: a runner is a pod (plus its token Secret).
//!
//! - `start` creates the pod, then the Secret owned by it (two writes); `stop` deletes the
//!   pod and its Secret (two writes: owner garbage collection would remove the Secret in a
//!   cluster, but not every API server collects). Both retry through [`retry::call`]; a create
//!   answered `409 AlreadyExists` for a pod carrying this runner's token id is the earlier,
//!   timed-out attempt having worked, not an error.
//! - `exists` reads the watch cache only (no API request per check); a pod just created and
//!   not yet seen by the watch counts as existing for [`WATCH_LAG`].
//! - A pod that failed before its runner ever ran (image, configuration, scheduling) puts
//!   the class in backoff: no start until 1 s, 2 s, 4 s … 60 s have passed, then one pod at
//!   a time until one runs ([`Provider::start_budget`]). A pod whose runner exits before it
//!   registers is the pool's to count ([`crate::start_failures`]); the provider tells
//!   it how the container ended ([`Provider::ended`]: exit code and termination message)
//!   and records the class's backoff as a Kubernetes Event (`RunnerStartBackOff`).
//!
//! Invariant: the provider never deletes a pod for idleness or shutdown on its own; only
//! the pool's `stop` and [`KubeProvider::pod_ended`] (a pod that finished or failed)
//! delete, and pods outlive the engine ([`Provider::keeps_runners`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, PostParams};
use kube::Api;

use super::cache::PodCache;
use super::health::{health, Health};
use super::names;
use super::pod::{runner_pod, token_secret, with_host_aliases, CLASS, TOKEN_ID};
use super::retry::{self, Policy};
use crate::config_file::{KubernetesSettings, RunnerClass};
use crate::store::Store;
use crate::tokens;
use crate::{Ended, Ending, Provider};

/// How long a pod created by this provider counts as existing before the watch shows it.
pub(super) const WATCH_LAG: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Reasons of pods that never ran: the next pod would most likely fail the same way.
fn is_start_failure(reason: &str) -> bool {
    [
        "ErrImagePull",
        "ErrImageNeverPull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
        "Unschedulable",
        "not running after",
    ]
    .iter()
    .any(|r| reason.starts_with(r))
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

/// What the class's pods went through, for the pool's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures {
    /// Pods that failed or were lost since the engine started.
    pub total: usize,
    /// The last failure: `pod <name>: <reason>`.
    pub last: Option<String>,
    /// Whether new pods wait for a backoff now.
    pub backing_off: bool,
}

pub(super) struct KubeProvider {
    class: Arc<RunnerClass>,
    settings: Arc<KubernetesSettings>,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    events: Api<CoreEvent>,
    cache: Arc<PodCache>,
    store: Store,
    policy: Policy,
    created: Mutex<HashMap<String, Instant>>,
    ended: Mutex<HashSet<String>>,
    /// Pods force-deleted, and when.
    forced: Mutex<HashMap<String, Instant>>,
    backoff: Mutex<Backoff>,
    failures: Mutex<Failures>,
    /// How pods that finished or failed ended, until the pool asks ([`Provider::ended`]):
    /// the watch may remove a pod before the pool's next look.
    endings: Mutex<HashMap<String, Ended>>,
}

/// Most endings remembered for the pool.
const ENDINGS_KEPT: usize = 1000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KubeProvider {
    pub(super) fn new(
        client: kube::Client,
        settings: Arc<KubernetesSettings>,
        class: Arc<RunnerClass>,
        cache: Arc<PodCache>,
        store: Store,
    ) -> KubeProvider {
        let namespace = settings.namespace.clone();
        KubeProvider {
            class,
            pods: Api::namespaced(client.clone(), &namespace),
            secrets: Api::namespaced(client.clone(), &namespace),
            events: Api::namespaced(client, &namespace),
            settings,
            cache,
            store,
            policy: Policy::default(),
            created: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashSet::new()),
            forced: Mutex::new(HashMap::new()),
            backoff: Mutex::new(Backoff::default()),
            failures: Mutex::new(Failures::default()),
            endings: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn class(&self) -> &RunnerClass {
        &self.class
    }

    pub(super) fn failures(&self) -> Failures {
        let mut failures = lock(&self.failures).clone();
        failures.backing_off = lock(&self.backoff)
            .until
            .is_some_and(|until| Instant::now() < until);
        failures
    }

    /// The pod of runner `name`, if the cache has it and it is one of this class's.
    fn own_pod(&self, name: &str) -> Option<Arc<Pod>> {
        self.cache.get(name).filter(|pod| {
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CLASS))
                .is_some_and(|c| *c == self.class.name)
        })
    }

    /// A pod of this class finished or failed (seen by the watch): delete it, and for a
    /// failure record it, back off if it never ran, and say so as a Kubernetes Event.
    /// Idempotent per pod name.
    /// The bookkeeping happens at once; the API calls (Event, delete) run in the
    /// background, so one slow API call never delays what the watch reports next.
    pub(super) fn pod_ended(self: &Arc<Self>, name: &str, pod: Option<&Pod>, outcome: &Health) {
        if !lock(&self.ended).insert(name.to_string()) {
            return;
        }
        lock(&self.created).remove(name);
        if let Some(pod) = pod {
            let ended = ended_of(name, pod, outcome);
            let mut endings = lock(&self.endings);
            if endings.len() >= ENDINGS_KEPT {
                endings.clear();
            }
            endings.insert(name.to_string(), ended);
        }
        if let Health::Failed(reason) = outcome {
            tracing::warn!(pod = %name, class = %self.class.name, "runner pod failed: {reason}");
            crate::report::record(crate::report::PoolEvent::PodFailed {
                class: &self.class.name,
                reason: reason_kind(reason),
            });
            {
                let mut failures = lock(&self.failures);
                failures.total += 1;
                failures.last = Some(format!("pod {name}: {reason}"));
            }
            if is_start_failure(reason) {
                self.back_off();
            }
        }
        let failed = match outcome {
            Health::Failed(reason) => pod.map(|pod| (pod.clone(), reason.clone())),
            _ => None,
        };
        let delete = !reason_is_gone(outcome);
        let (this, name) = (self.clone(), name.to_string());
        tokio::spawn(async move {
            if let Some((pod, reason)) = failed {
                this.record_event(&name, &pod, &reason).await;
            }
            if delete {
                if let Err(e) = this.delete(&name).await {
                    tracing::warn!(pod = %name, "deleting an ended runner pod: {e:#}");
                    // The next look (within a second) tries again.
                    lock(&this.ended).remove(&name);
                }
            }
        });
    }

    /// Forgets a pod that no longer exists (its name is never used again), so what the
    /// provider remembers per pod stays bounded.
    pub(super) fn forget(&self, name: &str) {
        lock(&self.ended).remove(name);
        lock(&self.forced).remove(name);
        lock(&self.created).remove(name);
    }

    /// Removes a pod whose deletion its node never finished (grace period 0), at most once
    /// a minute per pod.
    pub(super) fn force_delete(self: &Arc<Self>, name: &str) {
        {
            let mut forced = lock(&self.forced);
            if forced
                .get(name)
                .is_some_and(|at| at.elapsed() < Duration::from_secs(60))
            {
                return;
            }
            forced.insert(name.to_string(), Instant::now());
        }
        tracing::warn!(pod = %name, "its node never finished deleting it: forcing");
        let (this, name) = (self.clone(), name.to_string());
        tokio::spawn(async move {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            };
            let deleted = retry::call(this.policy, &format!("force-deleting pod {name}"), || {
                this.pods.delete(&name, &params)
            })
            .await;
            if let Err(e) = deleted {
                if !e.is_not_found() {
                    tracing::warn!("{e}");
                }
            }
        });
    }

    /// Puts the class in backoff after a pod that could not start (or be created).
    fn back_off(&self) {
        let mut backoff = lock(&self.backoff);
        backoff.failures += 1;
        let wait = Duration::from_secs(1)
            .saturating_mul(1 << backoff.failures.saturating_sub(1).min(6))
            .min(MAX_BACKOFF);
        backoff.until = Some(Instant::now() + wait);
    }

    /// A pod of this class is running: the class works, so backoff ends.
    pub(super) fn pod_running(&self) {
        *lock(&self.backoff) = Backoff::default();
    }

    async fn record_event(&self, name: &str, pod: &Pod, reason: &str) {
        let message = format!(
            "runner pod {name} of class {} failed: {reason}; Plue replaces it",
            self.class.name
        );
        self.post_event(name, pod.metadata.uid.clone(), "RunnerPodFailed", message)
            .await;
    }

    /// Posts a Warning Event about pod `name` (its `uid` if known).
    async fn post_event(&self, name: &str, uid: Option<String>, reason: &str, message: String) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = CoreEvent {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}.")),
                namespace: Some(self.settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.to_string()),
                namespace: Some(self.settings.namespace.clone()),
                uid,
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some("Warning".into()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some("plue".into()),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("plue".into()),
                host: None,
            }),
            ..CoreEvent::default()
        };
        let quick = Policy {
            budget: Duration::from_secs(5),
            ..self.policy
        };
        let post = PostParams::default();
        let posted = retry::call(quick, "recording a Kubernetes event", || {
            self.events.create(&post, &event)
        })
        .await;
        if let Err(e) = posted {
            tracing::debug!("{e}");
        }
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        let params = DeleteParams::default();
        let deleted = retry::call(self.policy, &format!("deleting pod {name}"), || {
            self.pods.delete(name, &params)
        })
        .await;
        match deleted {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        // Its token Secret too: garbage collection through `ownerReferences` removes it
        // in a cluster, but not every API server collects, and the token is used (one
        // registration) or useless once its pod is gone.
        let secret = retry::call(self.policy, &format!("deleting secret {name}"), || {
            self.secrets.delete(name, &params)
        })
        .await;
        match secret {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn token_id(&self, token: &str) -> anyhow::Result<i64> {
        Ok(self
            .store
            .runner_token_by_hash(&tokens::hash_token(token))
            .await?
            .context("the pool's token is not in the store")?
            .id)
    }
}

/// A failure's kind, few and fixed, for a metric label: `ImagePullBackOff: Back-off
/// pulling …` is `ImagePullBackOff`, `exit code 3` is `Error`.
fn reason_kind(reason: &str) -> &str {
    let kind = reason.split(':').next().unwrap_or(reason);
    if kind.starts_with("exit code") {
        "Error"
    } else if kind.starts_with("not running after") {
        "StartTimeout"
    } else if kind.contains(' ') {
        "Other"
    } else {
        kind
    }
}

/// How pod `name` ended, judged `outcome`: its container's exit code, and the reason
/// (with the termination message) for people.
fn ended_of(name: &str, pod: &Pod, outcome: &Health) -> Ended {
    let terminated = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .next();
    let ending = match terminated {
        Some(t) => Ending::Code(t.exit_code),
        None => Ending::Unknown,
    };
    let reason = match outcome {
        Health::Failed(reason) => reason.clone(),
        Health::Finished => "exited".to_string(),
        Health::Alive => ending.to_string(),
    };
    Ended {
        runner: name.to_string(),
        ending,
        detail: format!("pod {name}: {reason}"),
    }
}

fn reason_is_gone(outcome: &Health) -> bool {
    // A pod already being deleted needs no second delete.
    matches!(outcome, Health::Failed(r) if r == "deleted")
}

/// The id in a pod's token annotation.
pub(super) fn token_id_of(pod: &Pod) -> Option<i64> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(TOKEN_ID)?
        .parse()
        .ok()
}

/// How long ago `pod` was created (zero if unknown or in the future).
pub(super) fn age(pod: &Pod) -> Duration {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| {
            let span = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
            Duration::try_from(span).ok()
        })
        .unwrap_or_default()
}

impl Provider for Arc<KubeProvider> {
    async fn start(&self, name: &str, token: &str) -> anyhow::Result<()> {
        let token_id = self.token_id(token).await?;
        let mut pod = runner_pod(&self.settings, &self.class, name, token_id);
        // A pod-confined class's pods have no DNS: the engine resolves their names now.
        let needed = names::needed(&self.settings, &self.class);
        if !needed.is_empty() {
            match names::resolve(&needed).await {
                Ok(aliases) => with_host_aliases(&mut pod, aliases),
                Err(e) => {
                    self.back_off();
                    let mut failures = lock(&self.failures);
                    failures.total += 1;
                    failures.last = Some(format!("creating pod {name}: {e:#}"));
                    return Err(e);
                }
            }
        }
        lock(&self.created).insert(name.to_string(), Instant::now());
        let post = PostParams::default();
        let created = retry::call(self.policy, &format!("creating pod {name}"), || {
            self.pods.create(&post, &pod)
        })
        .await;
        let pod = match created {
            Ok(pod) => pod,
            Err(e) if e.is_already_exists() => {
                let existing = retry::call(self.policy, &format!("reading pod {name}"), || {
                    self.pods.get(name)
                })
                .await?;
                if token_id_of(&existing) != Some(token_id) {
                    lock(&self.created).remove(name);
                    anyhow::bail!("pod {name} already exists and is not this runner's");
                }
                existing
            }
            Err(e) => {
                // Refused (RBAC, quota, admission) or unreachable: not every 100 ms.
                lock(&self.created).remove(name);
                self.back_off();
                let mut failures = lock(&self.failures);
                failures.total += 1;
                failures.last = Some(format!("creating pod {name}: {e}"));
                return Err(e.into());
            }
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let secret = token_secret(&self.settings, &self.class.name, name, &uid, token);
        let stored = retry::call(self.policy, &format!("creating secret {name}"), || {
            self.secrets.create(&post, &secret)
        })
        .await;
        match stored {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() => Ok(()),
            Err(e) => {
                // Without its token the pod would wait forever: take it back.
                if let Err(cleanup) = self.delete(name).await {
                    tracing::warn!(pod = %name, "removing a pod without its secret: {cleanup:#}");
                }
                lock(&self.created).remove(name);
                Err(e.into())
            }
        }
    }

    async fn stop(&self, name: &str) -> anyhow::Result<()> {
        lock(&self.created).remove(name);
        // The pool's own decision: its deletion is no failure of the pod.
        lock(&self.ended).insert(name.to_string());
        self.delete(name).await
    }

    async fn exists(&self, name: &str) -> bool {
        match self.own_pod(name) {
            Some(pod) => health(&pod, age(&pod), self.settings.start_timeout) == Health::Alive,
            None => {
                if self.cache.seen(name) {
                    return false;
                }
                lock(&self.created)
                    .get(name)
                    .is_some_and(|at| at.elapsed() < WATCH_LAG)
            }
        }
    }

    fn labels(&self) -> &BTreeMap<String, String> {
        &self.class.labels
    }

    fn accept_forks(&self) -> bool {
        self.class.accept_forks
    }

    async fn adopt(&self) -> Vec<(String, i64)> {
        self.cache.ready().await;
        self.cache
            .all()
            .into_iter()
            .filter(|pod| {
                pod.metadata.labels.as_ref().and_then(|l| l.get(CLASS)) == Some(&self.class.name)
            })
            .filter(|pod| health(pod, age(pod), self.settings.start_timeout) == Health::Alive)
            .filter_map(|pod| {
                let name = pod.metadata.name.clone()?;
                Some((name, token_id_of(&pod).unwrap_or(-1)))
            })
            .collect()
    }

    fn keeps_runners(&self) -> bool {
        true
    }

    fn ended(&self, name: &str) -> Ended {
        let remembered = lock(&self.endings).remove(name);
        if let Some(ended) = remembered {
            return ended;
        }
        match self.cache.get(name) {
            Some(pod) => {
                let outcome = health(&pod, age(&pod), self.settings.start_timeout);
                ended_of(name, &pod, &outcome)
            }
            None => Ended {
                runner: name.to_string(),
                ending: Ending::Unknown,
                detail: format!("pod {name} is gone"),
            },
        }
    }

    async fn backing_off(&self, last: &Ended, wait: Duration) {
        // About the last failed pod (its uid if the cache still has it).
        let name = last.runner.clone();
        let uid = self.cache.get(&name).and_then(|p| p.metadata.uid.clone());
        let message = format!(
            "runner pods of class {} keep ending before they register: no new pod for {}s \
             (the last: {})",
            self.class.name,
            wait.as_secs_f64(),
            last.detail
        );
        self.post_event(&name, uid, "RunnerStartBackOff", message)
            .await;
    }

    fn start_budget(&self) -> usize {
        let backoff = lock(&self.backoff);
        match backoff.until {
            None => usize::MAX,
            Some(until) if Instant::now() < until => 0,
            // Backoff over: one probe pod at a time until one runs.
            Some(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests;
