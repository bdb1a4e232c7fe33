//! Assigning a claimed step to its runner ([`Attempts::assign`]): everything its attempt
//! is handed — secrets through the executor's gate, the budget held, caches in the run's
//! partition, the prompt file, the checkout token, the egress grant and OpenID Connect
//! tokens — or why it fails at once ([`AttemptRefused`]).

use std::collections::BTreeMap;

use plue_store::{AttemptOwner, Claimed};
use plue_types::protocol::{self as wire, Assignment, NetworkPolicy, StepAction};

use super::{checkout, AttemptRefused, Attempts, AuthedRunner};
use crate::dispatch::Dispatch;
use crate::executor::Report;

impl Attempts {
    /// The assignment for a fresh claim (its owner remembered), or `None` when the attempt
    /// had to fail at once (a missing secret, an unreadable dispatch document); the failure
    /// is recorded.
    pub async fn assign(
        &self,
        runner: &AuthedRunner,
        claimed: Claimed,
    ) -> anyhow::Result<Option<Assignment>> {
        let (attempt_id, run_id) = (claimed.attempt_id, claimed.run_id);
        self.remember_owner(
            attempt_id,
            AttemptOwner {
                runner_id: runner.id,
                step_run_id: claimed.step_run_id,
                number: claimed.number,
                run_id,
            },
        );
        match self.prepare(runner, claimed).await? {
            Ok(assignment) => Ok(Some(assignment)),
            Err(refused) => {
                let reason = refused.to_string();
                let report = Report {
                    outcome: wire::Outcome::Failed,
                    exit_code: None,
                    reason: Some(reason),
                    outputs: BTreeMap::new(),
                };
                self.executor
                    .complete(attempt_id, run_id, None, &report)
                    .await?;
                Ok(None)
            }
        }
    }

    /// The assignment for a fresh claim, or why its attempt fails at once (the reason
    /// [`Attempts::assign`] records); the outer error is the engine's own.
    async fn prepare(
        &self,
        runner: &AuthedRunner,
        claimed: Claimed,
    ) -> anyhow::Result<Result<Assignment, AttemptRefused>> {
        let dispatch: Dispatch = match serde_json::from_str(&claimed.dispatch) {
            Ok(dispatch) => dispatch,
            Err(e) => return Ok(Err(e.into())),
        };
        let secrets = match self
            .executor
            .secret_values(claimed.run_id, &claimed.step_id, &dispatch.secrets)
            .await?
        {
            Ok(secrets) => secrets,
            Err(refused) => return Ok(Err(refused.into())),
        };
        if !runner.secrets && !secrets.values.is_empty() {
            // The claim skips such steps; this holds even for rows queued before it did.
            return Ok(Err(AttemptRefused::RunnerWithoutSecrets {
                names: secrets.values.keys().cloned().collect(),
                runner: runner.id,
            }));
        }
        // An llm step's limits, and its hold on the run's budget (crate::pricing::budget).
        let budget = match crate::pricing::budget::assign(
            self.executor.store(),
            self.executor.prices(),
            crate::pricing::budget::Claimed {
                attempt_id: claimed.attempt_id,
                run_id: claimed.run_id,
                step_id: &claimed.step_id,
            },
            dispatch.budget.as_ref(),
            self.executor.plan(claimed.run_id),
        )
        .await?
        {
            Ok(budget) => budget,
            Err(refused) => return Ok(Err(refused.into())),
        };
        // The step's caches in its run's partition, decided when the run was created
        // (`crate::caches`); a run from before partitions gets its least trusted one.
        let caches = if dispatch.caches.is_empty() {
            Vec::new()
        } else {
            let (partition, _) = self
                .executor
                .store()
                .run_cache_partition(claimed.run_id)
                .await?
                .unwrap_or((plue_types::partition::Partition::least_trusted(false), None));
            dispatch.cache_specs(&partition.label(), self.artifacts.cache_entry_limit())
        };
        let mut action = dispatch.action;
        if let Err(refused) = read_prompt_file(self.config.prompt_root.as_deref(), &mut action) {
            return Ok(Err(refused));
        }
        let workspace = serde_json::from_str(&claimed.workspace)
            .map_err(|e| anyhow::anyhow!("stored workspace of run {}: {e}", claimed.run_id))?;
        // A GitHub App's repository: a short-lived read-only token for the checkout.
        let workspace = match checkout::with_credential(
            &self.executor,
            &self.checkouts,
            claimed.run_id,
            claimed.attempt_id,
            workspace,
        )
        .await?
        {
            Ok(workspace) => workspace,
            Err(refused) => return Ok(Err(refused)),
        };
        let mut env = dispatch.env;
        // Read with the claim, once per run (the store's `ClaimedRuns`).
        if let Some(context) = &claimed.summoned_context {
            let ctx: evaluator::EvalContext = serde_json::from_str(context)
                .map_err(|e| anyhow::anyhow!("stored context of run {}: {e}", claimed.run_id))?;
            env.extend(crate::dispatch::summoned_env(&ctx));
        }
        env.insert("PLUE_ATTEMPT".into(), claimed.number.to_string());
        if !secrets.withheld.is_empty() {
            env.insert("PLUE_SECRETS_WITHHELD".into(), secrets.withheld.join(","));
        }
        // An allow-list step's grant for the cluster's egress proxy, when one is configured
        // (a runner that needs one and has none fails the step closed).
        let egress_grant = egress_grant(
            self.config.egress_grants.as_ref(),
            claimed.attempt_id,
            &dispatch.network,
        )?;
        // Its OpenID Connect tokens, made last (nothing after this refuses the attempt): each a
        // secret of the run from the moment it is made (`crate::id_tokens`).
        let mut secrets = secrets.values;
        if !dispatch.id_tokens.is_empty() {
            let request = crate::id_tokens::Request {
                issuer: &self.config.oidc_issuer,
                run_id: claimed.run_id,
                step_id: &claimed.step_id,
                attempt: claimed.number,
                tokens: &dispatch.id_tokens,
                timeout_secs: dispatch.timeout_secs,
                runs_processes: matches!(
                    action,
                    StepAction::Bash { .. } | StepAction::Python { .. }
                ),
            };
            // A runner kept from secrets (one for forks) runs a step whose tokens would be
            // withheld anyway; one that would get them is another runner's.
            if !runner.secrets && crate::id_tokens::entitled(&self.executor, request).await? {
                return Ok(Err(AttemptRefused::RunnerWithoutSecrets {
                    names: dispatch.id_tokens.keys().cloned().collect(),
                    runner: runner.id,
                }));
            }
            let issued = self.id_tokens.for_step(&self.executor, request).await?;
            secrets.extend(issued.values);
            if !issued.withheld.is_empty() {
                env.insert("PLUE_ID_TOKENS_WITHHELD".into(), issued.withheld.join(","));
            }
        }
        Ok(Ok(Assignment {
            attempt_id: claimed.attempt_id,
            run_id: claimed.run_id,
            step_id: claimed.step_id,
            attempt: u32::try_from(claimed.number).unwrap_or(u32::MAX),
            action,
            env,
            secrets,
            timeout_secs: dispatch.timeout_secs,
            workspace,
            handoff: wire::Handoff {
                max_bytes: self.artifacts.max_bytes(),
                ..dispatch.handoff
            },
            network: dispatch.network,
            egress_grant,
            caches,
            budget,
        }))
    }
}

