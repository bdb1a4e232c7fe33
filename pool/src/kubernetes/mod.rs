//! The Kubernetes pool: warm runner pods per class, through kube-rs
//! (`plue serve --pool kubernetes --pool-config FILE`). [`KubernetesPool`] is the one entry
//! point; the configuration is [`crate::config_file`].
//!
//! - `cache` follows the installation's pods with a kube-runtime watcher (label selector
//!   `app.kubernetes.io/managed-by=plue,app.kubernetes.io/instance=<instance>`); re-lists
//!   after `410 Gone` are the watcher's.
//! - `provider` is the pool [`crate::Provider`] of one class: a runner is a pod plus
//!   its token Secret (`pod` builds both; `hardening` refuses a class whose pod would be
//!   weakened, here and when the file is loaded, and forces the hardening on every pod
//!   built); one [`crate::Pool`] per class
//!   decides how many, counting only the steps whose labels that class is the first to
//!   serve.
//! - `supervise` deletes pods that finished or failed and fails the attempt a dead pod held
//!   (`runner lost: pod <name> <reason>`) as soon as the watch says so, and force-deletes a
//!   pod whose node has not finished deleting it after `start_timeout`; `health` judges a
//!   pod's status. The leader also re-judges every pod each second (verdicts that depend
//!   on time alone), and its pools look for pods they do not count every 5 s.
//! - `unservable` fails at once the steps no class and no registered runner can serve; a
//!   class whose runners keep ending before they register backs off
//!   ([`crate::start_failures`], at most `max_start_backoff` between probes) and
//!   then fails its queued steps with the reason (the pod's exit code and termination
//!   message: runner containers use `terminationMessagePolicy: FallbackToLogsOnError`).
//! - `lease`: with several engine replicas, only the holder of the Lease
//!   `<instance>-pool` runs the pools, `supervise` and `unservable`; the others keep their
//!   cache warm and take over when the Lease expires.
//! - `names`: a `step_network: pod` class's pods have no DNS; the names their runners need
//!   are resolved by the engine at each pod's creation into its `/etc/hosts`.
//! - `addresses`: where the runner pods are ([`PodAddresses`], from the watch cache), which
//!   the engine binds each egress credential to.
//! - `retry`: every API call retries 5xx, 429 (`Retry-After`), transport errors and
//!   timeouts with backoff, within a time budget.
//!
//! Invariants:
//! - The cluster is the truth: everything the controller knows about pods comes from the
//!   watch; after an engine restart or a leader change the new pools adopt the pods whose
//!   runners are registered (by the token id in their annotation) before counting, so no
//!   duplicate is started, and delete the rest.
//! - Pods outlive engines: no engine deletes pods because it stops.
//! - A one-time registration token reaches its pod only through a Secret owned by that pod.
//! - Nothing here runs a decision on a follower: pods are created and deleted by one engine.

mod addresses;
mod cache;

mod health;
mod lease;
mod names;
pub(crate) mod pod;
mod provider;
mod retry;
mod supervise;
mod unservable;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use runner::network::capability::{self, Capability};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use addresses::PodAddresses;
pub use provider::Failures;

use self::cache::{PodCache, PodChange};
use self::provider::KubeProvider;
use self::supervise::Supervisor;
use crate::config_file::PoolFile;
use crate::engine::Engine;
use crate::{BackoffPolicy, Demand, Pool, PoolConfig, PoolStatus};

/// What else serves steps next to the Kubernetes classes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The labels of this engine's other pools (the local pool: none but the reserved
    /// labels of the network policies its runners enforce). Steps they can serve are
    /// theirs: no class counts them as demand, and they are never unservable.
    pub other_pools: Vec<BTreeMap<String, String>>,
}

/// One class as the pool shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassStatus {
    pub class: String,
    pub labels: BTreeMap<String, String>,
    /// The pool's counts while this engine leads (`None` on a follower).
    pub pool: Option<PoolStatus>,
    pub failures: Failures,
}

