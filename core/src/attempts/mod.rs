//! The engine's side of an attempt, whatever carries the runner's words (the HTTP routes
//! of `plue_server::internal_api`, or a held runner connection): assigning a claimed step
//! ([`Attempts::assign`], [`Attempts::claim_now`]), accepting it, recording its start and
//! its log lines ([`Attempts::store_batch`]), and completing it ([`Attempts::complete`]).
//! A transport keeps authentication, limits and parsing; every engine rule about an
//! attempt is here.
//!
//! Invariants:
//! - An assignment is made only here (`assign.rs`): its secrets through the executor's gate
//!   (`Executor::secret_values`), its budget held, its caches in the run's trust
//!   partition, its checkout token, egress grant and OpenID Connect tokens minted last. A
//!   claim whose assignment is refused fails its attempt at once with the reason
//!   ([`AttemptRefused`]), never with a secret in it.
//! - Nothing a runner sent reaches a reader unmasked: log lines, a completion's outputs
//!   and reason pass the run's outbound wall ([`Attempts::wall_of`]) first, and are
//!   withheld when the wall cannot be read.
//! - A claim the completion's transaction made is handed to its runner whatever follows
//!   ([`Attempts::claim_now`]); the steps the completion queued that this runner did not
//!   take are announced to the others.
//! - The wall of a run is kept at most [`WALL_FOR`], and made again as soon as the run
//!   holds a new value (a secret or token handed to one of its steps, on any replica).

mod assign;
mod checkout;
mod complete;
mod logs;
mod refused;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use refused::AttemptRefused;

use plue_outbound::Checker;
use plue_store::{now_ms, Acknowledgement, AttemptOwner, LogQuotas};

use crate::artifacts::Artifacts;
use crate::executor::Executor;
use crate::id_tokens::IdTokens;

/// A runner as its token authenticated it.
#[derive(Debug, Clone)]
pub struct AuthedRunner {
    pub id: i64,
    /// Canonical forms of every subset of its labels (what it may claim).
    pub label_sets: Arc<Vec<String>>,
    /// Whether its registration token lets it receive secrets.
    pub secrets: bool,
}

/// What the engine's operator set for attempts.
#[derive(Debug, Clone)]
pub struct AttemptsConfig {
    /// The most bytes of log text an attempt and a run may store.
    pub log_quotas: LogQuotas,
    /// Where `prompt_file`s are read from instead of the step's workspace.
    pub prompt_root: Option<std::path::PathBuf>,
    /// The `iss` of steps' OpenID Connect tokens.
    pub oidc_issuer: Arc<str>,
    /// The key the cluster's egress proxy grants are signed with, when one is configured:
    /// allow-list assignments carry a grant for it.
    pub egress_grants: Option<plue_vault::grants::GrantKey>,
}

/// The engine's side of every attempt (module docs).
pub struct Attempts {
    executor: Arc<Executor>,
    artifacts: Arc<Artifacts>,
    id_tokens: Arc<IdTokens>,
    config: AttemptsConfig,
    /// Cancelled when the engine drains: completions claim nothing more.
    shutdown: tokio_util::sync::CancellationToken,
    /// Who holds each recent attempt (a log batch costs no read).
    owners: Mutex<HashMap<i64, AttemptOwner>>,
    /// Each active run's outbound wall, for its log lines: made when it was first needed,
    /// made again after [`WALL_FOR`] or when the run holds a new value.
    walls: Mutex<HashMap<i64, CachedWall>>,
    /// The checkout tokens handed with attempts, until they complete.
    checkouts: checkout::Handed,
}

const CACHE_LIMIT: usize = 10_000;
/// What a reader sees of a text that could not be checked against its run's wall.
const WITHHELD_NO_WALL: &str = "[withheld: the run's secrets could not be read]";
/// How long a run's wall is kept while the run holds no new value.
pub const WALL_FOR: Duration = Duration::from_secs(30);

type CachedWall = (std::time::Instant, i64, Arc<Checker>);

impl Attempts {
    pub fn new(
        executor: Arc<Executor>,
        artifacts: Arc<Artifacts>,
        id_tokens: Arc<IdTokens>,
        config: AttemptsConfig,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Attempts {
        Attempts {
            executor,
            artifacts,
            id_tokens,
            config,
            shutdown,
            owners: Mutex::new(HashMap::new()),
            walls: Mutex::new(HashMap::new()),
            checkouts: checkout::Handed::default(),
        }
    }

    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    pub fn config(&self) -> &AttemptsConfig {
        &self.config
    }

    /// Who holds `attempt_id`, or `None` if there is no such attempt (cached).
    pub async fn owner_of(&self, attempt_id: i64) -> anyhow::Result<Option<AttemptOwner>> {
        if let Some(owner) = lock(&self.owners).get(&attempt_id).copied() {
            return Ok(Some(owner));
        }
        let Some(owner) = self.executor.store().attempt_owner(attempt_id).await? else {
            return Ok(None);
        };
        self.remember_owner(attempt_id, owner);
        Ok(Some(owner))
    }

    fn remember_owner(&self, attempt_id: i64, owner: AttemptOwner) {
        let mut owners = lock(&self.owners);
        if owners.len() >= CACHE_LIMIT {
            owners.clear();
        }
        owners.insert(attempt_id, owner);
    }

    /// The runner acknowledges the assignment a poll handed it, before it runs any of it:
    /// [`Acknowledgement::Refused`] when the claim was returned (it came too late) or the
    /// attempt ended otherwise — the runner must not run it.
    pub async fn accept(
        &self,
        runner: &AuthedRunner,
        attempt_id: i64,
    ) -> anyhow::Result<Acknowledgement> {
        self.executor
            .store()
            .acknowledge_claim(attempt_id, runner.id, now_ms())
            .await
    }

    /// The runner started attempt `attempt_id` (of `owner`): claimed → running, its wait
    /// measured, the readers told.
    pub async fn started(
        &self,
        runner: &AuthedRunner,
        attempt_id: i64,
        owner: &AttemptOwner,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let ready_at = self
            .executor
            .store()
            .start_attempt(attempt_id, runner.id, now)
            .await?;
        crate::metrics::step_started(ready_at, now);
        let events = self.executor.events();
        events.steps_moved(owner.run_id, &[owner.step_run_id]);
        events.send(plue_store::events::Event::Step {
            run_id: owner.run_id,
        });
        Ok(())
    }

    /// Run `run_id`'s outbound wall, kept [`WALL_FOR`] while the run holds no new value:
    /// a secret or token handed to one of its steps since (by this engine or another
    /// replica) makes it again, so a later step's log never misses it.
    pub async fn wall_of(&self, run_id: i64) -> anyhow::Result<Arc<Checker>> {
        let held = self.executor.store().held_secrets_count(run_id).await?;
        if let Some((at, count, wall)) = lock(&self.walls).get(&run_id) {
            if at.elapsed() < WALL_FOR && *count == held {
                return Ok(wall.clone());
            }
        }
        let wall = Arc::new(self.executor.walls(String::new()).of_run(run_id).await?);
        let mut walls = lock(&self.walls);
        if walls.len() >= CACHE_LIMIT {
            walls.clear();
        }
        walls.insert(run_id, (std::time::Instant::now(), held, wall.clone()));
        Ok(wall)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
