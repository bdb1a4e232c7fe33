//! The warm pool controller: keeps `min_warm` idle runners ready, grows to `max_runners`
//! when steps are queued, reaps idle extras after `idle_timeout`, and reports its state.
//!
//! The controller only decides; a [`Provider`] creates and deletes runners (local
//! processes in [`local`]; pods in [`kubernetes`], one pool per runner class, configured by
//! [`config_file`]). What a runner is doing comes from the store (runners register,
//! heartbeat and claim through the internal API), so the controller works the same
//! whichever engine replica the runner talks to.
//!
//! Invariants:
//! - The pool never holds more than `max_runners` runners.
//! - The pool knows its runners by an identity only it holds, never by name: for each
//!   runner it starts it mints a one-time registration token ([`ONCE_TTL`], bound to the
//!   runner's name and to the provider's labels) and follows the runner that redeemed that
//!   token (`runner_tokens.runner_id`). A runner registering or leaving under one of its
//!   names (which the engine refuses anyway: names are unique, `pool-` is reserved) cannot
//!   make the pool stop, count or replace its own runner.
//! - Names are unique to this pool instance, so a restarted engine never takes an old
//!   runner for one of its own.
//! - When the engine stops, the pool stops every runner it started, busy or not — unless
//!   its provider keeps runners across engine restarts ([`Provider::keeps_runners`]: pods),
//!   in which case the next pool adopts the ones whose token it can still follow
//!   ([`Provider::adopt`]) before it counts anything, so a restart starts no duplicates.
//! - A pool counts only the demand it may serve ([`Demand`]): with several pools (one per
//!   runner class), each queued step is counted by exactly one of them.
//! - Runners that end before registering are start failures ([`start_failures`]): after a
//!   few in a row the pool backs off (shown in its status, counted in
//!   `plue_pool_start_failures_total`, told to the provider: a Kubernetes Event), and once
//!   the wait is at its longest it fails the queued steps it counts with the reason.
//! - A registered runner that its provider saw die ([`Provider::fails_lost_runs`]: a local
//!   runner process, reaped by the engine, its parent) is marked gone and its attempt fails
//!   at once (`runner exited: signal 9`), not after the heartbeat timeout.
//!
//! The crate (`plue-pool`) needs of the engine only [`engine::Engine`]: the store, the
//! notifications, and failing an attempt with the engine's own rules. Its metrics leave
//! through [`report`]; the engine turns its status into gauges.
//!
//! Why one file past ~600 lines: the controller (about 650 lines with its tests) is one
//! decision loop over one state (warm, busy, starting, backing off), and its tests play
//! that loop tick by tick; the backoff is [`start_failures`], the providers and the
//! configuration live in their own modules.

pub mod class;
pub mod config_file;
pub mod engine;
pub mod forks;
pub mod hardening;
pub mod kubernetes;
pub mod local;
pub mod report;
pub mod scope;
pub mod start_failures;
pub mod unenforceable;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use plue_store as store;
use plue_store::events;
use plue_vault::tokens;

use crate::engine::Engine;
use crate::events::Events;
use crate::store::{now_ms, NewRunnerToken, RunnerTokenKind, Store};
use start_failures::StartFailures;
pub use start_failures::{BackoffPolicy, Ended, Ending};

/// How often a running pool looks for runners it does not know ([`Provider::adopt`]).
const ADOPT_SWEEP: Duration = Duration::from_secs(5);
/// The least time between two reconcile passes (each reads the store and asks the provider
/// about every runner), however often steps are queued.
const RECONCILE_GAP: Duration = Duration::from_millis(25);

/// How long a runner the pool starts may take to redeem its one-time token.
pub const ONCE_TTL: Duration = Duration::from_secs(60);

