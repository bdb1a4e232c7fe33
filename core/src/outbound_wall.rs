//! A run's outbound wall ([`plue_outbound::Checker`]): made from every secret value the run
//! holds or has held, for the texts the engine sends to a forge or keeps for readers
//! (answers, statuses, pull requests, refusals, transcripts).
//!
//! Invariants:
//! - A run's secrets are all its secrets, not one step's: every secret any step of its
//!   plan names (and the model's key for an `llm` step), from the repository, from every
//!   environment a step of it names, and from the engine's own (`plue run --secret`);
//!   the repository's forge token and webhook secret, opened, and for a repository served
//!   as a GitHub App every installation token handed out for it and the App's private
//!   key ([`plue_forge::auth::ForgeAuth::secrets_of`]). More is stricter: values
//!   are taken whether or not a gate let a step have them (a fork's run, an environment
//!   waiting for review), since a step may have read them another way.
//! - A run's secrets are every value it ever held, not only today's: each value handed to
//!   a step of it (or a debug session in a step's room) is recorded at the claim, sealed,
//!   before it leaves ([`crate::executor::Executor::secret_values`],
//!   `Store::hold_secrets`), and the wall takes those besides the current values, so a
//!   secret rotated or deleted while the run goes on is still refused and masked in what
//!   the run writes. The record lives as long as the run's rows (deleted with the run), so
//!   through the run's end and every text written after it (answers, the outbox).
//! - A value that cannot be opened fails the wall's making (an error, never a wall that
//!   knows fewer secrets than it should).
//! - Links an engine text may hold: the repository's forge (web and API hosts) and this
//!   engine's own dashboard ([`Walls::public_url`]); nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use evaluator::plan::Plan;
use plue_outbound::{host_of, Checker, Secrets};

use plue_store::Store;
use plue_vault::Vault;

/// Makes the walls of runs: what they need of the engine.
#[derive(Clone)]
pub struct Walls {
    store: Store,
    vault: Vault,
    /// The forge credentials handed out for each repository.
    auth: plue_forge::auth::ForgeAuth,
    /// The engine's own secrets by name (`plue run --secret`), given to steps naming them.
    engine_secrets: Arc<BTreeMap<String, String>>,
    /// This engine's base URL as users reach it: the one host of its own an engine text
    /// links to.
    public_url: String,
}

impl std::fmt::Debug for Walls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walls")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// A run's secrets and the hosts of its repository's forge.
#[derive(Debug, Default)]
pub struct RunSecrets {
    pub secrets: Secrets,
    /// The forge's web and API hosts (lowercase); none for a local run.
    pub forge_hosts: Vec<String>,
    /// The run's repository (`owner/name`), which its texts may refer to; none for a
    /// local run.
    pub repository: Option<String>,
}

impl Walls {
    pub fn new(
        store: Store,
        vault: Vault,
        engine_secrets: BTreeMap<String, String>,
        public_url: String,
    ) -> Walls {
        Walls {
            store,
            auth: plue_forge::auth::ForgeAuth::personal(vault.clone()),
            vault,
            engine_secrets: Arc::new(engine_secrets),
            public_url,
        }
    }

    /// These walls, with the credentials `auth` handed out (its vault opens the rest).
    pub fn with_forge_auth(mut self, auth: plue_forge::auth::ForgeAuth) -> Walls {
        self.vault = auth.vault().clone();
        self.auth = auth;
        self
    }

    /// The forge credentials these walls know of.
    pub fn forge_auth(&self) -> &plue_forge::auth::ForgeAuth {
        &self.auth
    }

    /// This engine's base URL as users reach it.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The wall for texts the engine writes about run `run_id`: its secrets, links to its
    /// forge and this engine's dashboard.
    pub async fn of_run(&self, run_id: i64) -> anyhow::Result<Checker> {
        let run = self.secrets_of(run_id).await?;
        let own = host_of(&self.public_url);
        let wall = Checker::new(&run.secrets, run.forge_hosts.iter().cloned().chain(own));
        Ok(match &run.repository {
            Some(repository) => wall.with_repository(repository),
            None => wall,
        })
    }

    /// Every secret value run `run_id` holds or has held, and its forge's hosts.
    pub async fn secrets_of(&self, run_id: i64) -> anyhow::Result<RunSecrets> {
        let mut found = RunSecrets::default();
        let Some(run) = self.store.run(run_id).await? else {
            return Ok(found);
        };
        if let Some(repo) = match run.repo_id {
            Some(id) => self.store.repo_by_id(id).await?,
            None => None,
        } {
            found.forge_hosts.extend(host_of(&repo.clone_url));
            found.repository = Some(repo.name.clone());
            found
                .forge_hosts
                .extend(repo.api_url.as_deref().and_then(host_of));
            // A repository registered without one has none ('').
            if !repo.webhook_secret.is_empty() {
                found.secrets.add(
                    self.vault
                        .open(&repo.webhook_secret)
                        .with_context(|| format!("the webhook secret of {}", repo.name))?,
                );
            }
            // Its personal token, or every installation token handed out for it and the
            // App's key.
            for token in self.auth.secrets_of(&repo)? {
                found.secrets.add(token.expose().to_string());
            }
        }
        // Every value a step of it was handed, the current one or not.
        for (name, sealed) in self.store.held_secrets(run_id).await? {
            found.secrets.add(
                self.vault
                    .open(&sealed)
                    .with_context(|| format!("secret '{name}' held by run {run_id}"))?,
            );
        }
        let Some(documents) = self.store.run_documents(run_id).await? else {
            return Ok(found);
        };
        let plan: Plan = serde_json::from_str(&documents.plan)
            .with_context(|| format!("the stored plan of run {run_id}"))?;
        let names = secret_names(&plan);
        for name in &names {
            if let Some(value) = self.engine_secrets.get(name) {
                found.secrets.add(value.clone());
            }
        }
        for (name, sealed) in self.store.sealed_secrets_for_run(run_id, &names).await? {
            found.secrets.add(
                self.vault
                    .open(&sealed)
                    .with_context(|| format!("secret '{name}' of run {run_id}"))?,
            );
        }
        let environments: Vec<&str> = plan
            .steps
            .iter()
            .filter_map(|s| s.environment.as_deref())
            .collect();
        if !environments.is_empty() {
            if let Some(defined) = self.store.run_environments(run_id, &environments).await? {
                for (environment, row) in &defined.defined {
                    for (name, sealed) in self
                        .store
                        .sealed_environment_secrets(row.id, &names)
                        .await?
                    {
                        found.secrets.add(self.vault.open(&sealed).with_context(|| {
                            format!("secret '{name}' of environment {environment}")
                        })?);
                    }
                }
            }
        }
        Ok(found)
    }
}

/// Every secret name a step of `plan` names, and the model's key if it has an `llm` step.
fn secret_names(plan: &Plan) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for step in &plan.steps {
        let model = step.action.step_kind().talks_to_model();
        let key = model.then(|| crate::dispatch::LLM_KEY_SECRET.to_owned());
        for name in step.secrets.iter().cloned().chain(key) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

#[cfg(test)]
#[path = "outbound_wall_tests.rs"]
mod tests;