/// A running Kubernetes pool; stop it with [`KubernetesPool::shutdown`].
pub struct KubernetesPool {
    shutdown: CancellationToken,
    /// The watch cache, which every replica keeps (leader or not).
    cache: Arc<PodCache>,
    tasks: JoinSet<()>,
    leading: watch::Receiver<bool>,
    providers: Vec<Arc<KubeProvider>>,
    statuses: Arc<Mutex<HashMap<String, watch::Receiver<PoolStatus>>>>,
}

impl KubernetesPool {
    /// Connects with `Client::try_default()` (in-cluster service account, or `KUBECONFIG`)
    /// and starts following the cluster.
    pub async fn start(
        file: PoolFile,
        executor: Arc<dyn Engine>,
        options: Options,
    ) -> anyhow::Result<KubernetesPool> {
        let client = kube::Client::try_default().await.context(
            "connecting to the Kubernetes API (in-cluster service account, or KUBECONFIG)",
        )?;
        KubernetesPool::start_with(client, file, executor, options)
    }

    /// Loads the configuration file at `path` and starts; `local_pool`: this engine also
    /// runs a local pool (whose runners take the unlabelled steps).
    pub async fn from_file(
        path: &std::path::Path,
        executor: Arc<dyn Engine>,
        local_pool: bool,
        publish: watch::Sender<Vec<ClassStatus>>,
    ) -> anyhow::Result<KubernetesPool> {
        let file = crate::config_file::load(path)?;
        let options = Options {
            // The local pool's runners offer no labels but those of the network policies
            // they enforce, found as they find them (they run as this process's user).
            other_pools: if local_pool {
                vec![Capability::probe(false).labels()]
            } else {
                Vec::new()
            },
        };
        let classes: Vec<String> = file.classes.iter().map(|c| c.name.clone()).collect();
        let mut pool = KubernetesPool::start(file, executor, options).await?;
        pool.publish_to(publish);
        tracing::info!("Kubernetes pool started: classes {}", classes.join(", "));
        Ok(pool)
    }

    /// [`KubernetesPool::start`] with a given client.
    pub fn start_with(
        client: kube::Client,
        file: PoolFile,
        executor: Arc<dyn Engine>,
        options: Options,
    ) -> anyhow::Result<KubernetesPool> {
        // Checked when the file was loaded too; again here, so no class from anywhere
        // creates a weakened pod.
        for class in &file.classes {
            let problems = crate::hardening::problems(class);
            if !problems.is_empty() {
                let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
                anyhow::bail!("pool class {:?}: {}", class.name, all.join("; "));
            }
        }
        let settings = Arc::new(file.kubernetes);
        let classes: Vec<Arc<_>> = file.classes.into_iter().map(Arc::new).collect();
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let cache = PodCache::new();
        let (changes_tx, changes) = mpsc::unbounded_channel();
        tasks.spawn(cache.clone().follow(
            Api::namespaced(client.clone(), &settings.namespace),
            pod::selector(&settings.instance),
            changes_tx,
            shutdown.clone(),
        ));
        let identity = format!(
            "{}-{}",
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "engine".into()),
            &crate::tokens::new_token()?[..8]
        );
        let (leading_tx, leading) = watch::channel(false);
        let election = lease::Election {
            api: Api::<Lease>::namespaced(client.clone(), &settings.namespace),
            name: format!("{}-pool", settings.instance),
            identity,
            duration: settings.lease_duration,
        };
        tasks.spawn(election.run(leading_tx, shutdown.clone()));
        let providers: Vec<Arc<KubeProvider>> = classes
            .iter()
            .map(|class| {
                Arc::new(KubeProvider::new(
                    client.clone(),
                    settings.clone(),
                    class.clone(),
                    cache.clone(),
                    executor.store().clone(),
                ))
            })
            .collect();
        let supervisor = Arc::new(Supervisor {
            providers: providers
                .iter()
                .map(|p| (p.class().name.clone(), p.clone()))
                .collect(),
            executor: executor.clone(),
            start_timeout: settings.start_timeout,
        });
        tasks.spawn(supervise_changes(
            supervisor.clone(),
            changes,
            leading.clone(),
            shutdown.clone(),
        ));
        let statuses = Arc::new(Mutex::new(HashMap::new()));
        tasks.spawn(lead(
            Leader {
                providers: providers.clone(),
                supervisor,
                cache: cache.clone(),
                executor,
                options,
                start_timeout: settings.start_timeout,
                max_start_backoff: settings.max_start_backoff,
                statuses: statuses.clone(),
            },
            leading.clone(),
            shutdown.clone(),
        ));
        Ok(KubernetesPool {
            shutdown,
            cache,
            tasks,
            leading,
            providers,
            statuses,
        })
    }

    /// Whether this engine holds the Lease (creates and deletes the pods).
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Each class: its labels, counts (on the leader) and failures.
    pub fn status(&self) -> Vec<ClassStatus> {
        snapshot(&self.providers, &self.statuses)
    }

    /// Keeps `to` up to date with [`KubernetesPool::status`] (what `GET /api/pool` shows).
    pub fn publish_to(&mut self, to: watch::Sender<Vec<ClassStatus>>) {
        let (providers, statuses) = (self.providers.clone(), self.statuses.clone());
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            loop {
                let now = snapshot(&providers, &statuses);
                to.send_if_modified(|shown| {
                    let changed = *shown != now;
                    *shown = now;
                    changed
                });
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        });
    }

    /// Lets `to` answer where this pool's runner pods are (the egress proxy's credentials
    /// are bound to them).
    pub fn publish_addresses(&self, to: &PodAddresses) {
        to.follow(self.cache.clone());
    }

    /// Stops following the cluster and gives up the Lease; pods stay (a restarted engine
    /// adopts them).
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