/// Creates and deletes runners: processes ([`local`]) or pods ([`kubernetes`], the token in a
/// Secret mounted only into the runner's container).
pub trait Provider: Send + Sync + 'static {
    /// Starts a runner that will register itself as `name` with the one-time registration
    /// `token` (which must reach it by a channel only it reads: never argv or environment).
    fn start(&self, name: &str, token: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Stops runner `name` and frees what it holds; fine if it is already gone.
    fn stop(&self, name: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Whether runner `name` (its process or pod) still exists.
    fn exists(&self, name: &str) -> impl Future<Output = bool> + Send;
    /// The labels its runners announce (the scope of the tokens the pool mints for them).
    fn labels(&self) -> &BTreeMap<String, String>;
    /// Whether its runners take steps of runs of pull requests from forks (the tokens the
    /// pool mints say so). Default: only runners with no labels, which run nothing an
    /// operator set apart.
    fn accept_forks(&self) -> bool {
        self.labels().is_empty()
    }
    /// Runners that exist from an earlier engine, as (name, id of the one-time token that
    /// was minted for it); called once, before the pool's first count.
    fn adopt(&self) -> impl Future<Output = Vec<(String, i64)>> + Send {
        async { Vec::new() }
    }
    /// Whether runners outlive the engine (the pool then leaves them running when it stops).
    fn keeps_runners(&self) -> bool {
        false
    }
    /// How many runners may be started now (fewer while backing off after failures).
    fn start_budget(&self) -> usize {
        usize::MAX
    }
    /// How runner `name` ended, asked once after [`Provider::exists`] said it is gone (or
    /// after the pool stopped it for not registering).
    fn ended(&self, name: &str) -> Ended {
        Ended {
            runner: name.to_string(),
            ending: Ending::Unknown,
            detail: format!("runner {name} ended"),
        }
    }
    /// Whether the pool fails what a registered runner was running when the provider says
    /// it is gone (`runner exited: <how>`). Providers whose runners' deaths something else
    /// reports with more detail (Kubernetes: the pod supervisor) say no.
    fn fails_lost_runs(&self) -> bool {
        false
    }
    /// The pool backs off for `wait` after start failures, the last one `last`; a provider
    /// may tell its platform (a Kubernetes Event).
    fn backing_off(&self, last: &Ended, wait: Duration) -> impl Future<Output = ()> + Send {
        let _ = (last, wait);
        async {}
    }
}

/// Says whether a step asking for these runner labels is a pool's to count.
/// Whether a pool counts ready steps asking for these labels, of forks' runs or not.
pub type LabelFilter = dyn Fn(&BTreeMap<String, String>, bool) -> bool + Send + Sync;

/// Which queued steps a pool counts as its demand.
#[derive(Clone, Default)]
pub enum Demand {
    /// Every ready step (a single pool).
    #[default]
    All,
    /// Ready steps whose labels (and fork or not) this predicate accepts (one pool among
    /// several).
    Labels(Arc<LabelFilter>),
}

impl Demand {
    /// The ready steps this demand counts, from the store's counts per label set.
    async fn queued(&self, store: &Store, now: i64) -> anyhow::Result<i64> {
        match self {
            Demand::All => store.queued_ready(now).await,
            Demand::Labels(accepts) => Ok(store
                .queued_ready_by_labels(now)
                .await?
                .into_iter()
                .filter(|(labels, fork, _)| accepts(labels, *fork))
                .map(|(_, _, n)| n)
                .sum()),
        }
    }

    /// The label sets (and fork or not) of the ready steps this demand counts.
    async fn waiting(
        &self,
        store: &Store,
        now: i64,
    ) -> anyhow::Result<Vec<(BTreeMap<String, String>, bool)>> {
        Ok(store
            .queued_ready_by_labels(now)
            .await?
            .into_iter()
            .filter(|(labels, fork, _)| match self {
                Demand::All => true,
                Demand::Labels(accepts) => accepts(labels, *fork),
            })
            .map(|(labels, fork, _)| (labels, fork))
            .collect())
    }
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub min_warm: usize,
    pub max_runners: usize,
    pub idle_timeout: Duration,
    /// A runner that has not registered this long after its start is stopped.
    pub start_timeout: Duration,
    pub tick: Duration,
    /// The pool's name in metrics and reasons: `local`, or the Kubernetes class.
    pub class: String,
    /// How it backs off after runners that end before registering.
    pub start_backoff: BackoffPolicy,
}

/// The pool as the API shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    pub warm: usize,
    pub busy: usize,
    pub starting: usize,
    /// Runners this pool started that were declared lost (since the pool started).
    pub lost: usize,
    pub min_warm: usize,
    pub max_runners: usize,
    /// Ready step runs waiting for a runner.
    pub queued: i64,
    /// New runners wait: several in a row ended before registering.
    pub backing_off: bool,
    /// Runners that ended before registering, in a row (one that registers resets it).
    pub start_failures: usize,
    /// How the last of them ended.
    pub last_start_failure: Option<Ending>,
}

struct Slot {
    started: Instant,
    /// The one-time token minted for this runner: the pool's handle on it in the store.
    token_id: i64,
    /// Its runner has been seen registered.
    registered: bool,
}

pub struct Pool<P: Provider> {
    provider: Arc<P>,
    config: PoolConfig,
    executor: Arc<dyn Engine>,
    store: Store,
    events: Arc<Events>,
    prefix: String,
    next: Mutex<u64>,
    slots: tokio::sync::Mutex<HashMap<String, Slot>>,
    status: watch::Sender<PoolStatus>,
    lost_total: Mutex<usize>,
    failures: Mutex<StartFailures>,
    demand: Demand,
}

impl<P: Provider> Pool<P> {
    pub fn new(
        provider: P,
        config: PoolConfig,
        executor: Arc<dyn Engine>,
    ) -> anyhow::Result<Arc<Pool<P>>> {
        Pool::with_demand(provider, config, executor, Demand::All)
    }

