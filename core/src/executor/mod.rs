//! The executor: starts runs, moves them forward when something happens (a run was
//! created, an attempt ended, a cancel arrived, a timer fired) and records attempt
//! outcomes. Decisions come from [`rules`]; this module only loads, applies and notifies.
//!
//! Invariant: `advance` is idempotent and safe to call at any time from any engine
//! replica — it re-reads the run under its lock and only applies changes that are still
//! valid — so timers and restarts simply call it again. A runner's report ends its attempt
//! in the transaction of the run's advance (one commit for both); when that transaction
//! fails, the attempt ends alone and the run is advanced after, so a report is never lost
//! to an advance's trouble.
//!
//! Environments: before each advance of a run whose plan names one, the executor reads the
//! run's origin and its repository's environments ([`environments::gates`]), and the rules
//! decide on that data; at claim, [`Executor::secret_values`] checks the gate again before
//! it opens an environment's secret.
//!
//! Why one file past ~600 lines: loading a run, applying the rules' decisions and notifying
//! are one transaction-shaped sequence; the rules themselves, approvals, environments,
//! loops and re-runs are modules of their own.

mod approvals;
pub mod environments;
mod for_pool;
mod network_route;
pub mod outputs;
mod plan_facts;
pub mod reruns;
pub mod rules;
mod transition;
mod unacknowledged;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use evaluator::plan::Plan;
use plue_store::events::{Event, Events};
use plue_store::{now_ms, KnownSteps, NewRun, NextClaim, RunRepo, Store, Triggerer};
use plue_vault::Vault;

use crate::engine_secrets::{EngineSecrets, Lookup};
use outputs::OutputCache;
pub use rules::Report;

pub struct Executor {
    store: Store,
    events: Arc<Events>,
    /// Parsed plans of runs seen recently (plans never change once stored).
    plans: Mutex<HashMap<i64, Arc<Plan>>>,
    /// Parsed outputs of finished steps, and what each step reads, by run.
    outputs: Mutex<OutputCache>,
    /// Per active run, a lock that this executor's advances of it take in turn (they
    /// would wait for each other on the run's row lock anyway), holding the run's steps as
    /// the last advance left them: the next advance reads only what changed since
    /// ([`KnownSteps`]). Two advances racing each other would each make the other's copy
    /// stale.
    known: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<Option<KnownSteps>>>>>,
    /// Step rows read by this executor's advances, in all.
    steps_read: AtomicU64,
    /// The engine's own secrets, given to the steps that name them in runs they reach
    /// ([`crate::engine_secrets`]).
    secrets: EngineSecrets,
    /// Opens the repositories' sealed secrets.
    vault: Vault,
    /// The credentials for the repositories' forges (personal tokens opened with `vault`,
    /// or the GitHub App's installation tokens).
    forge_auth: plue_forge::auth::ForgeAuth,
    max_parallel: i64,
    /// Prices `llm` attempts' usage when their completion arrives (`crate::pricing`).
    prices: Arc<crate::pricing::Prices>,
    /// Steps whose final workspace every run keeps (`plue run --export STEP=DIR`).
    kept_workspaces: BTreeSet<String>,
}

/// What a runner's completion says besides its [`Report`].
#[derive(Debug, Clone, Default)]
pub struct RunnerSaid {
    /// Tokens an `llm` attempt used: stored on the attempt and added to the step run's.
    pub usage: Option<plue_types::protocol::Usage>,
    /// The model it called: its usage is priced by the engine's table and the cost stored
    /// with the attempt.
    pub model: Option<String>,
    /// How long ago the attempt started: recorded where its start was not reported alone.
    pub started_ms_ago: Option<u64>,
    /// The runner takes its next attempt in the answer ([`Store::claim_next`]), so it stays
    /// `busy` meanwhile.
    pub claims_next: bool,
    /// With `claims_next`, the runner's label sets: its next attempt is claimed in the
    /// transaction that ends this one ([`Completed::next`]). `None`: the caller claims it.
    pub next_labels: Option<Arc<Vec<String>>>,
}

/// What [`Executor::complete_holding`] did.
#[derive(Debug, Default)]
pub struct Completed {
    /// False when the attempt was already final (a repeated report): nothing changed.
    pub completed: bool,
    /// Steps the completion queued (retries due now included), not announced to the
    /// runners' polls.
    pub queued: usize,
    /// The runner's next attempt, claimed with the completion when [`RunnerSaid::next_labels`]
    /// asked for it.
    pub next: NextClaim,
}