fn snapshot(
    providers: &[Arc<KubeProvider>],
    statuses: &Mutex<HashMap<String, watch::Receiver<PoolStatus>>>,
) -> Vec<ClassStatus> {
    let statuses = statuses.lock().unwrap_or_else(|p| p.into_inner());
    providers
        .iter()
        .map(|p| {
            let pool = statuses.get(&p.class().name).map(|s| *s.borrow());
            let mut failures = p.failures();
            // Pods that never start (the provider's backoff) or runners that end before
            // registering (the pool's): either way new pods wait.
            failures.backing_off |= pool.is_some_and(|s| s.backing_off);
            ClassStatus {
                class: p.class().name.clone(),
                labels: p.class().offered_labels(),
                pool,
                failures,
            }
        })
        .collect()
}

/// Hands every pod change to the supervisor while this engine leads.
async fn supervise_changes(
    supervisor: Arc<Supervisor>,
    mut changes: mpsc::UnboundedReceiver<PodChange>,
    leading: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return,
            change = changes.recv() => match change {
                Some(change) => change,
                None => return,
            },
        };
        if *leading.borrow() {
            supervisor.handle(&change).await;
        }
    }
}

/// What the leader runs.
struct Leader {
    providers: Vec<Arc<KubeProvider>>,
    supervisor: Arc<Supervisor>,
    cache: Arc<PodCache>,
    executor: Arc<dyn Engine>,
    options: Options,
    start_timeout: Duration,
    max_start_backoff: Duration,
    statuses: Arc<Mutex<HashMap<String, watch::Receiver<PoolStatus>>>>,
}