    /// A pool that counts only `demand` (one of several pools).
    pub fn with_demand(
        provider: P,
        config: PoolConfig,
        executor: Arc<dyn Engine>,
        demand: Demand,
    ) -> anyhow::Result<Arc<Pool<P>>> {
        let suffix = &crate::tokens::new_token()?[..6];
        Ok(Arc::new(Pool {
            provider: Arc::new(provider),
            store: executor.store().clone(),
            events: executor.events().clone(),
            executor,
            prefix: format!("{}{suffix}", crate::scope::POOL_PREFIX),
            next: Mutex::new(0),
            slots: tokio::sync::Mutex::new(HashMap::new()),
            status: watch::channel(PoolStatus {
                min_warm: config.min_warm,
                max_runners: config.max_runners,
                ..PoolStatus::default()
            })
            .0,
            lost_total: Mutex::new(0),
            failures: Mutex::new(StartFailures::new(config.start_backoff)),
            config,
            demand,
        }))
    }

    pub fn status(&self) -> watch::Receiver<PoolStatus> {
        self.status.subscribe()
    }

    /// Runs the controller until `shutdown`, then stops every runner it started that is not
    /// in the middle of a step.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = self.adopt() => {}
        }
        let mut swept = Instant::now();
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::warn!("pool reconcile failed: {e:#}");
            }
            // Runners that appeared without this pool (a previous leader's last starts):
            // counted if registered, stopped if not, so none is an uncounted orphan.
            if swept.elapsed() >= ADOPT_SWEEP {
                self.adopt().await;
                swept = Instant::now();
            }
            // Waiting for work from here on (a step queued during the pause below still
            // wakes this pass), but no sooner than RECONCILE_GAP after the last pass: a run
            // queues a step per completion, and one pass per burst is enough.
            let work = self.events.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(RECONCILE_GAP) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = work => {}
                _ = tokio::time::sleep(self.config.tick.saturating_sub(RECONCILE_GAP)) => {}
            }
        }
        if self.provider.keeps_runners() {
            return;
        }
        let slots: Vec<(String, Slot)> = self.slots.lock().await.drain().collect();
        // Every runner goes, busy ones too: SIGTERM lets each stop its step, report it and
        // deregister while the API still answers (the server stops after the pool).
        let stops = slots.iter().map(|(name, _)| self.provider.stop(name));
        for result in futures::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!("stopping a runner: {e:#}");
            }
        }
        for (_, slot) in &slots {
            self.forget_token(slot.token_id).await;
        }
    }

    /// Takes over the runners an earlier engine left whose one-time token was redeemed by a
    /// live runner; stops the others (their tokens are unknown or spent). Runners already
    /// in a slot are this pool's and left alone.
    async fn adopt(&self) {
        let found = self.provider.adopt().await;
        let found: Vec<(String, i64)> = {
            let slots = self.slots.lock().await;
            found
                .into_iter()
                .filter(|(name, _)| !slots.contains_key(name))
                .collect()
        };
        if found.is_empty() {
            return;
        }
        let ids: Vec<i64> = found.iter().map(|(_, id)| *id).collect();
        let live: HashMap<i64, String> = match self.store.minted_runners(&ids).await {
            Ok(rows) => rows.into_iter().map(|r| (r.token_id, r.state)).collect(),
            Err(e) => {
                tracing::warn!("adopting runners: {e:#}");
                HashMap::new()
            }
        };
        let mut slots = self.slots.lock().await;
        let mut strays = Vec::new();
        for (name, token_id) in found {
            match live.get(&token_id).map(String::as_str) {
                Some("idle" | "busy") => {
                    tracing::info!(runner = %name, "adopted a runner of an earlier engine");
                    slots.insert(
                        name,
                        Slot {
                            started: Instant::now(),
                            token_id,
                            registered: true,
                        },
                    );
                }
                _ => strays.push(name),
            }
        }
        drop(slots);
        for name in strays {
            tracing::info!(runner = %name, "stopping a runner of an earlier engine that never registered or is gone");
            if let Err(e) = self.provider.stop(&name).await {
                tracing::warn!(runner = %name, "stopping runner: {e:#}");
            }
        }
    }

    /// One pass: forget exited runners, count, start what demand needs, reap idle extras.
    async fn reconcile(&self) -> anyhow::Result<()> {
        let mut slots = self.slots.lock().await;
        let mut gone: Vec<(String, Slot)> = Vec::new();
        let names: Vec<String> = slots.keys().cloned().collect();
        for name in names {
            if !self.provider.exists(&name).await {
                if let Some(slot) = slots.remove(&name) {
                    gone.push((name, slot));
                }
            }
        }
        // The gone runners' registrations too: one that never registered failed to start.
        let token_ids: Vec<i64> = slots
            .values()
            .chain(gone.iter().map(|(_, slot)| slot))
            .map(|slot| slot.token_id)
            .collect();
        let minted: HashMap<i64, (String, i64, i64)> = self
            .store
            .minted_runners(&token_ids)
            .await?
            .into_iter()
            .map(|r| (r.token_id, (r.state, r.state_since, r.runner_id)))
            .collect();
        let mut registrations = 0usize;
        let mut start_failures: Vec<Ended> = Vec::new();
        // Registered runners whose process the provider saw end: (id, how it ended).
        let mut died: Vec<(i64, Ended)> = Vec::new();
        let mut forget: Vec<i64> = Vec::new();
        for (name, slot) in &gone {
            forget.push(slot.token_id);
            let ended = self.provider.ended(name);
            match minted.get(&slot.token_id) {
                None => start_failures.push(ended),
                Some((state, _, runner_id)) => {
                    registrations += usize::from(!slot.registered);
                    if matches!(state.as_str(), "idle" | "busy") && self.provider.fails_lost_runs()
                    {
                        died.push((*runner_id, ended));
                    }
                }
            }
        }
        let now = now_ms();
        let (mut warm, mut busy, mut starting) = (Vec::new(), 0usize, 0usize);
        let mut to_stop = Vec::new();
        for (name, slot) in slots.iter_mut() {
            let state = minted
                .get(&slot.token_id)
                .map(|(s, since, id)| (s.as_str(), *since, *id));
            if state.is_some() && !slot.registered {
                slot.registered = true;
                registrations += 1;
            }
            match state {
                Some(("idle", since, id)) => warm.push((name.clone(), since, id)),
                Some(("busy", _, _)) => busy += 1,
                Some(("lost", _, _)) => {
                    *self.lost_total.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    to_stop.push(name.clone());
                }
                Some(_) => to_stop.push(name.clone()),
                None if slot.started.elapsed() > self.config.start_timeout => {
                    tracing::warn!(runner = %name, "runner did not register in time; stopping it");
                    to_stop.push(name.clone());
                    start_failures.push(Ended {
                        runner: name.clone(),
                        ending: Ending::NotRegistered,
                        detail: format!(
                            "runner {name} did not register within {}s",
                            self.config.start_timeout.as_secs()
                        ),
                    });
                }
                None => starting += 1,
            }
        }
        // Reap idle runners beyond min_warm that have been idle too long (oldest first).
        // Each is retired first, atomically and only while still idle: one that claimed a
        // step a moment ago is busy and stays (a runner is never reaped holding a claim),
        // and a retired one can claim nothing before it is stopped.
        warm.sort_by_key(|(_, since, _)| *since);
        let idle_ms = self.config.idle_timeout.as_millis() as i64;
        let mut keep_warm = warm.len();
        for (name, since, runner_id) in &warm {
            if keep_warm > self.config.min_warm
                && now - since > idle_ms
                && self.store.retire_idle_runner(*runner_id, now).await?
            {
                to_stop.push(name.clone());
                keep_warm -= 1;
            }
        }
        for name in &to_stop {
            if let Some(slot) = slots.remove(name) {
                forget.push(slot.token_id);
            }
        }
        let (budget, backoff, given_up) =
            self.count_starts(registrations, start_failures, starting);
        let queued = self.demand.queued(&self.store, now).await?;
        let total = slots.len();
        let ready = keep_warm + starting;
        let wanted = self
            .config
            .min_warm
            .max(usize::try_from(queued).unwrap_or(0));
        let room = self.config.max_runners.saturating_sub(total);
        let to_start = wanted
            .saturating_sub(ready)
            .min(room)
            .min(budget)
            .min(self.provider.start_budget());
        let mut started = Vec::new();
        for _ in 0..to_start {
            let name = self.next_name();
            let (token_id, token) = self.mint(&name).await?;
            slots.insert(
                name.clone(),
                Slot {
                    started: Instant::now(),
                    token_id,
                    registered: false,
                },
            );
            started.push((name, token));
        }
        let status = {
            let failures = self.failures();
            PoolStatus {
                warm: keep_warm,
                busy,
                starting: starting + started.len(),
                lost: *self.lost_total.lock().unwrap_or_else(|p| p.into_inner()),
                min_warm: self.config.min_warm,
                max_runners: self.config.max_runners,
                queued,
                backing_off: failures.backing_off(),
                start_failures: failures.in_a_row() as usize,
                last_start_failure: failures.last().map(|l| l.ending),
            }
        };
        self.status.send_replace(status);
        drop(slots);
        // A registered runner seen dying: its attempt fails now, not at the heartbeat
        // timeout.
        for (runner_id, ended) in died {
            tracing::warn!(runner_id, "{}", ended.detail);
            self.store.runner_gone(runner_id, now_ms()).await?;
            let reason = format!("runner exited: {}", ended.ending);
            crate::engine::fail_attempts_of(&*self.executor, runner_id, &reason).await?;
        }
        if let Some((last, wait)) = backoff {
            self.provider.backing_off(&last, wait).await;
        }
        if given_up && queued > 0 {
            self.fail_queued(now).await?;
        }
        // Concurrently: a provider's start or stop may be a round trip to an API server.
        let stops = to_stop.iter().map(|name| async move {
            if let Err(e) = self.provider.stop(name).await {
                tracing::warn!(runner = %name, "stopping runner: {e:#}");
            }
        });
        futures::future::join_all(stops).await;
        for token_id in forget {
            self.forget_token(token_id).await;
        }
        let starts = started.iter().map(|(name, token)| async move {
            if let Err(e) = self.provider.start(name, token).await {
                tracing::warn!(runner = %name, "starting runner: {e:#}");
                if let Some(slot) = self.slots.lock().await.remove(name) {
                    self.forget_token(slot.token_id).await;
                }
                let ended = Ended {
                    runner: name.clone(),
                    ending: Ending::NotStarted,
                    detail: format!("starting runner {name}: {e:#}"),
                };
                let backoff = self.count_starts(0, vec![ended], 0).1;
                if let Some((last, wait)) = backoff {
                    self.provider.backing_off(&last, wait).await;
                }
            }
        });
        futures::future::join_all(starts).await;
        Ok(())
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, StartFailures> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts this pass's new registrations (successes) and start failures; answers how
    /// many runners may start now (`starting` still starting), the backoff a failure began
    /// (the last failure and the wait), and whether the pool has given up on its steps.
    fn count_starts(
        &self,
        registrations: usize,
        start_failures: Vec<Ended>,
        starting: usize,
    ) -> (usize, Option<(Ended, Duration)>, bool) {
        let class = &self.config.class;
        let mut failures = self.failures();
        if registrations > 0 && failures.succeeded() {
            tracing::info!(class = %class, "a runner registered: the pool stops backing off");
        }
        let mut backoff = None;
        for ended in start_failures {
            crate::report::record(crate::report::PoolEvent::StartFailed { class });
            tracing::warn!(class = %class, "a runner ended before registering: {}", ended.detail);
            if let Some(wait) = failures.failed(ended.clone(), Instant::now()) {
                tracing::warn!(
                    class = %class,
                    "{} runners in a row ended before registering: no new runner for {}s",
                    failures.in_a_row(),
                    wait.as_secs_f64()
                );
                backoff = Some((ended, wait));
            }
        }
        (
            failures.budget(Instant::now(), starting),
            backoff,
            failures.given_up(),
        )
    }

    /// The pool gave up (its runners keep failing at start, the backoff is at its longest):
    /// fails the ready steps it counts that no live runner announces labels for.
    async fn fail_queued(&self, now: i64) -> anyhow::Result<()> {
        let why = self.failures().reason(&self.config.class);
        let live: Vec<BTreeMap<String, String>> = self
            .store
            .live_runners(10_000)
            .await?
            .into_iter()
            .filter(|r| !r.name.starts_with(forks::HOLDER_PREFIX))
            .filter_map(|r| serde_json::from_str(&r.labels).ok())
            .collect();
        for (labels, fork) in self.demand.waiting(&self.store, now).await? {
            if live
                .iter()
                .any(|offered| labels.iter().all(|(k, v)| offered.get(k) == Some(v)))
            {
                continue;
            }
            start_failures::fail_queued(&*self.executor, &labels, fork, &why).await?;
        }
        Ok(())
    }

    /// A one-time registration token for runner `name`, scoped to the provider's labels:
    /// its id (the pool's handle) and the token (handed only to the runner).
    async fn mint(&self, name: &str) -> anyhow::Result<(i64, String)> {
        let token = tokens::new_token()?;
        let labels_json = serde_json::to_string(self.provider.labels())?;
        let now = now_ms();
        let id = self
            .store
            .create_runner_token(&NewRunnerToken {
                kind: RunnerTokenKind::Once,
                name,
                token_hash: &tokens::hash_token(&token),
                labels_json: &labels_json,
                secrets: true,
                accept_forks: self.provider.accept_forks(),
                expires_at: Some(now + ONCE_TTL.as_millis() as i64),
                now,
            })
            .await?;
        Ok((id, token))
    }

    /// Drops the token of a runner the pool is done with (and any that expired unused).
    async fn forget_token(&self, token_id: i64) {
        let expired_before = now_ms() - ONCE_TTL.as_millis() as i64;
        if let Err(e) = self.store.drop_once_token(token_id, expired_before).await {
            tracing::warn!(token_id, "dropping a runner token: {e:#}");
        }
    }

    fn next_name(&self) -> String {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        format!("{}-{}", self.prefix, *next)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use evaluator::plan::{Plan, Step};

    use super::*;
    use crate::store::{NewRun, NewRunner, RedeemedToken, Registration};

    /// Runners that "start" by registering straight into the store with the token they
    /// were given (as the internal API would), and can be made to exit.
    #[derive(Default)]
    struct FakeProvider {
        store: std::sync::OnceLock<Store>,
        labels: BTreeMap<String, String>,
        running: Mutex<HashSet<String>>,
        stopped: Mutex<Vec<String>>,
        /// Runners started, in all.
        started: Mutex<usize>,
        /// New runners exit at once with code 1, before registering.
        crash: std::sync::atomic::AtomicBool,
        /// Backoffs told to the provider.
        backoffs: Mutex<Vec<(Ended, Duration)>>,
    }

    impl Provider for Arc<FakeProvider> {
        async fn start(&self, name: &str, token: &str) -> anyhow::Result<()> {
            *self.started.lock().unwrap() += 1;
            if self.crash.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(());
            }
            let store = self.store.get().expect("store set");
            let row = store
                .runner_token_by_hash(&tokens::hash_token(token))
                .await?
                .expect("the pool stored the token it handed out");
            assert_eq!((row.kind.as_str(), row.name.as_str()), ("once", name));
            // The token takes the provider's say on forks: by default, only without labels.
            assert_eq!(row.accept_forks, self.labels.is_empty());
            let registered = store
                .register(&NewRunner {
                    name,
                    labels_json: "{}",
                    session_hash: &format!("hash-{name}"),
                    ephemeral: true,
                    token: Some(RedeemedToken {
                        id: row.id,
                        once: true,
                    }),
                    secrets: row.secrets,
                    accept_forks: row.accept_forks,
                    host: None,
                    now: now_ms(),
                })
                .await?;
            assert!(
                matches!(registered, Registration::Registered(_)),
                "{registered:?}"
            );
            self.running.lock().unwrap().insert(name.to_string());
            Ok(())
        }

        async fn stop(&self, name: &str) -> anyhow::Result<()> {
            self.running.lock().unwrap().remove(name);
            self.stopped.lock().unwrap().push(name.to_string());
            Ok(())
        }

        async fn exists(&self, name: &str) -> bool {
            self.running.lock().unwrap().contains(name)
        }

        fn labels(&self) -> &BTreeMap<String, String> {
            &self.labels
        }

        fn ended(&self, name: &str) -> Ended {
            Ended {
                runner: name.to_string(),
                ending: Ending::Code(1),
                detail: format!("runner {name}: exit code 1: cannot reach the work directory"),
            }
        }

        async fn backing_off(&self, last: &Ended, wait: Duration) {
            self.backoffs.lock().unwrap().push((last.clone(), wait));
        }
    }

    fn config(min_warm: usize, max_runners: usize, idle_ms: u64) -> PoolConfig {
        PoolConfig {
            min_warm,
            max_runners,
            idle_timeout: Duration::from_millis(idle_ms),
            start_timeout: Duration::from_secs(30),
            tick: Duration::from_millis(100),
            class: "test".into(),
            start_backoff: BackoffPolicy::default(),
        }
    }

    fn executor(store: &Store) -> Arc<dyn Engine> {
        crate::engine::engine_for_tests::engine(store)
    }

    async fn fixture(
        min_warm: usize,
        max_runners: usize,
        idle_ms: u64,
    ) -> (
        tempfile::TempDir,
        Store,
        Arc<FakeProvider>,
        Arc<Pool<Arc<FakeProvider>>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let provider = Arc::new(FakeProvider::default());
        provider.store.set(store.clone()).unwrap();
        let pool = Pool::new(
            provider.clone(),
            config(min_warm, max_runners, idle_ms),
            executor(&store),
        )
        .unwrap();
        (dir, store, provider, pool)
    }

    async fn queue_steps(store: &Store, n: usize) -> i64 {
        let steps = (0..n)
            .map(|i| Step::bash(format!("s{i}"), "true"))
            .collect();
        let plan = Plan::new("demand", steps);
        let json = serde_json::to_string(&plan).unwrap();
        plue_store::testing::queue_run(store, &plue_store::testing::local_run(&plan, &json)).await
    }

    #[tokio::test]
    async fn each_pool_counts_only_the_steps_its_demand_accepts() {
        let (_dir, store, _provider, _pool) = fixture(0, 4, 60_000).await;
        queue_steps(&store, 2).await;
        let mut big = Step::bash("big".to_string(), "true");
        big.runner = BTreeMap::from([("size".to_string(), "big".to_string())]);
        let plan = Plan::new("labelled", vec![big]);
        let json = serde_json::to_string(&plan).unwrap();
        let labelled = NewRun {
            workflow_path: "/l.plue.py",
            plan_hash: "h2",
            ..plue_store::testing::local_run(&plan, &json)
        };
        plue_store::testing::queue_run(&store, &labelled).await;
        let now = now_ms() + 1;
        let unlabelled = Demand::Labels(Arc::new(|l: &BTreeMap<String, String>, _| l.is_empty()));
        let big_only = Demand::Labels(Arc::new(|l: &BTreeMap<String, String>, _| {
            l.get("size").is_some_and(|v| v == "big")
        }));
        let forks_only = Demand::Labels(Arc::new(|_: &BTreeMap<String, String>, fork| fork));
        assert_eq!(
            forks_only.queued(&store, now).await.unwrap(),
            0,
            "local runs"
        );
        assert_eq!(unlabelled.queued(&store, now).await.unwrap(), 2);
        assert_eq!(big_only.queued(&store, now).await.unwrap(), 1);
        assert_eq!(Demand::All.queued(&store, now).await.unwrap(), 3);
    }

    // regression (actions-runner-controller#4000): a runner was reaped for idleness while a
    // step was being assigned to it.
    #[tokio::test]
    async fn a_runner_is_never_reaped_holding_a_claim_and_a_retired_one_claims_nothing() {
        let (_dir, store, _provider, _pool) = fixture(0, 1, 0).await;
        queue_steps(&store, 2).await;
        let now = now_ms() + 1;
        let a = store
            .register_ephemeral_runner("a", "{}", "hash-a", now)
            .await
            .unwrap();
        let b = store
            .register_ephemeral_runner("b", "{}", "hash-b", now)
            .await
            .unwrap();
        store
            .claim(a, &[String::new()], now)
            .await
            .unwrap()
            .expect("a claims a step");
        assert!(
            !store.retire_idle_runner(a, now).await.unwrap(),
            "a holds a claim: not retired"
        );
        assert!(store.retire_idle_runner(b, now).await.unwrap());
        assert!(
            store
                .claim(b, &[String::new()], now)
                .await
                .unwrap()
                .is_none(),
            "a retired runner claims nothing"
        );
    }

    fn status(pool: &Pool<Arc<FakeProvider>>) -> PoolStatus {
        *pool.status().borrow()
    }

    #[tokio::test]
    async fn keeps_min_warm_grows_with_demand_up_to_max_and_reaps_idle_extras() {
        let (_dir, store, provider, pool) = fixture(2, 4, 50).await;
        pool.reconcile().await.unwrap();
        pool.reconcile().await.unwrap();
        assert_eq!((status(&pool).warm, status(&pool).starting), (2, 0));

        // Six ready steps want six runners; the pool grows to its maximum of four.
        queue_steps(&store, 6).await;
        pool.reconcile().await.unwrap();
        pool.reconcile().await.unwrap();
        let grown = status(&pool);
        assert_eq!((grown.warm, grown.queued), (4, 6));
        assert_eq!(provider.running.lock().unwrap().len(), 4);

        // Demand gone (the steps were taken elsewhere): idle extras beyond min_warm are
        // reaped once idle for longer than idle_timeout, oldest first.
        let runner = store
            .register_ephemeral_runner("other", "{}", "hash-other", now_ms())
            .await
            .unwrap();
        while store
            .claim(runner, &[String::new()], now_ms())
            .await
            .unwrap()
            .is_some()
        {}
        tokio::time::sleep(Duration::from_millis(80)).await;
        pool.reconcile().await.unwrap();
        assert_eq!(status(&pool).warm, 2);
        assert_eq!(provider.stopped.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn replaces_runners_that_exit_and_counts_lost_ones() {
        let (_dir, store, provider, pool) = fixture(2, 2, 60_000).await;
        pool.reconcile().await.unwrap();
        // An ephemeral runner finished its step and exited; another was declared lost.
        let names: Vec<String> = provider.running.lock().unwrap().iter().cloned().collect();
        provider.running.lock().unwrap().remove(&names[0]);
        store.mark_lost(now_ms() + 1, now_ms()).await.unwrap();
        pool.reconcile().await.unwrap();
        let after = status(&pool);
        assert_eq!(after.lost, 1, "{after:?}");
        pool.reconcile().await.unwrap();
        assert_eq!(status(&pool).warm, 2, "{:?}", status(&pool));
        assert!(
            provider.stopped.lock().unwrap().contains(&names[1]),
            "the lost runner is stopped"
        );
    }

    // regression: a runner registered under a busy pool runner's name and deregistered;
    // the pool, which looked its runners up by name, saw "gone" and stopped the real one.
    #[tokio::test]
    async fn a_runner_squatting_a_pool_runners_name_cannot_make_the_pool_stop_it() {
        let (_dir, store, provider, pool) = fixture(1, 1, 60_000).await;
        // The squatter takes the name the pool will give its first runner, then leaves.
        let name = format!("{}-1", pool.prefix);
        let squatter = store
            .register_ephemeral_runner(&name, "{}", "hash-squatter", now_ms())
            .await
            .unwrap();
        store.runner_gone(squatter, now_ms()).await.unwrap();
        pool.reconcile().await.unwrap();
        pool.reconcile().await.unwrap();
        assert_eq!(status(&pool).warm, 1, "{:?}", status(&pool));
        // The real runner takes a step.
        queue_steps(&store, 1).await;
        let real = store
            .live_runners(10)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.name == name)
            .expect("the pool's runner is live");
        assert_ne!(real.id, squatter);
        store
            .claim(real.id, &[String::new()], now_ms())
            .await
            .unwrap()
            .expect("the real runner claims the step");
        // The squatter comes back under the same name: refused while the real one lives.
        assert!(store
            .register_ephemeral_runner(&name, "{}", "hash-squatter-2", now_ms())
            .await
            .is_err());
        pool.reconcile().await.unwrap();
        let after = status(&pool);
        assert_eq!((after.busy, after.warm), (1, 0), "{after:?}");
        assert!(provider.stopped.lock().unwrap().is_empty());
        assert!(provider.running.lock().unwrap().contains(&name));
    }

    #[tokio::test]
    async fn each_runner_gets_its_own_one_time_token_scoped_to_the_providers_labels() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let provider = Arc::new(FakeProvider {
            labels: BTreeMap::from([("zone".to_string(), "ci".to_string())]),
            ..FakeProvider::default()
        });
        provider.store.set(store.clone()).unwrap();
        let pool = Pool::new(provider.clone(), config(2, 2, 60_000), executor(&store)).unwrap();
        pool.reconcile().await.unwrap();
        let slots = pool.slots.lock().await;
        let ids: Vec<i64> = slots.values().map(|s| s.token_id).collect();
        drop(slots);
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        let minted = store.minted_runners(&ids).await.unwrap();
        assert_eq!(minted.len(), 2, "each token was redeemed by its runner");
        assert_ne!(minted[0].runner_id, minted[1].runner_id);
        let runners = store.live_runners(10).await.unwrap();
        assert!(runners.iter().all(|r| r.token_id.is_some() && r.secrets));
        let _ = &pool;
    }

    /// Step runs of run `run_id` as (status, reason).
    async fn steps_of(store: &Store, run_id: i64) -> Vec<(String, Option<String>)> {
        store
            .step_runs(run_id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.status.to_string(), s.reason))
            .collect()
    }

    // regression (issue 36): runners exiting before they register were replaced on every
    // pass — 270 pods in 30 s for min_warm 2 — and the pool said it was not backing off.
    #[tokio::test]
    async fn runners_that_end_before_registering_back_off_fail_the_steps_and_recover() {
        let (_dir, store, provider, _) = fixture(0, 0, 60_000).await;
        let wait = Duration::from_millis(1500);
        let pool = Pool::new(
            provider.clone(),
            PoolConfig {
                start_backoff: BackoffPolicy {
                    after: 3,
                    first: wait,
                    max: wait,
                },
                ..config(2, 2, 60_000)
            },
            executor(&store),
        )
        .unwrap();
        provider
            .crash
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Two start and die, two more, then the pool waits instead of starting more.
        for _ in 0..6 {
            pool.reconcile().await.unwrap();
        }
        let started = *provider.started.lock().unwrap();
        assert_eq!(started, 4, "at most a handful before backing off");
        let shown = status(&pool);
        assert!(shown.backing_off, "{shown:?}");
        assert_eq!(shown.start_failures, 4, "{shown:?}");
        assert_eq!(shown.last_start_failure, Some(Ending::Code(1)));
        let told = provider.backoffs.lock().unwrap().clone();
        assert_eq!(told.len(), 1, "told once per pass: {told:?}");
        assert!(told[0]
            .0
            .detail
            .ends_with("exit code 1: cannot reach the work directory"));
        assert_eq!(told[0].1, wait);

        // The wait is at its longest: a queued step fails with the reason, not waits.
        let run_id = queue_steps(&store, 1).await;
        pool.reconcile().await.unwrap();
        let steps = steps_of(&store, run_id).await;
        assert_eq!(steps[0].0, "failed", "{steps:?}");
        let reason = steps[0].1.clone().unwrap_or_default();
        assert!(
            reason.starts_with(
                "runner class test is backing off: 4 runners in a row ended before registering"
            ) && reason.ends_with("exit code 1: cannot reach the work directory)"),
            "{reason}"
        );
        assert_eq!(*provider.started.lock().unwrap(), 4, "still waiting");

        // The runners work again: after the wait one probe starts, registers, and the
        // pool stops backing off and fills up.
        provider
            .crash
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(15);
        while status(&pool).warm < 2 {
            assert!(
                Instant::now() < deadline,
                "no recovery: {:?}",
                status(&pool)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            pool.reconcile().await.unwrap();
        }
        let after = status(&pool);
        assert!(!after.backing_off && after.start_failures == 0, "{after:?}");
        let run_id = queue_steps(&store, 1).await;
        pool.reconcile().await.unwrap();
        assert_eq!(steps_of(&store, run_id).await[0].0, "queued");
    }

    // A registered runner that is later stopped or lost is no start failure: an idle class
    // whose warm runners are preempted now and then never backs off.
    #[tokio::test]
    async fn runners_that_registered_never_count_as_start_failures() {
        let (_dir, _store, provider, pool) = fixture(2, 2, 60_000).await;
        for _ in 0..5 {
            pool.reconcile().await.unwrap();
            pool.reconcile().await.unwrap();
            let names: Vec<String> = provider.running.lock().unwrap().iter().cloned().collect();
            for name in names {
                provider.running.lock().unwrap().remove(&name);
            }
        }
        pool.reconcile().await.unwrap();
        let shown = status(&pool);
        assert!(!shown.backing_off && shown.start_failures == 0, "{shown:?}");
        assert!(provider.backoffs.lock().unwrap().is_empty());
    }
}