/// Why a step gets no secrets at all (its attempt fails with this reason).
#[derive(Debug, thiserror::Error)]
pub enum SecretsRefused {
    /// Its environment keeps them from it now.
    #[error(transparent)]
    Gate(#[from] environments::GateRefused),
    /// A sealed secret the vault does not open.
    #[error("secret '{name}': {error}")]
    DoesNotOpen { name: String, error: anyhow::Error },
    /// A secret set nowhere (repository, environment, engine).
    #[error("secret '{0}' is not set")]
    NotSet(String),
    /// A secret the engine has (`--secret`) but does not give this run's repository: the
    /// operator did not name it (`--secret-repos`).
    #[error(
        "secret '{name}' is not set for {repository}: the engine's own secret of that name \
         reaches only the repositories its operator named for it (--secret-repos)"
    )]
    NotForRepository { name: String, repository: String },
}

/// The secrets a step gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    pub values: BTreeMap<String, String>,
    /// Names not given because the run is a pull request from a fork.
    pub withheld: Vec<String>,
}

const PLAN_CACHE_LIMIT: usize = 256;
/// At most this many runs' steps are kept in [`Executor::known`].
const KNOWN_RUNS_LIMIT: usize = 64;

impl Executor {
    pub fn new(
        store: Store,
        events: Arc<Events>,
        secrets: EngineSecrets,
        max_parallel: usize,
    ) -> Executor {
        for_pool::install_pool_reports();
        Executor {
            store,
            events,
            plans: Mutex::new(HashMap::new()),
            outputs: Mutex::new(OutputCache::default()),
            known: Mutex::new(HashMap::new()),
            steps_read: AtomicU64::new(0),
            secrets,
            vault: Vault::unkeyed(),
            forge_auth: plue_forge::auth::ForgeAuth::personal(Vault::unkeyed()),
            kept_workspaces: BTreeSet::new(),
            max_parallel: max_parallel.max(1) as i64,
            prices: Arc::new(crate::pricing::Prices::builtin()),
        }
    }

    /// Prices `llm` usage with `prices` (the built-in table by default).
    pub fn with_prices(mut self, prices: Arc<crate::pricing::Prices>) -> Executor {
        self.prices = prices;
        self
    }

    pub fn prices(&self) -> &crate::pricing::Prices {
        &self.prices
    }

    /// Uses `vault` to open repository secrets.
    /// Keeps the final workspace of the steps named `steps` in every run (the runner
    /// uploads it as for a `workspace_from` reader): what `plue run --export` writes out.
    pub fn with_kept_workspaces(mut self, steps: BTreeSet<String>) -> Executor {
        self.kept_workspaces = steps;
        self
    }

    /// Opens repository secrets and personal forge tokens with `vault`.
    pub fn with_vault(mut self, vault: Vault) -> Executor {
        self.forge_auth = plue_forge::auth::ForgeAuth::personal(vault.clone());
        self.vault = vault;
        self
    }

    /// Uses `auth` for every forge credential (and its vault for repository secrets).
    pub fn with_forge_auth(mut self, auth: plue_forge::auth::ForgeAuth) -> Executor {
        self.vault = auth.vault().clone();
        self.forge_auth = auth;
        self
    }

