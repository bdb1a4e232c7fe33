//! Safe outputs in the engine: what an `llm` step proposed to the forge, checked on the
//! attempt's completion ([`judge`], over [`validate`]), stored with the attempt
//! (`store::proposals`), decided by a person when `approve_outputs` is set
//! (`api::proposals`), and applied by the engine's outbox (`apply`, APPLY's part) with
//! the repository's credentials — the step and its runner never hold them.
//!
//! Invariants:
//! - Only a *succeeded* attempt's proposals are looked at; a failed or cancelled one's
//!   are dropped.
//! - All proposals of an attempt are judged together: any refusal refuses all of them
//!   (stored `refused` with the reason, nothing `ready`) and FAILS the step with
//!   `safe output refused: <reason>`, so nothing is half-applied.
//! - A step that declares no `safe_outputs` may propose nothing (the runner offers no
//!   tool, and the engine refuses what a rogue runner sends anyway).
//! - The secrets checked are every secret value the *run* holds or has held
//!   ([`crate::outbound_wall`]): each step's secrets, environment secrets, the model's key,
//!   the repository's webhook secret and forge token, opened — a token another step left
//!   in a workspace it handed on is found too.
//! - A refusal's reason, the step's reason made of it and a refused proposal kept to be
//!   shown are redacted by the run's wall: a refusal never quotes a secret, a foreign link
//!   or a mention (a file named after a secret is named `***`).
//! - Valid proposals are `waiting` when the step says `approve_outputs=True`, its
//!   environment has reviewers or the run is treated like a fork's (a stranger summoned
//!   it: the outbox writes such a run's proposals only once a person approved), else
//!   `ready`.
//! - They are recorded by the report that completed the attempt; an engine that stops
//!   between the completion and the record loses them (the step stays succeeded with no
//!   proposal: nothing is applied, never something unchecked).

pub mod apply;
pub mod attest;
pub mod validate;

use plue_types::protocol::{Outcome, Proposal};

use plue_outbound::Checker;

use crate::executor::Executor;
use crate::store::NewProposal;

/// The verdict on an attempt's proposals, to record once the attempt is completed.
#[derive(Debug, Default)]
pub struct Judged {
    proposals: Vec<NewProposal>,
    state: &'static str,
    reason: Option<String>,
}

impl Judged {
    /// Whether there is nothing to record: [`Judged::record`] then does nothing, and cannot
    /// fail.
    pub fn is_empty(&self) -> bool {
        self.proposals.is_empty()
    }

    /// Records the proposals (nothing when there were none). Idempotent.
    pub async fn record(&self, executor: &Executor, attempt_id: i64) -> anyhow::Result<()> {
        if self.proposals.is_empty() {
            return Ok(());
        }
        for proposal in &self.proposals {
            crate::metrics::record(crate::metrics::Event::Proposal {
                kind: &proposal.kind,
                result: self.state,
            });
        }
        executor
            .store()
            .record_proposals(
                attempt_id,
                &self.proposals,
                self.state,
                self.reason.as_deref(),
            )
            .await
    }
}

