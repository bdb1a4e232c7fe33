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
//! - Valid proposals then go through the threat check ([`threat`]) when it is on for the
//!   run (`threat_check=`; by default for runs caused by someone without write access):
//!   a `refused` verdict on any refuses all of them as above (the reason names the rules),
//!   a `needs_approval` one makes that proposal `waiting` whatever the rest, `pass` changes
//!   nothing. Each checked proposal keeps its assessment (redacted by the run's wall), for
//!   the run page, the end answer and its provenance statement.
//! - They are recorded by the report that completed the attempt; an engine that stops
//!   between the completion and the record loses them (the step stays succeeded with no
//!   proposal: nothing is applied, never something unchecked).

pub mod apply;
pub mod attest;
pub mod threat;
pub mod validate;

use plue_types::protocol::{Outcome, Proposal};
use plue_types::status::ProposalState;

use plue_outbound::Checker;
use plue_store::{CheckedProposal, NewProposal};

use crate::executor::Executor;

/// The verdict on an attempt's proposals, to record once the attempt is completed.
#[derive(Debug, Default)]
pub struct Judged {
    proposals: Vec<CheckedProposal>,
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
        for checked in &self.proposals {
            let judged = checked
                .threat
                .as_deref()
                .and_then(|t| serde_json::from_str::<threat::Assessment>(t).ok());
            if let Some(assessment) = judged {
                crate::metrics::record(crate::metrics::Event::ThreatCheck {
                    verdict: assessment.verdict.as_str(),
                });
            }
            crate::metrics::record(crate::metrics::Event::Proposal {
                kind: &checked.proposal.kind,
                // `judge` records only refused, waiting and ready proposals.
                result: match checked.state {
                    ProposalState::Refused => "refused",
                    ProposalState::Waiting => "waiting",
                    ProposalState::Ready
                    | ProposalState::Rejected
                    | ProposalState::Applying
                    | ProposalState::Applied
                    | ProposalState::Failed => "ready",
                },
            });
        }
        executor
            .store()
            .record_checked_proposals(attempt_id, &self.proposals, self.reason.as_deref())
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
    let checked = check(executor, run_id, step_run_id, proposals).await?;
    let wall = checked.wall;
    let (state, refusal) = match (&checked.verdict, &wall) {
        (Ok(Passed::WaitsForApproval), _) => (ProposalState::Waiting, None),
        (Ok(Passed::Ready), _) => (ProposalState::Ready, None),
        // The reason quotes the proposal (a path, a label): shown only as the wall made it.
        (Err(why), Some(wall)) => (
            ProposalState::Refused,
            Some(wall.redact(&why.to_string()).into_string()),
        ),
        (Err(why), None) => (ProposalState::Refused, Some(why.to_string())),
    };
    // A refused proposal is kept to be shown, so without the secrets it may have leaked
    // (a valid one holds none); without a wall, none of its text is kept.
    let stored: Vec<CheckedProposal> = proposals
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let shown = match (&refusal, &wall) {
                (None, _) => p.clone(),
                (Some(_), Some(wall)) => validate::redact(p, wall),
                (Some(_), None) => validate::withheld(p),
            };
            let assessment = checked.threats.as_ref().and_then(|t| t.get(n));
            let state = match assessment.map(|a| a.verdict) {
                _ if refusal.is_some() => ProposalState::Refused,
                Some(threat::Verdict::NeedsApproval) => ProposalState::Waiting,
                _ => state,
            };
            let threat = assessment
                .map(|a| serde_json::to_string(&threat::redacted(a, wall.as_ref())))
                .transpose()?;
            Ok(CheckedProposal {
                proposal: NewProposal {
                    kind: p.kind().into(),
                    payload: serde_json::to_string(&shown)?,
                },
                state,
                threat,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(why) = &refusal {
        *outcome = Outcome::Failed;
        *reason = Some(format!("safe output refused: {why}"));
    }
    Ok(Judged {
        proposals: stored,
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
    /// The threat check refused a proposal: its kind and the findings that refused it.
    #[error("the threat check refused the {kind}: {reasons}")]
    Threat { kind: String, reasons: String },
}

/// What an attempt's proposals came to: the verdict, the run's wall they were checked by
/// (`None`: the run's secrets could not be read, and the proposals are refused unchecked —
/// never passed, never kept in clear) and each proposal's threat check when it ran.
struct Checked {
    verdict: Result<Passed, Refusal>,
    wall: Option<Checker>,
    threats: Option<Vec<threat::Assessment>>,
}

/// What the proposals came to ([`Checked`]).
async fn check(
    executor: &Executor,
    run_id: i64,
    step_run_id: i64,
    proposals: &[Proposal],
) -> anyhow::Result<Checked> {
    let store = executor.store();
    let run_secrets = match executor.walls(String::new()).secrets_of(run_id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(
                run = run_id,
                "reading the run's secrets to check its proposals: {e:#}"
            );
            return Ok(Checked {
                verdict: Err(Refusal::Unchecked),
                wall: None,
                threats: None,
            });
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
        return Ok(Checked {
            verdict: Err(why),
            wall: Some(wall),
            threats: None,
        });
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
    let wall = rules.wall;
    // Whose words the run acts on matters only to `auto`: read only then.
    let auto = outputs.threat_check == evaluator::safe_outputs::ThreatCheck::Auto;
    let trust = threat::RunTrust {
        secrets_allowed: run.as_ref().is_some_and(|r| r.secrets_allowed),
        outsiders_words: auto && outsiders_words(executor, run_id).await?,
    };
    if verdict.is_err() || !threat::enabled(&outputs, trust) {
        return Ok(Checked {
            verdict,
            wall: Some(wall),
            threats: None,
        });
    }
    let hosts: Vec<String> = run_secrets
        .forge_hosts
        .iter()
        .chain(&outputs.allow_links)
        .cloned()
        .collect();
    let scope = threat::Scope {
        wall: Some(&wall),
        hosts,
    };
    let reviewer = match &outputs.threat_review_model {
        Some(model) => Some(
            reviewer(
                executor,
                run_id,
                step_id.as_deref().unwrap_or_default(),
                model,
                &outputs,
            )
            .await,
        ),
        None => None,
    };
    let threats = match &reviewer {
        Some(Ok(reviewer)) => threat::examine(proposals, &scope, Some(reviewer)).await,
        Some(Err(why)) => threat::examine(proposals, &scope, None)
            .await
            .into_iter()
            .map(|a| {
                let model = outputs.threat_review_model.clone().unwrap_or_default();
                a.with_review(threat::ReviewOutcome {
                    model,
                    answer: None,
                    reasons: Vec::new(),
                    error: Some(why.clone()),
                    input_tokens: 0,
                    output_tokens: 0,
                })
            })
            .collect(),
        None => threat::examine(proposals, &scope, None).await,
    };
    let refused = proposals
        .iter()
        .zip(&threats)
        .find(|(_, a)| a.verdict == threat::Verdict::Refused);
    let verdict = match refused {
        Some((proposal, assessment)) => Err(Refusal::Threat {
            kind: proposal.kind().replace('_', " "),
            reasons: assessment.reasons(3).join("; "),
        }),
        None => verdict,
    };
    Ok(Checked {
        verdict,
        wall: Some(wall),
        threats: Some(threats),
    })
}

/// Whether run `run_id` acts on the words of someone who cannot write to its repository
/// (its cache partition's trust is `relayed`: a summons on an outsider's issue).
async fn outsiders_words(executor: &Executor, run_id: i64) -> anyhow::Result<bool> {
    let stored = executor.store().run_cache_partition(run_id).await?;
    Ok(match stored {
        Some((partition, _)) => partition.trust() == plue_types::partition::Trust::Relayed,
        None => false,
    })
}

/// The model reviewer of a step's proposals: the run's `ANTHROPIC_API_KEY` as the step
/// gets it, at the operator's `ANTHROPIC_BASE_URL` (the runners' setting; the public API
/// by default). `Err`: why there is none (the review then needs approval).
async fn reviewer(
    executor: &Executor,
    run_id: i64,
    step_id: &str,
    model: &str,
    outputs: &evaluator::safe_outputs::SafeOutputs,
) -> Result<threat::Reviewer, String> {
    let key_name = [crate::dispatch::LLM_KEY_SECRET.to_owned()];
    let key = match executor.secret_values(run_id, step_id, &key_name).await {
        Ok(Ok(secrets)) => secrets.values.get(crate::dispatch::LLM_KEY_SECRET).cloned(),
        Ok(Err(refused)) => {
            return Err(format!(
                "the review's API key ({}) is not available: {refused}",
                crate::dispatch::LLM_KEY_SECRET
            ))
        }
        Err(e) => {
            tracing::warn!(run = run_id, "the threat review's API key: {e:#}");
            return Err("the review's API key could not be read (see the engine's log)".into());
        }
    };
    let Some(key) = key else {
        return Err(format!(
            "the run withholds {}, so no model review was made",
            crate::dispatch::LLM_KEY_SECRET
        ));
    };
    let base = std::env::var(runner::llm::BASE_URL_ENV)
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| runner::llm::client::DEFAULT_BASE_URL.to_owned());
    threat::Reviewer::new(&base, &key, model, outputs.review_tokens())
}

/// The refusal of proposals whose run's secrets could not be read.
const UNCHECKED: &str =
    "the run's secrets could not be read to check the proposals (see the engine's log)";