/// The grant an attempt's assignment carries for the cluster's egress proxy: one for an
/// allow-list step when a proxy is configured (its key given), else none.
fn egress_grant(
    key: Option<&plue_vault::grants::GrantKey>,
    attempt_id: i64,
    network: &NetworkPolicy,
) -> anyhow::Result<Option<String>> {
    match (key, network) {
        (Some(key), NetworkPolicy::Allow(hosts)) => Ok(Some(key.mint(attempt_id, hosts)?)),
        _ => Ok(None),
    }
}

/// Puts the text of an llm step's `prompt_file`, read inside `root` (confined to it as the
/// runner confines it to its workspace), into `action`, when there is a root.
fn read_prompt_file(
    root: Option<&std::path::Path>,
    action: &mut StepAction,
) -> Result<(), AttemptRefused> {
    let (
        Some(root),
        StepAction::Llm {
            prompt_file: Some(reference),
            prompt_file_content,
            ..
        },
    ) = (root, action)
    else {
        return Ok(());
    };
    *prompt_file_content = prompts::resolve_text(reference, root)
        .map(|text| text.map(Box::new))
        .map_err(|error| AttemptRefused::PromptFile {
            reference: reference.clone(),
            root: root.to_owned(),
            error: Box::new(error),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use plue_types::protocol::NetworkPolicy;
    use plue_vault::grants::GrantKey;

    use super::egress_grant;

    #[test]
    fn only_an_allow_list_step_gets_an_egress_grant_and_only_with_a_proxy() {
        let key = GrantKey::derive("proxy token");
        let allow = NetworkPolicy::Allow(vec!["pypi.org".into()]);
        let grant = egress_grant(Some(&key), 9, &allow).unwrap();
        assert_eq!(
            grant.as_deref().and_then(|g| key.open(g)),
            Some((9, vec!["pypi.org".to_owned()]))
        );
        assert_eq!(
            egress_grant(Some(&key), 9, &NetworkPolicy::None).unwrap(),
            None
        );
        assert_eq!(egress_grant(None, 9, &allow).unwrap(), None);
    }
}