/// Judges the proposals of attempt of step run `step_run_id` of run `run_id`, which
/// reported `outcome`; a refusal turns `outcome` into `Failed` with its `reason`.
pub async fn judge(
    executor: &Executor,
    run_id: i64,
    step_run_id: i64,
    outcome: &mut Outcome,
    reason: &mut Option<String>,
    proposals: &[Proposal],
) -> anyhow::Result<Judged> {
    if proposals.is_empty() || *outcome != Outcome::Succeeded {
        return Ok(Judged::default());
    }
    let (verdict, wall) = check(executor, run_id, step_run_id, proposals).await?;
    let (state, refusal) = match (&verdict, &wall) {
        (Ok(Passed::WaitsForApproval), _) => ("waiting", None),
        (Ok(Passed::Ready), _) => ("ready", None),
        // The reason quotes the proposal (a path, a label): shown only as the wall made it.
        (Err(why), Some(wall)) => ("refused", Some(wall.redact(&why.to_string()).into_string())),
        (Err(why), None) => ("refused", Some(why.to_string())),
    };
    // A refused proposal is kept to be shown, so without the secrets it may have leaked
    // (a valid one holds none); without a wall, none of its text is kept.
    let stored: Vec<NewProposal> = proposals
        .iter()
        .map(|p| {
            let shown = match (&refusal, &wall) {
                (None, _) => p.clone(),
                (Some(_), Some(wall)) => validate::redact(p, wall),
                (Some(_), None) => validate::withheld(p),
            };
            Ok(NewProposal {
                kind: p.kind().into(),
                payload: serde_json::to_string(&shown)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(why) = &refusal {
        *outcome = Outcome::Failed;
        *reason = Some(format!("safe output refused: {why}"));
    }
    Ok(Judged {
        proposals: stored,
        state,
        reason: refusal,
    })
}

/// Proposals that passed: whether they wait for a person's approval before they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passed {
    Ready,
    WaitsForApproval,
}

/// Why an attempt's proposals were refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{UNCHECKED}")]
    Unchecked,
    #[error("the step is gone")]
    StepGone,
    #[error("the step declares no safe_outputs")]
    NoSafeOutputs,
    #[error(transparent)]
    Invalid(#[from] validate::Refused),
}

/// What the proposals came to, with the run's wall they were checked by (`None`: the
/// run's secrets could not be read, and the proposals are refused unchecked — never
/// passed, never kept in clear).
async fn check(
    executor: &Executor,
    run_id: i64,
    step_run_id: i64,
    proposals: &[Proposal],
) -> anyhow::Result<(Result<Passed, Refusal>, Option<Checker>)> {
    let store = executor.store();
    let run_secrets = match executor.walls(String::new()).secrets_of(run_id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(
                run = run_id,
                "reading the run's secrets to check its proposals: {e:#}"
            );
            return Ok((Err(Refusal::Unchecked), None));
        }
    };
    let plan = executor.plan(run_id).await?;
    let step_id = store.step_run_by_id(step_run_id).await?.map(|s| s.step_id);
    let step = plan.steps.iter().find(|s| Some(&s.id) == step_id.as_ref());
    let declared = match step.map(|s| &s.action) {
        Some(evaluator::plan::Action::Llm(llm)) => llm.safe_outputs.clone(),
        _ => None,
    };
    let Some(outputs) = declared else {
        let wall = Checker::new(&run_secrets.secrets, &run_secrets.forge_hosts);
        let why = match step_id {
            None => Refusal::StepGone,
            Some(_) => Refusal::NoSafeOutputs,
        };
        return Ok((Err(why), Some(wall)));
    };
    let run = store.run(run_id).await?;
    let repo_id = run.as_ref().and_then(|run| run.repo_id);
    // A run treated like a fork's (a stranger summoned it) is applied only once a person
    // approved it (`apply`): its proposals wait for one, rather than being `ready` for an
    // outbox that would only fail them.
    let mut approve = outputs.approve || run.as_ref().is_some_and(|r| !r.secrets_allowed);
    // A step under an environment with reviewers: its proposals wait for a person too.
    if let Some(repo_id) = repo_id {
        if let Some(name) = step.and_then(|s| s.environment.as_deref()) {
            let reviewed = store
                .environment(repo_id, name)
                .await?
                .is_some_and(|e| !e.settings.reviewers.is_empty());
            approve |= reviewed;
        }
    }
    let rules = validate::Rules::new(&outputs, &run_secrets.secrets, &run_secrets.forge_hosts)
        .with_repository(run_secrets.repository.as_deref());
    let passed = if approve {
        Passed::WaitsForApproval
    } else {
        Passed::Ready
    };
    let verdict = validate::validate(proposals, &rules)
        .map(|()| passed)
        .map_err(Refusal::from);
    Ok((verdict, Some(rules.wall)))
}

/// The refusal of proposals whose run's secrets could not be read.
const UNCHECKED: &str =
    "the run's secrets could not be read to check the proposals (see the engine's log)";