/// Runs one pool per class (and the unservable-step check) during each term of
/// leadership; between terms, nothing.
async fn lead(leader: Leader, mut leading: watch::Receiver<bool>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { return },
        }
        let term = shutdown.child_token();
        let mut pools = JoinSet::new();
        let classes: Vec<_> = leader.providers.iter().map(|p| p.class().clone()).collect();
        for (index, provider) in leader.providers.iter().enumerate() {
            let class = provider.class();
            let (all, others) = (classes.clone(), leader.options.other_pools.clone());
            let demand = Demand::Labels(Arc::new(move |labels, fork| {
                counts_for(&all, &others, index, labels, fork)
            }));
            let config = PoolConfig {
                min_warm: class.min_warm,
                max_runners: class.max_runners,
                idle_timeout: class.idle_timeout,
                start_timeout: leader.start_timeout,
                tick: Duration::from_millis(100),
                class: class.name.clone(),
                start_backoff: BackoffPolicy::capped_at(leader.max_start_backoff),
            };
            let pool = match Pool::with_demand(
                provider.clone(),
                config,
                leader.executor.clone(),
                demand,
            ) {
                Ok(pool) => pool,
                Err(e) => {
                    tracing::error!(class = %class.name, "starting the class's pool: {e:#}");
                    continue;
                }
            };
            leader
                .statuses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(class.name.clone(), pool.status());
            pools.spawn(pool.run(term.clone()));
        }
        pools.spawn(unservable_loop(
            leader.executor.clone(),
            classes,
            leader.options.other_pools.clone(),
            term.clone(),
        ));
        // What happened while another engine led (or before this one started), then
        // every second: some verdicts depend on time alone (a pod that never started).
        leader.cache.ready().await;
        loop {
            for pod in leader.cache.all() {
                leader
                    .supervisor
                    .handle(&PodChange { pod, gone: false })
                    .await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = leading.wait_for(|l| !*l) => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        term.cancel();
        while pools.join_next().await.is_some() {}
        leader
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Whether class `index` of `classes` counts a ready step asking for `labels` (of a fork's
/// run when `fork`) as its demand: no other pool of the engine offers it, and it is the
/// first class that serves it — for a fork's step, the first that also accepts forks
/// (other pools take forks' steps only without labels: they accept them then).
fn counts_for(
    classes: &[crate::config_file::RunnerClass],
    others: &[BTreeMap<String, String>],
    index: usize,
    labels: &BTreeMap<String, String>,
    fork: bool,
) -> bool {
    let offered_elsewhere = others
        .iter()
        .any(|o| (!fork || unlabelled(o)) && labels.iter().all(|(k, v)| o.get(k) == Some(v)));
    !offered_elsewhere
        && classes
            .iter()
            .position(|c| c.serves(labels) && (!fork || c.accept_forks))
            == Some(index)
}

/// Whether another pool's runners carry no labels of an operator's (only the reserved
/// network labels): then they take forks' steps.
fn unlabelled(offered: &BTreeMap<String, String>) -> bool {
    offered.keys().all(|k| capability::is_reserved(k))
}

async fn unservable_loop(
    executor: Arc<dyn Engine>,
    classes: Vec<crate::config_file::RunnerClass>,
    other_pools: Vec<BTreeMap<String, String>>,
    term: CancellationToken,
) {
    crate::engine::sweep_on_work(
        &executor.events().work,
        crate::engine::SWEEP_GAP,
        Duration::from_secs(1),
        &term,
        "failing unservable steps",
        || unservable::fail_unservable(&*executor, &classes, &other_pools),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fork_step_is_the_demand_of_the_first_class_that_accepts_forks() {
        let file = crate::config_file::parse(
            r#"
kubernetes: {namespace: ci, engine_url: "http://plue:8601"}
classes:
  - {name: small, labels: {size: small}, max_runners: 1,
     template: {spec: {containers: [{name: runner, image: p}]}}}
  - {name: forks, labels: {size: small, sandbox: "yes"}, max_runners: 1, accept_forks: true,
     template: {spec: {containers: [{name: runner, image: p}]}}}
"#,
            "pool.yaml",
        )
        .unwrap();
        let small = BTreeMap::from([("size".to_string(), "small".to_string())]);
        let classes = &file.classes;
        assert!(counts_for(classes, &[], 0, &small, false));
        assert!(!counts_for(classes, &[], 1, &small, false));
        assert!(
            !counts_for(classes, &[], 0, &small, true),
            "small refuses forks"
        );
        assert!(counts_for(classes, &[], 1, &small, true));
        // A labelled local pool takes the repository's steps, not forks'.
        assert!(!counts_for(
            classes,
            std::slice::from_ref(&small),
            0,
            &small,
            false
        ));
        assert!(counts_for(
            classes,
            std::slice::from_ref(&small),
            1,
            &small,
            true
        ));
    }
}