    pub fn forge_auth(&self) -> &plue_forge::auth::ForgeAuth {
        &self.forge_auth
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// How many step rows this executor's advances have read from the store, in all: an
    /// advance reads every step of its run only when it holds no current copy of them
    /// (tests and benchmarks check that the others read only what changed).
    pub fn steps_read(&self) -> u64 {
        self.steps_read.load(Ordering::Relaxed)
    }

    fn count_steps_read(&self, rows: usize) {
        self.steps_read.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// Whether step `step_id` of the untrusted run `run_id`, in environment `name`, may get
    /// OpenID Connect tokens: the environment allows untrusted runs' tokens
    /// (`untrusted_id_tokens`) and its gate, review included, lets the step through now.
    pub async fn untrusted_tokens_allowed(
        &self,
        run_id: i64,
        step_id: &str,
        name: &str,
    ) -> anyhow::Result<bool> {
        let Some(run) = self.store.run_environments(run_id, &[name]).await? else {
            return Ok(false);
        };
        let (Some(origin), Some(defined)) = (&run.repo, run.defined.get(name)) else {
            return Ok(false);
        };
        if !defined.settings.untrusted_id_tokens {
            return Ok(false);
        }
        let passed = self
            .store
            .step_run(run_id, step_id)
            .await?
            .and_then(|row| row.review_passed_at);
        Ok(environments::secrets_gate(name, origin, Some(defined), passed).is_ok())
    }

    /// The environment step `step_id` of run `run_id` names, if any.
    pub async fn step_environment(
        &self,
        run_id: i64,
        step_id: &str,
    ) -> anyhow::Result<Option<String>> {
        let plan = self.plan(run_id).await?;
        let facts = self.lock_outputs().facts(run_id, &plan);
        Ok(facts
            .step(&plan, step_id)
            .and_then(|step| step.environment.clone()))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// Stores the run and queues its first steps, or leaves it `pending` behind the active
    /// run of its concurrency group; returns the run id. The runs of its group it asked to
    /// cancel (older waiting ones; with `cancel_in_progress`, the active one) are moved on
    /// here too.
    pub async fn start_run(&self, run: &NewRun<'_>) -> anyhow::Result<i64> {
        self.start_run_by(run, None).await
    }

    /// [`Executor::start_run`], recording `triggerer` as who started the run in the
    /// transaction that stores it ([`Store::create_run_by`]): a gate of the run (an
    /// environment review, an approval) can only be decided once the engine knows whom
    /// `exclude_triggerer` and `prevent_self_review` exclude (recorded after the first
    /// advance, a decision racing the run's start found no triggerer).
    pub async fn start_run_by(
        &self,
        run: &NewRun<'_>,
        triggerer: Option<&Triggerer>,
    ) -> anyhow::Result<i64> {
        self.start_run_carrying(run, triggerer, &[], None).await
    }

    /// [`Executor::start_run_by`] for a pull request from the fork `fork` (`owner/name`,
    /// when the forge named it): the run's cache partition is the fork's own.
    pub async fn start_run_of_fork(
        &self,
        run: &NewRun<'_>,
        triggerer: Option<&Triggerer>,
        fork: Option<&str>,
    ) -> anyhow::Result<i64> {
        self.start_run_carrying(run, triggerer, &[], fork).await
    }

    /// [`Executor::start_run_by`] for a re-run that carries the steps `carry` over from
    /// the run it repeats ([`reruns`]). The run's cache partition is decided here
    /// (`crate::caches::origin`), and stored with it.
    async fn start_run_carrying(
        &self,
        run: &NewRun<'_>,
        triggerer: Option<&Triggerer>,
        carry: &[String],
        fork: Option<&str>,
    ) -> anyhow::Result<i64> {
        let partition =
            crate::caches::origin::partition_of(&self.store, run, fork, triggerer, |n, o, d| {
                matches!(environments::gate(n, o, d), environments::Gate::Open { .. })
            })
            .await
            .context("deciding the run's cache partition")?;
        // `Plan(max_parallel=)` lowers the engine's limit for this run, never raises it.
        let max_parallel = run
            .plan
            .max_parallel
            .map_or(self.max_parallel, |n| self.max_parallel.min(i64::from(n)))
            .max(1);
        // The step runs' labels ask for a runner that enforces each step's network policy.
        let routed = network_route::routed(run.plan);
        let stored = NewRun {
            plan: &routed,
            ..*run
        };
        let created = self
            .store
            .create_run_in_partition(&stored, max_parallel, triggerer, carry, &partition)
            .await
            .context("storing the run")?;
        self.remember(created.id, Arc::new(run.plan.clone()));
        for &cancelled in &created.cancelled {
            self.events.send(Event::Cancel { run_id: cancelled });
            self.advance(cancelled).await?;
        }
        self.advance(created.id).await?;
        Ok(created.id)
    }

    /// Starts a new run with the plan, context and workspace of `run_id`, started by
    /// `triggerer` ([`Executor::start_run_by`]).
    pub async fn rerun(
        &self,
        run_id: i64,
        triggerer: Option<&Triggerer>,
    ) -> anyhow::Result<Option<i64>> {
        self.rerun_carrying(run_id, triggerer, &[]).await
    }

    /// [`Executor::rerun`] carrying the steps `carry` over ([`reruns`]).
    async fn rerun_carrying(
        &self,
        run_id: i64,
        triggerer: Option<&Triggerer>,
        carry: &[String],
    ) -> anyhow::Result<Option<i64>> {
        let Some(run) = self.store.run(run_id).await? else {
            return Ok(None);
        };
        let Some(docs) = self.store.run_documents(run_id).await? else {
            return Ok(None);
        };
        let plan = self.plan(run_id).await?;
        let workspace = serde_json::from_str(&docs.workspace).context("stored workspace")?;
        let new_id = self
            .start_run_carrying(
                &NewRun {
                    workflow_source: &run.workflow_source,
                    workflow_path: &run.workflow_path,
                    event: &run.event,
                    git_ref: &run.git_ref,
                    sha: &run.sha,
                    context_json: &docs.context,
                    plan: &plan,
                    plan_json: &docs.plan,
                    plan_hash: &run.plan_hash,
                    workspace: &workspace,
                    rerun_of: Some(run_id),
                    repo: run.repo_id.map(|repo_id| RunRepo {
                        repo_id,
                        secrets_allowed: run.secrets_allowed,
                    }),
                },
                triggerer,
                carry,
                None,
            )
            .await?;
        Ok(Some(new_id))
    }

    /// Applies every decision that is due for the run, and when the run finished and let
    /// the next run of its concurrency group start, advances that one too.
    pub async fn advance(&self, run_id: i64) -> anyhow::Result<()> {
        let queued = self.advance_quietly(run_id).await?;
        self.events.queued(queued);
        Ok(())
    }

    /// [`Executor::advance`] without waking the runners' polls: returns how many steps it
    /// queued, and the caller wakes them (or claims the step itself).
    async fn advance_quietly(&self, run_id: i64) -> anyhow::Result<usize> {
        self.advance_chain(Some(run_id), 0).await
    }

    /// Advances `next`, then the run of its group it promoted or (after a review loop went
    /// back) itself again, until there is none; `queued` plus what they queued.
    async fn advance_chain(
        &self,
        mut next: Option<i64>,
        mut queued: usize,
    ) -> anyhow::Result<usize> {
        while let Some(run_id) = next {
            let one = self
                .advance_one(run_id, None, plue_store::ThenAdvance::Yes)
                .await?;
            queued += one.queued;
            // After a review loop went back, the next advance dispatches its target with
            // the outputs of the iteration that failed.
            next = if one.looped {
                Some(run_id)
            } else {
                one.promoted
            };
        }
        Ok(queued)
    }

    /// Asks the run to cancel: queued and pending steps end now, running ones when their
    /// runners have killed them. False when the run is unknown or already final.
    pub async fn cancel(&self, run_id: i64) -> anyhow::Result<bool> {
        if !self.store.request_cancel(run_id).await? {
            return Ok(false);
        }
        self.events.send(Event::Cancel { run_id });
        self.advance(run_id).await?;
        Ok(true)
    }

    /// The environment gate of each step of the run's plan ([`environments::gates`]),
    /// read from the store now; empty (no read) when no step names an environment.
    async fn gates(
        &self,
        run_id: i64,
        plan: &Plan,
    ) -> anyhow::Result<Vec<Option<environments::Gate>>> {
        let mut names: Vec<&str> = plan
            .steps
            .iter()
            .filter_map(|s| s.environment.as_deref())
            .collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        names.sort_unstable();
        names.dedup();
        let run = self
            .store
            .run_environments(run_id, &names)
            .await
            .with_context(|| format!("reading the environments of run {run_id}"))?;
        Ok(run
            .map(|run| environments::gates(plan, &run))
            .unwrap_or_default())
    }

    /// Secret values for the step `names` of step `step_id` of `run_id`: for a step naming
    /// an environment, the environment's secrets first (after checking its gate again:
    /// [`environments::secrets_gate`]), then the repository's secrets (opened with the
    /// vault), else the engine's own where they reach the run's repository
    /// ([`crate::engine_secrets`]). A pull request from a fork gets none of them: the
    /// names come back in `withheld` and the step runs without them. The error names the
    /// first secret that is set nowhere, or one that does not open, or why the step may not
    /// use its environment. The values returned are recorded as held by the run first
    /// (`hold`); the outer error is a failure to record them.
    pub async fn secret_values(
        &self,
        run_id: i64,
        step_id: &str,
        names: &[String],
    ) -> anyhow::Result<Result<Secrets, SecretsRefused>> {
        let plan = self.plan(run_id).await?;
        let facts = self.lock_outputs().facts(run_id, &plan);
        let environment = facts
            .step(&plan, step_id)
            .and_then(|s| s.environment.as_deref());
        let mut from_environment = BTreeMap::new();
        if let Some(name) = environment {
            let run = self
                .store
                .run_environments(run_id, &[name])
                .await?
                .with_context(|| format!("no run {run_id}"))?;
            // A local run has no environments: the engine's own secrets, as for any step.
            if let Some(origin) = &run.repo {
                let defined = run.defined.get(name);
                let passed = self
                    .store
                    .step_run(run_id, step_id)
                    .await?
                    .and_then(|row| row.review_passed_at);
                if let Err(refused) = environments::secrets_gate(name, origin, defined, passed) {
                    return Ok(Err(SecretsRefused::Gate(refused)));
                }
                // An untrusted run passes the gate only for tokens (`untrusted_id_tokens`):
                // the environment's secrets are never read for it.
                if let Some(defined) = defined.filter(|_| !origin.from_fork) {
                    from_environment = self
                        .store
                        .sealed_environment_secrets(defined.id, names)
                        .await?;
                }
            }
        }
        if names.is_empty() {
            return Ok(Ok(Secrets::default()));
        }
        if self.store.run_withholds_secrets(run_id).await? {
            return Ok(Ok(Secrets {
                values: BTreeMap::new(),
                withheld: names.to_vec(),
            }));
        }
        let sealed: BTreeMap<String, String> = self
            .store
            .sealed_secrets_for_run(run_id, names)
            .await?
            .into_iter()
            .collect();
        let mut values = BTreeMap::new();
        // The run's repository, read only when an engine secret is asked for (otherwise
        // no lookup below can reach one, whatever the repository).
        let engine_asked = names.iter().any(|name| {
            !from_environment.contains_key(name)
                && !sealed.contains_key(name)
                && self.secrets.has(name)
        });
        let repository = if engine_asked {
            self.run_repository(run_id).await?
        } else {
            None
        };
        // Each value with its sealed text, if the store gave one (the engine's own are not).
        let mut handed: Vec<(&String, Option<&String>)> = Vec::new();
        for name in names {
            let sealed = from_environment.get(name).or_else(|| sealed.get(name));
            let engine = self.secrets.lookup(name, repository.as_deref());
            let value = match (sealed, engine) {
                (Some(sealed), _) => match self.vault.open(sealed) {
                    Ok(value) => value,
                    Err(error) => {
                        return Ok(Err(SecretsRefused::DoesNotOpen {
                            name: name.clone(),
                            error,
                        }))
                    }
                },
                (None, Lookup::Given(value)) => value.to_owned(),
                (None, Lookup::NotForRepository) => {
                    return Ok(Err(SecretsRefused::NotForRepository {
                        name: name.clone(),
                        repository: repository.clone().unwrap_or_default(),
                    }))
                }
                (None, Lookup::Unknown) => return Ok(Err(SecretsRefused::NotSet(name.clone()))),
            };
            handed.push((name, sealed));
            values.insert(name.clone(), value);
        }
        self.hold(run_id, &handed, &values)
            .await
            .with_context(|| format!("recording the secrets run {run_id} is handed"))?;
        Ok(Ok(Secrets {
            values,
            withheld: Vec::new(),
        }))
    }

    /// The repository (`owner/name`) run `run_id` belongs to; `None` for a run without one.
    /// A run whose repository row is gone is an error, never taken for one without: an
    /// engine secret must not reach it as if the operator had started it.
    async fn run_repository(&self, run_id: i64) -> anyhow::Result<Option<String>> {
        let run = self
            .store
            .run(run_id)
            .await?
            .with_context(|| format!("no run {run_id}"))?;
        let Some(repo_id) = run.repo_id else {
            return Ok(None);
        };
        let repo = self
            .store
            .repo_by_id(repo_id)
            .await?
            .with_context(|| format!("the repository of run {run_id} is gone"))?;
        Ok(Some(repo.name))
    }

    /// Records in the store every value of `values` run `run_id` does not hold yet
    /// (`handed`: each name with the sealed text the store gave, `None` for the engine's
    /// own), before any of them leaves: the run's wall and log masking know a value handed
    /// to it after the secret was rotated or deleted ([`crate::outbound_wall`]). The store's
    /// sealed text is kept as it is; an engine secret is sealed here, and without a key
    /// (it could only be kept in clear) it is not recorded — it is the engine's for its
    /// whole life, and its wall takes it by name.
    async fn hold(
        &self,
        run_id: i64,
        handed: &[(&String, Option<&String>)],
        values: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        if handed.is_empty() {
            return Ok(());
        }
        let mut held: BTreeSet<String> = BTreeSet::new();
        // Only to leave out what is held already: a row that does not open (the run's wall
        // refuses to be made without it) is no reason to hold less.
        for (_, sealed) in self.store.held_secrets(run_id).await? {
            if let Ok(value) = self.vault.open(&sealed) {
                held.insert(value);
            }
        }
        let mut new = Vec::new();
        for (name, sealed) in handed {
            let value = &values[*name];
            if value.is_empty() || !held.insert(value.clone()) {
                continue;
            }
            let sealed = match sealed {
                Some(sealed) => (*sealed).clone(),
                None if self.vault.is_keyed() => self.vault.seal(value)?,
                None => continue,
            };
            new.push(((*name).clone(), sealed));
        }
        if new.is_empty() {
            return Ok(());
        }
        self.store.hold_secrets(run_id, &new, now_ms()).await
    }

    /// What makes the outbound walls of this engine's runs (every secret of a run, links
    /// only to its forge and `public_url`).
    pub fn walls(&self, public_url: String) -> crate::outbound_wall::Walls {
        crate::outbound_wall::Walls::new(
            self.store.clone(),
            self.vault.clone(),
            self.secrets.values(),
            public_url,
        )
        .with_forge_auth(self.forge_auth.clone())
    }

    /// The run's plan, parsed once and cached.
    pub async fn plan(&self, run_id: i64) -> anyhow::Result<Arc<Plan>> {
        if let Some(plan) = self.lock_plans().get(&run_id) {
            return Ok(plan.clone());
        }
        let docs = self
            .store
            .run_documents(run_id)
            .await?
            .with_context(|| format!("no run {run_id}"))?;
        let plan: Plan = serde_json::from_str(&docs.plan)
            .with_context(|| format!("stored plan of run {run_id}"))?;
        let plan = Arc::new(plan);
        self.remember(run_id, plan.clone());
        Ok(plan)
    }

    fn remember(&self, run_id: i64, plan: Arc<Plan>) {
        let mut plans = self.lock_plans();
        if plans.len() >= PLAN_CACHE_LIMIT {
            plans.clear();
        }
        plans.insert(run_id, plan);
    }

    /// The lock this executor's advances of `run_id` take in turn.
    fn turn(&self, run_id: i64) -> Arc<tokio::sync::Mutex<Option<KnownSteps>>> {
        let mut all = lock(&self.known);
        if all.len() >= KNOWN_RUNS_LIMIT && !all.contains_key(&run_id) {
            // Costs each of those runs one full read (an advance still holding one of these
            // locks finishes on its own).
            all.clear();
        }
        all.entry(run_id).or_default().clone()
    }

    fn forget(&self, run_id: i64) {
        lock(&self.known).remove(&run_id);
        self.lock_plans().remove(&run_id);
        self.lock_outputs().forget(run_id);
    }

    fn lock_outputs(&self) -> std::sync::MutexGuard<'_, OutputCache> {
        lock(&self.outputs)
    }

    fn lock_plans(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Plan>>> {
        lock(&self.plans)
    }
}

/// Locks `mutex`. A panic while holding one of the executor's locks cannot leave its map
/// inconsistent (each update is one insert or remove), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Marks the queued attempts of the steps in `kept` (by id, among `steps`) to keep their
/// final workspace, as a `workspace_from` reader would.
fn keep_workspaces(
    changes: &mut [plue_store::StepChange],
    steps: &[plue_store::StepRunRow],
    kept: &BTreeSet<String>,
) {
    if kept.is_empty() {
        return;
    }
    for change in changes {
        let plue_store::StepChange::Queue {
            step_run_id,
            dispatch,
            ..
        } = change
        else {
            continue;
        };
        if !steps
            .iter()
            .any(|s| s.id == *step_run_id && kept.contains(&s.step_id))
        {
            continue;
        }
        if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(dispatch) {
            // A missing `handoff` (nothing to hand off) becomes an object.
            value["handoff"]["keep_workspace"] = serde_json::Value::Bool(true);
            *dispatch = value.to_string();
        }
    }
}
